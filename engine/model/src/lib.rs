//! The workflow language of Dossier: the YAML file format analysts write, read with positions,
//! checked for meaning, and described by a JSON Schema for their editor.
//!
//! This crate knows nothing about execution, storage or Rhai: checks that need the rest of the
//! project (rule functions, templates, connectors, other workflows, expression compilation) go
//! through the [`Catalog`] trait, which the runtime implements.
//!
//! Key types: [`Workflow`] and [`Step`] (the format), [`ParsedWorkflow`] (a file with its
//! [`SpanIndex`]), [`Diagnostic`] (`file:line:col: error: ...` with a hint), [`IsoDuration`],
//! [`cron::CronSchedule`] (the schedules of `cron` triggers, shared by the validator and the
//! runtime).

pub mod cron;
mod diag;
mod duration;
pub mod graph;
pub mod numbering;
mod parse;
pub mod schema;
mod spans;
pub mod validate;
mod workflow;

pub use diag::{did_you_mean, Diagnostic, Severity};
pub use duration::{parse_instant, DurationError, IsoDuration};
pub use parse::{parse_workflow, yaml_error, ParsedWorkflow};
pub use spans::{Pos, SpanIndex};
pub use validate::{validate_workflow, Catalog};
pub use workflow::*;
