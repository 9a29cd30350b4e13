//! `POST /receipts/{connector}`: delivery receipts (SMS status callbacks) posted back by a
//! provider. The connector named in the path checks that the call comes from its provider
//! (Twilio's signature, Orange's token) before anything is read into a case; the receipt is
//! then recorded in the history of the case whose effect sent the message, once per message
//! and status however often the provider repeats it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use dossier_connectors::{IncomingReceipt, ReceiptError};
use serde_json::json;

use crate::body::RawBody;
use crate::error::ApiError;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/receipts/{connector}", post(receive))
}

async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
    raw_headers: HeaderMap,
    RawBody(raw): RawBody,
) -> Result<Response, ApiError> {
    let unknown = || {
        ApiError::not_found(
            "unknown_receipt_endpoint",
            format!("no connector named `{name}` takes delivery receipts; check the callback URL given to the provider"),
        )
    };
    let connector = state.engine.connectors().get(&name).ok_or_else(unknown)?;
    let headers: Vec<(String, String)> = raw_headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let url = public_url(&headers, &uri);
    let incoming = IncomingReceipt {
        url: &url,
        headers: &headers,
        body: &raw,
    };
    let receipt = match connector.receipt(&incoming) {
        None => return Err(unknown()),
        Some(Err(ReceiptError::Unauthorized(m))) => return Err(ApiError::unauthorized(m)),
        Some(Err(ReceiptError::Malformed(m))) => {
            return Err(ApiError::bad_request("malformed_receipt", m))
        }
        Some(Ok(r)) => r,
    };
    let (case_id, status) = (receipt.case_id.clone(), receipt.status.clone());
    let applied = state.engine.record_receipt(&name, receipt).await?;
    let code = if applied.duplicate.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        code,
        Json(json!({
            "instance_id": case_id,
            "status": status,
            "duplicate": applied.duplicate.is_some(),
        })),
    )
        .into_response())
}

/// The URL as the provider called it, behind a reverse proxy too.
fn public_url(headers: &[(String, String)], uri: &Uri) -> String {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.split(',').next().unwrap_or_default().trim().to_string())
    };
    let scheme = get("x-forwarded-proto").unwrap_or_else(|| "http".into());
    let host = get("x-forwarded-host")
        .or_else(|| get("host"))
        .unwrap_or_else(|| "localhost".into());
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{scheme}://{host}{path}")
}
