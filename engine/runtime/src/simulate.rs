//! Virtual time: runs cases in memory, skipping every wait, with connectors replaced by
//! recording doubles. A 90-day dunning ladder runs in milliseconds. Used by `dossier run` and
//! `dossier test`.
//!
//! The simulation drives the same state machine as the live engine; only time, storage and the
//! outside world are played. Every case's history is replayed at the end as a self-check.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dossier_connectors::{Connector, EffectRequest, Recorded, RecordingConnector};
use dossier_core::replay::{replay, RecordedEvent};
use dossier_core::{Action, CaseState, Event, ParentRef, Program, Transition};
use serde_json::{json, Value};

use crate::project::Project;
use crate::{Result, RuntimeError};

/// One line of a timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub case_id: String,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub event: Event,
}

pub struct SimCase {
    pub state: CaseState,
    pub program: Arc<Program>,
    pub history: Vec<RecordedEvent>,
    pub workflow: String,
}

/// An open task in the simulation.
#[derive(Debug, Clone)]
pub struct SimTask {
    pub id: String,
    pub case_id: String,
    pub step: String,
    pub role: String,
    pub title: String,
}

pub struct Simulation<'p> {
    project: &'p Project,
    pub now: DateTime<Utc>,
    pub cases: BTreeMap<String, SimCase>,
    /// Pending timers: (fire_at, timer id) to case id.
    timers: BTreeMap<(DateTime<Utc>, String), String>,
    waits: Vec<(String, String, String, String)>,
    pub tasks: BTreeMap<String, SimTask>,
    effects: VecDeque<(String, Action)>,
    /// `number` steps' series, `ledger` steps' accounts and `unique_id` steps' identifiers.
    store: dossier_store::memory::MemoryStore,
    connectors: BTreeMap<String, Arc<RecordingConnector>>,
    /// Every connector call in order, with the virtual time it happened.
    pub calls: Vec<(DateTime<Utc>, Recorded)>,
    pub timeline: Vec<TimelineEntry>,
    next_case: u32,
}

/// Sub-workflow cases started in one instant, at most (as the live engine's batches).
const MAX_CHILD_STARTS: usize = 1000;

/// Safety net against a workflow whose timers never stop (a loop with a wait).
const MAX_TIMER_FIRES: usize = 100_000;

impl<'p> Simulation<'p> {
    pub fn new(project: &'p Project, start: DateTime<Utc>) -> Simulation<'p> {
        Simulation {
            project,
            now: crate::to_millis(start),
            cases: BTreeMap::new(),
            timers: BTreeMap::new(),
            waits: Vec::new(),
            tasks: BTreeMap::new(),
            effects: VecDeque::new(),
            store: Default::default(),
            connectors: BTreeMap::new(),
            calls: Vec::new(),
            timeline: Vec::new(),
            next_case: 0,
        }
    }

    /// The recording double that plays connector `name`.
    pub fn connector(&mut self, name: &str) -> Arc<RecordingConnector> {
        if name == dossier_core::EVENTS_CONNECTOR {
            // `emit` steps: recorded like a connector call; by default the event reached no
            // case and started none (a test scripts other answers).
            return self
                .connectors
                .entry(name.to_string())
                .or_insert_with(|| {
                    let double = RecordingConnector::new(name, vec!["emit".to_string()]);
                    double.script(
                        "emit",
                        vec![dossier_connectors::Scripted::Ok(
                            json!({"reached": [], "started": []}),
                        )],
                    );
                    Arc::new(double)
                })
                .clone();
        }
        let ops = self
            .project
            .connectors
            .get(name)
            .cloned()
            .unwrap_or_default();
        self.connectors
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(RecordingConnector::new(name, ops)))
            .clone()
    }

    /// Sets an account's opening balance (a workflow test's `ledger:`), as a posting made before
    /// the case starts.
    pub async fn open_account(&self, account: &str, balance: dossier_store::Decimal) -> Result<()> {
        let req = dossier_store::LedgerRequest {
            key: format!("ouverture:{account}"),
            case_id: String::new(),
            at: self.now.timestamp_millis(),
            postings: vec![dossier_store::PostingRequest {
                account: account.to_string(),
                amount: balance,
                min: None,
                max: None,
            }],
        };
        dossier_store::Store::post_ledger(&self.store, &req).await?;
        Ok(())
    }

