//! Rule test tables written by analysts: `rules/<module>.test.yaml`.
//!
//! ```yaml
//! module: penalites          # optional; default: the file name before .test.yaml
//! function: penalite_l441    # default function of the rows
//! now: 2026-03-01T00:00:00Z  # optional (default 2000-01-01T00:00:00Z); rows may set their own
//! rows:
//!   - name: 30 jours de retard
//!     args: [1000.00, 30, 0.1215]          # positional, or
//!     # with: { montant_ttc: 1000.00, jours_retard: 30, taux_annuel: 0.1215 }
//!     expect: 9.99
//!   - name: montant négatif refusé
//!     args: [-1, 30, 0.1]
//!     expect_error: "montant"              # part of the error message (any case)
//! ```
//!
//! Numbers keep their exact text, and expected and actual values are compared with
//! numbers by decimal value (`9.99` equals `9.990`), objects and lists structurally.

use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde_json::Value;

use crate::error::{close_names, did_you_mean};
use crate::yaml::{self, Kind, Node};
use crate::{short_json, FnSig, RuleContext, RuleError, RuleModule, Rules};

/// The time rows run at when neither the file nor the row sets `now`.
pub const DEFAULT_TEST_NOW: &str = "2000-01-01T00:00:00Z";

/// The outcome of a test table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TestReport {
    /// The test file, as given.
    pub path: String,
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<TestFailure>,
}

/// A row that did not pass.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestFailure {
    /// The row's `name`.
    pub name: String,
    /// 1-based line of the row in the YAML file.
    pub line: usize,
    pub message: String,
}

/// How a row passes its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum RowArgs {
    /// `args: [..]`, in parameter order.
    Positional(Vec<Value>),
    /// `with: {..}`, matched to the parameter names.
    Named(Vec<(String, Value)>),
}

/// What a row expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    Value(Value),
    /// Part of the error message.
    Error(String),
}

/// One row of a test table.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRow {
    pub name: String,
    pub line: usize,
    pub function: Option<String>,
    pub now: Option<DateTime<Utc>>,
    pub args: RowArgs,
    pub expect: Expectation,
}

/// A parsed test table.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTestFile {
    pub path: String,
    /// The module under test (`module:` or the file name before `.test.yaml`).
    pub module: String,
    pub function: Option<String>,
    pub now: Option<DateTime<Utc>>,
    pub rows: Vec<TestRow>,
    /// Rows too malformed to run; each counts as a failure.
    pub invalid_rows: Vec<TestFailure>,
}

const FILE_KEYS: &[&str] = &["module", "function", "now", "rows"];
const ROW_KEYS: &[&str] = &[
    "name",
    "function",
    "now",
    "args",
    "with",
    "expect",
    "expect_error",
];

fn file_error(path: &str, line: Option<usize>, message: String, hint: Option<String>) -> RuleError {
    RuleError::TestFile {
        path: path.to_string(),
        line: line.and_then(|l| u32::try_from(l).ok()),
        message,
        hint,
    }
}

fn unknown_key_hint(key: &str, known: &[&str]) -> String {
    let known_list = known.join(", ");
    match did_you_mean(&close_names(key, known.iter().copied())) {
        Some(dym) => format!("{dym} the keys are: {known_list}"),
        None => format!("the keys are: {known_list}"),
    }
}

/// Reads `2026-03-01T00:00:00Z` (any offset) or `2026-03-01` (midnight UTC).
fn parse_now(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .map(|d| d.and_time(NaiveTime::MIN).and_utc())
        })
}

/// The module a test file is for by its name: `penalites.test.yaml` → `penalites`.
pub fn module_name_from_path(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    file.strip_suffix(".test.yaml")
        .or_else(|| file.strip_suffix(".test.yml"))
        .map(str::to_string)
}

