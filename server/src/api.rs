//! `/api/v1`: cases, events, the task inbox, workflows, the audit trail.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use dossier_runtime::{Dedup, InboxKey};
use dossier_store::{CaseFilter, CaseRecord, TaskFilter, TaskRecord};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::audit;
use crate::auth::{self, Principal, ADMIN, ANALYST, AUDITOR, OPERATOR, SYSTEM};
use crate::body::{JsonBody, RawBody, RequestMeta};
use crate::error::ApiError;
use crate::AppState;

// ---- who may call what (the OpenAPI document and the role-matrix test read these) ----

pub const READ: &[&str] = &[ADMIN, ANALYST, OPERATOR, AUDITOR];
pub const START: &[&str] = &[ADMIN, SYSTEM];
pub const SEND_EVENTS: &[&str] = &[ADMIN, SYSTEM];
pub const CANCEL: &[&str] = &[ADMIN];
pub const TASK_WORK: &[&str] = &[ADMIN, OPERATOR];
pub const AUDIT: &[&str] = &[ADMIN, AUDITOR];
pub const VALIDATE: &[&str] = &[ADMIN, ANALYST];

/// One endpoint of the API: method, path, roles allowed (empty: no API key, e.g. webhooks
/// that carry a signature), whether it changes anything, summary.
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub roles: &'static [&'static str],
    pub mutating: bool,
    pub summary: &'static str,
}

pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint { method: "post", path: "/api/v1/instances", roles: START, mutating: true, summary: "Start a case (optional Idempotency-Key header)" },
    Endpoint { method: "get", path: "/api/v1/instances", roles: READ, mutating: false, summary: "List cases by workflow, status, business key, creation dates; keyset pagination" },
    Endpoint { method: "get", path: "/api/v1/instances/{id}", roles: READ, mutating: false, summary: "A case: status, current step, data, pinned versions" },
    Endpoint { method: "get", path: "/api/v1/instances/{id}/history", roles: READ, mutating: false, summary: "The hash-chained history of a case" },
    Endpoint { method: "post", path: "/api/v1/instances/{id}/events", roles: SEND_EVENTS, mutating: true, summary: "Send an event to one case" },
    Endpoint { method: "post", path: "/api/v1/instances/{id}/cancel", roles: CANCEL, mutating: true, summary: "Cancel a case (its compensations run)" },
    Endpoint { method: "post", path: "/api/v1/instances/{id}/replay", roles: AUDIT, mutating: false, summary: "Verify the hash chain and re-run the case with its pinned versions" },
    Endpoint { method: "get", path: "/api/v1/instances/{id}/export", roles: AUDIT, mutating: false, summary: "The case file: history, decisions with rule inputs and outputs, documents" },
    Endpoint { method: "post", path: "/api/v1/events", roles: SEND_EVENTS, mutating: true, summary: "Send an event to every waiting case whose correlation keys match (optional Idempotency-Key)" },
    Endpoint { method: "get", path: "/api/v1/tasks", roles: READ, mutating: false, summary: "The task inbox, by role, assignee, status, overdue" },
    Endpoint { method: "get", path: "/api/v1/tasks/{id}", roles: READ, mutating: false, summary: "One task with its form" },
    Endpoint { method: "post", path: "/api/v1/tasks/{id}/claim", roles: TASK_WORK, mutating: true, summary: "Claim a task" },
    Endpoint { method: "post", path: "/api/v1/tasks/{id}/release", roles: TASK_WORK, mutating: true, summary: "Release a claimed task" },
    Endpoint { method: "post", path: "/api/v1/tasks/{id}/complete", roles: TASK_WORK, mutating: true, summary: "Decide a task: outcome and form data" },
    Endpoint { method: "get", path: "/api/v1/workflows", roles: READ, mutating: false, summary: "Deployed workflows with every stored version and content hash" },
    Endpoint { method: "post", path: "/api/v1/workflows/validate", roles: VALIDATE, mutating: false, summary: "Validate uploaded workflow, rule and template files without deploying" },
    Endpoint { method: "get", path: "/api/v1/ledger/accounts", roles: READ, mutating: false, summary: "Ledger accounts and their balances (?prefix=credits/): wallets, stock, capacities, running totals" },
    Endpoint { method: "get", path: "/api/v1/ledger/postings", roles: READ, mutating: false, summary: "An account's postings in order (?account=credits/C1): amount, balance after, the case and effect that made each, and whether the balances follow from each other" },
    Endpoint { method: "get", path: "/api/v1/numbers", roles: READ, mutating: false, summary: "The register of a numbering series in a period (?series=FAC&period=2026): every number, the case and effect that got it, and whether the series has a gap" },
    Endpoint { method: "get", path: "/api/v1/audit", roles: AUDIT, mutating: false, summary: "The audit trail, in order, paginated" },
    Endpoint { method: "get", path: "/api/v1/audit/verify", roles: AUDIT, mutating: false, summary: "Verify the audit trail's hash chain from its first entry" },
    Endpoint { method: "get", path: "/api/v1/openapi.json", roles: &[], mutating: false, summary: "This document" },
    Endpoint { method: "post", path: "/hooks/{name}", roles: &[], mutating: true, summary: "Webhook intake (Standard Webhooks signature)" },
    Endpoint { method: "post", path: "/receipts/{connector}", roles: &[], mutating: true, summary: "Delivery receipts posted back by a connector's provider (checked by the connector: signature or token)" },
    Endpoint { method: "get", path: "/healthz", roles: &[], mutating: false, summary: "The process is alive" },
    Endpoint { method: "get", path: "/readyz", roles: &[], mutating: false, summary: "The database answers and the engine runs" },
    Endpoint { method: "get", path: "/metrics", roles: &[], mutating: false, summary: "Prometheus metrics" },
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/instances",
            post(start_instance).get(list_instances),
        )
        .route("/api/v1/instances/{id}", get(get_instance))
        .route("/api/v1/instances/{id}/history", get(instance_history))
        .route("/api/v1/instances/{id}/events", post(instance_event))
        .route("/api/v1/instances/{id}/cancel", post(cancel_instance))
        .route("/api/v1/instances/{id}/replay", post(replay_instance))
        .route("/api/v1/instances/{id}/export", get(export_instance))
        .route("/api/v1/events", post(send_event))
        .route("/api/v1/tasks", get(list_tasks))
        .route("/api/v1/tasks/{id}", get(get_task))
        .route("/api/v1/tasks/{id}/claim", post(claim_task))
        .route("/api/v1/tasks/{id}/release", post(release_task))
        .route("/api/v1/tasks/{id}/complete", post(complete_task))
        .route("/api/v1/workflows", get(list_workflows))
        .route("/api/v1/workflows/validate", post(validate_workflows))
        .route("/api/v1/numbers", get(list_numbers))
        .route("/api/v1/ledger/accounts", get(list_ledger_accounts))
        .route("/api/v1/ledger/postings", get(list_ledger_postings))
        .route("/api/v1/audit", get(list_audit))
        .route("/api/v1/audit/verify", get(verify_audit))
        .route("/api/v1/openapi.json", get(openapi))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found(
        "no_such_endpoint",
        "no endpoint has this path; the API is described at /api/v1/openapi.json",
    )
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

