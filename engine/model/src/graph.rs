//! Mermaid flowcharts of workflows (`dossier graph`).
//!
//! The chart follows the same control-flow rules as the validator ([`falls_through`],
//! [`jumps`]), so what an analyst sees is what the checker reasons about. It is drawn for any
//! workflow that parses, valid or not: jumps to unknown steps are simply left out.

use std::collections::{HashMap, HashSet};

use crate::validate::falls_through;
use crate::{Step, StepKind, Workflow, END};

/// A Mermaid `flowchart TD` of the workflow.
///
/// One node per step (a rhombus for a branch, a hexagon for a task, a subroutine box for a call,
/// a flag for a fail, a box otherwise), a start and an end node, subgraphs for parallel
/// branches, for_each bodies and compensations, and edges for every way control moves:
/// fall-through, `next`, branch arms (labelled with their condition), `otherwise`, task
/// outcomes, `on_timeout` and (dotted) `on_error`.
pub fn mermaid(wf: &Workflow) -> String {
    let mut g = Graph::default();
    g.used.extend(["start".to_string(), "stop".to_string()]);
    g.line(1, "start([\"Début\"])");
    let first = g.list(
        &wf.steps,
        Some(Exit {
            node: "stop".into(),
            label: None,
        }),
        1,
    );
    g.line(1, "stop([\"Fin\"])");
    // Interrupting events: from anywhere, a dotted arrow into the top list.
    for it in &wf.on_event {
        let node = g.fresh("ev_", &it.event);
        g.line(1, &format!("{node}{{{{\"⚡ {}\"}}}}", escape(&it.event)));
        let target = if it.goto == crate::END {
            Some("stop".to_string())
        } else {
            g.by_step.get(&it.goto).cloned()
        };
        if let Some(t) = target {
            g.edge(&node, &t, Some("à tout moment"), true);
        }
    }
    g.edges.insert(
        0,
        format!("start --> {}", first.as_deref().unwrap_or("stop")),
    );

    let mut out = String::from("flowchart TD\n");
    out.push_str(&g.nodes);
    for e in &g.edges {
        out.push_str("    ");
        out.push_str(e);
        out.push('\n');
    }
    out
}

/// Where control goes when a list finishes (falls off its last step or jumps to `end`).
#[derive(Clone)]
struct Exit {
    node: String,
    /// Label of plain edges into the exit (`élément suivant` for a for_each body).
    label: Option<&'static str>,
}

#[derive(Default)]
struct Graph {
    nodes: String,
    edges: Vec<String>,
    used: HashSet<String>,
    /// Mermaid id of each step, by step id.
    by_step: std::collections::HashMap<String, String>,
}

impl Graph {
    fn line(&mut self, indent: usize, text: &str) {
        for _ in 0..indent {
            self.nodes.push_str("    ");
        }
        self.nodes.push_str(text);
        self.nodes.push('\n');
    }

    /// A Mermaid id for a step id, unique in the chart. Step ids may hold `-` (and, in a file
    /// that does not validate, anything), and Mermaid words such as `end` break a chart, hence
    /// the prefix.
    fn fresh(&mut self, prefix: &str, id: &str) -> String {
        let clean: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("{prefix}{clean}");
        let mut candidate = base.clone();
        let mut n = 2;
        while !self.used.insert(candidate.clone()) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        candidate
    }

    fn edge(&mut self, from: &str, to: &str, label: Option<&str>, dotted: bool) {
        self.edge_at(self.edges.len(), from, to, label, dotted);
    }

    /// Adds an edge at position `at` of the edge list (edges are printed in that order).
    fn edge_at(&mut self, at: usize, from: &str, to: &str, label: Option<&str>, dotted: bool) {
        let arrow = if dotted { "-.->" } else { "-->" };
        let text = match label {
            Some(l) => format!("{from} {arrow}|\"{}\"| {to}", escape(l)),
            None => format!("{from} {arrow} {to}"),
        };
        self.edges.insert(at.min(self.edges.len()), text);
    }

