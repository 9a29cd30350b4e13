//! The `connectors:` section of the project's `dossier.yaml`: one entry per connector, named as
//! workflows name it, with its `type` and settings. Secrets are never written there: a setting
//! ending in `_env` names the environment variable that holds the secret.
//!
//! ```yaml
//! connectors:
//!   courriel:
//!     type: email
//!     host: smtp.exemple.ci
//!     port: 587
//!     tls: starttls
//!     username: relances@exemple.ci
//!     password_env: DOSSIER_SMTP_PASSWORD
//!     from: "Service recouvrement <relances@exemple.ci>"
//! ```
//!
//! [`load`] turns the section into a [`Registry`] or into diagnostics (`dossier.yaml:12:5:
//! error: … / hint: …`), which `dossier validate` prints and `dossier serve` refuses to start on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use dossier_model::{did_you_mean, Diagnostic, Pos, SpanIndex};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::support::{BuildContext, BuildError};
use crate::{Connector, Registry};

/// The connector types and what builds each.
type Builder =
    fn(&str, serde_yaml_ng::Value, &BuildContext) -> Result<Arc<dyn Connector>, BuildError>;

fn builders() -> Vec<(&'static str, Builder)> {
    vec![
        ("email", crate::email::build),
        ("sms", crate::sms::build),
        ("calendar", crate::calendar::build),
        ("printer", crate::printer::build),
        ("fiscal", crate::fiscal::build),
        ("http", crate::http::build),
        ("signer", crate::signer::build),
    ]
}

/// The operations of each connector type, all options on (a test checks them against the built
/// connectors).
pub fn type_operations(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "email" => &["send"],
        "sms" => &["send"],
        "calendar" => &["publish", "cancel"],
        "printer" => &["pdf", "print", "ticket"],
        "fiscal" => &["certify", "refund", "status"],
        "http" => &["request", "webhook"],
        "signer" => &["sign"],
        _ => return None,
    })
}

/// The connectors `text` declares, with their operations, without building them (no secret
/// needed): what workflow tests and simulations check steps against. Entries that do not
/// parse are left out; [`load`] reports them.
pub fn declared(text: &str) -> BTreeMap<String, Vec<String>> {
    let Ok(section) = serde_yaml_ng::from_str::<Section>(text) else {
        return BTreeMap::new();
    };
    section
        .connectors
        .into_iter()
        .filter(|(name, _)| !RESERVED.contains(&name.as_str()))
        .filter_map(|(name, v)| {
            let kind = v.get("type")?.as_str()?;
            let ops = type_operations(kind)?;
            Some((name, ops.iter().map(|o| o.to_string()).collect()))
        })
        .collect()
}

/// Names a configured connector may not take: the built-in ones.
const RESERVED: &[&str] = &["log", "record"];

#[derive(Deserialize)]
struct Section {
    #[serde(default)]
    connectors: BTreeMap<String, serde_yaml_ng::Value>,
}

/// Builds the connectors of `dossier.yaml` (`file` is its path as shown in messages, `text` its
/// content) on top of the built-in ones. Every problem is reported, not only the first.
pub fn load(
    file: &str,
    text: &str,
    ctx: &BuildContext,
    mut registry: Registry,
) -> Result<Registry, Vec<Diagnostic>> {
    if text.trim().is_empty() {
        return Ok(registry);
    }
    let section: Section = match serde_yaml_ng::from_str(text) {
        Ok(s) => s,
        Err(e) => {
            let pos = e
                .location()
                .map(|l| Pos {
                    line: l.line(),
                    column: l.column(),
                })
                .unwrap_or(Pos { line: 1, column: 1 });
            return Err(vec![Diagnostic::error(file, pos, e.to_string()).with_hint(
                "the `connectors:` section maps each connector's name to its settings",
            )]);
        }
    };
    let spans = SpanIndex::build(text);
    let mut diags = Vec::new();
    let types: Vec<&str> = builders().iter().map(|(t, _)| *t).collect();
    for (name, value) in section.connectors {
        let at = |field: &str| {
            if field.is_empty() {
                spans.key(&format!("connectors.{name}"))
            } else {
                spans.key(&format!("connectors.{name}.{field}"))
            }
        };
        if RESERVED.contains(&name.as_str()) {
            diags.push(
                Diagnostic::error(
                    file,
                    at(""),
                    format!("`{name}` is a built-in connector's name"),
                )
                .with_hint("give this connector another name, and use that name in the workflows"),
            );
            continue;
        }
        let mut map = match value {
            serde_yaml_ng::Value::Mapping(m) => m,
            _ => {
                diags.push(
                    Diagnostic::error(file, at(""), format!("connector `{name}`: its settings must be a mapping"))
                        .with_hint("write `type: email` (or sms, calendar, printer, fiscal, http) and its settings under the name"),
                );
                continue;
            }
        };
        let kind = map.remove("type");
        let Some(kind) = kind.as_ref().and_then(|k| k.as_str()) else {
            diags.push(
                Diagnostic::error(file, at(""), format!("connector `{name}` has no `type`"))
                    .with_hint(format!("add `type:` with one of: {}", types.join(", "))),
            );
            continue;
        };
        let Some((_, build)) = builders().into_iter().find(|(t, _)| *t == kind) else {
            let mut hint = format!("the types are: {}", types.join(", "));
            if let Some(s) = did_you_mean(kind, types.iter().copied()) {
                hint = format!("did you mean `{s}`? {hint}");
            }
            diags.push(
                Diagnostic::error(
                    file,
                    spans.value(&format!("connectors.{name}.type")),
                    format!("connector `{name}`: unknown type `{kind}`"),
                )
                .with_hint(hint),
            );
            continue;
        };
        match build(&name, serde_yaml_ng::Value::Mapping(map), ctx) {
            Ok(c) => registry.register(&name, c),
            Err(e) => {
                let hint = if e.hint.is_empty() {
                    format!("the settings of the `{kind}` connector type are described in connectors/docs/{kind}.md")
                } else {
                    e.hint
                };
                diags.push(
                    Diagnostic::error(
                        file,
                        at(&e.field),
                        format!("connector `{name}`: {}", e.message),
                    )
                    .with_hint(hint),
                )
            }
        }
    }
    if diags.is_empty() {
        Ok(registry)
    } else {
        Err(diags)
    }
}

