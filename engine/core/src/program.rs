//! A workflow compiled for execution against the exact rule modules and templates a case is
//! pinned to: steps laid out in lists, jumps resolved, expressions compiled once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dossier_model::{Expr, Step, StepKind, Workflow, END};
use dossier_rules::{RuleModule, Rules};
use serde_json::Value;

use crate::{CoreError, Result};

pub type NodeId = usize;
pub type ListId = usize;

/// One step, placed in its list.
#[derive(Debug)]
pub struct Node {
    pub step: Step,
    pub kind: StepKind,
    pub list: ListId,
    pub pos: usize,
    /// Lists nested in this step: parallel branches in order, the for_each body, and the
    /// compensation steps (last, when present).
    pub children: Vec<ListId>,
    pub compensation: Option<ListId>,
}

/// A list of steps run in order: the workflow's top list or a nested one.
#[derive(Debug, Default)]
pub struct StepList {
    pub nodes: Vec<NodeId>,
    pub owner: Option<NodeId>,
}

/// A template file the case is pinned to.
#[derive(Debug, Clone)]
pub struct TemplateSource {
    pub hash: String,
    pub source: String,
}

/// Everything a case is pinned to, by content hash, before compilation.
pub struct Pinned {
    pub workflow: Workflow,
    pub workflow_hash: String,
    pub rules: BTreeMap<String, Arc<RuleModule>>,
    pub templates: BTreeMap<String, TemplateSource>,
    /// Sub-workflows a `call` step may start: id to content hash.
    pub workflows: BTreeMap<String, String>,
}

/// A compiled workflow.
pub struct Program {
    pub workflow: Workflow,
    pub hash: String,
    pub rules: Arc<Rules>,
    pub modules: BTreeMap<String, Arc<RuleModule>>,
    pub template_hashes: BTreeMap<String, String>,
    pub workflows: BTreeMap<String, String>,
    pub params: Value,
    pub(crate) tera: tera::Tera,
    pub(crate) nodes: Vec<Node>,
    pub(crate) lists: Vec<StepList>,
    by_id: HashMap<String, NodeId>,
    exprs: HashMap<String, Arc<dossier_rules::Expr>>,
    pins_json: String,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("workflow", &self.workflow.id)
            .field("hash", &self.hash)
            .finish()
    }
}

impl Program {
    pub fn compile(pinned: Pinned, rules: Arc<Rules>) -> Result<Program> {
        let Pinned {
            workflow,
            workflow_hash,
            rules: modules,
            templates,
            workflows,
        } = pinned;
        let mut tera = tera::Tera::default();
        tera.add_raw_templates(
            templates
                .iter()
                .map(|(p, t)| (p.as_str(), t.source.as_str())),
        )
        .map_err(|e| CoreError::Template {
            template: "(templates)".into(),
            message: tera_message(&e),
        })?;
        let params = serde_json::to_value(&workflow.params)
            .map_err(|e| CoreError::Invalid(format!("params: {e}")))?;
        let mut prog = Program {
            hash: workflow_hash,
            rules,
            modules,
            template_hashes: templates.into_iter().map(|(p, t)| (p, t.hash)).collect(),
            workflows,
            params,
            tera,
            nodes: Vec::new(),
            lists: Vec::new(),
            by_id: HashMap::new(),
            exprs: HashMap::new(),
            pins_json: String::new(),
            workflow: workflow.clone(),
        };
        prog.layout(&workflow.steps, None)?;
        prog.compile_exprs()?;
        prog.pins_json = serde_json::to_string(&prog.pins()).expect("pins always serialize");
        Ok(prog)
    }