// ---- authentication ----

/// The authenticated caller of an `/api/v1` endpoint.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "no credentials: send `Authorization: Bearer <API key or OIDC token>` (an administrator creates keys with `dossier keys create`)",
                )
            })?;
        let text = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        if token.starts_with(auth::KEY_PREFIX) {
            let key = state
                .store()
                .api_key_by_hash(&auth::hash_key(token))
                .await?
                .ok_or_else(|| ApiError::unauthorized("this API key is not known"))?;
            if key.revoked_at.is_some() {
                return Err(ApiError::unauthorized(format!(
                    "the API key `{}` ({}) was revoked",
                    key.id, key.name
                )));
            }
            let roles = auth::parse_roles(&key.role)
                .map_err(|e| ApiError::internal(&format!("key {} has bad roles: {e}", key.id)))?;
            return Ok(Caller(Principal {
                id: format!("key:{}", key.id),
                name: key.name,
                roles,
            }));
        }
        match &state.oidc {
            Some(oidc) => {
                let now = state.now_ms() / 1000;
                let p = oidc.verify(token, now).await.map_err(|e| {
                    ApiError::unauthorized(format!("the bearer token is refused: {e}"))
                })?;
                Ok(Caller(p))
            }
            None => Err(ApiError::unauthorized(
                "this token is not an API key (`dsk_…`) and no OIDC provider is configured",
            )),
        }
    }
}

/// Refuses a caller without one of `roles`.
fn require(caller: &Principal, roles: &[&str]) -> Result<(), ApiError> {
    if caller.has_any(roles) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this needs one of the roles {}; you have {}",
            roles.join(", "),
            caller.role_text()
        ))
        .with_details(json!({"needed": roles, "yours": caller.roles})))
    }
}

// ---- helpers ----

