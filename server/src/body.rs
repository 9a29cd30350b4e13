//! Request plumbing: JSON bodies read with errors that say what to fix, and the request's
//! correlation id and origin for the audit trail.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::ApiError;

/// The correlation id and peer of a request.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    pub origin: String,
}

/// Gives each request a correlation id (`x-request-id`, taken from the caller when it sends a
/// sane one) and notes where it came from.
pub async fn request_meta(mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let origin = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "in-process".to_string());
    req.extensions_mut().insert(RequestMeta {
        request_id: request_id.clone(),
        origin,
    });
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// Makes every error answer JSON: the refusals axum produces itself (a method the path does
/// not have, a path segment that is not UTF-8...) come as plain text.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("text/plain; version=0.0.4")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not take this method; see /api/v1/openapi.json".to_string(),
        ),
        s if s.is_server_error() => ("internal", "an internal error occurred".to_string()),
        _ => (
            "bad_request",
            if text.is_empty() {
                "the request is not valid".to_string()
            } else {
                text
            },
        ),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW) {
        out.headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    out
}

/// The raw body, within the configured size limit.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server accepts (server.max_body_bytes in dossier.yaml)",
            )),
            Err(e) => Err(ApiError::bad_request(
                "unreadable_body",
                format!("the request body cannot be read: {e}"),
            )),
        }
    }
}

/// A JSON body parsed into `T`, with the raw bytes kept (for idempotency hashes).
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let v = v.to_ascii_lowercase();
                v.starts_with("application/json") || v.contains("+json")
            });
        if json_type == Some(false) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let RawBody(raw) = RawBody::from_request(req, state).await?;
        let value = parse_json(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// Parses JSON, answering a malformed or mistyped body with where and what is wrong.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value: T = serde_path_to_error(&mut de)?;
    de.end().map_err(|e| syntax(&e))?;
    Ok(value)
}

fn serde_path_to_error<'de, T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, ApiError> {
    T::deserialize(de).map_err(|e| syntax(&e))
}

fn syntax(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let (code, what) = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ("invalid_json", "the body is not valid JSON")
        }
        Category::Data => ("invalid_body", "the body does not have the expected shape"),
    };
    let message = e.to_string();
    // serde_json appends " at line L column C": keep the words, report the place in details.
    let short = message
        .rsplit_once(" at line ")
        .map(|(m, _)| m.to_string())
        .unwrap_or(message);
    ApiError::bad_request(code, format!("{what}: {short}"))
        .with_details(json!({"line": e.line(), "column": e.column()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Start {
        workflow: String,
    }

    #[test]
    fn malformed_and_mistyped_bodies_say_where() {
        let e = parse_json::<Start>(b"{\n  \"workflow\": }").unwrap_err();
        assert_eq!(
            (e.code, e.details["line"].as_u64()),
            ("invalid_json", Some(2))
        );
        let e = parse_json::<Start>(br#"{"workflow": 3}"#).unwrap_err();
        assert_eq!(e.code, "invalid_body");
        assert!(e.message.contains("expected a string"), "{}", e.message);
        let e = parse_json::<Start>(br#"{"workflow": "a", "wokflow": 1}"#).unwrap_err();
        assert!(
            e.message.contains("unknown field `wokflow`"),
            "{}",
            e.message
        );
        let e = parse_json::<Start>(br#"{"workflow": "a"} x"#).unwrap_err();
        assert_eq!(e.code, "invalid_json");
    }
}
