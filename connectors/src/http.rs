//! The `http` connector: JSON requests to one service, and outgoing webhooks signed the Standard
//! Webhooks way.
//!
//! ```yaml
//! connectors:
//!   crm:
//!     type: http
//!     base_url: https://crm.exemple.ci/api/
//!     headers: { Accept-Language: fr }
//!     bearer_token_env: DOSSIER_CRM_TOKEN        # or basic: {username, password_env}
//!     header_secrets: { X-Api-Key: DOSSIER_CRM_KEY }
//!     webhook_secret_env: DOSSIER_CRM_WEBHOOK_SECRET   # whsec_…, for the `webhook` operation
//!     timeout_seconds: 20
//! ```
//!
//! A step reaches only its connector's service: `path` is joined to `base_url`, and an absolute
//! `url` must have the same origin, so a workflow cannot send the case's data elsewhere.
//!
//! Operations:
//! - `request`: `method` (default POST), `path` or `url`, `query`, `headers`, `body` (a JSON
//!   value; a string — what a template gives — is parsed as JSON unless `content_type` says
//!   otherwise), `expect` (a status or a list; default any 2xx). The result is `{status, body,
//!   location?, etag?}`, the body parsed when the answer is JSON.
//! - `webhook`: `path` or `url`, `type`, `data`. The body is `{type, timestamp, data}`; the
//!   headers `webhook-id` (the effect's idempotency key, the same on every retry, so the
//!   receiver deduplicates), `webhook-timestamp` and `webhook-signature` (`v1,` HMAC-SHA256).
//!
//! Every request carries `Idempotency-Key: <the effect's key>`.
//! Transient: unreachable, timeout, 408, 425, 429 and 5xx (unless `expect` lists them).
//! Permanent: any other unexpected status, a body template that is not JSON, a JSON answer that
//! does not parse, a URL outside `base_url`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::{self, BuildContext, BuildError};
use crate::{Connector, ConnectorError, EffectRequest};

/// Largest answer body kept in the case history (characters); longer text is cut.
const MAX_TEXT_BODY: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    base_url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    bearer_token_env: Option<String>,
    #[serde(default)]
    basic: Option<BasicConfig>,
    /// Header name to the environment variable holding its value.
    #[serde(default)]
    header_secrets: BTreeMap<String, String>,
    #[serde(default)]
    webhook_secret_env: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicConfig {
    username: String,
    password_env: String,
}

pub struct HttpConnector {
    name: String,
    base: url::Url,
    /// Static and secret headers, checked at build time.
    headers: reqwest::header::HeaderMap,
    webhook_key: Option<Vec<u8>>,
    client: reqwest::Client,
}

