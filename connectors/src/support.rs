//! What every connector shares: reading a step's arguments, secrets from the environment,
//! HTTP clients with timeouts, and the line between transient and permanent failures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{ConnectorError, EffectRequest};

/// Default time a connector waits for its server (overridable by `timeout_seconds`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the step's `with` arguments into `T`; a mismatch is permanent (a retry sends the same).
pub fn args<T: DeserializeOwned>(
    connector: &str,
    effect: &EffectRequest,
) -> Result<T, ConnectorError> {
    serde_json::from_value(effect.request.clone()).map_err(|e| {
        ConnectorError::Permanent(format!(
            "{connector}.{}: the step's arguments are wrong: {e}",
            effect.operation
        ))
    })
}

/// A problem in a connector's configuration, at a dotted path inside its section
/// (`password_env`, `orange.client_id_env`); [`crate::config`] turns the path into a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// Key inside the connector's section; empty for the section itself.
    pub field: String,
    pub message: String,
    pub hint: String,
}

impl BuildError {
    pub fn new(field: &str, message: impl Into<String>, hint: impl Into<String>) -> BuildError {
        BuildError {
            field: field.to_string(),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// What building a connector may look at: the environment (secrets) and the project folder
/// (relative file paths such as a CA certificate). Building never touches the network.
pub struct BuildContext<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub base_dir: PathBuf,
}

impl BuildContext<'_> {
    /// The secret held by the environment variable `var`, which the field `field` names.
    pub fn secret(&self, field: &str, var: &str) -> Result<String, BuildError> {
        match (self.env)(var) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(BuildError::new(
                field,
                format!("the environment variable `{var}` is not set"),
                format!("export {var}=… before starting Dossier; secrets never go in this file"),
            )),
        }
    }

    /// An optional secret: `None` when the field is absent.
    pub fn optional_secret(
        &self,
        field: &str,
        var: Option<&str>,
    ) -> Result<Option<String>, BuildError> {
        var.map(|v| self.secret(field, v)).transpose()
    }

    /// A path of the configuration, relative to the project folder.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The settings `username` and `password_env`: both (an [`Account`], its password read
    /// from the environment) or neither (`None`). `what`: what the username is on this server
    /// ("the CalDAV account"), for the hint when only `password_env` is set.
    pub fn account(
        &self,
        username: Option<&str>,
        password_env: Option<&str>,
        what: &str,
    ) -> Result<Option<Account>, BuildError> {
        match (username, password_env) {
            (None, None) => Ok(None),
            (Some(user), Some(var)) => Ok(Some(Account {
                username: user.to_string(),
                password: self.secret("password_env", var)?,
                password_env: var.to_string(),
            })),
            (Some(_), None) => Err(BuildError::new(
                "username",
                "`username` is set without `password_env`",
                "add `password_env:` with the name of the environment variable holding the password",
            )),
            (None, Some(_)) => Err(BuildError::new(
                "password_env",
                "`password_env` is set without `username`",
                format!("add `username:` ({what})"),
            )),
        }
    }
}

/// An account on a server, from the settings `username` and `password_env`.
pub struct Account {
    pub username: String,
    pub password: String,
    /// The environment variable holding the password: messages name it, never the password.
    pub password_env: String,
}

/// The setting `timeout_seconds`: [`DEFAULT_TIMEOUT`] when absent; 0 is refused (every call
/// would give up at once). `hint`: what to give instead, for this connector's server.
pub fn timeout(seconds: Option<u64>, hint: &str) -> Result<Duration, BuildError> {
    match seconds {
        None => Ok(DEFAULT_TIMEOUT),
        Some(0) => Err(BuildError::new(
            "timeout_seconds",
            "`timeout_seconds` must be at least 1",
            hint,
        )),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// Checks an `http(s)://` URL of the configuration. A URL carrying credentials
/// (`user:password@`) is refused: URLs show in error messages, which go into case histories.
pub fn parse_url(field: &str, text: &str) -> Result<url::Url, BuildError> {
    let u = url::Url::parse(text).map_err(|e| {
        BuildError::new(
            field,
            format!("`{text}` is not a URL: {e}"),
            "write it as https://host/path",
        )
    })?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(BuildError::new(
            field,
            format!("`{text}` is not an http or https URL"),
            "write it as https://host/path",
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(BuildError::new(
            field,
            "the URL carries credentials (user:password@)",
            "remove them: secrets go in environment variables named by the `*_env` settings",
        ));
    }
    Ok(u)
}

/// [`parse_url`] for a URL that paths are joined to (an API's base, a collection): its path
/// ends with `/`, so that `https://x/api` and `clients` give `https://x/api/clients`.
pub fn parse_base_url(field: &str, text: &str) -> Result<url::Url, BuildError> {
    let mut u = parse_url(field, text)?;
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Ok(u)
}

/// An HTTP client that gives up after `timeout` (connection included).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, BuildError> {
    client(timeout, reqwest::redirect::Policy::default())
}

/// The same that follows no redirect (as OAuth token endpoints want: a redirect could take the
/// credentials elsewhere).
pub fn http_client_without_redirects(timeout: Duration) -> Result<reqwest::Client, BuildError> {
    client(timeout, reqwest::redirect::Policy::none())
}

fn client(
    timeout: Duration,
    redirects: reqwest::redirect::Policy,
) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(redirects)
        .user_agent(concat!("Dossier/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            BuildError::new(
                "",
                format!("cannot set up the HTTP client: {e}"),
                "this is a problem of the machine's TLS setup",
            )
        })
}

