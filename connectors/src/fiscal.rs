//! The `fiscal` connector (being written).

use std::sync::Arc;

use crate::support::{BuildContext, BuildError};
use crate::Connector;

pub fn build(
    _name: &str,
    _settings: serde_yaml_ng::Value,
    _ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, BuildError> {
    Err(BuildError::new(
        "",
        "the `fiscal` connector is not available yet",
        "use the `log` connector meanwhile",
    ))
}