/// Reads `path` (a missing file means no configured connector) and builds the registry; the
/// project folder is `path`'s folder.
pub fn load_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    registry: Registry,
) -> Result<Registry, Vec<Diagnostic>> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(registry),
        Err(e) => {
            return Err(vec![Diagnostic::error(
                &shown,
                Pos { line: 1, column: 1 },
                format!("cannot read: {e}"),
            )])
        }
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let ctx = BuildContext { env, base_dir };
    load(&shown, &text, &ctx, registry)
}

/// Deserializes a connector's settings; an unknown or mistyped setting names its key.
pub fn settings<T: DeserializeOwned>(value: serde_yaml_ng::Value) -> Result<T, BuildError> {
    serde_yaml_ng::from_value(value).map_err(|e| {
        let msg = e.to_string();
        // `unknown field `pasword`, expected one of …`: point at the misspelt key.
        let field = msg
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .unwrap_or_default()
            .to_string();
        // The hint names the type's page: `load` fills it in.
        BuildError::new(&field, msg, "")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Registry, String> {
        let ctx = BuildContext {
            env,
            base_dir: "/p".into(),
        };
        load("dossier.yaml", text, &ctx, Registry::with_builtins()).map_err(|ds| {
            ds.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn the_declared_operations_are_those_of_the_built_connectors() {
        // One connector of each type, with every option that adds an operation: what `dossier
        // test` accepts without secrets must be what `dossier serve` builds.
        let text = "connectors:
  e: { type: email, host: smtp.exemple.ci }
  s: { type: sms, provider: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token_env: T, from: \"+2250700000000\" }
  c: { type: calendar, url: \"https://dav.exemple.ci/agenda/\" }
  p: { type: printer, ipp_url: \"ipp://imprimante:631/ipp/print\", escpos: { host: caisse }, documents_dir: documents }
  f: { type: fiscal, api_url: \"https://fne.exemple.ci/ws\", api_key_env: T, point_of_sale: P, establishment: E }
  h: { type: http, base_url: \"https://crm.exemple.ci/api/\" }
  g: { type: signer, private_key_env: K, key_id: k1 }
";
        use base64::Engine as _;
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let env = move |v: &str| {
            Some(if v == "K" {
                key.clone()
            } else {
                "secret".into()
            })
        };
        let built = load_text(text, &env).unwrap().catalog();
        let declared = declared(text);
        assert_eq!(declared.len(), 7);
        for (name, ops) in &declared {
            let mut built_ops = built[name].clone();
            built_ops.sort();
            let mut ops = ops.clone();
            ops.sort();
            assert_eq!(built_ops, ops, "connector `{name}`");
        }
    }

    #[test]
    fn no_section_keeps_the_builtins() {
        let r = load_text("server:\n  listen: 127.0.0.1:1\n", &|_| None).unwrap();
        assert_eq!(r.names(), vec!["log"]);
    }

    #[test]
    fn unknown_type_and_missing_type_are_located() {
        let text = "connectors:\n  courriel:\n    type: emial\n  autre:\n    host: x\n  log:\n    type: http\n";
        let e = load_text(text, &|_| None).unwrap_err();
        expect_test::expect![[r#"
            dossier.yaml:4:3: error: connector `autre` has no `type`
              hint: add `type:` with one of: email, sms, calendar, printer, fiscal, http, signer
            dossier.yaml:3:11: error: connector `courriel`: unknown type `emial`
              hint: did you mean `email`? the types are: email, sms, calendar, printer, fiscal, http, signer
            dossier.yaml:6:3: error: `log` is a built-in connector's name
              hint: give this connector another name, and use that name in the workflows"#]]
        .assert_eq(&e);
    }
}