pub fn time_text(ms: i64) -> Value {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn parse_json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

pub fn instance_json(c: &CaseRecord) -> Value {
    json!({
        "id": c.id,
        "workflow": c.workflow_id,
        "workflow_version": c.workflow_version,
        "workflow_hash": c.workflow_hash,
        "business_key": c.business_key,
        "parent_id": c.parent_id,
        "status": c.status,
        "current_step": c.current_step,
        "data": parse_json_text(&c.data),
        "pins": parse_json_text(&c.pins),
        "last_seq": c.last_seq,
        "created_at": time_text(c.created_at),
        "updated_at": time_text(c.updated_at),
    })
}

pub fn task_json(t: &TaskRecord, now_ms: i64) -> Value {
    let form = parse_json_text(&t.form);
    let open = matches!(t.status.as_str(), "open" | "claimed" | "awaiting_second");
    json!({
        "id": t.id,
        "instance_id": t.case_id,
        "workflow": t.workflow_id,
        "step": t.step,
        "role": t.role,
        "title": t.title,
        "instructions": form.get("instructions").cloned().unwrap_or(Value::Null),
        "fields": form.get("fields").cloned().unwrap_or(Value::Null),
        "outcomes": form.get("outcomes").cloned().unwrap_or(Value::Null),
        "four_eyes": form.get("four_eyes").cloned().unwrap_or(Value::Bool(false)),
        "escalate_to": form.get("escalate_to").cloned().unwrap_or(Value::Null),
        "status": t.status,
        "assignee": t.assignee,
        "due_at": t.due_at.map(time_text),
        "overdue": open && t.due_at.is_some_and(|d| d < now_ms),
        "created_at": time_text(t.created_at),
        "completed_at": t.completed_at.map(time_text),
        "completed_by": t.completed_by,
        "first_decision_by": if t.status == "awaiting_second" { t.completed_by.clone() } else { None },
        "outcome": t.outcome,
        "data": t.data.as_deref().map(parse_json_text),
    })
}

/// Query parameters, with unknown names refused (a typo must not silently widen a filter).
struct Params(BTreeMap<String, String>);

impl Params {
    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name).filter(|v| !v.is_empty())
    }

    fn finish(self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::bad_request(
                "unknown_parameter",
                format!("unknown query parameter `{k}`; known: {}", known.join(", ")),
            )),
        }
    }

    fn limit(&mut self, default: i64, max: i64) -> Result<i64, ApiError> {
        match self.take("limit") {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(
                    "bad_parameter",
                    format!("`limit` must be a whole number from 1 to {max}, not `{v}`"),
                )),
            },
        }
    }

    fn instant(&mut self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.take(name) else {
            return Ok(None);
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(&v) {
            return Ok(Some(t.timestamp_millis()));
        }
        if let Ok(d) = NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
            if let Some(t) = d.and_hms_opt(0, 0, 0) {
                return Ok(Some(t.and_utc().timestamp_millis()));
            }
        }
        Err(ApiError::bad_request(
            "bad_parameter",
            format!("`{name}` must be a date (2026-11-21) or an RFC 3339 instant (2026-11-21T08:00:00Z), not `{v}`"),
        ))
    }
}

/// The `Idempotency-Key` header, checked: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "bad_idempotency_key",
            "`Idempotency-Key` must be 1 to 255 visible ASCII characters (a UUID is a good key)",
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > 255 || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(s.to_string()))
}

/// SHA-256 of a JSON value's canonical text (sorted keys): the same request sent with its keys
/// in another order or other spacing hashes alike.
pub fn request_hash(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

async fn case_or_404(state: &AppState, id: &str) -> Result<CaseRecord, ApiError> {
    state
        .store()
        .case(id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_instance", format!("no case has the id {id}")))
}

async fn task_or_404(state: &AppState, id: &str) -> Result<TaskRecord, ApiError> {
    state
        .store()
        .task(id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_task", format!("no task has the id {id}")))
}

// ---- instances ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    workflow: String,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    business_key: Option<String>,
}

async fn start_instance(
    State(state): State<AppState>,
    Caller(who): Caller,
    Extension(meta): Extension<RequestMeta>,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    require(&who, START)?;
    let key = idempotency_key(&headers)?;
    let start: StartBody = serde_json::from_value(body.value.clone())
        .map_err(|e| ApiError::bad_request("invalid_body", format!("the body does not have the expected shape: {e}"))
            .with_details(json!({"expected": {"workflow": "string", "input": "object", "business_key": "string (optional)"}})))?;
    let input = start.input.unwrap_or_else(|| Value::Object(Map::new()));
    if !input.is_object() {
        return Err(ApiError::unprocessable(
            "invalid_input",
            "`input` must be a JSON object of the workflow's input fields",
        ));
    }
    let inbox = key.as_ref().map(|k| InboxKey {
        scope: format!("api:instances:{}", who.id),
        key: k.clone(),
        request_hash: request_hash(&body.value),
    });
    let entry = audit::entry(
        &state,
        &who,
        &meta,
        "instances.start",
        "",
        json!({"workflow": start.workflow, "business_key": start.business_key, "idempotency_key": key}),
    );
    let applied = state
        .engine
        .start_case_audited(
            &start.workflow,
            input,
            start.business_key.clone(),
            inbox.clone(),
            Some(entry),
        )
        .await?;
    let answer = json!({
        "id": applied.case_id,
        "workflow": start.workflow,
        "status": applied.status,
    });
    let location = format!("/api/v1/instances/{}", applied.case_id);
    if let (Some(dup), Some(k)) = (&applied.duplicate, &inbox) {
        if dup.request_hash != k.request_hash {
            return Err(ApiError::conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was already used with another request body; use a new key for a new request",
            )
            .with_details(json!({"instance_id": dup.case_id})));
        }
        return Ok((
            StatusCode::CREATED,
            [
                ("location", location),
                ("idempotent-replayed", "true".to_string()),
            ],
            Json(answer),
        )
            .into_response());
    }
    Ok((StatusCode::CREATED, [("location", location)], Json(answer)).into_response())
}

async fn list_instances(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&who, READ)?;
    let mut p = Params(q);
    let limit = p.limit(50, 500)?;
    let filter = CaseFilter {
        workflow_id: p.take("workflow"),
        status: p.take("status"),
        business_key: p.take("business_key"),
        created_from: p.instant("created_from")?,
        created_to: p.instant("created_to")?,
        after_id: p.take("after"),
        limit,
    };
    p.finish(&[
        "workflow",
        "status",
        "business_key",
        "created_from",
        "created_to",
        "after",
        "limit",
    ])?;
    if let Some(s) = &filter.status {
        const STATUSES: [&str; 5] = ["running", "waiting", "completed", "failed", "cancelled"];
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::bad_request(
                "bad_parameter",
                format!("`status` is one of {}, not `{s}`", STATUSES.join(", ")),
            ));
        }
    }
    let rows = state.store().list_cases(&filter).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|c| c.id.clone()))
        .flatten();
    Ok(Json(json!({
        "items": rows.iter().map(instance_json).collect::<Vec<_>>(),
        "next": next,
    })))
}

