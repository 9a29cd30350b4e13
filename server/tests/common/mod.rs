//! The test harness: the `achats` fixture project served by a router over a fresh SQLite file
//! or a fresh PostgreSQL database, with a clock the test moves and one API key per role.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::{DateTime, TimeZone, Utc};
use dossier_connectors::{
    Connector, ConnectorError, EffectRequest, IncomingReceipt, Receipt, ReceiptError, Registry,
};
use dossier_runtime::{Clock, Engine, EngineConfig, Project};
use dossier_server::config::HookConfig;
use dossier_server::{AppState, Config};
use dossier_store::postgres::PgStore;
use dossier_store::sqlite::SqliteStore;
use dossier_store::{ApiKeyRecord, Store};
use dossier_testkit::TempPg;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A clock the test moves.
pub struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

pub const HOOK_SECRET: &str = "whsec_c2VjcmV0IGRlIGwnaW50ZWdyYXRpb24gYWNoYXRz";
pub const HOOK_SECRET_NEW: &str = "whsec_bm91dmVsbGUgY2zDqSBhcHLDqHMgcm90YXRpb24=";
pub const TRANSPORT_SECRET: &str = "whsec_dHJhbnNwb3J0ZXVy";

pub struct Harness {
    pub app: Router,
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub clock: Arc<TestClock>,
    /// API key text by name: admin, analyst, auditor, system, operateur_achats,
    /// operatrice_achats, directeur, operateur_compta.
    pub keys: BTreeMap<&'static str, String>,
    pub backend: Backend,
    pub sqlite_path: Option<PathBuf>,
    pub pg_url: Option<String>,
}

pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/achats")
}

pub fn config() -> Config {
    let mut c = Config::default();
    c.hooks.insert(
        "demande_achat".into(),
        HookConfig {
            secrets: vec![HOOK_SECRET.into(), HOOK_SECRET_NEW.into()],
            event: None,
        },
    );
    c.hooks.insert(
        "transporteur".into(),
        HookConfig {
            secrets: vec![TRANSPORT_SECRET.into()],
            event: Some("livraison".into()),
        },
    );
    c.server.max_body_bytes = 64 * 1024;
    c
}

/// A connector taking delivery receipts: `x-token: bon` authenticates the provider; the body
/// is `{case, key, id, status}`.
pub struct ReceiptTaker;

#[async_trait::async_trait]
impl Connector for ReceiptTaker {
    fn operations(&self) -> Vec<String> {
        vec!["send".into()]
    }

    async fn call(&self, _: &EffectRequest) -> Result<Value, ConnectorError> {
        Ok(Value::Null)
    }

    fn receipt(&self, incoming: &IncomingReceipt) -> Option<Result<Receipt, ReceiptError>> {
        let token = incoming.headers.iter().find(|(k, _)| k == "x-token");
        if token.map(|(_, v)| v.as_str()) != Some("bon") {
            return Some(Err(ReceiptError::Unauthorized("bad token".into())));
        }
        let v: Value = match serde_json::from_slice(incoming.body) {
            Ok(v) => v,
            Err(e) => return Some(Err(ReceiptError::Malformed(e.to_string()))),
        };
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Some(Ok(Receipt {
            case_id: s("case"),
            effect_key: s("key"),
            message_id: s("id"),
            status: s("status"),
            detail: json!({"url": incoming.url, "body": v}),
        }))
    }
}

pub const KEYS: [(&str, &str); 8] = [
    ("admin", "admin"),
    ("analyst", "analyst"),
    ("auditor", "auditor"),
    ("system", "system"),
    ("operateur_achats", "operator,achats"),
    ("operatrice_achats", "operator,achats"),
    ("directeur", "operator,direction"),
    ("operateur_compta", "operator,comptabilite"),
];

