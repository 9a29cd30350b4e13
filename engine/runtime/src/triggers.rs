//! The triggers workflows declare: which workflows a webhook or an event starts, and the input
//! each computes from what was delivered.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dossier_model::Trigger;
use dossier_rules::RuleContext;
use serde_json::{Map, Value};

use crate::project::Project;
use crate::{Result, RuntimeError};

/// One workflow a webhook or event starts.
#[derive(Debug, Clone)]
pub struct Start {
    pub workflow: String,
    pub trigger: Trigger,
}

/// The deployed triggers, by webhook name and by event name (workflow id order).
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    pub webhooks: BTreeMap<String, Vec<Start>>,
    pub events: BTreeMap<String, Vec<Start>>,
    /// `(workflow, trigger)` of every cron trigger.
    pub crons: Vec<Start>,
}

impl Triggers {
    pub fn of(project: &Project) -> Triggers {
        let mut t = Triggers::default();
        for (id, wf) in &project.workflows {
            for trig in &wf.parsed.workflow.triggers {
                let start = Start {
                    workflow: id.clone(),
                    trigger: trig.clone(),
                };
                if let Some(h) = &trig.webhook {
                    t.webhooks.entry(h.clone()).or_default().push(start);
                } else if let Some(e) = &trig.event {
                    t.events.entry(e.clone()).or_default().push(start);
                } else if trig.cron.is_some() {
                    t.crons.push(start);
                }
            }
        }
        t
    }
}

/// The input of a case a trigger starts: its `input` expressions evaluated over `payload`, or
/// the payload itself when it has none.
pub fn trigger_input(
    project: &Project,
    trigger: &Trigger,
    payload: &Value,
    now: DateTime<Utc>,
) -> Result<Value> {
    if trigger.input.is_empty() {
        return Ok(payload.clone());
    }
    let mut vars = Map::new();
    vars.insert("payload".into(), payload.clone());
    let ctx = RuleContext::new(now);
    let mut input = Map::new();
    for (name, expr) in &trigger.input {
        let compiled = project
            .engine
            .compile_expr(expr.as_str())
            .map_err(|e| RuntimeError::Trigger(format!("input `{name}`: {e}")))?;
        let value = project
            .engine
            .eval_expr(&compiled, &vars, &ctx)
            .map_err(|e| RuntimeError::Trigger(format!("input `{name}`: {e}")))?;
        input.insert(name.clone(), value);
    }
    Ok(Value::Object(input))
}
