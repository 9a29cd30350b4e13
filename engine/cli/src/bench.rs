//! `dossier bench`: throughput, latency and memory of the engine on SQLite and PostgreSQL.
//!
//! The workload is `examples/bench`: five steps, each evaluating a rule and then performing a
//! durable no-op effect (`log.noop`), so every case commits six transactions' worth of
//! transitions (start, then one per effect result) and runs ten steps. Each measure starts from
//! a fresh database. Numbers are medians of what this run saw; run it twice before believing a
//! difference.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dossier_connectors::Registry;
use dossier_runtime::{Engine, EngineConfig, Project, SystemClock};
use serde_json::json;
use sqlx::{Connection, Executor};
use tokio::sync::Semaphore;

const BENCH_WORKFLOW: &str =
    include_str!("../../../examples/bench/workflows/bench_cinq_etapes.yaml");
const TIMER_WORKFLOW: &str = include_str!("../../../examples/bench/workflows/bench_attente.yaml");
const BENCH_RULE: &str = include_str!("../../../examples/bench/rules/bench.rhai");

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Backends to measure, comma-separated: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// PostgreSQL server where fresh databases are created (and dropped).
    #[arg(
        long,
        env = "DOSSIER_BENCH_PG",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg: String,
    /// Cases run with 64 in flight.
    #[arg(long, default_value_t = 20_000)]
    cases: usize,
    /// Cases run one at a time.
    #[arg(long, default_value_t = 2_000)]
    single: usize,
    /// Cases left waiting on a 30-day timer for the memory measure (0: skip).
    #[arg(long, default_value_t = 100_000)]
    timers: usize,
    /// Cases in flight for the throughput measure.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Batches committing at once (see `EngineConfig::commits_in_flight`).
    #[arg(long, default_value_t = EngineConfig::default().commits_in_flight)]
    commits_in_flight: usize,
}

