//! Meaning checks of a parsed workflow against the project.
//!
//! Parsing already guarantees the shape of the file (known fields, right types). What remains is
//! everything an analyst can get wrong while the YAML is well formed: a jump to a step that does
//! not exist, a rule function misspelt, a variable read before anything sets it, a duration that
//! is not one. Each problem becomes one [`Diagnostic`] pointing at the offending value (or, for
//! something missing, at the key of the block that lacks it) with a hint saying how to fix it.
//!
//! Everything outside the file (rule modules, templates, connectors, other workflows, the
//! expression compiler) is reached through [`Catalog`], so this crate stays free of Rhai and of
//! the file system.

use std::collections::{BTreeSet, HashMap, HashSet};

use indexmap::IndexMap;

use crate::cron::{CronError, CronSchedule};
use crate::{
    did_you_mean, Diagnostic, FieldSpec, FieldType, IsoDuration, ParsedWorkflow, Pos, SpanIndex,
    Step, StepKind, Workflow, END,
};

/// What a workflow may refer to outside its own file. Implemented by the runtime's project loader.
pub trait Catalog {
    /// Public functions of a rule module with their parameter names, or `None` when the module
    /// does not exist.
    fn rule_functions(&self, module: &str) -> Option<Vec<(String, Vec<String>)>>;
    /// Names of every rule module.
    fn rule_modules(&self) -> Vec<String>;
    /// Every template path, relative to `templates/` (`relances/sms_niveau1.txt`).
    fn templates(&self) -> Vec<String>;
    /// Every workflow id of the project.
    fn workflow_ids(&self) -> Vec<String>;
    /// The input fields of a workflow, or `None` when it does not exist.
    fn workflow_input(&self, id: &str) -> Option<Vec<(String, crate::FieldSpec)>>;
    /// Connectors and their operations, or `None` when the connector is unknown.
    fn connector_operations(&self, connector: &str) -> Option<Vec<String>>;
    /// Names of every configured connector.
    fn connectors(&self) -> Vec<String>;
    /// Compiles a Rhai expression: the free variables it reads, or the compiler's message.
    fn check_expr(&self, source: &str) -> Result<Vec<String>, String>;
    /// Parses an inline Tera text (a task's title, a failure message): the parser's message
    /// when it does not parse.
    fn check_text(&self, _source: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Variables every expression of a case may read.
pub const BUILTIN_VARIABLES: &[&str] = &["input", "params", "now", "today", "dossier", "error"];

/// The kinds of step, as written in the file.
const KIND_NAMES: &[&str] = &[
    "rule",
    "assign",
    "branch",
    "wait",
    "wait_event",
    "task",
    "action",
    "parallel",
    "for_each",
    "call",
    "render",
    "fail",
];

/// Every problem in one workflow (errors and warnings), ordered by position in the file.
pub fn validate_workflow(parsed: &ParsedWorkflow, catalog: &dyn Catalog) -> Vec<Diagnostic> {
    let mut checker = Checker {
        file: &parsed.file,
        source: &parsed.source,
        spans: &parsed.spans,
        wf: &parsed.workflow,
        catalog,
        diags: Vec::new(),
        lists: Vec::new(),
        ids: HashMap::new(),
        assigned: BTreeSet::new(),
        scope: Vec::new(),
        loop_vars: HashMap::new(),
    };
    checker.run();
    let mut diags = checker.diags;
    // Stable: two problems at the same place keep the order they were found in.
    diags.sort_by_key(|d| (d.line, d.column));
    diags
}

/// Every problem in a set of workflow files: each file's own problems (as
/// [`validate_workflow`]), then what only shows across files (two files with the same
/// workflow id).
pub fn validate_project(files: &[ParsedWorkflow], catalog: &dyn Catalog) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut first_with_id: HashMap<&str, &ParsedWorkflow> = HashMap::new();
    for parsed in files {
        diags.extend(validate_workflow(parsed, catalog));
        let id = parsed.workflow.id.as_str();
        if id.is_empty() {
            continue;
        }
        match first_with_id.get(id) {
            Some(first) => {
                let at = first.spans.value("id");
                diags.push(
                    Diagnostic::error(
                        &parsed.file,
                        parsed.spans.value("id"),
                        format!("workflow id `{id}` is already used by {}:{}", first.file, at.line),
                    )
                    .with_hint(
                        "give each workflow its own id: calls, triggers and the API find a workflow by its id",
                    ),
                );
            }
            None => {
                first_with_id.insert(id, parsed);
            }
        }
    }
    diags.extend(call_cycles(files));
    diags
}

/// Every `call` step of a list and the lists nested in it, with its path in the file.
fn calls_in<'a>(steps: &'a [Step], path: &str, out: &mut Vec<(String, &'a str)>) {
    for (i, s) in steps.iter().enumerate() {
        let sp = format!("{path}[{i}]");
        if let Some(c) = &s.call {
            out.push((format!("{sp}.call"), c.as_str()));
        }
        for (b, branch) in s.parallel.iter().flatten().enumerate() {
            calls_in(&branch.steps, &format!("{sp}.parallel[{b}].steps"), out);
        }
        if let Some(f) = &s.for_each {
            calls_in(&f.steps, &format!("{sp}.for_each.steps"), out);
        }
        if let Some(c) = &s.compensate {
            calls_in(c, &format!("{sp}.compensate"), out);
        }
    }
}

/// Workflows that call each other in a circle (`a` calls `b`, `b` calls `a`): each case would
/// start the next without end. A workflow calling itself is reported by `validate_workflow`.
fn call_cycles(files: &[ParsedWorkflow]) -> Vec<Diagnostic> {
    let mut calls: HashMap<&str, Vec<(String, &str)>> = HashMap::new();
    let mut file_of: HashMap<&str, &ParsedWorkflow> = HashMap::new();
    for f in files {
        let mut out = Vec::new();
        calls_in(&f.workflow.steps, "steps", &mut out);
        calls.entry(f.workflow.id.as_str()).or_insert(out);
        file_of.entry(f.workflow.id.as_str()).or_insert(f);
    }
    let mut diags = Vec::new();
    let mut ids: Vec<&str> = calls.keys().copied().collect();
    ids.sort();
    for start in ids {
        for (path, callee) in &calls[start] {
            if *callee == start {
                continue;
            }
            // Is `start` reachable from `callee`? Then this call closes a circle.
            let mut seen = HashSet::new();
            let mut stack = vec![(*callee, vec![*callee])];
            let mut circle = None;
            while let Some((w, trail)) = stack.pop() {
                if !seen.insert(w) {
                    continue;
                }
                for (_, next) in calls.get(w).map(Vec::as_slice).unwrap_or(&[]) {
                    let mut t = trail.clone();
                    t.push(next);
                    if *next == start {
                        circle = Some(t);
                        break;
                    }
                    stack.push((next, t));
                }
                if circle.is_some() {
                    break;
                }
            }
            if let Some(trail) = circle {
                let f = file_of[start];
                let chain = std::iter::once(start)
                    .chain(trail)
                    .collect::<Vec<_>>()
                    .join("` → `");
                diags.push(
                    Diagnostic::error(&f.file, f.spans.value(path), format!("calls go round in a circle: `{chain}`"))
                        .with_hint("each case would start the next without end: break the circle, or repeat steps with `next` inside one workflow"),
                );
            }
        }
    }
    diags
}

/// Whether the step lets control pass to the step written after it once it is done. Every
/// other way out (`next`, `otherwise`, outcomes, `on_error`...) is an explicit jump.
pub fn falls_through(step: &Step) -> bool {
    if step.next.is_some() || step.fail.is_some() {
        return false;
    }
    if step.branch.is_some() && step.otherwise.is_some() {
        return false;
    }
    // A decided task always goes where its outcome says; one without outcomes is an error
    // reported elsewhere, and is treated as continuing so that nothing after it looks dead.
    if let Some(task) = &step.task {
        if !task.outcomes.is_empty() {
            return false;
        }
    }
    true
}

/// Every jump a step makes: the field path (relative to the step) and the target.
pub fn jumps(step: &Step) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = Vec::new();
    if let Some(next) = &step.next {
        out.push(("next".into(), next));
    }
    if let Some(arms) = &step.branch {
        for (i, arm) in arms.iter().enumerate() {
            out.push((format!("branch[{i}].goto"), &arm.goto));
        }
    }
    if let Some(otherwise) = &step.otherwise {
        out.push(("otherwise".into(), otherwise));
    }
    if let Some(task) = &step.task {
        for (name, target) in &task.outcomes {
            out.push((format!("task.outcomes.{name}"), target));
        }
    }
    if let Some(we) = &step.wait_event {
        if let Some(t) = &we.on_timeout {
            out.push(("wait_event.on_timeout".into(), t));
        }
    }
    if let Some(e) = &step.on_error {
        out.push(("on_error".into(), e));
    }
    out
}