/// A request that did not get an answer: unreachable, refused, timed out, cut off. Worth
/// retrying. A body that could not be decoded is permanent.
pub fn transport_error(service: &str, e: &reqwest::Error) -> ConnectorError {
    if e.is_decode() {
        return ConnectorError::Permanent(format!("{service}: malformed answer: {e}"));
    }
    if e.is_builder() {
        // The request itself cannot be made (a header value it cannot carry): the same again.
        return ConnectorError::Permanent(format!("{service}: cannot build the request: {e}"));
    }
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut msg = format!("{service}: {what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    ConnectorError::Transient(msg)
}

/// Whether an HTTP status is worth retrying: 408, 425, 429 and every 5xx.
pub fn status_is_transient(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || status >= 500
}

/// The error for an unexpected HTTP status, with the start of the body the server sent.
pub fn status_error(service: &str, status: u16, body: &str) -> ConnectorError {
    status_error_saying(service, status, &excerpt(body))
}

/// The error for an unexpected HTTP status, `{service}: HTTP {status}: {detail}`, where
/// `detail` is what the server said (read from its error format); transient when the status is
/// worth retrying ([`status_is_transient`]), permanent otherwise.
pub fn status_error_saying(service: &str, status: u16, detail: &str) -> ConnectorError {
    let msg = format!("{service}: HTTP {status}: {detail}");
    if status_is_transient(status) {
        ConnectorError::Transient(msg)
    } else {
        ConnectorError::Permanent(msg)
    }
}

/// A server's whole answer.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl HttpAnswer {
    /// A header's value, when it is there and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends `request` and reads its answer whole. No answer, or one cut off, is the
/// [`transport_error`] of `service`; any status is an answer (the caller sorts them).
pub async fn send(
    service: &str,
    request: reqwest::RequestBuilder,
) -> Result<HttpAnswer, ConnectorError> {
    let resp = request
        .send()
        .await
        .map_err(|e| transport_error(service, &e))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp
        .text()
        .await
        .map_err(|e| transport_error(service, &e))?;
    Ok(HttpAnswer {
        status,
        headers,
        text,
    })
}

/// At most 300 characters of a server's answer, on one line.
pub fn excerpt(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if body.chars().count() > 300 {
        format!("{}…", one_line.trim())
    } else {
        one_line.trim().to_string()
    }
}

/// Parses a JSON answer; a malformed one is permanent (the server answered, and wrongly).
pub fn json_body(service: &str, body: &str) -> Result<Value, ConnectorError> {
    serde_json::from_str(body).map_err(|e| {
        ConnectorError::Permanent(format!(
            "{service}: malformed answer (not JSON: {e}): {}",
            excerpt(body)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert!(status_error("x", 503, "").is_transient());
        assert!(status_error("x", 429, "").is_transient());
        assert!(!status_error("x", 400, "").is_transient());
        assert!(!status_error("x", 404, "").is_transient());
        assert_eq!(
            status_error("fne", 422, "{\"error\":\n\"bad\"}").to_string(),
            "fne: HTTP 422: {\"error\": \"bad\"}"
        );
    }

    #[test]
    fn timeouts_and_accounts() {
        assert_eq!(timeout(None, "h"), Ok(DEFAULT_TIMEOUT));
        assert_eq!(timeout(Some(7), "h"), Ok(Duration::from_secs(7)));
        let e = timeout(Some(0), "give 30").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str(), e.hint.as_str()),
            (
                "timeout_seconds",
                "`timeout_seconds` must be at least 1",
                "give 30"
            )
        );

        let env = |k: &str| (k == "PW").then(|| "s3cret".to_string());
        let ctx = BuildContext {
            env: &env,
            base_dir: PathBuf::from("/p"),
        };
        assert!(ctx.account(None, None, "x").unwrap().is_none());
        let a = ctx.account(Some("u"), Some("PW"), "x").unwrap().unwrap();
        assert_eq!(
            (
                a.username.as_str(),
                a.password.as_str(),
                a.password_env.as_str()
            ),
            ("u", "s3cret", "PW")
        );
        let field = |u, p| ctx.account(u, p, "the account").err().map(|e| e.field);
        assert_eq!(field(Some("u"), None).as_deref(), Some("username"));
        assert_eq!(field(None, Some("PW")).as_deref(), Some("password_env"));
        assert_eq!(
            field(Some("u"), Some("NOPE")).as_deref(),
            Some("password_env")
        );
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let env = |k: &str| (k == "SET").then(|| "s3cret".to_string());
        let ctx = BuildContext {
            env: &env,
            base_dir: PathBuf::from("/p"),
        };
        assert_eq!(ctx.secret("password_env", "SET").unwrap(), "s3cret");
        let e = ctx.secret("password_env", "UNSET").unwrap_err();
        assert_eq!(e.field, "password_env");
        assert!(e.message.contains("`UNSET` is not set"), "{}", e.message);
        assert_eq!(
            ctx.path(Path::new("certs/ca.pem")),
            PathBuf::from("/p/certs/ca.pem")
        );
    }
}