    /// Every account's balance, by name.
    pub async fn balances(&self) -> Result<BTreeMap<String, dossier_store::Decimal>> {
        Ok(dossier_store::Store::ledger_accounts(&self.store, "")
            .await?
            .into_iter()
            .map(|a| (a.account, a.balance))
            .collect())
    }

    /// Starts a case of a deployed workflow and runs it until it waits.
    pub async fn start(&mut self, workflow: &str, input: Value) -> Result<String> {
        let program = Arc::new(self.project.program(workflow)?);
        self.next_case += 1;
        let case_id = format!("case-{}", self.next_case);
        self.start_with(program, case_id.clone(), input, None)
            .await?;
        self.settle().await?;
        Ok(case_id)
    }

    async fn start_with(
        &mut self,
        program: Arc<Program>,
        case_id: String,
        input: Value,
        parent: Option<ParentRef>,
    ) -> Result<()> {
        let (state, t) = CaseState::start(&program, &case_id, input, None, parent, self.now)?;
        let workflow = program.workflow.id.clone();
        self.cases.insert(
            case_id.clone(),
            SimCase {
                state,
                program,
                history: Vec::new(),
                workflow,
            },
        );
        self.apply(&case_id, t);
        Ok(())
    }

    /// Delivers an input to a case and runs everything until the world is idle again.
    pub async fn input(&mut self, case_id: &str, event: Event) -> Result<bool> {
        let case = self
            .cases
            .get_mut(case_id)
            .ok_or_else(|| RuntimeError::UnknownCase(case_id.to_string()))?;
        let t = case.state.handle(&case.program, event, self.now)?;
        let recorded = !t.events.is_empty();
        self.apply(case_id, t);
        self.settle().await?;
        Ok(recorded)
    }

    /// Delivers a named event to every case waiting for it with matching keys.
    pub async fn send_event(&mut self, name: &str, payload: Value) -> Result<Vec<String>> {
        let mut reached = Vec::new();
        let mut matching: Vec<(String, String)> = self
            .waits
            .iter()
            .filter(|(_, _, ev, corr)| ev == name && correlation_matches(corr, &payload))
            .map(|(w, c, _, _)| (w.clone(), c.clone()))
            .collect();
        crate::delivery_order(&mut matching);
        for (wait, case_id) in matching {
            let event = Event::EventReceived {
                wait,
                event: name.to_string(),
                payload: payload.clone(),
            };
            if self.input(&case_id, event).await? {
                reached.push(case_id);
            }
        }
        Ok(reached)
    }

    /// Decides the open task of `step` in `case_id`.
    pub async fn decide(
        &mut self,
        case_id: &str,
        step: &str,
        outcome: &str,
        data: Value,
        by: &str,
    ) -> Result<()> {
        // The case's own task first, else one of a sub-workflow case it started (at any depth):
        // a test decides the certification task of the invoice its case called.
        let own = self
            .tasks
            .values()
            .find(|t| t.case_id == case_id && t.step == step);
        let found = own.or_else(|| {
            self.tasks
                .values()
                .find(|t| t.step == step && self.descends_from(&t.case_id, case_id))
        });
        let (task, owner) = found
            .map(|t| (t.id.clone(), t.case_id.clone()))
            .ok_or_else(|| {
                RuntimeError::UnknownTask(format!(
                    "no open task of step `{step}` in {case_id} or the cases it started"
                ))
            })?;
        let event = Event::TaskDecided {
            task,
            outcome: outcome.to_string(),
            data,
            by: by.to_string(),
        };
        self.input(&owner, event).await?;
        Ok(())
    }

