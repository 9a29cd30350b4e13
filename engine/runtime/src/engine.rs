//! The live engine: one sequencer task applies inputs to cases and group-commits their writes;
//! effect workers call connectors; a timer task fires durable timers.
//!
//! Order of things for every input: transition in memory → one transaction for the whole batch
//! → only then effects are handed to workers, callers get their answer and the cache is
//! updated. A crash before the commit loses only work whose inputs are still durable elsewhere
//! (the histories of `running` cases, the outbox of messages between cases, the timers table,
//! the caller who got no answer); a crash after it re-performs at most the effects whose results
//! were not yet recorded, with the same idempotency keys.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dossier_connectors::{EffectRequest, Registry};
use dossier_core::replay::{replay, RecordedEvent};
use dossier_core::{Action, CaseState, CaseStatus, Event, ParentRef, Program, Transition};
use dossier_store::{
    AuditEntry, CaseFilter, CaseRecord, CaseWrite, EffectRecord, InboxRecord, Store, StoreError,
};
use serde_json::{json, Value};
use sha2::Digest;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::apply::{case_write, ChainHead};
use crate::programs::Programs;
use crate::project::Project;
use crate::{Clock, Result, RuntimeError};

/// The connector name of the internal effect that tells a parent case its child ended.
const PARENT_CONNECTOR: &str = "_parent";
/// The connector name of the internal effect that cancels a sub-workflow case.
const CHILD_CONNECTOR: &str = "_child";

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Connector calls in flight at once.
    pub effect_concurrency: usize,
    /// Case transitions committed in one transaction at most.
    pub max_batch: usize,
    /// Batches committing at once: while one commits, the next is prepared (and, on
    /// PostgreSQL, committed on another connection).
    pub commits_in_flight: usize,
    /// Case states kept in memory; the others are rebuilt from their history when needed.
    pub cache_capacity: usize,
    /// Perform effects and fire timers. Off for a process that only records new cases
    /// (`dossier start`): their effects wait, recorded in the histories, for a working engine.
    pub workers: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            effect_concurrency: 256,
            max_batch: 512,
            commits_in_flight: 2,
            cache_capacity: 10_000,
            workers: true,
        }
    }
}

/// What a caller learns once its input is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub case_id: String,
    pub status: String,
    /// False when the input changed nothing (a stale timer, a duplicate result).
    pub recorded: bool,
    /// The request was taken before (same deduplication scope and key): this is its record,
    /// and nothing was done now.
    pub duplicate: Option<InboxRecord>,
}

/// The deduplication key of a request (an `Idempotency-Key`, a webhook id): the input is
/// applied at most once per `(scope, key)`, the record written in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxKey {
    pub scope: String,
    pub key: String,
    /// SHA-256 (hex) of the request body; the caller compares it with a duplicate's.
    pub request_hash: String,
}

impl InboxKey {
    /// The token that keeps two commands with this key out of batches committing side by side.
    fn token(&self) -> String {
        format!("\u{1}{}\u{1}{}", self.scope, self.key)
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub case_id: String,
    pub status: CaseStatus,
    pub output: Value,
}

/// The deduplication scope of one request that may reach several cases (a webhook delivery,
/// an event sent with an `Idempotency-Key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// Unique per request: `hook:<name>:<webhook-id>`, `api:events:<caller>:<key>`.
    pub scope: String,
    /// SHA-256 (hex) of the request body.
    pub request_hash: String,
}

impl Dedup {
    fn key(&self, key: &str) -> InboxKey {
        InboxKey {
            scope: self.scope.clone(),
            key: key.to_string(),
            request_hash: self.request_hash.clone(),
        }
    }
}

/// What an event or webhook delivery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Cases the event reached (now, or in an earlier delivery of the same request).
    pub reached: Vec<String>,
    /// Cases a trigger started (now, or in an earlier delivery of the same request).
    pub started: Vec<String>,
    /// Something was recorded now.
    pub fresh: bool,
    /// The request was taken before (same deduplication scope) and nothing new was done now:
    /// this is the first answer again.
    pub replayed: bool,
}

/// The key of the record that says a deduplicated request was handled to its end.
const DONE_KEY: &str = "done";

/// What a request adds to the write of the transition it causes.
#[derive(Default)]
struct Extras {
    inbox: Option<InboxKey>,
    audit: Option<AuditEntry>,
}

/// The answer of a request already handled to its end, if its earlier records hold it.
fn finished_request(prior: &[InboxRecord]) -> Result<Option<Delivery>> {
    let Some(rec) = prior.iter().find(|p| p.key == DONE_KEY) else {
        return Ok(None);
    };
    let answer: Value = serde_json::from_str(&rec.status)
        .map_err(|e| RuntimeError::Corrupt(format!("inbox {}: {e}", rec.scope)))?;
    let ids = |k: &str| -> Vec<String> {
        answer[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Some(Delivery {
        reached: ids("reached"),
        started: ids("started"),
        fresh: false,
        replayed: true,
    }))
}

/// Rows to remove once an input is handled, even when the case ignores it.
#[derive(Debug, Clone, Default)]
struct Cleanup {
    effect: Option<String>,
    timer: Option<String>,
}

// `Stop` is small and rare; boxing the others would cost an allocation per input.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Finish the batch at hand, then stop; answered once stopped.
    Stop(oneshot::Sender<()>),
    Start {
        program: Arc<Program>,
        case_id: String,
        input: Value,
        business_key: Option<String>,
        inbox: Option<InboxKey>,
        /// The audit entry of the API call, written in the same transaction.
        audit: Option<AuditEntry>,
        reply: Option<oneshot::Sender<Result<Applied>>>,
    },
    Input {
        case_id: String,
        event: Event,
        cleanup: Cleanup,
        inbox: Option<InboxKey>,
        /// What a task decision expects of the task's row (see [`TaskGuard`]).
        guard: Option<TaskGuard>,
        /// The audit entry of the API call, written in the same transaction.
        audit: Option<AuditEntry>,
        reply: Option<oneshot::Sender<Result<Applied>>>,
    },
}

/// What a person saw of a task when they decided it: the decision is refused if the task
/// moved meanwhile (escalated to another role, claimed by someone else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskGuard {
    pub task: String,
    pub role: String,
    /// Who may hold it: the decider, or nobody.
    pub holder: String,
}

impl Command {
    /// Sets the reply channel; returns the one it replaces.
    fn set_reply(
        &mut self,
        r: Option<oneshot::Sender<Result<Applied>>>,
    ) -> Option<oneshot::Sender<Result<Applied>>> {
        match self {
            Command::Start { reply, .. } | Command::Input { reply, .. } => {
                std::mem::replace(reply, r)
            }
            Command::Stop(_) => None,
        }
    }

    fn case_id(&self) -> &str {
        match self {
            Command::Start { case_id, .. } | Command::Input { case_id, .. } => case_id,
            Command::Stop(_) => "",
        }
    }

    fn inbox(&self) -> Option<&InboxKey> {
        match self {
            Command::Start { inbox, .. } | Command::Input { inbox, .. } => inbox.as_ref(),
            Command::Stop(_) => None,
        }
    }
}

struct Cached {
    state: CaseState,
    program: Arc<Program>,
    head: ChainHead,
}

/// One case's part of a batch.
struct Staged {
    case_id: String,
    cached: Option<Cached>,
    actions: Vec<Action>,
    /// Internal effects written with the transition, dispatched after the commit.
    internal: Vec<EffectRecord>,
    reply: Option<oneshot::Sender<Result<Applied>>>,
    applied: Applied,
    /// The command, to run again if the batch fails on a conflict.
    retry: Option<Command>,
}

