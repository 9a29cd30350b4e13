//! Workflow tests for analysts: `workflows/*.test.yaml`. Each test starts a case with an input,
//! plays events and task decisions at times relative to the start, lets virtual time run to the
//! end, and checks the path taken, the final status, the output and the connector calls.
//!
//! ```yaml
//! workflow: relance_impayes
//! tests:
//!   - name: paiement après la première relance
//!     input: { facture_id: F-1, montant: 1200.00, echeance: 2026-01-31 }
//!     connectors:
//!       sms: [ { ok: { id: SM1 } } ]       # answers in order; the last one repeats
//!     script:
//!       - after: P10D
//!         event: paiement_recu
//!         payload: { facture_id: F-1, montant: 1200.00 }
//!       - after: P12D
//!         task: validation                 # the step id of the task (of this case, else of a
//!                                          # sub-workflow case it started)
//!         outcome: approuve
//!         by: alice
//!     expect:
//!       status: completed
//!       path: [calcul, attente, relance_sms, ...]   # steps started, in order
//!       output: { statut: payee }                 # these keys, these values
//!       calls:
//!         - { connector: sms, operation: send, with: { to: "+2250700000000" }, after: P7D }
//! ```

use std::path::Path;

use chrono::{DateTime, Utc};
use dossier_connectors::Scripted;
use dossier_core::Event;
use dossier_model::{IsoDuration, SpanIndex};
use dossier_rules::compare_json;
use serde::Deserialize;
use serde_json::Value;

use crate::project::Project;
use crate::simulate::Simulation;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    pub workflow: String,
    pub tests: Vec<WorkflowTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowTest {
    pub name: String,
    /// Start instant (default 2026-01-01T08:00:00Z).
    #[serde(default)]
    pub start: Option<String>,
    pub input: Value,
    #[serde(default)]
    pub connectors: std::collections::BTreeMap<String, Vec<Answer>>,
    /// Opening balances of ledger accounts, before the case starts (`credits/C1: 100`).
    #[serde(default)]
    pub ledger: std::collections::BTreeMap<String, Value>,
    #[serde(default)]
    pub script: Vec<ScriptItem>,
    /// How long virtual time may run after the script (default P400D).
    #[serde(default)]
    pub horizon: Option<String>,
    #[serde(default)]
    pub expect: Expect,
}

/// One scripted connector answer: `ok: {...}`, `fail: message` (transient) or
/// `reject: message` (permanent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[serde(default)]
    pub ok: Option<Value>,
    #[serde(default)]
    pub fail: Option<String>,
    #[serde(default)]
    pub reject: Option<String>,
    /// The operation this answer is for (default `send`).
    #[serde(default)]
    pub operation: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptItem {
    /// When, relative to the start (ISO 8601 duration).
    pub after: String,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub cancel: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub path: Option<Vec<String>>,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub vars: Option<Value>,
    #[serde(default)]
    pub calls: Option<Vec<ExpectedCall>>,
    /// Open tasks at the end, by step id.
    #[serde(default)]
    pub open_tasks: Option<Vec<String>>,
    /// Balances of ledger accounts at the end (an account never posted to counts as 0).
    #[serde(default)]
    pub ledger: Option<std::collections::BTreeMap<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedCall {
    pub connector: String,
    #[serde(default)]
    pub operation: Option<String>,
    /// These request fields, with these values.
    #[serde(default)]
    pub with: Option<Value>,
    /// Made at this time after the start.
    #[serde(default)]
    pub after: Option<String>,
}

/// Outcome of one test file.
#[derive(Debug, Default)]
pub struct FileReport {
    pub passed: usize,
    pub failed: usize,
    /// `file:line: test name: message` for each failure.
    pub failures: Vec<String>,
}

fn default_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T08:00:00Z")
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default()
}

fn duration(text: &str) -> Result<IsoDuration, String> {
    IsoDuration::parse(text).map_err(|e| e.to_string())
}

