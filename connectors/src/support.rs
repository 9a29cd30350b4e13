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

/// An HTTP client that gives up after `timeout` (connection included).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
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
    let msg = format!("{service}: HTTP {status}: {}", excerpt(body));
    if status_is_transient(status) {
        ConnectorError::Transient(msg)
    } else {
        ConnectorError::Permanent(msg)
    }
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