struct Inner {
    store: Arc<dyn Store>,
    programs: Programs,
    connectors: Registry,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    commands: mpsc::UnboundedSender<Command>,
    timer_wake: Notify,
    /// Earliest timer known to be set since the timer task last looked, in ms.
    next_timer_hint: AtomicI64,
    effects_in_flight: Mutex<HashSet<String>>,
    timers_in_flight: Mutex<HashSet<String>>,
    effect_slots: Arc<Semaphore>,
    queued: AtomicUsize,
    stopped: std::sync::atomic::AtomicBool,
    commit_failures: std::sync::atomic::AtomicU32,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<Finished>>>>,
    /// Correlation key sets per event name, from every deployed workflow.
    correlations: BTreeMap<String, BTreeSet<Vec<String>>>,
    metrics: crate::metrics::Metrics,
    triggers: crate::triggers::Triggers,
}

/// A running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Stores the project's definitions, recovers pending effects and starts the sequencer,
    /// the timer task and the effect workers.
    pub async fn start(
        store: Arc<dyn Store>,
        project: Arc<Project>,
        connectors: Registry,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Result<Engine> {
        let now = clock.now();
        store
            .put_definitions(&project.definitions(now.timestamp_millis()))
            .await?;
        let mut correlations: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
        for def in store.definitions("workflow").await? {
            if let Ok(pw) = dossier_model::parse_workflow(&def.name, &def.source) {
                collect_interrupts(&pw.workflow, &mut correlations);
            }
        }
        let triggers = crate::triggers::Triggers::of(&project);
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            programs: Programs::new(store.clone(), project),
            store,
            connectors,
            clock,
            effect_slots: Arc::new(Semaphore::new(config.effect_concurrency.max(1))),
            config,
            commands: tx,
            timer_wake: Notify::new(),
            next_timer_hint: AtomicI64::new(i64::MAX),
            effects_in_flight: Mutex::new(HashSet::new()),
            timers_in_flight: Mutex::new(HashSet::new()),
            queued: AtomicUsize::new(0),
            stopped: std::sync::atomic::AtomicBool::new(false),
            commit_failures: std::sync::atomic::AtomicU32::new(0),
            waiters: Mutex::new(HashMap::new()),
            correlations,
            metrics: crate::metrics::Metrics::default(),
            triggers,
        });
        tokio::spawn(sequencer(inner.clone(), rx));
        if !inner.config.workers {
            return Ok(Engine { inner });
        }
        tokio::spawn(timer_task(inner.clone()));
        recover(&inner, None).await?;
        Ok(Engine { inner })
    }

    /// The connectors effects are performed with.
    pub fn connectors(&self) -> &Registry {
        &self.inner.connectors
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn programs(&self) -> &Programs {
        &self.inner.programs
    }

    /// The engine's counters since it started.
    pub fn metrics(&self) -> crate::metrics::MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// The clock the engine reads.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Starts a case of the deployed version of `workflow`; answers once it is committed.
    pub async fn start_case(
        &self,
        workflow: &str,
        input: Value,
        business_key: Option<String>,
    ) -> Result<Applied> {
        self.start_case_once(workflow, input, business_key, None)
            .await
    }

    /// Starts a case at most once per deduplication key, its audit entry written in the same
    /// transaction (nothing is audited for a duplicate or a refusal: nothing happened).
    pub async fn start_case_audited(
        &self,
        workflow: &str,
        input: Value,
        business_key: Option<String>,
        inbox: Option<InboxKey>,
        audit: Option<AuditEntry>,
    ) -> Result<Applied> {
        let program = self.inner.programs.current(workflow)?;
        let case_id = uuid::Uuid::now_v7().to_string();
        let (tx, rx) = oneshot::channel();
        self.send(Command::Start {
            program,
            case_id,
            input,
            business_key,
            inbox,
            audit,
            reply: Some(tx),
        });
        rx.await.map_err(|_| RuntimeError::Stopped)?
    }

    /// Starts a case at most once per deduplication key: a request already taken answers
    /// with its record (`Applied::duplicate`) and starts nothing.
    pub async fn start_case_once(
        &self,
        workflow: &str,
        input: Value,
        business_key: Option<String>,
        inbox: Option<InboxKey>,
    ) -> Result<Applied> {
        self.start_case_audited(workflow, input, business_key, inbox, None)
            .await
    }

    /// Starts a case and waits until it ends (completed, failed or cancelled).
    pub async fn run_case(&self, workflow: &str, input: Value) -> Result<Finished> {
        let program = self.inner.programs.current(workflow)?;
        let case_id = uuid::Uuid::now_v7().to_string();
        let (done_tx, done_rx) = oneshot::channel();
        lock(&self.inner.waiters)
            .entry(case_id.clone())
            .or_default()
            .push(done_tx);
        let (tx, rx) = oneshot::channel();
        self.send(Command::Start {
            program,
            case_id: case_id.clone(),
            input,
            business_key: None,
            inbox: None,
            audit: None,
            reply: Some(tx),
        });
        match rx.await.map_err(|_| RuntimeError::Stopped)? {
            Ok(_) => done_rx.await.map_err(|_| RuntimeError::Stopped),
            Err(e) => {
                lock(&self.inner.waiters).remove(&case_id);
                Err(e)
            }
        }
    }

    /// Delivers an event to every case waiting for it whose correlation keys match.
    /// Returns the ids of the cases it reached.
    pub async fn send_event(&self, name: &str, payload: Value) -> Result<Vec<String>> {
        Ok(self.deliver_event(name, payload, None, None).await?.reached)
    }

    /// Delivers an event to every case waiting for it whose correlation keys match; when none
    /// waits, starts the workflows with an `event` trigger of that name.
    ///
    /// With `dedup`, the delivery to each case and each start is recorded under the request's
    /// scope in the transaction that applies it, and the whole request's answer once it is
    /// done. A repeat of a finished request answers from that record and does nothing; a repeat
    /// of one cut short (a crash, a database error) reaches only the cases the first one did not
    /// reach, never a case it started, and starts only what it did not start.
    ///
    /// `audit`, the entry of the API call, is written once the request did something: with the
    /// record of its answer when it is deduplicated (a retry that completes a delivery cut short
    /// writes it then), else right after the deliveries.
    pub async fn deliver_event(
        &self,
        name: &str,
        payload: Value,
        dedup: Option<Dedup>,
        audit: Option<AuditEntry>,
    ) -> Result<Delivery> {
        self.deliver(name, payload, dedup, None, audit).await
    }

    /// Delivers an event to one case: to each of its waits for that name, whatever their
    /// correlation keys (the caller chose the case). Deduplicated like
    /// [`Engine::deliver_event`]; starts nothing.
    pub async fn deliver_to_case(
        &self,
        case_id: &str,
        name: &str,
        payload: Value,
        dedup: Option<Dedup>,
        audit: Option<AuditEntry>,
    ) -> Result<Delivery> {
        self.deliver(name, payload, dedup, Some(case_id), audit)
            .await
    }

    /// Delivers to the waits matching the payload's correlation keys (`case: None`, and then
    /// the `event` triggers when none waits), or to one case's waits for the event.
    async fn deliver(
        &self,
        name: &str,
        payload: Value,
        dedup: Option<Dedup>,
        case: Option<&str>,
        audit: Option<AuditEntry>,
    ) -> Result<Delivery> {
        // The waits before the earlier records: a case that a copy of this request running
        // alongside started (and that waits for this very event) is then known by its record.
        let mut waits = match case {
            Some(id) => self.waits_of_case_for(id, name).await?,
            None => self.matching_waits(name, &payload).await?,
        };
        crate::delivery_order(&mut waits);
        let prior = self.prior(dedup.as_ref()).await?;
        if let Some(done) = finished_request(&prior)? {
            return Ok(done);
        }
        let mut delivery = self
            .deliver_to_waits(name, &payload, waits, &dedup, &prior)
            .await?;
        if case.is_none() && delivery.reached.is_empty() {
            let starts = self
                .inner
                .triggers
                .events
                .get(name)
                .cloned()
                .unwrap_or_default();
            self.start_all(&starts, &payload, &dedup, &mut delivery, None)
                .await?;
        }
        self.finish_request(dedup.as_ref(), &mut delivery, &prior, audit)
            .await?;
        Ok(delivery)
    }

    /// `(wait, case)` of every wait for `name` whose correlation keys the payload matches.
    async fn matching_waits(&self, name: &str, payload: &Value) -> Result<Vec<(String, String)>> {
        let mut waits = Vec::new();
        let Some(key_sets) = self.inner.correlations.get(name) else {
            return Ok(waits);
        };
        for keys in key_sets {
            let values: BTreeMap<String, Value> = keys
                .iter()
                .filter_map(|k| payload.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            if values.len() != keys.len() {
                continue;
            }
            let text = dossier_core::correlation_text(&values);
            for w in self.inner.store.waits_for(name, &text).await? {
                waits.push((w.id, w.case_id));
            }
        }
        Ok(waits)
    }

    /// `(wait, case)` of one case's waits for `name`.
    async fn waits_of_case_for(&self, case_id: &str, name: &str) -> Result<Vec<(String, String)>> {
        if self.inner.store.case(case_id).await?.is_none() {
            return Err(RuntimeError::UnknownCase(case_id.to_string()));
        }
        Ok(self
            .inner
            .store
            .waits_of_case(case_id)
            .await?
            .into_iter()
            .filter(|w| w.event_name == name)
            .map(|w| (w.id, w.case_id))
            .collect())
    }

    /// Starts the workflows a webhook triggers, each at most once per deduplication scope.
    /// Every trigger's input is computed before any case starts, so a payload one of them
    /// cannot read refuses the whole request and starts nothing. Each start's own record is
    /// the request's record: a repeat finds them all and starts nothing (no "done" record, so
    /// a delivery costs one transaction).
    ///
    /// `audit`, the entry of the call, is written with the first case it starts.
    pub async fn start_by_webhook(
        &self,
        hook: &str,
        payload: Value,
        dedup: Option<Dedup>,
        audit: Option<AuditEntry>,
    ) -> Result<Delivery> {
        let mut delivery = Delivery::default();
        let starts = self
            .inner
            .triggers
            .webhooks
            .get(hook)
            .cloned()
            .unwrap_or_default();
        self.start_all(&starts, &payload, &dedup, &mut delivery, audit)
            .await?;
        delivery.replayed = dedup.is_some() && !delivery.started.is_empty() && !delivery.fresh;
        Ok(delivery)
    }

    /// The workflows each webhook name starts.
    pub fn triggers(&self) -> &crate::triggers::Triggers {
        &self.inner.triggers
    }

    /// Records the answer of a request handled to its end: a repeat answers from it.
    async fn finish_request(
        &self,
        dedup: Option<&Dedup>,
        delivery: &mut Delivery,
        prior: &[InboxRecord],
        audit: Option<AuditEntry>,
    ) -> Result<()> {
        let Some(d) = dedup else {
            if let (Some(entry), true) = (audit, delivery.fresh) {
                let write = CaseWrite {
                    audit: vec![entry],
                    ..CaseWrite::default()
                };
                self.inner.store.commit(&[write]).await?;
            }
            return Ok(());
        };
        delivery.replayed = !prior.is_empty() && !delivery.fresh;
        // A request that reached nothing leaves no trace: it was refused (one case that does
        // not wait for the event) or had nothing to do, and may be sent again.
        if delivery.reached.is_empty() && delivery.started.is_empty() {
            return Ok(());
        }
        let rec = InboxRecord {
            scope: d.scope.clone(),
            key: DONE_KEY.into(),
            request_hash: d.request_hash.clone(),
            case_id: String::new(),
            status: json!({"reached": delivery.reached, "started": delivery.started}).to_string(),
            created_at: self.inner.clock.now().timestamp_millis(),
        };
        let write = CaseWrite {
            inbox: vec![rec],
            audit: audit.into_iter().collect(),
            ..CaseWrite::default()
        };
        match self.inner.store.commit(&[write]).await {
            // A copy of the request running alongside finished first: same answer.
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The records of a request's earlier deliveries; refuses a reused key with another body.
    async fn prior(&self, dedup: Option<&Dedup>) -> Result<Vec<InboxRecord>> {
        let Some(d) = dedup else {
            return Ok(Vec::new());
        };
        let prior = self.inner.store.inbox_scope(&d.scope).await?;
        if prior.iter().any(|p| p.request_hash != d.request_hash) {
            return Err(RuntimeError::KeyReused);
        }
        Ok(prior)
    }

    /// Starts every triggered workflow, once each per request: all inputs are computed first.
    async fn start_all(
        &self,
        starts: &[crate::triggers::Start],
        payload: &Value,
        dedup: &Option<Dedup>,
        delivery: &mut Delivery,
        mut audit: Option<AuditEntry>,
    ) -> Result<()> {
        let now = self.inner.clock.now();
        let mut inputs = Vec::with_capacity(starts.len());
        for s in starts {
            // The workflow must be deployed too, before anything starts.
            self.inner.programs.current(&s.workflow)?;
            inputs.push(crate::triggers::trigger_input(
                self.inner.programs.project(),
                &s.trigger,
                payload,
                now,
            )?);
        }
        for (s, input) in starts.iter().zip(inputs) {
            let inbox = dedup
                .as_ref()
                .map(|d| d.key(&format!("start:{}", s.workflow)));
            // The call's audit entry goes with the first start.
            let applied = self
                .start_case_audited(&s.workflow, input, None, inbox.clone(), audit.take())
                .await?;
            if let (Some(k), Some(dup)) = (&inbox, &applied.duplicate) {
                if dup.request_hash != k.request_hash {
                    return Err(RuntimeError::KeyReused);
                }
            }
            delivery.fresh |= applied.duplicate.is_none();
            if !delivery.started.contains(&applied.case_id) {
                delivery.started.push(applied.case_id);
            }
        }
        Ok(())
    }

    /// Delivers to waits given in delivery order. The deduplication key of a delivery is the
    /// case and the rank of the wait among that case's waits matched by this request. A case
    /// an earlier delivery of the request reached or started is left alone. A case refusing the
    /// event does not keep it from the others; any other failure stops the delivery (the
    /// caller answers 5xx and the sender's retry goes on where this one stopped).
    async fn deliver_to_waits(
        &self,
        name: &str,
        payload: &Value,
        waits: Vec<(String, String)>,
        dedup: &Option<Dedup>,
        prior: &[InboxRecord],
    ) -> Result<Delivery> {
        let mut delivery = Delivery::default();
        let done_before: HashSet<&str> = prior.iter().map(|p| p.case_id.as_str()).collect();
        let mut rank: HashMap<String, usize> = HashMap::new();
        for (wait, case_id) in waits {
            if done_before.contains(case_id.as_str()) {
                continue;
            }
            let n = rank.entry(case_id.clone()).or_insert(0);
            let key = format!("{case_id}#{n}");
            *n += 1;
            let event = Event::EventReceived {
                wait,
                event: name.to_string(),
                payload: payload.clone(),
            };
            let inbox = dedup.as_ref().map(|d| d.key(&key));
            match self.input_once(&case_id, event, inbox).await {
                Ok(applied) if applied.recorded => {
                    delivery.fresh = true;
                    delivery.reached.push(case_id);
                }
                Ok(applied) if applied.duplicate.is_some() => delivery.reached.push(case_id),
                Ok(_) => {}
                Err(e @ (RuntimeError::Rejected(_) | RuntimeError::UnknownCase(_))) => {
                    tracing::warn!(case = %case_id, error = %e, "the case refused the event")
                }
                Err(e) => return Err(e),
            }
        }
        for p in prior {
            if p.key.contains('#') && !delivery.reached.contains(&p.case_id) {
                delivery.reached.push(p.case_id.clone());
            }
            if p.key.starts_with("start:") && !delivery.started.contains(&p.case_id) {
                delivery.started.push(p.case_id.clone());
            }
        }
        delivery.reached.dedup();
        Ok(delivery)
    }

    /// Records a provider's delivery receipt on the case whose effect sent the message. A
    /// receipt the provider sends again (same connector, effect, message and status) is recorded
    /// once.
    pub async fn record_receipt(
        &self,
        connector: &str,
        receipt: dossier_connectors::Receipt,
    ) -> Result<Applied> {
        let inbox = InboxKey {
            scope: format!("receipt:{connector}"),
            // Some providers (Orange) send no message id: the effect's key tells messages apart.
            key: format!(
                "{}|{}|{}",
                receipt.effect_key, receipt.message_id, receipt.status
            ),
            request_hash: String::new(),
        };
        let event = Event::ReceiptReceived {
            key: receipt.effect_key,
            connector: connector.to_string(),
            message_id: receipt.message_id,
            status: receipt.status,
            detail: receipt.detail,
        };
        self.input_once(&receipt.case_id, event, Some(inbox)).await
    }

    /// Applies an input to a case and answers once it is committed.
    pub async fn input(&self, case_id: &str, event: Event) -> Result<Applied> {
        self.input_once(case_id, event, None).await
    }

    /// Applies an input at most once per deduplication key (see [`Engine::start_case_once`]).
    /// An input that changes nothing writes no record.
    pub async fn input_once(
        &self,
        case_id: &str,
        event: Event,
        inbox: Option<InboxKey>,
    ) -> Result<Applied> {
        self.input_guarded(case_id, event, inbox, None, None).await
    }

    async fn input_guarded(
        &self,
        case_id: &str,
        event: Event,
        inbox: Option<InboxKey>,
        guard: Option<TaskGuard>,
        audit: Option<AuditEntry>,
    ) -> Result<Applied> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Input {
            case_id: case_id.to_string(),
            event,
            cleanup: Cleanup::default(),
            inbox,
            guard,
            audit,
            reply: Some(tx),
        });
        rx.await.map_err(|_| RuntimeError::Stopped)?
    }

    /// Cancels a case: its compensations run, then it ends `cancelled`.
    pub async fn cancel(&self, case_id: &str, reason: &str, by: &str) -> Result<Applied> {
        self.cancel_audited(case_id, reason, by, None).await
    }

    /// Cancels a case, the audit entry of the call written with the cancellation.
    pub async fn cancel_audited(
        &self,
        case_id: &str,
        reason: &str,
        by: &str,
        audit: Option<AuditEntry>,
    ) -> Result<Applied> {
        let event = Event::CancelRequested {
            reason: reason.to_string(),
            by: by.to_string(),
        };
        self.input_guarded(case_id, event, None, None, audit).await
    }

    /// Records a person's decision on a task.
    pub async fn decide_task(
        &self,
        task_id: &str,
        outcome: &str,
        data: Value,
        by: &str,
    ) -> Result<Applied> {
        let task = self
            .inner
            .store
            .task(task_id)
            .await?
            .ok_or_else(|| RuntimeError::UnknownTask(task_id.to_string()))?;
        let event = Event::TaskDecided {
            task: task_id.to_string(),
            outcome: outcome.to_string(),
            data,
            by: by.to_string(),
        };
        self.input(&task.case_id, event).await
    }

    /// Records a person's decision on a task, provided the task is still where they saw it:
    /// in `guard.role`'s inbox, held by them or by nobody. Checked when the decision is
    /// prepared, so a claim or an escalation that came first wins.
    /// The audit entry of the call, if any, is written with the decision.
    pub async fn decide_task_guarded(
        &self,
        outcome: &str,
        data: Value,
        by: &str,
        guard: TaskGuard,
        audit: Option<AuditEntry>,
    ) -> Result<Applied> {
        let task = self
            .inner
            .store
            .task(&guard.task)
            .await?
            .ok_or_else(|| RuntimeError::UnknownTask(guard.task.clone()))?;
        let event = Event::TaskDecided {
            task: guard.task.clone(),
            outcome: outcome.to_string(),
            data,
            by: by.to_string(),
        };
        self.input_guarded(&task.case_id, event, None, Some(guard), audit)
            .await
    }

    /// Stops the engine: the batch at hand is committed, then the sequencer and the timer task
    /// end; effects in flight finish but their results are not recorded (they go out again,
    /// with the same keys, when an engine next starts on the database).
    pub async fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.timer_wake.notify_one();
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// True when nothing is queued, no effect is in flight and no timer is due.
    pub async fn is_idle(&self) -> Result<bool> {
        // One counter covers commands not yet committed and effects not yet answered.
        if self.inner.queued.load(Ordering::SeqCst) > 0 {
            return Ok(false);
        }
        let now = self.inner.clock.now().timestamp_millis();
        Ok(self.inner.store.due_timers(now, 1).await?.is_empty())
    }

    fn send(&self, cmd: Command) {
        submit(&self.inner, cmd);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn submit(inner: &Inner, cmd: Command) {
    inner.queued.fetch_add(1, Ordering::SeqCst);
    if inner.commands.send(cmd).is_err() {
        inner.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Correlation key sets of a workflow's interrupting events and waiting steps.
fn collect_interrupts(
    wf: &dossier_model::Workflow,
    out: &mut BTreeMap<String, BTreeSet<Vec<String>>>,
) {
    for it in &wf.on_event {
        let mut keys: Vec<String> = it.correlate.keys().cloned().collect();
        keys.sort();
        out.entry(it.event.clone()).or_default().insert(keys);
    }
    collect_correlations(&wf.steps, out);
}

fn collect_correlations(
    steps: &[dossier_model::Step],
    out: &mut BTreeMap<String, BTreeSet<Vec<String>>>,
) {
    for s in steps {
        if let Some(we) = &s.wait_event {
            let mut keys: Vec<String> = we.correlate.keys().cloned().collect();
            keys.sort();
            out.entry(we.event.clone()).or_default().insert(keys);
        }
        for b in s.parallel.iter().flatten() {
            collect_correlations(&b.steps, out);
        }
        if let Some(f) = &s.for_each {
            collect_correlations(&f.steps, out);
        }
        if let Some(c) = &s.compensate {
            collect_correlations(c, out);
        }
    }
}

// ---- the sequencer ----

struct Batch {
    writes: Vec<CaseWrite>,
    staged: Vec<Staged>,
    touched: HashSet<String>,
    /// Sub-workflow cases started within this batch (bounded: see `MAX_CHILD_STARTS`).
    children_started: usize,
    /// Steps started by the batch's transitions.
    steps: usize,
}

/// Sub-workflow cases one batch may start. A circle of calls is refused by the validator; this
/// keeps a case that slipped through (an old stored version) from stalling the engine.
const MAX_CHILD_STARTS: usize = 1000;

/// A batch whose commit is under way, with the cases it holds.
struct InFlight {
    touched: HashSet<String>,
    handle: tokio::task::JoinHandle<(Batch, usize, std::result::Result<(), StoreError>)>,
}

/// The heart of the engine. Commands are gathered into batches; each batch's writes are
/// committed in one transaction by a task of its own, while the next batch is prepared (at most
/// `EngineConfig::commits_in_flight` at once). A case belongs to one batch at a time: its next
/// command waits until the batch holding it is committed, so every transition builds on
/// committed state and batches in flight never touch the same case.
async fn sequencer(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut cache: Lru = Lru::new(inner.config.cache_capacity);
    let mut deferred: VecDeque<Command> = VecDeque::new();
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    loop {
        let mut cmds: Vec<Command> = deferred.drain(..).collect();
        if cmds.is_empty() {
            match inflight.front_mut() {
                None => match rx.recv().await {
                    Some(c) => cmds.push(c),
                    None => return,
                },
                Some(oldest) => {
                    tokio::select! {
                        c = rx.recv() => match c {
                            Some(c) => cmds.push(c),
                            None => return,
                        },
                        done = &mut oldest.handle => {
                            inflight.pop_front();
                            pause(settle(&inner, &mut cache, &mut deferred, done)).await;
                            continue;
                        }
                    }
                }
            }
        }
        while cmds.len() < inner.config.max_batch {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let mut commands = Vec::with_capacity(cmds.len());
        let mut stop = None;
        for c in cmds {
            match c {
                Command::Stop(tx) => stop = Some(tx),
                other => commands.push(other),
            }
        }
        if let Some(tx) = stop {
            // Stop: the commits under way finish (their effects are handed out), nothing new is
            // prepared; the commands left are answered by the closing channel.
            while let Some(oldest) = inflight.pop_front() {
                let done = oldest.handle.await;
                let _ = settle(&inner, &mut cache, &mut deferred, done);
            }
            let _ = tx.send(());
            return;
        }
        let (batch, processed) =
            prepare_batch(&inner, &mut cache, &mut deferred, &inflight, commands).await;
        if batch.writes.is_empty() {
            finish_batch(&inner, &mut cache, batch, processed);
        } else {
            while inflight.len() >= inner.config.commits_in_flight.max(1) {
                if let Some(oldest) = inflight.pop_front() {
                    let done = oldest.handle.await;
                    pause(settle(&inner, &mut cache, &mut deferred, done)).await;
                }
            }
            let touched = batch.touched.clone();
            let store = inner.store.clone();
            let handle = tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = store.commit(&batch.writes).await;
                tracing::debug!(
                    writes = batch.writes.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                (batch, processed, result)
            });
            inflight.push_back(InFlight { touched, handle });
        }
        if processed == 0 {
            // Nothing could be prepared: every command waits for a batch in flight.
            if let Some(oldest) = inflight.pop_front() {
                let done = oldest.handle.await;
                pause(settle(&inner, &mut cache, &mut deferred, done)).await;
            }
        }
    }
}

/// Waits before the next batch when the database is failing.
async fn pause(backoff: Option<Duration>) {
    if let Some(d) = backoff {
        tokio::time::sleep(d).await;
    }
}

/// Prepares a batch from `cmds`. A command whose case is already in this batch or in a batch
/// in flight goes back to `deferred`. Returns the batch and how many commands it took.
async fn prepare_batch(
    inner: &Arc<Inner>,
    cache: &mut Lru,
    deferred: &mut VecDeque<Command>,
    inflight: &VecDeque<InFlight>,
    cmds: Vec<Command>,
) -> (Batch, usize) {
    let now = crate::to_millis(inner.clock.now());
    let mut batch = Batch {
        writes: Vec::new(),
        staged: Vec::new(),
        touched: HashSet::new(),
        children_started: 0,
        steps: 0,
    };
    // Commands stay counted as queued until their batch is committed and dispatched, so that
    // `Engine::is_idle` never sees a gap between a commit and its effects.
    let mut processed = 0;
    for cmd in cmds {
        let id = cmd.case_id();
        let token = cmd.inbox().map(InboxKey::token);
        let busy = |set: &HashSet<String>| {
            set.contains(id) || token.as_ref().is_some_and(|t| set.contains(t))
        };
        if busy(&batch.touched) || inflight.iter().any(|f| busy(&f.touched)) {
            deferred.push_back(cmd);
            continue;
        }
        processed += 1;
        prepare(inner, cache, &mut batch, cmd, now).await;
    }
    (batch, processed)
}

/// Handles a finished commit: dispatch what follows, or run the commands again.
/// Consecutive failed commits (other than conflicts) after which the commands of a failing
/// batch are answered with the error instead of being tried again.
const MAX_COMMIT_FAILURES: u32 = 5;

/// Handles a finished commit: dispatch what follows, or run the commands again. Returns how long
/// to pause before the next batch when the database is failing.
fn settle(
    inner: &Arc<Inner>,
    cache: &mut Lru,
    deferred: &mut VecDeque<Command>,
    done: std::result::Result<
        (Batch, usize, std::result::Result<(), StoreError>),
        tokio::task::JoinError,
    >,
) -> Option<Duration> {
    let (batch, processed, result) = match done {
        Ok(d) => d,
        Err(e) => {
            // The batch is lost with the task; its inputs come back from the database (running
            // cases, outbox, timers), and its callers get no answer.
            tracing::error!(error = %e, "a commit task failed");
            return None;
        }
    };
    match result {
        Ok(()) => {
            inner.commit_failures.store(0, Ordering::SeqCst);
            finish_batch(inner, cache, batch, processed);
            None
        }
        Err(e) => {
            let conflict = matches!(e, StoreError::Conflict { .. });
            let failures = if conflict {
                0
            } else {
                inner.commit_failures.fetch_add(1, Ordering::SeqCst) + 1
            };
            let give_up = failures >= MAX_COMMIT_FAILURES;
            if !conflict {
                tracing::error!(error = %e, failures, give_up, "commit failed");
            }
            // Nothing of the batch was written: forget the states built on it and run the
            // commands again from what the database holds, before any command that arrived
            // meanwhile for the same cases, each with its caller still waiting.
            let mut retries = Vec::new();
            for s in batch.staged {
                cache.remove(&s.case_id);
                match (s.retry, give_up) {
                    (Some(mut cmd), false) => {
                        cmd.set_reply(s.reply);
                        retries.push(cmd);
                    }
                    _ => {
                        if let Some(r) = s.reply {
                            let _ = r.send(Err(RuntimeError::Store(e.to_string())));
                        }
                    }
                }
            }
            inner
                .queued
                .fetch_sub(processed.saturating_sub(retries.len()), Ordering::SeqCst);
            // Effect results that will not be tried again are left to a recovery pass.
            let retried: HashSet<&String> = retries
                .iter()
                .filter_map(|c| match c {
                    Command::Input { cleanup, .. } => cleanup.effect.as_ref(),
                    _ => None,
                })
                .collect();
            release_effects(
                inner,
                batch
                    .writes
                    .iter()
                    .flat_map(|w| w.effects_done.iter())
                    .filter(|k| !retried.contains(k)),
            );
            for cmd in retries.into_iter().rev() {
                deferred.push_front(cmd);
            }
            (!conflict).then(|| Duration::from_millis(100u64 << failures.min(6)))
        }
    }
}

async fn load_case(inner: &Inner, cache: &mut Lru, case_id: &str) -> Result<Option<Cached>> {
    if let Some(c) = cache.take(case_id) {
        return Ok(Some(c));
    }
    rebuild(inner, case_id).await
}

/// A case's state rebuilt from its history, with the program it is pinned to.
async fn rebuild(inner: &Inner, case_id: &str) -> Result<Option<Cached>> {
    let Some(rec) = inner.store.case(case_id).await? else {
        return Ok(None);
    };
    let program = inner.programs.for_case(&rec).await?;
    let history = inner.store.history(case_id).await?;
    let mut events = Vec::with_capacity(history.len());
    for h in &history {
        let payload: Value = serde_json::from_str(&h.payload)
            .map_err(|e| RuntimeError::Corrupt(format!("case {case_id} event {}: {e}", h.seq)))?;
        let event = Event::from_parts(&h.kind, &payload)
            .map_err(|e| RuntimeError::Corrupt(format!("case {case_id} event {}: {e}", h.seq)))?;
        let at = DateTime::<Utc>::from_timestamp_millis(h.at).unwrap_or_default();
        events.push(RecordedEvent {
            seq: h.seq,
            at,
            event,
        });
    }
    let state = replay(&program, case_id, &events)
        .map_err(|d| RuntimeError::Corrupt(format!("case {case_id} does not replay: {d}")))?;
    let head = head_of(&rec);
    Ok(Some(Cached {
        state,
        program,
        head,
    }))
}

/// Hands out again the effects whose result was never recorded: connector effects of the cases
/// left `running` (rebuilt from their histories), messages between cases from the outbox.
/// At start every running case is looked at; later (`stale_before`), only the cases no
/// transition touched for a while: cases started by another process (`dossier start`) or whose
/// result was lost with a failed batch. Effects already in flight are not sent twice.
async fn recover(inner: &Arc<Inner>, stale_before: Option<i64>) -> Result<()> {
    let mut after: Option<String> = None;
    loop {
        let filter = CaseFilter {
            status: Some("running".into()),
            after_id: after.clone(),
            limit: 500,
            ..CaseFilter::default()
        };
        let page = inner.store.list_cases(&filter).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for rec in page {
            if stale_before.is_some_and(|t| rec.updated_at >= t) {
                continue;
            }
            match rebuild(inner, &rec.id).await {
                Ok(Some(c)) => {
                    for a in c.state.pending_effects() {
                        if let Some(mut job) = EffectJob::from_action(&rec.id, &a) {
                            job.redelivered = true;
                            dispatch_effect(inner, job);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!(case = %rec.id, error = %e, "cannot rebuild the case"),
            }
        }
    }
    let mut after: Option<String> = None;
    loop {
        let page = inner.store.pending_effects(after.as_deref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for e in page {
            if stale_before.is_none_or(|t| e.created_at < t) {
                dispatch_effect(inner, effect_job(&e));
            }
        }
    }
    Ok(())
}

fn head_of(rec: &CaseRecord) -> ChainHead {
    ChainHead {
        last_seq: rec.last_seq,
        last_hash: rec.last_hash.clone(),
        created_at: rec.created_at,
    }
}

async fn prepare(
    inner: &Inner,
    cache: &mut Lru,
    batch: &mut Batch,
    mut cmd: Command,
    now: DateTime<Utc>,
) {
    if let Some(key) = cmd.inbox().cloned() {
        // A request taken before answers with its record and does nothing again. (Another
        // node taking it meanwhile makes this batch fail on the inbox key; the command then
        // comes back here and finds the record.)
        match inner.store.inbox(&key.scope, &key.key).await {
            Ok(None) => {}
            Ok(Some(rec)) => {
                if let Some(r) = cmd.set_reply(None) {
                    let _ = r.send(Ok(Applied {
                        case_id: rec.case_id.clone(),
                        status: rec.status.clone(),
                        recorded: false,
                        duplicate: Some(rec),
                    }));
                }
                return;
            }
            Err(e) => {
                if let Some(r) = cmd.set_reply(None) {
                    let _ = r.send(Err(e.into()));
                }
                return;
            }
        }
    }
    match cmd {
        // Taken out of every batch by the sequencer.
        Command::Stop(tx) => {
            let _ = tx.send(());
        }
        Command::Start {
            program,
            case_id,
            input,
            business_key,
            inbox,
            audit,
            reply,
        } => {
            match CaseState::start(
                &program,
                &case_id,
                input.clone(),
                business_key.clone(),
                None,
                now,
            ) {
                Ok((state, transition)) => {
                    let retry = Command::Start {
                        program: program.clone(),
                        case_id: case_id.clone(),
                        input,
                        business_key,
                        inbox: inbox.clone(),
                        audit: audit.clone(),
                        reply: None,
                    };
                    let head = ChainHead::genesis(now.timestamp_millis());
                    stage(
                        inner,
                        batch,
                        Cached {
                            state,
                            program,
                            head,
                        },
                        transition,
                        Cleanup::default(),
                        Extras { inbox, audit },
                        reply,
                        Some(retry),
                        now,
                    )
                    .await;
                }
                Err(r) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(RuntimeError::Rejected(r)));
                    }
                }
            }
        }
        Command::Input {
            case_id,
            event,
            cleanup,
            inbox,
            guard,
            audit,
            reply,
        } => {
            if let Some(g) = &guard {
                match inner.store.task(&g.task).await {
                    Ok(Some(t))
                        if t.role == g.role
                            && t.assignee.as_deref().is_none_or(|a| a == g.holder) => {}
                    Ok(t) => {
                        if let Some(r) = reply {
                            let _ = r.send(Err(RuntimeError::TaskMoved {
                                task: g.task.clone(),
                                role: t.as_ref().map(|t| t.role.clone()).unwrap_or_default(),
                                assignee: t.and_then(|t| t.assignee),
                            }));
                        }
                        return;
                    }
                    Err(e) => {
                        if let Some(r) = reply {
                            let _ = r.send(Err(e.into()));
                        }
                        return;
                    }
                }
            }
            let cached = match load_case(inner, cache, &case_id).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    // No such case: a timer or message addressed to it is dropped for good.
                    if let Some(w) = cleanup_write(&cleanup) {
                        batch.writes.push(w);
                    }
                    if let Some(r) = reply {
                        let _ = r.send(Err(RuntimeError::UnknownCase(case_id.clone())));
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(case = %case_id, error = %e, "cannot load the case");
                    // Its result is not recorded: a recovery pass hands the effect out again.
                    release_effects(inner, cleanup.effect.iter());
                    if let Some(r) = reply {
                        let _ = r.send(Err(e));
                    }
                    return;
                }
            };
            let mut cached = cached;
            let retry = Command::Input {
                case_id: case_id.clone(),
                event: event.clone(),
                cleanup: cleanup.clone(),
                inbox: inbox.clone(),
                guard: guard.clone(),
                audit: audit.clone(),
                reply: None,
            };
            match cached.state.handle(&cached.program, event, now) {
                Ok(transition) => {
                    stage(
                        inner,
                        batch,
                        cached,
                        transition,
                        cleanup,
                        Extras { inbox, audit },
                        reply,
                        Some(retry),
                        now,
                    )
                    .await
                }
                Err(r) => {
                    cache.put(case_id, cached);
                    // A refused internal message (cancelling a child that already ended) must
                    // still leave the outbox, or it would be sent again at every start.
                    if let Some(w) = cleanup_write(&cleanup) {
                        batch.writes.push(w);
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(RuntimeError::Rejected(r)));
                    }
                }
            }
        }
    }
}

/// The rows an input's cleanup removes, when there are any.
fn cleanup_write(cleanup: &Cleanup) -> Option<CaseWrite> {
    if cleanup.effect.is_none() && cleanup.timer.is_none() {
        return None;
    }
    Some(CaseWrite {
        effects_done: cleanup.effect.iter().cloned().collect(),
        timers_done: cleanup.timer.iter().cloned().collect(),
        ..CaseWrite::default()
    })
}

#[allow(clippy::too_many_arguments)]
async fn stage(
    inner: &Inner,
    batch: &mut Batch,
    cached: Cached,
    transition: Transition,
    cleanup: Cleanup,
    extras: Extras,
    reply: Option<oneshot::Sender<Result<Applied>>>,
    retry: Option<Command>,
    now: DateTime<Utc>,
) {
    let case_id = cached.state.case_id.clone();
    let Extras { inbox, audit } = extras;
    batch.touched.insert(case_id.clone());
    if let Some(k) = &inbox {
        batch.touched.insert(k.token());
    }
    let recorded = !transition.events.is_empty();
    batch.steps += transition
        .events
        .iter()
        .filter(|e| matches!(e, Event::StepStarted { .. }))
        .count();
    let (mut write, head) = if recorded {
        let (w, _, head) = case_write(
            &cached.program,
            &cached.state,
            &transition,
            now,
            &cached.head,
        );
        (w, head)
    } else {
        (CaseWrite::default(), cached.head.clone())
    };
    if let Some(t) = cleanup.timer {
        if !write.timers_done.contains(&t) {
            write.timers_done.push(t);
        }
    }
    if let Some(k) = cleanup.effect {
        if !write.effects_done.contains(&k) {
            write.effects_done.push(k);
        }
    }
    let mut children = Vec::new();
    // Messages between a case and its sub-workflows are durable effects of our own: they sit in
    // the outbox in the same transaction and survive a crash.
    let mut internal = Vec::new();
    let internal_effect = |key: String, step: &str, connector: &str, request: Value| EffectRecord {
        key,
        case_id: case_id.clone(),
        step: step.to_string(),
        connector: connector.into(),
        operation: "notify".into(),
        request: request.to_string(),
        attempt: 1,
        timeout_ms: None,
        created_at: now.timestamp_millis(),
    };
    for a in &transition.actions {
        match a {
            Action::Finished { status, output } => {
                if let Some(parent) = &cached.state.parent {
                    internal.push(internal_effect(
                        format!("{case_id}:notify-parent"),
                        &parent.step,
                        PARENT_CONNECTOR,
                        json!({"parent": parent.case_id, "status": status.name(), "output": output}),
                    ));
                }
            }
            Action::CancelChild { child } => {
                internal.push(internal_effect(
                    format!("{child}:cancel"),
                    "",
                    CHILD_CONNECTOR,
                    json!({"child": child}),
                ));
            }
            Action::StartChild {
                child,
                workflow_hash,
                input,
                parent,
                ..
            } => {
                children.push((
                    child.clone(),
                    workflow_hash.clone(),
                    input.clone(),
                    parent.clone(),
                ));
            }
            _ => {}
        }
    }
    write.effects_new.extend(internal.iter().cloned());
    let status = cached.state.status_name().to_string();
    if let (Some(mut entry), true) = (audit, recorded) {
        if entry.target.is_empty() {
            entry.target = case_id.clone();
        }
        write.audit.push(entry);
    }
    if let (Some(k), true) = (inbox, recorded) {
        write.inbox.push(InboxRecord {
            scope: k.scope,
            key: k.key,
            request_hash: k.request_hash,
            case_id: case_id.clone(),
            status: status.clone(),
            created_at: now.timestamp_millis(),
        });
    }
    let has_write = write != CaseWrite::default();
    let write_index = batch.writes.len();
    if has_write {
        batch.writes.push(write);
    }
    let staged_index = batch.staged.len();
    batch.staged.push(Staged {
        case_id: case_id.clone(),
        cached: Some(Cached { head, ..cached }),
        actions: transition.actions,
        internal,
        reply,
        applied: Applied {
            case_id,
            status,
            recorded,
            duplicate: None,
        },
        retry,
    });
    for (child, hash, input, parent) in children {
        if let Some(notice) = start_child(inner, batch, child, hash, input, parent, now).await {
            // A child that cannot start tells its parent through the outbox, in the parent's
            // own transaction, like any child that ends.
            if has_write {
                batch.writes[write_index].effects_new.push(notice.clone());
            }
            batch.staged[staged_index].internal.push(notice);
        }
    }
}

/// The notice that tells a parent its sub-workflow case could not start, through the outbox.
fn cannot_start(child: &str, parent: &ParentRef, why: &str, now: DateTime<Utc>) -> EffectRecord {
    EffectRecord {
        key: format!("{child}:notify-parent"),
        case_id: child.to_string(),
        step: parent.step.clone(),
        connector: PARENT_CONNECTOR.into(),
        operation: "notify".into(),
        request: json!({
            "parent": parent.case_id, "status": "failed",
            "output": format!("the sub-workflow cannot start: {why}"),
        })
        .to_string(),
        attempt: 1,
        timeout_ms: None,
        created_at: now.timestamp_millis(),
    }
}

async fn start_child(
    inner: &Inner,
    batch: &mut Batch,
    child: String,
    workflow_hash: String,
    input: Value,
    parent: ParentRef,
    now: DateTime<Utc>,
) -> Option<EffectRecord> {
    batch.children_started += 1;
    if batch.children_started > MAX_CHILD_STARTS {
        let why = format!("more than {MAX_CHILD_STARTS} sub-workflow cases started at once (calls going round in a circle?)");
        return Some(cannot_start(&child, &parent, &why, now));
    }
    let started = match inner.programs.for_workflow_hash(&workflow_hash).await {
        Ok(program) => {
            match CaseState::start(&program, &child, input, None, Some(parent.clone()), now) {
                Ok((state, t)) => Ok((program, state, t)),
                Err(r) => Err(r.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    match started {
        Ok((program, state, transition)) => {
            let head = ChainHead::genesis(now.timestamp_millis());
            Box::pin(stage(
                inner,
                batch,
                Cached {
                    state,
                    program,
                    head,
                },
                transition,
                Cleanup::default(),
                Extras::default(),
                None,
                None,
                now,
            ))
            .await;
            None
        }
        Err(why) => Some(cannot_start(&child, &parent, &why, now)),
    }
}

/// After a commit (or for a batch with nothing to write): hand out effects, wake the timer
/// task, answer callers, keep running cases in the cache.
fn finish_batch(inner: &Arc<Inner>, cache: &mut Lru, batch: Batch, processed: usize) {
    release_effects(
        inner,
        batch.writes.iter().flat_map(|w| w.effects_done.iter()),
    );
    if !batch.writes.is_empty() {
        let m = &inner.metrics;
        m.commits.fetch_add(1, Ordering::Relaxed);
        m.steps.fetch_add(batch.steps as u64, Ordering::Relaxed);
        let recorded = batch.staged.iter().filter(|s| s.applied.recorded).count();
        m.inputs.fetch_add(recorded as u64, Ordering::Relaxed);
    }
    for s in batch.staged {
        for a in &s.actions {
            match a {
                a @ Action::PerformEffect { .. } => {
                    if let Some(job) = EffectJob::from_action(&s.case_id, a) {
                        dispatch_effect(inner, job);
                    }
                }
                Action::SetTimer { fire_at, .. } => {
                    let ms = fire_at.timestamp_millis();
                    if inner.next_timer_hint.fetch_min(ms, Ordering::SeqCst) > ms {
                        inner.timer_wake.notify_one();
                    }
                }
                Action::Finished { status, output } => {
                    let waiters = lock(&inner.waiters).remove(&s.case_id).unwrap_or_default();
                    for w in waiters {
                        let _ = w.send(Finished {
                            case_id: s.case_id.clone(),
                            status: *status,
                            output: output.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        for e in &s.internal {
            dispatch_effect(inner, effect_job(e));
        }
        if let Some(c) = s.cached {
            // Only cases with work in flight stay in memory: a case waiting for a timer, an event
            // or a person costs database rows, not memory, and is rebuilt from its history when
            // it wakes up.
            if c.state.status_name() == "running" {
                cache.put(s.case_id.clone(), c);
            } else {
                cache.remove(&s.case_id);
            }
        }
        if let Some(r) = s.reply {
            let _ = r.send(Ok(s.applied));
        }
    }
    inner.queued.fetch_sub(processed, Ordering::SeqCst);
}

// ---- effects ----

struct EffectJob {
    key: String,
    case_id: String,
    step: String,
    connector: String,
    operation: String,
    request: Value,
    attempt: u32,
    timeout_ms: Option<u64>,
    /// Handed out again by recovery: an earlier call may have been performed.
    redelivered: bool,
}

impl EffectJob {
    fn from_action(case_id: &str, a: &Action) -> Option<EffectJob> {
        match a {
            Action::PerformEffect {
                key,
                step,
                connector,
                operation,
                request,
                attempt,
                timeout_ms,
            } => Some(EffectJob {
                key: key.clone(),
                case_id: case_id.to_string(),
                step: step.clone(),
                connector: connector.clone(),
                operation: operation.clone(),
                request: request.clone(),
                attempt: *attempt,
                timeout_ms: *timeout_ms,
                redelivered: false,
            }),
            _ => None,
        }
    }
}

fn effect_job(e: &EffectRecord) -> EffectJob {
    EffectJob {
        key: e.key.clone(),
        case_id: e.case_id.clone(),
        step: e.step.clone(),
        connector: e.connector.clone(),
        operation: e.operation.clone(),
        request: serde_json::from_str(&e.request).unwrap_or(Value::Null),
        attempt: e.attempt.max(1) as u32,
        timeout_ms: e.timeout_ms.map(|t| t.max(0) as u64),
        redelivered: false,
    }
}

/// Queues an effect's outcome for its case, then lets go of the effect: in that order, so that
/// the work is counted in `queued` throughout.
fn hand_back(inner: &Inner, key: String, case_id: String, event: Event) {
    let cleanup = Cleanup {
        effect: Some(key.clone()),
        timer: None,
    };
    submit(
        inner,
        Command::Input {
            case_id,
            event,
            cleanup,
            inbox: None,
            guard: None,
            audit: None,
            reply: None,
        },
    );
    // The key stays in flight until its result is committed (`release_effects`): a recovery
    // pass that rebuilds the case in between must not hand the effect out again.
    inner.queued.fetch_sub(1, Ordering::SeqCst);
}

/// Effects whose results are now committed (or whose results will not be recorded by this
/// batch and must be found again by a recovery pass) stop counting as in flight.
fn release_effects<'a>(inner: &Inner, keys: impl Iterator<Item = &'a String>) {
    let mut in_flight = lock(&inner.effects_in_flight);
    for k in keys {
        in_flight.remove(k);
    }
}

fn dispatch_effect(inner: &Arc<Inner>, job: EffectJob) {
    if !inner.config.workers {
        return;
    }
    if !lock(&inner.effects_in_flight).insert(job.key.clone()) {
        return;
    }
    // An effect in flight counts as queued work until its outcome is queued (`hand_back`).
    inner.queued.fetch_add(1, Ordering::SeqCst);
    let inner = inner.clone();
    tokio::spawn(async move {
        let key = job.key.clone();
        if job.connector == CHILD_CONNECTOR {
            let child = job.request["child"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let event = Event::CancelRequested {
                reason: "the parent case ended".into(),
                by: "dossier".into(),
            };
            hand_back(&inner, key, child, event);
            return;
        }
        if job.connector == PARENT_CONNECTOR {
            let parent = job.request["parent"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let event = Event::ChildFinished {
                child: job.case_id.clone(),
                status: job.request["status"]
                    .as_str()
                    .unwrap_or("failed")
                    .to_string(),
                output: job.request["output"].clone(),
            };
            hand_back(&inner, key, parent, event);
            return;
        }
        let at = inner.clock.now().timestamp_millis();
        let source = crate::ids::Source::System;
        if let Some(event) = crate::numbering::internal_effect(
            &*inner.store,
            &source,
            &job.connector,
            &job.key,
            &job.case_id,
            at,
            &job.request,
        )
        .await
        {
            hand_back(&inner, key, job.case_id, event);
            return;
        }
        if job.connector == dossier_core::EVENTS_CONNECTOR {
            let event = emit_event(&inner, &job).await;
            hand_back(&inner, key, job.case_id, event);
            return;
        }
        let permit = inner.effect_slots.clone().acquire_owned().await;
        let req = EffectRequest {
            idempotency_key: job.key.clone(),
            case_id: job.case_id.clone(),
            step: job.step.clone(),
            operation: job.operation.clone(),
            request: job.request.clone(),
            attempt: job.attempt,
            redelivered: job.redelivered,
        };
        let started = std::time::Instant::now();
        let call = inner.connectors.call(&job.connector, &req);
        let result = match job.timeout_ms {
            Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), call).await {
                Ok(r) => r,
                Err(_) => Err(dossier_connectors::ConnectorError::Transient(format!(
                    "no answer within {ms} ms"
                ))),
            },
            None => call.await,
        };
        drop(permit);
        let outcome = match &result {
            Ok(_) => crate::metrics::CallOutcome::Ok,
            Err(e) if e.is_transient() => crate::metrics::CallOutcome::Transient,
            Err(_) => crate::metrics::CallOutcome::Permanent,
        };
        inner
            .metrics
            .effect_done(&job.connector, outcome, started.elapsed());
        let event = match result {
            Ok(v) => Event::EffectCompleted {
                key: key.clone(),
                result: v,
            },
            Err(e) => Event::EffectFailed {
                key: key.clone(),
                error: e.to_string(),
                retryable: e.is_transient(),
            },
        };
        hand_back(&inner, key, job.case_id, event);
    });
}

/// Delivers an `emit` step's event as `POST /api/v1/events` would, deduplicated by the
/// effect's key: a repeat after a restart reaches only the cases the first delivery missed.
async fn emit_event(inner: &Arc<Inner>, job: &EffectJob) -> Event {
    let name = job.request["event"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let payload = job.request["payload"].clone();
    let dedup = Dedup {
        scope: format!("emit:{}", job.key),
        request_hash: hex::encode(sha2::Sha256::digest(job.request.to_string().as_bytes())),
    };
    let engine = Engine {
        inner: inner.clone(),
    };
    match engine
        .deliver_event(&name, payload, Some(dedup), None)
        .await
    {
        Ok(d) => Event::EffectCompleted {
            key: job.key.clone(),
            result: json!({"reached": d.reached, "started": d.started}),
        },
        Err(e) => Event::EffectFailed {
            key: job.key.clone(),
            error: format!("cannot deliver the event `{name}`: {e}"),
            retryable: true,
        },
    }
}

// ---- timers ----

/// How often the timer task looks for work left behind (see [`recover`]), and how old a
/// `running` case must be to count as left behind.
const RECOVERY_EVERY: Duration = Duration::from_secs(5);

async fn timer_task(inner: Arc<Inner>) {
    let mut last_recovery = std::time::Instant::now();
    loop {
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        if last_recovery.elapsed() >= RECOVERY_EVERY {
            last_recovery = std::time::Instant::now();
            let stale = inner.clock.now().timestamp_millis() - RECOVERY_EVERY.as_millis() as i64;
            if let Err(e) = recover(&inner, Some(stale)).await {
                tracing::warn!(error = %e, "cannot look for work left behind");
            }
        }
        let now = inner.clock.now().timestamp_millis();
        inner.next_timer_hint.store(i64::MAX, Ordering::SeqCst);
        let mut pause = Duration::from_secs(1);
        match inner.store.due_timers(now, 1000).await {
            Ok(due) => {
                let mut fresh = 0;
                let mut lag = 0;
                {
                    let mut in_flight = lock(&inner.timers_in_flight);
                    // Timers handed over before and now gone from the table are done.
                    let due_ids: HashSet<&String> = due.iter().map(|t| &t.id).collect();
                    in_flight.retain(|id| due_ids.contains(id));
                    for t in &due {
                        if in_flight.insert(t.id.clone()) {
                            fresh += 1;
                            submit(
                                &inner,
                                Command::Input {
                                    case_id: t.case_id.clone(),
                                    event: Event::TimerFired {
                                        timer: t.id.clone(),
                                    },
                                    cleanup: Cleanup {
                                        effect: None,
                                        timer: Some(t.id.clone()),
                                    },
                                    inbox: None,
                                    guard: None,
                                    audit: None,
                                    reply: None,
                                },
                            );
                            lag = lag.max(now - t.fire_at);
                        }
                    }
                }
                inner
                    .metrics
                    .timers_fired
                    .fetch_add(fresh, std::sync::atomic::Ordering::Relaxed);
                inner.metrics.timer_lag_ms.store(lag, Ordering::Relaxed);
                if !due.is_empty() {
                    // Let the sequencer commit them before looking again.
                    pause = Duration::from_millis(if fresh > 0 { 5 } else { 20 });
                } else if let Ok(Some(next)) = inner.store.next_timer_at().await {
                    let wait = (next - inner.clock.now().timestamp_millis()).clamp(0, 1000);
                    pause = Duration::from_millis(wait as u64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read due timers"),
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = inner.timer_wake.notified() => {}
        }
    }
}

// ---- a small LRU of case states ----

struct Lru {
    capacity: usize,
    map: HashMap<String, (Cached, u64)>,
    order: BTreeMap<u64, String>,
    tick: u64,
}

impl Lru {
    fn new(capacity: usize) -> Lru {
        Lru {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    fn take(&mut self, id: &str) -> Option<Cached> {
        let (c, t) = self.map.remove(id)?;
        self.order.remove(&t);
        Some(c)
    }

    fn remove(&mut self, id: &str) {
        let _ = self.take(id);
    }

    fn put(&mut self, id: String, c: Cached) {
        self.remove(&id);
        self.tick += 1;
        self.order.insert(self.tick, id.clone());
        self.map.insert(id, (c, self.tick));
        while self.map.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
    }
}
