//! `dossier serve` and `dossier keys`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use dossier_runtime::{Engine, EngineConfig, SystemClock};
use dossier_server::{auth, AppState, Config};
use dossier_store::{ApiKeyRecord, AuditEntry, Store};

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub async fn serve(
    root: &Path,
    db: Option<String>,
    listen: Option<String>,
    config: Option<PathBuf>,
    journal: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let file = crate::commands::config_file(root, config.as_deref());
    let mut config = Config::load(&file, &env_var).map_err(|e| anyhow::anyhow!("{e}"))?;
    let registry = crate::commands::registry(root, Some(&file), journal)?;
    // Refuses to start on any invalid file, with the messages of `dossier validate`.
    let project = Arc::new(crate::commands::load_with(root, &registry)?);
    // Hooks named by workflows' triggers exist even when dossier.yaml does not list them; their
    // secret then comes from the environment.
    let mut trigger_hooks = BTreeSet::new();
    for wf in project.workflows.values() {
        for t in &wf.parsed.workflow.triggers {
            if let Some(h) = &t.webhook {
                trigger_hooks.insert(h.clone());
            }
        }
    }
    for h in &trigger_hooks {
        config.declare_hook(h, &env_var);
    }
    for (name, hook) in &config.hooks {
        if hook.event.is_none() && !trigger_hooks.contains(name) {
            bail!(
                "{}: hook `{name}` neither names an `event` nor is a `webhook` trigger of any workflow\n  hint: add `event: NAME` under hooks.{name}, or `triggers: [{{webhook: {name}}}]` to a workflow",
                file.display()
            );
        }
        if hook.secrets.is_empty() {
            eprintln!(
                "warning: hook `{name}` has no secret: every delivery will be refused until {} is set",
                dossier_server::config::hook_env_var(name)
            );
        }
    }
    let listen = listen.unwrap_or_else(|| config.server.listen.clone());
    let store = crate::store::open(&db.unwrap_or_else(|| crate::store::default_db(root))).await?;
    let engine = Engine::start(
        store,
        project,
        registry,
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .await?;
    dossier_runtime::cron::spawn(engine.clone());
    let state = AppState::new(engine.clone(), config)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    // One line on standard output, for scripts that start the server on port 0.
    println!("dossier: serving on http://{addr}");
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    };
    dossier_server::serve(listener, state, shutdown).await?;
    engine.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it once (only its hash is stored).
    Create {
        /// API role, then any task roles (inboxes), comma-separated: `operator,recouvrement`.
        #[arg(long)]
        role: String,
        /// Who or what uses the key (recorded as `by` in the histories of tasks it decides).
        #[arg(long)]
        name: String,
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
    },
    /// List the keys (never their secrets).
    List {
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
    },
    /// Revoke a key by its id or its name.
    Revoke {
        key: String,
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
    },
}

async fn audit_cli(store: &dyn Store, action: &str, target: &str, details: serde_json::Value) {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let entry = AuditEntry {
        at: chrono::Utc::now().timestamp_millis(),
        actor: format!("cli:{user}"),
        role: "admin".into(),
        action: action.into(),
        target: target.into(),
        origin: "cli".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        details: details.to_string(),
    };
    if let Err(e) = store.append_audit(&entry).await {
        eprintln!("warning: the audit entry could not be written: {e}");
    }
}

pub async fn keys(root: &Path, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let db_of = |db: Option<String>| db.unwrap_or_else(|| crate::store::default_db(root));
    match cmd {
        KeysCommand::Create { role, name, db } => {
            let roles = auth::parse_roles(&role).map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            let name = name.trim().to_string();
            if name.is_empty() {
                bail!("--name is empty: say who or what uses the key");
            }
            let store = crate::store::open(&db_of(db)).await?;
            let existing = store.api_keys().await?;
            if existing
                .iter()
                .any(|k| k.name == name && k.revoked_at.is_none())
            {
                bail!("a key named `{name}` exists already: revoke it first (`dossier keys revoke {name}`) or choose another name");
            }
            let (id, key, hash) =
                auth::new_api_key().map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
            let role_text = roles.iter().cloned().collect::<Vec<_>>().join(",");
            store
                .put_api_key(&ApiKeyRecord {
                    id: id.clone(),
                    name: name.clone(),
                    role: role_text.clone(),
                    hash,
                    created_at: chrono::Utc::now().timestamp_millis(),
                    revoked_at: None,
                })
                .await?;
            audit_cli(
                store.as_ref(),
                "keys.create",
                &format!("key:{id}"),
                serde_json::json!({"name": name, "roles": role_text}),
            )
            .await;
            eprintln!("key {id} ({name}, roles {role_text}) created; it is shown once:");
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { db } => {
            let store = crate::store::open(&db_of(db)).await?;
            println!(
                "{:<12} {:<24} {:<32} {:<26} status",
                "id", "name", "roles", "created"
            );
            for k in store.api_keys().await? {
                let created = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(k.created_at)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let status = match k.revoked_at {
                    Some(at) => format!(
                        "revoked {}",
                        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            .unwrap_or_default()
                    ),
                    None => "active".into(),
                };
                println!(
                    "{:<12} {:<24} {:<32} {:<26} {status}",
                    k.id, k.name, k.role, created
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { key, db } => {
            let store = crate::store::open(&db_of(db)).await?;
            let revoked = store
                .revoke_api_key(&key, chrono::Utc::now().timestamp_millis())
                .await?;
            if revoked.is_empty() {
                eprintln!(
                    "error: no active key has the id or name `{key}` (see `dossier keys list`)"
                );
                return Ok(ExitCode::from(1));
            }
            for k in &revoked {
                audit_cli(
                    store.as_ref(),
                    "keys.revoke",
                    &format!("key:{}", k.id),
                    serde_json::json!({"name": k.name}),
                )
                .await;
                println!("revoked {} ({})", k.id, k.name);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