/// Runs every test of a workflow test file.
pub async fn run_test_file(project: &Project, path: &Path, shown: &str) -> FileReport {
    let mut report = FileReport::default();
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            report.failed += 1;
            report
                .failures
                .push(format!("{shown}: cannot read the file: {e}"));
            return report;
        }
    };
    let file: TestFile = match serde_yaml_ng::from_str(&source) {
        Ok(f) => f,
        Err(e) => {
            report.failed += 1;
            report
                .failures
                .push(dossier_model::yaml_error(shown, &e).to_string());
            return report;
        }
    };
    let spans = SpanIndex::build(&source);
    for (i, test) in file.tests.iter().enumerate() {
        let line = spans.key(&format!("tests[{i}]")).line;
        match run_one(project, &file.workflow, test).await {
            Ok(()) => report.passed += 1,
            Err(msg) => {
                report.failed += 1;
                report
                    .failures
                    .push(format!("{shown}:{line}: {}: {msg}", test.name));
            }
        }
    }
    report
}

async fn run_one(project: &Project, workflow: &str, test: &WorkflowTest) -> Result<(), String> {
    let start = match &test.start {
        Some(s) => dossier_model::parse_instant(s)
            .ok_or_else(|| format!("`start: {s}` is not a date-time"))?,
        None => default_start(),
    };
    let mut sim = Simulation::new(project, start);
    for (name, answers) in &test.connectors {
        let double = sim.connector(name);
        let mut by_op: std::collections::BTreeMap<String, Vec<Scripted>> = Default::default();
        for a in answers {
            let s = match (&a.ok, &a.fail, &a.reject) {
                (Some(v), None, None) => Scripted::Ok(v.clone()),
                (None, Some(m), None) => Scripted::Transient(m.clone()),
                (None, None, Some(m)) => Scripted::Permanent(m.clone()),
                _ => {
                    return Err(format!(
                        "connector `{name}`: each answer needs exactly one of ok, fail, reject"
                    ))
                }
            };
            let default_op = if name == dossier_core::EVENTS_CONNECTOR {
                "emit"
            } else {
                "send"
            };
            by_op
                .entry(a.operation.clone().unwrap_or_else(|| default_op.into()))
                .or_default()
                .push(s);
        }
        for (op, list) in by_op {
            double.script(&op, list);
        }
    }
    for (account, balance) in &test.ledger {
        let balance = quantity(balance)
            .ok_or_else(|| format!("ledger: the opening balance of `{account}` is not a number"))?;
        sim.open_account(account, balance)
            .await
            .map_err(|e| e.to_string())?;
    }
    let case = sim
        .start(workflow, test.input.clone())
        .await
        .map_err(|e| format!("the case does not start: {e}"))?;
    let mut script: Vec<(DateTime<Utc>, &ScriptItem)> = Vec::new();
    for item in &test.script {
        let at = duration(&item.after)?
            .after(start)
            .ok_or("a script time is out of range")?;
        script.push((at, item));
    }
    script.sort_by_key(|(at, _)| *at);
    for (at, item) in script {
        sim.advance_to(at).await.map_err(|e| e.to_string())?;
        if let Some(name) = &item.event {
            let reached = sim
                .send_event(name, item.payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            if reached.is_empty() {
                return Err(format!(
                    "at {}: no case was waiting for the event `{name}` with these keys\n{}",
                    item.after,
                    timeline(&sim, start)
                ));
            }
        } else if let Some(step) = &item.task {
            let outcome = item
                .outcome
                .as_deref()
                .ok_or("a task decision needs `outcome`")?;
            let by = item.by.as_deref().unwrap_or("test");
            let data = item
                .data
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default()));
            sim.decide(&case, step, outcome, data, by)
                .await
                .map_err(|e| format!("at {}: {e}\n{}", item.after, timeline(&sim, start)))?;
        } else if let Some(reason) = &item.cancel {
            sim.input(
                &case,
                Event::CancelRequested {
                    reason: reason.clone(),
                    by: "test".into(),
                },
            )
            .await
            .map_err(|e| format!("at {}: {e}", item.after))?;
        } else {
            return Err("a script item needs `event`, `task` or `cancel`".into());
        }
    }
    let horizon = duration(test.horizon.as_deref().unwrap_or("P400D"))?;
    let limit = horizon
        .after(sim.now)
        .ok_or("the horizon is out of range")?;
    sim.run_to_end(limit).await.map_err(|e| e.to_string())?;
    sim.verify_replay()
        .map_err(|e| format!("the history does not replay: {e}"))?;
    let balances = sim.balances().await.map_err(|e| e.to_string())?;
    check(&sim, &case, start, &test.expect, &balances)
        .map_err(|m| format!("{m}\n{}", timeline(&sim, start)))
}