async fn get_instance(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&who, READ)?;
    let c = case_or_404(&state, &id).await?;
    let mut v = instance_json(&c);
    let tasks = state
        .store()
        .tasks(&TaskFilter {
            case_id: Some(id.clone()),
            ..TaskFilter::default()
        })
        .await?;
    let now = state.now_ms();
    // Operators see the tasks of their own inboxes only, as in `GET /tasks`.
    let sees_all = who.has_any(&[ADMIN, ANALYST, AUDITOR]);
    v["tasks"] = Value::Array(
        tasks
            .iter()
            .filter(|t| matches!(t.status.as_str(), "open" | "claimed" | "awaiting_second"))
            .filter(|t| sees_all || who.has(&t.role))
            .map(|t| task_json(t, now))
            .collect(),
    );
    v["waiting_for"] = Value::Array(
        state
            .store()
            .waits_of_case(&id)
            .await?
            .into_iter()
            .map(|w| json!({"event": w.event_name, "correlation": parse_json_text(&w.correlation)}))
            .collect(),
    );
    Ok(Json(v))
}

async fn instance_history(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&who, READ)?;
    let c = case_or_404(&state, &id).await?;
    let history = state.store().history(&id).await?;
    Ok(Json(json!({
        "instance_id": c.id,
        "last_seq": c.last_seq,
        "last_hash": c.last_hash,
        "events": history.iter().map(dossier_runtime::casefile::event_json).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    name: String,
    #[serde(default)]
    payload: Option<Value>,
}

fn event_body(body: &JsonBody<Value>) -> Result<(String, Value), ApiError> {
    let e: EventBody = serde_json::from_value(body.value.clone()).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body does not have the expected shape: {e}"),
        )
        .with_details(json!({"expected": {"name": "string", "payload": "object"}}))
    })?;
    if e.name.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "`name` is empty: name the event",
        ));
    }
    Ok((
        e.name,
        e.payload.unwrap_or_else(|| Value::Object(Map::new())),
    ))
}

/// An event request: its `Idempotency-Key`, the event's name and payload, and the request's
/// deduplication scope (`scope` names what the key belongs to: the caller, the case).
type EventRequest = (Option<String>, String, Value, Option<Dedup>);

fn event_request(
    headers: &HeaderMap,
    body: &JsonBody<Value>,
    scope: &str,
) -> Result<EventRequest, ApiError> {
    let key = idempotency_key(headers)?;
    let (name, payload) = event_body(body)?;
    let dedup = key.as_ref().map(|k| Dedup {
        scope: format!("{scope}:{k}"),
        request_hash: request_hash(&body.value),
    });
    Ok((key, name, payload, dedup))
}

