//! Calendar invitations (iCalendar, RFC 5545) and the `calendar` connector (CalDAV, being written).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::support::{BuildContext, BuildError};
use crate::Connector;

/// iTIP method of an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Request,
    Cancel,
}

/// An event as a workflow describes it (the step's `invitation` argument).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Invitation {
    pub uid: String,
}

impl Invitation {
    /// Reads and checks an invitation given as a step argument.
    pub fn parse(value: &serde_json::Value) -> Result<Invitation, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("invalid invitation: {e}"))
    }

    /// The iTIP `.ics` text for email (CRLF lines, folded at 75 octets), stamped `stamp`. (CRLF lines, folded at 75 octets), stamped `stamp`.
    pub fn to_ics(&self, _method: Method, _stamp: DateTime<Utc>) -> String {
        String::new()
    }
}

pub fn build(
    _name: &str,
    _settings: serde_yaml_ng::Value,
    _ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, BuildError> {
    Err(BuildError::new(
        "",
        "the `calendar` connector is not available yet",
        "use the `log` connector meanwhile",
    ))
}
