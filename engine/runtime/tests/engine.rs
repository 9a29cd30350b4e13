//! The live `Engine` against every store: SQLite on a temporary file, PostgreSQL on a fresh
//! database per test, and memory. One macro generates one test per backend.
//!
//! PostgreSQL: the tests connect to `DOSSIER_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), create `dossier_rt_<unique>`, run and drop it.
//! An unreachable server FAILS the PostgreSQL tests.
//!
//! Time is a test clock moved by hand; the engine's timer task looks at it at least every
//! second, so the tests wait on the case status with a deadline instead of sleeping.
//!
//! Each test builds its own Tokio runtimes: a restart is modelled by shutting down the runtime
//! the first engine runs on (its sequencer, timer task and effect workers die with it, as in a
//! crash) and starting a new `Engine` on the same database in a new runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use dossier_connectors::{Connector, ConnectorError, EffectRequest, RecordingConnector, Registry};
use dossier_core::chain;
use dossier_core::replay::{replay, RecordedEvent};
use dossier_core::{CaseStatus, Event};
use dossier_runtime::{Clock, Engine, EngineConfig, Project, RuntimeError};
use dossier_store::memory::MemoryStore;
use dossier_store::postgres::PgStore;
use dossier_store::sqlite::SqliteStore;
use dossier_store::{CaseFilter, CaseRecord, Store, TaskFilter};
use serde_json::{json, Value};

// =============================================================================================
// Backends

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    Memory,
}

/// A database that outlives the engines started on it.
struct Db {
    backend: Backend,
    sqlite_dir: Option<tempfile::TempDir>,
    pg_url: Option<String>,
    memory: Option<Arc<MemoryStore>>,
}

impl Db {
    /// A new connection to the database (the memory store is the same object every time).
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
            Backend::Memory => self.memory.clone().expect("memory store"),
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
        memory: None,
    };
    match backend {
        Backend::Sqlite => db.sqlite_dir = Some(tempfile::tempdir().expect("temp dir")),
        Backend::Memory => db.memory = Some(Arc::new(MemoryStore::new())),
        Backend::Postgres => {
            return dossier_testkit::with_temp_pg("dossier_rt", |url| {
                db.pg_url = Some(url.to_string());
                test(&db)
            })
        }
    }
    test(&db)
}

/// Generates one `#[test]` per backend for each engine test.
macro_rules! engine_tests {
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
        mod memory {
            $(
                #[test]
                fn $name() {
                    super::with_backend(super::Backend::Memory, super::$name)
                }
            )*
        }
    };
}

engine_tests!(
    a_case_runs_to_completion_with_each_effect_performed_once,
    an_event_reaches_only_the_correlated_waiting_case,
    a_timer_fires_when_the_clock_passes_it,
    a_task_decided_moves_the_case_on,
    cancel_runs_the_compensations,
    a_sub_workflow_call_completes_the_parent,
    a_sub_workflow_that_cannot_start_fails_the_call_durably,
    many_cases_at_once_complete_with_one_effect_each,
    restart_while_an_effect_is_in_flight,
    restart_while_a_timer_is_pending,
    numbers_are_gapless_and_unique_across_concurrent_cases,
    ledger_postings_hold_their_bounds_and_emit_reaches_the_waiting_case,
);

// =============================================================================================
// The project, the clock, the connectors

const ENVOI: &str = r#"
id: envoi
version: 1
title: Envoi d'un SMS
input:
  tel: { type: phone }
  nom: { type: text }
steps:
  - id: calcul
    rule: frais.montant
    with: { base: 250 }
    result: frais
  - id: sms
    action:
      connector: sms
      templates:
        texte: sms.txt
    with:
      to: input.tel
    result: accuse
output:
  frais: frais
  envoye: accuse.ok
"#;

const FACTURE: &str = r#"
id: facture
version: 1
title: Émission d'une facture numérotée
input:
  client: { type: text }
  avoir: { type: boolean }
steps:
  - id: aiguillage
    branch:
      - when: input.avoir
        goto: numero_avoir
    otherwise: numero_facture
  - id: numero_facture
    number: { series: FAC }
    result: numero
    next: end
  - id: numero_avoir
    number: { series: AV, format: "AV/{period}/{seq:03}", period: '"2026-T1"' }
    result: numero
output:
  numero: numero.number
  seq: numero.seq
"#;

const PAIEMENT: &str = r#"
id: paiement
version: 1
title: Attente d'un paiement
input:
  facture: { type: text }
  tel: { type: phone }
