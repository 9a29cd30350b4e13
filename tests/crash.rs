//! kill -9 at any moment loses nothing and repeats no effect.
//!
//! Starts cases whose steps call the `record` connector (a recording double that journals each
//! effect to a file, fsynced, like an outside system honouring idempotency keys), then runs
//! `dossier work` and kills it with SIGKILL at random moments, again and again, until a run ends
//! by itself. Then every case must be completed, every history chain intact, and every effect
//! the histories requested performed exactly once by the outside world.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dossier_store::Store;

const CASES: u32 = 1000;

const WORKFLOW: &str = r#"
id: crash_test
version: 1
title: Test de panne
input:
  numero: { type: integer }
steps:
  - id: premier_envoi
    action: { connector: record }
    with: { numero: input.numero, etape: 1 }
    result: r1
  - id: calcul
    assign: { double: input.numero * 2 }
  - id: deuxieme_envoi
    action: { connector: record }
    with: { numero: input.numero, etape: 2, double: double }
  - id: pause
    wait: { duration: PT0S }
  - id: troisieme_envoi
    action: { connector: record }
    with: { numero: input.numero, etape: 3 }
  - id: quatrieme_envoi
    action: { connector: record }
    with: { numero: input.numero, etape: 4 }
output:
  double: double
"#;

fn dossier() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dossier"))
}

fn pseudo_random(max: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7) as u64;
    (nanos / 1000) % max
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir_all(dir.path().join("workflows")).expect("workflows dir");
    std::fs::write(dir.path().join("workflows/crash_test.yaml"), WORKFLOW).expect("workflow file");
    std::fs::write(dir.path().join("input.json"), "{\"numero\": 0}").expect("input file");
    dir
}

fn crash_run(db: &str, dir: &Path) {
    let journal: PathBuf = dir.join("journal.jsonl");
    let project = dir.to_string_lossy().to_string();
    let status = dossier()
        .args(["--project", &project, "start", "crash_test", "--input"])
        .arg(dir.join("input.json"))
        .args(["--count", &CASES.to_string(), "--db", db, "--journal"])
        .arg(&journal)
        .stdout(Stdio::null())
        .status()
        .expect("dossier start runs");
    assert!(status.success(), "dossier start failed");

    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(
            Instant::now() < deadline,
            "the cases did not finish in time"
        );
        let mut child = dossier()
            .args([
                "--project",
                &project,
                "work",
                "--until-idle",
                "--db",
                db,
                "--journal",
            ])
            .arg(&journal)
            .stdout(Stdio::null())
            .spawn()
            .expect("dossier work runs");
        // Kill at a random moment while it works, a few times; then let it finish.
        let until = Instant::now() + Duration::from_millis(20 + pseudo_random(200));
        let mut finished = None;
        while Instant::now() < until {
            if let Some(s) = child.try_wait().expect("wait on dossier work") {
                finished = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match finished {
            Some(s) => {
                assert!(s.success(), "dossier work failed: {s}");
                break;
            }
            None if kills < 15 => {
                child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
                child.wait().expect("reap");
                kills += 1;
            }
            None => {
                let s = child.wait().expect("dossier work ends");
                assert!(s.success(), "dossier work failed: {s}");
                break;
            }
        }
    }
    eprintln!("{db}: {kills} kill -9 during the run");
    assert!(
        kills >= 3,
        "the run ended before it could be killed enough times ({kills}); raise CASES"
    );
}

async fn verify(store: &dyn Store, journal: &Path) {
    let cases = store
        .list_cases(&dossier_store::CaseFilter {
            workflow_id: Some("crash_test".into()),
            ..Default::default()
        })
        .await
        .expect("list cases");
    assert_eq!(
        cases.len(),
        CASES as usize,
        "every started case is in the database"
    );
    let mut requested = BTreeSet::new();
    for c in &cases {
        assert_eq!(c.status, "completed", "case {} is {}", c.id, c.status);
        let history = store.history(&c.id).await.expect("history");
        dossier_core::chain::verify(history.iter().map(|e| {
            (
                e.seq,
                e.at,
                e.kind.as_str(),
                e.payload.as_str(),
                e.prev_hash.as_str(),
                e.hash.as_str(),
            )
        }))
        .unwrap_or_else(|e| panic!("case {}: {e}", c.id));
        let mut completed = BTreeSet::new();
        for e in &history {
            let p: serde_json::Value = serde_json::from_str(&e.payload).expect("payload");
            let key = p["key"].as_str().unwrap_or_default().to_string();
            match e.kind.as_str() {
                "effect_requested" => {
                    requested.insert(key);
                }
                "effect_completed" => assert!(
                    completed.insert(key.clone()),
                    "case {}: {key} completed twice",
                    c.id
                ),
                _ => {}
            }
        }
        assert_eq!(completed.len(), 4, "case {}: four effects completed", c.id);
    }
    let mut performed: BTreeMap<String, u32> = BTreeMap::new();
    let mut redelivered = 0;
    for line in std::fs::read_to_string(journal).expect("journal").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("journal line");
        let key = v["key"].as_str().expect("key").to_string();
        if v["performed"] == serde_json::json!(true) {
            *performed.entry(key).or_default() += 1;
        } else {
            redelivered += 1;
        }
    }
    assert_eq!(requested.len(), CASES as usize * 4);
    for key in &requested {
        assert_eq!(
            performed.get(key),
            Some(&1),
            "effect {key} performed {:?} times",
            performed.get(key)
        );
    }
    assert_eq!(
        performed.len(),
        requested.len(),
        "no effect outside the histories was performed"
    );
    eprintln!("{} effects performed exactly once; {redelivered} redeliveries after kills were deduplicated by key", requested.len());
}

#[test]
fn kill_9_on_sqlite_loses_nothing_and_repeats_no_effect() {
    let dir = project();
    let db = dir.path().join("crash.db").to_string_lossy().to_string();
    crash_run(&db, dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = dossier_store::sqlite::SqliteStore::open(Path::new(&db))
            .await
            .expect("open");
        verify(&store, &dir.path().join("journal.jsonl")).await;
    });
}

#[test]
fn kill_9_on_postgres_loses_nothing_and_repeats_no_effect() {
    let admin = std::env::var("DOSSIER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("dossier_crash_{}", std::process::id());
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin.clone());
    let url = format!("{base}/{name}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use sqlx::{Connection, Executor};
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL must be running for this test");
        c.execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
            .await
            .expect("drop");
        c.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create");
    });
    let dir = project();
    crash_run(&url, dir.path());
    rt.block_on(async {
        let store = dossier_store::postgres::PgStore::connect(&url)
            .await
            .expect("open");
        verify(&store, &dir.path().join("journal.jsonl")).await;
        store.close().await;
        use sqlx::{Connection, Executor};
        let mut c = sqlx::PgConnection::connect(&admin).await.expect("admin");
        c.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await
            .expect("drop");
    });
}