fn check(
    sim: &Simulation,
    case: &str,
    start: DateTime<Utc>,
    expect: &Expect,
    balances: &std::collections::BTreeMap<String, dossier_store::Decimal>,
) -> Result<(), String> {
    let c = &sim.cases[case];
    if let Some(status) = &expect.status {
        let actual = c.state.status_name();
        if actual != status {
            return Err(format!("expected status `{status}`, got `{actual}`"));
        }
    }
    if let Some(path) = &expect.path {
        let actual: Vec<&str> = c
            .history
            .iter()
            .filter_map(|r| match &r.event {
                Event::StepStarted { step } => Some(step.as_str()),
                _ => None,
            })
            .collect();
        if actual != path.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(format!(
                "expected path [{}]\n     got path [{}]",
                path.join(", "),
                actual.join(", ")
            ));
        }
    }
    if let Some(output) = &expect.output {
        subset("output", output, &c.state.output)?;
    }
    if let Some(vars) = &expect.vars {
        subset("variables", vars, &Value::Object(c.state.vars.clone()))?;
    }
    if let Some(want) = &expect.ledger {
        for (account, expected) in want {
            let expected = quantity(expected).ok_or_else(|| {
                format!("expect.ledger: the balance of `{account}` is not a number")
            })?;
            let got = balances.get(account).copied().unwrap_or_default();
            if got != expected {
                return Err(format!(
                    "expected ledger account `{account}` at {expected}, got {got}"
                ));
            }
        }
    }
    if let Some(tasks) = &expect.open_tasks {
        let mut open: Vec<&str> = sim
            .tasks
            .values()
            .filter(|t| t.case_id == case)
            .map(|t| t.step.as_str())
            .collect();
        open.sort();
        let mut want: Vec<&str> = tasks.iter().map(String::as_str).collect();
        want.sort();
        if open != want {
            return Err(format!(
                "expected open tasks [{}], got [{}]",
                want.join(", "),
                open.join(", ")
            ));
        }
    }
    if let Some(calls) = &expect.calls {
        let actual: Vec<_> = sim
            .calls
            .iter()
            .filter(|(_, r)| r.effect.case_id == case)
            .collect();
        let describe = |v: &[&(DateTime<Utc>, dossier_connectors::Recorded)]| {
            v.iter()
                .map(|(at, r)| {
                    format!(
                        "  {} {}.{} {}",
                        crate::timeline::elapsed(start, *at),
                        r.connector,
                        r.effect.operation,
                        r.effect.request
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        if actual.len() != calls.len() {
            return Err(format!(
                "expected {} connector calls, got {}:\n{}",
                calls.len(),
                actual.len(),
                describe(&actual)
            ));
        }
        for (i, (want, (at, got))) in calls.iter().zip(actual.iter()).enumerate() {
            let n = i + 1;
            if want.connector != got.connector {
                return Err(format!(
                    "call {n}: expected connector `{}`, got `{}`",
                    want.connector, got.connector
                ));
            }
            if let Some(op) = &want.operation {
                if *op != got.effect.operation {
                    return Err(format!(
                        "call {n}: expected operation `{op}`, got `{}`",
                        got.effect.operation
                    ));
                }
            }
            if let Some(with) = &want.with {
                subset(&format!("call {n} request"), with, &got.effect.request)?;
            }
            if let Some(after) = &want.after {
                let when = duration(after)?.after(start).ok_or("time out of range")?;
                if when != *at {
                    return Err(format!(
                        "call {n}: expected at {after}, made at {}",
                        crate::timeline::elapsed(start, *at)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every key of `want` is in `got` with an equal value (numbers by decimal value; nested
/// objects compared the same way).
fn subset(what: &str, want: &Value, got: &Value) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                match g.get(k) {
                    Some(gv) => subset(&format!("{what}.{k}"), v, gv)?,
                    None => return Err(format!("{what}: expected `{k}` = {v}, it is missing")),
                }
            }
            Ok(())
        }
        _ => {
            if compare_json(want, got) {
                Ok(())
            } else {
                Err(format!("{what}: expected {want}, got {got}"))
            }
        }
    }
}

fn timeline(sim: &Simulation, start: DateTime<Utc>) -> String {
    let events: Vec<(DateTime<Utc>, &Event)> =
        sim.timeline.iter().map(|t| (t.at, &t.event)).collect();
    let text = crate::timeline::render(start, &events);
    format!(
        "timeline:\n{}",
        text.lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// A quantity written in a test file (a YAML number, exact, or a text holding one).
fn quantity(v: &Value) -> Option<dossier_store::Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