/// A step id: letters, digits, `_` and `-`.
fn is_step_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A variable or field name, as expressions read it: a Rhai identifier.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A valid identifier close to what the analyst wrote (`Calcul pénalité` → `calcul_penalite`).
fn suggest_identifier(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'à' | 'â' | 'ä' | 'á' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' | 'í' => 'i',
            'ô' | 'ö' | 'ó' => 'o',
            'ù' | 'û' | 'ü' | 'ú' => 'u',
            'ç' => 'c',
            'ÿ' => 'y',
            c if c.is_ascii_alphanumeric() => c,
            _ => '_',
        };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_end_matches('_').to_string();
    match out.chars().next() {
        None => "mon_nom".to_string(),
        Some(c) if c.is_ascii_digit() => format!("n_{out}"),
        Some(_) => out,
    }
}

/// `a`, `b` and `c` as "`a`, `b`, `c`", cut short past a screenful.
fn listing<S: AsRef<str>>(names: &[S]) -> String {
    const MAX: usize = 20;
    let mut parts: Vec<String> = names
        .iter()
        .take(MAX)
        .map(|n| format!("`{}`", n.as_ref()))
        .collect();
    if names.len() > MAX {
        parts.push(format!("and {} more", names.len() - MAX));
    }
    parts.join(", ")
}

