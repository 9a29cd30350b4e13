//! History events: the versioned, serialized record of everything that happened to a case.
//!
//! Events are of two sorts. *Inputs* come from outside the state machine (a case started, an
//! effect's result, a timer fired, an event delivered, a task decided, a cancellation); each
//! opens a transition. *Decisions* are what the state machine derived from an input (a rule
//! evaluated, an effect requested, a timer set...). Replay feeds the recorded inputs to the
//! state machine again and checks it derives the same decisions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Why a timer was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerPurpose {
    /// A `wait` step.
    Wait,
    /// The backoff before retrying a failed step.
    Retry,
    /// A `wait_event` step's timeout.
    EventTimeout,
    /// A human task's reminder.
    TaskReminder,
    /// A human task's due date.
    TaskDue,
}

impl TimerPurpose {
    pub fn name(self) -> &'static str {
        match self {
            TimerPurpose::Wait => "wait",
            TimerPurpose::Retry => "retry",
            TimerPurpose::EventTimeout => "event_timeout",
            TimerPurpose::TaskReminder => "task_reminder",
            TimerPurpose::TaskDue => "task_due",
        }
    }
}

/// The parent of a sub-workflow case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub case_id: String,
    pub step: String,
}

/// One history event. The serialized form (`{"kind": "rule_evaluated", ...}`) is a stable,
/// versioned format: fields may be added with defaults, never renamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    // ---- inputs ----
    /// A case started (input).
    CaseStarted {
        workflow: String,
        version: u32,
        workflow_hash: String,
        /// Content hashes of the rule modules (`rule:NAME`), templates (`template:PATH`) and
        /// sub-workflows (`workflow:ID`) the case is pinned to.
        pins: BTreeMap<String, String>,
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        business_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    /// A connector answered (input).
    EffectCompleted {
        key: String,
        result: Value,
    },
    /// A connector failed (input). `retryable` failures are retried as the step says.
    EffectFailed {
        key: String,
        error: String,
        retryable: bool,
    },
    /// A timer came due (input).
    TimerFired {
        timer: String,
    },
    /// An event was delivered to a waiting step (input).
    EventReceived {
        wait: String,
        event: String,
        payload: Value,
    },
    /// A person decided a human task (input).
    TaskDecided {
        task: String,
        outcome: String,
        data: Value,
        by: String,
    },
    /// A sub-workflow case ended (input).
    ChildFinished {
        child: String,
        status: String,
        output: Value,
    },
    /// Someone cancelled the case (input).
    CancelRequested {
        reason: String,
        by: String,
    },
    /// A provider reported what became of a message an effect sent (an SMS delivery receipt),
    /// input. Recorded whatever the case's state, even after it ended; changes nothing else.
    ReceiptReceived {
        /// The idempotency key of the effect that sent the message.
        key: String,
        connector: String,
        message_id: String,
        status: String,
        detail: Value,
    },

    // ---- decisions ----
    StepStarted {
        step: String,
    },
    /// An `on_event` entry fired: the work in progress stopped, the case goes on at `goto`.
    CaseInterrupted {
        event: String,
        goto: String,
    },
    RuleEvaluated {
        step: String,
        rule: String,
        rule_hash: String,
        inputs: BTreeMap<String, Value>,
        output: Value,
    },
    VariablesAssigned {
        step: String,
        values: BTreeMap<String, Value>,
    },
    BranchTaken {
        step: String,
        /// Index of the arm whose condition held; none when `otherwise` (or fall-through) applied.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arm: Option<usize>,
        target: String,
    },
    TemplateRendered {
        step: String,
        template: String,
        template_hash: String,
        output: String,
    },
    EffectRequested {
        step: String,
        key: String,
        connector: String,
        operation: String,
        request: Value,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    TimerSet {
        timer: String,
        step: String,
        fire_at: DateTime<Utc>,
        purpose: TimerPurpose,
    },
    TimerCancelled {
        timer: String,
    },
    EventAwaited {
        step: String,
        wait: String,
        event: String,
        correlation: BTreeMap<String, Value>,
    },
    EventTimedOut {
        step: String,
        wait: String,
    },
    TaskCreated {
        step: String,
        task: String,
        role: String,
        title: String,
        /// Fields, outcomes, four-eyes flag, escalation target.
        form: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due_at: Option<DateTime<Utc>>,
    },
    /// The first of two decisions of a four-eyes task: a second person must decide.
    TaskAwaitingSecondDecision {
        task: String,
        first_by: String,
    },
    /// The second person of a four-eyes task chose another outcome: the task is open again.
    TaskDecisionsDiffer {
        task: String,
        first_by: String,
        first_outcome: String,
        second_by: String,
        second_outcome: String,
    },
    /// A task's final decision; the case goes on along the outcome.
    TaskCompleted {
        task: String,
        outcome: String,
        by: String,
    },
    TaskReminded {
        task: String,
    },
    /// A task's `on_reminder` / `on_overdue` call could not be prepared (an expression or a
    /// template failed); the case goes on without it.
    TaskNoticeFailed {
        task: String,
        notice: String,
        error: String,
    },
    TaskOverdue {
        task: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escalated_to: Option<String>,
    },
    TaskCancelled {
        task: String,
    },
    ChildStarted {
        step: String,
        child: String,
        workflow: String,
        input: Value,
    },
    StepCompleted {
        step: String,
    },
    StepFailed {
        step: String,
        error: String,
        attempt: u32,
        /// Whether the step will be tried again.
        will_retry: bool,
    },
    CompensationStarted {
        reason: String,
    },
    Compensated {
        step: String,
    },
    CompensationFailed {
        step: String,
        error: String,
    },
    CaseCompleted {
        output: Value,
    },
    CaseFailed {
        error: String,
    },
    CaseCancelled {
        reason: String,
    },
}

impl Event {
    /// The `kind` tag of the serialized form.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CaseStarted { .. } => "case_started",
            Event::EffectCompleted { .. } => "effect_completed",
            Event::EffectFailed { .. } => "effect_failed",
            Event::TimerFired { .. } => "timer_fired",
            Event::EventReceived { .. } => "event_received",
            Event::TaskDecided { .. } => "task_decided",
            Event::ChildFinished { .. } => "child_finished",
            Event::CancelRequested { .. } => "cancel_requested",
            Event::ReceiptReceived { .. } => "receipt_received",
            Event::StepStarted { .. } => "step_started",
            Event::CaseInterrupted { .. } => "case_interrupted",
            Event::RuleEvaluated { .. } => "rule_evaluated",
            Event::VariablesAssigned { .. } => "variables_assigned",
            Event::BranchTaken { .. } => "branch_taken",
            Event::TemplateRendered { .. } => "template_rendered",
            Event::EffectRequested { .. } => "effect_requested",
            Event::TimerSet { .. } => "timer_set",
            Event::TimerCancelled { .. } => "timer_cancelled",
            Event::EventAwaited { .. } => "event_awaited",
            Event::EventTimedOut { .. } => "event_timed_out",
            Event::TaskCreated { .. } => "task_created",
            Event::TaskAwaitingSecondDecision { .. } => "task_awaiting_second_decision",
            Event::TaskDecisionsDiffer { .. } => "task_decisions_differ",
            Event::TaskCompleted { .. } => "task_completed",
            Event::TaskReminded { .. } => "task_reminded",
            Event::TaskNoticeFailed { .. } => "task_notice_failed",
            Event::TaskOverdue { .. } => "task_overdue",
            Event::TaskCancelled { .. } => "task_cancelled",
            Event::ChildStarted { .. } => "child_started",
            Event::StepCompleted { .. } => "step_completed",
            Event::StepFailed { .. } => "step_failed",
            Event::CompensationStarted { .. } => "compensation_started",
            Event::Compensated { .. } => "compensated",
            Event::CompensationFailed { .. } => "compensation_failed",
            Event::CaseCompleted { .. } => "case_completed",
            Event::CaseFailed { .. } => "case_failed",
            Event::CaseCancelled { .. } => "case_cancelled",
        }
    }

    /// Whether this event opens a transition (it comes from outside the state machine).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            Event::CaseStarted { .. }
                | Event::EffectCompleted { .. }
                | Event::EffectFailed { .. }
                | Event::TimerFired { .. }
                | Event::EventReceived { .. }
                | Event::TaskDecided { .. }
                | Event::ChildFinished { .. }
                | Event::CancelRequested { .. }
                | Event::ReceiptReceived { .. }
        )
    }

    /// The serialized payload without its `kind` tag.
    pub fn payload(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("events always serialize");
        if let Value::Object(m) = &mut v {
            m.remove("kind");
        }
        v
    }

    /// Rebuilds an event from its kind and payload, as stored.
    pub fn from_parts(kind: &str, payload: &Value) -> Result<Event, serde_json::Error> {
        let mut v = payload.clone();
        if let Value::Object(m) = &mut v {
            m.insert("kind".into(), Value::String(kind.to_string()));
        }
        serde_json::from_value(v)
    }
}