steps:
  - id: attente_paiement
    wait_event:
      event: paiement_recu
      correlate:
        facture: input.facture
    result: paiement
  - id: remerciement
    action: { connector: sms }
    with:
      to: input.tel
      montant: paiement.montant
output:
  montant: paiement.montant
"#;

const ATTENTE: &str = r#"
id: attente
version: 1
title: Attente d'une heure
input:
  tel: { type: phone }
steps:
  - id: pause
    wait: { duration: PT1H }
  - id: rappel
    action: { connector: sms }
    with: { to: input.tel }
"#;

const VALIDATION: &str = r#"
id: validation
version: 1
title: Validation d'un dossier
input:
  nom: { type: text }
steps:
  - id: revue
    task:
      role: comptable
      title: "Valider le dossier de {{ input.nom }}"
      fields:
        commentaire: { type: text }
      outcomes:
        valider: notification
        refuser: end
    result: decision
  - id: notification
    action: { connector: sms }
    with: { to: '"+2250700000001"', commentaire: decision.data.commentaire }
output:
  par: decision.by
"#;

const SAGA: &str = r#"
id: saga
version: 1
title: Débit puis confirmation
input:
  ref: { type: text }
steps:
  - id: debit
    action: { connector: sms }
    with: { to: '"+2250700000002"', quoi: '"debit"', ref: input.ref }
    compensate:
      - id: remboursement
        action: { connector: sms }
        with: { to: '"+2250700000002"', quoi: '"remboursement"', ref: input.ref }
  - id: confirmation
    wait_event:
      event: confirmation
      correlate:
        ref: input.ref
"#;

const PARENT: &str = r#"
id: parent
version: 1
title: Parent
input:
  nom: { type: text }
steps:
  - id: sous_dossier
    call: enfant
    with: { nom: input.nom }
    result: resultat
output:
  salutation: resultat.salutation
"#;

const PARENT_ERRONE: &str = r#"
id: parent_errone
version: 1
title: Parent dont l'enfant ne peut pas démarrer
input:
  nom: { type: text }
steps:
  - id: sous_dossier
    call: enfant
    with: { nom: 42 }
    result: resultat
    on_error: secours
  - id: fin
    assign: { issue: '"enfant termine"' }
    next: end
  - id: secours
    assign: { issue: error.message }
output:
  issue: issue
"#;

const ENFANT: &str = r#"
id: enfant
version: 1
title: Enfant
input:
  nom: { type: text }
steps:
  - id: prevenir
    action: { connector: sms }
    with: { to: '"+2250700000003"', nom: input.nom }
  - id: saluer
    assign: { salutation: '"Bonjour " + input.nom' }
output:
  salutation: salutation
"#;

const CREDITS: &str = r#"
id: credits
version: 1
title: Mouvement de crédits
input:
  client: { type: text }
  quantite: { type: decimal }
  facture: { type: text }
steps:
  - id: depart
    assign: { refuse: "false" }
  - id: mouvement
    ledger:
      - account: '"credits/" + input.client'
        amount: "-input.quantite"
      - account: '`consommes/${input.client}`'
        amount: input.quantite
        min: none
    result: mouvement
    on_error: refus
  - id: avis
    emit:
      event: paiement_recu
      payload: { facture: input.facture, montant: input.quantite }
    result: envoi
    next: end
  - id: refus
    assign: { refuse: "true", motif: error.message }
output:
  refuse: refuse
  solde: 'if refuse { () } else { mouvement.postings[0].balance }'
  atteints: 'if refuse { 0 } else { envoi.reached.len() }'
"#;

const PLACES: &str = r#"
id: places
version: 1
title: Places d'une série de créneaux
input:
  creneaux: { type: list, items: { type: text } }
steps:
  - id: depart
    assign: { refuse: "false" }
  - id: reserver
    ledger:
      - for_each: input.creneaux
        as: creneau
        account: '"places/" + creneau'
        amount: 1
        max: 2
    result: reservation
    on_error: complet
    next: end
  - id: complet
    assign: { refuse: "true" }
output:
  refuse: refuse
  postes: 'if refuse { 0 } else { reservation.postings.len() }'
