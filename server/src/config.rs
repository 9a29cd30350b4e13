//! The server's configuration: `dossier.yaml` at the project root (or `--config`), plus the
//! environment for secrets. Webhook secrets never live in workflow files.
//!
//! ```yaml
//! server:
//!   listen: 127.0.0.1:8080
//!   max_body_bytes: 1048576
//! hooks:
//!   facture_emise: {}                       # secret from DOSSIER_HOOK_FACTURE_EMISE_SECRET
//!   paiement_mobile:
//!     secrets: [whsec_..., whsec_...]       # several during a key rotation
//!     event: paiement_recu                  # delivered as this event instead of starting cases
//! oidc:
//!   issuer: https://login.example.com/realms/dossier
//!   audience: dossier
//!   jwks_url: https://login.example.com/realms/dossier/protocol/openid-connect/certs
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::oidc::OidcConfig;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub hooks: BTreeMap<String, HookConfig>,
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// The connectors' section, read by `dossier_connectors::config` (not here).
    #[serde(default)]
    pub connectors: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body accepted (413 above).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How far a webhook's timestamp may be from now, in seconds.
    #[serde(default = "default_tolerance")]
    pub webhook_tolerance_seconds: i64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            webhook_tolerance_seconds: default_tolerance(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_tolerance() -> i64 {
    300
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Secrets (`whsec_<base64>`). Prefer the environment: `DOSSIER_HOOK_<NAME>_SECRET`
    /// (several separated by spaces), which is added to these.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Deliver the payload as this event (to waiting cases, or to `event` triggers) instead of
    /// starting the workflows whose `webhook` trigger has the hook's name.
    #[serde(default)]
    pub event: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {message}")]
    Read { file: String, message: String },
    #[error("{file}:{line}:{column}: error: {message}\n  hint: see the example at the top of server/src/config.rs (sections: server, hooks, oidc)")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: hook `{hook}`: {message}\n  hint: {hint}")]
    Hook {
        file: String,
        hook: String,
        message: String,
        hint: String,
    },
}

impl Config {
    /// Reads `path` if it exists (a missing file is the default configuration), then adds the
    /// hook secrets found in the environment through `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&file, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => {
                return Err(ConfigError::Read {
                    file,
                    message: e.to_string(),
                })
            }
        };
        config.add_env_secrets(&file, env)?;
        Ok(config)
    }

    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                file: file.to_string(),
                line,
                column,
                message: e.to_string(),
            }
        })
    }

    /// `DOSSIER_HOOK_<NAME>_SECRET` for every configured hook; also declares, with their
    /// secret, the hooks named only by workflows' triggers (`hook_names`).
    pub fn add_env_secrets(
        &mut self,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for (name, hook) in self.hooks.iter_mut() {
            hook.secrets.extend(env_secrets(name, env));
            for s in &hook.secrets {
                crate::webhook::decode_secret(s).map_err(|m| ConfigError::Hook {
                    file: file.to_string(),
                    hook: name.clone(),
                    message: m,
                    hint: "a secret is `whsec_` followed by base64, e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                })?;
            }
        }
        Ok(())
    }

    /// Declares a hook that a workflow's trigger names, taking its secret from the
    /// environment when the file does not list it.
    pub fn declare_hook(&mut self, name: &str, env: &dyn Fn(&str) -> Option<String>) {
        if !self.hooks.contains_key(name) {
            let hook = HookConfig {
                secrets: env_secrets(name, env),
                event: None,
            };
            self.hooks.insert(name.to_string(), hook);
        }
    }
}

/// The secrets of a hook found in the environment (several separated by spaces).
fn env_secrets(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    env(&hook_env_var(name))
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The environment variable holding a hook's secrets: `DOSSIER_HOOK_FACTURE_EMISE_SECRET`.
pub fn hook_env_var(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("DOSSIER_HOOK_{upper}_SECRET")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hooks_and_env_secrets() {
        let text =
            "hooks:\n  paiement-mobile:\n    event: paiement_recu\n    secrets: [whsec_c2VjcmV0]\n";
        let mut c = Config::parse("dossier.yaml", text).unwrap();
        let env = |k: &str| {
            (k == "DOSSIER_HOOK_PAIEMENT_MOBILE_SECRET")
                .then(|| "whsec_b3RoZXI= whsec_dGhpcmQ=".to_string())
        };
        c.add_env_secrets("dossier.yaml", &env).unwrap();
        let h = &c.hooks["paiement-mobile"];
        assert_eq!(h.event.as_deref(), Some("paiement_recu"));
        assert_eq!(
            h.secrets,
            vec!["whsec_c2VjcmV0", "whsec_b3RoZXI=", "whsec_dGhpcmQ="]
        );
        assert_eq!(c.server.listen, "127.0.0.1:8080");
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = Config::parse("dossier.yaml", "server:\n  listen: x\n  bogus: 1\n").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("dossier.yaml:3:"), "{text}");
        assert!(text.contains("bogus"), "{text}");
        let mut c = Config::parse("dossier.yaml", "hooks:\n  h:\n    secrets: [nope]\n").unwrap();
        let e = c.add_env_secrets("dossier.yaml", &|_| None).unwrap_err();
        assert!(e.to_string().contains("hook `h`"), "{e}");
    }
}