async fn send_event(
    State(state): State<AppState>,
    Caller(who): Caller,
    Extension(meta): Extension<RequestMeta>,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    require(&who, SEND_EVENTS)?;
    let (key, name, payload, dedup) =
        event_request(&headers, &body, &format!("api:events:{}", who.id))?;
    let entry = audit::entry(
        &state,
        &who,
        &meta,
        "events.send",
        &name,
        json!({"event": name, "idempotency_key": key}),
    );
    let d = state
        .engine
        .deliver_event(&name, payload, dedup, Some(entry))
        .await?;
    let replayed = d.replayed;
    let mut res = (
        StatusCode::ACCEPTED,
        Json(json!({"event": name, "reached": d.reached, "started": d.started})),
    )
        .into_response();
    if replayed {
        res.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(res)
}

async fn instance_event(
    State(state): State<AppState>,
    Caller(who): Caller,
    Extension(meta): Extension<RequestMeta>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    require(&who, SEND_EVENTS)?;
    let (key, name, payload, dedup) = event_request(
        &headers,
        &body,
        &format!("api:instance-events:{}:{id}", who.id),
    )?;
    let case = case_or_404(&state, &id).await?;
    let entry = audit::entry(
        &state,
        &who,
        &meta,
        "instances.event",
        &id,
        json!({"event": name, "idempotency_key": key}),
    );
    let d = state
        .engine
        .deliver_to_case(&id, &name, payload, dedup, Some(entry))
        .await?;
    if d.reached.is_empty() {
        let waits = state.store().waits_of_case(&id).await?;
        let names: BTreeSet<String> = waits.into_iter().map(|w| w.event_name).collect();
        return Err(ApiError::conflict(
            "not_waiting",
            if names.is_empty() {
                format!("the case waits for no event (it is {})", case.status)
            } else {
                format!(
                    "the case does not wait for `{name}`; it waits for {}",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        )
        .with_details(json!({"waiting_for": names, "status": case.status})));
    }
    let status = state.store().case(&id).await?.map(|c| c.status);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event": name, "instance_id": id, "status": status})),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel_instance(
    State(state): State<AppState>,
    Caller(who): Caller,
    Extension(meta): Extension<RequestMeta>,
    Path(id): Path<String>,
    RawBody(raw): RawBody,
) -> Result<Json<Value>, ApiError> {
    require(&who, CANCEL)?;
    let body: CancelBody = if raw.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        crate::body::parse_json(&raw)?
    };
    case_or_404(&state, &id).await?;
    let reason = body
        .reason
        .unwrap_or_else(|| "cancelled through the API".into());
    let entry = audit::entry(
        &state,
        &who,
        &meta,
        "instances.cancel",
        &id,
        json!({"reason": reason}),
    );
    let applied = state
        .engine
        .cancel_audited(&id, &reason, &who.name, Some(entry))
        .await?;
    Ok(Json(json!({"id": id, "status": applied.status})))
}

async fn replay_instance(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&who, AUDIT)?;
    let case = case_or_404(&state, &id).await?;
    let history = state.store().history(&id).await?;
    let report =
        dossier_runtime::casefile::check_case(state.engine.programs(), &case, &history).await;
    Ok(Json(json!({
        "instance_id": id,
        "events": report.events,
        "chain": match &report.chain { Ok(()) => json!({"intact": true}), Err(e) => json!({"intact": false, "error": e}) },
        "replay": match &report.replay { Ok(()) => json!({"identical": true}), Err(e) => json!({"identical": false, "divergence": e}) },
    })))
}

async fn export_instance(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&who, AUDIT)?;
    case_or_404(&state, &id).await?;
    Ok(Json(
        dossier_runtime::casefile::export(state.store().as_ref(), &id).await?,
    ))
}

// ---- tasks ----

const OPEN_STATUSES: [&str; 3] = ["open", "claimed", "awaiting_second"];
const TASK_STATUSES: [&str; 5] = [
    "open",
    "claimed",
    "awaiting_second",
    "completed",
    "cancelled",
];

async fn list_tasks(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&who, READ)?;
    let mut p = Params(q);
    let limit = p.limit(100, 1000)?;
    let role = p.take("role");
    let assignee = p.take("assignee");
    let status = p.take("status");
    let case_id = p.take("instance_id");
    let overdue = match p.take("overdue").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(ApiError::bad_request(
                "bad_parameter",
                format!("`overdue` is true or false, not `{v}`"),
            ))
        }
    };
    p.finish(&[
        "role",
        "assignee",
        "status",
        "overdue",
        "instance_id",
        "limit",
    ])?;
    if let Some(s) = &status {
        if !TASK_STATUSES.contains(&s.as_str()) {
            return Err(ApiError::bad_request(
                "bad_parameter",
                format!("`status` is one of {}, not `{s}`", TASK_STATUSES.join(", ")),
            ));
        }
    }
    // Operators see the inboxes of their task roles only; the other readers see every inbox.
    let roles: Vec<Option<String>> = if who.has_any(&[ADMIN, ANALYST, AUDITOR]) {
        vec![role]
    } else {
        let mine: Vec<String> = who
            .roles
            .iter()
            .filter(|r| !auth::API_ROLES.contains(&r.as_str()))
            .cloned()
            .collect();
        match role {
            Some(r) if mine.contains(&r) => vec![Some(r)],
            Some(r) => {
                return Err(ApiError::forbidden(format!(
                    "you do not work the inbox of `{r}`; yours: {}",
                    if mine.is_empty() {
                        "none".to_string()
                    } else {
                        mine.join(", ")
                    }
                )))
            }
            None => mine.into_iter().map(Some).collect(),
        }
    };
    let now = state.now_ms();
    let statuses: Vec<Option<String>> = match (&status, overdue) {
        (Some(s), _) => vec![Some(s.clone())],
        (None, true) => OPEN_STATUSES.iter().map(|s| Some(s.to_string())).collect(),
        (None, false) => vec![None],
    };
    let mut tasks = Vec::new();
    for r in &roles {
        for s in &statuses {
            let f = TaskFilter {
                role: r.clone(),
                assignee: assignee.clone(),
                status: s.clone(),
                case_id: case_id.clone(),
                due_before: overdue.then_some(now),
                limit,
            };
            tasks.extend(state.store().tasks(&f).await?);
        }
    }
    tasks.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    tasks.dedup_by(|a, b| a.id == b.id);
    tasks.truncate(limit as usize);
    Ok(Json(
        json!({"items": tasks.iter().map(|t| task_json(t, now)).collect::<Vec<_>>()}),
    ))
}