impl RuleTestFile {
    /// Reads and parses a test file.
    pub fn load(path: &Path) -> Result<RuleTestFile, RuleError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            file_error(
                &shown,
                None,
                format!("cannot read the test file: {e}"),
                None,
            )
        })?;
        let stem = module_name_from_path(path);
        RuleTestFile::parse(&shown, stem.as_deref(), &text)
    }

    /// Parses a test table. `default_module` is used when the file has no `module:`.
    pub fn parse(
        path: &str,
        default_module: Option<&str>,
        text: &str,
    ) -> Result<RuleTestFile, RuleError> {
        let root = yaml::parse(text).map_err(|e| {
            file_error(
                path,
                Some(e.line),
                format!("this is not valid YAML: {}", e.message),
                None,
            )
        })?;
        let Some(entries) = root.as_map() else {
            return Err(file_error(
                path,
                Some(root.line),
                format!(
                    "a test file must be a mapping with `rows:`, not {}",
                    root.kind_name()
                ),
                None,
            ));
        };

        let mut module = default_module.map(str::to_string);
        let mut function = None;
        let mut now = None;
        let mut rows_node = None;
        for entry in entries {
            let (key, node) = (&entry.key, &entry.value);
            match key.as_str() {
                "module" => module = Some(text_value(path, key, node)?),
                "function" => function = Some(text_value(path, key, node)?),
                "now" => now = Some(now_value(path, node)?),
                "rows" => rows_node = Some(node),
                other => {
                    return Err(file_error(
                        path,
                        Some(entry.key_line),
                        format!("unknown key `{other}`"),
                        Some(unknown_key_hint(other, FILE_KEYS)),
                    ))
                }
            }
        }
        let module = module.ok_or_else(|| {
            file_error(
                path,
                None,
                "the test file does not say which module it tests".into(),
                Some("add `module: <name>` or name the file <module>.test.yaml".into()),
            )
        })?;
        let Some(rows_node) = rows_node else {
            return Err(file_error(
                path,
                Some(root.line),
                "the test file has no `rows:`".into(),
                None,
            ));
        };
        let Kind::Seq(row_nodes) = &rows_node.kind else {
            return Err(file_error(
                path,
                Some(rows_node.line),
                format!("`rows` must be a list, not {}", rows_node.kind_name()),
                Some("start each row with `- name: ...`".into()),
            ));
        };

        let mut rows = Vec::new();
        let mut invalid_rows = Vec::new();
        for (i, node) in row_nodes.iter().enumerate() {
            match parse_row(node, i) {
                Ok(row) => rows.push(row),
                Err(failure) => invalid_rows.push(failure),
            }
        }
        Ok(RuleTestFile {
            path: path.to_string(),
            module,
            function,
            now,
            rows,
            invalid_rows,
        })
    }

    /// Runs every row against `module`.
    pub fn run(&self, rules: &Rules, module: &RuleModule) -> Result<TestReport, RuleError> {
        if self.module != module.name {
            return Err(file_error(
                &self.path,
                None,
                format!(
                    "this test file is for the module `{}`, not `{}`",
                    self.module, module.name
                ),
                None,
            ));
        }
        let default_now = parse_now(DEFAULT_TEST_NOW).unwrap_or_default();
        let mut report = TestReport {
            path: self.path.clone(),
            ..TestReport::default()
        };
        report.failures.extend(self.invalid_rows.iter().cloned());
        for row in &self.rows {
            let ctx = RuleContext::new(row.now.or(self.now).unwrap_or(default_now));
            if let Err(message) = self.run_row(rules, module, row, &ctx) {
                report.failures.push(TestFailure {
                    name: row.name.clone(),
                    line: row.line,
                    message,
                });
            } else {
                report.passed += 1;
            }
        }
        report.failures.sort_by_key(|f| f.line);
        report.failed = report.failures.len();
        Ok(report)
    }

    fn run_row(
        &self,
        rules: &Rules,
        module: &RuleModule,
        row: &TestRow,
        ctx: &RuleContext,
    ) -> Result<(), String> {
        let function = row
            .function
            .as_deref()
            .or(self.function.as_deref())
            .ok_or_else(|| {
                "no function to call: set `function:` at the top of the file or in the row"
                    .to_string()
            })?;
        let args = match &row.args {
            RowArgs::Positional(args) => args.clone(),
            RowArgs::Named(named) => named_args(module, function, named)?,
        };
        let outcome = rules.call(module, function, &args, ctx);
        match (&row.expect, outcome) {
            (Expectation::Value(expected), Ok(actual)) => {
                if compare_json(expected, &actual) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected {}, got {}",
                        short_json(expected),
                        short_json(&actual)
                    ))
                }
            }
            (Expectation::Value(expected), Err(e)) => Err(format!(
                "expected {}, got an error: {e}",
                short_json(expected)
            )),
            (Expectation::Error(part), Ok(actual)) => Err(format!(
                "expected an error containing `{part}`, got {}",
                short_json(&actual)
            )),
            (Expectation::Error(part), Err(e)) => {
                let text = e.to_string();
                if text.to_lowercase().contains(&part.to_lowercase()) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected an error containing `{part}`, got another error: {text}"
                    ))
                }
            }
        }
    }
}

