//! `dossier bench-webhook`: load on the webhook path of `dossier serve`, end to end.
//!
//! A temporary project holds `examples/bench/workflows/bench_webhook.yaml` (a webhook trigger
//! `bench`, then one `assign` and one `rule` step). A `dossier serve` child process runs on a
//! fresh database (SQLite in the temporary project, or a fresh PostgreSQL database dropped
//! afterwards); this process sends it signed Standard Webhooks deliveries over loopback, each
//! with its own `webhook-id`, from `--concurrency` clients sharing one connection pool. A
//! request's latency is client-side: request sent → `202 Accepted` read, i.e. the signature
//! checked, the case started and its first steps committed with the delivery's dedup record.
//! A second pass redelivers ids already delivered (the dedup path, `200` with
//! `"duplicate": true`). At the end the server is stopped and the database must hold exactly
//! one case per fresh delivery (warm-up included): redeliveries start none.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dossier_store::postgres::PgStore;
use dossier_store::sqlite::SqliteStore;
use dossier_store::Store;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::bench::{ms, percentile};

const WEBHOOK_WORKFLOW: &str = include_str!("../../../examples/bench/workflows/bench_webhook.yaml");
const BENCH_RULE: &str = include_str!("../../../examples/bench/rules/bench.rhai");
/// The hook the workflow's trigger names, and its secret (given to the server through
/// `DOSSIER_HOOK_BENCH_SECRET`).
const HOOK: &str = "bench";
const SECRET: &str = "whsec_ZG9zc2llciBiZW5jaC13ZWJob29rIGtleSAzMiBieXQ=";

#[derive(clap::Args)]
pub struct BenchWebhookArgs {
    /// Database of the server: sqlite (a fresh file in the temporary project) or postgres (a
    /// fresh database on --pg, dropped afterwards).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    backend: String,
    /// PostgreSQL server where the fresh database is created (and dropped).
    #[arg(
        long,
        env = "DOSSIER_BENCH_PG",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg: String,
    /// Deliveries measured, each with a new `webhook-id` (each starts one case).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Clients sending at once (one shared connection pool).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Deliveries sent first and not measured (they start cases too).
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Redeliveries of ids already delivered, measured separately (0: skip).
    #[arg(long, default_value_t = 2_000)]
    redeliveries: usize,
}

/// The body of delivery `i`; a redelivery sends the same bytes under the same id.
fn delivery(i: usize) -> (String, String) {
    (format!("bench-{i:08}"), format!("{{\"numero\":{i}}}"))
}

/// What one pass saw.
#[derive(Default)]
struct Pass {
    wall: Duration,
    latencies: Vec<Duration>,
    /// `202 Accepted`: a fresh delivery.
    accepted: usize,
    /// `200 OK`: a duplicate.
    duplicate: usize,
    other_2xx: usize,
    non_2xx: usize,
    transport_errors: usize,
    /// The first few failures, for the report.
    samples: Vec<String>,
}

impl Pass {
    fn merge(&mut self, other: Pass) {
        self.latencies.extend(other.latencies);
        self.accepted += other.accepted;
        self.duplicate += other.duplicate;
        self.other_2xx += other.other_2xx;
        self.non_2xx += other.non_2xx;
        self.transport_errors += other.transport_errors;
        for s in other.samples {
            if self.samples.len() < 3 {
                self.samples.push(s);
            }
        }
    }

    fn failures(&self) -> usize {
        self.non_2xx + self.transport_errors
    }
}

