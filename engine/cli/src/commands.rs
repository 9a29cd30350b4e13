//! The subcommands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use dossier_connectors::support::BuildContext;
use dossier_connectors::{RecordingConnector, Registry};
use dossier_core::Event;
use dossier_model::{Diagnostic, IsoDuration};
use dossier_runtime::programs::Programs;
use dossier_runtime::project::{find_root, Project};
use dossier_runtime::simulate::Simulation;
use dossier_runtime::{Clock, Engine, EngineConfig, SystemClock};
use dossier_store::memory::MemoryStore;
use dossier_store::{CaseFilter, CaseRecord, DefinitionRecord, EventRecord, Store};
use serde_json::{json, Value};

use crate::{Cli, Command};

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let root = match &cli.project {
        // Absolute, so that file arguments can be matched against the project's files.
        Some(p) => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
        None => find_root(&std::env::current_dir()?),
    };
    match cli.command {
        Command::Validate { paths } => validate(&root, &paths),
        Command::Test { paths } => test(&root, &paths).await,
        Command::Run {
            workflow,
            input,
            start,
            horizon,
        } => run(&root, &workflow, &input, start, &horizon).await,
        Command::Graph { workflow } => {
            let project = load(&root)?;
            let wf = project
                .workflows
                .get(&workflow)
                .ok_or_else(|| anyhow!("no workflow is named `{workflow}`"))?;
            print!("{}", dossier_model::graph::mermaid(&wf.parsed.workflow));
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print!("{}", dossier_model::schema::workflow_schema_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { case, file, db } => replay_cmd(&root, case, file, db).await,
        Command::Export { case, db, output } => {
            let store =
                crate::store::open(&db.unwrap_or_else(|| crate::store::default_db(&root))).await?;
            let doc = export(store.as_ref(), &case).await?;
            let text = serde_json::to_string_pretty(&doc)?;
            match output {
                Some(p) => std::fs::write(&p, text + "\n")
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Start {
            workflow,
            input,
            count,
            db,
            journal,
        } => {
            let input = read_json(&input)?;
            let engine = engine(&root, db, journal, Arc::new(SystemClock), false).await?;
            let numbered = engine
                .programs()
                .project()
                .workflows
                .get(&workflow)
                .is_some_and(|w| w.parsed.workflow.input.contains_key("numero"));
            for n in 1..=count {
                let mut inp = input.clone();
                if let (true, Some(obj)) = (numbered, inp.as_object_mut()) {
                    obj.insert("numero".into(), json!(n));
                }
                let a = engine.start_case(&workflow, inp, None).await?;
                println!("{} {}", a.case_id, a.status);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cases {
            db,
            status,
            workflow,
        } => {
            let store =
                crate::store::open(&db.unwrap_or_else(|| crate::store::default_db(&root))).await?;
            let cases = store
                .list_cases(&CaseFilter {
                    status,
                    workflow_id: workflow,
                    limit: 1000,
                    ..CaseFilter::default()
                })
                .await?;
            for c in cases {
                println!(
                    "{}  {:<10} {:<24} {:<18} {}",
                    c.id,
                    c.status,
                    c.workflow_id,
                    c.current_step.unwrap_or_default(),
                    c.business_key.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Work {
            db,
            until_idle,
            journal,
        } => {
            let engine = engine(&root, db, journal, Arc::new(SystemClock), true).await?;
            dossier_runtime::cron::spawn(engine.clone());
            if until_idle {
                wait_idle(&engine).await?;
            } else {
                tokio::signal::ctrl_c().await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { db } => demo(&root, db).await,
        Command::Bench(args) => crate::bench::run(&root, args).await,
        Command::BenchWebhook(args) => crate::bench_webhook::run(args).await,
        Command::Serve {
            db,
            listen,
            config,
            journal,
        } => crate::serve::serve(&root, db, listen, config, journal).await,
        Command::Keys(cmd) => crate::serve::keys(&root, cmd).await,
    }
}

/// The project's configuration file: `dossier.yaml` at its root, or the file named.
pub fn config_file(root: &Path, config: Option<&Path>) -> PathBuf {
    config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("dossier.yaml"))
}

/// How the project's configuration file is named in messages: relative to the project.
fn shown_path(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The built-in connectors, the `record` double when a journal is given (`dossier work
/// --journal`), and the connectors of the configuration file. Refuses to go on, with every
/// message, when that file's `connectors:` section has errors (an unknown type, a missing
/// secret...).
pub fn registry(
    root: &Path,
    config: Option<&Path>,
    journal: Option<PathBuf>,
) -> anyhow::Result<Registry> {
    let mut r = Registry::with_builtins();
    if let Some(j) = journal {
        r.register(
            "record",
            Arc::new(RecordingConnector::new("record", vec!["send".into()]).with_journal(j)?),
        );
    }
    let file = config_file(root, config);
    build_configured(root, &file, r)?.map_err(|ds| {
        print_diagnostics(&ds);
        anyhow!(
            "{}: {} error(s) in the `connectors:` section; nothing was started",
            file.display(),
            ds.len()
        )
    })
}

/// Builds the connectors of the configuration file `file` on top of `base`, with the secrets
/// of this process's environment; `base` as it is when there is no such file.
fn build_configured(
    root: &Path,
    file: &Path,
    base: Registry,
) -> anyhow::Result<Result<Registry, Vec<Diagnostic>>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(base)),
        Err(e) => bail!("{}: cannot read: {e}", file.display()),
    };
    let env = |k: &str| std::env::var(k).ok();
    let ctx = BuildContext {
        env: &env,
        base_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    Ok(dossier_connectors::config::load(
        &shown_path(root, file),
        &text,
        &ctx,
        base,
    ))
}

/// The connectors workflows may name, with their operations, read without building them (no
/// secret needed): the built-in ones, `record`, and those `dossier.yaml` declares.
fn declared_catalog(root: &Path) -> BTreeMap<String, Vec<String>> {
    let mut c = with_record(Registry::with_builtins().catalog());
    if let Ok(text) = std::fs::read_to_string(config_file(root, None)) {
        c.extend(dossier_connectors::config::declared(&text));
    }
    c
}

/// `catalog` and the `record` double, which `dossier work --journal` configures: workflows
/// naming it are accepted everywhere.
fn with_record(mut catalog: BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    catalog.insert("record".into(), vec!["send".into()]);
    catalog
}

fn print_diagnostics(ds: &[Diagnostic]) {
    for d in ds {
        eprintln!("{d}");
    }
}

/// Loads the project, refusing it (with every message) when it has errors.
fn load(root: &Path) -> anyhow::Result<Project> {
    refuse_errors(root, Project::load(root, declared_catalog(root)))
}

pub fn load_with(root: &Path, registry: &Registry) -> anyhow::Result<Project> {
    refuse_errors(root, Project::load(root, registry.catalog()))
}

fn refuse_errors(root: &Path, p: Project) -> anyhow::Result<Project> {
    if p.has_errors() {
        print_diagnostics(&p.diagnostics);
        let n = p.diagnostics.iter().filter(|d| d.is_error()).count();
        bail!(
            "the project at {} has {n} error(s); nothing was run",
            root.display()
        );
    }
    Ok(p)
}

fn validate(root: &Path, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    // The connectors' configuration is checked as `dossier serve` will build it: types,
    // settings, and secrets present in this environment. When it builds, steps are checked
    // against the operations each connector really has (a printer without `escpos` has no
    // `ticket`); when it does not, against the operations its type declares.
    let (catalog, config_diags) =
        match build_configured(root, &config_file(root, None), Registry::with_builtins())? {
            Ok(built) => (with_record(built.catalog()), Vec::new()),
            Err(ds) => (declared_catalog(root), ds),
        };
    let mut project = Project::load(root, catalog);
    project.diagnostics.extend(config_diags);
    let filters: Vec<String> = paths
        .iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            abs.strip_prefix(&project.root)
                .unwrap_or(&abs)
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    let shown: Vec<&Diagnostic> = project
        .diagnostics
        .iter()
        .filter(|d| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| d.file == *f || d.file == format!("templates/{f}"))
        })
        .collect();
    for d in &shown {
        println!("{d}");
    }
    let errors = shown.iter().filter(|d| d.is_error()).count();
    let warnings = shown.len() - errors;
    println!(
        "{} workflow(s), {} rule module(s), {} template(s) checked: {errors} error(s), {warnings} warning(s)",
        project.workflows.len(),
        project.rules.len(),
        project.templates.len()
    );
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn collect_tests(root: &Path, paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = paths.to_vec();
    if dirs.is_empty() {
        dirs = vec![root.join("rules"), root.join("workflows")];
    }
    let mut out = Vec::new();
    for d in dirs {
        if !paths.is_empty() && !d.exists() {
            bail!(
                "{} does not exist: name test files (*.test.yaml) or folders holding them",
                d.display()
            );
        }
        if d.is_file() {
            out.push(d);
            continue;
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            v.sort();
            out.extend(
                v.into_iter()
                    .filter(|p| p.to_string_lossy().ends_with(".test.yaml")),
            );
        }
    }
    if !paths.is_empty() && out.is_empty() {
        bail!("no test file (*.test.yaml) among the paths given");
    }
    Ok(out)
}

async fn test(root: &Path, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let project = load(root)?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in collect_tests(root, paths)? {
        let abs = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let shown = abs
            .strip_prefix(&project.root)
            .unwrap_or(&abs)
            .to_string_lossy()
            .replace('\\', "/");
        let is_rule = shown.starts_with("rules/")
            || abs.parent().and_then(|p| p.file_name()) == Some("rules".as_ref());
        if is_rule {
            let stem = abs
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .trim_end_matches(".test.yaml")
                .to_string();
            let text = std::fs::read_to_string(&abs)?;
            let module_name = serde_yaml_ng::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("module").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or(stem);
            let Some(rule) = project.rules.get(&module_name) else {
                failed += 1;
                println!("FAIL {shown}: no rule module `{module_name}` (rules/{module_name}.rhai)");
                continue;
            };
            match dossier_rules::run_rule_tests_str(&project.engine, &shown, &text, &rule.module) {
                Ok(r) => {
                    passed += r.passed;
                    failed += r.failed;
                    for f in &r.failures {
                        println!("FAIL {shown}:{}: {}: {}", f.line, f.name, f.message);
                    }
                    println!("{shown}: {} passed, {} failed", r.passed, r.failed);
                }
                Err(e) => {
                    failed += 1;
                    println!(
                        "FAIL {}",
                        dossier_runtime::project::rule_diagnostic(&shown, &e)
                    );
                }
            }
        } else {
            let r = dossier_runtime::testing::run_test_file(&project, &abs, &shown).await;
            passed += r.passed;
            failed += r.failed;
            for f in &r.failures {
                println!("FAIL {f}");
            }
            println!("{shown}: {} passed, {} failed", r.passed, r.failed);
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

async fn run(
    root: &Path,
    workflow: &str,
    input: &Path,
    start: Option<String>,
    horizon: &str,
) -> anyhow::Result<ExitCode> {
    let project = load(root)?;
    let input = read_json(input)?;
    let start = match start {
        Some(s) => dossier_model::parse_instant(&s)
            .ok_or_else(|| anyhow!("--start {s} is not a date or date-time"))?,
        None => Utc::now(),
    };
    let horizon = IsoDuration::parse(horizon)?;
    let mut sim = Simulation::new(&project, start);
    let case = sim.start(workflow, input).await?;
    let limit = horizon
        .after(start)
        .ok_or_else(|| anyhow!("the horizon is out of range"))?;
    sim.run_to_end(limit).await?;
    let events: Vec<(DateTime<Utc>, &Event)> =
        sim.timeline.iter().map(|t| (t.at, &t.event)).collect();
    print!("{}", dossier_runtime::timeline::render(start, &events));
    let c = &sim.cases[&case];
    let waiting: Vec<String> = sim
        .tasks
        .values()
        .map(|t| format!("task `{}` for {}", t.title, t.role))
        .collect();
    println!("status: {}", c.state.status_name());
    if !waiting.is_empty() {
        println!("waiting for: {}", waiting.join("; "));
    }
    println!("output: {}", c.state.output);
    if let Err(e) = sim.verify_replay() {
        println!("replay: DIVERGES: {e}");
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

async fn engine(
    root: &Path,
    db: Option<String>,
    journal: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    workers: bool,
) -> anyhow::Result<Engine> {
    let registry = registry(root, None, journal)?;
    engine_with(root, db, registry, clock, workers).await
}

/// The connectors `dossier.yaml` declares played by recording doubles (with the built-in
/// ones): what `demo` runs on, so that it needs no server and no secret.
fn doubles(root: &Path) -> Registry {
    let mut r = Registry::with_builtins();
    let builtins = r.names();
    for (name, ops) in declared_catalog(root) {
        if !builtins.contains(&name) {
            r.register(&name, Arc::new(RecordingConnector::new(&name, ops)));
        }
    }
    r
}

async fn engine_with(
    root: &Path,
    db: Option<String>,
    registry: Registry,
    clock: Arc<dyn Clock>,
    workers: bool,
) -> anyhow::Result<Engine> {
    let project = Arc::new(load_with(root, &registry)?);
    let store = crate::store::open(&db.unwrap_or_else(|| crate::store::default_db(root))).await?;
    let config = EngineConfig {
        workers,
        ..EngineConfig::default()
    };
    Ok(Engine::start(store, project, registry, clock, config).await?)
}

async fn wait_idle(engine: &Engine) -> anyhow::Result<()> {
    let mut idle_rounds = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let running = engine
            .store()
            .count_cases_by_status()
            .await?
            .into_iter()
            .find(|(s, _)| s == "running")
            .map(|(_, n)| n)
            .unwrap_or(0);
        if running == 0 && engine.is_idle().await? {
            idle_rounds += 1;
            if idle_rounds >= 3 {
                return Ok(());
            }
        } else {
            idle_rounds = 0;
        }
    }
}

// ---- export and replay ----

use dossier_runtime::casefile::{check_case, export};

async fn replay_cmd(
    root: &Path,
    case: Option<String>,
    file: Option<PathBuf>,
    db: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (store, case_id): (Arc<dyn Store>, String) = match (file, case) {
        (Some(f), _) => {
            let doc = read_json(&f)?;
            let store = Arc::new(MemoryStore::new());
            let (case, history, defs) =
                import(&doc).with_context(|| format!("{} is not a case file", f.display()))?;
            store.put_definitions(&defs).await?;
            let id = case.id.clone();
            let write = dossier_store::CaseWrite {
                case: Some(case),
                events: history,
                ..Default::default()
            };
            store.commit(&[write]).await?;
            (store, id)
        }
        (None, Some(c)) => (
            crate::store::open(&db.unwrap_or_else(|| crate::store::default_db(root))).await?,
            c,
        ),
        (None, None) => bail!("name a case id, or give an exported case file with --file"),
    };
    let case = store
        .case(&case_id)
        .await?
        .ok_or_else(|| anyhow!("no case has the id {case_id}"))?;
    let history = store.history(&case_id).await?;
    let programs = Programs::new(store.clone(), Arc::new(Project::empty()));
    let report = check_case(&programs, &case, &history).await;
    println!(
        "case {} ({} v{}, workflow {})",
        case.id,
        case.workflow_id,
        case.workflow_version,
        case.workflow_hash.chars().take(12).collect::<String>()
    );
    let mut code = ExitCode::SUCCESS;
    match &report.chain {
        Ok(()) => println!("chain: {} events, every link holds", report.events),
        Err(e) => {
            println!("chain: BROKEN at {e}");
            code = ExitCode::from(3);
        }
    }
    match &report.replay {
        Ok(()) => println!(
            "replay: identical, every decision re-derived with the pinned workflow and rules"
        ),
        Err(e) => {
            println!("replay: DIVERGES at {e}");
            // A broken chain (exit 3) says more than a divergence (exit 4): it wins. Exit 2 is
            // left to errors (no such case, no database).
            if report.chain.is_ok() {
                code = ExitCode::from(4);
            }
        }
    }
    Ok(code)
}

fn import(doc: &Value) -> anyhow::Result<(CaseRecord, Vec<EventRecord>, Vec<DefinitionRecord>)> {
    if doc["format"] != json!("dossier-case/1") {
        bail!("its `format` is not dossier-case/1");
    }
    let c = &doc["case"];
    let s = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("missing `{what}`"))
    };
    let case = CaseRecord {
        id: s(&c["id"], "case.id")?,
        workflow_id: s(&c["workflow_id"], "case.workflow_id")?,
        workflow_version: c["workflow_version"].as_i64().unwrap_or(0),
        workflow_hash: s(&c["workflow_hash"], "case.workflow_hash")?,
        business_key: c["business_key"].as_str().map(str::to_string),
        parent_id: c["parent_id"].as_str().map(str::to_string),
        status: s(&c["status"], "case.status")?,
        current_step: c["current_step"].as_str().map(str::to_string),
        data: c["data"].to_string(),
        pins: c["pins"].to_string(),
        last_seq: c["last_seq"].as_i64().unwrap_or(0),
        last_hash: c["last_hash"].as_str().unwrap_or_default().to_string(),
        created_at: c["created_at"].as_i64().unwrap_or(0),
        updated_at: c["updated_at"].as_i64().unwrap_or(0),
    };
    let mut history = Vec::new();
    for e in doc["history"]
        .as_array()
        .ok_or_else(|| anyhow!("missing `history`"))?
    {
        history.push(EventRecord {
            case_id: case.id.clone(),
            seq: e["seq"]
                .as_i64()
                .ok_or_else(|| anyhow!("an event has no `seq`"))?,
            at: e["at"]
                .as_i64()
                .ok_or_else(|| anyhow!("an event has no `at`"))?,
            kind: s(&e["kind"], "kind")?,
            // Canonical text again: sorted keys, exact numbers.
            payload: serde_json::to_string(&e["payload"])?,
            prev_hash: s(&e["prev_hash"], "prev_hash")?,
            hash: s(&e["hash"], "hash")?,
        });
    }
    let mut defs = Vec::new();
    if let Some(m) = doc["definitions"].as_object() {
        for (hash, d) in m {
            defs.push(DefinitionRecord {
                hash: hash.clone(),
                kind: s(&d["kind"], "definition kind")?,
                name: s(&d["name"], "definition name")?,
                version: d["version"].as_i64(),
                source: s(&d["source"], "definition source")?,
                loaded_at: 0,
            });
        }
    }
    Ok((case, history, defs))
}

// ---- demo ----

/// A clock that can be moved forward: real time plus an offset.
struct WarpClock {
    offset_ms: AtomicI64,
}

impl Clock for WarpClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::TimeDelta::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

async fn demo(root: &Path, db: Option<String>) -> anyhow::Result<ExitCode> {
    let db = db.unwrap_or_else(|| {
        root.join(".dossier")
            .join("demo.db")
            .to_string_lossy()
            .into_owned()
    });
    let clock = Arc::new(WarpClock {
        offset_ms: AtomicI64::new(0),
    });
    // Connectors are doubles: the demo sends nothing and needs no server or secret.
    let engine = engine_with(root, Some(db.clone()), doubles(root), clock.clone(), true).await?;
    println!("Dossier demo — unpaid invoice reminders (workflow relance_facture) on SQLite {db}\n");
    let invoices = [
        (
            "FAC-2026-0101",
            "Maquis Chez Tantie",
            "1250000",
            "XOF",
            10,
            "pays after the first reminder",
        ),
        (
            "FAC-2026-0102",
            "Atelier Koné Réparations",
            "480000",
            "XOF",
            5,
            "never pays: collections task",
        ),
        (
            "FAC-2026-0103",
            "Coworking Plateau",
            "2400.00",
            "EUR",
            20,
            "pays before the due date",
        ),
    ];
    let mut cases = Vec::new();
    for (num, client, amount, currency, due_in_days, story) in invoices {
        // Due dates relative to today, so that the story holds whenever the demo runs.
        let due = (clock.now() + chrono::TimeDelta::days(due_in_days))
            .format("%Y-%m-%d")
            .to_string();
        let input = json!({
            "facture": num, "client": client, "telephone": "+2250700000000", "email": "compta@example.ci",
            "montant_ttc": amount.parse::<Value>().unwrap_or(Value::Null), "devise": currency, "echeance": due,
        });
        let a = engine.start_case("relance_facture", input, None).await?;
        println!(
            "started {num} ({client}, {amount} {currency}, due {due}): {story} — case {}",
            a.case_id
        );
        cases.push((a.case_id, num));
    }
    // Accelerated time: whenever nothing can move, jump to the next timer.
    let mut paid_0101 = false;
    let mut paid_0103 = false;
    for _ in 0..200 {
        wait_idle(&engine).await?;
        if !paid_0103 {
            engine
                .send_event(
                    "paiement_recu",
                    json!({"facture": "FAC-2026-0103", "montant": "2400.00".parse::<Value>()?}),
                )
                .await?;
            paid_0103 = true;
            continue;
        }
        let reminded = engine
            .store()
            .history(&cases[0].0)
            .await?
            .iter()
            .any(|e| e.kind == "effect_completed");
        if reminded && !paid_0101 {
            engine
                .send_event(
                    "paiement_recu",
                    json!({"facture": "FAC-2026-0101", "montant": 1250000}),
                )
                .await?;
            paid_0101 = true;
            continue;
        }
        let tasks = engine
            .store()
            .tasks(&dossier_store::TaskFilter {
                status: Some("open".into()),
                ..Default::default()
            })
            .await?;
        if let Some(t) = tasks.first() {
            // The collections team sends the letter at the provisional rate when this year's
            // legal rate is not yet in the rules, hands the file to litigation, which closes it.
            let form: Value = serde_json::from_str(&t.form).unwrap_or(Value::Null);
            let offered: Vec<&str> = form["outcomes"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let Some((outcome, comment)) = [
                ("envoyer_taux_provisoire", None),
                ("contentieux", Some("Mise en demeure envoyée")),
                ("cloturer", Some("Injonction de payer déposée")),
            ]
            .into_iter()
            .find(|(o, _)| offered.contains(o)) else {
                bail!("the demo does not know the task `{}` ({offered:?})", t.step);
            };
            let data = match comment {
                Some(c) => json!({ "commentaire": c }),
                None => json!({}),
            };
            engine
                .decide_task(&t.id, outcome, data, "demo.operateur")
                .await?;
            continue;
        }
        let Some(next) = engine.store().next_timer_at().await? else {
            break;
        };
        let now = clock.now().timestamp_millis();
        if next > now {
            clock.offset_ms.fetch_add(next - now, Ordering::SeqCst);
        }
    }
    let programs = engine.programs();
    for (id, num) in &cases {
        let case = engine
            .store()
            .case(id)
            .await?
            .ok_or_else(|| anyhow!("case {id} vanished"))?;
        let history = engine.store().history(id).await?;
        println!("\n== {num}: {} ==", case.status);
        let start = DateTime::<Utc>::from_timestamp_millis(case.created_at).unwrap_or_default();
        let mut events = Vec::new();
        for h in &history {
            let p: Value = serde_json::from_str(&h.payload)?;
            events.push((
                DateTime::<Utc>::from_timestamp_millis(h.at).unwrap_or_default(),
                Event::from_parts(&h.kind, &p)?,
            ));
        }
        let refs: Vec<(DateTime<Utc>, &Event)> = events.iter().map(|(a, e)| (*a, e)).collect();
        print!("{}", dossier_runtime::timeline::render(start, &refs));
        let report = check_case(programs, &case, &history).await;
        println!(
            "audit: chain {} · replay {}",
            if report.chain.is_ok() {
                "intact"
            } else {
                "BROKEN"
            },
            if report.replay.is_ok() {
                "identical"
            } else {
                "DIVERGES"
            }
        );
    }
    println!("\nThe database is kept: try `dossier cases --db {db}` and `dossier replay CASE --db {db}`.");
    Ok(ExitCode::SUCCESS)
}
