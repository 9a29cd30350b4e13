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
//!
//! This crate ships the contract, the [`Registry`], the `log` connector and the
//! [`RecordingConnector`] test double; real connectors come in their own modules.

mod log;
mod recording;

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
}

/// Connectors by the name workflows use.
#[derive(Clone, Default)]
pub struct Registry {
    connectors: BTreeMap<String, Arc<dyn Connector>>,
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