pub fn build(
    name: &str,
    settings: serde_yaml_ng::Value,
    ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, BuildError> {
    let cfg: Config = crate::config::settings(settings)?;
    let base = support::parse_base_url("base_url", &cfg.base_url)?;
    let mut headers = reqwest::header::HeaderMap::new();
    let mut add = |field: &str, k: &str, v: &str| -> Result<(), BuildError> {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            BuildError::new(
                field,
                format!("`{k}` is not a valid header name"),
                "letters, digits and `-`",
            )
        })?;
        let mut value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
            BuildError::new(
                field,
                format!("the value of header `{k}` has characters a header cannot carry"),
                "use visible ASCII",
            )
        })?;
        value.set_sensitive(field != "headers");
        headers.insert(name, value);
        Ok(())
    };
    for (k, v) in &cfg.headers {
        add("headers", k, v)?;
    }
    for (k, var) in &cfg.header_secrets {
        let v = ctx.secret("header_secrets", var)?;
        add("header_secrets", k, &v)?;
    }
    if let Some(var) = &cfg.bearer_token_env {
        let t = ctx.secret("bearer_token_env", var)?;
        add("bearer_token_env", "authorization", &format!("Bearer {t}"))?;
    }
    if let Some(b) = &cfg.basic {
        use base64::Engine as _;
        let p = ctx.secret("basic.password_env", &b.password_env)?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{p}", b.username));
        add("basic", "authorization", &format!("Basic {token}"))?;
    }
    let webhook_key = match &cfg.webhook_secret_env {
        Some(var) => {
            let s = ctx.secret("webhook_secret_env", var)?;
            Some(crate::webhook::decode_secret(&s).map_err(|m| {
                BuildError::new(
                    "webhook_secret_env",
                    format!("the secret in `{var}`: {m}"),
                    "a Standard Webhooks secret is `whsec_` followed by base64",
                )
            })?)
        }
        None => None,
    };
    let timeout = support::timeout(
        cfg.timeout_seconds,
        "give the seconds to wait for the service, such as 20",
    )?;
    Ok(Arc::new(HttpConnector {
        name: name.to_string(),
        base,
        headers,
        webhook_key,
        client: support::http_client(timeout)?,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestArgs {
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    query: BTreeMap<String, Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    expect: Option<Expect>,
}

fn default_method() -> String {
    "POST".into()
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expect {
    One(u16),
    Many(Vec<u16>),
}

impl Expect {
    fn allows(&self, status: u16) -> bool {
        match self {
            Expect::One(s) => *s == status,
            Expect::Many(v) => v.contains(&status),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookArgs {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

impl HttpConnector {
    fn service(&self) -> String {
        format!("http `{}`", self.name)
    }

    /// The URL a step asks for, kept inside the service's base.
    fn target(&self, path: Option<&str>, url: Option<&str>) -> Result<url::Url, ConnectorError> {
        let permanent = |m: String| ConnectorError::Permanent(format!("{}: {m}", self.service()));
        let u = match (path, url) {
            (Some(_), Some(_)) => return Err(permanent("give `path` or `url`, not both".into())),
            (None, Some(u)) => {
                url::Url::parse(u).map_err(|e| permanent(format!("`{u}` is not a URL: {e}")))?
            }
            (p, None) => {
                let p = p.unwrap_or_default().trim_start_matches('/');
                self.base
                    .join(p)
                    .map_err(|e| permanent(format!("the path `{p}` does not make a URL: {e}")))?
            }
        };
        if u.origin() != self.base.origin() || !u.path().starts_with(self.base.path()) {
            return Err(permanent(format!(
                "`{u}` is outside the connector's base_url `{}`: a step may only reach its own service",
                self.base
            )));
        }
        Ok(u)
    }

    async fn request(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let a: RequestArgs = support::args(&self.name, effect)?;
        let service = self.service();
        let method = reqwest::Method::from_bytes(a.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                ConnectorError::Permanent(format!(
                    "{service}: `{}` is not an HTTP method",
                    a.method
                ))
            })?;
        let mut url = self.target(a.path.as_deref(), a.url.as_deref())?;
        if !a.query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &a.query {
                match v {
                    Value::String(s) => q.append_pair(k, s),
                    other => q.append_pair(k, &other.to_string()),
                };
            }
        }
        let mut req = self
            .client
            .request(method, url.clone())
            .headers(self.headers.clone())
            .header("idempotency-key", &effect.idempotency_key);
        for (k, v) in &a.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(body) = a.body {
            req = match (body, a.content_type) {
                (Value::String(text), Some(ct)) => req.header("content-type", ct).body(text),
                (Value::String(text), None) => {
                    let parsed: Value = serde_json::from_str(&text).map_err(|e| {
                        ConnectorError::Permanent(format!(
                            "{service}: the body is not JSON (line {}, column {}: {e}); fix the body template, or give `content_type` to send it as text",
                            e.line(),
                            e.column()
                        ))
                    })?;
                    req.json(&parsed)
                }
                (v, Some(ct)) => req.header("content-type", ct).body(v.to_string()),
                (v, None) => req.json(&v),
            };
        }
        let answer = support::send(&service, req).await?;
        let status = answer.status;
        let expected = match &a.expect {
            Some(e) => e.allows(status),
            None => answer.is_success(),
        };
        if !expected {
            return Err(support::status_error(&service, status, &answer.text));
        }
        let is_json = answer
            .header("content-type")
            .is_some_and(|c| c.contains("json"));
        let body = if is_json && !answer.text.trim().is_empty() {
            support::json_body(&service, &answer.text)?
        } else {
            Value::String(answer.text.chars().take(MAX_TEXT_BODY).collect())
        };
        let mut out = json!({ "status": status, "url": url.as_str(), "body": body });
        for name in ["location", "etag"] {
            if let Some(v) = answer.header(name) {
                out[name] = json!(v);
            }
        }
        Ok(out)
    }

    async fn webhook(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let a: WebhookArgs = support::args(&self.name, effect)?;
        let service = self.service();
        let Some(key) = &self.webhook_key else {
            return Err(ConnectorError::Permanent(format!(
                "{service}: no `webhook_secret_env` is configured, so webhooks cannot be signed"
            )));
        };
        let url = self.target(a.path.as_deref(), a.url.as_deref())?;
        let now = chrono::Utc::now();
        let body = json!({
            "type": a.kind,
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "data": a.data,
        })
        .to_string();
        // The id is the effect's key: the same on every retry, so the receiver deduplicates.
        let id = format!("msg_{}", effect.idempotency_key);
        let ts = now.timestamp();
        let signature = crate::webhook::sign(key, &id, ts, body.as_bytes());
        let resp = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .header("content-type", "application/json")
            .header("idempotency-key", &effect.idempotency_key)
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", &signature)
            .body(body)
            .send()
            .await
            .map_err(|e| support::transport_error(&service, &e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(support::status_error(&service, status, &text));
        }
        Ok(json!({ "status": status, "url": url.as_str(), "webhook_id": id, "type": a.kind }))
    }
}

#[async_trait]
impl Connector for HttpConnector {
    fn operations(&self) -> Vec<String> {
        vec!["request".into(), "webhook".into()]
    }

    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        match effect.operation.as_str() {
            "request" => self.request(effect).await,
            "webhook" => self.webhook(effect).await,
            other => Err(ConnectorError::Permanent(format!(
                "{}: no operation `{other}`",
                self.service()
            ))),
        }
    }
}
