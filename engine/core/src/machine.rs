//! The state machine of one case: an input event in, the decision events and the actions it
//! wants out. Nothing here reads a clock, draws a random number or does I/O; `now` comes with
//! every input and ids are derived from the case id and a counter. That is what lets replay
//! re-derive a history years later.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dossier_model::{parse_instant, IsoDuration, StepKind, END};
use dossier_rules::RuleContext;
use serde_json::{json, Map, Value};

use crate::program::{tera_message, ListId, NodeId, Program};
use crate::{check_fields, Event, FieldError, ParentRef, TimerPurpose};

/// Steps run in one transition before the case is declared stuck in a loop that never waits.
const MAX_STEPS_PER_TRANSITION: usize = 100_000;

/// What the runtime must do after a transition is committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Hand an effect to a connector worker, with its idempotency key.
    PerformEffect {
        key: String,
        step: String,
        connector: String,
        operation: String,
        request: Value,
        attempt: u32,
        timeout_ms: Option<u64>,
    },
    /// The effect's result is recorded: remove it from the outbox.
    EffectSettled {
        key: String,
    },
    SetTimer {
        timer: String,
        fire_at: DateTime<Utc>,
        purpose: TimerPurpose,
    },
    CancelTimer {
        timer: String,
    },
    /// Register a wait; `correlation` is canonical JSON of the key values.
    AwaitEvent {
        wait: String,
        event: String,
        correlation: String,
    },
    StopAwaiting {
        wait: String,
    },
    CreateTask {
        task: String,
        step: String,
        role: String,
        title: String,
        form: Value,
        due_at: Option<DateTime<Utc>>,
    },
    /// Change a task row: status (`open`, `completed`, `cancelled`), role (escalation), decision.
    UpdateTask {
        task: String,
        status: String,
        role: Option<String>,
        by: Option<String>,
        outcome: Option<String>,
        data: Option<Value>,
    },
    StartChild {
        child: String,
        workflow: String,
        workflow_hash: String,
        input: Value,
        parent: ParentRef,
    },
    /// Cancel a sub-workflow case this case started and no longer waits for.
    CancelChild {
        child: String,
    },
    /// The case ended; its parent (if any) must hear of it.
    Finished {
        status: CaseStatus,
        output: Value,
    },
}

/// Events and actions of one transition. `events[0]` is the input itself; an ignored input
/// (a stale timer, a duplicate result) gives an empty transition, recorded nowhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    pub events: Vec<Event>,
    pub actions: Vec<Action>,
}

/// Why an input was refused. Nothing was recorded; the caller should answer with a 4xx.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("the input does not fit the workflow's input schema: {}", list_fields(.0))]
    Input(Vec<FieldError>),
    #[error("the form data does not fit the task's fields: {}", list_fields(.0))]
    Form(Vec<FieldError>),
    #[error("`{outcome}` is not an outcome of this task (outcomes: {known})")]
    Outcome { outcome: String, known: String },
    #[error("this task needs a second person: {by} already decided it")]
    FourEyes { by: String },
    #[error("the task {0} is not open in this case")]
    UnknownTask(String),
    #[error("the case is already {0}")]
    Finished(String),
    #[error("the case is already being {0}")]
    Ending(String),
    #[error("this input cannot open a transition: {0}")]
    NotAnInput(&'static str),
    #[error("cannot start the case: {0}")]
    Start(String),
}

fn list_fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("`{}` {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl CaseStatus {
    pub fn name(self) -> &'static str {
        match self {
            CaseStatus::Running => "running",
            CaseStatus::Completed => "completed",
            CaseStatus::Failed => "failed",
            CaseStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum ThreadState {
    Ready,
    Waiting,
    Joining { remaining: usize },
}

#[derive(Debug, Clone, PartialEq)]
enum Role {
    Main,
    Branch,
    Iteration { index: usize },
    Compensation { node: NodeId },
}

#[derive(Debug, Clone)]
struct Thread {
    list: ListId,
    pc: usize,
    state: ThreadState,
    parent: Option<u32>,
    role: Role,
    /// Attempt of the current step; 0 when the step has not started.
    attempt: u32,
    /// Idempotency key of the current step's effect, kept across its retries.
    key: Option<String>,
    /// The list a for_each step iterates over.
    items: Vec<Value>,
}

#[derive(Debug, Clone)]
enum Pending {
    Effect {
        thread: u32,
        /// The action that performs it, kept so that a rebuilt state can hand it out again.
        action: Box<Action>,
    },
    /// A task's `on_reminder` / `on_overdue` call: its answer moves nothing.
    Notice {
        action: Box<Action>,
    },
    Timer {
        thread: u32,
        purpose: TimerPurpose,
        task: Option<String>,
        wait: Option<String>,
    },
    Wait {
        thread: u32,
        timer: Option<String>,
    },
    Task {
        thread: u32,
        timers: Vec<String>,
        /// The first decision of a four-eyes task: by, outcome, data.
        first: Option<(String, String, Value)>,
    },
    Child {
        thread: u32,
    },
    /// An `on_event` entry of the workflow, by position, with the business keys it listens
    /// for (computed when the case started).
    Interrupt {
        index: usize,
        correlation: BTreeMap<String, Value>,
    },
}

/// A connector call, before it gets its key and attempt.
struct EffectCall {
    connector: String,
    operation: String,
    request: Value,
    timeout_ms: Option<u64>,
}

/// Records the request of `call` (`effect_requested`) and hands it to the runtime; returns the
/// action, which the state keeps so that a rebuilt case can hand it out again.
fn emit_effect(
    tx: &mut Tx,
    step: &str,
    key: String,
    call: EffectCall,
    attempt: u32,
) -> Box<Action> {
    tx.emit(Event::EffectRequested {
        step: step.to_string(),
        key: key.clone(),
        connector: call.connector.clone(),
        operation: call.operation.clone(),
        request: call.request.clone(),
        attempt,
        timeout_ms: call.timeout_ms,
    });
    let action = Action::PerformEffect {
        key,
        step: step.to_string(),
        connector: call.connector,
        operation: call.operation,
        request: call.request,
        attempt,
        timeout_ms: call.timeout_ms,
    };
    tx.act(action.clone());
    Box::new(action)
}

/// Which of a task's notices.
#[derive(Debug, Clone, Copy)]
enum Notice {
    Reminder,
    Overdue,
}

impl Notice {
    fn name(self) -> &'static str {
        match self {
            Notice::Reminder => "on_reminder",
            Notice::Overdue => "on_overdue",
        }
    }
}

/// The connector name of the internal effect that allocates the next number of a series
/// (`number` steps); the runtime performs it against the store.
pub const NUMBERING_CONNECTOR: &str = "dossier.numbering";
/// The internal connector of `ledger` steps (postings applied by the runtime in the store).
pub const LEDGER_CONNECTOR: &str = "dossier.ledger";
/// The internal connector of `emit` steps (events delivered by the runtime to other cases).
pub const EVENTS_CONNECTOR: &str = "dossier.events";
/// The internal connector of `unique_id` steps (random identifiers made unique by the store).
pub const IDS_CONNECTOR: &str = "dossier.ids";
/// The most postings one `ledger` step may make (a `for_each` over a long list is a mistake).
const MAX_POSTINGS: usize = 1000;

#[derive(Debug, Clone)]
enum Ending {
    Failed(String),
    Cancelled(String),
}

/// The live state of one case. Rebuilt from the history by feeding its inputs back.
#[derive(Debug, Clone)]
pub struct CaseState {
    pub case_id: String,
    pub status: CaseStatus,
    pub vars: Map<String, Value>,
    pub business_key: Option<String>,
    pub parent: Option<ParentRef>,
    pub output: Value,
    threads: BTreeMap<u32, Thread>,
    next_thread: u32,
    counter: u64,
    pending: BTreeMap<String, Pending>,
    /// Completed steps that have compensations, with the variables as they were then.
    compensations: Vec<(NodeId, Map<String, Value>)>,
    ending: Option<Ending>,
}

/// The transition being built.
struct Tx<'p> {
    prog: &'p Program,
    now: DateTime<Utc>,
    events: Vec<Event>,
    actions: Vec<Action>,
    steps_run: usize,
}