"#;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The test project, written to a temporary directory and loaded (it must be valid).
fn project() -> (tempfile::TempDir, Arc<Project>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    for (name, text) in [
        ("envoi", ENVOI),
        ("paiement", PAIEMENT),
        ("attente", ATTENTE),
        ("validation", VALIDATION),
        ("saga", SAGA),
        ("parent", PARENT),
        ("enfant", ENFANT),
        ("parent_errone", PARENT_ERRONE),
        ("facture", FACTURE),
        ("credits", CREDITS),
        ("places", PLACES),
    ] {
        write(root, &format!("workflows/{name}.yaml"), text);
    }
    write(root, "rules/frais.rhai", "fn montant(base) { base / 10 }\n");
    write(root, "templates/sms.txt", "Bonjour {{ input.nom }}");
    let connectors = BTreeMap::from([("sms".to_string(), vec!["send".to_string()])]);
    let project = Project::load_valid(root, connectors).unwrap_or_else(|e| panic!("{e}"));
    (dir, Arc::new(project))
}

/// A clock the test moves.
struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    fn new() -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(
            Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
        )))
    }
    fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A connector that never answers: the engine stops while the effect is in flight.
#[derive(Default)]
struct Hanging {
    calls: AtomicUsize,
    keys: Mutex<Vec<String>>,
}

#[async_trait]
impl Connector for Hanging {
    fn operations(&self) -> Vec<String> {
        vec!["send".into()]
    }
    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        assert!(!effect.redelivered, "a first hand-out is not a redelivery");
        self.keys
            .lock()
            .unwrap()
            .push(effect.idempotency_key.clone());
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// One running engine with its connector and clock.
struct Node {
    engine: Engine,
    clock: Arc<TestClock>,
    sms: Arc<RecordingConnector>,
    _project_dir: tempfile::TempDir,
}

async fn start_with(db: &Db, clock: Arc<TestClock>, sms: Arc<dyn Connector>) -> Engine {
    let (dir, project) = project();
    // The project files are only read at load time.
    drop(dir);
    let mut registry = Registry::default();
    registry.register("sms", sms);
    Engine::start(
        db.open().await,
        project,
        registry,
        clock,
        EngineConfig::default(),
    )
    .await
    .expect("the engine starts")
}

async fn node(db: &Db) -> Node {
    let (dir, project) = project();
    let clock = TestClock::new();
    let sms = Arc::new(RecordingConnector::new("sms", vec!["send".into()]));
    let mut registry = Registry::default();
    registry.register("sms", sms.clone());
    let engine = Engine::start(
        db.open().await,
        project,
        registry,
        clock.clone(),
        EngineConfig::default(),
    )
    .await
    .expect("the engine starts");
    Node {
        engine,
        clock,
        sms,
        _project_dir: dir,
    }
}

const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until the case has `status`, failing with its history after the deadline.
async fn wait_status(engine: &Engine, case_id: &str, status: &str) -> CaseRecord {
    let start = Instant::now();
    loop {
        if let Some(rec) = engine.store().case(case_id).await.unwrap() {
            if rec.status == status {
                return rec;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "case {case_id} is still {} after {DEADLINE:?}, not {status}:\n{}",
                    rec.status,
                    kinds(engine, case_id).await.join("\n")
                );
            }
        } else if start.elapsed() > DEADLINE {
            panic!("case {case_id} does not exist");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn history(engine: &Engine, case_id: &str) -> Vec<RecordedEvent> {
    engine
        .store()
        .history(case_id)
        .await
        .unwrap()
        .iter()
        .map(|h| RecordedEvent {
            seq: h.seq,
            at: DateTime::<Utc>::from_timestamp_millis(h.at).unwrap(),
            event: Event::from_parts(&h.kind, &serde_json::from_str(&h.payload).unwrap()).unwrap(),
        })
        .collect()
}

async fn kinds(engine: &Engine, case_id: &str) -> Vec<String> {
    history(engine, case_id)
        .await
        .iter()
        .map(|r| r.event.kind().to_string())
        .collect()
}

/// Every case of the store: its chain holds, its history replays with the program the engine
/// gives it, to the state the case row shows; and every effect its history requested was
/// performed exactly once by `sms`.
async fn check_all_cases(engine: &Engine, sms: &[Arc<RecordingConnector>]) {
    let store = engine.store();
    let cases = store.list_cases(&CaseFilter::default()).await.unwrap();
    assert!(!cases.is_empty());
    let mut requested = BTreeSet::new();
    for rec in &cases {
        let rows = store.history(&rec.id).await.unwrap();
        chain::verify(rows.iter().map(|h| {
            (
                h.seq,
                h.at,
                h.kind.as_str(),
                h.payload.as_str(),
                h.prev_hash.as_str(),
                h.hash.as_str(),
            )
        }))
        .unwrap_or_else(|e| panic!("case {}: {e}", rec.id));
        assert_eq!(rows.last().map(|h| h.seq), Some(rec.last_seq));
        assert_eq!(
            rows.last().map(|h| h.hash.clone()),
            Some(rec.last_hash.clone())
        );
        let events = history(engine, &rec.id).await;
        let program = engine.programs().for_case(rec).await.unwrap();
        let state = replay(&program, &rec.id, &events)
            .unwrap_or_else(|d| panic!("case {} does not replay: {d}", rec.id));
        assert_eq!(state.status_name(), rec.status, "case {}", rec.id);
        assert_eq!(
            serde_json::to_value(&state.vars).unwrap(),
            serde_json::from_str::<Value>(&rec.data).unwrap(),
            "case {}",
            rec.id
        );
        for r in &events {
            if let Event::EffectRequested { key, connector, .. } = &r.event {
                // Numbers and postings are made by the store, events delivered by the engine:
                // no connector performs them.
                let internal = [
                    dossier_core::NUMBERING_CONNECTOR,
                    dossier_core::LEDGER_CONNECTOR,
                    dossier_core::EVENTS_CONNECTOR,
                    dossier_core::IDS_CONNECTOR,
                ];
                if !internal.contains(&connector.as_str()) {
                    requested.insert(key.clone());
                }
            }
        }
    }
    let mut performed: BTreeMap<String, usize> = BTreeMap::new();
    for c in sms.iter().flat_map(|s| s.calls()) {
        if c.performed {
            *performed.entry(c.effect.idempotency_key).or_default() += 1;
        }
    }
    assert!(
        performed.values().all(|n| *n == 1),
        "an effect was performed twice: {performed:?}"
    );
    assert_eq!(
        performed.keys().cloned().collect::<BTreeSet<_>>(),
        requested,
        "the effects performed are not those the histories requested"
    );
}

// =============================================================================================
// Tests

fn a_case_runs_to_completion_with_each_effect_performed_once(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let done = tokio::time::timeout(
            DEADLINE,
            n.engine
                .run_case("envoi", json!({"tel": "+2250700000000", "nom": "Awa"})),
        )
        .await
        .expect("the case ends in time")
        .unwrap();
        assert_eq!(done.status, CaseStatus::Completed);
        assert_eq!(done.output, json!({"frais": 25, "envoye": true}));
        let rec = wait_status(&n.engine, &done.case_id, "completed").await;
        assert_eq!(rec.workflow_id, "envoi");
        assert_eq!(
            kinds(&n.engine, &done.case_id).await,
            vec![
                "case_started",
                "step_started",
                "rule_evaluated",
                "step_completed",
                "step_started",
                "effect_requested",
                "effect_completed",
                "step_completed",
                "case_completed",
            ]
        );
        let calls = n.sms.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].effect.case_id, done.case_id);
        assert_eq!(calls[0].effect.step, "sms");
        assert_eq!(
            calls[0].effect.request,
            json!({"to": "+2250700000000", "texte": "Bonjour Awa"})
        );
        // The outbox is empty once the result is recorded.
        assert!(n
            .engine
            .store()
            .pending_effects(None, 0)
            .await
            .unwrap()
            .is_empty());

        // An input that does not fit is refused and records nothing.
        let err = n
            .engine
            .start_case("envoi", json!({"tel": "+2250700000000"}), None)
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Rejected(_)), "{err}");
        assert_eq!(
            n.engine
                .store()
                .list_cases(&CaseFilter::default())
                .await
                .unwrap()
                .len(),
            1
        );
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

