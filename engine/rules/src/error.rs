//! Errors of the rules engine, worded for the analysts who write the rules.
//!
//! Every message starts lowercase and has no trailing period; a separate `hint`
//! suggests what to change. `{}` shows the message (with its location), `{:#}`
//! adds the hint on a second line.

use std::fmt;

use rhai::{EvalAltResult, LexError, ParseErrorType, Position};

use crate::helpers::{HelperError, BUILTINS, HELPERS};
use crate::Limits;

/// An error from compiling or running a rule, converting a value, or reading a
/// rule test file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A rule module does not compile. `line`/`column` are 1-based.
    Compile {
        path: String,
        line: Option<u32>,
        column: Option<u32>,
        message: String,
        hint: Option<String>,
    },
    /// A workflow expression does not compile. `column` is 1-based (on line `line`
    /// of the expression when it spans several lines).
    Expression {
        expression: String,
        line: Option<u32>,
        column: Option<u32>,
        message: String,
        hint: Option<String>,
    },
    /// A rule or expression failed while running. `function` is `module.function`
    /// for a rule, the expression's text for an expression; the position (when Rhai
    /// gives one) is in `path` for a rule, in the expression's text otherwise.
    Runtime {
        function: String,
        path: Option<String>,
        line: Option<u32>,
        column: Option<u32>,
        message: String,
        hint: Option<String>,
    },
    /// A value cannot cross between JSON and the rules engine.
    Value {
        message: String,
        hint: Option<String>,
    },
    /// A rule test file (`*.test.yaml`) cannot be read or is malformed.
    TestFile {
        path: String,
        line: Option<u32>,
        message: String,
        hint: Option<String>,
    },
}

impl RuleError {
    /// The message alone, without location or hint.
    pub fn message(&self) -> &str {
        match self {
            RuleError::Compile { message, .. }
            | RuleError::Expression { message, .. }
            | RuleError::Runtime { message, .. }
            | RuleError::Value { message, .. }
            | RuleError::TestFile { message, .. } => message,
        }
    }

    /// What the analyst could change, when we can tell.
    pub fn hint(&self) -> Option<&str> {
        match self {
            RuleError::Compile { hint, .. }
            | RuleError::Expression { hint, .. }
            | RuleError::Runtime { hint, .. }
            | RuleError::Value { hint, .. }
            | RuleError::TestFile { hint, .. } => hint.as_deref(),
        }
    }

    /// 1-based line of the error, when known.
    pub fn line(&self) -> Option<u32> {
        match self {
            RuleError::Compile { line, .. }
            | RuleError::Expression { line, .. }
            | RuleError::Runtime { line, .. }
            | RuleError::TestFile { line, .. } => *line,
            RuleError::Value { .. } => None,
        }
    }
}