impl<'p> Tx<'p> {
    fn emit(&mut self, e: Event) {
        self.events.push(e);
    }
    fn act(&mut self, a: Action) {
        self.actions.push(a);
    }
    fn ctx(&self) -> RuleContext {
        RuleContext::new(self.now)
    }
}

/// A failure of a step: its message and whether a retry may help.
struct StepError {
    message: String,
    retryable: bool,
}

impl StepError {
    fn fatal(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            retryable: false,
        }
    }
}

impl CaseState {
    /// Starts a case: checks the input, records `case_started` and runs until the first wait.
    pub fn start(
        prog: &Program,
        case_id: &str,
        input: Value,
        business_key: Option<String>,
        parent: Option<ParentRef>,
        now: DateTime<Utc>,
    ) -> Result<(CaseState, Transition), Rejection> {
        check_fields(&prog.workflow.input, &input).map_err(Rejection::Input)?;
        let mut state = CaseState {
            case_id: case_id.to_string(),
            status: CaseStatus::Running,
            vars: Map::new(),
            business_key: None,
            parent: parent.clone(),
            output: Value::Null,
            threads: BTreeMap::new(),
            next_thread: 0,
            counter: 0,
            pending: BTreeMap::new(),
            compensations: Vec::new(),
            ending: None,
        };
        // An optional field left out reads as nothing (`()` in Rhai): `input.remise` is then
        // safe to test without `"remise" in input`. The history keeps the input as it came.
        let mut filled = input.clone();
        if let Some(obj) = filled.as_object_mut() {
            for (name, spec) in &prog.workflow.input {
                if !spec.required && !obj.contains_key(name) {
                    obj.insert(name.clone(), Value::Null);
                }
            }
        }
        state.vars.insert("input".into(), filled);
        let mut tx = Tx {
            prog,
            now,
            events: Vec::new(),
            actions: Vec::new(),
            steps_run: 0,
        };
        let business_key = match business_key {
            Some(k) => Some(k),
            None => match &prog.workflow.business_key {
                Some(expr) => {
                    let v = state
                        .eval(&tx, &expr.0)
                        .map_err(|e| Rejection::Start(format!("business_key: {}", e.message)))?;
                    Some(match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    })
                }
                None => None,
            },
        };
        state.business_key = business_key.clone();
        tx.emit(Event::CaseStarted {
            workflow: prog.workflow.id.clone(),
            version: prog.workflow.version,
            workflow_hash: prog.hash.clone(),
            pins: prog.pins(),
            input,
            business_key,
            parent,
        });
        for (index, it) in prog.workflow.on_event.iter().enumerate() {
            let mut correlation = BTreeMap::new();
            for (k, e) in &it.correlate {
                let v = state.eval(&tx, &e.0).map_err(|e| {
                    Rejection::Start(format!("on_event `{}`: {k}: {}", it.event, e.message))
                })?;
                correlation.insert(k.clone(), v);
            }
            state.arm_interrupt(&mut tx, index, correlation);
        }
        state.spawn(0, None, Role::Main);
        state.run(&mut tx);
        Ok((
            state,
            Transition {
                events: tx.events,
                actions: tx.actions,
            },
        ))
    }

    /// Handles one input event (never `case_started`: see [`CaseState::start`]).
    pub fn handle(
        &mut self,
        prog: &Program,
        input: Event,
        now: DateTime<Utc>,
    ) -> Result<Transition, Rejection> {
        if let Event::ReceiptReceived { .. } = input {
            // A receipt is a fact about the outside world, kept in the history as it came,
            // even for a finished case; nothing in the state depends on it.
            return Ok(Transition {
                events: vec![input],
                actions: Vec::new(),
            });
        }
        if self.status != CaseStatus::Running {
            // A finished case takes no input: late results and timers are ignored; a decision
            // or a cancellation is refused.
            return match input {
                Event::CancelRequested { .. } => {
                    Err(Rejection::Finished(self.status.name().into()))
                }
                Event::TaskDecided { task, .. } => Err(Rejection::UnknownTask(task)),
                _ => Ok(Transition::default()),
            };
        }
        let mut tx = Tx {
            prog,
            now,
            events: Vec::new(),
            actions: Vec::new(),
            steps_run: 0,
        };
        match input {
            Event::EffectCompleted { ref key, .. } | Event::EffectFailed { ref key, .. }
                if matches!(self.pending.get(key), Some(Pending::Notice { .. })) =>
            {
                // A task's notice answered: recorded, nothing moves (a failure is not retried).
                let key = key.clone();
                self.pending.remove(&key);
                tx.emit(input);
                tx.act(Action::EffectSettled { key });
            }
            Event::EffectCompleted {
                ref key,
                ref result,
            } => {
                let Some(Pending::Effect { thread, .. }) = self.pending.get(key).cloned() else {
                    return Ok(Transition::default());
                };
                let (key, result) = (key.clone(), result.clone());
                self.pending.remove(&key);
                tx.emit(input);
                tx.act(Action::EffectSettled { key });
                let node = self.current_node(prog, thread);
                self.set_result(&mut tx, node, result);
                self.advance(&mut tx, thread, None);
            }
            Event::EffectFailed {
                ref key,
                ref error,
                retryable,
            } => {
                let Some(Pending::Effect { thread, .. }) = self.pending.get(key).cloned() else {
                    return Ok(Transition::default());
                };
                let (key, error) = (key.clone(), error.clone());
                self.pending.remove(&key);
                tx.emit(input);
                tx.act(Action::EffectSettled { key });
                self.step_failed(
                    &mut tx,
                    thread,
                    StepError {
                        message: error,
                        retryable,
                    },
                );
            }
            Event::TimerFired { ref timer } => {
                let Some(p @ Pending::Timer { .. }) = self.pending.get(timer).cloned() else {
                    return Ok(Transition::default());
                };
                let timer = timer.clone();
                tx.emit(input);
                self.timer_fired(&mut tx, &timer, p);
            }
            Event::EventReceived {
                ref wait,
                ref payload,
                ..
            } => {
                let (thread, timer) = match self.pending.get(wait).cloned() {
                    Some(Pending::Wait { thread, timer }) => (thread, timer),
                    Some(Pending::Interrupt { index, correlation }) => {
                        let (wait, payload) = (wait.clone(), payload.clone());
                        self.pending.remove(&wait);
                        tx.emit(input);
                        tx.act(Action::StopAwaiting { wait });
                        // The entry listens again (a second payment, a second dispute) until
                        // the case ends.
                        self.arm_interrupt(&mut tx, index, correlation);
                        // A guard that does not hold (or cannot be computed) leaves the case
                        // where it stands: the event stays recorded in its history.
                        let guard = prog.workflow.on_event[index].when.clone();
                        let applies = match guard {
                            Some(w) => {
                                let mut scope = self.scope(&tx);
                                scope.insert("payload".into(), payload.clone());
                                tx.prog.expr(&w.0).ok().and_then(|e| {
                                    tx.prog.rules.eval_expr(&e, &scope, &tx.ctx()).ok()
                                }) == Some(Value::Bool(true))
                            }
                            None => true,
                        };
                        if applies {
                            self.interrupt(&mut tx, index, payload);
                        }
                        self.run(&mut tx);
                        return Ok(Transition {
                            events: tx.events,
                            actions: tx.actions,
                        });
                    }
                    _ => return Ok(Transition::default()),
                };
                let (wait, payload) = (wait.clone(), payload.clone());
                self.pending.remove(&wait);
                tx.emit(input);
                tx.act(Action::StopAwaiting { wait });
                if let Some(t) = timer {
                    self.cancel_timer(&mut tx, &t);
                }
                let node = self.current_node(prog, thread);
                self.set_result(&mut tx, node, payload);
                self.advance(&mut tx, thread, None);
            }
            Event::TaskDecided {
                ref task,
                ref outcome,
                ref data,
                ref by,
            } => {
                let Some(Pending::Task {
                    thread,
                    timers,
                    first,
                }) = self.pending.get(task).cloned()
                else {
                    return Err(Rejection::UnknownTask(task.clone()));
                };
                let node_id = self.current_node(prog, thread);
                let node = prog.node(node_id);
                let spec = node
                    .step
                    .task
                    .as_ref()
                    .expect("a pending task belongs to a task step");
                let Some(target) = spec.outcomes.get(outcome).cloned() else {
                    return Err(Rejection::Outcome {
                        outcome: outcome.clone(),
                        known: spec.outcomes.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                };
                check_fields(&spec.fields, data).map_err(Rejection::Form)?;
                let (task, outcome, data, by) =
                    (task.clone(), outcome.clone(), data.clone(), by.clone());
                if spec.four_eyes {
                    match &first {
                        Some((f, _, _)) if *f == by => return Err(Rejection::FourEyes { by }),
                        Some((first_by, first_outcome, _)) if *first_outcome != outcome => {
                            // The second person does not confirm: both decisions are recorded and
                            // the task starts over, open to a new first decision.
                            tx.emit(input);
                            tx.emit(Event::TaskDecisionsDiffer {
                                task: task.clone(),
                                first_by: first_by.clone(),
                                first_outcome: first_outcome.clone(),
                                second_by: by,
                                second_outcome: outcome,
                            });
                            tx.act(Action::UpdateTask {
                                task: task.clone(),
                                status: "open".into(),
                                role: None,
                                by: None,
                                outcome: None,
                                data: None,
                            });
                            self.pending.insert(
                                task,
                                Pending::Task {
                                    thread,
                                    timers,
                                    first: None,
                                },
                            );
                            return Ok(Transition {
                                events: tx.events,
                                actions: tx.actions,
                            });
                        }
                        Some(_) => {}
                        None => {
                            tx.emit(input);
                            tx.emit(Event::TaskAwaitingSecondDecision {
                                task: task.clone(),
                                first_by: by.clone(),
                            });
                            tx.act(Action::UpdateTask {
                                task: task.clone(),
                                status: "awaiting_second".into(),
                                role: None,
                                by: Some(by.clone()),
                                outcome: Some(outcome.clone()),
                                data: Some(data.clone()),
                            });
                            self.pending.insert(
                                task,
                                Pending::Task {
                                    thread,
                                    timers,
                                    first: Some((by, outcome, data)),
                                },
                            );
                            return Ok(Transition {
                                events: tx.events,
                                actions: tx.actions,
                            });
                        }
                    }
                }
                self.pending.remove(&task);
                tx.emit(input);
                for t in &timers {
                    self.cancel_timer(&mut tx, t);
                }
                tx.emit(Event::TaskCompleted {
                    task: task.clone(),
                    outcome: outcome.clone(),
                    by: by.clone(),
                });
                tx.act(Action::UpdateTask {
                    task,
                    status: "completed".into(),
                    role: None,
                    by: Some(by.clone()),
                    outcome: Some(outcome.clone()),
                    data: Some(data.clone()),
                });
                let mut decision = json!({"outcome": outcome, "data": data, "by": by});
                if let Some((f, _, _)) = first {
                    decision["first_by"] = Value::String(f);
                }
                self.set_result(&mut tx, node_id, decision);
                self.advance(&mut tx, thread, Some(&target));
            }
            Event::ChildFinished {
                ref child,
                ref status,
                ref output,
            } => {
                let Some(Pending::Child { thread }) = self.pending.get(child).cloned() else {
                    return Ok(Transition::default());
                };
                let (child, status, output) = (child.clone(), status.clone(), output.clone());
                self.pending.remove(&child);
                tx.emit(input);
                if status == "completed" {
                    let node = self.current_node(prog, thread);
                    self.set_result(&mut tx, node, output);
                    self.advance(&mut tx, thread, None);
                } else {
                    let why = output
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| output.to_string());
                    self.step_failed(
                        &mut tx,
                        thread,
                        StepError::fatal(format!(
                            "the sub-workflow case {child} ended {status}: {why}"
                        )),
                    );
                }
            }
            Event::CancelRequested { ref reason, .. } => {
                if self.status != CaseStatus::Running {
                    return Err(Rejection::Finished(self.status.name().into()));
                }
                if let Some(e) = &self.ending {
                    return Err(Rejection::Ending(match e {
                        Ending::Failed(_) => "failed".into(),
                        Ending::Cancelled(_) => "cancelled".into(),
                    }));
                }
                let reason = reason.clone();
                tx.emit(input);
                self.end_with(&mut tx, Ending::Cancelled(reason));
            }
            Event::CaseStarted { .. } => {
                return Err(Rejection::NotAnInput(
                    "case_started opens a case: use start",
                ))
            }
            other => return Err(Rejection::NotAnInput(other.kind())),
        }
        self.run(&mut tx);
        Ok(Transition {
            events: tx.events,
            actions: tx.actions,
        })
    }

    /// `running` with work in flight, `waiting` when only timers, events, tasks or children can
    /// move the case, else the final status.
    pub fn status_name(&self) -> &'static str {
        if self.status != CaseStatus::Running {
            return self.status.name();
        }
        let busy = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Effect { .. } | Pending::Notice { .. }))
            || self.threads.values().any(|t| t.state == ThreadState::Ready);
        if busy {
            "running"
        } else {
            "waiting"
        }
    }

    /// The effects requested and not yet answered (`Action::PerformEffect`s), by key. After
    /// a restart, the runtime hands these out again with their idempotency keys.
    pub fn pending_effects(&self) -> Vec<Action> {
        self.pending
            .values()
            .filter_map(|p| match p {
                Pending::Effect { action, .. } | Pending::Notice { action } => {
                    Some((**action).clone())
                }
                _ => None,
            })
            .collect()
    }

    /// The step the case is at (the first waiting thread's), for listings.
    pub fn current_step(&self, prog: &Program) -> Option<String> {
        self.threads
            .values()
            .filter(|t| t.state == ThreadState::Waiting)
            .chain(self.threads.values())
            .find_map(|t| {
                prog.list(t.list)
                    .nodes
                    .get(t.pc)
                    .map(|n| prog.node(*n).step.id.clone())
            })
    }

    // ---- running threads ----

    fn spawn(&mut self, list: ListId, parent: Option<u32>, role: Role) -> u32 {
        let id = self.next_thread;
        self.next_thread += 1;
        self.threads.insert(
            id,
            Thread {
                list,
                pc: 0,
                state: ThreadState::Ready,
                parent,
                role,
                attempt: 0,
                key: None,
                items: Vec::new(),
            },
        );
        id
    }

    fn run(&mut self, tx: &mut Tx) {
        while self.status == CaseStatus::Running {
            let Some(tid) = self
                .threads
                .iter()
                .find(|(_, t)| t.state == ThreadState::Ready)
                .map(|(id, _)| *id)
            else {
                break;
            };
            tx.steps_run += 1;
            if tx.steps_run > MAX_STEPS_PER_TRANSITION {
                let msg = format!(
                    "the case ran {MAX_STEPS_PER_TRANSITION} steps without waiting: a loop of jumps never reaches a wait or an end"
                );
                if self.ending.is_some() {
                    // Even compensation loops: stop everything.
                    self.stop_work(tx, false);
                    self.compensations.clear();
                    self.finish(tx);
                } else {
                    self.end_with(tx, Ending::Failed(msg));
                }
                continue;
            }
            self.exec(tx, tid);
        }
    }

    fn current_node(&self, prog: &Program, tid: u32) -> NodeId {
        let t = &self.threads[&tid];
        prog.list(t.list).nodes[t.pc]
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{}:{prefix}{}", self.case_id, self.counter)
    }

    /// A deterministic UUID for ids shown outside (tasks, child cases).
    fn next_uuid(&mut self) -> String {
        self.counter += 1;
        let name = format!("{}:{}", self.case_id, self.counter);
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
    }

    fn exec(&mut self, tx: &mut Tx, tid: u32) {
        let prog = tx.prog;
        let (list, pc, attempt) = {
            let t = &self.threads[&tid];
            (t.list, t.pc, t.attempt)
        };
        let Some(&node_id) = prog.list(list).nodes.get(pc) else {
            self.thread_done(tx, tid);
            return;
        };
        let node = prog.node(node_id);
        let step = &node.step;
        if attempt == 0 {
            tx.emit(Event::StepStarted {
                step: step.id.clone(),
            });
            if let Some(t) = self.threads.get_mut(&tid) {
                t.attempt = 1;
            }
        }
        let result = match node.kind {
            StepKind::Rule => self.exec_rule(tx, tid, node_id),
            StepKind::Assign => self.exec_assign(tx, tid, node_id),
            StepKind::Branch => self.exec_branch(tx, tid, node_id),
            StepKind::Wait => self.exec_wait(tx, tid, node_id),
            StepKind::WaitEvent => self.exec_wait_event(tx, tid, node_id),
            StepKind::Task => self.exec_task(tx, tid, node_id),
            StepKind::Action => self.exec_action(tx, tid, node_id),
            StepKind::Parallel => {
                let n = node.children.len();
                for &child in &node.children {
                    self.spawn(child, Some(tid), Role::Branch);
                }
                if n == 0 {
                    self.advance(tx, tid, None);
                } else if let Some(t) = self.threads.get_mut(&tid) {
                    t.state = ThreadState::Joining { remaining: n };
                }
                Ok(())
            }
            StepKind::ForEach => self.exec_for_each(tx, tid, node_id),
            StepKind::Call => self.exec_call(tx, tid, node_id),
            StepKind::Render => self.exec_render(tx, tid, node_id),
            StepKind::Number => self.exec_number(tx, tid, node_id),
            StepKind::Ledger => self.exec_ledger(tx, tid, node_id),
            StepKind::Emit => self.exec_emit(tx, tid, node_id),
            StepKind::UniqueId => self.exec_unique_id(tx, tid, node_id),
            StepKind::Fail => {
                let msg = step.fail.clone().unwrap_or_default();
                let msg = self.render_inline(tx, &msg).unwrap_or(msg);
                Err(StepError::fatal(msg))
            }
        };
        if let Err(e) = result {
            self.step_failed(tx, tid, e);
        }
    }

    fn thread_done(&mut self, tx: &mut Tx, tid: u32) {
        let Some(t) = self.threads.remove(&tid) else {
            return;
        };
        match t.role {
            Role::Main => {
                if self.ending.is_none() {
                    self.complete(tx);
                }
            }
            Role::Branch => {
                let Some(parent) = t.parent else { return };
                let done = match self.threads.get_mut(&parent) {
                    Some(p) => match &mut p.state {
                        ThreadState::Joining { remaining } => {
                            *remaining -= 1;
                            *remaining == 0
                        }
                        _ => false,
                    },
                    None => false,
                };
                if done {
                    self.advance(tx, parent, None);
                }
            }
            Role::Iteration { index } => {
                let Some(parent) = t.parent else { return };
                let Some(p) = self.threads.get(&parent) else {
                    return;
                };
                let node_id = tx.prog.list(p.list).nodes[p.pc];
                if index + 1 < p.items.len() {
                    self.start_iteration(tx, parent, node_id, index + 1);
                } else {
                    self.advance(tx, parent, None);
                }
            }
            Role::Compensation { node } => {
                tx.emit(Event::Compensated {
                    step: tx.prog.node(node).step.id.clone(),
                });
                self.next_compensation(tx);
            }
        }
    }

    /// Completes the current step of a thread and moves it: to `target` when given, else to the
    /// step's `next`, else to the following step.
    fn advance(&mut self, tx: &mut Tx, tid: u32, target: Option<&str>) {
        let prog = tx.prog;
        let Some(t) = self.threads.get(&tid) else {
            return;
        };
        let (list, pc, is_comp) = (t.list, t.pc, matches!(t.role, Role::Compensation { .. }));
        let node_id = prog.list(list).nodes[pc];
        let node = prog.node(node_id);
        tx.emit(Event::StepCompleted {
            step: node.step.id.clone(),
        });
        if node.compensation.is_some() && !is_comp && self.ending.is_none() {
            self.compensations.push((node_id, self.vars.clone()));
        }
        let target = target
            .map(str::to_string)
            .or_else(|| node.step.next.clone());
        let new_pc = match target {
            Some(t) => match prog.jump(list, &t) {
                Ok(p) => p,
                Err(e) => {
                    self.end_with(tx, Ending::Failed(e.to_string()));
                    return;
                }
            },
            None => pc + 1,
        };
        if let Some(t) = self.threads.get_mut(&tid) {
            t.pc = new_pc;
            t.attempt = 0;
            t.key = None;
            t.items.clear();
            t.state = ThreadState::Ready;
        }
    }

    fn step_failed(&mut self, tx: &mut Tx, tid: u32, err: StepError) {
        let prog = tx.prog;
        let Some(t) = self.threads.get(&tid) else {
            return;
        };
        let (list, pc, attempt, role) = (t.list, t.pc, t.attempt, t.role.clone());
        let node = prog.node(prog.list(list).nodes[pc]);
        let step = &node.step;
        let retry = step.retry.as_ref();
        let will_retry = err.retryable && retry.is_some_and(|r| attempt < r.max_attempts);
        tx.emit(Event::StepFailed {
            step: step.id.clone(),
            error: err.message.clone(),
            attempt,
            will_retry,
        });
        if let (true, Some(r)) = (will_retry, retry) {
            let base = IsoDuration::parse(&r.backoff)
                .map(|d| d.approx_seconds())
                .unwrap_or(10);
            let cap = IsoDuration::parse(&r.max_backoff)
                .map(|d| d.approx_seconds())
                .unwrap_or(3600);
            let factor = 1u64
                .checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u64::MAX);
            let delay = base.saturating_mul(factor).min(cap);
            let fire_at = IsoDuration::from_seconds(delay)
                .after(tx.now)
                .unwrap_or(tx.now);
            let timer = self.set_timer(
                tx,
                &step.id.clone(),
                fire_at,
                TimerPurpose::Retry,
                None,
                None,
            );
            self.wait_on_timer(&timer, tid);
            self.set_waiting(tid);
            return;
        }
        if let Some(target) = step.on_error.clone() {
            let error = json!({"step": step.id, "message": err.message});
            self.vars.insert("error".into(), error.clone());
            tx.emit(Event::VariablesAssigned {
                step: step.id.clone(),
                values: BTreeMap::from([("error".to_string(), error)]),
            });
            match prog.jump(list, &target) {
                Ok(p) => {
                    if let Some(t) = self.threads.get_mut(&tid) {
                        t.pc = p;
                        t.attempt = 0;
                        t.key = None;
                        t.state = ThreadState::Ready;
                    }
                }
                Err(e) => self.end_with(tx, Ending::Failed(e.to_string())),
            }
            return;
        }
        if self.ending.is_some() && !matches!(role, Role::Compensation { .. }) {
            // A step nested in a compensation (a branch, an iteration) failed: that compensation
            // is abandoned, recorded, and the next one runs; the case keeps its first ending.
            self.threads.clear();
            tx.emit(Event::CompensationFailed {
                step: step.id.clone(),
                error: err.message,
            });
            self.next_compensation(tx);
            return;
        }
        if let Role::Compensation { node } = role {
            // A compensation that fails is recorded and the others still run.
            self.threads.remove(&tid);
            tx.emit(Event::CompensationFailed {
                step: prog.node(node).step.id.clone(),
                error: err.message,
            });
            self.next_compensation(tx);
            return;
        }
        self.end_with(
            tx,
            Ending::Failed(format!("step `{}` failed: {}", step.id, err.message)),
        );
    }

    /// An interrupting event arrived: everything in progress stops (without compensation: the
    /// business goes on), and the case continues at the entry's step of the top list.
    /// Listens for the workflow's `on_event` entry `index` with these business keys.
    fn arm_interrupt(&mut self, tx: &mut Tx, index: usize, correlation: BTreeMap<String, Value>) {
        let event = tx.prog.workflow.on_event[index].event.clone();
        let wait = self.next_id("w");
        tx.emit(Event::EventAwaited {
            step: format!("on_event:{event}"),
            wait: wait.clone(),
            event: event.clone(),
            correlation: correlation.clone(),
        });
        tx.act(Action::AwaitEvent {
            wait: wait.clone(),
            event,
            correlation: correlation_text(&correlation),
        });
        self.pending
            .insert(wait, Pending::Interrupt { index, correlation });
    }

    fn interrupt(&mut self, tx: &mut Tx, index: usize, payload: Value) {
        let it = &tx.prog.workflow.on_event[index];
        let (event, goto, result) = (it.event.clone(), it.goto.clone(), it.result.clone());
        self.stop_work(tx, true);
        tx.emit(Event::CaseInterrupted {
            event,
            goto: goto.clone(),
        });
        if let Some(name) = result {
            self.vars.insert(name, payload);
        }
        match tx.prog.jump(0, &goto) {
            Ok(pc) => {
                let main = self.spawn(0, None, Role::Main);
                if let Some(t) = self.threads.get_mut(&main) {
                    t.pc = pc;
                }
            }
            Err(e) => self.end_with(tx, Ending::Failed(e.to_string())),
        }
    }

    /// Stops every thread and drops every pending wait, timer, task and sub-workflow (the
    /// interrupting events too, unless `keep_interrupts`).
    fn stop_work(&mut self, tx: &mut Tx, keep_interrupts: bool) {
        let pending = std::mem::take(&mut self.pending);
        for (id, p) in pending {
            match p {
                p @ Pending::Interrupt { .. } if keep_interrupts => {
                    self.pending.insert(id, p);
                }
                Pending::Interrupt { .. } => tx.act(Action::StopAwaiting { wait: id }),
                Pending::Timer { .. } => {
                    tx.emit(Event::TimerCancelled { timer: id.clone() });
                    tx.act(Action::CancelTimer { timer: id });
                }
                Pending::Wait { .. } => tx.act(Action::StopAwaiting { wait: id }),
                Pending::Task { .. } => {
                    tx.emit(Event::TaskCancelled { task: id.clone() });
                    tx.act(Action::UpdateTask {
                        task: id,
                        status: "cancelled".into(),
                        role: None,
                        by: None,
                        outcome: None,
                        data: None,
                    });
                }
                // An effect already handed to a worker cannot be recalled; its result is ignored.
                Pending::Effect { .. } | Pending::Notice { .. } => {}
                // A sub-workflow case still running is cancelled too (its own compensations run).
                Pending::Child { .. } => tx.act(Action::CancelChild { child: id }),
            }
        }
        self.threads.clear();
    }

    /// Stops every thread and pending wait, then runs the compensations before the final status.
    fn end_with(&mut self, tx: &mut Tx, ending: Ending) {
        self.stop_work(tx, false);
        let reason = match &ending {
            Ending::Failed(e) => e.clone(),
            Ending::Cancelled(r) => format!("cancelled: {r}"),
        };
        self.ending = Some(ending);
        if !self.compensations.is_empty() {
            tx.emit(Event::CompensationStarted { reason });
        }
        self.next_compensation(tx);
    }

    fn next_compensation(&mut self, tx: &mut Tx) {
        match self.compensations.pop() {
            Some((node, snapshot)) => {
                // A compensation sees the variables as they were when its step completed (the
                // room booked in that iteration, not the last one), over the current ones.
                self.vars.extend(snapshot);
                let list = tx
                    .prog
                    .node(node)
                    .compensation
                    .expect("only steps with compensation are stacked");
                self.spawn(list, None, Role::Compensation { node });
            }
            None => self.finish(tx),
        }
    }

    fn finish(&mut self, tx: &mut Tx) {
        match self.ending.clone() {
            Some(Ending::Failed(error)) => {
                self.status = CaseStatus::Failed;
                self.output = Value::String(error.clone());
                tx.emit(Event::CaseFailed {
                    error: error.clone(),
                });
                tx.act(Action::Finished {
                    status: CaseStatus::Failed,
                    output: Value::String(error),
                });
            }
            Some(Ending::Cancelled(reason)) => {
                self.status = CaseStatus::Cancelled;
                self.output = Value::String(reason.clone());
                tx.emit(Event::CaseCancelled {
                    reason: reason.clone(),
                });
                tx.act(Action::Finished {
                    status: CaseStatus::Cancelled,
                    output: Value::String(reason),
                });
            }
            None => {}
        }
    }

    fn complete(&mut self, tx: &mut Tx) {
        let mut output = Map::new();
        for (name, expr) in &tx.prog.workflow.output {
            match self.eval(tx, &expr.0) {
                Ok(v) => {
                    output.insert(name.clone(), v);
                }
                Err(e) => {
                    self.end_with(
                        tx,
                        Ending::Failed(format!("output `{name}`: {}", e.message)),
                    );
                    return;
                }
            }
        }
        // The case is over: the events that could have interrupted it are no longer awaited.
        self.stop_work(tx, false);
        let output = Value::Object(output);
        self.status = CaseStatus::Completed;
        self.output = output.clone();
        tx.emit(Event::CaseCompleted {
            output: output.clone(),
        });
        tx.act(Action::Finished {
            status: CaseStatus::Completed,
            output,
        });
    }

    // ---- expressions ----

    /// A variable every expression and template can read besides the case's own: `params`,
    /// `dossier` (the case: id, business key, workflow; `case` in templates too, as `case` is a
    /// reserved word of Rhai), `now`, `today`.
    fn builtin(&self, tx: &Tx, name: &str) -> Option<Value> {
        match name {
            "params" => Some(tx.prog.params.clone()),
            "dossier" | "case" => Some(json!({
                "id": self.case_id, "business_key": self.business_key, "workflow": tx.prog.workflow.id,
            })),
            "now" => Some(Value::String(tx.ctx().now_text())),
            "today" => Some(Value::String(tx.ctx().today_text())),
            _ => None,
        }
    }

    /// Every variable: the case's variables and the built-in ones.
    fn scope(&self, tx: &Tx) -> Map<String, Value> {
        let mut m = self.vars.clone();
        for name in ["params", "dossier", "case", "now", "today"] {
            if let Some(v) = self.builtin(tx, name) {
                m.insert(name.to_string(), v);
            }
        }
        m
    }

    /// The variables one expression reads. Cloning only these keeps an expression's cost
    /// independent of the size of the case; when one is missing the whole scope is passed so
    /// that the error can suggest a close name.
    fn expr_scope(&self, tx: &Tx, expr: &dossier_rules::Expr) -> Map<String, Value> {
        let mut m = Map::new();
        for name in dossier_rules::expr_variables(expr) {
            match self
                .vars
                .get(&name)
                .cloned()
                .or_else(|| self.builtin(tx, &name))
            {
                Some(v) => {
                    m.insert(name, v);
                }
                None => return self.scope(tx),
            }
        }
        m
    }

    /// The compiled expression and the variables it reads.
    fn prepared(
        &self,
        tx: &Tx,
        source: &str,
    ) -> Result<(Arc<dossier_rules::Expr>, Map<String, Value>), StepError> {
        let expr = tx
            .prog
            .expr(source)
            .map_err(|e| StepError::fatal(e.to_string()))?;
        let scope = self.expr_scope(tx, &expr);
        Ok((expr, scope))
    }

    fn eval(&self, tx: &Tx, source: &str) -> Result<Value, StepError> {
        let (expr, scope) = self.prepared(tx, source)?;
        tx.prog
            .rules
            .eval_expr(&expr, &scope, &tx.ctx())
            .map_err(|e| StepError::fatal(e.to_string()))
    }

    fn eval_bool(&self, tx: &Tx, source: &str) -> Result<bool, StepError> {
        let (expr, scope) = self.prepared(tx, source)?;
        tx.prog
            .rules
            .eval_bool(&expr, &scope, &tx.ctx())
            .map_err(|e| StepError::fatal(e.to_string()))
    }

    fn tera_context(&self, tx: &Tx) -> tera::Context {
        tera::Context::from_serialize(exact_decimals(Value::Object(self.scope(tx))))
            .unwrap_or_default()
    }

    fn render_inline(&self, tx: &Tx, text: &str) -> Result<String, StepError> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_string());
        }
        tera::Tera::one_off(text, &self.tera_context(tx), false)
            .map_err(|e| StepError::fatal(format!("cannot render `{text}`: {}", tera_message(&e))))
    }

    fn render_template(&self, tx: &Tx, path: &str) -> Result<(String, String), StepError> {
        let hash = tx.prog.template_hashes.get(path).cloned().ok_or_else(|| {
            StepError::fatal(format!(
                "the template `{path}` is not among the case's pinned templates"
            ))
        })?;
        let text = tx
            .prog
            .tera
            .render(path, &self.tera_context(tx))
            .map_err(|e| {
                StepError::fatal(format!(
                    "cannot render the template `{path}`: {}",
                    tera_message(&e)
                ))
            })?;
        Ok((text, hash))
    }

    /// A duration or an instant: an ISO 8601 literal, or an expression giving one.
    fn instant_after(&self, tx: &Tx, text: &str) -> Result<DateTime<Utc>, StepError> {
        let value = if text.starts_with('P') {
            text.to_string()
        } else {
            match self.eval(tx, text)? {
                Value::String(s) => s,
                other => {
                    return Err(StepError::fatal(format!(
                        "`{text}` gave {other}, not a duration or a date"
                    )))
                }
            }
        };
        if value.starts_with('P') {
            let d = IsoDuration::parse(&value).map_err(|e| StepError::fatal(e.to_string()))?;
            d.after(tx.now).ok_or_else(|| {
                StepError::fatal(format!("`{value}` leads past the end of the calendar"))
            })
        } else {
            parse_instant(&value).ok_or_else(|| {
                StepError::fatal(format!(
                    "`{value}` is neither an ISO 8601 duration nor a date"
                ))
            })
        }
    }

    fn set_result(&mut self, tx: &mut Tx, node: NodeId, value: Value) {
        if let Some(name) = &tx.prog.node(node).step.result {
            self.vars.insert(name.clone(), value);
        }
    }

    fn set_timer(
        &mut self,
        tx: &mut Tx,
        step: &str,
        fire_at: DateTime<Utc>,
        purpose: TimerPurpose,
        task: Option<String>,
        wait: Option<String>,
    ) -> String {
        let timer = self.next_id("t");
        tx.emit(Event::TimerSet {
            timer: timer.clone(),
            step: step.to_string(),
            fire_at,
            purpose,
        });
        tx.act(Action::SetTimer {
            timer: timer.clone(),
            fire_at,
            purpose,
        });
        // The thread is filled in by the caller through `wait_on_timer`.
        self.pending.insert(
            timer.clone(),
            Pending::Timer {
                thread: u32::MAX,
                purpose,
                task,
                wait,
            },
        );
        timer
    }

    fn wait_on_timer(&mut self, timer: &str, tid: u32) {
        if let Some(Pending::Timer { thread, .. }) = self.pending.get_mut(timer) {
            *thread = tid;
        }
    }

    fn cancel_timer(&mut self, tx: &mut Tx, timer: &str) {
        if self.pending.remove(timer).is_some() {
            tx.emit(Event::TimerCancelled {
                timer: timer.to_string(),
            });
            tx.act(Action::CancelTimer {
                timer: timer.to_string(),
            });
        }
    }

    fn timer_fired(&mut self, tx: &mut Tx, timer: &str, p: Pending) {
        let Pending::Timer {
            thread,
            purpose,
            task,
            wait,
        } = p
        else {
            return;
        };
        match purpose {
            TimerPurpose::Wait => {
                self.pending.remove(timer);
                self.advance(tx, thread, None);
            }
            TimerPurpose::Retry => {
                self.pending.remove(timer);
                if let Some(t) = self.threads.get_mut(&thread) {
                    t.attempt += 1;
                    t.state = ThreadState::Ready;
                }
            }
            TimerPurpose::EventTimeout => {
                self.pending.remove(timer);
                let Some(wait) = wait else { return };
                self.pending.remove(&wait);
                let node_id = self.current_node(tx.prog, thread);
                let step = &tx.prog.node(node_id).step;
                tx.emit(Event::EventTimedOut {
                    step: step.id.clone(),
                    wait: wait.clone(),
                });
                tx.act(Action::StopAwaiting { wait });
                let target = step.wait_event.as_ref().and_then(|w| w.on_timeout.clone());
                // No event: the result variable holds nothing, not a previous round's payload.
                self.set_result(tx, node_id, Value::Null);
                self.advance(tx, thread, target.as_deref());
            }
            TimerPurpose::TaskReminder => {
                self.pending.remove(timer);
                if let Some(task) = task {
                    tx.emit(Event::TaskReminded { task: task.clone() });
                    self.send_notice(tx, thread, &task, Notice::Reminder);
                }
            }
            TimerPurpose::TaskDue => {
                self.pending.remove(timer);
                let Some(task) = task else { return };
                let node_id = self.current_node(tx.prog, thread);
                let escalate = tx
                    .prog
                    .node(node_id)
                    .step
                    .task
                    .as_ref()
                    .and_then(|t| t.escalate_to.clone());
                tx.emit(Event::TaskOverdue {
                    task: task.clone(),
                    escalated_to: escalate.clone(),
                });
                self.send_notice(tx, thread, &task, Notice::Overdue);
                if let Some(role) = escalate {
                    // Only the role changes: a four-eyes task keeps its first decision.
                    let first = match self.pending.get(&task) {
                        Some(Pending::Task { first, .. }) => first.clone(),
                        _ => None,
                    };
                    let status = if first.is_some() {
                        "awaiting_second"
                    } else {
                        "open"
                    };
                    let (by, outcome, data) = match first {
                        Some((b, o, d)) => (Some(b), Some(o), Some(d)),
                        None => (None, None, None),
                    };
                    tx.act(Action::UpdateTask {
                        task,
                        status: status.into(),
                        role: Some(role),
                        by,
                        outcome,
                        data,
                    });
                }
            }
        }
    }

    /// Calls the task's `on_reminder` or `on_overdue` connector, if it has one. Preparing the
    /// call (expressions, templates) may fail: that is recorded and the case goes on.
    fn send_notice(&mut self, tx: &mut Tx, thread: u32, task: &str, which: Notice) {
        let prog = tx.prog;
        let node_id = self.current_node(prog, thread);
        let step = &prog.node(node_id).step;
        let Some(spec) = step.task.as_ref().and_then(|t| match which {
            Notice::Reminder => t.on_reminder.as_ref(),
            Notice::Overdue => t.on_overdue.as_ref(),
        }) else {
            return;
        };
        let name = which.name();
        let request = match self.connector_request(tx, &spec.with, &spec.templates) {
            Ok(r) => r,
            Err(e) => {
                tx.emit(Event::TaskNoticeFailed {
                    task: task.to_string(),
                    notice: name.to_string(),
                    error: e.message,
                });
                return;
            }
        };
        let key = self.next_id(&format!("{}.{name}#", step.id));
        let call = EffectCall {
            connector: spec.connector.clone(),
            operation: spec.operation.clone(),
            request,
            timeout_ms: None,
        };
        let action = emit_effect(tx, &step.id, key.clone(), call, 1);
        self.pending.insert(key, Pending::Notice { action });
    }

    /// A connector call's arguments: `with` expressions, then rendered templates.
    fn connector_request(
        &self,
        tx: &Tx,
        with: &indexmap::IndexMap<String, dossier_model::Expr>,
        templates: &indexmap::IndexMap<String, String>,
    ) -> Result<Value, StepError> {
        let mut request = Map::new();
        for (name, expr) in with {
            request.insert(name.clone(), self.eval(tx, &expr.0)?);
        }
        for (name, path) in templates {
            let (text, _) = self.render_template(tx, path)?;
            request.insert(name.clone(), Value::String(text));
        }
        Ok(Value::Object(request))
    }

    // ---- step kinds ----

    fn exec_rule(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let prog = tx.prog;
        let step = &prog.node(node_id).step;
        let rule = step.rule.as_deref().unwrap_or_default();
        let (module_name, function) = rule.split_once('.').ok_or_else(|| {
            StepError::fatal(format!("`{rule}` is not of the form module.function"))
        })?;
        let module = prog.modules.get(module_name).ok_or_else(|| {
            StepError::fatal(format!(
                "the rule module `{module_name}` is not pinned by this case"
            ))
        })?;
        let sig = module.function(function).ok_or_else(|| {
            StepError::fatal(format!(
                "the rule module `{module_name}` has no function `{function}`"
            ))
        })?;
        let mut inputs = BTreeMap::new();
        let mut args = Vec::with_capacity(sig.params.len());
        for p in &sig.params {
            let expr = step.with.get(p).ok_or_else(|| {
                StepError::fatal(format!(
                    "the argument `{p}` of `{rule}` is missing in `with`"
                ))
            })?;
            let v = self.eval(tx, &expr.0)?;
            inputs.insert(p.clone(), v.clone());
            args.push(v);
        }
        let output = prog
            .rules
            .call(module, function, &args, &tx.ctx())
            .map_err(|e| StepError::fatal(e.to_string()))?;
        tx.emit(Event::RuleEvaluated {
            step: step.id.clone(),
            rule: rule.to_string(),
            rule_hash: module.hash.clone(),
            inputs,
            output: output.clone(),
        });
        self.set_result(tx, node_id, output);
        self.advance(tx, tid, None);
        Ok(())
    }

    fn exec_assign(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let mut values = BTreeMap::new();
        if let Some(assign) = &step.assign {
            for (name, expr) in assign {
                let v = self.eval(tx, &expr.0)?;
                // Later assignments of the same step see the earlier ones.
                self.vars.insert(name.clone(), v.clone());
                values.insert(name.clone(), v);
            }
        }
        tx.emit(Event::VariablesAssigned {
            step: step.id.clone(),
            values,
        });
        self.advance(tx, tid, None);
        Ok(())
    }

    fn exec_branch(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let prog = tx.prog;
        let node = prog.node(node_id);
        let step = &node.step;
        for (i, arm) in step.branch.iter().flatten().enumerate() {
            if self.eval_bool(tx, &arm.when.0)? {
                tx.emit(Event::BranchTaken {
                    step: step.id.clone(),
                    arm: Some(i),
                    target: arm.goto.clone(),
                });
                self.advance(tx, tid, Some(&arm.goto));
                return Ok(());
            }
        }
        let target = match &step.otherwise {
            Some(o) => o.clone(),
            None => match &step.next {
                Some(n) => n.clone(),
                None => prog
                    .list(node.list)
                    .nodes
                    .get(node.pos + 1)
                    .map(|n| prog.node(*n).step.id.clone())
                    .unwrap_or_else(|| END.to_string()),
            },
        };
        tx.emit(Event::BranchTaken {
            step: step.id.clone(),
            arm: None,
            target: target.clone(),
        });
        self.advance(tx, tid, Some(&target));
        Ok(())
    }

    fn exec_wait(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let spec = step.wait.as_ref().expect("a wait step has a wait");
        let fire_at = match (&spec.duration, &spec.until) {
            (Some(d), _) => self.instant_after(tx, d)?,
            (None, Some(u)) => match self.eval(tx, &u.0)? {
                Value::String(s) => parse_instant(&s)
                    .ok_or_else(|| StepError::fatal(format!("`{}` gave `{s}`, not a date", u.0)))?,
                other => {
                    return Err(StepError::fatal(format!(
                        "`{}` gave {other}, not a date",
                        u.0
                    )))
                }
            },
            (None, None) => return Err(StepError::fatal("a wait needs `duration` or `until`")),
        };
        let timer = self.set_timer(tx, &step.id, fire_at, TimerPurpose::Wait, None, None);
        self.wait_on_timer(&timer, tid);
        self.set_waiting(tid);
        Ok(())
    }

    fn set_waiting(&mut self, tid: u32) {
        if let Some(t) = self.threads.get_mut(&tid) {
            t.state = ThreadState::Waiting;
        }
    }

    fn exec_wait_event(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let spec = step
            .wait_event
            .as_ref()
            .expect("a wait_event step has a wait_event");
        let mut correlation = BTreeMap::new();
        for (k, e) in &spec.correlate {
            correlation.insert(k.clone(), self.eval(tx, &e.0)?);
        }
        let timeout_at = match &spec.timeout {
            Some(t) => Some(self.instant_after(tx, t)?),
            None => None,
        };
        let wait = self.next_id("w");
        tx.emit(Event::EventAwaited {
            step: step.id.clone(),
            wait: wait.clone(),
            event: spec.event.clone(),
            correlation: correlation.clone(),
        });
        tx.act(Action::AwaitEvent {
            wait: wait.clone(),
            event: spec.event.clone(),
            correlation: correlation_text(&correlation),
        });
        let timer = timeout_at.map(|at| {
            let t = self.set_timer(
                tx,
                &step.id,
                at,
                TimerPurpose::EventTimeout,
                None,
                Some(wait.clone()),
            );
            self.wait_on_timer(&t, tid);
            t
        });
        self.pending
            .insert(wait, Pending::Wait { thread: tid, timer });
        self.set_waiting(tid);
        Ok(())
    }

    fn exec_task(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let spec = step.task.as_ref().expect("a task step has a task");
        let title = self.render_inline(tx, &spec.title)?;
        let instructions = match &spec.instructions {
            Some(i) => Some(self.render_inline(tx, i)?),
            None => None,
        };
        let due_at = match &spec.due {
            Some(d) => Some(self.instant_after(tx, d)?),
            None => None,
        };
        let mut reminders = Vec::new();
        for r in &spec.reminders {
            reminders.push(self.instant_after(tx, r)?);
        }
        let task = self.next_uuid();
        let form = json!({
            "fields": spec.fields,
            "outcomes": spec.outcomes.keys().collect::<Vec<_>>(),
            "four_eyes": spec.four_eyes,
            "escalate_to": spec.escalate_to,
            "instructions": instructions,
        });
        tx.emit(Event::TaskCreated {
            step: step.id.clone(),
            task: task.clone(),
            role: spec.role.clone(),
            title: title.clone(),
            form: form.clone(),
            due_at,
        });
        tx.act(Action::CreateTask {
            task: task.clone(),
            step: step.id.clone(),
            role: spec.role.clone(),
            title,
            form,
            due_at,
        });
        let mut timers = Vec::new();
        for at in reminders {
            let t = self.set_timer(
                tx,
                &step.id,
                at,
                TimerPurpose::TaskReminder,
                Some(task.clone()),
                None,
            );
            self.wait_on_timer(&t, tid);
            timers.push(t);
        }
        if let Some(at) = due_at {
            let t = self.set_timer(
                tx,
                &step.id,
                at,
                TimerPurpose::TaskDue,
                Some(task.clone()),
                None,
            );
            self.wait_on_timer(&t, tid);
            timers.push(t);
        }
        self.pending.insert(
            task,
            Pending::Task {
                thread: tid,
                timers,
                first: None,
            },
        );
        self.set_waiting(tid);
        Ok(())
    }

    fn exec_action(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let spec = step.action.as_ref().expect("an action step has an action");
        let request = self.connector_request(tx, &step.with, &spec.templates)?;
        let timeout_ms = match &step.timeout {
            Some(t) => Some(
                IsoDuration::parse(t)
                    .map_err(|e| StepError::fatal(e.to_string()))?
                    .approx_seconds()
                    .saturating_mul(1000),
            ),
            None => None,
        };
        let call = EffectCall {
            connector: spec.connector.clone(),
            operation: spec.operation.clone(),
            request,
            timeout_ms,
        };
        self.request_effect(tx, tid, node_id, call);
        Ok(())
    }

    /// The next number of a gapless series, allocated by the runtime (an internal effect whose
    /// key makes a repeated request get the same number).
    fn exec_number(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let spec = step.number.as_ref().expect("a number step has a number");
        let period = match &spec.period {
            Some(e) => match self.eval(tx, &e.0)? {
                Value::String(s) if !s.trim().is_empty() => s,
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(StepError::fatal(format!(
                        "the period of the series `{}` must be a text or a number, not {other}",
                        spec.series
                    )))
                }
            },
            None => tx.now.format("%Y").to_string(),
        };
        let call = EffectCall {
            connector: NUMBERING_CONNECTOR.to_string(),
            operation: "next".to_string(),
            request: json!({"series": spec.series, "period": period, "format": spec.format}),
            timeout_ms: None,
        };
        self.request_effect(tx, tid, node_id, call);
        Ok(())
    }

    /// Postings to ledger accounts, applied by the runtime all or none (an internal effect whose
    /// key makes a repeated request find the postings already made). The request carries each
    /// posting's account, amount and bounds as exact decimal texts.
    fn exec_ledger(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let specs = step.ledger.as_ref().expect("a ledger step has postings");
        let mut postings = Vec::with_capacity(specs.len());
        for p in specs {
            match (&p.for_each, &p.item) {
                (Some(list), Some(item)) => {
                    let elements = match self.eval(tx, &list.0)? {
                        Value::Array(a) => a,
                        other => {
                            return Err(StepError::fatal(format!(
                                "the `for_each` of a posting must give a list, not {other}"
                            )))
                        }
                    };
                    for element in elements {
                        let bound = Some((item.as_str(), element));
                        postings.push(self.posting(tx, p, postings.len() + 1, &bound)?);
                    }
                }
                _ => postings.push(self.posting(tx, p, postings.len() + 1, &None)?),
            }
            if postings.len() > MAX_POSTINGS {
                return Err(StepError::fatal(format!(
                    "more than {MAX_POSTINGS} postings in one ledger step"
                )));
            }
        }
        let call = EffectCall {
            connector: LEDGER_CONNECTOR.to_string(),
            operation: "post".to_string(),
            request: json!({ "postings": postings }),
            timeout_ms: None,
        };
        self.request_effect(tx, tid, node_id, call);
        Ok(())
    }

    /// One posting's account, amount and bounds as exact decimal texts; `bound` is the
    /// element of a `for_each` posting and its name.
    fn posting(
        &self,
        tx: &Tx,
        p: &dossier_model::PostingSpec,
        n: usize,
        bound: &Option<(&str, Value)>,
    ) -> Result<Value, StepError> {
        let eval = |source: &str| -> Result<Value, StepError> {
            match bound {
                Some((name, value)) => {
                    let (expr, mut scope) = self.prepared(tx, source)?;
                    scope.insert(name.to_string(), value.clone());
                    tx.prog
                        .rules
                        .eval_expr(&expr, &scope, &tx.ctx())
                        .map_err(|e| StepError::fatal(e.to_string()))
                }
                None => self.eval(tx, source),
            }
        };
        let account = match eval(&p.account.0)? {
            Value::String(s) if !s.trim().is_empty() && s.len() <= 200 => s.trim().to_string(),
            other => {
                return Err(StepError::fatal(format!(
                    "posting {n}: the account must be a non-empty text of at most 200 characters, not {other}"
                )))
            }
        };
        let quantity = |what: &str, v: Value| match &v {
            Value::Number(num) => Ok(num.to_string()),
            _ => Err(StepError::fatal(format!(
                "posting {n} on `{account}`: the {what} must be a number, not {v}"
            ))),
        };
        let amount = quantity("amount", eval(&p.amount.0)?)?;
        let min = match &p.min {
            Some(e) if e.0.trim() == dossier_model::PostingSpec::NO_BOUND => Value::Null,
            Some(e) => Value::String(quantity("lower bound (min)", eval(&e.0)?)?),
            None => Value::String("0".to_string()),
        };
        let max = match &p.max {
            Some(e) => Value::String(quantity("upper bound (max)", eval(&e.0)?)?),
            None => Value::Null,
        };
        Ok(json!({"account": account, "amount": amount, "min": min, "max": max}))
    }

    /// A new identifier: the pattern is computed here, the random part drawn by the runtime
    /// (randomness stays out of the machine), which makes it unique in the store.
    fn exec_unique_id(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let spec = step
            .unique_id
            .as_ref()
            .expect("a unique_id step has a pattern");
        let pattern = match self.eval(tx, &spec.pattern.0)? {
            Value::String(s) => s,
            other => {
                return Err(StepError::fatal(format!(
                    "the identifier pattern must be a text, not {other}"
                )))
            }
        };
        let placeholder = dossier_model::UniqueIdSpec::PLACEHOLDER;
        if pattern.matches(placeholder).count() != 1 {
            return Err(StepError::fatal(format!(
                "the identifier pattern `{pattern}` must hold `{placeholder}` exactly once"
            )));
        }
        let call = EffectCall {
            connector: IDS_CONNECTOR.to_string(),
            operation: "draw".to_string(),
            request: json!({"pattern": pattern, "length": spec.length, "alphabet": spec.alphabet}),
            timeout_ms: None,
        };
        self.request_effect(tx, tid, node_id, call);
        Ok(())
    }

    /// An event for other cases, delivered by the runtime once per effect key.
    fn exec_emit(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let spec = step.emit.as_ref().expect("an emit step has an event");
        let mut payload = serde_json::Map::new();
        for (k, e) in &spec.payload {
            payload.insert(k.clone(), self.eval(tx, &e.0)?);
        }
        let call = EffectCall {
            connector: EVENTS_CONNECTOR.to_string(),
            operation: "emit".to_string(),
            request: json!({"event": spec.event, "payload": payload}),
            timeout_ms: None,
        };
        self.request_effect(tx, tid, node_id, call);
        Ok(())
    }

    /// Records an effect request for the thread's step and waits for its answer. The key is
    /// the thread's for this step, the same on every attempt.
    fn request_effect(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId, call: EffectCall) {
        let step = &tx.prog.node(node_id).step;
        let attempt = self.threads[&tid].attempt;
        let key = match self.threads[&tid].key.clone() {
            Some(k) => k,
            None => {
                let k = self.next_id(&format!("{}#", step.id));
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.key = Some(k.clone());
                }
                k
            }
        };
        let action = emit_effect(tx, &step.id, key.clone(), call, attempt);
        self.pending.insert(
            key,
            Pending::Effect {
                thread: tid,
                action,
            },
        );
        self.set_waiting(tid);
    }

    fn exec_for_each(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let spec = tx
            .prog
            .node(node_id)
            .step
            .for_each
            .as_ref()
            .expect("a for_each step has a for_each");
        let items = match self.eval(tx, &spec.items.0)? {
            Value::Array(a) => a,
            other => {
                return Err(StepError::fatal(format!(
                    "`{}` gave {other}, not a list",
                    spec.items.0
                )))
            }
        };
        if items.is_empty() {
            self.advance(tx, tid, None);
            return Ok(());
        }
        if let Some(t) = self.threads.get_mut(&tid) {
            t.items = items;
        }
        self.start_iteration(tx, tid, node_id, 0);
        Ok(())
    }

    fn start_iteration(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId, index: usize) {
        let node = tx.prog.node(node_id);
        let spec = node
            .step
            .for_each
            .as_ref()
            .expect("a for_each step has a for_each");
        let item = self.threads[&tid]
            .items
            .get(index)
            .cloned()
            .unwrap_or(Value::Null);
        let index_name = format!("{}_index", spec.item);
        self.vars.insert(spec.item.clone(), item.clone());
        self.vars.insert(index_name.clone(), json!(index));
        tx.emit(Event::VariablesAssigned {
            step: node.step.id.clone(),
            values: BTreeMap::from([(spec.item.clone(), item), (index_name, json!(index))]),
        });
        if let Some(t) = self.threads.get_mut(&tid) {
            t.state = ThreadState::Joining { remaining: 1 };
        }
        self.spawn(node.children[0], Some(tid), Role::Iteration { index });
    }

    fn exec_call(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let workflow = step.call.clone().unwrap_or_default();
        let workflow_hash = tx.prog.workflows.get(&workflow).cloned().ok_or_else(|| {
            StepError::fatal(format!(
                "the sub-workflow `{workflow}` is not pinned by this case"
            ))
        })?;
        let mut input = Map::new();
        for (name, expr) in &step.with {
            input.insert(name.clone(), self.eval(tx, &expr.0)?);
        }
        let child = self.next_uuid();
        let input = Value::Object(input);
        tx.emit(Event::ChildStarted {
            step: step.id.clone(),
            child: child.clone(),
            workflow: workflow.clone(),
            input: input.clone(),
        });
        tx.act(Action::StartChild {
            child: child.clone(),
            workflow,
            workflow_hash,
            input,
            parent: ParentRef {
                case_id: self.case_id.clone(),
                step: step.id.clone(),
            },
        });
        self.pending.insert(child, Pending::Child { thread: tid });
        self.set_waiting(tid);
        Ok(())
    }

    fn exec_render(&mut self, tx: &mut Tx, tid: u32, node_id: NodeId) -> Result<(), StepError> {
        let step = &tx.prog.node(node_id).step;
        let path = step.render.clone().unwrap_or_default();
        let (output, template_hash) = self.render_template(tx, &path)?;
        tx.emit(Event::TemplateRendered {
            step: step.id.clone(),
            template: path,
            template_hash,
            output: output.clone(),
        });
        self.set_result(tx, node_id, Value::String(output));
        self.advance(tx, tid, None);
        Ok(())
    }
}

/// Canonical text of correlation values (sorted keys), as waits are stored and looked up.
pub fn correlation_text(values: &BTreeMap<String, Value>) -> String {
    serde_json::to_string(values).expect("JSON values always serialize")
}

/// Tera prints numbers through binary floats (`1200.00` shows as `1200`, long amounts lose
/// digits). Templates therefore see every non-integer number as the text of its exact digits.
fn exact_decimals(v: Value) -> Value {
    match v {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Value::String(n.to_string()),
        Value::Array(a) => Value::Array(a.into_iter().map(exact_decimals).collect()),
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, exact_decimals(v))).collect())
        }
        other => other,
    }
}