fn an_event_reaches_only_the_correlated_waiting_case(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let mut ids = Vec::new();
        for f in ["F-1", "F-2"] {
            let a = n
                .engine
                .start_case(
                    "paiement",
                    json!({"facture": f, "tel": "+2250700000009"}),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(a.status, "waiting");
            assert!(a.recorded);
            ids.push(a.case_id);
        }
        // No case waits for this invoice, nor for this event.
        assert!(n
            .engine
            .send_event("paiement_recu", json!({"facture": "F-3", "montant": 10}))
            .await
            .unwrap()
            .is_empty());
        assert!(n
            .engine
            .send_event("inconnu", json!({"facture": "F-2"}))
            .await
            .unwrap()
            .is_empty());
        // The payload lacks the correlation key.
        assert!(n
            .engine
            .send_event("paiement_recu", json!({"montant": 10}))
            .await
            .unwrap()
            .is_empty());

        let reached = n
            .engine
            .send_event("paiement_recu", json!({"facture": "F-2", "montant": 75}))
            .await
            .unwrap();
        assert_eq!(reached, vec![ids[1].clone()]);
        wait_status(&n.engine, &ids[1], "completed").await;
        let first = n.engine.store().case(&ids[0]).await.unwrap().unwrap();
        assert_eq!(first.status, "waiting");
        assert_eq!(
            n.engine.store().waits_of_case(&ids[0]).await.unwrap().len(),
            1
        );
        assert!(n
            .engine
            .store()
            .waits_of_case(&ids[1])
            .await
            .unwrap()
            .is_empty());
        // Delivered again: nobody waits any more.
        assert!(n
            .engine
            .send_event("paiement_recu", json!({"facture": "F-2", "montant": 75}))
            .await
            .unwrap()
            .is_empty());
        let calls = n.sms.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].effect.case_id, ids[1]);
        assert_eq!(calls[0].effect.request["montant"], json!(75));
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