async fn get_task(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&who, READ)?;
    let t = task_or_404(&state, &id).await?;
    if !who.has_any(&[ADMIN, ANALYST, AUDITOR]) && !who.has(&t.role) {
        return Err(ApiError::forbidden(format!(
            "this task is in the inbox of `{}`, which you do not work",
            t.role
        )));
    }
    Ok(Json(task_json(&t, state.now_ms())))
}

/// The task, if the caller works its inbox.
async fn workable_task(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<TaskRecord, ApiError> {
    require(who, TASK_WORK)?;
    let t = task_or_404(state, id).await?;
    if !who.works_inbox(&t.role) {
        return Err(ApiError::forbidden(format!(
            "this task is in the inbox of `{}`; an operator needs that role (e.g. a key created with --role operator,{})",
            t.role, t.role
        )));
    }
    Ok(t)
}

fn not_open(t: &TaskRecord) -> ApiError {
    ApiError::conflict(
        "task_not_open",
        format!("the task is {}: it cannot be worked anymore", t.status),
    )
    .with_details(json!({"status": t.status, "completed_by": t.completed_by, "outcome": t.outcome}))
}

fn claimed_by_other(t: &TaskRecord) -> ApiError {
    ApiError::conflict(
        "task_claimed",
        format!(
            "the task is claimed by {}; they must release it first",
            t.assignee.as_deref().unwrap_or("someone")
        ),
    )
    .with_details(json!({"assignee": t.assignee}))
}

async fn claim_task(
    State(state): State<AppState>,
    Caller(who): Caller,
    Extension(meta): Extension<RequestMeta>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = workable_task(&state, &who, &id).await?;
    if !OPEN_STATUSES.contains(&t.status.as_str()) {
        return Err(not_open(&t));
    }
    match &t.assignee {
        Some(a) if *a == who.name => return Ok(Json(task_json(&t, state.now_ms()))),
        Some(_) => return Err(claimed_by_other(&t)),
        None => {}
    }
    if t.status == "awaiting_second" && t.completed_by.as_deref() == Some(who.name.as_str()) {
        return Err(ApiError::conflict(
            "four_eyes",
            format!(
                "this task needs a second person: {} already decided it",
                who.name
            ),
        ));
    }
    let entry = audit::entry(
        &state,
        &who,
        &meta,
        "tasks.claim",
        &id,
        json!({"instance_id": t.case_id}),
    );
    let after = reassign(&state, &t, None, "claimed", Some(&who.name), &entry).await?;
    Ok(Json(task_json(&after, state.now_ms())))
}

/// Claims or releases `t` as it was read: same status, role and holder, or nothing changes
/// (someone else was quicker, or the case moved on). The audit entry is written with the change. A task awaiting its second decision keeps
/// that status; otherwise it becomes `status`.
async fn reassign(
    state: &AppState,
    t: &TaskRecord,
    holder: Option<&str>,
    status: &str,
    assignee: Option<&str>,
    entry: &dossier_store::AuditEntry,
) -> Result<TaskRecord, ApiError> {
    let to = if t.status == "awaiting_second" {
        "awaiting_second"
    } else {
        status
    };
    let (after, changed) = state
        .store()
        .assign_task(
            &t.id,
            &[t.status.as_str()],
            &t.role,
            holder,
            to,
            assignee,
            Some(entry),
        )
        .await?
        .ok_or_else(|| {
            ApiError::not_found("unknown_task", format!("no task has the id {}", t.id))
        })?;
    if changed {
        Ok(after)
    } else if after.role != t.role {
        Err(ApiError::conflict(
            "task_moved",
            format!(
                "the task moved to the inbox of `{}` meanwhile; reload it",
                after.role
            ),
        )
        .with_details(json!({"role": after.role, "assignee": after.assignee})))
    } else if OPEN_STATUSES.contains(&after.status.as_str()) {
        Err(claimed_by_other(&after))
    } else {
        Err(not_open(&after))
    }
}

async fn release_task(
    State(state): State<AppState>,
    Caller(who): Caller,
    Extension(meta): Extension<RequestMeta>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = workable_task(&state, &who, &id).await?;
    if !OPEN_STATUSES.contains(&t.status.as_str()) {
        return Err(not_open(&t));
    }
    let Some(holder) = t.assignee.clone() else {
        return Err(ApiError::conflict(
            "task_not_claimed",
            "the task is not claimed; nothing to release",
        ));
    };
    if holder != who.name && !who.has(ADMIN) {
        return Err(claimed_by_other(&t));
    }
    let entry = audit::entry(
        &state,
        &who,
        &meta,
        "tasks.release",
        &id,
        json!({"instance_id": t.case_id, "was_assigned_to": holder}),
    );
    let after = reassign(&state, &t, Some(&holder), "open", None, &entry).await?;
    Ok(Json(task_json(&after, state.now_ms())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    outcome: String,
    #[serde(default)]
    data: Option<Value>,
}

async fn complete_task(
    State(state): State<AppState>,
    Caller(who): Caller,
    Extension(meta): Extension<RequestMeta>,
    Path(id): Path<String>,
    body: JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let t = workable_task(&state, &who, &id).await?;
    let b: CompleteBody = serde_json::from_value(body.value.clone()).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body does not have the expected shape: {e}"),
        )
        .with_details(
            json!({"expected": {"outcome": "string", "data": "object of the task's fields"}}),
        )
    })?;
    if !OPEN_STATUSES.contains(&t.status.as_str()) {
        return Err(not_open(&t));
    }
    if let Some(a) = &t.assignee {
        if *a != who.name {
            return Err(claimed_by_other(&t));
        }
    }
    let data = b.data.unwrap_or_else(|| Value::Object(Map::new()));
    // Decided as seen: if the task was escalated or claimed by someone else meanwhile, the
    // engine refuses it when it prepares the decision.
    let guard = dossier_runtime::TaskGuard {
        task: id.clone(),
        role: t.role.clone(),
        holder: who.name.clone(),
    };
    let entry = audit::entry(
        &state,
        &who,
        &meta,
        "tasks.complete",
        &id,
        json!({"instance_id": t.case_id, "outcome": b.outcome, "task_status_before": t.status}),
    );
    let applied = state
        .engine
        .decide_task_guarded(&b.outcome, data, &who.name, guard, Some(entry))
        .await?;
    let after = task_or_404(&state, &id).await?;
    Ok(Json(json!({
        "task": task_json(&after, state.now_ms()),
        "instance": {"id": applied.case_id, "status": applied.status},
    })))
}

