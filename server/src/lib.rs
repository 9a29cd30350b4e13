//! `dossier serve`: the HTTP API (`/api/v1`), webhook intake (`/hooks/{name}`), the human-task
//! inbox, roles and API keys, and the hash-chained audit trail.
//!
//! The router is plain axum over an [`AppState`]; tests drive it without a socket
//! (`tower::ServiceExt::oneshot`) and over a real one.

pub mod api;
pub mod audit;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod hooks;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod receipts;
pub use dossier_connectors::webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use dossier_runtime::Engine;
use dossier_store::Store;

pub use config::Config;
pub use error::ApiError;

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub config: Arc<Config>,
    pub oidc: Option<Arc<oidc::Oidc>>,
    /// The hooks' decoded secrets, by hook name.
    pub hook_keys: Arc<std::collections::BTreeMap<String, Vec<Vec<u8>>>>,
    /// Requests served, for `/metrics`.
    pub http: Arc<metrics::HttpMetrics>,
}

impl AppState {
    /// Builds the state: decodes the hook secrets (already checked by [`Config::load`]) and
    /// loads the OIDC provider's keys when one is configured.
    pub async fn new(engine: Engine, config: Config) -> Result<AppState, String> {
        let mut hook_keys = std::collections::BTreeMap::new();
        for (name, hook) in &config.hooks {
            let mut keys = Vec::new();
            for s in &hook.secrets {
                keys.push(webhook::decode_secret(s).map_err(|e| format!("hook `{name}`: {e}"))?);
            }
            hook_keys.insert(name.clone(), keys);
        }
        let oidc = match &config.oidc {
            Some(c) => Some(Arc::new(
                oidc::Oidc::new(c.clone())
                    .await
                    .map_err(|e| format!("oidc: {e}"))?,
            )),
            None => None,
        };
        Ok(AppState {
            engine,
            config: Arc::new(config),
            oidc,
            hook_keys: Arc::new(hook_keys),
            http: Arc::new(metrics::HttpMetrics::default()),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }

    /// Now, in milliseconds, from the engine's clock.
    pub fn now_ms(&self) -> i64 {
        self.engine.now().timestamp_millis()
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    api::routes()
        .merge(hooks::routes())
        .merge(receipts::routes())
        .merge(metrics::routes())
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn(body::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .layer(axum::middleware::from_fn(body::request_meta))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves the router on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