fn a_timer_fires_when_the_clock_passes_it(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let a = n
            .engine
            .start_case("attente", json!({"tel": "+2250700000008"}), None)
            .await
            .unwrap();
        assert_eq!(a.status, "waiting");
        let timers = n.engine.store().due_timers(i64::MAX, 0).await.unwrap();
        assert_eq!(timers.len(), 1);
        assert_eq!(
            timers[0].fire_at,
            (n.clock.now() + chrono::Duration::hours(1)).timestamp_millis()
        );
        // Half-way: the timer task looks at least once a second and finds nothing due.
        n.clock.advance(chrono::Duration::minutes(30));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            n.engine
                .store()
                .case(&a.case_id)
                .await
                .unwrap()
                .unwrap()
                .status,
            "waiting"
        );
        assert!(n.sms.calls().is_empty());
        // Past it: it fires.
        n.clock.advance(chrono::Duration::minutes(31));
        wait_status(&n.engine, &a.case_id, "completed").await;
        assert!(n.engine.store().next_timer_at().await.unwrap().is_none());
        let events = history(&n.engine, &a.case_id).await;
        let fired = events
            .iter()
            .find(|r| matches!(r.event, Event::TimerFired { .. }))
            .expect("a timer_fired event");
        assert!(fired.at >= n.clock.now() - chrono::Duration::minutes(1));
        assert_eq!(n.sms.calls().len(), 1);
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

fn a_task_decided_moves_the_case_on(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let a = n
            .engine
            .start_case("validation", json!({"nom": "Kouassi"}), None)
            .await
            .unwrap();
        assert_eq!(a.status, "waiting");
        let tasks = n
            .engine
            .store()
            .tasks(&TaskFilter {
                case_id: Some(a.case_id.clone()),
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(tasks.len(), 1);
        let task = &tasks[0];
        assert_eq!(task.status, "open");
        assert_eq!(task.role, "comptable");
        assert_eq!(task.title, "Valider le dossier de Kouassi");

        // Refused decisions record nothing.
        let err = n
            .engine
            .decide_task(&task.id, "archiver", json!({"commentaire": "x"}), "ama")
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Rejected(_)), "{err}");
        let err = n
            .engine
            .decide_task(&task.id, "valider", json!({}), "ama")
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Rejected(_)), "{err}");
        let err = n
            .engine
            .decide_task("pas-une-tache", "valider", json!({}), "ama")
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::UnknownTask(_)), "{err}");

        let applied = n
            .engine
            .decide_task(
                &task.id,
                "valider",
                json!({"commentaire": "complet"}),
                "ama",
            )
            .await
            .unwrap();
        assert!(applied.recorded);
        let rec = wait_status(&n.engine, &a.case_id, "completed").await;
        assert_eq!(
            serde_json::from_str::<Value>(&rec.data).unwrap()["decision"]["by"],
            "ama"
        );
        let task = n.engine.store().task(&task.id).await.unwrap().unwrap();
        assert_eq!(task.status, "completed");
        assert_eq!(task.completed_by.as_deref(), Some("ama"));
        assert_eq!(task.outcome.as_deref(), Some("valider"));
        let calls = n.sms.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].effect.request["commentaire"], json!("complet"));
        // Decided again: the task is no longer open in the case.
        assert!(n
            .engine
            .decide_task(&task.id, "valider", json!({"commentaire": "x"}), "kofi")
            .await
            .is_err());
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