    /// Draws a list of steps; returns the node of its first step.
    fn list(&mut self, steps: &[Step], exit: Option<Exit>, indent: usize) -> Option<String> {
        // Ids first, so that forward jumps find their target.
        let ids: Vec<String> = steps.iter().map(|s| self.fresh("s_", &s.id)).collect();
        for (s, id) in steps.iter().zip(&ids) {
            self.by_step
                .entry(s.id.clone())
                .or_insert_with(|| id.clone());
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            index.entry(s.id.as_str()).or_insert(i);
        }

        for (i, step) in steps.iter().enumerate() {
            let node = &ids[i];
            self.line(indent, &format!("{node}{}", shape(step)));
            // Control leaves a parallel step from its join node, once every branch is done.
            let out = match &step.parallel {
                Some(branches) => {
                    let join = self.fresh("j_", &step.id);
                    for (j, b) in branches.iter().enumerate() {
                        let title = b
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("branche {}", j + 1));
                        let sg = self.fresh("g_", &format!("{}_{}", step.id, j + 1));
                        self.line(indent, &format!("subgraph {sg}[\"{}\"]", escape(&title)));
                        let exit = Exit {
                            node: join.clone(),
                            label: None,
                        };
                        let at = self.edges.len();
                        let first = self.list(&b.steps, Some(exit), indent + 1);
                        self.line(indent, "end");
                        // The edge into the branch reads best before the branch's own edges.
                        self.edge_at(at, node, first.as_deref().unwrap_or(&join), None, false);
                    }
                    self.line(indent, &format!("{join}((\"fin des branches\"))"));
                    join
                }
                None => node.clone(),
            };
            if let Some(fe) = &step.for_each {
                let sg = self.fresh("g_", &format!("{}_corps", step.id));
                let title = format!("pour chaque {} de {}", fe.item, fe.items.as_str());
                self.line(indent, &format!("subgraph {sg}[\"{}\"]", escape(&title)));
                let exit = Exit {
                    node: node.clone(),
                    label: Some("élément suivant"),
                };
                let at = self.edges.len();
                let first = self.list(&fe.steps, Some(exit), indent + 1);
                self.line(indent, "end");
                if let Some(first) = first {
                    self.edge_at(
                        at,
                        node,
                        &first,
                        Some(&format!("chaque {}", fe.item)),
                        false,
                    );
                }
            }
            if let Some(comp) = &step.compensate {
                let sg = self.fresh("g_", &format!("{}_compensation", step.id));
                let title = format!("compensation de {}", label_text(step));
                self.line(indent, &format!("subgraph {sg}[\"{}\"]", escape(&title)));
                let at = self.edges.len();
                let first = self.list(comp, None, indent + 1);
                self.line(indent, "end");
                if let Some(first) = first {
                    self.edge_at(at, node, &first, Some("compensation"), true);
                }
            }

            let target = |name: &str| -> Option<String> {
                if name == END {
                    exit.as_ref().map(|e| e.node.clone())
                } else {
                    index.get(name).map(|&k| ids[k].clone())
                }
            };
            let add = |g: &mut Graph, name: &str, label: Option<&str>, dotted: bool| {
                if let Some(to) = target(name) {
                    g.edge(&out, &to, label, dotted);
                }
            };
            if let Some(arms) = &step.branch {
                for arm in arms {
                    add(self, &arm.goto, Some(arm.when.as_str()), false);
                }
            }
            if let Some(o) = &step.otherwise {
                add(self, o, Some("sinon"), false);
            }
            if let Some(task) = &step.task {
                for (outcome, to) in &task.outcomes {
                    add(self, to, Some(outcome), false);
                }
            }
            if let Some(t) = step.wait_event.as_ref().and_then(|w| w.on_timeout.as_ref()) {
                add(self, t, Some("délai dépassé"), false);
            }
            if let Some(n) = &step.next {
                let label = if n == END {
                    exit.as_ref().and_then(|e| e.label)
                } else {
                    None
                };
                add(self, n, label, false);
            }
            if falls_through(step) {
                let label = if step.branch.is_some() {
                    Some("sinon")
                } else {
                    None
                };
                match ids.get(i + 1) {
                    Some(next) => self.edge(&out, next, label, false),
                    None => {
                        if let Some(e) = &exit {
                            self.edge(&out, &e.node, label.or(e.label), false);
                        }
                    }
                }
            }
            if let Some(e) = &step.on_error {
                add(self, e, Some("erreur"), true);
            }
        }
        ids.first().cloned()
    }
}

/// The node's text: its title (or id) and its kind.
fn label_text(step: &Step) -> String {
    step.title
        .clone()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| step.id.clone())
}

/// The node's shape and text, written after its id.
fn shape(step: &Step) -> String {
    let kind = match step.kinds().as_slice() {
        [] => "?".to_string(),
        kinds => kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" + "),
    };
    let text = format!("{}<br/><i>{kind}</i>", escape(&label_text(step)));
    match step.kind() {
        Some(StepKind::Branch) => format!("{{\"{text}\"}}"),
        Some(StepKind::Task) => format!("{{{{\"{text}\"}}}}"),
        Some(StepKind::Call) => format!("[[\"{text}\"]]"),
        Some(StepKind::Fail) => format!(">\"{text}\"]"),
        _ => format!("[\"{text}\"]"),
    }
}

/// Text safe inside a quoted Mermaid label: quotes, angle brackets and pipes would end or
/// break it, so they are written as Mermaid entity codes (`#quot;`).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '#' => out.push_str("#35;"),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '|' => out.push_str("#124;"),
            '&' => out.push_str("#amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_breakers() {
        assert_eq!(
            escape(r#"statut == "payé" && n > 1 | #x"#),
            "statut == #quot;payé#quot; #amp;#amp; n #gt; 1 #124; #35;x"
        );
    }
}
