//! Reading a workflow file: YAML text to [`Workflow`], with positions for later checks and
//! diagnostics for syntax and shape errors.

use crate::{did_you_mean, Diagnostic, Pos, SpanIndex, Workflow};

/// A workflow file read from disk (or uploaded), not yet validated against the project.
#[derive(Debug, Clone)]
pub struct ParsedWorkflow {
    /// Path shown in diagnostics (`workflows/relance.yaml`).
    pub file: String,
    pub source: String,
    pub workflow: Workflow,
    pub spans: SpanIndex,
}

/// Parses a workflow file. On failure, the diagnostic names the line and column.
pub fn parse_workflow(file: &str, source: &str) -> Result<ParsedWorkflow, Diagnostic> {
    let workflow: Workflow = serde_yaml_ng::from_str(source).map_err(|e| yaml_error(file, &e))?;
    Ok(ParsedWorkflow {
        file: file.to_string(),
        source: source.to_string(),
        workflow,
        spans: SpanIndex::build(source),
    })
}

/// Turns a deserializer error into a diagnostic, with a hint for the common cases.
pub fn yaml_error(file: &str, e: &serde_yaml_ng::Error) -> Diagnostic {
    let pos = e
        .location()
        .map(|l| Pos {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or(Pos { line: 1, column: 1 });
    let raw = e.to_string();
    // serde_yaml appends " at line L column C" to messages; the position is printed in front.
    let message = match raw.find(" at line ") {
        Some(i) => raw[..i].to_string(),
        None => raw.clone(),
    };
    let message = message.trim_start_matches(['.', ':', ' ']).to_string();
    let d = Diagnostic::error(file, pos, message.clone());
    // Nested errors come as `steps[0].wait: unknown field ...`: the cases below are recognised
    // after that path.
    let bare = match message.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(' ') => rest,
        _ => message.as_str(),
    };
    if let Some(rest) = bare.strip_prefix("unknown field `") {
        let unknown = rest.split('`').next().unwrap_or("");
        let expected: Vec<&str> = bare
            .split("expected")
            .nth(1)
            .map(|s| s.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let hint = match did_you_mean(unknown, expected.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("the fields allowed here are: {}", expected.join(", ")),
        };
        return d.with_hint(hint);
    }
    if let Some(rest) = bare.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or("");
        return d.with_hint(format!("add `{field}:` to this block"));
    }
    if message.contains("unknown variant") {
        return d.with_hint("use one of the values listed above");
    }
    if message.contains("invalid type") {
        return d.with_hint("check the indentation and the kind of value expected here");
    }
    d.with_hint("check the YAML syntax near this position (indentation, a missing `:` or quote)")
}