fn cancel_runs_the_compensations(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let a = n
            .engine
            .start_case("saga", json!({"ref": "R-1"}), None)
            .await
            .unwrap();
        // The debit is performed, then the case waits for a confirmation.
        wait_status(&n.engine, &a.case_id, "waiting").await;
        let applied = n
            .engine
            .cancel(&a.case_id, "le client renonce", "ops")
            .await
            .unwrap();
        assert!(applied.recorded);
        wait_status(&n.engine, &a.case_id, "cancelled").await;
        let what: Vec<Value> = n
            .sms
            .calls()
            .iter()
            .map(|c| c.effect.request["quoi"].clone())
            .collect();
        assert_eq!(what, vec![json!("debit"), json!("remboursement")]);
        let kinds = kinds(&n.engine, &a.case_id).await;
        let tail: Vec<&str> = kinds
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            vec![
                "effect_completed",
                "step_completed",
                "compensated",
                "case_cancelled"
            ]
        );
        assert!(kinds.contains(&"compensation_started".to_string()));
        // The wait is gone; a second cancel is refused.
        assert!(n
            .engine
            .store()
            .waits_of_case(&a.case_id)
            .await
            .unwrap()
            .is_empty());
        let err = n
            .engine
            .cancel(&a.case_id, "encore", "ops")
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Rejected(_)), "{err}");
        assert!(matches!(
            n.engine
                .cancel("pas-un-dossier", "x", "ops")
                .await
                .unwrap_err(),
            RuntimeError::UnknownCase(_)
        ));
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

