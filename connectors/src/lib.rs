//! Connectors: the edge where Dossier touches the outside world (email, SMS, calendars,
//! printers, fiscal administrations, HTTP).
//!
//! A workflow's `action` step names a connector and an operation; the engine records the
//! request in the case history, then a worker calls [`Connector::call`] with an
//! [`EffectRequest`] whose `idempotency_key` is stable across retries and restarts. A connector
//! must pass that key on (as an `Idempotency-Key` header, a message id, a CalDAV UID...) so that
//! the outside world performs each effect once even when Dossier, after a crash, asks twice.
//!
//! Errors say whether a retry can help ([`ConnectorError::Transient`]) or not
//! ([`ConnectorError::Permanent`]); the workflow's retry policy only applies to the former.
//! What a connector returns is recorded in the case history as the step's result: it is a
//! summary of what the outside world answered (message id, reference, job id), never a secret.
//!
//! Connectors are configured in the `connectors:` section of `dossier.yaml` ([`config`]).

pub mod calendar;
pub mod config;
pub mod document;
pub mod email;
pub mod escpos;
pub mod fiscal;
pub mod http;
pub mod ipp;
mod log;
pub mod printer;
mod recording;
pub mod signer;
pub mod sms;
pub mod support;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

pub use log::LogConnector;
pub use recording::{Recorded, RecordingConnector, Scripted};

/// One effect to perform.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectRequest {
    /// Stable across retries and restarts: pass it on to the outside world.
    pub idempotency_key: String,
    pub case_id: String,
    pub step: String,
    pub operation: String,
    /// The arguments computed by the step (`with`), templates already rendered.
    pub request: Value,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The engine hands this effect out again without knowing what became of an earlier call
    /// with the same key and attempt (a restart, a result lost with a failed batch): that call
    /// may have been performed. A connector whose server cannot deduplicate on the key looks
    /// before acting again, as it does for `attempt > 1`.
    pub redelivered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Worth retrying: the server is unreachable, timed out, answered 5xx or 429.
    #[error("{0}")]
    Transient(String),
    /// A retry gives the same answer: bad request, refused, unknown operation.
    #[error("{0}")]
    Permanent(String),
}

impl ConnectorError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Transient(_))
    }
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// The operations a workflow may name (`send`, `print`...).
    fn operations(&self) -> Vec<String>;
    /// Performs one effect. Must not panic on any request content.
    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError>;
    /// Reads a delivery receipt the provider posted back (an SMS status callback), checking
    /// that it comes from the provider. `None`: this connector takes no receipts.
    fn receipt(&self, _incoming: &IncomingReceipt) -> Option<Result<Receipt, ReceiptError>> {
        None
    }
}

/// A callback as the server received it.
#[derive(Debug, Clone)]
pub struct IncomingReceipt<'a> {
    /// The URL the provider called (signatures such as Twilio's cover it), as the server
    /// rebuilds it: scheme from `X-Forwarded-Proto` (default http), host from
    /// `X-Forwarded-Host` or `Host`, then the path and query as received.
    pub url: &'a str,
    /// Header names in lower case.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// A delivery receipt, tied to the effect that sent the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub case_id: String,
    /// The idempotency key of the effect that sent the message.
    pub effect_key: String,
    /// The provider's id of the message.
    pub message_id: String,
    /// `delivered`, `failed`, `sent`, `undeliverable`, … as normalized by the connector.
    pub status: String,
    /// What the provider said, for the history.
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Missing or wrong signature or token: answered 401, nothing recorded.
    #[error("{0}")]
    Unauthorized(String),
    /// Not a receipt this connector understands: answered 400.
    #[error("{0}")]
    Malformed(String),
}

/// Connectors by the name workflows use.
#[derive(Clone, Default)]
pub struct Registry {
    connectors: BTreeMap<String, Arc<dyn Connector>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.connectors.keys()).finish()
    }
}

impl Registry {
    /// A registry with the built-in `log` connector.
    pub fn with_builtins() -> Registry {
        let mut r = Registry::default();
        r.register("log", Arc::new(LogConnector));
        r
    }

    pub fn register(&mut self, name: &str, connector: Arc<dyn Connector>) {
        self.connectors.insert(name.to_string(), connector);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.connectors.keys().cloned().collect()
    }

    /// Every connector with its operations (what `dossier validate` checks steps against).
    pub fn catalog(&self) -> BTreeMap<String, Vec<String>> {
        self.connectors
            .iter()
            .map(|(n, c)| (n.clone(), c.operations()))
            .collect()
    }

    /// Calls `connector`, turning an unknown connector or operation into a permanent error.
    pub async fn call(
        &self,
        connector: &str,
        effect: &EffectRequest,
    ) -> Result<Value, ConnectorError> {
        let c = self.connectors.get(connector).ok_or_else(|| {
            ConnectorError::Permanent(format!("no connector named `{connector}` is configured"))
        })?;
        if !c.operations().iter().any(|o| o == &effect.operation) {
            return Err(ConnectorError::Permanent(format!(
                "the connector `{connector}` has no operation `{}` (it has: {})",
                effect.operation,
                c.operations().join(", ")
            )));
        }
        c.call(effect).await
    }
}