/// `a`, `b` and `c` as "`a`, `b` and `c`", for short lists in messages.
fn and_listing<S: AsRef<str>>(names: &[S]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{}`", n.as_ref())).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// "did you mean `x`?" when a candidate is close, else the list of what exists.
fn name_hint<S: AsRef<str>>(name: &str, candidates: &[S], what: &str, none: &str) -> String {
    if let Some(best) = did_you_mean(name, candidates.iter().map(|c| c.as_ref())) {
        return format!("did you mean `{best}`?");
    }
    if candidates.is_empty() {
        none.to_string()
    } else {
        format!("{what}: {}", listing(candidates))
    }
}

/// Who owns a nested list of steps, for messages about jumps across lists.
#[derive(Clone)]
struct Owner<'a> {
    step: &'a str,
    kind: &'static str,
}

impl Owner<'_> {
    fn phrase(&self) -> String {
        match self.kind {
            "compensate" => format!("the compensation of step `{}`", self.step),
            kind => format!("the {kind} step `{}`", self.step),
        }
    }
}

/// One list of steps: the workflow's own, a parallel branch, a for_each body or a compensation.
struct List<'a> {
    /// Path of the list in the file (`steps`, `steps[2].parallel[0].steps`).
    path: String,
    steps: &'a [Step],
    owner: Option<Owner<'a>>,
    /// Variables only this list (and lists inside it) can read: for_each elements and indexes.
    vars: Vec<String>,
}

struct Checker<'a> {
    file: &'a str,
    source: &'a str,
    spans: &'a SpanIndex,
    wf: &'a Workflow,
    catalog: &'a dyn Catalog,
    diags: Vec<Diagnostic>,
    lists: Vec<List<'a>>,
    /// Where each step id is first written: its list and its path.
    ids: HashMap<&'a str, (usize, String)>,
    /// Every variable some `assign` or `result` sets, anywhere in the workflow. Flow-insensitive
    /// on purpose: a precise analysis would reject loops that set a variable on a later turn.
    assigned: BTreeSet<String>,
    /// Variables of the list being checked (see [`List::vars`]).
    scope: Vec<String>,
    /// Every for_each variable (element and index) and the step that declares it, to explain
    /// why it is unknown outside that step's body.
    loop_vars: HashMap<String, &'a str>,
}

/// Which variables an expression may read.
#[derive(Clone, Copy, PartialEq)]
enum ExprContext {
    /// Inside the case: builtins, assigned variables, the list's for_each variables.
    Case,
    /// A trigger's input, computed before any case exists from what was delivered.
    Trigger,
}

impl<'a> Checker<'a> {
    fn error(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(self.file, pos, message).with_hint(hint));
    }

    fn value(&self, path: &str) -> Pos {
        self.spans.value(path)
    }

    fn key(&self, path: &str) -> Pos {
        self.spans.key(path)
    }

    /// The position of the character `offset` (in characters) inside the scalar at `path`,
    /// past its opening quote when it is quoted. Used to point inside a cron schedule.
    fn inside_value(&self, path: &str, offset: usize) -> Pos {
        let p = self.value(path);
        let first = self
            .source
            .lines()
            .nth(p.line.saturating_sub(1))
            .and_then(|l| l.chars().nth(p.column.saturating_sub(1)));
        let quoted = matches!(first, Some('"' | '\''));
        Pos {
            line: p.line,
            column: p.column + offset + usize::from(quoted),
        }
    }

    fn run(&mut self) {
        let wf = self.wf;
        self.check_header();
        self.collect(&wf.steps, "steps".to_string(), None, Vec::new());
        self.collect_assigned();

        for li in 0..self.lists.len() {
            self.scope = self.lists[li].vars.clone();
            for i in 0..self.lists[li].steps.len() {
                self.check_step(li, i);
            }
            self.check_reachable(li);
        }
        self.scope.clear();

        if let Some(bk) = &wf.business_key {
            self.check_expr("business_key", bk.as_str(), ExprContext::Case);
        }
        for (name, expr) in &wf.output {
            self.check_expr(&format!("output.{name}"), expr.as_str(), ExprContext::Case);
        }
        for i in 0..wf.triggers.len() {
            self.check_trigger(i);
        }
        for i in 0..wf.on_event.len() {
            self.check_interrupt(i);
        }
    }

    /// An `on_event` entry: an event name, correlation expressions, a variable, a top-list step.
    fn check_interrupt(&mut self, i: usize) {
        let wf = self.wf;
        let it = &wf.on_event[i];
        let path = format!("on_event[{i}]");
        if it.event.trim().is_empty() {
            self.error(
                self.value(&format!("{path}.event")),
                "the event name is empty",
                "name the event that interrupts the case, e.g. `paiement_recu`",
            );
        }
        for (key, expr) in &it.correlate {
            self.check_expr(
                &format!("{path}.correlate.{key}"),
                expr.as_str(),
                ExprContext::Case,
            );
        }
        if let Some(r) = &it.result {
            self.check_variable_name(&format!("{path}.result"), r, true);
        }
        if let Some(w) = &it.when {
            // Evaluated when the event arrives: the case's variables and the event's `payload`.
            self.scope.push("payload".into());
            self.check_expr(&format!("{path}.when"), w.as_str(), ExprContext::Case);
            self.scope.clear();
        }
        // The goto leads into the top list, wherever the case stood.
        self.check_jump(0, &format!("{path}.goto"), &it.goto);
    }

    // ---- the workflow as a whole ----

    fn check_header(&mut self) {
        let wf = self.wf;
        if wf.id.is_empty() {
            self.error(
                self.value("id"),
                "the workflow id is empty",
                "give the workflow an id such as `relance_impayes`",
            );
        } else if !is_step_id(&wf.id) {
            self.error(
                self.value("id"),
                format!(
                    "workflow id `{}` may only contain letters, digits, `_` and `-`",
                    wf.id
                ),
                format!("write it like `{}`", suggest_identifier(&wf.id)),
            );
        }
        if wf.version < 1 {
            self.error(
                self.value("version"),
                "version must be 1 or more",
                "start at `version: 1` and raise it on each change worth noting",
            );
        }
        if wf.title.trim().is_empty() {
            self.error(
                self.value("title"),
                "the workflow title is empty",
                "give a title shown to operators, such as `Relance des factures impayées`",
            );
        }
        if wf.steps.is_empty() {
            self.error(
                self.key("steps"),
                "the workflow has no steps",
                "add at least one step under `steps:`, e.g. `- id: debut` with a kind such as `assign`",
            );
        }
        for name in wf.params.keys() {
            if !is_identifier(name) {
                self.error(
                    self.key(&format!("params.{name}")),
                    format!("parameter name `{name}` is not a valid name"),
                    format!(
                        "expressions read it as `params.NAME`: use letters, digits and `_`, e.g. `{}`",
                        suggest_identifier(name)
                    ),
                );
            }
        }
        self.check_fields("input", &wf.input);
    }

    /// Field names and types of an input schema or a task form.
    fn check_fields(&mut self, path: &str, fields: &IndexMap<String, FieldSpec>) {
        for (name, spec) in fields {
            let p = format!("{path}.{name}");
            if !is_identifier(name) {
                self.error(
                    self.key(&p),
                    format!("field name `{name}` is not a valid name"),
                    format!(
                        "expressions read fields by name: use letters, digits and `_`, e.g. `{}`",
                        suggest_identifier(name)
                    ),
                );
            }
            self.check_field(&p, spec);
        }
    }

    fn check_field(&mut self, p: &str, spec: &FieldSpec) {
        let kind = spec.kind.name();
        match spec.kind {
            FieldType::Choice if spec.options.is_empty() => self.error(
                self.key(p),
                "a choice field needs `options`",
                "list the allowed values, e.g. `options: [virement, cheque, especes]`",
            ),
            FieldType::List if spec.items.is_none() => self.error(
                self.key(p),
                "a list field needs `items`",
                "give the type of each element, e.g. `items: { type: text }`",
            ),
            FieldType::Object if spec.fields.is_empty() => self.error(
                self.key(p),
                "an object field needs `fields`",
                "list its sub-fields, e.g. `fields: { nom: { type: text } }`",
            ),
            _ => {}
        }
        if spec.kind != FieldType::Choice && !spec.options.is_empty() {
            self.error(
                self.key(&format!("{p}.options")),
                format!("`options` only apply to choice fields, and this one is `{kind}`"),
                "remove `options`, or set `type: choice`",
            );
        }
        if spec.kind != FieldType::List && spec.items.is_some() {
            self.error(
                self.key(&format!("{p}.items")),
                format!("`items` only apply to list fields, and this one is `{kind}`"),
                "remove `items`, or set `type: list`",
            );
        }
        if spec.kind != FieldType::Object && !spec.fields.is_empty() {
            self.error(
                self.key(&format!("{p}.fields")),
                format!("`fields` only apply to object fields, and this one is `{kind}`"),
                "remove `fields`, or set `type: object`",
            );
        }
        let mut seen = HashSet::new();
        for (i, option) in spec.options.iter().enumerate() {
            if !seen.insert(option.as_str()) {
                self.error(
                    self.value(&format!("{p}.options[{i}]")),
                    format!("option `{option}` is listed twice"),
                    "remove the second one",
                );
            }
        }
        if let Some(items) = &spec.items {
            self.check_field(&format!("{p}.items"), items);
        }
        self.check_fields(&format!("{p}.fields"), &spec.fields);
    }

    fn check_trigger(&mut self, i: usize) {
        let t = &self.wf.triggers[i];
        let p = format!("triggers[{i}]");
        let set: Vec<&str> = [
            ("webhook", t.webhook.is_some()),
            ("event", t.event.is_some()),
            ("cron", t.cron.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
        match set.as_slice() {
            [] => self.error(
                self.value(&p),
                "this trigger says neither how nor when to start a case",
                "add one of `webhook: NAME`, `event: NAME` or `cron: \"0 8 * * MON-FRI\"`",
            ),
            [_] => {}
            [_, second, ..] => self.error(
                self.key(&format!("{p}.{second}")),
                format!(
                    "a trigger has exactly one of `webhook`, `event`, `cron`; this one has {}",
                    and_listing(&set)
                ),
                "split it into one trigger per way of starting",
            ),
        }
        for (field, name) in [("webhook", &t.webhook), ("event", &t.event)] {
            if let Some(name) = name {
                if !is_step_id(name) {
                    self.error(
                        self.value(&format!("{p}.{field}")),
                        format!(
                            "{field} name `{name}` may only contain letters, digits, `_` and `-`"
                        ),
                        format!("write it like `{}`", suggest_identifier(name)),
                    );
                }
            }
        }
        if let Some(cron) = &t.cron {
            self.check_cron(&format!("{p}.cron"), cron);
        }
        if let Some(tz) = &t.timezone {
            if t.cron.is_none() {
                self.error(
                    self.key(&format!("{p}.timezone")),
                    "`timezone` only applies to a `cron` trigger",
                    "remove `timezone`: webhooks and events start a case when they arrive",
                );
            } else if let Err(message) = crate::cron::parse_timezone(tz) {
                const IANA: &str = "use an IANA name such as `Africa/Abidjan` or `Europe/Paris`";
                let hint = match crate::cron::suggest_timezone(tz) {
                    Some(best) => format!("did you mean `{best}`? {IANA}"),
                    None => IANA.to_string(),
                };
                self.error(self.value(&format!("{p}.timezone")), message, hint);
            }
        }
        // A trigger's input replaces the payload as the case's input, so it must fit the
        // declared input like an API start would.
        let wf = self.wf;
        if !t.input.is_empty() && !wf.input.is_empty() {
            let fields: Vec<&str> = wf.input.keys().map(String::as_str).collect();
            for name in t.input.keys() {
                if !wf.input.contains_key(name) {
                    self.error(
                        self.key(&format!("{p}.input.{name}")),
                        format!("the workflow has no input field `{name}`"),
                        name_hint(
                            name,
                            &fields,
                            "its input fields are",
                            "declare it under `input:`",
                        ),
                    );
                }
            }
            for (name, spec) in &wf.input {
                if spec.required && !t.input.contains_key(name) {
                    self.error(
                        self.key(&format!("{p}.input")),
                        format!("this trigger's input lacks the required field `{name}`"),
                        format!("add `{name}: payload.…` under `input`, or make the field `required: false`"),
                    );
                }
            }
        }
        for (name, expr) in &t.input {
            self.check_expr(
                &format!("{p}.input.{name}"),
                expr.as_str(),
                ExprContext::Trigger,
            );
        }
    }

    /// Checks a cron schedule with the parser that runs it ([`crate::cron::CronSchedule`]), so
    /// validation and execution never disagree.
    fn check_cron(&mut self, path: &str, cron: &str) {
        const EXAMPLE: &str = "e.g. `0 8 * * MON-FRI` runs at 8:00 on weekdays (minute hour day-of-month month day-of-week; no seconds)";
        match CronSchedule::check(cron) {
            Ok(_) => {}
            Err(e @ CronError::FieldCount { .. }) => {
                self.error(self.value(path), e.to_string(), EXAMPLE);
            }
            Err(CronError::Fields(errors)) => {
                for e in errors {
                    self.error(
                        self.inside_value(path, e.offset),
                        e.to_string(),
                        format!(
                            "write `*`, a number, a range `1-5`, a list `1,15`, a step `*/15`{}; {EXAMPLE}",
                            match e.index {
                                3 => " or a month name (`JAN`)",
                                4 => " or a day name (`MON`)",
                                _ => "",
                            }
                        ),
                    );
                }
            }
        }
    }

    // ---- lists of steps ----

    /// Registers a list and, in file order, its steps' ids and the lists nested in them.
    fn collect(
        &mut self,
        steps: &'a [Step],
        path: String,
        owner: Option<Owner<'a>>,
        vars: Vec<String>,
    ) {
        let li = self.lists.len();
        self.lists.push(List {
            path: path.clone(),
            steps,
            owner,
            vars: vars.clone(),
        });
        for (i, step) in steps.iter().enumerate() {
            let sp = format!("{path}[{i}]");
            if !step.id.is_empty() {
                match self.ids.get(step.id.as_str()) {
                    Some((_, first)) => {
                        let line = self.value(&format!("{first}.id")).line;
                        self.error(
                            self.value(&format!("{sp}.id")),
                            format!("step id `{}` is already used at line {line}", step.id),
                            "step ids are unique in the whole workflow, nested steps included: rename one of them",
                        );
                    }
                    None => {
                        self.ids.insert(&step.id, (li, sp.clone()));
                    }
                }
            }
            if let Some(branches) = &step.parallel {
                for (j, b) in branches.iter().enumerate() {
                    let owner = Owner {
                        step: &step.id,
                        kind: "parallel",
                    };
                    self.collect(
                        &b.steps,
                        format!("{sp}.parallel[{j}].steps"),
                        Some(owner),
                        vars.clone(),
                    );
                }
            }
            if let Some(fe) = &step.for_each {
                let mut inner = vars.clone();
                for var in [fe.item.clone(), format!("{}_index", fe.item)] {
                    self.loop_vars.entry(var.clone()).or_insert(&step.id);
                    inner.push(var);
                }
                let owner = Owner {
                    step: &step.id,
                    kind: "for_each",
                };
                self.collect(
                    &fe.steps,
                    format!("{sp}.for_each.steps"),
                    Some(owner),
                    inner,
                );
            }
            if let Some(comp) = &step.compensate {
                let owner = Owner {
                    step: &step.id,
                    kind: "compensate",
                };
                self.collect(comp, format!("{sp}.compensate"), Some(owner), vars.clone());
            }
        }
    }

    fn collect_assigned(&mut self) {
        let mut names = BTreeSet::new();
        for list in &self.lists {
            for step in list.steps {
                if let Some(assign) = &step.assign {
                    names.extend(assign.keys().cloned());
                }
                if let Some(r) = &step.result {
                    names.insert(r.clone());
                }
            }
        }
        names.extend(self.wf.on_event.iter().filter_map(|e| e.result.clone()));
        self.assigned = names;
    }

    fn list_ids(&self, li: usize) -> Vec<&'a str> {
        self.lists[li]
            .steps
            .iter()
            .map(|s| s.id.as_str())
            .filter(|id| !id.is_empty())
            .collect()
    }

    /// Index of each step of a list by id (the first, when an id is repeated).
    fn list_index(&self, li: usize) -> HashMap<&'a str, usize> {
        let mut index = HashMap::new();
        for (i, s) in self.lists[li].steps.iter().enumerate() {
            index.entry(s.id.as_str()).or_insert(i);
        }
        index
    }

    fn check_jump(&mut self, li: usize, path: &str, target: &str) {
        if target == END {
            return;
        }
        let here = self.list_ids(li);
        if here.contains(&target) {
            return;
        }
        let pos = self.value(path);
        if target.is_empty() {
            self.error(
                pos,
                "the step to go to is empty",
                "name a step of this list, or `end` to finish it",
            );
            return;
        }
        if let Some((other, _)) = self.ids.get(target) {
            let (message, hint) = match (&self.lists[*other].owner, &self.lists[li].owner) {
                (Some(owner), _) => (
                    format!(
                        "`{target}` is inside {}; a jump can only reach steps of the same list",
                        owner.phrase()
                    ),
                    "jump to a step of this list, or to `end` to finish it".to_string(),
                ),
                (None, Some(mine)) => (
                    format!(
                        "`{target}` is in the main list of steps, outside {}; a jump can only reach steps of the same list",
                        mine.phrase()
                    ),
                    format!(
                        "use `end` to finish this list: the workflow then goes on after {}",
                        mine.phrase()
                    ),
                ),
                // Both in the main list cannot happen: the target would have been found above.
                (None, None) => (
                    format!("`{target}` cannot be reached from here; a jump can only reach steps of the same list"),
                    "jump to a step of this list, or to `end` to finish it".to_string(),
                ),
            };
            self.error(pos, message, hint);
            return;
        }
        let mut candidates = here.clone();
        candidates.push(END);
        self.error(
            pos,
            format!("there is no step `{target}`"),
            name_hint(target, &candidates, "the steps this jump can reach are", ""),
        );
    }

    /// Steps that no path from the first step of their list reaches.
    fn check_reachable(&mut self, li: usize) {
        let steps = self.lists[li].steps;
        if steps.is_empty() {
            return;
        }
        let index = self.list_index(li);
        let successors = |i: usize| -> Vec<usize> {
            let step = &steps[i];
            let mut out: Vec<usize> = jumps(step)
                .iter()
                .filter_map(|(_, target)| index.get(target).copied())
                .collect();
            if falls_through(step) && i + 1 < steps.len() {
                out.push(i + 1);
            }
            out
        };
        let reach = |from: usize, seen: &mut Vec<bool>| {
            let mut stack = vec![from];
            while let Some(i) = stack.pop() {
                if !seen[i] {
                    seen[i] = true;
                    stack.extend(successors(i));
                }
            }
        };
        let mut reached = vec![false; steps.len()];
        reach(0, &mut reached);
        if li == 0 {
            // An interrupting event leads into the top list from wherever the case stands.
            for it in &self.wf.on_event {
                if let Some(&i) = index.get(it.goto.as_str()) {
                    reach(i, &mut reached);
                }
            }
        }
        let dead: Vec<usize> = (0..steps.len()).filter(|&i| !reached[i]).collect();
        if dead.is_empty() {
            return;
        }
        // Report the steps where a dead stretch begins, with the ones they lead to in the
        // hint, rather than one error per step of the stretch.
        let entered: HashSet<usize> = dead
            .iter()
            .flat_map(|&i| successors(i))
            .filter(|j| *j != 0)
            .collect();
        let mut covered = reached.clone();
        let roots: Vec<usize> = dead
            .iter()
            .copied()
            .filter(|i| !entered.contains(i))
            .chain(dead.iter().copied())
            .collect();
        for root in roots {
            if covered[root] {
                continue;
            }
            let before = covered.clone();
            reach(root, &mut covered);
            let followers: Vec<&str> = (0..steps.len())
                .filter(|&j| j != root && covered[j] && !before[j])
                .map(|j| steps[j].id.as_str())
                .collect();
            let id = &steps[root].id;
            let mut hint = "link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it".to_string();
            if !followers.is_empty() {
                hint.push_str(&format!(
                    "; the steps it leads to are unreachable too: {}",
                    listing(&followers)
                ));
            }
            let path = format!("{}[{root}].id", self.lists[li].path);
            self.error(
                self.value(&path),
                format!("step `{id}` is unreachable: no path from the first step of its list leads to it"),
                hint,
            );
        }
    }

    // ---- one step ----

    fn check_step(&mut self, li: usize, i: usize) {
        let step: &'a Step = &self.lists[li].steps[i];
        let sp = format!("{}[{i}]", self.lists[li].path);
        let id = step.id.as_str();

        if id.is_empty() {
            self.error(
                self.value(&format!("{sp}.id")),
                "the step id is empty",
                "give the step an id such as `calcul_penalite`",
            );
        } else if id == END {
            self.error(
                self.value(&format!("{sp}.id")),
                "`end` is reserved: jumps use it to finish a list",
                "give the step another id, such as `cloture`",
            );
        } else if !is_step_id(id) {
            self.error(
                self.value(&format!("{sp}.id")),
                format!("step id `{id}` may only contain letters, digits, `_` and `-`"),
                format!("write it like `{}`", suggest_identifier(id)),
            );
        }

        let kinds = step.kinds();
        match kinds.as_slice() {
            [] => self.error(
                self.value(&sp),
                format!("step `{id}` does nothing: it has none of the step kinds"),
                format!("add one of {}", listing(KIND_NAMES)),
            ),
            [kind] => self.check_fields_fit_kind(&sp, step, *kind),
            [_, second, ..] => {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                self.error(
                    self.key(&format!("{sp}.{}", second.name())),
                    format!("step `{id}` has several kinds: {}", and_listing(&names)),
                    "a step does one thing: split it into one step per kind",
                );
            }
        }

        for (field, target) in jumps(step) {
            self.check_jump(li, &format!("{sp}.{field}"), target);
        }
        if let Some(r) = &step.result {
            self.check_variable_name(&format!("{sp}.result"), r, true);
        }
        for (name, expr) in &step.with {
            self.check_expr(
                &format!("{sp}.with.{name}"),
                expr.as_str(),
                ExprContext::Case,
            );
        }
        if let Some(timeout) = &step.timeout {
            self.check_duration(&format!("{sp}.timeout"), timeout);
        }
        if let Some(retry) = &step.retry {
            if retry.max_attempts == 0 {
                self.error(
                    self.value(&format!("{sp}.retry.max_attempts")),
                    "`max_attempts` counts the first attempt and must be at least 1",
                    "write `max_attempts: 3` for the first attempt and two retries",
                );
            }
            self.check_duration(&format!("{sp}.retry.backoff"), &retry.backoff);
            self.check_duration(&format!("{sp}.retry.max_backoff"), &retry.max_backoff);
        }
        if let Some(comp) = &step.compensate {
            if comp.is_empty() {
                self.error(
                    self.key(&format!("{sp}.compensate")),
                    "`compensate` has no steps",
                    "list the steps that undo this one, or remove `compensate`",
                );
            }
        }

        if let Some(rule) = &step.rule {
            self.check_rule(&sp, step, rule);
        }
        if let Some(assign) = &step.assign {
            if assign.is_empty() {
                self.error(
                    self.key(&format!("{sp}.assign")),
                    "`assign` sets no variable",
                    "add `NAME: expression` lines under `assign`",
                );
            }
            for (name, expr) in assign {
                let p = format!("{sp}.assign.{name}");
                self.check_variable_name(&p, name, false);
                self.check_expr(&p, expr.as_str(), ExprContext::Case);
            }
        }
        if let Some(arms) = &step.branch {
            if arms.is_empty() {
                self.error(
                    self.key(&format!("{sp}.branch")),
                    "the branch has no arms",
                    "add arms such as `- when: input.montant > 1000` with `goto: STEP`",
                );
            }
            for (k, arm) in arms.iter().enumerate() {
                self.check_expr(
                    &format!("{sp}.branch[{k}].when"),
                    arm.when.as_str(),
                    ExprContext::Case,
                );
            }
        }
        if let Some(wait) = &step.wait {
            match (&wait.duration, &wait.until) {
                (Some(d), None) => self.check_duration(&format!("{sp}.wait.duration"), d),
                (None, Some(u)) => self.check_expr(&format!("{sp}.wait.until"), u.as_str(), ExprContext::Case),
                (None, None) => self.error(
                    self.key(&format!("{sp}.wait")),
                    "the wait says neither how long nor until when",
                    "add `duration: P7D` (a delay) or `until: input.date_echeance` (a date)",
                ),
                (Some(_), Some(_)) => self.error(
                    self.key(&format!("{sp}.wait.until")),
                    "a wait has either `duration` or `until`, not both",
                    "keep one of them; to wait for the earlier of two moments, compute it in an `assign` step",
                ),
            }
        }
        if let Some(we) = &step.wait_event {
            if we.event.trim().is_empty() {
                self.error(
                    self.value(&format!("{sp}.wait_event.event")),
                    "the event name is empty",
                    "name the awaited event, such as `paiement_recu`",
                );
            }
            for (key, expr) in &we.correlate {
                self.check_expr(
                    &format!("{sp}.wait_event.correlate.{key}"),
                    expr.as_str(),
                    ExprContext::Case,
                );
            }
            if let Some(t) = &we.timeout {
                self.check_duration(&format!("{sp}.wait_event.timeout"), t);
            } else if we.on_timeout.is_some() {
                self.error(
                    self.key(&format!("{sp}.wait_event.on_timeout")),
                    "`on_timeout` without `timeout` can never happen",
                    "add `timeout: P30D` (how long to wait), or remove `on_timeout`",
                );
            }
        }
        if step.task.is_some() {
            self.check_task(&sp, step);
        }
        if step.action.is_some() {
            self.check_action(&sp, step);
        }
        if let Some(branches) = &step.parallel {
            if branches.is_empty() {
                self.error(
                    self.key(&format!("{sp}.parallel")),
                    "the parallel step has no branches",
                    "add branches such as `- name: courrier` with their `steps:`",
                );
            }
            for (j, b) in branches.iter().enumerate() {
                if b.steps.is_empty() {
                    self.error(
                        self.key(&format!("{sp}.parallel[{j}].steps")),
                        "this parallel branch has no steps",
                        "add steps to it, or remove the branch",
                    );
                }
            }
        }
        if let Some(fe) = &step.for_each {
            // The element variable is only visible inside the body, not in `items`.
            self.check_expr(
                &format!("{sp}.for_each.items"),
                fe.items.as_str(),
                ExprContext::Case,
            );
            self.check_variable_name(&format!("{sp}.for_each.as"), &fe.item, false);
            if fe.steps.is_empty() {
                self.error(
                    self.key(&format!("{sp}.for_each.steps")),
                    "the for_each step has no steps to repeat",
                    "add the steps run for each element under `steps:`",
                );
            }
        }
        if let Some(callee) = &step.call {
            self.check_call(&sp, step, callee);
        }
        if let Some(template) = &step.render {
            self.check_template(&format!("{sp}.render"), template);
        }
        if let Some(message) = &step.fail {
            self.check_inline_text(&format!("{sp}.fail"), message);
        }
        if let Some(n) = &step.number {
            self.check_number(&sp, step, n);
        }
        if let Some(postings) = &step.ledger {
            self.check_ledger(&sp, postings);
        }
        if let Some(e) = &step.emit {
            self.check_emit(&sp, e);
        }
        if let Some(u) = &step.unique_id {
            self.check_unique_id(&sp, step, u);
        }
    }

    fn check_unique_id(&mut self, sp: &str, step: &Step, u: &crate::UniqueIdSpec) {
        let up = format!("{sp}.unique_id");
        self.check_expr(
            &format!("{up}.pattern"),
            u.pattern.as_str(),
            ExprContext::Case,
        );
        // Without `{random}` in its text, the placeholder can only come from a variable the
        // pattern reads (`params.format_id`): that is checked when the step runs.
        let source = u.pattern.as_str();
        let reads_nothing = self
            .catalog
            .check_expr(source)
            .is_ok_and(|free| free.is_empty());
        if reads_nothing && !source.contains(crate::UniqueIdSpec::PLACEHOLDER) {
            self.error(
                self.value(&format!("{up}.pattern")),
                "the pattern has no `{random}`: every case would get the same identifier",
                "put `{random}` where the random part goes, such as `input.pays + \"-{random}-CL\"`",
            );
        }
        if !(1..=32).contains(&u.length) {
            self.error(
                self.value(&format!("{up}.length")),
                format!("a random part of {} characters", u.length),
                "give between 1 and 32 characters (4 hex characters: 65,536 identifiers per pattern)",
            );
        }
        if crate::UniqueIdSpec::characters(&u.alphabet).is_none() {
            self.error(
                self.value(&format!("{up}.alphabet")),
                format!("unknown alphabet `{}`", u.alphabet),
                "use `hex`, `digits` or `alnum`",
            );
        }
        if step.result.is_none() {
            self.error(
                self.key(&up),
                "the identifier is given to nobody: the step has no `result`",
                "add `result: identifiant` and use `identifiant.id`",
            );
        }
    }

    fn check_ledger(&mut self, sp: &str, postings: &[crate::PostingSpec]) {
        let lp = format!("{sp}.ledger");
        if postings.is_empty() {
            self.error(
                self.key(&lp),
                "the ledger step has no posting",
                "list the postings: `- {account: '\"credits/\" + input.client', amount: -1}`",
            );
        }
        for (i, p) in postings.iter().enumerate() {
            let pp = format!("{lp}[{i}]");
            let bound = match (&p.for_each, &p.item) {
                (Some(list), Some(item)) => {
                    self.check_expr(&format!("{pp}.for_each"), list.as_str(), ExprContext::Case);
                    self.check_variable_name(&format!("{pp}.as"), item, true);
                    Some(item.clone())
                }
                (Some(_), None) => {
                    self.error(
                        self.key(&format!("{pp}.for_each")),
                        "`for_each` needs `as`: the name of the element in the posting",
                        "add `as: occurrence` and use `occurrence` in `account` and `amount`",
                    );
                    None
                }
                (None, Some(_)) => {
                    self.error(
                        self.key(&format!("{pp}.as")),
                        "`as` names the element of a `for_each` list, and this posting has none",
                        "add `for_each: <a list>` or remove `as`",
                    );
                    None
                }
                (None, None) => None,
            };
            if let Some(item) = &bound {
                self.scope.push(item.clone());
            }
            self.check_expr(
                &format!("{pp}.account"),
                p.account.as_str(),
                ExprContext::Case,
            );
            self.check_expr(
                &format!("{pp}.amount"),
                p.amount.as_str(),
                ExprContext::Case,
            );
            if let Some(m) = &p.min {
                if m.as_str().trim() != crate::PostingSpec::NO_BOUND {
                    self.check_expr(&format!("{pp}.min"), m.as_str(), ExprContext::Case);
                }
            }
            if let Some(m) = &p.max {
                self.check_expr(&format!("{pp}.max"), m.as_str(), ExprContext::Case);
            }
            if bound.is_some() {
                self.scope.pop();
            }
        }
    }

    fn check_emit(&mut self, sp: &str, e: &crate::EmitSpec) {
        if e.event.trim().is_empty() {
            self.error(
                self.value(&format!("{sp}.emit.event")),
                "the event name is empty",
                "name the event sent, such as `paiement_recu`",
            );
        }
        for (key, expr) in &e.payload {
            self.check_expr(
                &format!("{sp}.emit.payload.{key}"),
                expr.as_str(),
                ExprContext::Case,
            );
        }
    }

    fn check_number(&mut self, sp: &str, step: &Step, n: &crate::NumberSpec) {
        let np = format!("{sp}.number");
        if let Err(m) = crate::numbering::check_series(&n.series) {
            self.error(
                self.value(&format!("{np}.series")),
                m,
                "name the series in capitals, such as `FAC` for invoices or `AV` for credit notes",
            );
        }
        if let Err(m) = crate::numbering::check_format(&n.format) {
            self.error(
                self.value(&format!("{np}.format")),
                format!("the number format `{}`: {m}", n.format),
                "write it with {series}, {period} and {seq}, such as `{series}-{period}-{seq:04}`",
            );
        }
        if let Some(p) = &n.period {
            self.check_expr(&format!("{np}.period"), p.as_str(), ExprContext::Case);
        }
        if step.result.is_none() {
            self.error(
                self.key(&np),
                "the number is given to nobody: the step has no `result`",
                "add `result: numero` and use `numero.number` in the document it numbers",
            );
        }
    }

    /// Fields that only mean something for some kinds of step.
    fn check_fields_fit_kind(&mut self, sp: &str, step: &Step, kind: StepKind) {
        use StepKind::*;
        let name = kind.name();
        let article = if matches!(kind, Assign | Action) {
            "an"
        } else {
            "a"
        };
        if !step.with.is_empty() && !matches!(kind, Rule | Action | Call) {
            self.error(
                self.key(&format!("{sp}.with")),
                format!("`with` does not apply to {article} {name} step"),
                "`with` gives the arguments of a rule, an action or a call: remove it",
            );
        }
        if step.otherwise.is_some() && kind != Branch {
            self.error(
                self.key(&format!("{sp}.otherwise")),
                format!("`otherwise` only applies to a branch step, not to {article} {name} step"),
                "use `next` to choose the step that follows",
            );
        }
        if step.result.is_some()
            && matches!(kind, Branch | Wait | Fail | Assign | Parallel | ForEach)
        {
            let hint = match kind {
                Assign => "remove `result`: the names under `assign` are the variables it sets",
                _ => "remove `result`; to set a variable, use an `assign` step",
            };
            self.error(
                self.key(&format!("{sp}.result")),
                format!("{article} {name} step has no result to keep"),
                hint,
            );
        }
        for (field, set) in [
            ("retry", step.retry.is_some()),
            ("timeout", step.timeout.is_some()),
        ] {
            if set && !matches!(kind, Rule | Action | Call) {
                let hint = match kind {
                    WaitEvent => "retry and timeout apply to rule, action and call steps; to stop waiting, use `timeout` under `wait_event`",
                    Task => "retry and timeout apply to rule, action and call steps; to give the task a deadline, use `due` under `task`",
                    _ => "retry and timeout apply to rule, action and call steps: remove it",
                };
                self.error(
                    self.key(&format!("{sp}.{field}")),
                    format!("`{field}` does not apply to {article} {name} step"),
                    hint,
                );
            }
        }
    }

    /// A variable set by `assign`, `result` or `for_each.as`.
    fn check_variable_name(&mut self, path: &str, name: &str, is_value: bool) {
        let pos = if is_value {
            self.value(path)
        } else {
            self.key(path)
        };
        if !is_identifier(name) {
            self.error(
                pos,
                format!("`{name}` is not a valid variable name"),
                format!(
                    "use letters, digits and `_`, not starting with a digit, e.g. `{}`",
                    suggest_identifier(name)
                ),
            );
        } else if BUILTIN_VARIABLES.contains(&name) || name == "payload" {
            self.error(
                pos,
                format!("`{name}` is a reserved variable and cannot be set"),
                format!("choose another name, such as `{name}_calcule`"),
            );
        }
    }

    fn check_rule(&mut self, sp: &str, step: &Step, rule: &str) {
        let p = format!("{sp}.rule");
        if step.result.is_none() {
            self.error(
                self.key(&p),
                format!("the decision of rule `{rule}` is not kept"),
                "add `result: NAME` to keep it in a variable (a rule has no other effect)",
            );
        }
        let Some((module, function)) = rule
            .split_once('.')
            .filter(|(m, f)| is_identifier(m) && is_identifier(f))
        else {
            // A bare function name is a common slip: find the module that has it.
            let owner = self.catalog.rule_modules().into_iter().find(|m| {
                self.catalog
                    .rule_functions(m)
                    .is_some_and(|fs| fs.iter().any(|(f, _)| f == rule))
            });
            let hint = match owner {
                Some(m) => format!("did you mean `{m}.{rule}`?"),
                None => "name the module then the function, such as `penalites.penalite_l441`"
                    .to_string(),
            };
            self.error(
                self.value(&p),
                format!("`{rule}` is not of the form `module.function`"),
                hint,
            );
            return;
        };
        let Some(functions) = self.catalog.rule_functions(module) else {
            let modules = self.catalog.rule_modules();
            self.error(
                self.value(&p),
                format!("there is no rule module `{module}`"),
                name_hint(
                    module,
                    &modules,
                    "the rule modules are",
                    "there is no rule module yet: add one under `rules/`",
                ),
            );
            return;
        };
        let Some((_, params)) = functions.iter().find(|(f, _)| f == function) else {
            let names: Vec<&str> = functions.iter().map(|(f, _)| f.as_str()).collect();
            self.error(
                self.value(&p),
                format!("rule module `{module}` has no function `{function}`"),
                name_hint(
                    function,
                    &names,
                    "its functions are",
                    "it has no public function",
                ),
            );
            return;
        };
        for name in step.with.keys() {
            if !params.contains(name) {
                self.error(
                    self.key(&format!("{sp}.with.{name}")),
                    format!("`{name}` is not a parameter of `{rule}`"),
                    name_hint(
                        name,
                        params,
                        "its parameters are",
                        "it takes no parameter: remove `with`",
                    ),
                );
            }
        }
        let at = if step.with.is_empty() {
            p.clone()
        } else {
            format!("{sp}.with")
        };
        for param in params {
            if !step.with.contains_key(param) {
                self.error(
                    self.key(&at),
                    format!("`{rule}` needs the argument `{param}`"),
                    format!("add `{param}: <expression>` under `with`"),
                );
            }
        }
    }

    /// An inline Tera text, parsed now rather than failing the case when it runs.
    fn check_inline_text(&mut self, path: &str, text: &str) {
        if let Err(m) = self.catalog.check_text(text) {
            self.error(
                self.value(path),
                format!("the text does not parse as a Tera template: {m}"),
                "Tera expressions are simpler than Rhai: compute the value in an `assign` step and write `{{ valeur }}`",
            );
        }
    }

    fn check_task(&mut self, sp: &str, step: &Step) {
        let Some(task) = &step.task else { return };
        let tp = format!("{sp}.task");
        self.check_inline_text(&format!("{tp}.title"), &task.title);
        if let Some(i) = &task.instructions {
            self.check_inline_text(&format!("{tp}.instructions"), i);
        }
        if task.role.trim().is_empty() {
            self.error(
                self.value(&format!("{tp}.role")),
                "the task's role is empty",
                "name the role whose inbox receives the task, such as `recouvrement`",
            );
        }
        if task.outcomes.is_empty() {
            self.error(
                self.key(&format!("{tp}.outcomes")),
                "the task has no outcomes: nobody could decide it",
                "list the decisions and where each leads, e.g. `outcomes: { accepte: envoi, refuse: end }`",
            );
        }
        if let Some(due) = &task.due {
            self.check_duration(&format!("{tp}.due"), due);
        }
        for (k, r) in task.reminders.iter().enumerate() {
            self.check_duration(&format!("{tp}.reminders[{k}]"), r);
        }
        if let Some(esc) = &task.escalate_to {
            if esc.trim().is_empty() {
                self.error(
                    self.value(&format!("{tp}.escalate_to")),
                    "`escalate_to` names no role",
                    "name the role that takes over an overdue task, or remove `escalate_to`",
                );
            } else if task.due.is_none() {
                self.error(
                    self.key(&format!("{tp}.escalate_to")),
                    "`escalate_to` without `due` can never happen: the task is never overdue",
                    "add `due: P5D` (when the task is overdue), or remove `escalate_to`",
                );
            }
        }
        self.check_fields(&format!("{tp}.fields"), &task.fields);
        self.check_notices(&tp, task);
    }

    fn check_action(&mut self, sp: &str, step: &Step) {
        let Some(action) = &step.action else { return };
        let ap = format!("{sp}.action");
        self.check_connector_call(&ap, &action.connector, &action.operation, &action.templates);
    }

    /// A connector and its operation exist; the templates of the arguments exist.
    fn check_connector_call(
        &mut self,
        path: &str,
        connector: &str,
        operation: &str,
        templates: &indexmap::IndexMap<String, String>,
    ) {
        match self.catalog.connector_operations(connector) {
            None => {
                let names = self.catalog.connectors();
                self.error(
                    self.value(&format!("{path}.connector")),
                    format!("there is no connector `{connector}`"),
                    name_hint(
                        connector,
                        &names,
                        "the connectors are",
                        "no connector is configured",
                    ),
                );
            }
            Some(ops) if !ops.iter().any(|o| o == operation) => {
                self.error(
                    self.value(&format!("{path}.operation")),
                    format!("connector `{connector}` has no operation `{operation}`"),
                    name_hint(operation, &ops, "its operations are", "it has no operation"),
                );
            }
            Some(_) => {}
        }
        for (arg, template) in templates {
            self.check_template(&format!("{path}.templates.{arg}"), template);
        }
    }

    /// A task's `on_reminder` / `on_overdue`: a connector call that can happen.
    fn check_notices(&mut self, tp: &str, task: &crate::TaskSpec) {
        let notices = [
            (
                "on_reminder",
                &task.on_reminder,
                task.reminders.is_empty(),
                "`on_reminder` without `reminders` is never sent",
                "add `reminders: [P2D]` (when to remind), or remove `on_reminder`",
            ),
            (
                "on_overdue",
                &task.on_overdue,
                task.due.is_none(),
                "`on_overdue` without `due` is never sent: the task is never overdue",
                "add `due: P5D` (when the task is overdue), or remove `on_overdue`",
            ),
        ];
        for (name, notice, never, message, hint) in notices {
            let Some(n) = notice else { continue };
            let np = format!("{tp}.{name}");
            if never {
                self.error(self.key(&np), message, hint);
            }
            self.check_connector_call(&np, &n.connector, &n.operation, &n.templates);
            for (arg, expr) in &n.with {
                self.check_expr(
                    &format!("{np}.with.{arg}"),
                    expr.as_str(),
                    ExprContext::Case,
                );
            }
        }
    }

    fn check_template(&mut self, path: &str, template: &str) {
        let all = self.catalog.templates();
        if all.iter().any(|t| t == template) {
            return;
        }
        self.error(
            self.value(path),
            format!("there is no template `{template}`"),
            name_hint(
                template,
                &all,
                "the templates are",
                "there is no template yet: add the file under `templates/` (paths are relative to it)",
            ),
        );
    }

    fn check_call(&mut self, sp: &str, step: &Step, callee: &str) {
        let p = format!("{sp}.call");
        if callee == self.wf.id {
            self.error(
                self.value(&p),
                format!("workflow `{callee}` calls itself"),
                "a case that starts a case of its own workflow never ends: repeat steps with `next` instead",
            );
            return;
        }
        let Some(fields) = self.catalog.workflow_input(callee) else {
            let ids: Vec<String> = self
                .catalog
                .workflow_ids()
                .into_iter()
                .filter(|i| *i != self.wf.id)
                .collect();
            self.error(
                self.value(&p),
                format!("there is no workflow `{callee}`"),
                name_hint(
                    callee,
                    &ids,
                    "the workflows are",
                    "there is no other workflow in `workflows/`",
                ),
            );
            return;
        };
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        for name in step.with.keys() {
            if !names.contains(&name.as_str()) {
                self.error(
                    self.key(&format!("{sp}.with.{name}")),
                    format!("workflow `{callee}` has no input field `{name}`"),
                    name_hint(
                        name,
                        &names,
                        "its input fields are",
                        "it takes no input: remove `with`",
                    ),
                );
            }
        }
        let at = if step.with.is_empty() {
            p.clone()
        } else {
            format!("{sp}.with")
        };
        for (name, spec) in &fields {
            if spec.required && !step.with.contains_key(name) {
                self.error(
                    self.key(&at),
                    format!("workflow `{callee}` needs the input field `{name}`"),
                    format!("add `{name}: <expression>` under `with`"),
                );
            }
        }
    }

    // ---- values ----

    /// An ISO 8601 duration, or an expression computing one (anything not starting with `P`).
    fn check_duration(&mut self, path: &str, text: &str) {
        const EXAMPLES: &str = "write an ISO 8601 duration such as `P7D` (7 days), `PT2H` (2 hours), `PT30M` (30 minutes) or `P1M` (1 month)";
        let trimmed = text.trim();
        if trimmed.is_empty() {
            self.error(self.value(path), "the duration is empty", EXAMPLES);
            return;
        }
        if trimmed.starts_with('P') {
            if let Err(e) = IsoDuration::parse(trimmed) {
                self.error(self.value(path), e.to_string(), EXAMPLES);
            }
            return;
        }
        // Durations written the way people say them (`7D`, `2h`, `p7d`) are not expressions.
        let upper = trimmed.to_uppercase();
        let mut fixes: Vec<String> = Vec::new();
        for candidate in [upper.clone(), format!("PT{upper}"), format!("P{upper}")] {
            if candidate.starts_with('P')
                && IsoDuration::parse(&candidate).is_ok()
                && !fixes.contains(&candidate)
            {
                fixes.push(candidate);
            }
        }
        if !fixes.is_empty() {
            let hint = match fixes.as_slice() {
                [one] => format!("did you mean `{one}`?"),
                [a, b, ..] => format!(
                    "did you mean `{a}` or `{b}`? (after `T`, `M` means minutes; before, months)"
                ),
                [] => String::new(),
            };
            self.error(
                self.value(path),
                format!("`{text}` is not an ISO 8601 duration"),
                hint,
            );
            return;
        }
        if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
            self.error(
                self.value(path),
                format!("`{text}` is a number, not a duration: the unit is missing"),
                EXAMPLES,
            );
            return;
        }
        self.check_expr(path, trimmed, ExprContext::Case);
    }

    fn check_expr(&mut self, path: &str, source: &str, ctx: ExprContext) {
        let pos = self.value(path);
        if source.trim().is_empty() {
            self.error(
                pos,
                "the expression is empty",
                "write an expression, such as `input.montant * 2`",
            );
            return;
        }
        let free = match self.catalog.check_expr(source) {
            Ok(free) => free,
            Err(message) => {
                self.error(
                    pos,
                    format!("expression `{source}` does not compile: {message}"),
                    "fix the Rhai expression; text values need quotes inside it, e.g. `statut == \"payee\"`",
                );
                return;
            }
        };
        let known = self.known_variables(ctx);
        let mut reported = HashSet::new();
        for var in free {
            if known.contains(&var) || !reported.insert(var.clone()) {
                continue;
            }
            let names: Vec<&str> = known.iter().map(String::as_str).collect();
            let loop_owner = self
                .loop_vars
                .get(&var)
                .filter(|_| ctx == ExprContext::Case);
            let hint = if let Some(owner) = loop_owner {
                format!("`{var}` belongs to the for_each step `{owner}`: it is only known inside that step's `steps`")
            } else if let Some(best) = did_you_mean(&var, names.iter().copied()) {
                format!("did you mean `{best}`?")
            } else if ctx == ExprContext::Trigger {
                "a trigger's input is computed from what was delivered: read it as `payload.NAME`"
                    .to_string()
            } else {
                format!(
                    "set it first with `assign` or a step's `result`, or quote it if it is text (`\"{var}\"`); known here: {}",
                    listing(&names)
                )
            };
            self.error(pos, format!("unknown variable `{var}`"), hint);
        }
        if ctx == ExprContext::Case {
            self.check_members(pos, source);
        }
    }

    fn known_variables(&self, ctx: ExprContext) -> BTreeSet<String> {
        match ctx {
            ExprContext::Trigger => ["payload", "params", "now", "today"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ExprContext::Case => BUILTIN_VARIABLES
                .iter()
                .map(|s| s.to_string())
                .chain(self.assigned.iter().cloned())
                .chain(self.scope.iter().cloned())
                .collect(),
        }
    }

    /// `input.NAME` and `params.NAME` must name a declared input field or parameter: both are
    /// declared in this file, so a typo there is certain to fail at run time.
    fn check_members(&mut self, pos: Pos, source: &str) {
        let wf = self.wf;
        for (root, member) in member_accesses(source) {
            match root.as_str() {
                "input" if !wf.input.is_empty() && !wf.input.contains_key(&member) => {
                    let names: Vec<&str> = wf.input.keys().map(String::as_str).collect();
                    self.error(
                        pos,
                        format!("the input has no field `{member}`"),
                        name_hint(&member, &names, "the input fields are", ""),
                    );
                }
                "params" if !wf.params.contains_key(&member) => {
                    let names: Vec<&str> = wf.params.keys().map(String::as_str).collect();
                    self.error(
                        pos,
                        format!("there is no parameter `{member}`"),
                        name_hint(
                            &member,
                            &names,
                            "the parameters are",
                            "declare it under `params:` at the top of the file",
                        ),
                    );
                }
                _ => {}
            }
        }
    }
}