/// Sends the deliveries numbered `numbers` with `concurrency` clients; returns what was seen.
async fn send_all(
    client: &reqwest::Client,
    url: &str,
    key: &Arc<Vec<u8>>,
    numbers: Vec<usize>,
    concurrency: usize,
) -> anyhow::Result<Pass> {
    let numbers = Arc::new(numbers);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (client, url, key, numbers, next) = (
            client.clone(),
            url.to_string(),
            key.clone(),
            numbers.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut pass = Pass::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = numbers.get(k) else { break };
                let (id, body) = delivery(i);
                let ts = chrono::Utc::now().timestamp();
                let signature = dossier_server::webhook::sign(&key, &id, ts, body.as_bytes());
                let t = Instant::now();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", signature)
                    .body(body)
                    .send()
                    .await;
                let response = match sent {
                    Ok(r) => r,
                    Err(e) => {
                        pass.transport_errors += 1;
                        if pass.samples.len() < 3 {
                            pass.samples.push(format!("{id}: {e}"));
                        }
                        continue;
                    }
                };
                let status = response.status();
                // Read the whole answer, so the connection goes back to the pool.
                let answer = response.bytes().await;
                pass.latencies.push(t.elapsed());
                match answer {
                    Err(e) => {
                        pass.transport_errors += 1;
                        if pass.samples.len() < 3 {
                            pass.samples
                                .push(format!("{id}: {status}, body not read: {e}"));
                        }
                    }
                    Ok(_) if status == reqwest::StatusCode::ACCEPTED => pass.accepted += 1,
                    Ok(_) if status == reqwest::StatusCode::OK => pass.duplicate += 1,
                    Ok(_) if status.is_success() => pass.other_2xx += 1,
                    Ok(bytes) => {
                        pass.non_2xx += 1;
                        if pass.samples.len() < 3 {
                            let text = String::from_utf8_lossy(&bytes);
                            pass.samples.push(format!(
                                "{id}: {status} {}",
                                text.chars().take(200).collect::<String>()
                            ));
                        }
                    }
                }
            }
            pass
        }));
    }
    let mut total = Pass::default();
    for w in workers {
        total.merge(w.await.context("a client task panicked")?);
    }
    total.wall = started.elapsed();
    total.latencies.sort();
    Ok(total)
}

/// Starts `dossier serve` on `db` in `project` and returns the child and its address.
async fn start_server(project: &Path, db: &str) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe().context("cannot find the dossier executable")?;
    let mut child = tokio::process::Command::new(&exe)
        .arg("--project")
        .arg(project)
        .args(["serve", "--listen", "127.0.0.1:0", "--db", db])
        .env(dossier_server::config::hook_env_var(HOOK), SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {} serve", exe.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("the server's standard output is not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.trim().strip_prefix("dossier: serving on ") {
                return Ok::<_, std::io::Error>(Some(url.to_string()));
            }
        }
        Ok(None)
    })
    .await;
    let base = match first {
        Ok(Ok(Some(url))) => url,
        Ok(Ok(None)) => {
            let status = child.wait().await?;
            bail!("the server exited ({status}) before it said where it listens (its errors are above)")
        }
        Ok(Err(e)) => return Err(e).context("cannot read the server's standard output"),
        Err(_) => bail!("the server did not say `dossier: serving on …` within 120 s"),
    };
    // Keep draining the server's standard output so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, base))
}

/// Peak resident memory of a process, in MiB (Linux).
fn peak_rss_mib(pid: Option<u32>) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Stops the server as an operator would (SIGTERM: graceful shutdown), else kills it.
async fn stop_server(child: &mut Child) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        let term = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if matches!(term, Ok(s) if s.success()) {
            if let Ok(status) = tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                let status = status.context("cannot wait for the server")?;
                if !status.success() {
                    eprintln!("warning: the server stopped with {status}");
                }
                return Ok(());
            }
            eprintln!("warning: the server did not stop within 30 s of SIGTERM; killing it");
        }
    }
    child.kill().await.context("cannot kill the server")?;
    Ok(())
}

/// The cases of the database by status; closes its connections before returning (the
/// PostgreSQL database is dropped next).
async fn cases_by_status(backend: &str, db_url: &str) -> anyhow::Result<Vec<(String, i64)>> {
    if backend == "postgres" {
        let store = PgStore::connect(db_url)
            .await
            .context("cannot reopen the bench database")?;
        let counts = store.count_cases_by_status().await;
        store.close().await;
        Ok(counts?)
    } else {
        let store = SqliteStore::open(Path::new(db_url))
            .await
            .with_context(|| format!("cannot reopen the bench database {db_url}"))?;
        let counts = store.count_cases_by_status().await;
        store.close().await?;
        Ok(counts?)
    }
}

fn row(name: &str, p: &Pass) {
    let n = p.latencies.len();
    println!(
        "{name:<18} {n:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>6} {:>8}",
        n as f64 / p.wall.as_secs_f64(),
        ms(percentile(&p.latencies, 0.5)),
        ms(percentile(&p.latencies, 0.9)),
        ms(percentile(&p.latencies, 0.99)),
        ms(p.latencies.last().copied().unwrap_or_default()),
        p.accepted,
        p.duplicate,
        p.failures(),
    );
}