    fn layout(&mut self, steps: &[Step], owner: Option<NodeId>) -> Result<ListId> {
        let list = self.lists.len();
        self.lists.push(StepList {
            nodes: Vec::new(),
            owner,
        });
        for (pos, step) in steps.iter().enumerate() {
            let kind = step.kind().ok_or_else(|| {
                CoreError::Invalid(format!("step `{}` must declare exactly one kind", step.id))
            })?;
            let id = self.nodes.len();
            self.nodes.push(Node {
                step: step.clone(),
                kind,
                list,
                pos,
                children: Vec::new(),
                compensation: None,
            });
            if self.by_id.insert(step.id.clone(), id).is_some() {
                return Err(CoreError::Invalid(format!(
                    "step id `{}` is used twice",
                    step.id
                )));
            }
            self.lists[list].nodes.push(id);
            let mut children = Vec::new();
            if let Some(branches) = &step.parallel {
                for b in branches {
                    children.push(self.layout(&b.steps, Some(id))?);
                }
            }
            if let Some(fe) = &step.for_each {
                children.push(self.layout(&fe.steps, Some(id))?);
            }
            self.nodes[id].children = children;
            if let Some(comp) = &step.compensate {
                let c = self.layout(comp, Some(id))?;
                self.nodes[id].compensation = Some(c);
            }
        }
        Ok(list)
    }

    fn compile_exprs(&mut self) -> Result<()> {
        let mut sources: Vec<String> = Vec::new();
        let mut add = |e: &Expr| sources.push(e.0.clone());
        if let Some(k) = &self.workflow.business_key {
            add(k);
        }
        self.workflow.output.values().for_each(&mut add);
        for node in &self.nodes {
            let s = &node.step;
            s.with.values().for_each(&mut add);
            if let Some(a) = &s.assign {
                a.values().for_each(&mut add);
            }
            if let Some(b) = &s.branch {
                b.iter().for_each(|arm| add(&arm.when));
            }
            if let Some(w) = &s.wait {
                if let Some(u) = &w.until {
                    add(u);
                }
                if let Some(d) = &w.duration {
                    if !d.starts_with('P') {
                        add(&Expr(d.clone()));
                    }
                }
            }
            if let Some(we) = &s.wait_event {
                we.correlate.values().for_each(&mut add);
                if let Some(t) = &we.timeout {
                    if !t.starts_with('P') {
                        add(&Expr(t.clone()));
                    }
                }
            }
            if let Some(fe) = &s.for_each {
                add(&fe.items);
            }
            if let Some(t) = &s.task {
                if let Some(d) = &t.due {
                    if !d.starts_with('P') {
                        add(&Expr(d.clone()));
                    }
                }
            }
        }
        for src in sources {
            if !self.exprs.contains_key(&src) {
                let compiled =
                    self.rules
                        .compile_expr(&src)
                        .map_err(|e| CoreError::Expression {
                            expr: src.clone(),
                            message: e.to_string(),
                        })?;
                self.exprs.insert(src, compiled);
            }
        }
        Ok(())
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub fn node_by_step(&self, step: &str) -> Option<NodeId> {
        self.by_id.get(step).copied()
    }

    pub fn list(&self, id: ListId) -> &StepList {
        &self.lists[id]
    }

    /// Position in `list` that a jump to `target` leads to (`end`: past the last step).
    pub fn jump(&self, list: ListId, target: &str) -> Result<usize> {
        if target == END {
            return Ok(self.lists[list].nodes.len());
        }
        match self.by_id.get(target) {
            Some(&n) if self.nodes[n].list == list => Ok(self.nodes[n].pos),
            _ => Err(CoreError::Invalid(format!(
                "jump target `{target}` is not a step of the same list"
            ))),
        }
    }

    pub(crate) fn expr(&self, source: &str) -> Result<Arc<dossier_rules::Expr>> {
        match self.exprs.get(source) {
            Some(e) => Ok(e.clone()),
            // Expressions computed at run time (none today) are compiled through the shared cache.
            None => self
                .rules
                .compile_expr(source)
                .map_err(|e| CoreError::Expression {
                    expr: source.to_string(),
                    message: e.to_string(),
                }),
        }
    }

    /// [`Program::pins`] as JSON text, computed once.
    pub fn pins_json(&self) -> &str {
        &self.pins_json
    }

    /// Every pin of the program: `rule:NAME`, `template:PATH`, `workflow:ID` to content hash.
    pub fn pins(&self) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        for (name, m) in &self.modules {
            p.insert(format!("rule:{name}"), m.hash.clone());
        }
        for (path, h) in &self.template_hashes {
            p.insert(format!("template:{path}"), h.clone());
        }
        for (id, h) in &self.workflows {
            p.insert(format!("workflow:{id}"), h.clone());
        }
        p
    }
}

/// Tera's error with its causes, on one line.
pub fn tera_message(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