fn proc_status(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of a fresh `dossier work` process on this database, after it settled.
async fn worker_rss(project: &Path, url: &str) -> anyhow::Result<u64> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--project")
        .arg(project)
        .args(["work", "--db", url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = child.id().context("the worker exited early")?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    child.kill().await?;
    Ok(kib)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) struct Db {
    pub(crate) url: String,
    drop: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) async fn fresh_db(backend: &str, pg: &str, tag: &str) -> anyhow::Result<Db> {
    match backend {
        "sqlite" => {
            let dir = tempfile::Builder::new()
                .prefix("dossier-bench")
                .tempdir_in(std::env::current_dir()?)?;
            let url = dir
                .path()
                .join(format!("{tag}.db"))
                .to_string_lossy()
                .into_owned();
            Ok(Db {
                url,
                drop: None,
                _dir: Some(dir),
            })
        }
        "postgres" => {
            let name = format!("dossier_bench_{tag}_{}", std::process::id());
            let mut admin = sqlx::PgConnection::connect(pg)
                .await
                .with_context(|| format!("cannot reach PostgreSQL at {pg}"))?;
            admin
                .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                .await?;
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await?;
            let base = pg.rsplit_once('/').map(|(b, _)| b).unwrap_or(pg);
            Ok(Db {
                url: format!("{base}/{name}"),
                drop: Some((pg.to_string(), name)),
                _dir: None,
            })
        }
        other => anyhow::bail!("unknown backend `{other}` (use sqlite or postgres)"),
    }
}

pub(crate) async fn drop_db(db: Db) {
    if let Some((pg, name)) = db.drop {
        if let Ok(mut admin) = sqlx::PgConnection::connect(&pg).await {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}

async fn engine_on(
    project: &Arc<Project>,
    url: &str,
    commits_in_flight: usize,
) -> anyhow::Result<Engine> {
    let store = crate::store::open(url).await?;
    Ok(Engine::start(
        store,
        project.clone(),
        Registry::with_builtins(),
        Arc::new(SystemClock),
        EngineConfig {
            commits_in_flight,
            ..EngineConfig::default()
        },
    )
    .await?)
}

/// Runs `n` cases with `inflight` at once; returns the wall time and each case's latency.
async fn drive(
    engine: &Engine,
    n: usize,
    inflight: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let slots = Arc::new(Semaphore::new(inflight));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let permit = slots.clone().acquire_owned().await?;
        let engine = engine.clone();
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = engine
                .run_case("bench_cinq_etapes", json!({"montant": 100 + (i % 900)}))
                .await;
            drop(permit);
            r.map(|f| (t.elapsed(), f.status))
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for h in handles {
        let (d, status) = h.await??;
        anyhow::ensure!(
            status == dossier_core::CaseStatus::Completed,
            "a bench case ended {}",
            status.name()
        );
        lat.push(d);
    }
    let wall = started.elapsed();
    lat.sort();
    Ok((wall, lat))
}

/// Runs `cases` cases with `inflight` at once on a fresh database and prints the figures.
async fn measure(
    project: &Arc<Project>,
    args: &BenchArgs,
    backend: &str,
    cases: usize,
    inflight: usize,
) -> anyhow::Result<()> {
    let db = fresh_db(backend, &args.pg, &format!("in_flight_{inflight}")).await?;
    let engine = engine_on(project, &db.url, args.commits_in_flight).await?;
    // Warm-up: compile the program, fill the caches, grow the files a little.
    drive(&engine, (cases / 40).clamp(10, 500), inflight).await?;
    let (wall, lat) = drive(&engine, cases, inflight).await?;
    println!(
        "{backend:<8} {inflight:>2} in flight: {:>6.0} cases/s {:>7.0} steps/s  p50 {:.2} ms  p99 {:.2} ms  ({cases} cases)  peak RSS so far {:.0} MiB",
        cases as f64 / wall.as_secs_f64(),
        cases as f64 * 10.0 / wall.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        mib(proc_status("VmHWM:").unwrap_or(0))
    );
    engine.shutdown().await;
    drop(engine);
    drop_db(db).await;
    Ok(())
}

pub async fn run(_root: &Path, args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("workflows"))?;
    std::fs::create_dir_all(dir.path().join("rules"))?;
    std::fs::write(
        dir.path().join("workflows/bench_cinq_etapes.yaml"),
        BENCH_WORKFLOW,
    )?;
    std::fs::write(
        dir.path().join("workflows/bench_attente.yaml"),
        TIMER_WORKFLOW,
    )?;
    std::fs::write(dir.path().join("rules/bench.rhai"), BENCH_RULE)?;
    let registry = Registry::with_builtins();
    let catalog = registry
        .names()
        .into_iter()
        .filter_map(|n| registry.get(&n).map(|c| (n.clone(), c.operations())))
        .collect();
    let project = Arc::new(Project::load_valid(dir.path(), catalog)?);
    println!(
        "dossier bench: workflow bench_cinq_etapes (5 × rule + durable no-op effect), {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for backend in &args.backends {
        for (cases, inflight) in [(args.single, 1), (args.cases, args.inflight)] {
            if cases > 0 {
                measure(&project, &args, backend, cases, inflight).await?;
            }
        }
    }
    if args.timers > 0 {
        let backend = args
            .backends
            .first()
            .map(String::as_str)
            .unwrap_or("sqlite");
        let db = fresh_db(backend, &args.pg, "timers").await?;
        let engine = engine_on(&project, &db.url, args.commits_in_flight).await?;
        let before = proc_status("VmRSS:").unwrap_or(0);
        let slots = Arc::new(Semaphore::new(256));
        let mut handles = Vec::with_capacity(args.timers);
        let started = Instant::now();
        for i in 0..args.timers {
            let permit = slots.clone().acquire_owned().await?;
            let engine = engine.clone();
            handles.push(tokio::spawn(async move {
                let r = engine
                    .start_case("bench_attente", json!({"numero": i as i64}), None)
                    .await;
                drop(permit);
                r
            }));
        }
        for h in handles {
            h.await??;
        }
        let wall = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = proc_status("VmRSS:").unwrap_or(0);
        let waiting = engine.store().count_cases_by_status().await?;
        println!(
            "{backend:<8} {} cases waiting on 30-day timers: started in {:.1} s; RSS {:.0} MiB before, {:.0} MiB after (+{:.0} MiB); by status {:?}",
            args.timers,
            wall.as_secs_f64(),
            mib(before),
            mib(after),
            mib(after.saturating_sub(before)),
            waiting
        );
        engine.shutdown().await;
        drop(engine);
        // The steady state: a fresh engine process over these waiting cases, against one over an
        // empty database.
        let empty = fresh_db(backend, &args.pg, "empty").await?;
        let base = worker_rss(dir.path(), &empty.url).await?;
        let loaded = worker_rss(dir.path(), &db.url).await?;
        println!(
            "{backend:<8} a fresh `dossier work` process: {:.0} MiB over an empty database, {:.0} MiB over the {} waiting cases (+{:.0} MiB)",
            mib(base),
            mib(loaded),
            args.timers,
            mib(loaded.saturating_sub(base))
        );
        drop_db(empty).await;
        drop_db(db).await;
    }
    println!(
        "peak RSS of the whole run: {:.0} MiB",
        mib(proc_status("VmHWM:").unwrap_or(0))
    );
    Ok(std::process::ExitCode::SUCCESS)
}
