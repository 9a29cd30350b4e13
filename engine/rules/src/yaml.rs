//! A small YAML reader that keeps what rule test tables need and serde loses:
//! the line of every node, and the exact text of numbers (`0.1215` stays `0.1215`,
//! `1000.00` stays `1000.00`, never a binary float).

use std::collections::HashMap;
use std::str::FromStr;

use serde_json::{Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A YAML node with the 1-based line where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub line: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    /// A number, as valid JSON number text.
    Number(String),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order.
    Map(Vec<Entry>),
}

/// A key of a mapping, with its line, and its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_line: usize,
    pub value: Node,
}

impl Node {
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The text of a scalar (strings, numbers, booleans), `None` for null and collections.
    pub fn as_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) | Kind::Number(s) => Some(s.clone()),
            Kind::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A short description of the node's type, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "nothing",
            Kind::Bool(_) => "a boolean",
            Kind::Number(_) => "a number",
            Kind::Str(_) => "a text",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// Converts to JSON with numbers kept exact.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Number(text) => Number::from_str(text)
                .map(Value::Number)
                .unwrap_or_else(|_| Value::String(text.clone())),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A YAML syntax error: message and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub line: usize,
    pub message: String,
}

/// Parses the first document of `text` (an empty text gives `Null`).
pub(crate) fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| YamlError {
        line: e.marker().line(),
        message: e.info().to_string(),
    })?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.root.unwrap_or(Node {
        line: 1,
        kind: Kind::Null,
    }))
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, usize)>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<YamlError>,
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let mut problem = None;
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => match node.as_text() {
                    Some(k) => *key = Some((k, node.line)),
                    None => {
                        problem = Some((
                            node.line,
                            "mapping keys must be plain words or numbers".to_string(),
                        ));
                        *key = Some((String::new(), node.line));
                    }
                },
                Some((k, key_line)) => {
                    if entries.iter().any(|e| e.key == k) {
                        problem = Some((key_line, format!("the key `{k}` appears twice")));
                    } else {
                        entries.push(Entry {
                            key: k,
                            key_line,
                            value: node,
                        });
                    }
                }
            },
        }
        if let Some((line, message)) = problem {
            self.fail(line, &message);
        }
    }

    fn fail(&mut self, line: usize, message: &str) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                line,
                message: message.to_string(),
            });
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                let kind = if style == TScalarStyle::Plain && tag.is_none() {
                    resolve_plain(&value)
                } else {
                    Kind::Str(value)
                };
                self.push_node(Node { line, kind }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                line,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                line,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                }) => self.push_node(
                    Node {
                        line,
                        kind: Kind::Seq(items),
                    },
                    anchor,
                ),
                Some(Frame::Map {
                    line,
                    anchor,
                    entries,
                    ..
                }) => self.push_node(
                    Node {
                        line,
                        kind: Kind::Map(entries),
                    },
                    anchor,
                ),
                None => {}
            },
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.push_node(node, 0),
                None => self.fail(line, "unknown alias"),
            },
            _ => {}
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: &str) -> Kind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        _ => {}
    }
    match json_number_text(text) {
        Some(number) => Kind::Number(number),
        None => Kind::Str(text.to_string()),
    }
}

/// The JSON text of a YAML decimal number (`+1.5` → `1.5`, `.5` → `0.5`, `2.` → `2`),
/// or `None` if `text` is not one. Hexadecimal, octal, infinities and NaN are left
/// as text.
fn json_number_text(text: &str) -> Option<String> {
    let (sign, body) = match text.as_bytes().first()? {
        b'-' => ("-", &text[1..]),
        b'+' => ("", &text[1..]),
        _ => ("", text),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let int_ok = digits(int_part) || (int_part.is_empty() && frac_part.is_some_and(digits));
    let frac_ok = frac_part.is_none_or(|f| f.is_empty() || digits(f));
    if !int_ok || !frac_ok || (int_part.is_empty() && frac_part.is_none_or(str::is_empty)) {
        return None;
    }
    let exp = match exponent {
        None => String::new(),
        Some(e) => {
            let e_digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if !digits(e_digits) {
                return None;
            }
            format!("e{e}")
        }
    };
    // JSON forbids leading zeros: 007 → 7 (YAML 1.2 reads it as the integer 7).
    let int_norm = int_part.trim_start_matches('0');
    let int_norm = if int_norm.is_empty() { "0" } else { int_norm };
    let frac = match frac_part {
        Some(f) if !f.is_empty() => format!(".{f}"),
        _ => String::new(),
    };
    Some(format!("{sign}{int_norm}{frac}{exp}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_text() {
        assert_eq!(json_number_text("0.1215").as_deref(), Some("0.1215"));
        assert_eq!(json_number_text("1000.00").as_deref(), Some("1000.00"));
        assert_eq!(json_number_text("-1").as_deref(), Some("-1"));
        assert_eq!(json_number_text("+1.5").as_deref(), Some("1.5"));
        assert_eq!(json_number_text(".5").as_deref(), Some("0.5"));
        assert_eq!(json_number_text("2.").as_deref(), Some("2"));
        assert_eq!(json_number_text("1e3").as_deref(), Some("1e3"));
        assert_eq!(json_number_text("007").as_deref(), Some("7"));
        for text in [
            "2026-03-01",
            "1_000",
            "abc",
            ".",
            "-",
            "1e",
            ".inf",
            "0x1F",
            "1.2.3",
            "",
        ] {
            assert_eq!(json_number_text(text), None, "{text}");
        }
    }

    #[test]
    fn lines_and_kinds() {
        let doc =
            parse("a: 1\nb:\n  - x: \"1.50\"\n    y: 1.50\n  - z: ~\nc: 2026-03-01\n").unwrap();
        let map = doc.as_map().unwrap();
        assert_eq!(map[0].value.kind, Kind::Number("1".into()));
        assert_eq!(map[1].key_line, 2);
        let Kind::Seq(items) = &map[1].value.kind else {
            panic!("not a list")
        };
        assert_eq!(items[0].line, 3);
        assert_eq!(items[1].line, 5);
        assert_eq!(
            items[0].to_json(),
            serde_json::json!({"x": "1.50", "y": serde_json::Number::from_str("1.50").unwrap()})
        );
        assert_eq!(items[0].to_json()["y"].to_string(), "1.50");
        assert_eq!(map[2].value.kind, Kind::Str("2026-03-01".into()));
    }

    #[test]
    fn syntax_errors_have_lines() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("twice"));
    }
}
