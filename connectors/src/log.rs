//! The `log` connector: writes the effect to the service's log and answers at once. Useful in
//! drafts of a workflow and as the durable no-op effect of benchmarks.

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::{Connector, ConnectorError, EffectRequest};

pub struct LogConnector;

#[async_trait]
impl Connector for LogConnector {
    fn operations(&self) -> Vec<String> {
        vec!["send".into(), "write".into(), "noop".into()]
    }

    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        if effect.operation != "noop" {
            tracing::info!(
                target: "dossier::log_connector",
                key = %effect.idempotency_key,
                case = %effect.case_id,
                step = %effect.step,
                request = %effect.request,
                "log connector"
            );
        }
        Ok(json!({"logged": effect.operation != "noop"}))
    }
}
