//! The pure core of Dossier: a case's state machine, its history events and their hash chain,
//! and replay.
//!
//! **Architecture invariant:** nothing in this crate does I/O, reads a clock or draws a random
//! number. Time comes in with each input; ids derive from the case id and a counter; rule
//! evaluation is deterministic (sandboxed Rhai without clock or randomness) and template
//! rendering is pure. Given the same pinned program and the same inputs, [`CaseState`] derives
//! the same events, which is what [`replay`] checks.
//!
//! Flow: the runtime compiles a [`Program`] from the pinned sources, calls
//! [`CaseState::start`] or [`CaseState::handle`] with an input [`Event`], stores the returned
//! [`Transition`]'s events (sealed by [`chain::seal`]) and performs its [`Action`]s after the
//! commit. Results of those actions come back as new inputs.

pub mod chain;
mod event;
mod fields;
mod machine;
mod program;
pub mod replay;

pub use event::{Event, ParentRef, TimerPurpose};
pub use fields::{check_fields, FieldError};
pub use machine::{
    correlation_text, Action, CaseState, CaseStatus, Rejection, Transition, EVENTS_CONNECTOR,
    IDS_CONNECTOR, LEDGER_CONNECTOR, NUMBERING_CONNECTOR,
};
pub use program::{tera_message, Node, NodeId, Pinned, Program, StepList, TemplateSource};

pub type Result<T> = std::result::Result<T, CoreError>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("invalid workflow: {0}")]
    Invalid(String),
    #[error("the expression `{expr}` does not compile: {message}")]
    Expression { expr: String, message: String },
    #[error("the template `{template}` does not compile: {message}")]
    Template { template: String, message: String },
}