/// Accesses `root.member` in an expression, outside string literals, where `root` is not itself
/// a member of something else.
fn member_accesses(source: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut prev_significant: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            prev_significant = Some(c);
            continue;
        }
        if ident_start(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if prev_significant != Some('.')
                && i + 1 < chars.len()
                && chars[i] == '.'
                && ident_start(chars[i + 1])
            {
                let ms = i + 1;
                let mut j = ms;
                while j < chars.len() && ident_char(chars[j]) {
                    j += 1;
                }
                out.push((word, chars[ms..j].iter().collect()));
            }
            prev_significant = Some('a');
            continue;
        }
        if c.is_ascii_digit() {
            // Numbers such as `1.5` must not read as a member access.
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
            prev_significant = Some('0');
            continue;
        }
        if !c.is_whitespace() {
            prev_significant = Some(c);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("montant_ttc"));
        assert!(!is_identifier("2x"));
        assert!(is_step_id("etape-2"));
        assert_eq!(
            suggest_identifier("Calcul pénalité L441"),
            "calcul_penalite_l441"
        );
        assert_eq!(suggest_identifier("  "), "mon_nom");
    }

    #[test]
    fn member_accesses_skip_strings_and_numbers() {
        let found =
            member_accesses(r#"input.montant * 1.5 + params.taux > "input.x" && a.input.y"#);
        let expected: Vec<(String, String)> =
            [("input", "montant"), ("params", "taux"), ("a", "input")]
                .iter()
                .map(|(r, m)| (r.to_string(), m.to_string()))
                .collect();
        // `a.input.y` is a member of `a`, not of the case's input.
        assert_eq!(found, expected);
    }
}