    /// Whether `case` was started, directly or not, by `ancestor` (`call` steps).
    fn descends_from(&self, case: &str, ancestor: &str) -> bool {
        let mut current = case.to_string();
        for _ in 0..64 {
            let Some(parent) = self
                .cases
                .get(&current)
                .and_then(|c| c.state.parent.as_ref())
            else {
                return false;
            };
            if parent.case_id == ancestor {
                return true;
            }
            current = parent.case_id.clone();
        }
        false
    }

    /// Moves virtual time to `until`, firing every timer due before it in order.
    pub async fn advance_to(&mut self, until: DateTime<Utc>) -> Result<()> {
        self.run_to_end(until).await?;
        if until > self.now {
            self.now = until;
        }
        Ok(())
    }

    /// Fires timers in order until none is left or the next is past `limit`; virtual time
    /// stops at the last timer fired.
    pub async fn run_to_end(&mut self, limit: DateTime<Utc>) -> Result<()> {
        let mut fired = 0;
        while let Some(((at, _), _)) = self.timers.first_key_value() {
            if *at > limit {
                break;
            }
            fired += 1;
            if fired > MAX_TIMER_FIRES {
                return Err(RuntimeError::Simulation(format!(
                    "more than {MAX_TIMER_FIRES} timers fired: the workflow never ends"
                )));
            }
            self.fire_next().await?;
        }
        Ok(())
    }

    async fn fire_next(&mut self) -> Result<()> {
        let Some(((at, timer), case_id)) = self.timers.pop_first() else {
            return Ok(());
        };
        if at > self.now {
            self.now = at;
        }
        if self.cases.contains_key(&case_id) {
            self.input(&case_id, Event::TimerFired { timer }).await?;
        }
        Ok(())
    }

