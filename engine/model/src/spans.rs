//! Where each node of a YAML file is written, so that errors found after deserialization (an
//! unknown step, a bad expression) can name the line and column the analyst must fix.
//!
//! Paths are dotted with list positions in brackets: `steps[3].wait_event.timeout`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Positions of every key and value of a YAML document, by path.
#[derive(Debug, Default, Clone)]
pub struct SpanIndex {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
}

impl SpanIndex {
    /// Indexes `source`. A file that does not parse gives an empty index (the syntax error is
    /// reported by the deserializer with its own position).
    pub fn build(source: &str) -> SpanIndex {
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut b, false).is_err() {
            return SpanIndex::default();
        }
        b.index
    }

    /// Position of the value at `path`, or of its key, or of the nearest ancestor.
    pub fn value(&self, path: &str) -> Pos {
        self.lookup(path, true)
    }

    /// Position of the key at `path` (where `name:` is written), or of the nearest ancestor.
    pub fn key(&self, path: &str) -> Pos {
        self.lookup(path, false)
    }

    fn lookup(&self, path: &str, value_first: bool) -> Pos {
        let mut p = path;
        loop {
            let (first, second) = if value_first {
                (&self.values, &self.keys)
            } else {
                (&self.keys, &self.values)
            };
            if let Some(pos) = first.get(p).or_else(|| second.get(p)) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return Pos { line: 1, column: 1 },
            }
        }
    }
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    index: SpanIndex,
}

fn pos(m: Marker) -> Pos {
    Pos {
        line: m.line(),
        column: m.col() + 1,
    }
}

impl Builder {
    /// The path of the node that starts now, consuming the slot it fills in its parent.
    /// Returns `None` when the node is a mapping key (recorded as pending).
    fn slot(&mut self, key_text: Option<&str>, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    // This node is a key. Only scalar keys are indexed.
                    let k = key_text.unwrap_or("?").to_string();
                    let p = join(path, &k);
                    // A block mapping's own start mark points after its first key, so the
                    // mapping is located at its first key instead.
                    if !self.index.values.contains_key(path.as_str()) {
                        self.index.values.insert(path.clone(), pos(mark));
                    }
                    self.index.keys.insert(p, pos(mark));
                    if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut() {
                        *pending_key = Some(k);
                    }
                    None
                }
            },
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) => {
                if let Some(p) = self.slot(Some(&text), mark) {
                    self.index.values.insert(p, pos(mark));
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.slot(None, mark) {
                    self.index.values.insert(p, pos(mark));
                }
            }
            Event::SequenceStart(..) => {
                let p = self.slot(None, mark).unwrap_or_default();
                self.index.values.entry(p.clone()).or_insert(pos(mark));
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingStart(..) => {
                let p = self.slot(None, mark).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path: p,
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_values_by_path() {
        let src = "id: relance\nsteps:\n  - id: a\n    rule: m.f\n  - id: b\n    with:\n      x: input.y\n";
        let idx = SpanIndex::build(src);
        assert_eq!(idx.key("id"), Pos { line: 1, column: 1 });
        assert_eq!(idx.value("id"), Pos { line: 1, column: 5 });
        assert_eq!(idx.key("steps[0].rule"), Pos { line: 4, column: 5 });
        assert_eq!(
            idx.value("steps[0].rule"),
            Pos {
                line: 4,
                column: 11
            }
        );
        assert_eq!(
            idx.value("steps[1].with.x"),
            Pos {
                line: 7,
                column: 10
            }
        );
        assert_eq!(idx.value("steps[1]"), Pos { line: 5, column: 5 });
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(idx.value("steps[1].with.zz"), Pos { line: 7, column: 7 });
    }
}