/// Orders `with:` arguments as the function's parameters.
fn named_args(
    module: &RuleModule,
    function: &str,
    named: &[(String, Value)],
) -> Result<Vec<Value>, String> {
    let candidates: Vec<&FnSig> = module
        .functions
        .iter()
        .filter(|f| f.name == function)
        .collect();
    if candidates.is_empty() {
        // Let `Rules::call` word the "no such function" error.
        return Ok(named.iter().map(|(_, v)| v.clone()).collect());
    }
    let sig = candidates
        .iter()
        .find(|f| {
            f.params.len() == named.len()
                && named.iter().all(|(k, _)| f.params.iter().any(|p| p == k))
        })
        .unwrap_or(&candidates[0]);
    let params = sig.params.join(", ");
    let unknown: Vec<&str> = named
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !sig.params.iter().any(|p| p == k))
        .collect();
    let missing: Vec<&str> = sig
        .params
        .iter()
        .map(String::as_str)
        .filter(|p| !named.iter().any(|(k, _)| k == p))
        .collect();
    let mut problems = Vec::new();
    if !unknown.is_empty() {
        let mut text = format!("unknown parameter(s) `{}`", unknown.join("`, `"));
        if let [one] = unknown.as_slice() {
            if let Some(dym) =
                did_you_mean(&close_names(one, sig.params.iter().map(String::as_str)))
            {
                text.push_str(&format!(" ({dym})"));
            }
        }
        problems.push(text);
    }
    if !missing.is_empty() {
        problems.push(format!("missing parameter(s) `{}`", missing.join("`, `")));
    }
    if !problems.is_empty() {
        return Err(format!(
            "{} for `{}.{function}`, whose parameters are: {params}",
            problems.join(" and "),
            module.name
        ));
    }
    Ok(sig
        .params
        .iter()
        .filter_map(|p| named.iter().find(|(k, _)| k == p).map(|(_, v)| v.clone()))
        .collect())
}

fn text_value(path: &str, key: &str, node: &Node) -> Result<String, RuleError> {
    match &node.kind {
        Kind::Str(s) => Ok(s.clone()),
        _ => Err(file_error(
            path,
            Some(node.line),
            format!("`{key}` must be a text, not {}", node.kind_name()),
            None,
        )),
    }
}

fn now_value(path: &str, node: &Node) -> Result<DateTime<Utc>, RuleError> {
    node.as_text()
        .as_deref()
        .and_then(parse_now)
        .ok_or_else(|| {
            file_error(
                path,
                Some(node.line),
                "`now` must be a date-time such as 2026-03-01T00:00:00Z".into(),
                None,
            )
        })
}