fn a_sub_workflow_call_completes_the_parent(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let done =
            tokio::time::timeout(DEADLINE, n.engine.run_case("parent", json!({"nom": "Awa"})))
                .await
                .expect("the parent ends in time")
                .unwrap();
        assert_eq!(done.status, CaseStatus::Completed);
        assert_eq!(done.output, json!({"salutation": "Bonjour Awa"}));
        let cases = n
            .engine
            .store()
            .list_cases(&CaseFilter::default())
            .await
            .unwrap();
        assert_eq!(cases.len(), 2);
        let child = cases.iter().find(|c| c.workflow_id == "enfant").unwrap();
        assert_eq!(child.parent_id.as_deref(), Some(done.case_id.as_str()));
        assert_eq!(child.status, "completed");
        let parent_events = history(&n.engine, &done.case_id).await;
        assert!(parent_events.iter().any(|r| matches!(
            &r.event,
            Event::ChildStarted { child: c, .. } if *c == child.id
        )));
        assert!(parent_events.iter().any(|r| matches!(
            &r.event,
            Event::ChildFinished { child: c, status, .. } if *c == child.id && status == "completed"
        )));
        // The parent's notification went through the outbox and left it.
        assert!(n
            .engine
            .store()
            .pending_effects(None, 0)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(n.sms.calls().len(), 1);
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

fn a_sub_workflow_that_cannot_start_fails_the_call_durably(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let done = tokio::time::timeout(
            DEADLINE,
            n.engine.run_case("parent_errone", json!({"nom": "Awa"})),
        )
        .await
        .expect("the parent ends in time")
        .unwrap();
        // The child's input does not fit (`nom` is text): no child case exists, the call fails
        // and the parent takes its error branch.
        assert_eq!(done.status, CaseStatus::Completed);
        let issue = done.output["issue"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            issue.contains("cannot start") && issue.contains("nom"),
            "{issue}"
        );
        let cases = n
            .engine
            .store()
            .list_cases(&CaseFilter::default())
            .await
            .unwrap();
        assert_eq!(cases.len(), 1, "no child case was created");
        // The notice went through the outbox, in the parent's transaction, and left it.
        assert!(n
            .engine
            .store()
            .pending_effects(None, 0)
            .await
            .unwrap()
            .is_empty());
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

fn many_cases_at_once_complete_with_one_effect_each(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let mut runs = Vec::new();
        for i in 0..40 {
            let engine = n.engine.clone();
            runs.push(tokio::spawn(async move {
                engine
                    .run_case(
                        "envoi",
                        json!({"tel": format!("+22507000001{i:02}"), "nom": format!("n{i}")}),
                    )
                    .await
            }));
        }
        for r in runs {
            let done = tokio::time::timeout(DEADLINE, r)
                .await
                .expect("every case ends in time")
                .unwrap()
                .unwrap();
            assert_eq!(done.status, CaseStatus::Completed);
        }
        assert_eq!(n.sms.calls().len(), 40);
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

/// 30 invoices and 10 credit notes issued at once: each series counts 1, 2, 3… without a gap
/// or a repeat, and the store knows which case got which number.
fn numbers_are_gapless_and_unique_across_concurrent_cases(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let mut runs = Vec::new();
        for i in 0..40 {
            let engine = n.engine.clone();
            runs.push(tokio::spawn(async move {
                engine
                    .run_case(
                        "facture",
                        json!({"client": format!("c{i}"), "avoir": i % 4 == 0}),
                    )
                    .await
            }));
        }
        let mut invoices = Vec::new();
        let mut credit_notes = Vec::new();
        for r in runs {
            let done = tokio::time::timeout(DEADLINE, r)
                .await
                .expect("every case ends in time")
                .unwrap()
                .unwrap();
            assert_eq!(done.status, CaseStatus::Completed);
            let number = done.output["numero"].as_str().unwrap().to_string();
            if number.starts_with("AV/") {
                credit_notes.push((done.case_id.clone(), number));
            } else {
                invoices.push((done.case_id.clone(), number));
            }
        }
        let mut got: Vec<String> = invoices.iter().map(|(_, n)| n.clone()).collect();
        got.sort();
        let want: Vec<String> = (1..=30).map(|i| format!("FAC-2026-{i:04}")).collect();
        assert_eq!(got, want);
        let mut got: Vec<String> = credit_notes.iter().map(|(_, n)| n.clone()).collect();
        got.sort();
        let want: Vec<String> = (1..=10).map(|i| format!("AV/2026-T1/{i:03}")).collect();
        assert_eq!(got, want);
        // The store's register agrees with what each case recorded.
        let register = n.engine.store().numbers("FAC", "2026").await.unwrap();
        assert_eq!(register.len(), 30);
        for (i, r) in register.iter().enumerate() {
            assert_eq!(r.seq, i as i64 + 1);
            let (case, number) = invoices
                .iter()
                .find(|(c, _)| *c == r.case_id)
                .expect("a case of the register");
            assert_eq!(number, &format!("FAC-2026-{:04}", r.seq), "case {case}");
        }
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

/// Ten credits bought, then fifteen cases take one each at once: ten are served and five
/// refused by the account's lower bound, with no lost update. Then a credit bought and taken
/// for invoice F-1: its case emits the payment that the case waiting for F-1 receives.
fn ledger_postings_hold_their_bounds_and_emit_reaches_the_waiting_case(db: &Db) {
    runtime().block_on(async {
        let n = node(db).await;
        let credits = |quantite: i64, facture: &str| {
            json!({"client": "C1", "quantite": quantite, "facture": facture})
        };
        let bought = n.engine.run_case("credits", credits(-10, "achat")).await.unwrap();
        assert_eq!(bought.output["solde"], json!(10));
        let mut runs = Vec::new();
        for i in 0..15 {
            let engine = n.engine.clone();
            let input = credits(1, &format!("F-{i}-x"));
            runs.push(tokio::spawn(async move { engine.run_case("credits", input).await }));
        }
        let (mut served, mut refused) = (0, 0);
        for r in runs {
            let done = tokio::time::timeout(DEADLINE, r)
                .await
                .expect("every case ends in time")
                .unwrap()
                .unwrap();
            assert_eq!(done.status, CaseStatus::Completed);
            if done.output["refuse"] == json!(true) {
                refused += 1;
            } else {
                served += 1;
                assert_eq!(done.output["atteints"], json!(0), "nobody waits for F-i-x");
            }
        }
        assert_eq!((served, refused), (10, 5));
        let balances = |accounts: Vec<dossier_store::LedgerAccount>| -> Vec<(String, String)> {
            accounts
                .into_iter()
                .map(|a| (a.account, a.balance.to_string()))
                .collect()
        };
        assert_eq!(
            balances(n.engine.store().ledger_accounts("").await.unwrap()),
            vec![
                ("consommes/C1".to_string(), "0".to_string()),
                ("credits/C1".to_string(), "0".to_string()),
            ]
        );
        let journal = n.engine.store().ledger_postings("credits/C1").await.unwrap();
        assert_eq!(journal.len(), 11, "one purchase and ten debits");
        for w in journal.windows(2) {
            assert_eq!(w[1].balance, w[0].balance + w[1].amount);
        }

        let waiting = n
            .engine
            .start_case(
                "paiement",
                json!({"facture": "F-1", "tel": "+2250700000001"}),
                None,
            )
            .await
            .unwrap()
            .case_id;
        wait_status(&n.engine, &waiting, "waiting").await;
        n.engine.run_case("credits", credits(-1, "achat")).await.unwrap();
        let spent = n.engine.run_case("credits", credits(1, "F-1")).await.unwrap();
        assert_eq!(spent.output["atteints"], json!(1));
        wait_status(&n.engine, &waiting, "completed").await;

        // One posting per element of a list, all or none: the third series finds `b` full and
        // takes no place in `a` either.
        let series = |c: &[&str]| json!({ "creneaux": c });
        for _ in 0..2 {
            let done = n.engine.run_case("places", series(&["a", "b"])).await.unwrap();
            assert_eq!(done.output["postes"], json!(2));
        }
        let one = n.engine.run_case("places", series(&["c"])).await.unwrap();
        assert_eq!(one.output["postes"], json!(1));
        let full = n.engine.run_case("places", series(&["c", "b"])).await.unwrap();
        assert_eq!(full.output["refuse"], json!(true));
        assert_eq!(
            balances(n.engine.store().ledger_accounts("places/").await.unwrap()),
            vec![
                ("places/a".to_string(), "2".to_string()),
                ("places/b".to_string(), "2".to_string()),
                ("places/c".to_string(), "1".to_string()),
            ]
        );
        check_all_cases(&n.engine, std::slice::from_ref(&n.sms)).await;
    });
}

fn restart_while_an_effect_is_in_flight(db: &Db) {
    let clock = TestClock::new();
    // First life: the connector never answers; the engine dies with the effect in flight.
    let first = runtime();
    let (case_id, key) = first.block_on(async {
        let hanging = Arc::new(Hanging::default());
        let engine = start_with(db, clock.clone(), hanging.clone()).await;
        let a = engine
            .start_case(
                "envoi",
                json!({"tel": "+2250700000000", "nom": "Awa"}),
                None,
            )
            .await
            .unwrap();
        wait_until("the effect to reach the connector", || {
            hanging.calls.load(Ordering::SeqCst) == 1
        })
        .await;
        let key = hanging.keys.lock().unwrap()[0].clone();
        // A connector effect takes no outbox row: the case stays `running`, and its history holds
        // the request, which is what a restarted engine hands out again.
        assert!(engine
            .store()
            .pending_effects(None, 0)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            engine
                .store()
                .case(&a.case_id)
                .await
                .unwrap()
                .unwrap()
                .status,
            "running"
        );
        (a.case_id, key)
    });
    first.shutdown_timeout(Duration::from_secs(2));

    // Second life: a new engine on the same database performs the effect again, with the same
    // idempotency key, and the case completes from the state rebuilt from its history.
    runtime().block_on(async {
        let sms = Arc::new(RecordingConnector::new("sms", vec!["send".into()]));
        let engine = start_with(db, clock.clone(), sms.clone()).await;
        let rec = wait_status(&engine, &case_id, "completed").await;
        assert_eq!(
            serde_json::from_str::<Value>(&rec.data).unwrap()["accuse"]["ok"],
            json!(true)
        );
        let calls = sms.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].effect.idempotency_key, key);
        // The connector is told the first call may have been performed.
        assert!(calls[0].effect.redelivered);
        assert_eq!(calls[0].effect.attempt, 1);
        let events = history(&engine, &case_id).await;
        let requested: Vec<&str> = events
            .iter()
            .filter_map(|r| match &r.event {
                Event::EffectRequested { key, .. } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            requested,
            vec![key.as_str()],
            "the effect is requested once"
        );
        assert!(engine
            .store()
            .pending_effects(None, 0)
            .await
            .unwrap()
            .is_empty());
        check_all_cases(&engine, std::slice::from_ref(&sms)).await;
    });
}

fn restart_while_a_timer_is_pending(db: &Db) {
    let clock = TestClock::new();
    let first = runtime();
    let case_id = first.block_on(async {
        let sms = Arc::new(RecordingConnector::new("sms", vec!["send".into()]));
        let engine = start_with(db, clock.clone(), sms.clone()).await;
        let a = engine
            .start_case("attente", json!({"tel": "+2250700000008"}), None)
            .await
            .unwrap();
        assert_eq!(a.status, "waiting");
        assert!(sms.calls().is_empty());
        a.case_id
    });
    first.shutdown_timeout(Duration::from_secs(2));

    // The engine was down when the timer came due: the next one fires it.
    clock.advance(chrono::Duration::hours(2));
    runtime().block_on(async {
        let sms = Arc::new(RecordingConnector::new("sms", vec!["send".into()]));
        let engine = start_with(db, clock.clone(), sms.clone()).await;
        wait_status(&engine, &case_id, "completed").await;
        assert_eq!(sms.calls().len(), 1);
        let events = history(&engine, &case_id).await;
        let fired = events
            .iter()
            .filter(|r| matches!(r.event, Event::TimerFired { .. }))
            .count();
        assert_eq!(fired, 1);
        assert!(engine.store().next_timer_at().await.unwrap().is_none());
        check_all_cases(&engine, std::slice::from_ref(&sms)).await;
    });
}
