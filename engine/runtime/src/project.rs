//! A project on disk: `workflows/*.yaml`, `rules/*.rhai`, `templates/**`. Loading reads,
//! compiles and validates everything; nothing is deployed while a diagnostic is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dossier_core::{Pinned, Program, TemplateSource};
use dossier_model::{
    parse_workflow, validate, Catalog, Diagnostic, FieldSpec, ParsedWorkflow, Pos,
};
use dossier_rules::{content_hash, RuleError, RuleModule, Rules};
use dossier_store::DefinitionRecord;

use crate::{Result, RuntimeError};

#[derive(Debug, Clone)]
pub struct WorkflowFile {
    pub parsed: ParsedWorkflow,
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct RuleFile {
    pub path: String,
    pub source: String,
    pub module: Arc<RuleModule>,
}

/// Everything loaded from a project directory.
pub struct Project {
    pub root: PathBuf,
    pub workflows: BTreeMap<String, WorkflowFile>,
    pub rules: BTreeMap<String, RuleFile>,
    pub templates: BTreeMap<String, TemplateSource>,
    pub engine: Arc<Rules>,
    /// Connector names and their operations, as configured.
    pub connectors: BTreeMap<String, Vec<String>>,
    /// Every problem found; [`Project::load`] fails when one is an error.
    pub diagnostics: Vec<Diagnostic>,
}

/// The project directory holding `path`: the first ancestor (itself included) with a
/// `workflows/` or `rules/` folder.
pub fn find_root(path: &Path) -> PathBuf {
    let start = if path.is_file() {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    let abs = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    let mut cur = Some(abs.as_path());
    while let Some(dir) = cur {
        if dir.join("workflows").is_dir() || dir.join("rules").is_dir() {
            return dir.to_path_buf();
        }
        cur = dir.parent();
    }
    start.to_path_buf()
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for p in read_dir_sorted(dir) {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// A rule compile error as an analyst's diagnostic.
pub fn rule_diagnostic(file: &str, e: &RuleError) -> Diagnostic {
    let (line, column) = match e {
        RuleError::Compile { line, column, .. } | RuleError::Runtime { line, column, .. } => {
            (line.unwrap_or(1), column.unwrap_or(1))
        }
        RuleError::TestFile { line, .. } => (line.unwrap_or(1), 1),
        _ => (1, 1),
    };
    let d = Diagnostic::error(
        file,
        Pos {
            line: line as usize,
            column: column as usize,
        },
        e.message().to_string(),
    );
    match e.hint() {
        Some(h) => d.with_hint(h),
        None => d,
    }
}

impl Project {
    /// A project with nothing deployed: enough to replay stored cases, whose sources come from
    /// the store.
    pub fn empty() -> Project {
        Project {
            root: PathBuf::new(),
            workflows: BTreeMap::new(),
            rules: BTreeMap::new(),
            templates: BTreeMap::new(),
            engine: Arc::new(Rules::default()),
            connectors: BTreeMap::new(),
            diagnostics: Vec::new(),
        }
    }

    /// Loads and checks the project at `root`. Diagnostics are kept in the project; use
    /// [`Project::load_valid`] to refuse a project with errors.
    pub fn load(root: &Path, connectors: BTreeMap<String, Vec<String>>) -> Project {
        let engine = Arc::new(Rules::default());
        let mut diagnostics = Vec::new();

        let mut rules = BTreeMap::new();
        for p in read_dir_sorted(&root.join("rules")) {
            if p.extension().and_then(|e| e.to_str()) != Some("rhai") {
                continue;
            }
            let path = rel(root, &p);
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            match std::fs::read_to_string(&p) {
                Ok(source) => match engine.compile_module(&name, &path, &source) {
                    Ok(module) => {
                        rules.insert(
                            name,
                            RuleFile {
                                path,
                                source,
                                module,
                            },
                        );
                    }
                    Err(e) => diagnostics.push(rule_diagnostic(&path, &e)),
                },
                Err(e) => diagnostics.push(Diagnostic::error(
                    &path,
                    Pos::default(),
                    format!("cannot read the file: {e}"),
                )),
            }
        }

        let mut templates = BTreeMap::new();
        let mut files = Vec::new();
        walk(&root.join("templates"), &mut files);
        for p in files {
            let path = rel(&root.join("templates"), &p);
            match std::fs::read_to_string(&p) {
                Ok(source) => {
                    // Compile now so that a broken template is reported before anything runs.
                    if let Err(e) = tera::Tera::default().add_raw_template(&path, &source) {
                        let mut msg = e.to_string();
                        if let Some(src) = std::error::Error::source(&e) {
                            msg = format!("{msg}: {src}");
                        }
                        diagnostics.push(
                            Diagnostic::error(
                                &format!("templates/{path}"),
                                Pos { line: 1, column: 1 },
                                msg,
                            )
                            .with_hint("check the {{ }} and {% %} tags of the template"),
                        );
                    }
                    templates.insert(
                        path,
                        TemplateSource {
                            hash: content_hash(&source),
                            source,
                        },
                    );
                }
                Err(e) => diagnostics.push(Diagnostic::error(
                    &format!("templates/{path}"),
                    Pos::default(),
                    format!("cannot read the file (templates are UTF-8 text): {e}"),
                )),
            }
        }

        let mut parsed = Vec::new();
        for p in read_dir_sorted(&root.join("workflows")) {
            let name = p.file_name().and_then(|s| s.to_str()).unwrap_or_default();
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) || name.contains(".test.") {
                continue;
            }
            let path = rel(root, &p);
            match std::fs::read_to_string(&p) {
                Ok(source) => match parse_workflow(&path, &source) {
                    Ok(pw) => parsed.push(pw),
                    Err(d) => diagnostics.push(d),
                },
                Err(e) => diagnostics.push(Diagnostic::error(
                    &path,
                    Pos::default(),
                    format!("cannot read the file: {e}"),
                )),
            }
        }

        let mut project = Project {
            root: root.to_path_buf(),
            workflows: BTreeMap::new(),
            rules,
            templates,
            engine,
            connectors,
            diagnostics: Vec::new(),
        };
        for pw in &parsed {
            let hash = content_hash(&pw.source);
            project
                .workflows
                .entry(pw.workflow.id.clone())
                .or_insert_with(|| WorkflowFile {
                    parsed: pw.clone(),
                    hash,
                });
        }
        diagnostics.extend(validate::validate_project(&parsed, &project));
        project.diagnostics = diagnostics;
        project
    }

    /// Loads the project and fails with every diagnostic when one is an error.
    pub fn load_valid(root: &Path, connectors: BTreeMap<String, Vec<String>>) -> Result<Project> {
        let p = Project::load(root, connectors);
        if p.diagnostics.iter().any(Diagnostic::is_error) {
            return Err(RuntimeError::Invalid(p.diagnostics));
        }
        Ok(p)
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The sources a new case of `workflow_id` is pinned to: the workflow, the rule modules
    /// and templates it names, and the sub-workflows it calls.
    pub fn pinned(&self, workflow_id: &str) -> Result<Pinned> {
        let wf = self
            .workflows
            .get(workflow_id)
            .ok_or_else(|| RuntimeError::UnknownWorkflow {
                id: workflow_id.to_string(),
                known: self.workflows.keys().cloned().collect(),
            })?;
        let workflow = wf.parsed.workflow.clone();
        let (rules, templates, workflows) = self.pinned_parts(&workflow);
        Ok(Pinned {
            workflow,
            workflow_hash: wf.hash.clone(),
            rules,
            templates,
            workflows,
        })
    }

    #[allow(clippy::type_complexity)]
    fn pinned_parts(
        &self,
        workflow: &dossier_model::Workflow,
    ) -> (
        BTreeMap<String, Arc<RuleModule>>,
        BTreeMap<String, TemplateSource>,
        BTreeMap<String, String>,
    ) {
        let mut rules = BTreeMap::new();
        let mut templates = BTreeMap::new();
        let mut workflows = BTreeMap::new();
        let mut stack: Vec<&dossier_model::Step> = workflow.steps.iter().collect();
        while let Some(step) = stack.pop() {
            if let Some(r) = &step.rule {
                if let Some((m, _)) = r.split_once('.') {
                    if let Some(rf) = self.rules.get(m) {
                        rules.insert(m.to_string(), rf.module.clone());
                    }
                }
            }
            let mut tpl: Vec<&String> = step.render.iter().collect();
            if let Some(a) = &step.action {
                tpl.extend(a.templates.values());
            }
            if let Some(t) = &step.task {
                for n in [&t.on_reminder, &t.on_overdue].into_iter().flatten() {
                    tpl.extend(n.templates.values());
                }
            }
            for t in tpl {
                if let Some(src) = self.templates.get(t) {
                    templates.insert(t.clone(), src.clone());
                }
            }
            if let Some(c) = &step.call {
                if let Some(w) = self.workflows.get(c) {
                    workflows.insert(c.clone(), w.hash.clone());
                }
            }
            stack.extend(step.parallel.iter().flatten().flat_map(|b| b.steps.iter()));
            stack.extend(step.for_each.iter().flat_map(|f| f.steps.iter()));
            stack.extend(step.compensate.iter().flatten());
        }
        // Templates may include or extend others: pin every template a pinned one names.
        let names: Vec<String> = self.templates.keys().cloned().collect();
        let mut changed = true;
        while changed {
            changed = false;
            for n in &names {
                if templates.contains_key(n) {
                    continue;
                }
                if templates
                    .values()
                    .any(|t: &TemplateSource| t.source.contains(&format!("\"{n}\"")))
                {
                    templates.insert(n.clone(), self.templates[n].clone());
                    changed = true;
                }
            }
        }
        (rules, templates, workflows)
    }

    /// The pins (`rule:NAME`, `template:PATH`, `workflow:ID` to hash) that a workflow file would
    /// get if started now against this project.
    pub fn pinned_like(&self, source: &str) -> Result<BTreeMap<String, String>> {
        let parsed =
            parse_workflow("(stored)", source).map_err(|d| RuntimeError::Invalid(vec![d]))?;
        let (rules, templates, workflows) = self.pinned_parts(&parsed.workflow);
        let mut pins = BTreeMap::new();
        for (n, m) in rules {
            pins.insert(format!("rule:{n}"), m.hash.clone());
        }
        for (p, t) in templates {
            pins.insert(format!("template:{p}"), t.hash);
        }
        for (id, h) in workflows {
            pins.insert(format!("workflow:{id}"), h);
        }
        Ok(pins)
    }

    pub fn program(&self, workflow_id: &str) -> Result<Program> {
        let pinned = self.pinned(workflow_id)?;
        Program::compile(pinned, self.engine.clone()).map_err(RuntimeError::from)
    }

    /// Every source of the project as content-addressed definitions.
    pub fn definitions(&self, now_millis: i64) -> Vec<DefinitionRecord> {
        let mut v = Vec::new();
        for wf in self.workflows.values() {
            v.push(DefinitionRecord {
                hash: wf.hash.clone(),
                kind: "workflow".into(),
                name: wf.parsed.workflow.id.clone(),
                version: Some(wf.parsed.workflow.version as i64),
                source: wf.parsed.source.clone(),
                loaded_at: now_millis,
            });
        }
        for (name, r) in &self.rules {
            v.push(DefinitionRecord {
                hash: r.module.hash.clone(),
                kind: "rule".into(),
                name: name.clone(),
                version: None,
                source: r.source.clone(),
                loaded_at: now_millis,
            });
        }
        for (path, t) in &self.templates {
            v.push(DefinitionRecord {
                hash: t.hash.clone(),
                kind: "template".into(),
                name: path.clone(),
                version: None,
                source: t.source.clone(),
                loaded_at: now_millis,
            });
        }
        v
    }
}

impl Catalog for Project {
    fn rule_functions(&self, module: &str) -> Option<Vec<(String, Vec<String>)>> {
        self.rules.get(module).map(|r| {
            r.module
                .functions
                .iter()
                .map(|f| (f.name.clone(), f.params.clone()))
                .collect()
        })
    }

    fn rule_modules(&self) -> Vec<String> {
        self.rules.keys().cloned().collect()
    }

    fn templates(&self) -> Vec<String> {
        self.templates.keys().cloned().collect()
    }

    fn workflow_ids(&self) -> Vec<String> {
        self.workflows.keys().cloned().collect()
    }

    fn workflow_input(&self, id: &str) -> Option<Vec<(String, FieldSpec)>> {
        self.workflows.get(id).map(|w| {
            w.parsed
                .workflow
                .input
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    fn connector_operations(&self, connector: &str) -> Option<Vec<String>> {
        self.connectors.get(connector).cloned()
    }

    fn connectors(&self) -> Vec<String> {
        self.connectors.keys().cloned().collect()
    }

    fn check_text(&self, source: &str) -> std::result::Result<(), String> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(());
        }
        tera::Tera::default()
            .add_raw_template("inline", source)
            .map(|_| ())
            .map_err(|e| dossier_core::tera_message(&e))
    }

    fn check_expr(&self, source: &str) -> std::result::Result<Vec<String>, String> {
        match self.engine.compile_expr(source) {
            Ok(e) => Ok(dossier_rules::expr_variables(&e)),
            Err(e) => Err(match e.hint() {
                Some(h) => format!("{} ({h})", e.message()),
                None => e.message().to_string(),
            }),
        }
    }
}