    /// Performs queued effects (and what they lead to) until nothing is left at this instant.
    async fn settle(&mut self) -> Result<()> {
        let mut started_children = 0;
        while let Some((case_id, action)) = self.effects.pop_front() {
            match action {
                Action::PerformEffect {
                    key,
                    step,
                    connector,
                    operation,
                    request,
                    attempt,
                    ..
                } => {
                    let at = self.now.timestamp_millis();
                    // Identifiers drawn from the key: a test gives the same one every run.
                    let source = crate::ids::Source::Derived(key.clone());
                    let internal = crate::numbering::internal_effect(
                        &self.store,
                        &source,
                        &connector,
                        &key,
                        &case_id,
                        at,
                        &request,
                    )
                    .await;
                    let event = if let Some(event) = internal {
                        event
                    } else {
                        let double = self.connector(&connector);
                        let effect = EffectRequest {
                            idempotency_key: key.clone(),
                            case_id: case_id.clone(),
                            step,
                            operation,
                            request,
                            attempt,
                            redelivered: false,
                        };
                        let result = double.call(&effect).await;
                        if let Some(last) = double.calls().last() {
                            self.calls.push((self.now, last.clone()));
                        }
                        match result {
                            Ok(v) => Event::EffectCompleted { key, result: v },
                            Err(e) => Event::EffectFailed {
                                key,
                                error: e.to_string(),
                                retryable: e.is_transient(),
                            },
                        }
                    };
                    let case = self
                        .cases
                        .get_mut(&case_id)
                        .ok_or_else(|| RuntimeError::UnknownCase(case_id.clone()))?;
                    let t = case.state.handle(&case.program, event, self.now)?;
                    self.apply(&case_id, t);
                }
                Action::StartChild {
                    child,
                    workflow_hash,
                    input,
                    parent,
                    workflow,
                } => {
                    started_children += 1;
                    if started_children > MAX_CHILD_STARTS {
                        return Err(RuntimeError::Simulation(format!(
                            "more than {MAX_CHILD_STARTS} sub-workflow cases started at once: calls going round in a circle?"
                        )));
                    }
                    let program = match self
                        .project
                        .workflows
                        .values()
                        .find(|w| w.hash == workflow_hash)
                    {
                        Some(_) => Arc::new(self.project.program(&workflow)?),
                        None => {
                            return Err(RuntimeError::Simulation(format!(
                                "sub-workflow `{workflow}` is not deployed"
                            )))
                        }
                    };
                    if let Err(e) = self
                        .start_with(program, child.clone(), input, Some(parent.clone()))
                        .await
                    {
                        let event = Event::ChildFinished {
                            child,
                            status: "failed".into(),
                            // Worded as the live engine words it.
                            output: Value::String(format!("the sub-workflow cannot start: {e}")),
                        };
                        let case = self
                            .cases
                            .get_mut(&parent.case_id)
                            .ok_or_else(|| RuntimeError::UnknownCase(parent.case_id.clone()))?;
                        let t = case.state.handle(&case.program, event, self.now)?;
                        self.apply(&parent.case_id, t);
                    }
                }
                Action::Finished { status, output } => {
                    let parent = self
                        .cases
                        .get(&case_id)
                        .and_then(|c| c.state.parent.clone());
                    if let Some(p) = parent {
                        let event = Event::ChildFinished {
                            child: case_id.clone(),
                            status: status.name().to_string(),
                            output,
                        };
                        if let Some(case) = self.cases.get_mut(&p.case_id) {
                            let t = case.state.handle(&case.program, event, self.now)?;
                            self.apply(&p.case_id, t);
                        }
                    }
                }
                Action::CancelChild { child } => {
                    let event = Event::CancelRequested {
                        reason: "the parent case ended".into(),
                        by: "dossier".into(),
                    };
                    if let Some(case) = self.cases.get_mut(&child) {
                        // A child that already ended refuses: nothing to cancel.
                        if let Ok(t) = case.state.handle(&case.program, event, self.now) {
                            self.apply(&child, t);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Records a transition's events and plays its actions.
    fn apply(&mut self, case_id: &str, t: Transition) {
        let Some(case) = self.cases.get_mut(case_id) else {
            return;
        };
        for e in t.events {
            let seq = case.history.len() as i64 + 1;
            self.timeline.push(TimelineEntry {
                case_id: case_id.to_string(),
                seq,
                at: self.now,
                event: e.clone(),
            });
            case.history.push(RecordedEvent {
                seq,
                at: self.now,
                event: e,
            });
        }
        for a in t.actions {
            match a {
                Action::SetTimer { timer, fire_at, .. } => {
                    self.timers.insert((fire_at, timer), case_id.to_string());
                }
                Action::CancelTimer { timer } => self.timers.retain(|(_, id), _| *id != timer),
                Action::AwaitEvent {
                    wait,
                    event,
                    correlation,
                } => self
                    .waits
                    .push((wait, case_id.to_string(), event, correlation)),
                Action::StopAwaiting { wait } => self.waits.retain(|(w, ..)| *w != wait),
                Action::CreateTask {
                    task,
                    step,
                    role,
                    title,
                    ..
                } => {
                    self.tasks.insert(
                        task.clone(),
                        SimTask {
                            id: task,
                            case_id: case_id.to_string(),
                            step,
                            role,
                            title,
                        },
                    );
                }
                Action::UpdateTask {
                    task, status, role, ..
                } => {
                    if status == "completed" || status == "cancelled" {
                        self.tasks.remove(&task);
                    } else if let (Some(role), Some(t)) = (role, self.tasks.get_mut(&task)) {
                        // Escalation moves the task to another role's inbox.
                        t.role = role;
                    }
                }
                Action::EffectSettled { .. } => {}
                other @ (Action::PerformEffect { .. }
                | Action::StartChild { .. }
                | Action::CancelChild { .. }
                | Action::Finished { .. }) => self.effects.push_back((case_id.to_string(), other)),
            }
        }
    }

    /// Replays every case's history against its program: the simulation's self-check.
    pub fn verify_replay(&self) -> std::result::Result<(), String> {
        for (id, c) in &self.cases {
            replay(&c.program, id, &c.history).map_err(|d| format!("case {id}: {d}"))?;
        }
        Ok(())
    }
}

/// Whether a payload carries every correlation value of a wait.
fn correlation_matches(correlation: &str, payload: &Value) -> bool {
    let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(correlation) else {
        return false;
    };
    keys.iter().all(|(k, v)| payload.get(k) == Some(v))
}
