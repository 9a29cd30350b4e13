//! API errors: every refusal is a 4xx with `{error, message, details}` that says what to fix;
//! internal errors are logged with a correlation id and answered without internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dossier_core::Rejection;
use dossier_runtime::RuntimeError;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code (`invalid_input`, `unknown_workflow`...).
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// An error the caller cannot fix: logged in full with a correlation id, answered with
    /// that id only.
    pub fn internal(error: &dyn std::fmt::Display) -> ApiError {
        let id = uuid::Uuid::now_v7().to_string();
        tracing::error!(correlation_id = %id, error = %error, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("an internal error occurred; quote correlation id {id} to the administrator"),
        )
        .with_details(json!({ "correlation_id": id }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.code,
            "message": self.message,
            "details": self.details,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<dossier_store::StoreError> for ApiError {
    fn from(e: dossier_store::StoreError) -> Self {
        ApiError::internal(&e)
    }
}

fn field_errors(errors: &[dossier_core::FieldError]) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|e| json!({"field": e.field, "message": e.message}))
            .collect(),
    )
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::UnknownWorkflow { id, known } => ApiError::unprocessable(
                "unknown_workflow",
                format!("no workflow is named `{id}`"),
            )
            .with_details(json!({ "known": known })),
            RuntimeError::UnknownCase(id) => {
                ApiError::not_found("unknown_instance", format!("no case has the id {id}"))
            }
            RuntimeError::UnknownTask(id) => {
                ApiError::not_found("unknown_task", format!("no task has the id {id}"))
            }
            RuntimeError::KeyReused => ApiError::conflict(
                "idempotency_key_reused",
                "this idempotency key was already used with another request body; use a new key for a new request",
            ),
            RuntimeError::Trigger(m) => ApiError::unprocessable(
                "trigger_input",
                format!("the trigger cannot compute the case's input from this payload: {m}"),
            ),
            RuntimeError::TaskMoved { task, role, assignee } => ApiError::conflict(
                "task_moved",
                format!("the task {task} moved before your decision (now in the inbox of `{role}`); reload it"),
            )
            .with_details(json!({"role": role, "assignee": assignee})),
            RuntimeError::Rejected(r) => rejection(r),
            other => ApiError::internal(&other),
        }
    }
}

fn rejection(r: Rejection) -> ApiError {
    let message = r.to_string();
    match r {
        Rejection::Input(errors) => ApiError::unprocessable("invalid_input", message)
            .with_details(json!({ "fields": field_errors(&errors) })),
        Rejection::Form(errors) => ApiError::unprocessable("invalid_form", message)
            .with_details(json!({ "fields": field_errors(&errors) })),
        Rejection::Outcome { known, .. } => ApiError::unprocessable("unknown_outcome", message)
            .with_details(json!({
                "outcomes": known.split(", ").filter(|s| !s.is_empty()).collect::<Vec<_>>()
            })),
        Rejection::FourEyes { by } => ApiError::conflict("four_eyes", message)
            .with_details(json!({ "first_decision_by": by })),
        Rejection::UnknownTask(_) => ApiError::conflict("task_not_open", message),
        Rejection::Finished(status) => {
            ApiError::conflict("instance_ended", message).with_details(json!({ "status": status }))
        }
        Rejection::Ending(_) => ApiError::conflict("instance_ending", message),
        Rejection::Start(_) => ApiError::unprocessable("cannot_start", message),
        Rejection::NotAnInput(_) => ApiError::bad_request("not_an_input", message),
    }
}
