//! The state machine, data-driven: every test compiles a workflow (YAML, rule modules,
//! templates) into a `Program`, starts a case at a fixed instant, feeds it a script of inputs
//! at given instants and compares the whole history, rendered one line per event, with a
//! snapshot. After every script the recorded history is replayed and chained as a self-check.
//!
//! Update the snapshots with `UPDATE_EXPECT=1 cargo test -p dossier-core --test machine`.
//!
//! Rendering: `@+PT5S` opens a transition fed at T0 + 5 s (T0 = 2026-03-02T09:00:00Z), numbered
//! lines are the recorded events, `=>` lines the actions the runtime must perform, `==` the
//! state at the end of the script. Task and child ids (UUIDs) are shown by their first 8 digits.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use dossier_core::chain::{self, ChainError, SealedEvent, GENESIS};
use dossier_core::replay::{replay, RecordedEvent};
use dossier_core::{
    Action, CaseState, Event, Pinned, Program, Rejection, TemplateSource, TimerPurpose, Transition,
};
use dossier_model::IsoDuration;
use dossier_rules::{content_hash, Rules};
use expect_test::{expect, Expect};
use serde_json::{json, Value};

// =============================================================================================
// The helper

const CASE: &str = "c1";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

/// One scripted input. Ids are found in the history recorded so far: the *latest* effect, timer,
/// wait, task or child of the named step (or event name).
#[derive(Debug, Clone)]
enum In {
    /// The connector answered the latest effect of `step`.
    Ok(&'static str, Value),
    /// The latest effect of `step` failed: error, retryable.
    Fail(&'static str, &'static str, bool),
    /// The latest timer of `step` with this purpose came due.
    Fire(&'static str, TimerPurpose),
    /// Event delivered to the latest wait for this event name.
    Event(&'static str, Value),
    /// Decision on the latest task of `step`: outcome, data, by.
    Decide(&'static str, &'static str, Value, &'static str),
    /// The latest child of `step` ended: status, output.
    Child(&'static str, &'static str, Value),
    Cancel(&'static str),
    /// An input given as is (stale and foreign inputs).
    Raw(Event),
}

/// A workflow under test: its YAML, and the rule modules, templates and sub-workflows pinned.
struct Wf {
    yaml: &'static str,
    rules: Vec<(&'static str, &'static str)>,
    templates: Vec<(&'static str, &'static str)>,
    subs: Vec<&'static str>,
}

fn wf(yaml: &'static str) -> Wf {
    Wf {
        yaml,
        rules: Vec::new(),
        templates: Vec::new(),
        subs: Vec::new(),
    }
}

impl Wf {
    fn rule(mut self, name: &'static str, source: &'static str) -> Wf {
        self.rules.push((name, source));
        self
    }
    fn template(mut self, path: &'static str, source: &'static str) -> Wf {
        self.templates.push((path, source));
        self
    }
    fn sub(mut self, id: &'static str) -> Wf {
        self.subs.push(id);
        self
    }

    /// A `Program` built by hand from the pinned sources (a fresh `Rules` each time, so that
    /// replay never leans on a shared cache).
    fn compile(&self) -> Program {
        self.compile_with_rules(&self.rules)
    }

    fn compile_with_rules(&self, rule_sources: &[(&str, &str)]) -> Program {
        let parsed = dossier_model::parse_workflow("workflows/test.yaml", self.yaml)
            .unwrap_or_else(|d| panic!("the test workflow does not parse: {d}"));
        let engine = Arc::new(Rules::default());
        let mut rules = BTreeMap::new();
        for (name, source) in rule_sources {
            let m = engine
                .compile_module(name, &format!("rules/{name}.rhai"), source)
                .unwrap_or_else(|e| panic!("rule module {name}: {e}"));
            rules.insert(name.to_string(), m);
        }
        let templates = self
            .templates
            .iter()
            .map(|(p, s)| {
                (
                    p.to_string(),
                    TemplateSource {
                        hash: content_hash(s),
                        source: s.to_string(),
                    },
                )
            })
            .collect();
        let workflows = self
            .subs
            .iter()
            .map(|id| (id.to_string(), content_hash(id)))
            .collect();
        let pinned = Pinned {
            workflow: parsed.workflow,
            workflow_hash: content_hash(self.yaml),
            rules,
            templates,
            workflows,
        };
        Program::compile(pinned, engine).unwrap_or_else(|e| panic!("compile: {e}"))
    }

    /// Runs the script, checks replay, chain and determinism, and returns the rendering.
    fn run(&self, input: Value, script: &[(i64, In)]) -> Run {
        let first = self.run_once(input.clone(), script);
        // Same inputs, freshly compiled program: the same history, byte for byte.
        let second = self.run_once(input, script);
        assert_eq!(
            first.text, second.text,
            "the state machine is not deterministic"
        );
        first
    }

    fn run_once(&self, input: Value, script: &[(i64, In)]) -> Run {
        let prog = self.compile();
        let r = Renderer { wf: self };
        let mut out = Vec::new();
        let mut history: Vec<RecordedEvent> = Vec::new();
        let mut transitions: Vec<(DateTime<Utc>, usize)> = Vec::new();
        let (mut state, t) = match CaseState::start(&prog, CASE, input, None, None, t0()) {
            Ok(x) => x,
            Err(rej) => {
                out.push(format!("@+PT0S start !! rejected: {rej:?}"));
                return Run {
                    text: out.join("\n"),
                    history,
                    state: None,
                };
            }
        };
        out.push("@+PT0S start".to_string());
        record(&r, &mut out, &mut history, &mut transitions, t, t0());
        for (secs, inp) in script {
            let at = t0() + chrono::Duration::seconds(*secs);
            let event = resolve(inp, &history);
            match state.handle(&prog, event.clone(), at) {
                Ok(t) if t.events.is_empty() => {
                    assert!(t.actions.is_empty(), "an ignored input acts: {t:?}");
                    out.push(format!("{} {} (ignored)", r.at(at), r.event(&event)));
                }
                Ok(t) => {
                    out.push(r.at(at));
                    record(&r, &mut out, &mut history, &mut transitions, t, at);
                }
                Err(rej) => out.push(format!(
                    "{} {} !! rejected: {rej:?}",
                    r.at(at),
                    r.event(&event)
                )),
            }
        }
        out.push(format!(
            "== {} vars={} output={}",
            state.status_name(),
            r.vars(&state),
            state.output
        ));

        // Replay with a freshly compiled program: no divergence, the same state.
        let again = self.compile();
        let rebuilt = replay(&again, CASE, &history)
            .unwrap_or_else(|d| panic!("the recorded history does not replay: {d}"));
        assert_eq!(rebuilt.status, state.status);
        assert_eq!(rebuilt.status_name(), state.status_name());
        assert_eq!(rebuilt.vars, state.vars);
        assert_eq!(rebuilt.output, state.output);
        assert_eq!(rebuilt.business_key, state.business_key);
        assert_eq!(rebuilt.current_step(&again), state.current_step(&prog));

        // Seal it transition by transition as the runtime does: the chain verifies.
        let sealed = seal_history(&history, &transitions);
        chain::verify(sealed.iter().map(as_link)).expect("the sealed history verifies");

        Run {
            text: collapse(&out).join("\n"),
            history,
            state: Some(state),
        }
    }
}

struct Run {
    text: String,
    history: Vec<RecordedEvent>,
    state: Option<CaseState>,
}

impl Run {
    fn check(&self, expected: Expect) {
        expected.assert_eq(&format!("{}\n", self.text));
    }
}

fn record(
    r: &Renderer,
    out: &mut Vec<String>,
    history: &mut Vec<RecordedEvent>,
    transitions: &mut Vec<(DateTime<Utc>, usize)>,
    t: Transition,
    at: DateTime<Utc>,
) {
    assert!(t.events[0].is_input(), "a transition opens with its input");
    assert!(
        t.events[1..].iter().all(|e| !e.is_input()),
        "inputs only open transitions: {:?}",
        t.events
    );
    transitions.push((at, t.events.len()));
    for e in t.events {
        let seq = history.len() as i64 + 1;
        out.push(format!("{seq:>3} {}", r.event(&e)));
        history.push(RecordedEvent { seq, at, event: e });
    }
    for a in &t.actions {
        out.push(format!("      => {}", r.action(a)));
    }
}

/// The latest decision event of the history that `pick` accepts, mapped.
fn latest<T>(history: &[RecordedEvent], pick: impl Fn(&Event) -> Option<T>) -> Option<T> {
    history.iter().rev().find_map(|r| pick(&r.event))
}

fn resolve(inp: &In, history: &[RecordedEvent]) -> Event {
    let effect_key = |s: &str| {
        latest(history, |e| match e {
            Event::EffectRequested { step, key, .. } if step == s => Some(key.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no effect of step {s} in the history"))
    };
    match inp {
        In::Ok(step, result) => Event::EffectCompleted {
            key: effect_key(step),
            result: result.clone(),
        },
        In::Fail(step, error, retryable) => Event::EffectFailed {
            key: effect_key(step),
            error: error.to_string(),
            retryable: *retryable,
        },
        In::Fire(s, p) => Event::TimerFired {
            timer: latest(history, |e| match e {
                Event::TimerSet {
                    timer,
                    step,
                    purpose,
                    ..
                } if step == s && purpose == p => Some(timer.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {p:?} timer of step {s} in the history")),
        },
        In::Event(name, payload) => Event::EventReceived {
            wait: latest(history, |e| match e {
                Event::EventAwaited { wait, event, .. } if event == name => Some(wait.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no wait for {name} in the history")),
            event: name.to_string(),
            payload: payload.clone(),
        },
        In::Decide(s, outcome, data, by) => Event::TaskDecided {
            task: latest(history, |e| match e {
                Event::TaskCreated { step, task, .. } if step == s => Some(task.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no task of step {s} in the history")),
            outcome: outcome.to_string(),
            data: data.clone(),
            by: by.to_string(),
        },
        In::Child(s, status, output) => Event::ChildFinished {
            child: latest(history, |e| match e {
                Event::ChildStarted { step, child, .. } if step == s => Some(child.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no child of step {s} in the history")),
            status: status.to_string(),
            output: output.clone(),
        },
        In::Cancel(reason) => Event::CancelRequested {
            reason: reason.to_string(),
            by: "operateur".into(),
        },
        In::Raw(e) => e.clone(),
    }
}

fn seal_history(
    history: &[RecordedEvent],
    transitions: &[(DateTime<Utc>, usize)],
) -> Vec<SealedEvent> {
    let mut sealed: Vec<SealedEvent> = Vec::new();
    let mut i = 0;
    for (at, n) in transitions {
        let events: Vec<Event> = history[i..i + n].iter().map(|r| r.event.clone()).collect();
        let (seq, hash) = sealed
            .last()
            .map(|e| (e.seq, e.hash.clone()))
            .unwrap_or((0, GENESIS.to_string()));
        sealed.extend(chain::seal(&events, *at, seq, &hash));
        i += n;
    }
    sealed
}

fn as_link(e: &SealedEvent) -> (i64, i64, &str, &str, &str, &str) {
    (
        e.seq,
        e.at.timestamp_millis(),
        e.kind.as_str(),
        e.payload.as_str(),
        e.prev_hash.as_str(),
        e.hash.as_str(),
    )
}

/// Runs of a block of up to 4 lines repeated 3 times or more, shown once with their count.
fn collapse(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    'outer: while i < lines.len() {
        for p in 1..=4 {
            let mut reps = 1;
            while i + (reps + 1) * p <= lines.len()
                && (0..p).all(|k| strip_seq(&lines[i + k]) == strip_seq(&lines[i + reps * p + k]))
            {
                reps += 1;
            }
            if reps >= 3 {
                for line in &lines[i..i + p] {
                    out.push(line.clone());
                }
                out.push(format!(
                    "    … these {p} lines {reps} times in all, up to event {}",
                    lines[i + reps * p - 1]
                        .split_whitespace()
                        .next()
                        .unwrap_or("?")
                ));
                i += reps * p;
                continue 'outer;
            }
        }
        out.push(lines[i].clone());
        i += 1;
    }
    out
}

fn strip_seq(line: &str) -> &str {
    let t = line.trim_start();
    match t.split_once(' ') {
        Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => t,
    }
}

struct Renderer<'a> {
    wf: &'a Wf,
}

fn short(id: &str) -> String {
    if uuid::Uuid::parse_str(id).is_ok() {
        id[..8].to_string()
    } else {
        id.to_string()
    }
}

fn js(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

impl Renderer<'_> {
    fn at(&self, at: DateTime<Utc>) -> String {
        let secs = (at - t0()).num_seconds();
        if secs >= 0 {
            format!("@+{}", IsoDuration::from_seconds(secs as u64))
        } else {
            format!("@{}", at.to_rfc3339())
        }
    }

    fn time(&self, at: &DateTime<Utc>) -> String {
        self.at(*at).trim_start_matches('@').to_string()
    }

    fn hash(&self, h: &str) -> String {
        if h == content_hash(self.wf.yaml) {
            return "sha(workflow)".into();
        }
        for (name, src) in &self.wf.rules {
            if h == content_hash(src) {
                return format!("sha(rules/{name})");
            }
        }
        for (path, src) in &self.wf.templates {
            if h == content_hash(src) {
                return format!("sha(templates/{path})");
            }
        }
        for id in &self.wf.subs {
            if h == content_hash(id) {
                return format!("sha(sub {id})");
            }
        }
        format!("?{}", &h[..h.len().min(8)])
    }

    fn vars(&self, state: &CaseState) -> String {
        let v: serde_json::Map<String, Value> = state
            .vars
            .iter()
            .filter(|(k, _)| k.as_str() != "input")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        js(&v)
    }

    fn event(&self, e: &Event) -> String {
        match e {
            Event::CaseStarted {
                workflow,
                version,
                workflow_hash,
                pins,
                input,
                business_key,
                parent,
            } => {
                let pins: Vec<String> = pins
                    .iter()
                    .map(|(k, h)| format!("{k}={}", self.hash(h)))
                    .collect();
                let mut s = format!(
                    "case_started {workflow} v{version} {} pins=[{}] input={}",
                    self.hash(workflow_hash),
                    pins.join(", "),
                    js(input)
                );
                if let Some(k) = business_key {
                    s.push_str(&format!(" business_key={k}"));
                }
                if let Some(p) = parent {
                    s.push_str(&format!(" parent={}/{}", p.case_id, p.step));
                }
                s
            }
            Event::EffectCompleted { key, result } => {
                format!("effect_completed {key} {}", js(result))
            }
            Event::EffectFailed {
                key,
                error,
                retryable,
            } => format!("effect_failed {key} {error:?} retryable={retryable}"),
            Event::TimerFired { timer } => format!("timer_fired {}", short(timer)),
            Event::EventReceived {
                wait,
                event,
                payload,
            } => format!("event_received {wait} {event} {}", js(payload)),
            Event::TaskDecided {
                task,
                outcome,
                data,
                by,
            } => format!(
                "task_decided {} {outcome} by={by} data={}",
                short(task),
                js(data)
            ),
            Event::ChildFinished {
                child,
                status,
                output,
            } => format!("child_finished {} {status} {}", short(child), js(output)),
            Event::CancelRequested { reason, by } => {
                format!("cancel_requested {reason:?} by={by}")
            }
            Event::StepStarted { step } => format!("step_started {step}"),
            Event::RuleEvaluated {
                step,
                rule,
                rule_hash,
                inputs,
                output,
            } => format!(
                "rule_evaluated {step} {rule} {} inputs={} -> {}",
                self.hash(rule_hash),
                js(inputs),
                js(output)
            ),
            Event::VariablesAssigned { step, values } => {
                format!("variables_assigned {step} {}", js(values))
            }
            Event::BranchTaken { step, arm, target } => format!(
                "branch_taken {step} arm={} -> {target}",
                arm.map(|a| a.to_string()).unwrap_or_else(|| "none".into())
            ),
            Event::TemplateRendered {
                step,
                template,
                template_hash,
                output,
            } => format!(
                "template_rendered {step} {template} {} {output:?}",
                self.hash(template_hash)
            ),
            Event::EffectRequested {
                step,
                key,
                connector,
                operation,
                request,
                attempt,
                timeout_ms,
            } => {
                let mut s = format!(
                    "effect_requested {step} {key} {connector}.{operation} attempt={attempt} {}",
                    js(request)
                );
                if let Some(t) = timeout_ms {
                    s.push_str(&format!(" timeout_ms={t}"));
                }
                s
            }
            Event::TimerSet {
                timer,
                step,
                fire_at,
                purpose,
            } => format!(
                "timer_set {timer} {step} {} at={}",
                purpose.name(),
                self.time(fire_at)
            ),
            Event::TimerCancelled { timer } => format!("timer_cancelled {timer}"),
            Event::EventAwaited {
                step,
                wait,
                event,
                correlation,
            } => format!("event_awaited {step} {wait} {event} {}", js(correlation)),
            Event::EventTimedOut { step, wait } => format!("event_timed_out {step} {wait}"),
            Event::TaskCreated {
                step,
                task,
                role,
                title,
                form,
                due_at,
            } => {
                let mut s = format!(
                    "task_created {step} {} role={role} {title:?} outcomes={}",
                    short(task),
                    js(&form["outcomes"])
                );
                if form["four_eyes"] == json!(true) {
                    s.push_str(" four_eyes");
                }
                if let Some(e) = form["escalate_to"].as_str() {
                    s.push_str(&format!(" escalate_to={e}"));
                }
                if let Some(d) = due_at {
                    s.push_str(&format!(" due={}", self.time(d)));
                }
                s
            }
            Event::TaskAwaitingSecondDecision { task, first_by } => format!(
                "task_awaiting_second_decision {} first_by={first_by}",
                short(task)
            ),
            Event::TaskCompleted { task, outcome, by } => {
                format!("task_completed {} {outcome} by={by}", short(task))
            }
            Event::TaskReminded { task } => format!("task_reminded {}", short(task)),
            Event::TaskOverdue { task, escalated_to } => format!(
                "task_overdue {} escalated_to={}",
                short(task),
                escalated_to.as_deref().unwrap_or("-")
            ),
            Event::TaskCancelled { task } => format!("task_cancelled {}", short(task)),
            Event::ChildStarted {
                step,
                child,
                workflow,
                input,
            } => format!(
                "child_started {step} {} {workflow} {}",
                short(child),
                js(input)
            ),
            Event::StepCompleted { step } => format!("step_completed {step}"),
            Event::StepFailed {
                step,
                error,
                attempt,
                will_retry,
            } => format!("step_failed {step} {error:?} attempt={attempt} will_retry={will_retry}"),
            Event::CompensationStarted { reason } => format!("compensation_started {reason:?}"),
            Event::Compensated { step } => format!("compensated {step}"),
            Event::CompensationFailed { step, error } => {
                format!("compensation_failed {step} {error:?}")
            }
            Event::CaseCompleted { output } => format!("case_completed {}", js(output)),
            Event::CaseFailed { error } => format!("case_failed {error:?}"),
            Event::CaseCancelled { reason } => format!("case_cancelled {reason:?}"),
            #[allow(unreachable_patterns)]
            other => format!("{} {}", other.kind(), js(&other.payload())),
        }
    }

    fn action(&self, a: &Action) -> String {
        match a {
            Action::PerformEffect {
                key,
                connector,
                operation,
                attempt,
                ..
            } => format!("perform {key} {connector}.{operation} attempt={attempt}"),
            Action::EffectSettled { key } => format!("settled {key}"),
            Action::SetTimer {
                timer,
                fire_at,
                purpose,
            } => format!(
                "set_timer {timer} {} at={}",
                purpose.name(),
                self.time(fire_at)
            ),
            Action::CancelTimer { timer } => format!("cancel_timer {timer}"),
            Action::AwaitEvent {
                wait,
                event,
                correlation,
            } => format!("await {wait} {event} {correlation}"),
            Action::StopAwaiting { wait } => format!("stop_awaiting {wait}"),
            Action::CreateTask {
                task, role, due_at, ..
            } => format!(
                "create_task {} role={role}{}",
                short(task),
                due_at
                    .map(|d| format!(" due={}", self.time(&d)))
                    .unwrap_or_default()
            ),
            Action::UpdateTask {
                task,
                status,
                role,
                by,
                outcome,
                ..
            } => {
                let mut s = format!("update_task {} {status}", short(task));
                if let Some(r) = role {
                    s.push_str(&format!(" role={r}"));
                }
                if let Some(b) = by {
                    s.push_str(&format!(" by={b}"));
                }
                if let Some(o) = outcome {
                    s.push_str(&format!(" outcome={o}"));
                }
                s
            }
            Action::StartChild {
                child,
                workflow,
                workflow_hash,
                input,
                parent,
            } => format!(
                "start_child {} {workflow} {} {} parent={}/{}",
                short(child),
                self.hash(workflow_hash),
                js(input),
                parent.case_id,
                parent.step
            ),
            Action::Finished { status, output } => {
                format!("finished {} {}", status.name(), js(output))
            }
            Action::CancelChild { child } => format!("cancel_child {}", short(child)),
        }
    }
}

const SECOND: i64 = 1;
const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

// =============================================================================================
// Step kinds

#[test]
fn rule_records_inputs_output_and_module_hash() {
    wf(r#"
id: penalite
version: 2
title: Pénalité
input:
  facture: { type: text }
  montant: { type: integer }
  jours: { type: integer }
business_key: input.facture
steps:
  - id: calcul
    rule: penalites.penalite
    with:
      montant: input.montant
      jours: input.jours
    result: p
output:
  penalite: p
"#)
    .rule(
        "penalites",
        "fn penalite(montant, jours) {\n  if jours > 30 { montant / 10 } else { 0 }\n}\n",
    )
    .run(json!({"facture": "F-1", "montant": 1200, "jours": 45}), &[])
    .check(expect![[r#"
        @+PT0S start
          1 case_started penalite v2 sha(workflow) pins=[rule:penalites=sha(rules/penalites)] input={"facture":"F-1","jours":45,"montant":1200} business_key=F-1
          2 step_started calcul
          3 rule_evaluated calcul penalites.penalite sha(rules/penalites) inputs={"jours":45,"montant":1200} -> 120
          4 step_completed calcul
          5 case_completed {"penalite":120}
              => finished completed {"penalite":120}
        == completed vars={"p":120} output={"penalite":120}
    "#]]);
}

#[test]
fn assign_sees_the_earlier_assignments_of_the_step() {
    wf(r#"
id: calc
version: 1
title: Calcul
input:
  n: { type: integer }
params:
  taux: 3
steps:
  - id: calcul
    assign:
      double: input.n * 2
      total: double + params.taux
      libelle: '"jour " + today'
output:
  total: total
  libelle: libelle
"#)
    .run(json!({"n": 5}), &[])
    .check(expect![[r#"
        @+PT0S start
          1 case_started calc v1 sha(workflow) pins=[] input={"n":5}
          2 step_started calcul
          3 variables_assigned calcul {"double":10,"libelle":"jour 2026-03-02","total":13}
          4 step_completed calcul
          5 case_completed {"libelle":"jour 2026-03-02","total":13}
              => finished completed {"libelle":"jour 2026-03-02","total":13}
        == completed vars={"double":10,"libelle":"jour 2026-03-02","total":13} output={"libelle":"jour 2026-03-02","total":13}
    "#]]);
}

const BRANCHES: &str = r#"
id: tri
version: 1
title: Tri
input:
  montant: { type: integer }
steps:
  - id: choix
    branch:
      - when: input.montant > 10000
        goto: contentieux
      - when: input.montant > 1000
        goto: relance
    otherwise: classement
  - id: contentieux
    assign: { voie: '"contentieux"' }
    next: end
  - id: relance
    assign: { voie: '"relance"' }
    next: end
  - id: classement
    assign: { voie: '"classement"' }
  - id: tri_sans_otherwise
    branch:
      - when: input.montant < 0
        goto: contentieux
  - id: fin
    assign: { fini: "true" }
output:
  voie: voie
"#;

#[test]
fn the_case_variable_is_readable_in_expressions() {
    // `case` is a reserved word of Rhai: expressions read the case as `dossier` (templates may
    // use either name).
    wf(r#"
id: dossier
version: 1
title: Dossier
steps:
  - id: libelle
    assign: { libelle: '"dossier " + dossier.id' }
output:
  libelle: libelle
"#)
    .run(json!({}), &[])
    .check(expect![[r#"
        @+PT0S start
          1 case_started dossier v1 sha(workflow) pins=[] input={}
          2 step_started libelle
          3 variables_assigned libelle {"libelle":"dossier c1"}
          4 step_completed libelle
          5 case_completed {"libelle":"dossier c1"}
              => finished completed {"libelle":"dossier c1"}
        == completed vars={"libelle":"dossier c1"} output={"libelle":"dossier c1"}
    "#]]);
}

#[test]
fn branch_takes_the_first_arm_that_holds() {
    wf(BRANCHES)
        .run(json!({"montant": 50000}), &[])
        .check(expect![[r#"
        @+PT0S start
          1 case_started tri v1 sha(workflow) pins=[] input={"montant":50000}
          2 step_started choix
          3 branch_taken choix arm=0 -> contentieux
          4 step_completed choix
          5 step_started contentieux
          6 variables_assigned contentieux {"voie":"contentieux"}
          7 step_completed contentieux
          8 case_completed {"voie":"contentieux"}
              => finished completed {"voie":"contentieux"}
        == completed vars={"voie":"contentieux"} output={"voie":"contentieux"}
    "#]]);
    wf(BRANCHES)
        .run(json!({"montant": 5000}), &[])
        .check(expect![[r#"
        @+PT0S start
          1 case_started tri v1 sha(workflow) pins=[] input={"montant":5000}
          2 step_started choix
          3 branch_taken choix arm=1 -> relance
          4 step_completed choix
          5 step_started relance
          6 variables_assigned relance {"voie":"relance"}
          7 step_completed relance
          8 case_completed {"voie":"relance"}
              => finished completed {"voie":"relance"}
        == completed vars={"voie":"relance"} output={"voie":"relance"}
    "#]]);
}

#[test]
fn branch_otherwise_and_fall_through() {
    // No arm holds: `otherwise`; then a branch with neither arm nor otherwise falls through to
    // the next step.
    wf(BRANCHES)
        .run(json!({"montant": 10}), &[])
        .check(expect![[r#"
            @+PT0S start
              1 case_started tri v1 sha(workflow) pins=[] input={"montant":10}
              2 step_started choix
              3 branch_taken choix arm=none -> classement
              4 step_completed choix
              5 step_started classement
              6 variables_assigned classement {"voie":"classement"}
              7 step_completed classement
              8 step_started tri_sans_otherwise
              9 branch_taken tri_sans_otherwise arm=none -> fin
             10 step_completed tri_sans_otherwise
             11 step_started fin
             12 variables_assigned fin {"fini":true}
             13 step_completed fin
             14 case_completed {"voie":"classement"}
                  => finished completed {"voie":"classement"}
            == completed vars={"fini":true,"voie":"classement"} output={"voie":"classement"}
        "#]]);
}

#[test]
fn wait_for_a_duration_then_until_a_date() {
    wf(r#"
id: attente
version: 1
title: Attente
input:
  echeance: { type: date }
params:
  delai: P1D
steps:
  - id: deux_heures
    wait: { duration: PT2H }
  - id: un_jour
    wait: { duration: params.delai }
  - id: echeance
    wait: { until: input.echeance }
"#)
    .run(
        json!({"echeance": "2026-03-10"}),
        &[
            // Too early for nothing: a timer fires when the runtime says so.
            (2 * HOUR, In::Fire("deux_heures", TimerPurpose::Wait)),
            // The same timer again (a redelivery): ignored.
            (
                2 * HOUR + SECOND,
                In::Fire("deux_heures", TimerPurpose::Wait),
            ),
            (DAY + 2 * HOUR, In::Fire("un_jour", TimerPurpose::Wait)),
            (8 * DAY - 9 * HOUR, In::Fire("echeance", TimerPurpose::Wait)),
        ],
    )
    .check(expect![[r#"
        @+PT0S start
          1 case_started attente v1 sha(workflow) pins=[] input={"echeance":"2026-03-10"}
          2 step_started deux_heures
          3 timer_set c1:t1 deux_heures wait at=+PT2H
              => set_timer c1:t1 wait at=+PT2H
        @+PT2H
          4 timer_fired c1:t1
          5 step_completed deux_heures
          6 step_started un_jour
          7 timer_set c1:t2 un_jour wait at=+P1DT2H
              => set_timer c1:t2 wait at=+P1DT2H
        @+PT2H1S timer_fired c1:t1 (ignored)
        @+P1DT2H
          8 timer_fired c1:t2
          9 step_completed un_jour
         10 step_started echeance
         11 timer_set c1:t3 echeance wait at=+P7DT15H
              => set_timer c1:t3 wait at=+P7DT15H
        @+P7DT15H
         12 timer_fired c1:t3
         13 step_completed echeance
         14 case_completed {}
              => finished completed {}
        == completed vars={} output={}
    "#]]);
}

const WAIT_EVENT: &str = r#"
id: paiement
version: 1
title: Paiement
input:
  facture: { type: text }
steps:
  - id: attente_paiement
    wait_event:
      event: paiement_recu
      correlate:
        facture: input.facture
      timeout: P7D
      on_timeout: relance
    result: paiement
  - id: encaisse
    assign: { etat: '"payee"' }
    next: end
  - id: relance
    assign: { etat: '"relancee"' }
output:
  etat: etat
"#;

#[test]
fn wait_event_received_cancels_its_timeout() {
    wf(WAIT_EVENT)
        .run(
            json!({"facture": "F-7"}),
            &[(
                3 * DAY,
                In::Event("paiement_recu", json!({"facture": "F-7", "montant": 100})),
            )],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started paiement v1 sha(workflow) pins=[] input={"facture":"F-7"}
              2 step_started attente_paiement
              3 event_awaited attente_paiement c1:w1 paiement_recu {"facture":"F-7"}
              4 timer_set c1:t2 attente_paiement event_timeout at=+P7D
                  => await c1:w1 paiement_recu {"facture":"F-7"}
                  => set_timer c1:t2 event_timeout at=+P7D
            @+P3D
              5 event_received c1:w1 paiement_recu {"facture":"F-7","montant":100}
              6 timer_cancelled c1:t2
              7 step_completed attente_paiement
              8 step_started encaisse
              9 variables_assigned encaisse {"etat":"payee"}
             10 step_completed encaisse
             11 case_completed {"etat":"payee"}
                  => stop_awaiting c1:w1
                  => cancel_timer c1:t2
                  => finished completed {"etat":"payee"}
            == completed vars={"etat":"payee","paiement":{"facture":"F-7","montant":100}} output={"etat":"payee"}
        "#]]);
}

#[test]
fn wait_event_timed_out_goes_to_on_timeout() {
    wf(WAIT_EVENT)
        .run(
            json!({"facture": "F-7"}),
            &[
                (
                    7 * DAY,
                    In::Fire("attente_paiement", TimerPurpose::EventTimeout),
                ),
                // The payment arrives too late: the wait is gone.
                (
                    8 * DAY,
                    In::Raw(Event::EventReceived {
                        wait: "c1:w1".into(),
                        event: "paiement_recu".into(),
                        payload: json!({"facture": "F-7"}),
                    }),
                ),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started paiement v1 sha(workflow) pins=[] input={"facture":"F-7"}
              2 step_started attente_paiement
              3 event_awaited attente_paiement c1:w1 paiement_recu {"facture":"F-7"}
              4 timer_set c1:t2 attente_paiement event_timeout at=+P7D
                  => await c1:w1 paiement_recu {"facture":"F-7"}
                  => set_timer c1:t2 event_timeout at=+P7D
            @+P7D
              5 timer_fired c1:t2
              6 event_timed_out attente_paiement c1:w1
              7 step_completed attente_paiement
              8 step_started relance
              9 variables_assigned relance {"etat":"relancee"}
             10 step_completed relance
             11 case_completed {"etat":"relancee"}
                  => stop_awaiting c1:w1
                  => finished completed {"etat":"relancee"}
            @+P8D event_received c1:w1 paiement_recu {"facture":"F-7"} (ignored)
            == completed vars={"etat":"relancee","paiement":null} output={"etat":"relancee"}
        "#]]);
}

const TASK: &str = r#"
id: validation
version: 1
title: Validation
input:
  nom: { type: text }
steps:
  - id: revue
    task:
      role: comptable
      title: "Valider le dossier de {{ input.nom }}"
      instructions: "Vérifier les pièces"
      fields:
        commentaire: { type: text }
        montant: { type: integer, required: false }
      outcomes:
        valider: accepte
        refuser: refuse
    result: decision
  - id: accepte
    assign: { etat: '"accepte"' }
    next: end
  - id: refuse
    assign: { etat: '"refuse: " + decision.data.commentaire' }
output:
  etat: etat
"#;

#[test]
fn task_outcome_leads_to_its_step_and_bad_decisions_are_refused() {
    wf(TASK)
        .run(
            json!({"nom": "Kouassi"}),
            &[
                (HOUR, In::Decide("revue", "archiver", json!({"commentaire": "x"}), "ama")),
                (HOUR, In::Decide("revue", "refuser", json!({"montant": "dix"}), "ama")),
                (
                    HOUR,
                    In::Raw(Event::TaskDecided {
                        task: "inconnue".into(),
                        outcome: "valider".into(),
                        data: json!({}),
                        by: "ama".into(),
                    }),
                ),
                (
                    2 * HOUR,
                    In::Decide("revue", "refuser", json!({"commentaire": "pièces manquantes"}), "ama"),
                ),
                // Decided already: the task is no longer open.
                (3 * HOUR, In::Decide("revue", "valider", json!({"commentaire": "ok"}), "kofi")),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started validation v1 sha(workflow) pins=[] input={"nom":"Kouassi"}
              2 step_started revue
              3 task_created revue f112ad92 role=comptable "Valider le dossier de Kouassi" outcomes=["valider","refuser"]
                  => create_task f112ad92 role=comptable
            @+PT1H task_decided f112ad92 archiver by=ama data={"commentaire":"x"} !! rejected: Outcome { outcome: "archiver", known: "valider, refuser" }
            @+PT1H task_decided f112ad92 refuser by=ama data={"montant":"dix"} !! rejected: Form([FieldError { field: "commentaire", message: "is required (text)" }, FieldError { field: "montant", message: "expected a whole number, got text" }])
            @+PT1H task_decided inconnue valider by=ama data={} !! rejected: UnknownTask("inconnue")
            @+PT2H
              4 task_decided f112ad92 refuser by=ama data={"commentaire":"pièces manquantes"}
              5 task_completed f112ad92 refuser by=ama
              6 step_completed revue
              7 step_started refuse
              8 variables_assigned refuse {"etat":"refuse: pièces manquantes"}
              9 step_completed refuse
             10 case_completed {"etat":"refuse: pièces manquantes"}
                  => update_task f112ad92 completed by=ama outcome=refuser
                  => finished completed {"etat":"refuse: pièces manquantes"}
            @+PT3H task_decided f112ad92 valider by=kofi data={"commentaire":"ok"} !! rejected: UnknownTask("f112ad92-0980-5233-99e4-3a201779eb77")
            == completed vars={"decision":{"by":"ama","data":{"commentaire":"pièces manquantes"},"outcome":"refuser"},"etat":"refuse: pièces manquantes"} output={"etat":"refuse: pièces manquantes"}
        "#]]);
}

const FOUR_EYES: &str = r#"
id: virement
version: 1
title: Virement
steps:
  - id: approbation
    task:
      role: tresorier
      title: Approuver le virement
      four_eyes: true
      outcomes:
        approuver: execute
        rejeter: end
    result: decision
  - id: execute
    assign: { execute: "true" }
output:
  approuve_par: decision.by
  premier: decision.first_by
"#;

#[test]
fn four_eyes_needs_a_second_person() {
    wf(FOUR_EYES)
        .run(
            json!({}),
            &[
                (HOUR, In::Decide("approbation", "approuver", json!({}), "alice")),
                // The same person again: refused, nothing recorded.
                (2 * HOUR, In::Decide("approbation", "approuver", json!({}), "alice")),
                (3 * HOUR, In::Decide("approbation", "approuver", json!({}), "bob")),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started virement v1 sha(workflow) pins=[] input={}
              2 step_started approbation
              3 task_created approbation f112ad92 role=tresorier "Approuver le virement" outcomes=["approuver","rejeter"] four_eyes
                  => create_task f112ad92 role=tresorier
            @+PT1H
              4 task_decided f112ad92 approuver by=alice data={}
              5 task_awaiting_second_decision f112ad92 first_by=alice
                  => update_task f112ad92 awaiting_second by=alice outcome=approuver
            @+PT2H task_decided f112ad92 approuver by=alice data={} !! rejected: FourEyes { by: "alice" }
            @+PT3H
              6 task_decided f112ad92 approuver by=bob data={}
              7 task_completed f112ad92 approuver by=bob
              8 step_completed approbation
              9 step_started execute
             10 variables_assigned execute {"execute":true}
             11 step_completed execute
             12 case_completed {"approuve_par":"bob","premier":"alice"}
                  => update_task f112ad92 completed by=bob outcome=approuver
                  => finished completed {"approuve_par":"bob","premier":"alice"}
            == completed vars={"decision":{"by":"bob","data":{},"first_by":"alice","outcome":"approuver"},"execute":true} output={"approuve_par":"bob","premier":"alice"}
        "#]]);
}

#[test]
fn four_eyes_refuses_the_same_person_with_a_typed_rejection() {
    let prog = wf(FOUR_EYES).compile();
    let (mut state, t) = CaseState::start(&prog, CASE, json!({}), None, None, t0()).unwrap();
    let task = t
        .events
        .iter()
        .find_map(|e| match e {
            Event::TaskCreated { task, .. } => Some(task.clone()),
            _ => None,
        })
        .unwrap();
    let decide = |by: &str| Event::TaskDecided {
        task: task.clone(),
        outcome: "approuver".into(),
        data: json!({}),
        by: by.into(),
    };
    let first = state.handle(&prog, decide("alice"), t0()).unwrap();
    assert_eq!(first.events.len(), 2);
    assert_eq!(state.status_name(), "waiting");
    assert_eq!(
        state.handle(&prog, decide("alice"), t0()),
        Err(Rejection::FourEyes { by: "alice".into() })
    );
    let second = state.handle(&prog, decide("bob"), t0()).unwrap();
    assert!(second
        .events
        .iter()
        .any(|e| matches!(e, Event::TaskCompleted { by, .. } if by == "bob")));
    assert_eq!(state.status_name(), "completed");
}

#[test]
fn four_eyes_second_person_must_confirm_the_first_outcome() {
    // The model documents four_eyes as "the second confirms the first's outcome". Alice approves,
    // Bob rejects: the second decision does not confirm the first, so the transfer must not go
    // on along Bob's outcome as if two people had agreed on it.
    let run = wf(FOUR_EYES).run(
        json!({}),
        &[
            (
                HOUR,
                In::Decide("approbation", "approuver", json!({}), "alice"),
            ),
            (
                2 * HOUR,
                In::Decide("approbation", "rejeter", json!({}), "bob"),
            ),
        ],
    );
    // Bob does not confirm alice's outcome: both decisions are recorded and the task is open
    // again, waiting for a new first decision.
    run.check(expect![[r#"
        @+PT0S start
          1 case_started virement v1 sha(workflow) pins=[] input={}
          2 step_started approbation
          3 task_created approbation f112ad92 role=tresorier "Approuver le virement" outcomes=["approuver","rejeter"] four_eyes
              => create_task f112ad92 role=tresorier
        @+PT1H
          4 task_decided f112ad92 approuver by=alice data={}
          5 task_awaiting_second_decision f112ad92 first_by=alice
              => update_task f112ad92 awaiting_second by=alice outcome=approuver
        @+PT2H
          6 task_decided f112ad92 rejeter by=bob data={}
          7 task_decisions_differ {"first_by":"alice","first_outcome":"approuver","second_by":"bob","second_outcome":"rejeter","task":"f112ad92-0980-5233-99e4-3a201779eb77"}
              => update_task f112ad92 open
        == waiting vars={} output=null
    "#]]);
}

#[test]
fn four_eyes_escalation_keeps_the_first_decision() {
    let run = wf(r#"
id: virement_du
version: 1
title: Virement à échéance
steps:
  - id: approbation
    task:
      role: tresorier
      title: Approuver
      four_eyes: true
      outcomes: { approuver: end }
      due: P1D
      escalate_to: directeur
"#)
    .run(
        json!({}),
        &[
            (
                HOUR,
                In::Decide("approbation", "approuver", json!({}), "alice"),
            ),
            (DAY, In::Fire("approbation", TimerPurpose::TaskDue)),
            (
                DAY + HOUR,
                In::Decide("approbation", "approuver", json!({}), "alice"),
            ),
            (
                DAY + 2 * HOUR,
                In::Decide("approbation", "approuver", json!({}), "directeur_1"),
            ),
        ],
    );
    // The escalation only moves the task: it stays `awaiting_second` with alice's decision,
    // alice still cannot be the second person, and the director confirms.
    run.check(expect![[r#"
        @+PT0S start
          1 case_started virement_du v1 sha(workflow) pins=[] input={}
          2 step_started approbation
          3 task_created approbation f112ad92 role=tresorier "Approuver" outcomes=["approuver"] four_eyes escalate_to=directeur due=+P1D
          4 timer_set c1:t2 approbation task_due at=+P1D
              => create_task f112ad92 role=tresorier due=+P1D
              => set_timer c1:t2 task_due at=+P1D
        @+PT1H
          5 task_decided f112ad92 approuver by=alice data={}
          6 task_awaiting_second_decision f112ad92 first_by=alice
              => update_task f112ad92 awaiting_second by=alice outcome=approuver
        @+P1D
          7 timer_fired c1:t2
          8 task_overdue f112ad92 escalated_to=directeur
              => update_task f112ad92 awaiting_second role=directeur by=alice outcome=approuver
        @+P1DT1H task_decided f112ad92 approuver by=alice data={} !! rejected: FourEyes { by: "alice" }
        @+P1DT2H
          9 task_decided f112ad92 approuver by=directeur_1 data={}
         10 task_completed f112ad92 approuver by=directeur_1
         11 step_completed approbation
         12 case_completed {}
              => update_task f112ad92 completed by=directeur_1 outcome=approuver
              => finished completed {}
        == completed vars={} output={}
    "#]]);
}

const REMINDERS: &str = r#"
id: relance_tache
version: 1
title: Tâche avec relances
steps:
  - id: revue
    task:
      role: agent
      title: Revoir
      outcomes: { ok: end }
      reminders: [P1D, P2D]
      due: P3D
      escalate_to: chef
"#;

#[test]
fn task_reminders_then_escalation_when_due() {
    wf(REMINDERS)
        .run(
            json!({}),
            &[
                // Reminders fired by id (`Fire` would take the latest one, the second).
                (DAY, In::Raw(Event::TimerFired { timer: "c1:t2".into() })),
                // The first one again: stale.
                (DAY + MINUTE, In::Raw(Event::TimerFired { timer: "c1:t2".into() })),
                (2 * DAY, In::Raw(Event::TimerFired { timer: "c1:t3".into() })),
                (3 * DAY, In::Fire("revue", TimerPurpose::TaskDue)),
                (4 * DAY, In::Decide("revue", "ok", json!({}), "chef_dupont")),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started relance_tache v1 sha(workflow) pins=[] input={}
              2 step_started revue
              3 task_created revue f112ad92 role=agent "Revoir" outcomes=["ok"] escalate_to=chef due=+P3D
              4 timer_set c1:t2 revue task_reminder at=+P1D
              5 timer_set c1:t3 revue task_reminder at=+P2D
              6 timer_set c1:t4 revue task_due at=+P3D
                  => create_task f112ad92 role=agent due=+P3D
                  => set_timer c1:t2 task_reminder at=+P1D
                  => set_timer c1:t3 task_reminder at=+P2D
                  => set_timer c1:t4 task_due at=+P3D
            @+P1D
              7 timer_fired c1:t2
              8 task_reminded f112ad92
            @+P1DT1M timer_fired c1:t2 (ignored)
            @+P2D
              9 timer_fired c1:t3
             10 task_reminded f112ad92
            @+P3D
             11 timer_fired c1:t4
             12 task_overdue f112ad92 escalated_to=chef
                  => update_task f112ad92 open role=chef
            @+P4D
             13 task_decided f112ad92 ok by=chef_dupont data={}
             14 task_completed f112ad92 ok by=chef_dupont
             15 step_completed revue
             16 case_completed {}
                  => update_task f112ad92 completed by=chef_dupont outcome=ok
                  => finished completed {}
            == completed vars={} output={}
        "#]]);
}

#[test]
fn task_decided_early_cancels_its_reminders_and_due_timer() {
    wf(REMINDERS)
        .run(
            json!({}),
            &[
                (DAY, In::Raw(Event::TimerFired { timer: "c1:t2".into() })),
                (DAY + HOUR, In::Decide("revue", "ok", json!({}), "agent_1")),
                // The due timer fires anyway (it was cancelled: stale).
                (3 * DAY, In::Raw(Event::TimerFired { timer: "c1:t4".into() })),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started relance_tache v1 sha(workflow) pins=[] input={}
              2 step_started revue
              3 task_created revue f112ad92 role=agent "Revoir" outcomes=["ok"] escalate_to=chef due=+P3D
              4 timer_set c1:t2 revue task_reminder at=+P1D
              5 timer_set c1:t3 revue task_reminder at=+P2D
              6 timer_set c1:t4 revue task_due at=+P3D
                  => create_task f112ad92 role=agent due=+P3D
                  => set_timer c1:t2 task_reminder at=+P1D
                  => set_timer c1:t3 task_reminder at=+P2D
                  => set_timer c1:t4 task_due at=+P3D
            @+P1D
              7 timer_fired c1:t2
              8 task_reminded f112ad92
            @+P1DT1H
              9 task_decided f112ad92 ok by=agent_1 data={}
             10 timer_cancelled c1:t3
             11 timer_cancelled c1:t4
             12 task_completed f112ad92 ok by=agent_1
             13 step_completed revue
             14 case_completed {}
                  => cancel_timer c1:t3
                  => cancel_timer c1:t4
                  => update_task f112ad92 completed by=agent_1 outcome=ok
                  => finished completed {}
            @+P3D timer_fired c1:t4 (ignored)
            == completed vars={} output={}
        "#]]);
}

const ACTION: &str = r#"
id: envoi
version: 1
title: Envoi
input:
  tel: { type: phone }
  nom: { type: text }
steps:
  - id: sms
    action:
      connector: sms
      templates:
        texte: sms.txt
    with:
      to: input.tel
      priorite: 2
    timeout: PT30S
    result: accuse
output:
  id: accuse.id
"#;

#[test]
fn action_success_sets_its_result() {
    wf(ACTION)
        .template("sms.txt", "Bonjour {{ input.nom }}, votre dossier avance.")
        .run(
            json!({"tel": "+2250700000000", "nom": "Awa"}),
            &[
                (5 * SECOND, In::Ok("sms", json!({"id": "m-1"}))),
                // The same answer delivered twice: ignored.
                (6 * SECOND, In::Ok("sms", json!({"id": "m-1"}))),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started envoi v1 sha(workflow) pins=[template:sms.txt=sha(templates/sms.txt)] input={"nom":"Awa","tel":"+2250700000000"}
              2 step_started sms
              3 effect_requested sms c1:sms#1 sms.send attempt=1 {"priorite":2,"texte":"Bonjour Awa, votre dossier avance.","to":"+2250700000000"} timeout_ms=30000
                  => perform c1:sms#1 sms.send attempt=1
            @+PT5S
              4 effect_completed c1:sms#1 {"id":"m-1"}
              5 step_completed sms
              6 case_completed {"id":"m-1"}
                  => settled c1:sms#1
                  => finished completed {"id":"m-1"}
            @+PT6S effect_completed c1:sms#1 {"id":"m-1"} (ignored)
            == completed vars={"accuse":{"id":"m-1"}} output={"id":"m-1"}
        "#]]);
}

const RETRY: &str = r#"
id: retry
version: 1
title: Retry
steps:
  - id: appel
    action: { connector: api, operation: post }
    with: { n: 1 }
    retry:
      max_attempts: 4
      backoff: PT10S
      max_backoff: PT1H
    result: r
"#;

#[test]
fn transient_failure_is_retried_with_doubling_backoff() {
    // Attempt 1 fails at +5s: retry at +15s (10 s); attempt 2 fails at +20s: retry at +40s
    // (20 s); attempt 3 fails at +41s: retry at +81s (40 s); attempt 4 succeeds. Same key.
    wf(RETRY)
        .run(
            json!({}),
            &[
                (5, In::Fail("appel", "503 Service Unavailable", true)),
                (15, In::Fire("appel", TimerPurpose::Retry)),
                (20, In::Fail("appel", "503 Service Unavailable", true)),
                (40, In::Fire("appel", TimerPurpose::Retry)),
                (41, In::Fail("appel", "timeout", true)),
                (81, In::Fire("appel", TimerPurpose::Retry)),
                (82, In::Ok("appel", json!({"ok": true}))),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started retry v1 sha(workflow) pins=[] input={}
              2 step_started appel
              3 effect_requested appel c1:appel#1 api.post attempt=1 {"n":1}
                  => perform c1:appel#1 api.post attempt=1
            @+PT5S
              4 effect_failed c1:appel#1 "503 Service Unavailable" retryable=true
              5 step_failed appel "503 Service Unavailable" attempt=1 will_retry=true
              6 timer_set c1:t2 appel retry at=+PT15S
                  => settled c1:appel#1
                  => set_timer c1:t2 retry at=+PT15S
            @+PT15S
              7 timer_fired c1:t2
              8 effect_requested appel c1:appel#1 api.post attempt=2 {"n":1}
                  => perform c1:appel#1 api.post attempt=2
            @+PT20S
              9 effect_failed c1:appel#1 "503 Service Unavailable" retryable=true
             10 step_failed appel "503 Service Unavailable" attempt=2 will_retry=true
             11 timer_set c1:t3 appel retry at=+PT40S
                  => settled c1:appel#1
                  => set_timer c1:t3 retry at=+PT40S
            @+PT40S
             12 timer_fired c1:t3
             13 effect_requested appel c1:appel#1 api.post attempt=3 {"n":1}
                  => perform c1:appel#1 api.post attempt=3
            @+PT41S
             14 effect_failed c1:appel#1 "timeout" retryable=true
             15 step_failed appel "timeout" attempt=3 will_retry=true
             16 timer_set c1:t4 appel retry at=+PT1M21S
                  => settled c1:appel#1
                  => set_timer c1:t4 retry at=+PT1M21S
            @+PT1M21S
             17 timer_fired c1:t4
             18 effect_requested appel c1:appel#1 api.post attempt=4 {"n":1}
                  => perform c1:appel#1 api.post attempt=4
            @+PT1M22S
             19 effect_completed c1:appel#1 {"ok":true}
             20 step_completed appel
             21 case_completed {}
                  => settled c1:appel#1
                  => finished completed {}
            == completed vars={"r":{"ok":true}} output={}
        "#]]);
}

#[test]
fn retry_backoff_is_capped_and_attempts_run_out() {
    let yaml = r#"
id: retry_cap
version: 1
title: Retry cap
steps:
  - id: appel
    action: { connector: api }
    retry:
      max_attempts: 3
      backoff: PT1M
      max_backoff: PT90S
"#;
    let run = wf(yaml).run(
        json!({}),
        &[
            (0, In::Fail("appel", "503", true)),
            (MINUTE, In::Fire("appel", TimerPurpose::Retry)),
            (MINUTE, In::Fail("appel", "503", true)),
            (MINUTE + 90, In::Fire("appel", TimerPurpose::Retry)),
            (MINUTE + 90, In::Fail("appel", "503", true)),
        ],
    );
    // Two waits: 60 s, then 120 s capped to 90 s; the third failure is the last attempt.
    let waits: Vec<i64> = run
        .history
        .iter()
        .filter_map(|r| match &r.event {
            Event::TimerSet { fire_at, .. } => Some((*fire_at - r.at).num_seconds()),
            _ => None,
        })
        .collect();
    assert_eq!(waits, vec![60, 90]);
    run.check(expect![[r#"
        @+PT0S start
          1 case_started retry_cap v1 sha(workflow) pins=[] input={}
          2 step_started appel
          3 effect_requested appel c1:appel#1 api.send attempt=1 {}
              => perform c1:appel#1 api.send attempt=1
        @+PT0S
          4 effect_failed c1:appel#1 "503" retryable=true
          5 step_failed appel "503" attempt=1 will_retry=true
          6 timer_set c1:t2 appel retry at=+PT1M
              => settled c1:appel#1
              => set_timer c1:t2 retry at=+PT1M
        @+PT1M
          7 timer_fired c1:t2
          8 effect_requested appel c1:appel#1 api.send attempt=2 {}
              => perform c1:appel#1 api.send attempt=2
        @+PT1M
          9 effect_failed c1:appel#1 "503" retryable=true
         10 step_failed appel "503" attempt=2 will_retry=true
         11 timer_set c1:t3 appel retry at=+PT2M30S
              => settled c1:appel#1
              => set_timer c1:t3 retry at=+PT2M30S
        @+PT2M30S
         12 timer_fired c1:t3
         13 effect_requested appel c1:appel#1 api.send attempt=3 {}
              => perform c1:appel#1 api.send attempt=3
        @+PT2M30S
         14 effect_failed c1:appel#1 "503" retryable=true
         15 step_failed appel "503" attempt=3 will_retry=false
         16 case_failed "step `appel` failed: 503"
              => settled c1:appel#1
              => finished failed "step `appel` failed: 503"
        == failed vars={} output="step `appel` failed: 503"
    "#]]);
}

const ON_ERROR: &str = r#"
id: secours
version: 1
title: Secours
steps:
  - id: courrier
    action: { connector: poste }
    retry: { max_attempts: 3 }
    on_error: appel_telephonique
  - id: fin_normale
    assign: { voie: '"courrier"' }
    next: end
  - id: appel_telephonique
    assign: { voie: '"telephone: " + error.message' }
output:
  voie: voie
"#;

#[test]
fn permanent_failure_goes_to_on_error_without_retry() {
    wf(ON_ERROR)
        .run(json!({}), &[(SECOND, In::Fail("courrier", "adresse inconnue", false))])
        .check(expect![[r#"
            @+PT0S start
              1 case_started secours v1 sha(workflow) pins=[] input={}
              2 step_started courrier
              3 effect_requested courrier c1:courrier#1 poste.send attempt=1 {}
                  => perform c1:courrier#1 poste.send attempt=1
            @+PT1S
              4 effect_failed c1:courrier#1 "adresse inconnue" retryable=false
              5 step_failed courrier "adresse inconnue" attempt=1 will_retry=false
              6 variables_assigned courrier {"error":{"message":"adresse inconnue","step":"courrier"}}
              7 step_started appel_telephonique
              8 variables_assigned appel_telephonique {"voie":"telephone: adresse inconnue"}
              9 step_completed appel_telephonique
             10 case_completed {"voie":"telephone: adresse inconnue"}
                  => settled c1:courrier#1
                  => finished completed {"voie":"telephone: adresse inconnue"}
            == completed vars={"error":{"message":"adresse inconnue","step":"courrier"},"voie":"telephone: adresse inconnue"} output={"voie":"telephone: adresse inconnue"}
        "#]]);
}

#[test]
fn failure_without_on_error_fails_the_case() {
    wf(r#"
id: sans_secours
version: 1
title: Sans secours
steps:
  - id: courrier
    action: { connector: poste }
  - id: jamais
    assign: { x: 1 }
"#)
    .run(
        json!({}),
        &[
            // Retryable, but the step has no retry policy.
            (SECOND, In::Fail("courrier", "503", true)),
        ],
    )
    .check(expect![[r#"
        @+PT0S start
          1 case_started sans_secours v1 sha(workflow) pins=[] input={}
          2 step_started courrier
          3 effect_requested courrier c1:courrier#1 poste.send attempt=1 {}
              => perform c1:courrier#1 poste.send attempt=1
        @+PT1S
          4 effect_failed c1:courrier#1 "503" retryable=true
          5 step_failed courrier "503" attempt=1 will_retry=false
          6 case_failed "step `courrier` failed: 503"
              => settled c1:courrier#1
              => finished failed "step `courrier` failed: 503"
        == failed vars={} output="step `courrier` failed: 503"
    "#]]);
}

#[test]
fn parallel_runs_both_branches_and_joins() {
    wf(r#"
id: para
version: 1
title: Parallèle
steps:
  - id: ensemble
    parallel:
      - name: notifier
        steps:
          - id: sms
            action: { connector: sms }
            result: accuse
      - name: patienter
        steps:
          - id: pause
            wait: { duration: PT1H }
          - id: note
            assign: { patiente: "true" }
  - id: apres
    assign: { fini: "true" }
"#)
    .run(
        json!({}),
        &[
            (HOUR, In::Fire("pause", TimerPurpose::Wait)),
            (2 * HOUR, In::Ok("sms", json!({"id": 1}))),
        ],
    )
    .check(expect![[r#"
        @+PT0S start
          1 case_started para v1 sha(workflow) pins=[] input={}
          2 step_started ensemble
          3 step_started sms
          4 effect_requested sms c1:sms#1 sms.send attempt=1 {}
          5 step_started pause
          6 timer_set c1:t2 pause wait at=+PT1H
              => perform c1:sms#1 sms.send attempt=1
              => set_timer c1:t2 wait at=+PT1H
        @+PT1H
          7 timer_fired c1:t2
          8 step_completed pause
          9 step_started note
         10 variables_assigned note {"patiente":true}
         11 step_completed note
        @+PT2H
         12 effect_completed c1:sms#1 {"id":1}
         13 step_completed sms
         14 step_completed ensemble
         15 step_started apres
         16 variables_assigned apres {"fini":true}
         17 step_completed apres
         18 case_completed {}
              => settled c1:sms#1
              => finished completed {}
        == completed vars={"accuse":{"id":1},"fini":true,"patiente":true} output={}
    "#]]);
}

#[test]
fn for_each_sets_item_and_index_per_iteration() {
    wf(r#"
id: boucle
version: 1
title: Boucle
input:
  clients: { type: list, items: { type: text } }
steps:
  - id: chaque_client
    for_each:
      items: input.clients
      as: client
      steps:
        - id: envoi
          action: { connector: sms }
          with: { to: client, rang: client_index }
  - id: vide
    for_each:
      items: "[]"
      steps:
        - id: jamais
          assign: { x: 1 }
  - id: fin
    assign: { dernier: client, dernier_rang: client_index }
"#)
    .run(
        json!({"clients": ["Awa", "Kofi"]}),
        &[
            (MINUTE, In::Ok("envoi", json!({"n": 0}))),
            (2 * MINUTE, In::Ok("envoi", json!({"n": 1}))),
        ],
    )
    .check(expect![[r#"
        @+PT0S start
          1 case_started boucle v1 sha(workflow) pins=[] input={"clients":["Awa","Kofi"]}
          2 step_started chaque_client
          3 variables_assigned chaque_client {"client":"Awa","client_index":0}
          4 step_started envoi
          5 effect_requested envoi c1:envoi#1 sms.send attempt=1 {"rang":0,"to":"Awa"}
              => perform c1:envoi#1 sms.send attempt=1
        @+PT1M
          6 effect_completed c1:envoi#1 {"n":0}
          7 step_completed envoi
          8 variables_assigned chaque_client {"client":"Kofi","client_index":1}
          9 step_started envoi
         10 effect_requested envoi c1:envoi#2 sms.send attempt=1 {"rang":1,"to":"Kofi"}
              => settled c1:envoi#1
              => perform c1:envoi#2 sms.send attempt=1
        @+PT2M
         11 effect_completed c1:envoi#2 {"n":1}
         12 step_completed envoi
         13 step_completed chaque_client
         14 step_started vide
         15 step_completed vide
         16 step_started fin
         17 variables_assigned fin {"dernier":"Kofi","dernier_rang":1}
         18 step_completed fin
         19 case_completed {}
              => settled c1:envoi#2
              => finished completed {}
        == completed vars={"client":"Kofi","client_index":1,"dernier":"Kofi","dernier_rang":1} output={}
    "#]]);
}

const CALL: &str = r#"
id: parent
version: 1
title: Parent
input:
  montant: { type: integer }
steps:
  - id: sous_dossier
    call: calcul_frais
    with: { montant: input.montant }
    result: frais
  - id: total
    assign: { total: input.montant + frais.frais }
output:
  total: total
"#;

#[test]
fn call_starts_a_child_and_takes_its_output() {
    wf(CALL)
        .sub("calcul_frais")
        .run(
            json!({"montant": 100}),
            &[(HOUR, In::Child("sous_dossier", "completed", json!({"frais": 7})))],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started parent v1 sha(workflow) pins=[workflow:calcul_frais=sha(sub calcul_frais)] input={"montant":100}
              2 step_started sous_dossier
              3 child_started sous_dossier f112ad92 calcul_frais {"montant":100}
                  => start_child f112ad92 calcul_frais sha(sub calcul_frais) {"montant":100} parent=c1/sous_dossier
            @+PT1H
              4 child_finished f112ad92 completed {"frais":7}
              5 step_completed sous_dossier
              6 step_started total
              7 variables_assigned total {"total":107}
              8 step_completed total
              9 case_completed {"total":107}
                  => finished completed {"total":107}
            == completed vars={"frais":{"frais":7},"total":107} output={"total":107}
        "#]]);
}

#[test]
fn call_whose_child_fails_fails_the_step() {
    wf(CALL)
        .sub("calcul_frais")
        .run(
            json!({"montant": 100}),
            &[(HOUR, In::Child("sous_dossier", "failed", json!("barème introuvable")))],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started parent v1 sha(workflow) pins=[workflow:calcul_frais=sha(sub calcul_frais)] input={"montant":100}
              2 step_started sous_dossier
              3 child_started sous_dossier f112ad92 calcul_frais {"montant":100}
                  => start_child f112ad92 calcul_frais sha(sub calcul_frais) {"montant":100} parent=c1/sous_dossier
            @+PT1H
              4 child_finished f112ad92 failed "barème introuvable"
              5 step_failed sous_dossier "the sub-workflow case f112ad92-0980-5233-99e4-3a201779eb77 ended failed: barème introuvable" attempt=1 will_retry=false
              6 case_failed "step `sous_dossier` failed: the sub-workflow case f112ad92-0980-5233-99e4-3a201779eb77 ended failed: barème introuvable"
                  => finished failed "step `sous_dossier` failed: the sub-workflow case f112ad92-0980-5233-99e4-3a201779eb77 ended failed: barème introuvable"
            == failed vars={} output="step `sous_dossier` failed: the sub-workflow case f112ad92-0980-5233-99e4-3a201779eb77 ended failed: barème introuvable"
        "#]]);
}

#[test]
fn render_records_the_text_and_template_hash() {
    wf(r#"
id: lettre
version: 1
title: Lettre
input:
  nom: { type: text }
  montant: { type: integer }
steps:
  - id: redaction
    render: courrier/mise_en_demeure.txt
    result: texte
output:
  texte: texte
"#)
    .template(
        "courrier/mise_en_demeure.txt",
        "{% include \"entete.txt\" %}Madame, Monsieur {{ input.nom }}, vous devez {{ input.montant }} FCFA.",
    )
    .template("entete.txt", "[Dossier {{ case.id }}] ")
    .run(json!({"nom": "Traoré", "montant": 25000}), &[])
    .check(expect![[r#"
        @+PT0S start
          1 case_started lettre v1 sha(workflow) pins=[template:courrier/mise_en_demeure.txt=sha(templates/courrier/mise_en_demeure.txt), template:entete.txt=sha(templates/entete.txt)] input={"montant":25000,"nom":"Traoré"}
          2 step_started redaction
          3 template_rendered redaction courrier/mise_en_demeure.txt sha(templates/courrier/mise_en_demeure.txt) "[Dossier c1] Madame, Monsieur Traoré, vous devez 25000 FCFA."
          4 step_completed redaction
          5 case_completed {"texte":"[Dossier c1] Madame, Monsieur Traoré, vous devez 25000 FCFA."}
              => finished completed {"texte":"[Dossier c1] Madame, Monsieur Traoré, vous devez 25000 FCFA."}
        == completed vars={"texte":"[Dossier c1] Madame, Monsieur Traoré, vous devez 25000 FCFA."} output={"texte":"[Dossier c1] Madame, Monsieur Traoré, vous devez 25000 FCFA."}
    "#]]);
}

#[test]
fn fail_step_fails_the_case_with_its_rendered_message() {
    wf(r#"
id: refus
version: 1
title: Refus
input:
  montant: { type: integer }
steps:
  - id: plafond
    fail: "Montant {{ input.montant }} au-dessus du plafond"
"#)
    .run(json!({"montant": 9000}), &[])
    .check(expect![[r#"
        @+PT0S start
          1 case_started refus v1 sha(workflow) pins=[] input={"montant":9000}
          2 step_started plafond
          3 step_failed plafond "Montant 9000 au-dessus du plafond" attempt=1 will_retry=false
          4 case_failed "step `plafond` failed: Montant 9000 au-dessus du plafond"
              => finished failed "step `plafond` failed: Montant 9000 au-dessus du plafond"
        == failed vars={} output="step `plafond` failed: Montant 9000 au-dessus du plafond"
    "#]]);
}

// =============================================================================================
// Compensation and cancellation

const SAGA: &str = r#"
id: reservation
version: 1
title: Réservation
steps:
  - id: reserver_salle
    assign: { salle: '"A1"' }
    compensate:
      - id: liberer_salle
        action: { connector: agenda, operation: liberer }
        with: { salle: salle }
  - id: debiter
    action: { connector: banque, operation: debit }
    with: { montant: 100 }
    compensate:
      - id: rembourser
        assign: { rembourse: "true" }
  - id: sans_compensation
    assign: { x: 1 }
  - id: confirmation
    wait_event:
      event: confirmation
  - id: controle
    fail: "controle refusé"
"#;

#[test]
fn cancel_runs_compensations_in_reverse_order() {
    wf(SAGA)
        .run(
            json!({}),
            &[
                (MINUTE, In::Ok("debiter", json!({"tx": "T-1"}))),
                (HOUR, In::Cancel("le client renonce")),
                // Being cancelled already.
                (HOUR + MINUTE, In::Cancel("encore")),
                (2 * HOUR, In::Ok("liberer_salle", json!({}))),
                // Cancelled now.
                (3 * HOUR, In::Cancel("encore")),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started reservation v1 sha(workflow) pins=[] input={}
              2 step_started reserver_salle
              3 variables_assigned reserver_salle {"salle":"A1"}
              4 step_completed reserver_salle
              5 step_started debiter
              6 effect_requested debiter c1:debiter#1 banque.debit attempt=1 {"montant":100}
                  => perform c1:debiter#1 banque.debit attempt=1
            @+PT1M
              7 effect_completed c1:debiter#1 {"tx":"T-1"}
              8 step_completed debiter
              9 step_started sans_compensation
             10 variables_assigned sans_compensation {"x":1}
             11 step_completed sans_compensation
             12 step_started confirmation
             13 event_awaited confirmation c1:w2 confirmation {}
                  => settled c1:debiter#1
                  => await c1:w2 confirmation {}
            @+PT1H
             14 cancel_requested "le client renonce" by=operateur
             15 compensation_started "cancelled: le client renonce"
             16 step_started rembourser
             17 variables_assigned rembourser {"rembourse":true}
             18 step_completed rembourser
             19 compensated debiter
             20 step_started liberer_salle
             21 effect_requested liberer_salle c1:liberer_salle#3 agenda.liberer attempt=1 {"salle":"A1"}
                  => stop_awaiting c1:w2
                  => perform c1:liberer_salle#3 agenda.liberer attempt=1
            @+PT1H1M cancel_requested "encore" by=operateur !! rejected: Ending("cancelled")
            @+PT2H
             22 effect_completed c1:liberer_salle#3 {}
             23 step_completed liberer_salle
             24 compensated reserver_salle
             25 case_cancelled "le client renonce"
                  => settled c1:liberer_salle#3
                  => finished cancelled "le client renonce"
            @+PT3H cancel_requested "encore" by=operateur !! rejected: Finished("cancelled")
            == cancelled vars={"rembourse":true,"salle":"A1","x":1} output="le client renonce"
        "#]]);
}

#[test]
fn failure_runs_compensations_in_reverse_order() {
    wf(SAGA)
        .run(
            json!({}),
            &[
                (MINUTE, In::Ok("debiter", json!({"tx": "T-1"}))),
                (HOUR, In::Event("confirmation", json!({}))),
                (2 * HOUR, In::Fail("liberer_salle", "agenda indisponible", false)),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started reservation v1 sha(workflow) pins=[] input={}
              2 step_started reserver_salle
              3 variables_assigned reserver_salle {"salle":"A1"}
              4 step_completed reserver_salle
              5 step_started debiter
              6 effect_requested debiter c1:debiter#1 banque.debit attempt=1 {"montant":100}
                  => perform c1:debiter#1 banque.debit attempt=1
            @+PT1M
              7 effect_completed c1:debiter#1 {"tx":"T-1"}
              8 step_completed debiter
              9 step_started sans_compensation
             10 variables_assigned sans_compensation {"x":1}
             11 step_completed sans_compensation
             12 step_started confirmation
             13 event_awaited confirmation c1:w2 confirmation {}
                  => settled c1:debiter#1
                  => await c1:w2 confirmation {}
            @+PT1H
             14 event_received c1:w2 confirmation {}
             15 step_completed confirmation
             16 step_started controle
             17 step_failed controle "controle refusé" attempt=1 will_retry=false
             18 compensation_started "step `controle` failed: controle refusé"
             19 step_started rembourser
             20 variables_assigned rembourser {"rembourse":true}
             21 step_completed rembourser
             22 compensated debiter
             23 step_started liberer_salle
             24 effect_requested liberer_salle c1:liberer_salle#3 agenda.liberer attempt=1 {"salle":"A1"}
                  => stop_awaiting c1:w2
                  => perform c1:liberer_salle#3 agenda.liberer attempt=1
            @+PT2H
             25 effect_failed c1:liberer_salle#3 "agenda indisponible" retryable=false
             26 step_failed liberer_salle "agenda indisponible" attempt=1 will_retry=false
             27 compensation_failed reserver_salle "agenda indisponible"
             28 case_failed "step `controle` failed: controle refusé"
                  => settled c1:liberer_salle#3
                  => finished failed "step `controle` failed: controle refusé"
            == failed vars={"rembourse":true,"salle":"A1","x":1} output="step `controle` failed: controle refusé"
        "#]]);
}

#[test]
fn cancel_of_a_finished_case_is_rejected() {
    wf(r#"
id: court
version: 1
title: Court
steps:
  - id: seul
    assign: { x: 1 }
"#)
    .run(json!({}), &[(MINUTE, In::Cancel("trop tard"))])
    .check(expect![[r#"
        @+PT0S start
          1 case_started court v1 sha(workflow) pins=[] input={}
          2 step_started seul
          3 variables_assigned seul {"x":1}
          4 step_completed seul
          5 case_completed {}
              => finished completed {}
        @+PT1M cancel_requested "trop tard" by=operateur !! rejected: Finished("completed")
        == completed vars={"x":1} output={}
    "#]]);
}

#[test]
fn cancel_stops_waits_tasks_and_timers() {
    wf(r#"
id: arret
version: 1
title: Arrêt
steps:
  - id: ensemble
    parallel:
      - steps:
          - id: revue
            task: { role: agent, title: Revoir, outcomes: { ok: end }, due: P2D }
      - steps:
          - id: attente
            wait_event: { event: pièce, timeout: P5D }
      - steps:
          - id: pause
            wait: { duration: P1D }
"#)
    .run(json!({}), &[(HOUR, In::Cancel("doublon"))])
    .check(expect![[r#"
        @+PT0S start
          1 case_started arret v1 sha(workflow) pins=[] input={}
          2 step_started ensemble
          3 step_started revue
          4 task_created revue f112ad92 role=agent "Revoir" outcomes=["ok"] due=+P2D
          5 timer_set c1:t2 revue task_due at=+P2D
          6 step_started attente
          7 event_awaited attente c1:w3 pièce {}
          8 timer_set c1:t4 attente event_timeout at=+P5D
          9 step_started pause
         10 timer_set c1:t5 pause wait at=+P1D
              => create_task f112ad92 role=agent due=+P2D
              => set_timer c1:t2 task_due at=+P2D
              => await c1:w3 pièce {}
              => set_timer c1:t4 event_timeout at=+P5D
              => set_timer c1:t5 wait at=+P1D
        @+PT1H
         11 cancel_requested "doublon" by=operateur
         12 timer_cancelled c1:t2
         13 timer_cancelled c1:t4
         14 timer_cancelled c1:t5
         15 task_cancelled f112ad92
         16 case_cancelled "doublon"
              => cancel_timer c1:t2
              => cancel_timer c1:t4
              => cancel_timer c1:t5
              => stop_awaiting c1:w3
              => update_task f112ad92 cancelled
              => finished cancelled "doublon"
        == cancelled vars={} output="doublon"
    "#]]);
}

// =============================================================================================
// Stale inputs, loops, input checks, ids

#[test]
fn stale_and_unknown_inputs_are_ignored() {
    wf(ACTION)
        .template("sms.txt", "Bonjour")
        .run(
            json!({"tel": "+2250700000000", "nom": "Awa"}),
            &[
                (SECOND, In::Raw(Event::EffectCompleted { key: "c1:autre#9".into(), result: json!({}) })),
                (SECOND, In::Raw(Event::EffectFailed { key: "c1:autre#9".into(), error: "x".into(), retryable: true })),
                (SECOND, In::Raw(Event::TimerFired { timer: "c1:t99".into() })),
                (SECOND, In::Raw(Event::EventReceived { wait: "c1:w99".into(), event: "e".into(), payload: json!({}) })),
                (SECOND, In::Raw(Event::ChildFinished { child: "inconnu".into(), status: "completed".into(), output: json!({}) })),
                (2 * SECOND, In::Ok("sms", json!({"id": 1}))),
                (3 * SECOND, In::Ok("sms", json!({"id": 2}))),
                (3 * SECOND, In::Fail("sms", "late", true)),
                // Not inputs at all.
                (4 * SECOND, In::Raw(Event::StepStarted { step: "sms".into() })),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started envoi v1 sha(workflow) pins=[template:sms.txt=sha(templates/sms.txt)] input={"nom":"Awa","tel":"+2250700000000"}
              2 step_started sms
              3 effect_requested sms c1:sms#1 sms.send attempt=1 {"priorite":2,"texte":"Bonjour","to":"+2250700000000"} timeout_ms=30000
                  => perform c1:sms#1 sms.send attempt=1
            @+PT1S effect_completed c1:autre#9 {} (ignored)
            @+PT1S effect_failed c1:autre#9 "x" retryable=true (ignored)
            @+PT1S timer_fired c1:t99 (ignored)
            @+PT1S event_received c1:w99 e {} (ignored)
            @+PT1S child_finished inconnu completed {} (ignored)
            @+PT2S
              4 effect_completed c1:sms#1 {"id":1}
              5 step_completed sms
              6 case_completed {"id":1}
                  => settled c1:sms#1
                  => finished completed {"id":1}
            @+PT3S effect_completed c1:sms#1 {"id":2} (ignored)
            @+PT3S effect_failed c1:sms#1 "late" retryable=true (ignored)
            @+PT4S step_started sms (ignored)
            == completed vars={"accuse":{"id":1}} output={"id":1}
        "#]]);
}

#[test]
fn inputs_aimed_at_the_wrong_kind_of_pending_item_are_ignored() {
    // A timer firing under the id of a task, a wait or an effect is not a timer of the case.
    let run = wf(r#"
id: melange
version: 1
title: Mélange
steps:
  - id: ensemble
    parallel:
      - steps:
          - id: revue
            task: { role: agent, title: Revoir, outcomes: { ok: end } }
      - steps:
          - id: attente
            wait_event: { event: signal }
      - steps:
          - id: envoi
            action: { connector: sms }
"#)
    .run(
        json!({}),
        &[
            (
                SECOND,
                In::Raw(Event::TimerFired {
                    timer: "c1:w2".into(),
                }),
            ),
            (
                SECOND,
                In::Raw(Event::TimerFired {
                    timer: "c1:envoi#3".into(),
                }),
            ),
            (
                SECOND,
                In::Raw(Event::EffectCompleted {
                    key: "c1:w2".into(),
                    result: json!({}),
                }),
            ),
            (
                SECOND,
                In::Raw(Event::EventReceived {
                    wait: "c1:envoi#3".into(),
                    event: "signal".into(),
                    payload: json!({}),
                }),
            ),
        ],
    );
    // Every input aimed at the wrong kind of pending item is ignored and recorded nowhere.
    run.check(expect![[r#"
        @+PT0S start
          1 case_started melange v1 sha(workflow) pins=[] input={}
          2 step_started ensemble
          3 step_started revue
          4 task_created revue f112ad92 role=agent "Revoir" outcomes=["ok"]
          5 step_started attente
          6 event_awaited attente c1:w2 signal {}
          7 step_started envoi
          8 effect_requested envoi c1:envoi#3 sms.send attempt=1 {}
              => create_task f112ad92 role=agent
              => await c1:w2 signal {}
              => perform c1:envoi#3 sms.send attempt=1
        @+PT1S timer_fired c1:w2 (ignored)
        @+PT1S timer_fired c1:envoi#3 (ignored)
        @+PT1S effect_completed c1:w2 {} (ignored)
        @+PT1S event_received c1:envoi#3 signal {} (ignored)
        == running vars={} output=null
    "#]]);
}

#[test]
fn a_wait_event_that_times_out_in_a_loop_clears_the_previous_result() {
    // On timeout the result variable is emptied (null), so that a workflow looping on a wait
    // tells a timeout from a second reception.
    wf(r#"
id: tours
version: 1
title: Tours
steps:
  - id: init
    assign: { tours: 0 }
  - id: attente
    wait_event: { event: signal, timeout: PT1H }
    result: recu
  - id: compte
    assign: { tours: tours + 1 }
  - id: encore
    branch:
      - when: tours < 2
        goto: attente
output:
  tours: tours
  dernier: recu
"#)
    .run(
        json!({}),
        &[
            (10 * MINUTE, In::Event("signal", json!({"n": 1}))),
            (
                10 * MINUTE + HOUR,
                In::Fire("attente", TimerPurpose::EventTimeout),
            ),
        ],
    )
    .check(expect![[r#"
        @+PT0S start
          1 case_started tours v1 sha(workflow) pins=[] input={}
          2 step_started init
          3 variables_assigned init {"tours":0}
          4 step_completed init
          5 step_started attente
          6 event_awaited attente c1:w1 signal {}
          7 timer_set c1:t2 attente event_timeout at=+PT1H
              => await c1:w1 signal {}
              => set_timer c1:t2 event_timeout at=+PT1H
        @+PT10M
          8 event_received c1:w1 signal {"n":1}
          9 timer_cancelled c1:t2
         10 step_completed attente
         11 step_started compte
         12 variables_assigned compte {"tours":1}
         13 step_completed compte
         14 step_started encore
         15 branch_taken encore arm=0 -> attente
         16 step_completed encore
         17 step_started attente
         18 event_awaited attente c1:w3 signal {}
         19 timer_set c1:t4 attente event_timeout at=+PT1H10M
              => stop_awaiting c1:w1
              => cancel_timer c1:t2
              => await c1:w3 signal {}
              => set_timer c1:t4 event_timeout at=+PT1H10M
        @+PT1H10M
         20 timer_fired c1:t4
         21 event_timed_out attente c1:w3
         22 step_completed attente
         23 step_started compte
         24 variables_assigned compte {"tours":2}
         25 step_completed compte
         26 step_started encore
         27 branch_taken encore arm=none -> end
         28 step_completed encore
         29 case_completed {"dernier":null,"tours":2}
              => stop_awaiting c1:w3
              => finished completed {"dernier":null,"tours":2}
        == completed vars={"recu":null,"tours":2} output={"dernier":null,"tours":2}
    "#]]);
}

#[test]
fn cancel_while_a_child_runs_cancels_the_child() {
    // Cancelling (or failing) a parent cancels its running child case (whose own compensations
    // run); the child's later `child_finished` is ignored by the parent.
    wf(CALL)
        .sub("calcul_frais")
        .run(
            json!({"montant": 100}),
            &[
                (MINUTE, In::Cancel("abandon")),
                (HOUR, In::Child("sous_dossier", "completed", json!({"frais": 7}))),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started parent v1 sha(workflow) pins=[workflow:calcul_frais=sha(sub calcul_frais)] input={"montant":100}
              2 step_started sous_dossier
              3 child_started sous_dossier f112ad92 calcul_frais {"montant":100}
                  => start_child f112ad92 calcul_frais sha(sub calcul_frais) {"montant":100} parent=c1/sous_dossier
            @+PT1M
              4 cancel_requested "abandon" by=operateur
              5 case_cancelled "abandon"
                  => cancel_child f112ad92
                  => finished cancelled "abandon"
            @+PT1H child_finished f112ad92 completed {"frais":7} (ignored)
            == cancelled vars={} output="abandon"
        "#]]);
}

#[test]
fn compensations_of_for_each_iterations_see_their_own_item() {
    let run = wf(r#"
id: reservations
version: 1
title: Réservations
input:
  salles: { type: list, items: { type: text } }
steps:
  - id: chaque_salle
    for_each:
      items: input.salles
      as: salle
      steps:
        - id: reserver
          action: { connector: agenda, operation: reserver }
          with: { salle: salle }
          compensate:
            - id: liberer
              action: { connector: agenda, operation: liberer }
              with: { salle: salle }
  - id: paiement
    fail: paiement refusé
"#)
    .run(
        json!({"salles": ["A1", "B2"]}),
        &[
            (MINUTE, In::Ok("reserver", json!({}))),
            (2 * MINUTE, In::Ok("reserver", json!({}))),
            (3 * MINUTE, In::Ok("liberer", json!({}))),
            (4 * MINUTE, In::Ok("liberer", json!({}))),
        ],
    );
    let freed: Vec<Value> = run
        .history
        .iter()
        .filter_map(|r| match &r.event {
            Event::EffectRequested { step, request, .. } if step == "liberer" => {
                Some(request["salle"].clone())
            }
            _ => None,
        })
        .collect();
    // Reverse order, each compensation with the variables of its own iteration.
    assert_eq!(freed, vec![json!("B2"), json!("A1")]);
    run.check(expect![[r#"
        @+PT0S start
          1 case_started reservations v1 sha(workflow) pins=[] input={"salles":["A1","B2"]}
          2 step_started chaque_salle
          3 variables_assigned chaque_salle {"salle":"A1","salle_index":0}
          4 step_started reserver
          5 effect_requested reserver c1:reserver#1 agenda.reserver attempt=1 {"salle":"A1"}
              => perform c1:reserver#1 agenda.reserver attempt=1
        @+PT1M
          6 effect_completed c1:reserver#1 {}
          7 step_completed reserver
          8 variables_assigned chaque_salle {"salle":"B2","salle_index":1}
          9 step_started reserver
         10 effect_requested reserver c1:reserver#2 agenda.reserver attempt=1 {"salle":"B2"}
              => settled c1:reserver#1
              => perform c1:reserver#2 agenda.reserver attempt=1
        @+PT2M
         11 effect_completed c1:reserver#2 {}
         12 step_completed reserver
         13 step_completed chaque_salle
         14 step_started paiement
         15 step_failed paiement "paiement refusé" attempt=1 will_retry=false
         16 compensation_started "step `paiement` failed: paiement refusé"
         17 step_started liberer
         18 effect_requested liberer c1:liberer#3 agenda.liberer attempt=1 {"salle":"B2"}
              => settled c1:reserver#2
              => perform c1:liberer#3 agenda.liberer attempt=1
        @+PT3M
         19 effect_completed c1:liberer#3 {}
         20 step_completed liberer
         21 compensated reserver
         22 step_started liberer
         23 effect_requested liberer c1:liberer#4 agenda.liberer attempt=1 {"salle":"A1"}
              => settled c1:liberer#3
              => perform c1:liberer#4 agenda.liberer attempt=1
        @+PT4M
         24 effect_completed c1:liberer#4 {}
         25 step_completed liberer
         26 compensated reserver
         27 case_failed "step `paiement` failed: paiement refusé"
              => settled c1:liberer#4
              => finished failed "step `paiement` failed: paiement refusé"
        == failed vars={"salle":"A1","salle_index":0} output="step `paiement` failed: paiement refusé"
    "#]]);
}

#[test]
fn a_loop_of_jumps_without_wait_is_stopped_by_the_step_limit() {
    let run = wf(r#"
id: boucle_infinie
version: 1
title: Boucle
steps:
  - id: tour
    assign: { x: 1 }
    next: tour
"#)
    .run(json!({}), &[]);
    let state = run.state.as_ref().unwrap();
    assert_eq!(state.status_name(), "failed");
    // 100,000 steps of three events each, the case_started and the case_failed.
    assert_eq!(run.history.len(), 300_002);
    run.check(expect![[r#"
        @+PT0S start
          1 case_started boucle_infinie v1 sha(workflow) pins=[] input={}
          2 step_started tour
          3 variables_assigned tour {"x":1}
          4 step_completed tour
            … these 3 lines 100000 times in all, up to event 300001
        300002 case_failed "the case ran 100000 steps without waiting: a loop of jumps never reaches a wait or an end"
              => finished failed "the case ran 100000 steps without waiting: a loop of jumps never reaches a wait or an end"
        == failed vars={"x":1} output="the case ran 100000 steps without waiting: a loop of jumps never reaches a wait or an end"
    "#]]);
}

#[test]
fn a_long_for_each_without_waits_is_not_a_loop_of_jumps() {
    let yaml = r#"
id: lot
version: 1
title: Lot
input:
  lignes: { type: list, items: { type: integer } }
steps:
  - id: chaque
    for_each:
      items: input.lignes
      steps:
        - id: cumul
          assign: { dernier: item }
output:
  dernier: dernier
"#;
    // Started directly (no replay, no rendering): the lists are long. 4,000 items: 8,001 steps
    // counted (each iteration counts its step and its end).
    let prog = wf(yaml).compile();
    let start = |n: i64| {
        let lines: Vec<i64> = (0..n).collect();
        CaseState::start(&prog, CASE, json!({ "lignes": lines }), None, None, t0())
            .unwrap()
            .0
    };
    let state = start(4000);
    assert_eq!(state.status_name(), "completed");
    assert_eq!(state.output, json!({"dernier": 3999}));

    // 10,000 items, the longest list the rules engine builds: 20,001 steps, under the limit.
    let state = start(10_000);
    assert_eq!(state.status_name(), "completed");
    assert_eq!(state.output, json!({"dernier": 9999}));
}

#[test]
fn input_that_does_not_fit_the_schema_is_rejected() {
    let yaml = r#"
id: schema
version: 1
title: Schéma
input:
  montant: { type: decimal }
  email: { type: email }
  canal: { type: choice, options: [sms, courrier] }
  note: { type: text, required: false }
steps:
  - id: seul
    assign: { x: 1 }
"#;
    wf(yaml)
        .run(
            json!({"montant": "beaucoup", "canal": "pigeon", "emial": "a@b.ci"}),
            &[],
        )
        .check(expect![[r#"
            @+PT0S start !! rejected: Input([FieldError { field: "montant", message: "expected a decimal number, got text" }, FieldError { field: "email", message: "is required (email)" }, FieldError { field: "canal", message: "expected one of sms, courrier, got text" }, FieldError { field: "emial", message: "is not a declared field; did you mean `email`?" }])
        "#]]);
    wf(yaml)
        .run(json!([1, 2]), &[])
        .check(expect![[r#"
            @+PT0S start !! rejected: Input([FieldError { field: "(input)", message: "expected an object, got a list" }])
        "#]]);
    // The same workflow accepts a fitting input (the optional field left out).
    let ok = wf(yaml).run(
        json!({"montant": 12.50, "email": "a@b.ci", "canal": "sms"}),
        &[],
    );
    assert_eq!(ok.state.unwrap().status_name(), "completed");
}

#[test]
fn ids_derive_from_the_case_id_and_a_counter() {
    let yaml = r#"
id: ids
version: 1
title: Ids
steps:
  - id: pause
    wait: { duration: PT1M }
  - id: attente
    wait_event: { event: e }
  - id: revue
    task: { role: r, title: T, outcomes: { ok: envoi }, due: P1D }
  - id: envoi
    action: { connector: sms }
  - id: sous
    call: enfant
"#;
    let run = wf(yaml).sub("enfant").run(
        json!({}),
        &[
            (MINUTE, In::Fire("pause", TimerPurpose::Wait)),
            (2 * MINUTE, In::Event("e", json!({}))),
            (3 * MINUTE, In::Decide("revue", "ok", json!({}), "x")),
            (4 * MINUTE, In::Ok("envoi", json!({}))),
        ],
    );
    let v5 = |n: u32| {
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{CASE}:{n}").as_bytes()).to_string()
    };
    let mut ids = Vec::new();
    for r in &run.history {
        match &r.event {
            Event::TimerSet { timer, .. } => ids.push(timer.clone()),
            Event::EventAwaited { wait, .. } => ids.push(wait.clone()),
            Event::TaskCreated { task, .. } => ids.push(task.clone()),
            Event::EffectRequested { key, .. } => ids.push(key.clone()),
            Event::ChildStarted { child, .. } => ids.push(child.clone()),
            _ => {}
        }
    }
    // One counter for every id: timer 1, wait 2, task 3 (a v5 UUID, shown outside), its due
    // timer 4, effect 5, child 6 (a v5 UUID).
    assert_eq!(
        ids,
        vec![
            "c1:t1".to_string(),
            "c1:w2".to_string(),
            v5(3),
            "c1:t4".to_string(),
            "c1:envoi#5".to_string(),
            v5(6),
        ]
    );
    // Another case id gives other ids; the same case id the same ones (checked by `run`).
    let other = wf(yaml).sub("enfant").compile();
    let (_, t) = CaseState::start(&other, "c2", json!({}), None, None, t0()).unwrap();
    assert!(t
        .events
        .iter()
        .any(|e| matches!(e, Event::TimerSet { timer, .. } if timer == "c2:t1")));
}

// =============================================================================================
// Replay: tampering and changed sources

fn sealed_history(run: &Run) -> Vec<SealedEvent> {
    // One transition per distinct instant in these scripts.
    let mut sealed: Vec<SealedEvent> = Vec::new();
    let mut i = 0;
    while i < run.history.len() {
        let at = run.history[i].at;
        let mut j = i + 1;
        while j < run.history.len() && !run.history[j].event.is_input() {
            j += 1;
        }
        let events: Vec<Event> = run.history[i..j].iter().map(|r| r.event.clone()).collect();
        let (seq, hash) = sealed
            .last()
            .map(|e| (e.seq, e.hash.clone()))
            .unwrap_or((0, GENESIS.to_string()));
        sealed.extend(chain::seal(&events, at, seq, &hash));
        i = j;
    }
    sealed
}

fn verify(events: &[SealedEvent]) -> Result<(), ChainError> {
    chain::verify(events.iter().map(as_link))
}

#[test]
fn the_chain_detects_altered_removed_and_reordered_events() {
    let run = wf(WAIT_EVENT).run(
        json!({"facture": "F-7"}),
        &[(
            DAY,
            In::Event("paiement_recu", json!({"facture": "F-7", "montant": 100})),
        )],
    );
    let good = sealed_history(&run);
    assert_eq!(good.len(), 11);
    assert_eq!(good[0].prev_hash, GENESIS);
    assert_eq!(verify(&good), Ok(()));

    // A payload altered (the amount paid): that event no longer matches its hash.
    let mut altered = good.clone();
    assert_eq!(altered[4].kind, "event_received");
    altered[4].payload = altered[4].payload.replace("100", "1000");
    assert_eq!(verify(&altered), Err(ChainError::Altered { seq: 5 }));

    // Its time altered: the same.
    let mut late = good.clone();
    late[4].at += chrono::Duration::days(30);
    assert_eq!(verify(&late), Err(ChainError::Altered { seq: 5 }));

    // Altered and re-hashed: the next event's link breaks.
    let mut rehashed = good.clone();
    rehashed[4].payload = rehashed[4].payload.replace("100", "1000");
    rehashed[4].hash = chain::event_hash(
        &rehashed[4].prev_hash,
        5,
        rehashed[4].at.timestamp_millis(),
        &rehashed[4].kind,
        &rehashed[4].payload,
    );
    assert_eq!(
        verify(&rehashed),
        Err(ChainError::BrokenLink { seq: 6, prev: 5 })
    );

    // An event removed: a gap in the numbers.
    let mut removed = good.clone();
    removed.remove(5);
    assert_eq!(
        verify(&removed),
        Err(ChainError::Sequence {
            seq: 7,
            expected: 6
        })
    );
    // Removed and renumbered: the link breaks where the event was.
    for (i, e) in removed.iter_mut().enumerate() {
        e.seq = i as i64 + 1;
    }
    assert_eq!(
        verify(&removed),
        Err(ChainError::BrokenLink { seq: 6, prev: 5 })
    );
    // The last event removed cannot be seen by the chain alone: the case row's last hash
    // catches it (this is why the store keeps `last_seq`/`last_hash`).
    let truncated = &good[..good.len() - 1];
    assert_eq!(verify(truncated), Ok(()));

    // Two events swapped.
    let mut swapped = good.clone();
    swapped.swap(6, 7);
    assert_eq!(
        verify(&swapped),
        Err(ChainError::Sequence {
            seq: 8,
            expected: 7
        })
    );
    // Swapped and renumbered.
    swapped[6].seq = 7;
    swapped[7].seq = 8;
    assert_eq!(
        verify(&swapped),
        Err(ChainError::BrokenLink { seq: 7, prev: 6 })
    );

    let err = verify(&altered).unwrap_err();
    assert_eq!(err.seq(), 5);
    assert_eq!(
        err.to_string(),
        "event 5: its content does not match its hash (it was altered)"
    );
}

#[test]
fn replay_detects_edited_decisions_and_inputs() {
    let w = wf(WAIT_EVENT);
    let run = w.run(
        json!({"facture": "F-7"}),
        &[(
            DAY,
            In::Event("paiement_recu", json!({"facture": "F-7", "montant": 100})),
        )],
    );
    let prog = w.compile();
    assert!(replay(&prog, CASE, &run.history).is_ok());

    // A decision edited: the workflow derives another one there.
    let mut edited = run.history.clone();
    edited[8].event = Event::VariablesAssigned {
        step: "encaisse".into(),
        values: BTreeMap::from([("etat".to_string(), json!("relancee"))]),
    };
    let d = replay(&prog, CASE, &edited).unwrap_err();
    assert_eq!(d.seq, 9);
    assert!(d.recorded.is_some() && d.derived.is_some());

    // A decision dropped.
    let mut dropped = run.history.clone();
    dropped.remove(6);
    let d = replay(&prog, CASE, &dropped).unwrap_err();
    assert_eq!(d.seq, 8, "{d}");

    // A decision added where an input is expected.
    let mut added = run.history.clone();
    added.push(RecordedEvent {
        seq: 12,
        at: t0(),
        event: Event::StepStarted { step: "x".into() },
    });
    let d = replay(&prog, CASE, &added).unwrap_err();
    assert_eq!(d.seq, 12);
    assert!(d.message.contains("expected the next input"), "{d}");

    // The history cut inside a transition.
    let cut = &run.history[..9];
    let d = replay(&prog, CASE, cut).unwrap_err();
    assert_eq!(d.seq, 10);
    assert!(d.message.contains("history ends"), "{d}");

    // An empty history, and one without its case_started.
    assert_eq!(replay(&prog, CASE, &[]).unwrap_err().seq, 1);
    assert!(replay(&prog, CASE, &run.history[4..]).is_err());
}

const RULE_WF: &str = r#"
id: tarif
version: 1
title: Tarif
input:
  montant: { type: integer }
steps:
  - id: avant
    assign: { base: input.montant }
  - id: calcul
    rule: tarifs.frais
    with: { montant: base }
    result: frais
output:
  frais: frais
"#;
const RULE_V1: &str = "fn frais(montant) { montant / 100 }\n";
const RULE_V2: &str = "fn frais(montant) { montant / 50 }\n";

#[test]
fn replay_diverges_when_the_rule_module_changed() {
    let w = wf(RULE_WF).rule("tarifs", RULE_V1);
    let run = w.run(json!({"montant": 1000}), &[]);
    run.check(expect![[r#"
        @+PT0S start
          1 case_started tarif v1 sha(workflow) pins=[rule:tarifs=sha(rules/tarifs)] input={"montant":1000}
          2 step_started avant
          3 variables_assigned avant {"base":1000}
          4 step_completed avant
          5 step_started calcul
          6 rule_evaluated calcul tarifs.frais sha(rules/tarifs) inputs={"montant":1000} -> 10
          7 step_completed calcul
          8 case_completed {"frais":10}
              => finished completed {"frais":10}
        == completed vars={"base":1000,"frais":10} output={"frais":10}
    "#]]);
    let changed = w.compile_with_rules(&[("tarifs", RULE_V2)]);

    // The case is pinned to the module's hash: replaying against another source is caught at
    // once, on the pins of `case_started`.
    let d = replay(&changed, CASE, &run.history).unwrap_err();
    assert_eq!(d.seq, 1, "{d}");
    assert!(matches!(d.recorded, Some(Event::CaseStarted { .. })));

    // With the pin rewritten to the new source (a history edited to cover the change), the
    // decision itself diverges, at the seq of `rule_evaluated`.
    let mut repinned = run.history.clone();
    if let Event::CaseStarted { pins, .. } = &mut repinned[0].event {
        pins.insert("rule:tarifs".into(), content_hash(RULE_V2));
    }
    let d = replay(&changed, CASE, &repinned).unwrap_err();
    let rule_seq = run
        .history
        .iter()
        .find(|r| r.event.kind() == "rule_evaluated")
        .unwrap()
        .seq;
    assert_eq!(rule_seq, 6);
    assert_eq!(d.seq, rule_seq, "{d}");
    match (&d.recorded, &d.derived) {
        (
            Some(Event::RuleEvaluated {
                rule_hash: old,
                output: out_old,
                ..
            }),
            Some(Event::RuleEvaluated {
                rule_hash: new,
                output: out_new,
                ..
            }),
        ) => {
            assert_eq!(old, &content_hash(RULE_V1));
            assert_eq!(new, &content_hash(RULE_V2));
            assert_eq!((out_old, out_new), (&json!(10), &json!(20)));
        }
        other => panic!("expected two rule_evaluated events, got {other:?}"),
    }

    // A new source that computes the same thing still diverges: the hash is recorded.
    const RULE_V3: &str =
        "fn frais(montant) {\n  // même calcul, autre texte\n  montant / 100\n}\n";
    let same_result = w.compile_with_rules(&[("tarifs", RULE_V3)]);
    let mut repinned = run.history.clone();
    if let Event::CaseStarted { pins, .. } = &mut repinned[0].event {
        pins.insert("rule:tarifs".into(), content_hash(RULE_V3));
    }
    assert_eq!(
        replay(&same_result, CASE, &repinned).unwrap_err().seq,
        rule_seq
    );
}

const INTERRUPTIBLE: &str = r#"
id: relance_interrompue
version: 1
title: Relance interrompue par un paiement
input:
  facture: { type: text }
on_event:
  - event: paiement_recu
    correlate: { facture: input.facture }
    result: paiement
    goto: paiement_constate
steps:
  - id: attente
    wait: { duration: P7D }
  - id: decision
    task:
      role: recouvrement
      title: "Relancer {{ input.facture }}"
      outcomes: { relancer: relance_faite }
      reminders: [P1D]
  - id: relance_faite
    assign: { statut: '"relancee"' }
    next: end
  - id: paiement_constate
    assign: { statut: '"payee"' }
output:
  statut: statut
"#;

const PARTIAL_PAYMENTS: &str = r#"
id: paiements_partiels
version: 1
title: Paiements partiels
input:
  facture: { type: text }
  montant: { type: decimal }
  remise: { type: decimal, required: false }
on_event:
  - event: paiement_recu
    correlate: { facture: input.facture }
    result: paiement
    goto: imputation
steps:
  - id: depart
    assign: { solde: "input.montant - (input.remise ?? 0)" }
  - id: attente
    wait: { duration: P30D }
    next: end
  - id: imputation
    assign: { solde: "solde - paiement.montant" }
  - id: solde
    branch:
      - when: "solde > 0"
        goto: attente
    otherwise: end
output:
  solde: solde
"#;

/// An `on_event` entry listens again after it fires: a second payment reaches the case that a
/// first, partial one sent back to waiting. An optional input left out reads as `()`.
#[test]
fn an_interrupting_event_is_heard_again_after_it_fired() {
    wf(PARTIAL_PAYMENTS)
        .run(
            json!({"facture": "F-9", "montant": 100}),
            &[
                (DAY, In::Event("paiement_recu", json!({"facture": "F-9", "montant": 30}))),
                (2 * DAY, In::Event("paiement_recu", json!({"facture": "F-9", "montant": 70}))),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started paiements_partiels v1 sha(workflow) pins=[] input={"facture":"F-9","montant":100}
              2 event_awaited on_event:paiement_recu c1:w1 paiement_recu {"facture":"F-9"}
              3 step_started depart
              4 variables_assigned depart {"solde":100}
              5 step_completed depart
              6 step_started attente
              7 timer_set c1:t2 attente wait at=+P30D
                  => await c1:w1 paiement_recu {"facture":"F-9"}
                  => set_timer c1:t2 wait at=+P30D
            @+P1D
              8 event_received c1:w1 paiement_recu {"facture":"F-9","montant":30}
              9 event_awaited on_event:paiement_recu c1:w3 paiement_recu {"facture":"F-9"}
             10 timer_cancelled c1:t2
             11 case_interrupted {"event":"paiement_recu","goto":"imputation"}
             12 step_started imputation
             13 variables_assigned imputation {"solde":70}
             14 step_completed imputation
             15 step_started solde
             16 branch_taken solde arm=0 -> attente
             17 step_completed solde
             18 step_started attente
             19 timer_set c1:t4 attente wait at=+P31D
                  => stop_awaiting c1:w1
                  => await c1:w3 paiement_recu {"facture":"F-9"}
                  => cancel_timer c1:t2
                  => set_timer c1:t4 wait at=+P31D
            @+P2D
             20 event_received c1:w3 paiement_recu {"facture":"F-9","montant":70}
             21 event_awaited on_event:paiement_recu c1:w5 paiement_recu {"facture":"F-9"}
             22 timer_cancelled c1:t4
             23 case_interrupted {"event":"paiement_recu","goto":"imputation"}
             24 step_started imputation
             25 variables_assigned imputation {"solde":0}
             26 step_completed imputation
             27 step_started solde
             28 branch_taken solde arm=none -> end
             29 step_completed solde
             30 case_completed {"solde":0}
                  => stop_awaiting c1:w3
                  => await c1:w5 paiement_recu {"facture":"F-9"}
                  => cancel_timer c1:t4
                  => stop_awaiting c1:w5
                  => finished completed {"solde":0}
            == completed vars={"paiement":{"facture":"F-9","montant":70},"solde":0} output={"solde":0}
        "#]]);
}

/// An `on_event` entry with a guard: an event for which it is false is recorded and the case
/// stays where it stands; the entry still listens.
#[test]
fn an_interrupting_event_whose_guard_is_false_leaves_the_case_where_it_stands() {
    let guarded = PARTIAL_PAYMENTS.replace(
        "    goto: imputation\n",
        "    goto: imputation\n    when: \"payload.montant > 0 && solde > 0\"\n",
    );
    // `wf` keeps the source for the whole test run.
    wf(Box::leak(guarded.into_boxed_str()))
        .run(
            json!({"facture": "F-9", "montant": 100}),
            &[
                (DAY, In::Event("paiement_recu", json!({"facture": "F-9", "montant": 0}))),
                (2 * DAY, In::Event("paiement_recu", json!({"facture": "F-9", "montant": 100}))),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started paiements_partiels v1 sha(workflow) pins=[] input={"facture":"F-9","montant":100}
              2 event_awaited on_event:paiement_recu c1:w1 paiement_recu {"facture":"F-9"}
              3 step_started depart
              4 variables_assigned depart {"solde":100}
              5 step_completed depart
              6 step_started attente
              7 timer_set c1:t2 attente wait at=+P30D
                  => await c1:w1 paiement_recu {"facture":"F-9"}
                  => set_timer c1:t2 wait at=+P30D
            @+P1D
              8 event_received c1:w1 paiement_recu {"facture":"F-9","montant":0}
              9 event_awaited on_event:paiement_recu c1:w3 paiement_recu {"facture":"F-9"}
                  => stop_awaiting c1:w1
                  => await c1:w3 paiement_recu {"facture":"F-9"}
            @+P2D
             10 event_received c1:w3 paiement_recu {"facture":"F-9","montant":100}
             11 event_awaited on_event:paiement_recu c1:w4 paiement_recu {"facture":"F-9"}
             12 timer_cancelled c1:t2
             13 case_interrupted {"event":"paiement_recu","goto":"imputation"}
             14 step_started imputation
             15 variables_assigned imputation {"solde":0}
             16 step_completed imputation
             17 step_started solde
             18 branch_taken solde arm=none -> end
             19 step_completed solde
             20 case_completed {"solde":0}
                  => stop_awaiting c1:w3
                  => await c1:w4 paiement_recu {"facture":"F-9"}
                  => cancel_timer c1:t2
                  => stop_awaiting c1:w4
                  => finished completed {"solde":0}
            == completed vars={"paiement":{"facture":"F-9","montant":100},"solde":0} output={"solde":0}
        "#]]);
}

#[test]
fn an_interrupting_event_stops_the_task_and_goes_on_at_its_step() {
    wf(INTERRUPTIBLE)
        .run(
            json!({"facture": "F-9"}),
            &[
                (7 * DAY, In::Fire("attente", TimerPurpose::Wait)),
                (8 * DAY, In::Event("paiement_recu", json!({"facture": "F-9", "montant": 120}))),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started relance_interrompue v1 sha(workflow) pins=[] input={"facture":"F-9"}
              2 event_awaited on_event:paiement_recu c1:w1 paiement_recu {"facture":"F-9"}
              3 step_started attente
              4 timer_set c1:t2 attente wait at=+P7D
                  => await c1:w1 paiement_recu {"facture":"F-9"}
                  => set_timer c1:t2 wait at=+P7D
            @+P7D
              5 timer_fired c1:t2
              6 step_completed attente
              7 step_started decision
              8 task_created decision 23cdd082 role=recouvrement "Relancer F-9" outcomes=["relancer"]
              9 timer_set c1:t4 decision task_reminder at=+P8D
                  => create_task 23cdd082 role=recouvrement
                  => set_timer c1:t4 task_reminder at=+P8D
            @+P8D
             10 event_received c1:w1 paiement_recu {"facture":"F-9","montant":120}
             11 event_awaited on_event:paiement_recu c1:w5 paiement_recu {"facture":"F-9"}
             12 task_cancelled 23cdd082
             13 timer_cancelled c1:t4
             14 case_interrupted {"event":"paiement_recu","goto":"paiement_constate"}
             15 step_started paiement_constate
             16 variables_assigned paiement_constate {"statut":"payee"}
             17 step_completed paiement_constate
             18 case_completed {"statut":"payee"}
                  => stop_awaiting c1:w1
                  => await c1:w5 paiement_recu {"facture":"F-9"}
                  => update_task 23cdd082 cancelled
                  => cancel_timer c1:t4
                  => stop_awaiting c1:w5
                  => finished completed {"statut":"payee"}
            == completed vars={"paiement":{"facture":"F-9","montant":120},"statut":"payee"} output={"statut":"payee"}
        "#]]);
}

#[test]
fn an_interrupting_event_is_released_when_the_case_ends_without_it() {
    wf(INTERRUPTIBLE)
        .run(
            json!({"facture": "F-10"}),
            &[
                (7 * DAY, In::Fire("attente", TimerPurpose::Wait)),
                (8 * DAY, In::Decide("decision", "relancer", json!({}), "awa")),
            ],
        )
        .check(expect![[r#"
            @+PT0S start
              1 case_started relance_interrompue v1 sha(workflow) pins=[] input={"facture":"F-10"}
              2 event_awaited on_event:paiement_recu c1:w1 paiement_recu {"facture":"F-10"}
              3 step_started attente
              4 timer_set c1:t2 attente wait at=+P7D
                  => await c1:w1 paiement_recu {"facture":"F-10"}
                  => set_timer c1:t2 wait at=+P7D
            @+P7D
              5 timer_fired c1:t2
              6 step_completed attente
              7 step_started decision
              8 task_created decision 23cdd082 role=recouvrement "Relancer F-10" outcomes=["relancer"]
              9 timer_set c1:t4 decision task_reminder at=+P8D
                  => create_task 23cdd082 role=recouvrement
                  => set_timer c1:t4 task_reminder at=+P8D
            @+P8D
             10 task_decided 23cdd082 relancer by=awa data={}
             11 timer_cancelled c1:t4
             12 task_completed 23cdd082 relancer by=awa
             13 step_completed decision
             14 step_started relance_faite
             15 variables_assigned relance_faite {"statut":"relancee"}
             16 step_completed relance_faite
             17 case_completed {"statut":"relancee"}
                  => cancel_timer c1:t4
                  => update_task 23cdd082 completed by=awa outcome=relancer
                  => stop_awaiting c1:w1
                  => finished completed {"statut":"relancee"}
            == completed vars={"statut":"relancee"} output={"statut":"relancee"}
        "#]]);
}
