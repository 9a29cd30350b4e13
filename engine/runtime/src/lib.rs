//! The runtime of Dossier: everything around the pure state machine that touches the world.
//!
//! - [`project`]: reads and validates a project directory (workflows, rules, templates).
//! - [`programs`]: compiled programs by pinned content hashes, old versions from the store.
//! - [`engine`]: the live engine (group commit, effect workers, durable timers).
//! - [`simulate`]: virtual time for `dossier run` and `dossier test`.
//! - [`testing`]: workflow test files (`workflows/*.test.yaml`).
//! - [`apply`]: transition to database rows.

pub mod apply;
pub mod casefile;
pub mod cron;
pub mod engine;
mod ids;
pub mod ledger;
pub mod metrics;
mod numbering;
pub mod programs;
pub mod project;
pub mod simulate;
pub mod testing;
pub mod timeline;
pub mod triggers;

use chrono::{DateTime, Utc};

pub use engine::{Applied, Dedup, Delivery, Engine, EngineConfig, Finished, InboxKey, TaskGuard};
pub use project::Project;

pub type Result<T> = std::result::Result<T, RuntimeError>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the project has errors:\n{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<dossier_model::Diagnostic>),
    #[error("no workflow is named `{id}` (deployed: {})", .known.join(", "))]
    UnknownWorkflow { id: String, known: Vec<String> },
    #[error("no case has the id {0}")]
    UnknownCase(String),
    #[error("no task has the id {0}")]
    UnknownTask(String),
    #[error(transparent)]
    Rejected(#[from] dossier_core::Rejection),
    #[error(transparent)]
    Program(#[from] dossier_core::CoreError),
    #[error("storage: {0}")]
    Store(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("simulation: {0}")]
    Simulation(String),
    #[error("the engine has stopped")]
    Stopped,
    /// A trigger could not compute the input of the case it starts from what was delivered.
    #[error("the trigger cannot compute the case's input: {0}")]
    Trigger(String),
    /// A task decision came after the task moved: escalated to another role, or claimed by
    /// someone else.
    #[error("the task {task} moved before the decision: it is now in the inbox of `{role}`{}", .assignee.as_ref().map(|a| format!(", held by {a}")).unwrap_or_default())]
    TaskMoved {
        task: String,
        role: String,
        assignee: Option<String>,
    },
    /// The deduplication key was used before for another request body.
    #[error("this key was already used for another request")]
    KeyReused,
}

impl From<dossier_store::StoreError> for RuntimeError {
    fn from(e: dossier_store::StoreError) -> Self {
        RuntimeError::Store(e.to_string())
    }
}

/// Where the engine gets the time. The state machine never reads a clock: the engine reads
/// this one and passes the time in with each input.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The order in which the waits an event matches receive it, the same live and in virtual
/// time: by case, then in the order each case began to wait (its `on_event` entries first, as
/// they are registered when it starts). Waits are `(wait id, case id)`; ids end in `:w<n>`.
pub(crate) fn delivery_order(waits: &mut Vec<(String, String)>) {
    let number = |id: &str| {
        id.rsplit_once(":w")
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    waits.sort_by(|a, b| a.1.cmp(&b.1).then(number(&a.0).cmp(&number(&b.0))));
    waits.dedup();
}

/// `t` truncated to the millisecond: histories store milliseconds, and replay must see the very
/// instant the state machine saw.
pub fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
