//! The cron runner (`dossier_runtime::cron`) on a live `Engine`, on SQLite (a temporary file)
//! and on PostgreSQL (a fresh database per test; `DOSSIER_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; an unreachable server FAILS these tests).
//!
//! The engine's clock is a test clock moved by hand; the runner looks at it every second of
//! real time, so the tests wait for the cases with a deadline, then wait a few more looks to
//! see that nothing else starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use dossier_connectors::Registry;
use dossier_runtime::{Clock, Engine, EngineConfig, Project};
use dossier_store::postgres::PgStore;
use dossier_store::sqlite::SqliteStore;
use dossier_store::{CaseFilter, Store};
use serde_json::Value;

// =============================================================================================
// Backends (as in tests/engine.rs)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A database that outlives the engines started on it.
struct Db {
    backend: Backend,
    sqlite_dir: Option<tempfile::TempDir>,
    pg_url: Option<String>,
}

impl Db {
    /// A new connection to the database.
    async fn open(&self) -> Arc<dyn Store> {
        match self.backend {
            Backend::Sqlite => {
                let dir = self.sqlite_dir.as_ref().expect("sqlite dir");
                Arc::new(
                    SqliteStore::open(&dir.path().join("dossier.db"))
                        .await
                        .expect("open sqlite"),
                )
            }
            Backend::Postgres => Arc::new(
                PgStore::connect(self.pg_url.as_ref().expect("pg url"))
                    .await
                    .expect("connect to the test database"),
            ),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `test` against a fresh database of `backend`, then drops the database.
fn with_backend(backend: Backend, test: fn(&Db)) {
    let mut db = Db {
        backend,
        sqlite_dir: None,
        pg_url: None,
    };
    match backend {
        Backend::Sqlite => db.sqlite_dir = Some(tempfile::tempdir().expect("temp dir")),
        Backend::Postgres => {
            return dossier_testkit::with_temp_pg("dossier_cron", |url| {
                db.pg_url = Some(url.to_string());
                test(&db)
            })
        }
    }
    test(&db)
}

/// Generates one `#[test]` per backend for each test.
macro_rules! cron_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::with_backend(super::Backend::Sqlite, super::$name)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::with_backend(super::Backend::Postgres, super::$name)
                }
            )*
        }
    };
}

cron_tests!(
    each_slot_that_comes_due_starts_one_case,
    two_runners_on_one_engine_start_each_slot_once,
    two_nodes_on_one_database_start_each_slot_once,
    a_restarted_engine_does_not_start_past_slots_again,
    slots_missed_while_down_are_not_caught_up,
    the_runner_ends_when_the_engine_stops,
);

// =============================================================================================
// The project, the clock, the engine

const RELEVE: &str = r#"
id: releve
version: 1
title: Relevé toutes les cinq minutes
input:
  scheduled_at: { type: text }
steps:
  - id: noter
    assign: { prevu: input.scheduled_at }
output:
  prevu: prevu
triggers:
  - cron: "*/5 * * * *"
    input:
      scheduled_at: payload.scheduled_at
"#;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The test project, written to a temporary directory and loaded (it must be valid).
fn project() -> Arc<Project> {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "workflows/releve.yaml", RELEVE);
    let project =
        Project::load_valid(dir.path(), BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(project)
}

/// A clock the test moves.
struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    /// Monday 2 March 2026, 09:00:00 UTC.
    fn new() -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(at(9, 0, 0))))
    }
    fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
    fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// 2 March 2026 at `h:m:s` UTC.
fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, s).unwrap()
}

async fn start_engine(db: &Db, clock: Arc<TestClock>) -> Engine {
    Engine::start(
        db.open().await,
        project(),
        Registry::default(),
        clock,
        EngineConfig::default(),
    )
    .await
    .expect("the engine starts")
}

const DEADLINE: Duration = Duration::from_secs(15);

