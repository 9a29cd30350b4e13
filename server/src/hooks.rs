//! `POST /hooks/{name}`: webhook intake. The signature is checked (Standard Webhooks) before
//! anything else is read; the delivery is deduplicated on `webhook-id` in the transaction that
//! starts or signals each case, so a redelivery answers 2xx and changes nothing.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::audit;
use crate::auth::{Principal, SYSTEM};
use crate::body::{RawBody, RequestMeta};
use crate::error::ApiError;
use crate::webhook::{self, SignatureError, Signed};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/hooks/{name}", post(receive))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(
    State(state): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawBody(raw): RawBody,
) -> Result<Response, ApiError> {
    let Some(keys) = state.hook_keys.get(&name) else {
        // The configured names are not listed: the caller is not authenticated yet.
        return Err(ApiError::not_found(
            "unknown_hook",
            format!("no webhook is named `{name}`; check the URL the sender was given"),
        ));
    };
    let signed = Signed {
        id: header(&headers, "webhook-id"),
        timestamp: header(&headers, "webhook-timestamp"),
        signature: header(&headers, "webhook-signature"),
    };
    let now = state.now_ms() / 1000;
    let tolerance = state.config.server.webhook_tolerance_seconds;
    let (id, _ts) = webhook::verify(keys, &signed, &raw, now, tolerance).map_err(|e| {
        let (status, code) = match &e {
            SignatureError::Missing(_) => (StatusCode::BAD_REQUEST, "missing_header"),
            SignatureError::BadTimestamp(_) => (StatusCode::BAD_REQUEST, "bad_timestamp"),
            SignatureError::OutOfTolerance { .. } => (StatusCode::BAD_REQUEST, "timestamp_out_of_tolerance"),
            SignatureError::NoMatch => (StatusCode::UNAUTHORIZED, "bad_signature"),
            SignatureError::NoSecret => (StatusCode::SERVICE_UNAVAILABLE, "hook_not_configured"),
        };
        let hint = match &e {
            SignatureError::NoSecret => format!(
                "set {} (or `secrets` under hooks.{name} in dossier.yaml) and restart",
                crate::config::hook_env_var(&name)
            ),
            _ => "sign `id.timestamp.body` with HMAC-SHA256 and the hook's secret, send `webhook-signature: v1,<base64>`".to_string(),
        };
        ApiError::new(status, code, e.to_string()).with_details(json!({"hint": hint}))
    })?;
    if id.len() > 255 {
        return Err(ApiError::bad_request(
            "bad_webhook_id",
            "`webhook-id` is longer than 255 characters",
        ));
    }
    let payload: Value = crate::body::parse_json(&raw)?;
    let dedup = dossier_runtime::Dedup {
        scope: format!("hook:{name}:{id}"),
        request_hash: hex::encode(Sha256::digest(&raw)),
    };
    let hook = state.config.hooks.get(&name).cloned().unwrap_or_default();
    let who = Principal {
        id: format!("webhook:{name}"),
        name: format!("webhook:{name}"),
        roles: BTreeSet::from([SYSTEM.to_string()]),
    };
    // Written by the engine with what the delivery does (see `Engine::deliver_event` and
    // `Engine::start_by_webhook`); nothing is audited for a delivery that did nothing.
    let entry = audit::entry(
        &state,
        &who,
        &meta,
        "hooks.receive",
        &name,
        json!({"webhook_id": id, "event": hook.event}),
    );
    let delivery = match &hook.event {
        Some(event) => {
            state
                .engine
                .deliver_event(event, payload, Some(dedup), Some(entry))
                .await
        }
        None => {
            state
                .engine
                .start_by_webhook(&name, payload, Some(dedup), Some(entry))
                .await
        }
    }
    .map_err(|e| match e {
        dossier_runtime::RuntimeError::KeyReused => ApiError::conflict(
            "webhook_id_reused",
            format!("the webhook id `{id}` was already delivered with another body"),
        ),
        other => ApiError::from(other),
    })?;
    let body = json!({
        "webhook_id": id,
        "started": delivery.started,
        "reached": delivery.reached,
        "duplicate": delivery.replayed,
    });
    let status = if delivery.replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(body)).into_response())
}
