//! The audit trail: every call that changed something, who made it, when and from where, in a
//! hash chain of its own (see `dossier_store::audit_hash`).

use serde_json::Value;

use dossier_store::AuditEntry;

use crate::auth::Principal;
use crate::body::RequestMeta;
use crate::AppState;

/// The entry of a call whose change is one transaction (a start, a cancellation, a decision, a
/// claim, a release): written in that transaction (`target` empty: the case the call starts).
pub fn entry(
    state: &AppState,
    who: &Principal,
    meta: &RequestMeta,
    action: &str,
    target: &str,
    details: Value,
) -> AuditEntry {
    AuditEntry {
        at: state.now_ms(),
        actor: who.id.clone(),
        role: who.role_text(),
        action: action.to_string(),
        target: target.to_string(),
        origin: meta.origin.clone(),
        request_id: meta.request_id.clone(),
        details: details.to_string(),
    }
}
