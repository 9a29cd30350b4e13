//! Who is calling: API keys (stored hashed) and OIDC bearer tokens, and the roles each
//! endpoint needs.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

/// The roles of the API. A principal may also hold task roles (the inboxes it works in:
/// `recouvrement`, `comptabilite`...), any other name.
pub const ADMIN: &str = "admin";
pub const ANALYST: &str = "analyst";
pub const OPERATOR: &str = "operator";
pub const AUDITOR: &str = "auditor";
pub const SYSTEM: &str = "system";
pub const API_ROLES: [&str; 5] = [ADMIN, ANALYST, OPERATOR, AUDITOR, SYSTEM];

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable identifier for the audit trail: `key:<id>`, `oidc:<sub>`, `webhook:<name>`.
    pub id: String,
    /// The person or system as recorded in case histories (`by` of a task decision): the key's
    /// name, the token's user name.
    pub name: String,
    /// API roles and task roles.
    pub roles: BTreeSet<String>,
}

impl Principal {
    pub fn has(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    pub fn has_any(&self, roles: &[&str]) -> bool {
        roles.iter().any(|r| self.has(r))
    }

    /// The API roles, comma-separated (for the audit trail).
    pub fn role_text(&self) -> String {
        self.roles.iter().cloned().collect::<Vec<_>>().join(",")
    }

    /// Whether this caller works the inbox of a task role (admins work every inbox).
    pub fn works_inbox(&self, task_role: &str) -> bool {
        self.has(ADMIN) || (self.has(OPERATOR) && self.has(task_role))
    }
}

/// Prefix of every API key: `dsk_<id>_<secret>`.
pub const KEY_PREFIX: &str = "dsk_";

/// A new API key: `(id, whole key text, hash to store)`. The id is public (listings, audit);
/// the secret part is 32 random bytes.
pub fn new_api_key() -> Result<(String, String, String), getrandom::Error> {
    let mut id = [0u8; 5];
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut id)?;
    getrandom::getrandom(&mut secret)?;
    let id = hex::encode(id);
    let key = format!("{KEY_PREFIX}{id}_{}", hex::encode(secret));
    let hash = hash_key(&key);
    Ok((id, key, hash))
}

/// SHA-256 (hex) of a key: what the store keeps. Keys are 256-bit random, so a fast hash is
/// enough (no dictionary to slow down).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Parses a comma-separated role list (`operator,recouvrement`). Errors name the problem.
pub fn parse_roles(text: &str) -> Result<BTreeSet<String>, String> {
    let roles: BTreeSet<String> = text
        .split(',')
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    if roles.is_empty() {
        return Err(format!(
            "no role given: use one of {} (task roles may follow, comma-separated: `operator,recouvrement`)",
            API_ROLES.join(", ")
        ));
    }
    if !roles.iter().any(|r| API_ROLES.contains(&r.as_str())) {
        return Err(format!(
            "`{text}` holds no API role: add one of {}",
            API_ROLES.join(", ")
        ));
    }
    for r in &roles {
        if !r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "role `{r}` may only contain letters, digits, `_` and `-`"
            ));
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_hash_to_what_is_stored() {
        let (id1, k1, h1) = new_api_key().unwrap();
        let (id2, k2, _) = new_api_key().unwrap();
        assert_ne!(k1, k2);
        assert_ne!(id1, id2);
        assert!(k1.starts_with(&format!("dsk_{id1}_")));
        assert_eq!(k1.len(), 4 + 10 + 1 + 64);
        assert_eq!(hash_key(&k1), h1);
        assert_ne!(hash_key(&k2), h1);
    }

    #[test]
    fn roles_need_an_api_role_and_clean_names() {
        assert_eq!(
            parse_roles("operator, recouvrement").unwrap(),
            ["operator", "recouvrement"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert!(parse_roles("recouvrement")
            .unwrap_err()
            .contains("no API role"));
        assert!(parse_roles("").unwrap_err().contains("no role given"));
        assert!(parse_roles("admin,a b").unwrap_err().contains("`a b`"));
    }

    #[test]
    fn operators_work_only_their_inboxes() {
        let p = |roles: &[&str]| Principal {
            id: "key:x".into(),
            name: "x".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
        };
        assert!(p(&["operator", "recouvrement"]).works_inbox("recouvrement"));
        assert!(!p(&["operator", "recouvrement"]).works_inbox("direction"));
        assert!(!p(&["auditor", "recouvrement"]).works_inbox("recouvrement"));
        assert!(p(&["admin"]).works_inbox("direction"));
    }
}
