//! Compiled programs by what a case is pinned to. New cases use the deployed project; a case
//! started under an older version is rebuilt from the content-addressed definitions the store
//! keeps, so loading a new version never changes a running case.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use dossier_core::{Pinned, Program, TemplateSource};
use dossier_store::{CaseRecord, Store};

use crate::project::Project;
use crate::{Result, RuntimeError};

pub struct Programs {
    store: Arc<dyn Store>,
    project: Arc<Project>,
    cache: Mutex<HashMap<String, Arc<Program>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn cache_key(workflow_hash: &str, pins: &BTreeMap<String, String>) -> String {
    let mut k = workflow_hash.to_string();
    for (name, h) in pins {
        k.push('|');
        k.push_str(name);
        k.push('=');
        k.push_str(h);
    }
    k
}

impl Programs {
    pub fn new(store: Arc<dyn Store>, project: Arc<Project>) -> Programs {
        Programs {
            store,
            project,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn project(&self) -> &Arc<Project> {
        &self.project
    }

    /// The deployed version of a workflow.
    pub fn current(&self, workflow_id: &str) -> Result<Arc<Program>> {
        let pinned = self.project.pinned(workflow_id)?;
        let mut pins = BTreeMap::new();
        for (n, m) in &pinned.rules {
            pins.insert(format!("rule:{n}"), m.hash.clone());
        }
        for (p, t) in &pinned.templates {
            pins.insert(format!("template:{p}"), t.hash.clone());
        }
        for (id, h) in &pinned.workflows {
            pins.insert(format!("workflow:{id}"), h.clone());
        }
        let key = cache_key(&pinned.workflow_hash, &pins);
        if let Some(p) = lock(&self.cache).get(&key) {
            return Ok(p.clone());
        }
        let prog = Arc::new(Program::compile(pinned, self.project.engine.clone())?);
        lock(&self.cache).insert(key, prog.clone());
        Ok(prog)
    }

    /// The program a stored case is pinned to.
    pub async fn for_case(&self, rec: &CaseRecord) -> Result<Arc<Program>> {
        let pins: BTreeMap<String, String> = serde_json::from_str(&rec.pins)
            .map_err(|e| RuntimeError::Corrupt(format!("case {}: pins: {e}", rec.id)))?;
        self.pinned(&rec.workflow_hash, &pins).await
    }

    /// A sub-workflow by the hash its parent pinned: the deployed version when it is the same
    /// file, else the stored definition with the rules and templates deployed now.
    pub async fn for_workflow_hash(&self, workflow_hash: &str) -> Result<Arc<Program>> {
        if let Some(wf) = self
            .project
            .workflows
            .values()
            .find(|w| w.hash == workflow_hash)
        {
            return self.current(&wf.parsed.workflow.id);
        }
        let def = self.definition(workflow_hash).await?;
        let project_pins = self.project.pinned_like(&def.source)?;
        self.pinned(workflow_hash, &project_pins).await
    }

    /// A stored source, checked against its content hash: a source altered in the database is
    /// refused, never run.
    async fn definition(&self, hash: &str) -> Result<dossier_store::DefinitionRecord> {
        let def = self.store.definition(hash).await?.ok_or_else(|| {
            RuntimeError::Corrupt(format!("no stored definition has the content hash {hash}"))
        })?;
        if dossier_rules::content_hash(&def.source) != hash {
            return Err(RuntimeError::Corrupt(format!(
                "the stored source of the {} `{}` does not match its content hash {hash}: it was altered",
                def.kind, def.name
            )));
        }
        Ok(def)
    }

    /// Compiles (once) the program of a workflow hash with exactly these pins.
    pub async fn pinned(
        &self,
        workflow_hash: &str,
        pins: &BTreeMap<String, String>,
    ) -> Result<Arc<Program>> {
        let key = cache_key(workflow_hash, pins);
        if let Some(p) = lock(&self.cache).get(&key) {
            return Ok(p.clone());
        }
        let def = self.definition(workflow_hash).await?;
        let parsed = dossier_model::parse_workflow(&def.name, &def.source)
            .map_err(|d| RuntimeError::Corrupt(format!("stored workflow {workflow_hash}: {d}")))?;
        let mut rules = BTreeMap::new();
        let mut templates = BTreeMap::new();
        let mut workflows = BTreeMap::new();
        for (name, hash) in pins {
            if let Some(module) = name.strip_prefix("rule:") {
                let d = self.definition(hash).await?;
                let m = self
                    .project
                    .engine
                    .compile_module(module, &format!("rules/{module}.rhai"), &d.source)
                    .map_err(|e| {
                        RuntimeError::Corrupt(format!("stored rule {module} ({hash}): {e}"))
                    })?;
                rules.insert(module.to_string(), m);
            } else if let Some(path) = name.strip_prefix("template:") {
                let d = self.definition(hash).await?;
                templates.insert(
                    path.to_string(),
                    TemplateSource {
                        hash: hash.clone(),
                        source: d.source,
                    },
                );
            } else if let Some(id) = name.strip_prefix("workflow:") {
                workflows.insert(id.to_string(), hash.clone());
            }
        }
        let pinned = Pinned {
            workflow: parsed.workflow,
            workflow_hash: workflow_hash.to_string(),
            rules,
            templates,
            workflows,
        };
        let prog = Arc::new(Program::compile(pinned, self.project.engine.clone())?);
        lock(&self.cache).insert(key, prog.clone());
        Ok(prog)
    }
}