impl Harness {
    pub async fn start(backend: Backend, db: &TestDb) -> Harness {
        let store = db.open().await;
        let clock = Arc::new(TestClock(Mutex::new(
            Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap(),
        )));
        let project = Arc::new(
            Project::load_valid(&fixture(), Default::default())
                .expect("the fixture project is valid"),
        );
        let mut registry = Registry::with_builtins();
        registry.register("sms_test", Arc::new(ReceiptTaker));
        let engine = Engine::start(
            store.clone(),
            project,
            registry,
            clock.clone(),
            EngineConfig::default(),
        )
        .await
        .expect("engine");
        let mut keys = BTreeMap::new();
        for (name, role) in KEYS {
            let (id, key, hash) = dossier_server::auth::new_api_key().unwrap();
            store
                .put_api_key(&ApiKeyRecord {
                    id,
                    name: name.into(),
                    role: role.into(),
                    hash,
                    created_at: 0,
                    revoked_at: None,
                })
                .await
                .unwrap();
            keys.insert(name, key);
        }
        let state = AppState::new(engine.clone(), config())
            .await
            .expect("state");
        Harness {
            app: dossier_server::router(state),
            engine,
            store,
            clock,
            keys,
            backend,
            sqlite_path: db.sqlite_path(),
            pg_url: db.pg_url.clone(),
        }
    }

    pub fn now_secs(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// Sends a request through the router (no socket); `key` names a key of [`KEYS`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {}", self.keys[k]));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(Body::from(body.unwrap_or_default())).unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, value)
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call("GET", path, Some(key), &[], None).await;
        (s, v)
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call(
                "POST",
                path,
                Some(key),
                &[],
                Some(body.to_string().into_bytes()),
            )
            .await;
        (s, v)
    }

    /// Waits (real time, bounded) until the case has the status.
    pub async fn wait_status(&self, id: &str, status: &str) {
        for _ in 0..500 {
            if let Some(c) = self.store.case(id).await.unwrap() {
                if c.status == status {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let c = self.store.case(id).await.unwrap();
        panic!("case {id} never became {status}: {c:?}");
    }

    pub async fn kinds(&self, id: &str) -> Vec<String> {
        self.store
            .history(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    pub async fn case_count(&self) -> usize {
        self.store
            .list_cases(&Default::default())
            .await
            .unwrap()
            .len()
    }

    pub async fn audit_count(&self) -> usize {
        self.store.audit(0, 0).await.unwrap().len()
    }

    pub async fn stop(self) {
        self.engine.shutdown().await;
    }
}

// ---- databases ----

pub struct TestDb {
    backend: Backend,
    dir: Option<tempfile::TempDir>,
    pub pg_url: Option<String>,
    pg: Option<TempPg>,
}

impl TestDb {
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("dossier.db"))
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        match self.backend {
            Backend::Sqlite => Arc::new(
                SqliteStore::open(&self.sqlite_path().unwrap())
                    .await
                    .expect("open sqlite"),
            ),
            Backend::Postgres => Arc::new(
                PgStore::connect(self.pg_url.as_ref().unwrap())
                    .await
                    .expect("connect to the test database"),
            ),
        }
    }
}

async fn create_db(backend: Backend) -> TestDb {
    match backend {
        Backend::Sqlite => TestDb {
            backend,
            dir: Some(tempfile::tempdir().unwrap()),
            pg_url: None,
            pg: None,
        },
        Backend::Postgres => {
            let pg = TempPg::create("dossier_srv").await;
            TestDb {
                backend,
                dir: None,
                pg_url: Some(pg.url().to_string()),
                pg: Some(pg),
            }
        }
    }
}

async fn drop_db(db: TestDb) {
    if let Some(pg) = db.pg {
        pg.drop_db().await;
    }
}

/// Runs an async test against a fresh database of `backend` with a started harness.
pub fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = create_db(backend).await;
        let h = Harness::start(backend, &db).await;
        // A panicking test still drops its database.
        let outcome = tokio::spawn(test(h)).await;
        drop_db(db).await;
        if let Err(e) = outcome {
            match e.try_into_panic() {
                Ok(p) => std::panic::resume_unwind(p),
                Err(e) => panic!("the test task failed: {e}"),
            }
        }
    });
}

/// One `#[test]` per backend for each listed async test.
#[macro_export]
macro_rules! server_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    $crate::common::run($crate::common::Backend::Sqlite, super::$name)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    $crate::common::run($crate::common::Backend::Postgres, super::$name)
                }
            )*
        }
    };
}

/// A Standard Webhooks delivery: headers for `body` signed with `secret` at `ts`.
pub fn signed_headers(secret: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = dossier_server::webhook::decode_secret(secret).unwrap();
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        (
            "webhook-signature".into(),
            dossier_server::webhook::sign(&key, id, ts, body),
        ),
    ]
}