fn parse_row(node: &Node, index: usize) -> Result<TestRow, TestFailure> {
    let line = node.line;
    let fallback_name = format!("row {}", index + 1);
    let Some(entries) = node.as_map() else {
        return Err(TestFailure {
            name: fallback_name,
            line,
            message: format!(
                "a row must be a mapping (`- name: ...`), not {}",
                node.kind_name()
            ),
        });
    };
    let get = |key: &str| entries.iter().find(|e| e.key == key).map(|e| &e.value);
    let name = get("name").and_then(Node::as_text).unwrap_or(fallback_name);
    let fail = |message: String| TestFailure {
        name: name.clone(),
        line,
        message,
    };

    if let Some(key) = entries
        .iter()
        .map(|e| &e.key)
        .find(|k| !ROW_KEYS.contains(&k.as_str()))
    {
        return Err(fail(format!(
            "unknown key `{key}` ({})",
            unknown_key_hint(key, ROW_KEYS)
        )));
    }
    if get("name").is_none() {
        return Err(fail("the row has no `name`".into()));
    }
    let function = match get("function") {
        None => None,
        Some(n) => match &n.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => return Err(fail("`function` must be a text".into())),
        },
    };
    let now = match get("now") {
        None => None,
        Some(n) => Some(n.as_text().as_deref().and_then(parse_now).ok_or_else(|| {
            fail("`now` must be a date-time such as 2026-03-01T00:00:00Z".into())
        })?),
    };
    let args = match (get("args"), get("with")) {
        (Some(_), Some(_)) => {
            return Err(fail("a row gives either `args` or `with`, not both".into()))
        }
        (Some(node), None) => match &node.kind {
            Kind::Seq(items) => RowArgs::Positional(items.iter().map(Node::to_json).collect()),
            Kind::Null => RowArgs::Positional(Vec::new()),
            // A single argument may be written without brackets.
            _ => RowArgs::Positional(vec![node.to_json()]),
        },
        (None, Some(node)) => match &node.kind {
            Kind::Map(pairs) => RowArgs::Named(
                pairs
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
            _ => {
                return Err(fail(format!(
                    "`with` must map parameter names to values, not {}",
                    node.kind_name()
                )))
            }
        },
        (None, None) => RowArgs::Positional(Vec::new()),
    };
    let expect =
        match (get("expect"), get("expect_error")) {
            (Some(_), Some(_)) => return Err(fail(
                "a row expects either a value (`expect`) or an error (`expect_error`), not both"
                    .into(),
            )),
            (Some(node), None) => Expectation::Value(node.to_json()),
            (None, Some(node)) => match node.as_text() {
                Some(part) => Expectation::Error(part),
                None => {
                    return Err(fail(
                        "`expect_error` must be a part of the error message".into(),
                    ))
                }
            },
            (None, None) => {
                return Err(fail(
                    "the row has no `expect` (the expected value) nor `expect_error`".into(),
                ))
            }
        };
    Ok(TestRow {
        name,
        line,
        function,
        now,
        args,
        expect,
    })
}

/// Compares JSON values with numbers by decimal value (`9.99` equals `9.990`, `10`
/// equals `10.0`), objects by keys and values, lists element by element.
pub fn compare_json(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => {
            let (ta, tb) = (a.to_string(), b.to_string());
            match (
                crate::convert::parse_decimal_text(&ta),
                crate::convert::parse_decimal_text(&tb),
            ) {
                (Some(x), Some(y)) => x == y,
                _ => ta == tb,
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| compare_json(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, x)| b.get(k).is_some_and(|y| compare_json(x, y)))
        }
        (a, b) => a == b,
    }
}

/// Reads the test table at `test_path` and runs it against `module`.
pub fn run_rule_tests(
    rules: &Rules,
    test_path: &Path,
    module: &RuleModule,
) -> Result<TestReport, RuleError> {
    RuleTestFile::load(test_path)?.run(rules, module)
}

/// Runs a test table given as text; `path` is only used in messages and to find the
/// default module name (`penalites.test.yaml` → `penalites`).
pub fn run_rule_tests_str(
    rules: &Rules,
    path: &str,
    yaml_text: &str,
    module: &RuleModule,
) -> Result<TestReport, RuleError> {
    let stem = module_name_from_path(Path::new(path));
    RuleTestFile::parse(path, stem.as_deref(), yaml_text)?.run(rules, module)
}