// ---- workflows ----

async fn list_workflows(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Value>, ApiError> {
    require(&who, READ)?;
    let project = state.engine.programs().project().clone();
    let mut versions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for d in state.store().definitions("workflow").await? {
        versions.entry(d.name.clone()).or_default().push(json!({
            "version": d.version,
            "hash": d.hash,
            "first_loaded_at": time_text(d.loaded_at),
        }));
    }
    let mut items = Vec::new();
    for (id, wf) in &project.workflows {
        let w = &wf.parsed.workflow;
        items.push(json!({
            "id": id,
            "title": w.title,
            "deployed": {"version": w.version, "hash": wf.hash, "file": wf.parsed.file},
            "input": w.input,
            "triggers": w.triggers,
            "versions": versions.remove(id).unwrap_or_default(),
        }));
    }
    // Workflows no longer deployed keep their stored versions: old cases still run on them.
    for (id, v) in versions {
        items.push(json!({"id": id, "deployed": null, "versions": v}));
    }
    Ok(Json(json!({"items": items})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateBody {
    /// Path in the project (`workflows/relance.yaml`, `rules/penalites.rhai`,
    /// `templates/relances/email.txt`) to its text.
    files: BTreeMap<String, String>,
}

async fn validate_workflows(
    State(state): State<AppState>,
    Caller(who): Caller,
    body: JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    require(&who, VALIDATE)?;
    let b: ValidateBody = serde_json::from_value(body.value.clone()).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body does not have the expected shape: {e}"),
        )
        .with_details(json!({"expected": {"files": {"workflows/NAME.yaml": "file text"}}}))
    })?;
    if b.files.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "`files` is empty: upload at least one file",
        ));
    }
    for path in b.files.keys() {
        let ok_dir = ["workflows/", "rules/", "templates/"]
            .iter()
            .any(|d| path.starts_with(d));
        let clean = !path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
            && !path.contains('\\');
        if !ok_dir || !clean {
            return Err(ApiError::unprocessable(
                "bad_path",
                format!("`{path}` is not a project file path: use workflows/…, rules/… or templates/… without `..`"),
            ));
        }
    }
    let project = state.engine.programs().project().clone();
    let files = b.files;
    let diagnostics = tokio::task::spawn_blocking(move || validate_overlay(&project, &files))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    let valid = !diagnostics.iter().any(|d| d.is_error());
    Ok(Json(json!({
        "valid": valid,
        "diagnostics": diagnostics.iter().map(|d| json!({
            "file": d.file, "line": d.line, "column": d.column,
            "severity": if d.is_error() { "error" } else { "warning" },
            "message": d.message, "hint": d.hint, "text": d.to_string(),
        })).collect::<Vec<_>>(),
    })))
}

/// Validates the deployed project with the uploaded files laid over it, in a scratch copy.
fn validate_overlay(
    project: &dossier_runtime::Project,
    files: &BTreeMap<String, String>,
) -> std::io::Result<Vec<dossier_model::Diagnostic>> {
    let dir = tempfile_dir()?;
    let root = dir.path();
    for sub in ["workflows", "rules", "templates"] {
        copy_tree(&project.root.join(sub), &root.join(sub))?;
    }
    for (path, text) in files {
        let dest = root.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(dest, text)?;
    }
    let checked = dossier_runtime::Project::load(root, project.connectors.clone());
    Ok(checked.diagnostics)
}

struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> std::io::Result<ScratchDir> {
    let p = std::env::temp_dir().join(format!("dossier-validate-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&p)?;
    Ok(ScratchDir(p))
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

// ---- audit trail ----

pub fn audit_json(r: &dossier_store::AuditRecord) -> Value {
    json!({
        "seq": r.seq,
        "at": time_text(r.entry.at),
        "actor": r.entry.actor,
        "role": r.entry.role,
        "action": r.entry.action,
        "target": r.entry.target,
        "origin": r.entry.origin,
        "request_id": r.entry.request_id,
        "details": parse_json_text(&r.entry.details),
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
}

async fn list_audit(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&who, AUDIT)?;
    let mut p = Params(q);
    let limit = p.limit(100, 1000)?;
    let after = match p.take("after") {
        None => 0,
        Some(v) => v.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                "bad_parameter",
                format!("`after` is an entry number (seq), not `{v}`"),
            )
        })?,
    };
    p.finish(&["after", "limit"])?;
    let rows = state.store().audit(after, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Json(
        json!({"items": rows.iter().map(audit_json).collect::<Vec<_>>(), "next": next}),
    ))
}

async fn verify_audit(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Value>, ApiError> {
    require(&who, AUDIT)?;
    let mut prev = dossier_store::AUDIT_GENESIS.to_string();
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = state.store().audit(after, 1000).await?;
        let Some(last) = page.last() else { break };
        if page.first().map(|r| r.seq) != Some(after + 1) {
            return Ok(Json(
                json!({"intact": false, "entries": count, "broken_at": after + 1}),
            ));
        }
        if let Err(seq) = dossier_store::verify_audit(&page, prev.clone()) {
            return Ok(Json(
                json!({"intact": false, "entries": count, "broken_at": seq}),
            ));
        }
        count += page.len();
        prev = last.hash.clone();
        after = last.seq;
    }
    Ok(Json(
        json!({"intact": true, "entries": count, "last_hash": prev}),
    ))
}

/// `GET /ledger/accounts?prefix=credits/`: the accounts whose name starts with the prefix (all
/// without one), with their balances.
async fn list_ledger_accounts(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&who, READ)?;
    let mut p = Params(q);
    let prefix = p.take("prefix").unwrap_or_default();
    p.finish(&["prefix"])?;
    let rows = state.store().ledger_accounts(&prefix).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|a| json!({"account": a.account, "balance": dossier_runtime::ledger::decimal_json(a.balance), "postings": a.postings}))
        .collect();
    Ok(Json(
        json!({"prefix": prefix, "count": items.len(), "items": items}),
    ))
}

/// `GET /ledger/postings?account=credits/C1`: an account's journal, for auditors: each posting
/// with the balance after it and the case and effect key that made it, in order.
async fn list_ledger_postings(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&who, READ)?;
    let mut p = Params(q);
    let account = p.take("account").ok_or_else(|| {
        ApiError::bad_request(
            "missing_parameter",
            "give the `account` query parameter, e.g. /api/v1/ledger/postings?account=credits/C1",
        )
    })?;
    p.finish(&["account"])?;
    let rows = state.store().ledger_postings(&account).await?;
    // Each balance is the one before plus the amount, by construction; the check is for the
    // auditor reading the answer.
    let mut consistent = true;
    let mut before = dossier_store::Decimal::ZERO;
    for (i, r) in rows.iter().enumerate() {
        consistent &= r.seq == i as i64 + 1 && before + r.amount == r.balance;
        before = r.balance;
    }
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "amount": dossier_runtime::ledger::decimal_json(r.amount),
                "balance": dossier_runtime::ledger::decimal_json(r.balance),
                "instance_id": r.case_id,
                "effect_key": r.key,
                "at": time_text(r.at),
            })
        })
        .collect();
    Ok(Json(json!({
        "account": account,
        "balance": dossier_runtime::ledger::decimal_json(before),
        "count": items.len(),
        "consistent": consistent,
        "items": items,
    })))
}

/// `GET /numbers?series=FAC&period=2026`: the register of a numbering series, for auditors:
/// each number with the case and the effect key that got it, in order.
async fn list_numbers(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&who, READ)?;
    let mut p = Params(q);
    let missing = |name: &str| {
        ApiError::bad_request(
            "missing_parameter",
            format!(
                "give the `{name}` query parameter, e.g. /api/v1/numbers?series=FAC&period=2026"
            ),
        )
    };
    let series = p.take("series").ok_or_else(|| missing("series"))?;
    let period = p.take("period").ok_or_else(|| missing("period"))?;
    p.finish(&["series", "period"])?;
    let rows = state.store().numbers(&series, &period).await?;
    // Gapless by construction; the check is for the auditor reading the answer.
    let gapless = rows.iter().enumerate().all(|(i, r)| r.seq == i as i64 + 1);
    let items: Vec<Value> = rows
        .iter()
        .map(|r| json!({"seq": r.seq, "instance_id": r.case_id, "effect_key": r.key, "at": time_text(r.at)}))
        .collect();
    Ok(Json(json!({
        "series": series,
        "period": period,
        "count": items.len(),
        "gapless": gapless,
        "items": items,
    })))
}