/// The `scheduled_at` input of every case of `releve`, sorted.
async fn scheduled(engine: &Engine) -> Vec<String> {
    let filter = CaseFilter {
        workflow_id: Some("releve".into()),
        ..CaseFilter::default()
    };
    let mut out = Vec::new();
    for case in engine.store().list_cases(&filter).await.unwrap() {
        let history = engine.store().history(&case.id).await.unwrap();
        let started = history
            .iter()
            .find(|e| e.kind == "case_started")
            .unwrap_or_else(|| panic!("case {} has no case_started event", case.id));
        let payload: Value = serde_json::from_str(&started.payload).unwrap();
        out.push(
            payload["input"]["scheduled_at"]
                .as_str()
                .unwrap_or_else(|| panic!("case {} input: {payload}", case.id))
                .to_string(),
        );
    }
    out.sort();
    out
}

/// Waits until `releve` has `expected.len()` cases, then a few more looks of the runner, and
/// checks that exactly those slots started.
async fn expect_slots(engine: &Engine, expected: &[&str]) {
    let start = Instant::now();
    loop {
        let found = scheduled(engine).await;
        if found.len() >= expected.len() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "after {DEADLINE:?}, cases for {found:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two and a half looks: a slot started twice would show now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(scheduled(engine).await, expected);
}

// =============================================================================================
// The tests

/// Twelve minutes after the runner starts at 09:00, the slots 09:05 and 09:10 have started one
/// case each, whose input maps `payload.scheduled_at`; the slot at 09:00 itself does not.
fn each_slot_that_comes_due_starts_one_case(db: &Db) {
    let clock = TestClock::new();
    runtime().block_on(async {
        let engine = start_engine(db, clock.clone()).await;
        assert_eq!(engine.triggers().crons.len(), 1);
        let _runner = dossier_runtime::cron::spawn(engine.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(scheduled(&engine).await.is_empty(), "nothing came due yet");

        clock.advance(chrono::Duration::minutes(12));
        expect_slots(&engine, &["2026-03-02T09:05:00Z", "2026-03-02T09:10:00Z"]).await;

        // The case ran: its output is the slot it was started for.
        let filter = CaseFilter {
            workflow_id: Some("releve".into()),
            ..CaseFilter::default()
        };
        for case in engine.store().list_cases(&filter).await.unwrap() {
            assert_eq!(case.status, "completed", "case {}", case.id);
        }
        // Each slot's start is recorded under the trigger's inbox scope.
        let rec = engine
            .store()
            .inbox("cron:releve:*/5 * * * *", "2026-03-02T09:10:00Z")
            .await
            .unwrap()
            .expect("the slot's inbox record");
        assert_eq!(rec.status, "completed");

        clock.advance(chrono::Duration::minutes(5));
        expect_slots(
            &engine,
            &[
                "2026-03-02T09:05:00Z",
                "2026-03-02T09:10:00Z",
                "2026-03-02T09:15:00Z",
            ],
        )
        .await;
        engine.shutdown().await;
    });
}

/// Two runners on one engine (as two nodes would) see the same slots: each starts once.
fn two_runners_on_one_engine_start_each_slot_once(db: &Db) {
    let clock = TestClock::new();
    runtime().block_on(async {
        let engine = start_engine(db, clock.clone()).await;
        let _a = dossier_runtime::cron::spawn(engine.clone());
        let _b = dossier_runtime::cron::spawn(engine.clone());
        clock.advance(chrono::Duration::minutes(12));
        expect_slots(&engine, &["2026-03-02T09:05:00Z", "2026-03-02T09:10:00Z"]).await;
        engine.shutdown().await;
    });
}

/// Two engines on one database, each with its runner: each slot starts once.
fn two_nodes_on_one_database_start_each_slot_once(db: &Db) {
    let clock = TestClock::new();
    runtime().block_on(async {
        let one = start_engine(db, clock.clone()).await;
        let two = start_engine(db, clock.clone()).await;
        let _a = dossier_runtime::cron::spawn(one.clone());
        let _b = dossier_runtime::cron::spawn(two.clone());
        clock.advance(chrono::Duration::minutes(12));
        expect_slots(&one, &["2026-03-02T09:05:00Z", "2026-03-02T09:10:00Z"]).await;
        assert_eq!(scheduled(&two).await.len(), 2);
        one.shutdown().await;
        two.shutdown().await;
    });
}

/// An engine restarted on the same database, whose clock is behind the slot the first one
/// started (a restart within the minute, a node whose clock lags), does not start it again.
fn a_restarted_engine_does_not_start_past_slots_again(db: &Db) {
    let clock = TestClock::new();
    let first = runtime();
    first.block_on(async {
        let engine = start_engine(db, clock.clone()).await;
        let _runner = dossier_runtime::cron::spawn(engine.clone());
        clock.advance(chrono::Duration::minutes(12));
        expect_slots(&engine, &["2026-03-02T09:05:00Z", "2026-03-02T09:10:00Z"]).await;
    });
    // A crash: the engine and its runner die with their runtime.
    first.shutdown_timeout(Duration::from_secs(2));

    clock.set(at(9, 9, 30));
    runtime().block_on(async {
        let engine = start_engine(db, clock.clone()).await;
        let _runner = dossier_runtime::cron::spawn(engine.clone());
        // 09:10 comes due again for this runner: the inbox has it.
        clock.set(at(9, 12, 0));
        expect_slots(&engine, &["2026-03-02T09:05:00Z", "2026-03-02T09:10:00Z"]).await;
        // The next slot starts as usual.
        clock.set(at(9, 16, 0));
        expect_slots(
            &engine,
            &[
                "2026-03-02T09:05:00Z",
                "2026-03-02T09:10:00Z",
                "2026-03-02T09:15:00Z",
            ],
        )
        .await;
        engine.shutdown().await;
    });
}

/// Slots that came due while no engine ran (09:15 to 09:30) are not started afterwards.
fn slots_missed_while_down_are_not_caught_up(db: &Db) {
    let clock = TestClock::new();
    let first = runtime();
    first.block_on(async {
        let engine = start_engine(db, clock.clone()).await;
        let _runner = dossier_runtime::cron::spawn(engine.clone());
        clock.advance(chrono::Duration::minutes(12));
        expect_slots(&engine, &["2026-03-02T09:05:00Z", "2026-03-02T09:10:00Z"]).await;
        engine.shutdown().await;
    });
    first.shutdown_timeout(Duration::from_secs(2));

    clock.set(at(9, 31, 0));
    runtime().block_on(async {
        let engine = start_engine(db, clock.clone()).await;
        let _runner = dossier_runtime::cron::spawn(engine.clone());
        expect_slots(&engine, &["2026-03-02T09:05:00Z", "2026-03-02T09:10:00Z"]).await;
        clock.set(at(9, 36, 0));
        expect_slots(
            &engine,
            &[
                "2026-03-02T09:05:00Z",
                "2026-03-02T09:10:00Z",
                "2026-03-02T09:35:00Z",
            ],
        )
        .await;
        engine.shutdown().await;
    });
}

/// Once the engine has stopped, the runner ends at the next slot instead of looping forever.
fn the_runner_ends_when_the_engine_stops(db: &Db) {
    let clock = TestClock::new();
    runtime().block_on(async {
        let engine = start_engine(db, clock.clone()).await;
        let runner = dossier_runtime::cron::spawn(engine.clone());
        engine.shutdown().await;
        clock.advance(chrono::Duration::minutes(6));
        tokio::time::timeout(DEADLINE, runner)
            .await
            .expect("the runner ends once the engine has stopped")
            .expect("the runner does not panic");
        assert!(scheduled(&engine).await.is_empty());
    });
}