pub async fn run(args: BenchWebhookArgs) -> anyhow::Result<ExitCode> {
    if args.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let concurrency = args.concurrency.max(1);
    let dir = tempfile::Builder::new()
        .prefix("dossier-bench-webhook")
        .tempdir()
        .context("cannot create the temporary project")?;
    std::fs::create_dir_all(dir.path().join("workflows"))?;
    std::fs::create_dir_all(dir.path().join("rules"))?;
    std::fs::write(
        dir.path().join("workflows/bench_webhook.yaml"),
        WEBHOOK_WORKFLOW,
    )?;
    std::fs::write(dir.path().join("rules/bench.rhai"), BENCH_RULE)?;
    let key = Arc::new(
        dossier_server::webhook::decode_secret(SECRET).map_err(|e| anyhow::anyhow!("{e}"))?,
    );

    let pg_db = match args.backend.as_str() {
        "postgres" => Some(crate::bench::fresh_db("postgres", &args.pg, "webhook").await?),
        _ => None,
    };
    let db_url = match &pg_db {
        Some(db) => db.url.clone(),
        None => dir.path().join("bench.db").to_string_lossy().into_owned(),
    };
    let result = measure(&args, concurrency, dir.path(), &db_url, &key).await;
    if let Some(db) = pg_db {
        crate::bench::drop_db(db).await;
    }
    result
}

async fn measure(
    args: &BenchWebhookArgs,
    concurrency: usize,
    project: &Path,
    db_url: &str,
    key: &Arc<Vec<u8>>,
) -> anyhow::Result<ExitCode> {
    let (mut server, base) = start_server(project, db_url).await?;
    let url = format!("{base}/hooks/{HOOK}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")?;
    println!(
        "dossier bench-webhook: {} on {}, POST {url} → case bench_webhook (assign + rule, committed before the answer), {concurrency} clients, {} cores",
        args.backend,
        if args.backend == "sqlite" { "a SQLite file" } else { "a fresh PostgreSQL database" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let warm = send_all(&client, &url, key, (0..args.warmup).collect(), concurrency).await?;
    let fresh = send_all(
        &client,
        &url,
        key,
        (args.warmup..args.warmup + args.requests).collect(),
        concurrency,
    )
    .await?;
    // Ids of the measured pass, spread evenly over it.
    let redelivered: Vec<usize> = (0..args.redeliveries)
        .map(|j| args.warmup + (j * args.requests / args.redeliveries.max(1)) % args.requests)
        .collect();
    let again = if redelivered.is_empty() {
        None
    } else {
        Some(send_all(&client, &url, key, redelivered, concurrency).await?)
    };
    let server_rss = peak_rss_mib(server.id());
    stop_server(&mut server).await?;

    println!(
        "{:<18} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8}",
        "pass",
        "requests",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "202",
        "200",
        "non-2xx"
    );
    row("new deliveries", &fresh);
    if let Some(p) = &again {
        row("redeliveries", p);
    }
    if let Some(mib) = server_rss {
        println!("server peak RSS: {mib:.0} MiB");
    }

    let mut problems = Vec::new();
    for (name, p) in [("warm-up", Some(&warm)), ("new deliveries", Some(&fresh))]
        .into_iter()
        .chain(std::iter::once(("redeliveries", again.as_ref())))
    {
        let Some(p) = p else { continue };
        if p.failures() > 0 {
            problems.push(format!(
                "{name}: {} non-2xx answers and {} transport errors, e.g. {}",
                p.non_2xx,
                p.transport_errors,
                p.samples.join(" | ")
            ));
        }
        let fresh_expected = name != "redeliveries";
        let unexpected = if fresh_expected {
            p.duplicate + p.other_2xx
        } else {
            p.accepted + p.other_2xx
        };
        if unexpected > 0 {
            problems.push(format!(
                "{name}: {unexpected} answers were not {}",
                if fresh_expected {
                    "202 (a new delivery)"
                } else {
                    "200 (a duplicate)"
                }
            ));
        }
    }

    // Count the cases in the database, the server stopped.
    let by_status = cases_by_status(&args.backend, db_url).await?;
    let total: i64 = by_status.iter().map(|(_, n)| n).sum();
    let expected = (args.warmup + args.requests) as i64;
    let statuses = by_status
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "cases in the database: {total} ({statuses}); expected {expected} = {} warm-up + {} deliveries, none from the {} redeliveries",
        args.warmup,
        args.requests,
        args.redeliveries
    );
    if total != expected {
        problems.push(format!(
            "the database holds {total} cases, not {expected}: a delivery started no case or a redelivery started one"
        ));
    }
    if by_status.iter().any(|(s, _)| s != "completed") {
        problems.push(format!(
            "every bench case should have completed; by status: {statuses}"
        ));
    }
    if problems.is_empty() {
        println!("ok: every request answered 2xx; one case per new delivery, none per redelivery");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        Ok(ExitCode::from(1))
    }
}