fn at(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::Compile {
                path,
                line,
                column,
                message,
                ..
            } => write!(f, "{path}{}: {message}", at(*line, *column))?,
            RuleError::Expression {
                expression,
                line,
                column,
                message,
                ..
            } => {
                write!(
                    f,
                    "the expression `{expression}` does not compile: {message}"
                )?;
                match (line, column) {
                    (Some(l), Some(c)) if *l > 1 => write!(f, " (line {l}, column {c})")?,
                    (_, Some(c)) => write!(f, " (column {c})")?,
                    _ => {}
                }
            }
            RuleError::Runtime {
                path,
                line,
                column,
                message,
                ..
            } => {
                f.write_str(message)?;
                match (path, line) {
                    (Some(p), Some(_)) => write!(f, " ({p}{})", at(*line, *column))?,
                    (None, Some(l)) => match column {
                        Some(c) if *l == 1 => write!(f, " (column {c})")?,
                        Some(c) => write!(f, " (line {l}, column {c})")?,
                        None => write!(f, " (line {l})")?,
                    },
                    _ => {}
                }
            }
            RuleError::Value { message, .. } => f.write_str(message)?,
            RuleError::TestFile {
                path,
                line,
                message,
                ..
            } => write!(f, "{path}{}: {message}", at(*line, None))?,
        }
        if f.alternate() {
            if let Some(hint) = self.hint() {
                write!(f, "\nhint: {hint}")?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Suggestions
// ---------------------------------------------------------------------------

/// Names close to `wanted` among `candidates` (best first, at most three).
pub(crate) fn close_names<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let wanted_lower = wanted.to_lowercase();
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .map(|c| (strsim::jaro_winkler(&wanted_lower, &c.to_lowercase()), c))
        .filter(|(score, c)| {
            let distance = strsim::levenshtein(&wanted_lower, &c.to_lowercase());
            let len = wanted.chars().count();
            *score >= 0.88 || (len >= 5 && distance <= 2) || (len >= 3 && distance <= 1)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let best = scored.first().map_or(0.0, |(score, _)| *score);
    let mut out: Vec<String> = Vec::new();
    for (_, c) in scored.into_iter().filter(|(score, _)| best - score <= 0.1) {
        if !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
        if out.len() == 3 {
            break;
        }
    }
    out
}

/// "did you mean `a`?" / "did you mean `a` or `b`?", if there is anything close.
pub(crate) fn did_you_mean(names: &[String]) -> Option<String> {
    match names {
        [] => None,
        [one] => Some(format!("did you mean `{one}`?")),
        [init @ .., last] => Some(format!(
            "did you mean {} or `{last}`?",
            init.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn join_hints(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) if a.ends_with('?') => Some(format!("{a} {b}")),
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

const KEYWORDS: &[&str] = &[
    "fn",
    "private",
    "let",
    "const",
    "if",
    "else",
    "switch",
    "while",
    "loop",
    "do",
    "until",
    "for",
    "in",
    "break",
    "continue",
    "return",
    "throw",
    "try",
    "catch",
    "true",
    "false",
    "this",
    "global",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "type_of",
    "print",
    "debug",
];

/// Identifiers appearing in a source text (for "did you mean" on compile errors).
pub(crate) fn identifiers(source: &str) -> Vec<&str> {
    let mut out: Vec<&str> = source
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && !KEYWORDS.contains(w)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Rhai's wording, made to fit: lowercase start, backticks, no trailing period.
fn tidy(s: &str) -> String {
    lower_first(s.trim_end_matches('.')).replace('\'', "`")
}

/// 1-based line and column of a Rhai position, when it has one.
pub(crate) fn line_col(pos: Position) -> (Option<u32>, Option<u32>) {
    let small = |n: Option<usize>| n.and_then(|n| u32::try_from(n).ok());
    (small(pos.line()), small(pos.position()))
}

// ---------------------------------------------------------------------------
// Compile errors
// ---------------------------------------------------------------------------

/// Describes a Rhai parse error as (message, hint).
pub(crate) fn describe_parse(
    err: &ParseErrorType,
    source: &str,
    limits: &Limits,
    in_module: bool,
) -> (String, Option<String>) {
    match err {
        ParseErrorType::VariableUndefined(name) => {
            let suggestion = did_you_mean(&close_names(
                name,
                identifiers(source)
                    .into_iter()
                    .chain(["NOW", "TODAY"]),
            ));
            let scope_hint = if in_module {
                "a rule function can only read its parameters, its own `let` variables, NOW and TODAY"
            } else {
                "an expression can read the workflow's variables, NOW and TODAY"
            };
            (
                format!("unknown variable `{name}`"),
                join_hints(suggestion, Some(scope_hint.into())),
            )
        }
        ParseErrorType::Reserved(word) | ParseErrorType::ForbiddenVariable(word) => {
            forbidden_word(word).unwrap_or_else(|| {
                (
                    format!("`{word}` is a reserved word and cannot be used here"),
                    Some("choose another name".into()),
                )
            })
        }
        ParseErrorType::ExprTooDeep => (
            format!(
                "the code is nested too deeply (more than {} levels)",
                limits.max_expr_depth
            ),
            Some("split it into intermediate `let` variables or smaller functions; a long `else if` chain reads better as a `switch`".into()),
        ),
        ParseErrorType::UnexpectedEOF => (
            "the text ends in the middle of a statement".into(),
            Some("a closing `}`, `)` or `]` is probably missing".into()),
        ),
        ParseErrorType::MissingToken(token, what) => {
            let what = tidy(what);
            let message = if what.is_empty() {
                format!("expected `{token}`")
            } else {
                format!("expected `{token}` {what}")
            };
            let hint = match token.as_str() {
                ";" => Some("statements end with `;` (except the last expression of a block, which is its value)".into()),
                _ => None,
            };
            (message, hint)
        }
        ParseErrorType::BadInput(lex) => describe_lex(lex),
        ParseErrorType::FnDuplicatedDefinition(name, n) => (
            format!("the function `{name}` with {n} parameter(s) is defined twice"),
            Some("rename or delete one of them".into()),
        ),
        ParseErrorType::WrongFnDefinition => (
            "functions must be defined at the top level of the module, not inside a block or another function".into(),
            None,
        ),
        ParseErrorType::AssignmentToConstant(name) if !name.is_empty() => (
            format!("cannot change the constant `{name}`"),
            Some("declare it with `let` if it must change".into()),
        ),
        ParseErrorType::ExprExpected(what) => (
            format!("expected {} here", if what.is_empty() { "an expression".to_string() } else { format!("{what} expression") }),
            None,
        ),
        ParseErrorType::LiteralTooLarge(what, max) => (
            format!("{} is larger than allowed (limit {max})", tidy(what)),
            None,
        ),
        other => (tidy(&other.to_string()), None),
    }
}

/// The words disabled in the sandbox, with their explanation.
fn forbidden_word(word: &str) -> Option<(String, Option<String>)> {
    match word {
        "eval" => Some((
            "`eval` is not allowed in rules".into(),
            Some("rules cannot run code built from text; write the computation directly".into()),
        )),
        "import" | "export" => Some((
            format!("`{word}` is not allowed in rules"),
            Some("a rule module cannot load other files; put the functions it needs in the same module".into()),
        )),
        _ => None,
    }
}

fn describe_lex(err: &LexError) -> (String, Option<String>) {
    match err {
        LexError::UnexpectedInput(s) => (format!("unexpected `{s}`"), None),
        LexError::UnterminatedString => (
            "a text (string) is not closed".into(),
            Some("add the closing `\"`".into()),
        ),
        LexError::MalformedNumber(s) => (
            format!("`{s}` is not a valid number"),
            Some("decimals are written with a dot and no thousands separator: 1234.56".into()),
        ),
        LexError::ImproperSymbol(s, _) if forbidden_word(s).is_some() => {
            forbidden_word(s).unwrap_or_default()
        }
        other => (tidy(&other.to_string()), None),
    }
}

// ---------------------------------------------------------------------------
// Runtime errors
// ---------------------------------------------------------------------------

/// What the runtime error mapper needs to know to word an error.
pub(crate) struct Subject<'a> {
    /// `penalites.calcul` or the expression's text.
    pub function: String,
    /// "the rule `penalites.calcul`" or "the expression `…`".
    pub label: String,
    /// Rule file path (rules only).
    pub path: Option<String>,
    pub limits: &'a Limits,
    /// Variables in scope (for "unknown variable" suggestions).
    pub variables: Vec<String>,
    /// Script functions of the module (name, parameters).
    pub functions: Vec<(String, Vec<String>)>,
    /// Field names found in the inputs (for "no field" suggestions).
    pub fields: Vec<String>,
}

/// Analyst-friendly type names, with their article, for Rhai's type names.
fn type_word(t: &str) -> &'static str {
    let t = t.trim();
    if t.contains("ImmutableString") || t.contains("&str") || t == "string" || t == "String" {
        return "a text";
    }
    match t {
        "i64" | "i32" | "INT" => "an integer",
        "decimal" | "rust_decimal::Decimal" | "Decimal" => "a decimal",
        "bool" => "a boolean",
        "()" => "nothing (null)",
        "map" | "Map" | "rhai::Map" => "an object",
        "array" | "Array" | "rhai::Array" => "a list",
        "char" => "a character",
        "Fn" | "FnPtr" => "a function pointer",
        "blob" => "a blob",
        _ => "a value of another type",
    }
}

const OPERATORS: &[&str] = &[
    "+", "-", "*", "/", "%", "**", "==", "!=", "<", ">", "<=", ">=", "&&", "||", "!", "&", "|",
    "^", "<<", ">>", "+=", "-=", "*=", "/=", "%=", "**=", "..", "..=", "in",
];

/// Splits Rhai's "name (type, type)" function signature.
fn split_signature(sig: &str) -> (&str, Vec<&str>) {
    match sig.find(" (") {
        Some(i) if sig.ends_with(')') => {
            let name = &sig[..i];
            let inner = &sig[i + 2..sig.len() - 1];
            let types = if inner.trim().is_empty() {
                Vec::new()
            } else {
                inner.split(',').map(str::trim).collect()
            };
            (name, types)
        }
        _ => (sig, Vec::new()),
    }
}

/// Converts a Rhai runtime error into a [`RuleError::Runtime`].
pub(crate) fn runtime_error(err: &EvalAltResult, subject: &Subject<'_>) -> RuleError {
    // Walk down through "in call to function" wrappers to the real cause.
    let mut inner = err;
    let mut pos = err.position();
    let mut inside: Vec<&str> = Vec::new();
    while let EvalAltResult::ErrorInFunctionCall(name, _, cause, call_pos) = inner {
        if !call_pos.is_none() {
            pos = *call_pos;
        }
        if !name.starts_with("anon$") {
            inside.push(name.as_str());
        }
        inner = cause;
    }
    if !inner.position().is_none() {
        pos = inner.position();
    }

    let label = &subject.label;
    let limits = subject.limits;
    let failed = |detail: String| format!("{label} failed: {detail}");

    let (message, hint): (String, Option<String>) = match inner {
        EvalAltResult::ErrorTooManyOperations(_) => (
            format!("{label} exceeded its limit of {} operations", limits.max_operations),
            Some("it probably loops forever; check the loop's exit condition".into()),
        ),
        EvalAltResult::ErrorStackOverflow(_) => (
            format!("{label} exceeded its limit of {} nested function calls", limits.max_call_depth),
            Some("a function probably calls itself without end; check the case that stops the recursion".into()),
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            let what = what.to_lowercase();
            let detail = if what.contains("string") {
                format!("a text longer than {} bytes", limits.max_string_size)
            } else if what.contains("array") {
                format!("a list with more than {} elements", limits.max_array_size)
            } else if what.contains("map") {
                format!("an object with more than {} fields", limits.max_map_size)
            } else {
                format!("a value too large ({what})")
            };
            (
                format!("{label} built {detail}, which is more than allowed"),
                Some("it probably grows a value in a loop without end".into()),
            )
        }
        EvalAltResult::ErrorTooManyVariables(_)
        | EvalAltResult::ErrorTooManyModules(_)
        | EvalAltResult::ErrorTerminated(..) => (
            format!("{label} was stopped: {}", tidy(&inner.to_string())),
            None,
        ),
        EvalAltResult::ErrorVariableNotFound(name, _) => (
            failed(format!("unknown variable `{name}`")),
            did_you_mean(&close_names(
                name,
                subject
                    .variables
                    .iter()
                    .map(String::as_str)
                    .chain(["NOW", "TODAY"]),
            )),
        ),
        EvalAltResult::ErrorPropertyNotFound(name, _) => (
            failed(format!("there is no field `{name}`")),
            join_hints(
                did_you_mean(&close_names(name, subject.fields.iter().map(String::as_str))),
                Some(format!(
                    "(a field that may be missing is read with `x.get(\"{name}\") ?? default`)"
                )),
            ),
        ),
        EvalAltResult::ErrorFunctionNotFound(sig, _) => describe_missing_fn(sig, subject),
        EvalAltResult::ErrorRuntime(value, _) => {
            if let Some(e) = value.read_lock::<HelperError>() {
                (failed(e.message.clone()), e.hint.clone())
            } else if value.is_unit() {
                (format!("{label} failed"), None)
            } else {
                (failed(value.to_string()), None)
            }
        }
        EvalAltResult::ErrorArithmetic(detail, _) => {
            let detail = tidy(detail);
            let hint = if detail.contains("by zero") {
                Some("check that the divisor cannot be 0 before dividing".into())
            } else if detail.contains("overflow") {
                Some("the number went past the largest value allowed (integers: about 9.2e18, decimals: 28 digits)".into())
            } else {
                None
            };
            (failed(detail), hint)
        }
        EvalAltResult::ErrorMismatchDataType(expected, actual, _)
        | EvalAltResult::ErrorMismatchOutputType(expected, actual, _) => (
            failed(match (expected.is_empty(), actual.is_empty()) {
                (false, false) => format!("expected {} but got {}", type_word(expected), type_word(actual)),
                (false, true) => format!("expected {}", type_word(expected)),
                _ => format!("unexpected {}", type_word(actual)),
            }),
            None,
        ),
        EvalAltResult::ErrorArrayBounds(len, index, _) => (
            failed(format!("list index {index} is out of range: the list has {len} element(s)")),
            Some("list positions start at 0; negative positions count from the end".into()),
        ),
        EvalAltResult::ErrorStringBounds(len, index, _) => (
            failed(format!("text position {index} is out of range: the text has {len} character(s)")),
            None,
        ),
        EvalAltResult::ErrorIndexingType(t, _) => (
            failed(format!("{} cannot be indexed with `[...]`", type_word(t))),
            None,
        ),
        EvalAltResult::ErrorFor(_) => (
            failed("`for` needs a list or a range such as `0..10`".into()),
            None,
        ),
        EvalAltResult::ErrorAssignmentToConstant(name, _) => (
            failed(format!("cannot change the constant `{name}`")),
            None,
        ),
        EvalAltResult::ErrorParsing(parse, _) => {
            let (detail, hint) = describe_parse(parse, "", limits, false);
            (failed(detail), hint)
        }
        EvalAltResult::ErrorModuleNotFound(name, _) => (
            failed(format!("`import \"{name}\"` is not allowed in rules")),
            Some("a rule module cannot load other files".into()),
        ),
        other => (failed(tidy(&strip_position(&other.to_string()))), None),
    };

    // Mention the helper function the error happened in, if not the called one.
    let top = subject.function.rsplit('.').next().unwrap_or_default();
    let message = match inside.iter().rev().find(|n| **n != top) {
        Some(f) if inside.len() > 1 || inside.first().is_some_and(|n| *n != top) => {
            format!("{message} (inside `{f}`)")
        }
        _ => message,
    };

    let (line, column) = line_col(pos);
    RuleError::Runtime {
        function: subject.function.clone(),
        path: subject.path.clone(),
        line,
        column,
        message,
        hint,
    }
}

/// Removes Rhai's trailing " (line 1, position 2)".
fn strip_position(s: &str) -> String {
    match s.rfind(" (line ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s.to_string(),
    }
}

fn describe_missing_fn(sig: &str, subject: &Subject<'_>) -> (String, Option<String>) {
    let label = &subject.label;
    let (name, types) = split_signature(sig);
    let words: Vec<&str> = types.iter().map(|t| type_word(t)).collect();
    let has_null = types.iter().any(|t| t.trim() == "()");
    let null_hint = has_null.then(|| {
        "one of the values is empty (null or a missing result); check the data or give a default with `??`"
            .to_string()
    });

    if let Some(prop) = name.strip_prefix("get$") {
        let on = words.first().copied().unwrap_or("a value");
        return (
            format!("{label} failed: cannot read the field `{prop}` of {on}"),
            null_hint,
        );
    }
    if let Some(prop) = name.strip_prefix("set$") {
        let on = words.first().copied().unwrap_or("a value");
        return (
            format!("{label} failed: cannot set the field `{prop}` of {on}"),
            null_hint,
        );
    }
    if name == "index$get$" || name == "index$set$" {
        let on = words.first().copied().unwrap_or("a value");
        return (
            format!("{label} failed: {on} cannot be indexed with `[...]`"),
            null_hint,
        );
    }
    if OPERATORS.contains(&name) {
        let message = match words.as_slice() {
            [a] => format!("{label} failed: `{name}` cannot be used on {a}"),
            [a, b] => format!("{label} failed: `{name}` cannot be used between {a} and {b}"),
            _ => format!(
                "{label} failed: `{name}` cannot be used with ({})",
                words.join(", ")
            ),
        };
        let text_and_number = words.contains(&"a text")
            && words
                .iter()
                .any(|w| *w == "an integer" || *w == "a decimal");
        let hint = if text_and_number {
            Some("convert the text first, e.g. `decimal(\"12.50\")`; dates are compared with days_between".into())
        } else {
            null_hint
        };
        return (message, hint);
    }

    let helper = HELPERS.iter().find(|(n, _)| *n == name);
    let script = subject
        .functions
        .iter()
        .filter(|(n, _)| n == name)
        .collect::<Vec<_>>();
    let known = helper.is_some() || !script.is_empty() || BUILTINS.contains(&name);
    if known {
        let shapes = if let Some((_, shape)) = helper {
            Some(format!("expected {shape}"))
        } else if !script.is_empty() {
            Some(
                script
                    .iter()
                    .map(|(n, p)| format!("{n}({})", p.join(", ")))
                    .collect::<Vec<_>>()
                    .join(" or "),
            )
            .map(|s| format!("expected {s}"))
        } else {
            None
        };
        return (
            format!(
                "{label} failed: `{name}` cannot be called with ({})",
                words.join(", ")
            ),
            join_hints(shapes, null_hint),
        );
    }

    let candidates = HELPERS
        .iter()
        .map(|(n, _)| *n)
        .chain(BUILTINS.iter().copied())
        .chain(subject.functions.iter().map(|(n, _)| n.as_str()));
    (
        format!("{label} failed: unknown function `{name}`"),
        did_you_mean(&close_names(name, candidates)),
    )
}
