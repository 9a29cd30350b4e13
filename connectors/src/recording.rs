//! A recording test double. It plays any connector in workflow tests and virtual-time runs:
//! it records every call, answers with scripted results, and behaves like a well-behaved
//! idempotent API: a second call with the same idempotency key is not performed again, it gets
//! the first answer back.
//!
//! With a journal file, the record survives the process (used by the crash tests: the engine is
//! killed and restarted, the journal tells how many times each effect was performed).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::{Connector, ConnectorError, EffectRequest};

/// A call as the double saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub connector: String,
    pub effect: EffectRequest,
    /// False when the key had been performed before (a redelivery).
    pub performed: bool,
}

/// A scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Scripted {
    Ok(Value),
    Transient(String),
    Permanent(String),
}

#[derive(Default)]
struct Inner {
    calls: Vec<Recorded>,
    answers: BTreeMap<String, Value>,
    /// Answers by operation, used in order; the last one repeats.
    script: BTreeMap<String, VecDeque<Scripted>>,
}

pub struct RecordingConnector {
    name: String,
    operations: Vec<String>,
    inner: Mutex<Inner>,
    journal: Option<PathBuf>,
}

impl RecordingConnector {
    /// A double for the connector `name`, accepting every operation in `operations` (any
    /// operation when empty).
    pub fn new(name: &str, operations: Vec<String>) -> RecordingConnector {
        RecordingConnector {
            name: name.to_string(),
            operations,
            inner: Mutex::new(Inner::default()),
            journal: None,
        }
    }

    /// Keeps a journal (JSON lines) across processes; keys already in the journal count as
    /// performed.
    pub fn with_journal(mut self, path: PathBuf) -> std::io::Result<RecordingConnector> {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let mut inner = self.lock();
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    if v["performed"] == json!(true) {
                        if let Some(k) = v["key"].as_str() {
                            inner.answers.insert(k.to_string(), v["answer"].clone());
                        }
                    }
                }
            }
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        self.journal = Some(path);
        Ok(self)
    }

    /// Answers for an operation, used in order; the last one repeats.
    pub fn script(&self, operation: &str, answers: Vec<Scripted>) {
        self.lock()
            .script
            .insert(operation.to_string(), answers.into());
    }

    pub fn calls(&self) -> Vec<Recorded> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn journal_line(
        &self,
        effect: &EffectRequest,
        performed: bool,
        answer: &Value,
    ) -> Result<(), ConnectorError> {
        let Some(path) = &self.journal else {
            return Ok(());
        };
        let line = json!({
            "connector": self.name, "key": effect.idempotency_key, "case": effect.case_id,
            "step": effect.step, "performed": performed, "answer": answer,
        });
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| ConnectorError::Transient(format!("journal: {e}")))?;
        // One write call per record: with O_APPEND it lands whole or not at all, even when the
        // process is killed (`writeln!` may split a line over several calls).
        let mut record = line.to_string();
        record.push('\n');
        f.write_all(record.as_bytes())
            .map_err(|e| ConnectorError::Transient(format!("journal: {e}")))?;
        // The journal stands for the outside world: what it performed must survive a crash.
        f.sync_data()
            .map_err(|e| ConnectorError::Transient(format!("journal: {e}")))
    }
}

#[async_trait]
impl Connector for RecordingConnector {
    fn operations(&self) -> Vec<String> {
        if self.operations.is_empty() {
            vec!["send".into()]
        } else {
            self.operations.clone()
        }
    }

    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let (result, performed) = {
            let mut inner = self.lock();
            if let Some(answer) = inner.answers.get(&effect.idempotency_key).cloned() {
                (Ok(answer), false)
            } else {
                let scripted = match inner.script.get_mut(&effect.operation) {
                    Some(q) if q.len() > 1 => q.pop_front(),
                    Some(q) => q.front().cloned(),
                    None => None,
                };
                let result = match scripted {
                    Some(Scripted::Ok(v)) => Ok(v),
                    Some(Scripted::Transient(m)) => Err(ConnectorError::Transient(m)),
                    Some(Scripted::Permanent(m)) => Err(ConnectorError::Permanent(m)),
                    None => Ok(
                        json!({"ok": true, "connector": self.name, "operation": effect.operation}),
                    ),
                };
                if let Ok(v) = &result {
                    inner
                        .answers
                        .insert(effect.idempotency_key.clone(), v.clone());
                }
                (result, true)
            }
        };
        {
            let mut inner = self.lock();
            inner.calls.push(Recorded {
                connector: self.name.clone(),
                effect: effect.clone(),
                performed: performed && result.is_ok(),
            });
        }
        if let Ok(v) = &result {
            self.journal_line(effect, performed, v)?;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(key: &str) -> EffectRequest {
        EffectRequest {
            idempotency_key: key.into(),
            case_id: "c1".into(),
            step: "s".into(),
            operation: "send".into(),
            request: json!({"to": "+2250700000000"}),
            attempt: 1,
            redelivered: false,
        }
    }

    #[tokio::test]
    async fn performs_each_key_once_and_follows_the_script() {
        let c = RecordingConnector::new("sms", vec![]);
        c.script(
            "send",
            vec![
                Scripted::Transient("503".into()),
                Scripted::Ok(json!({"id": 7})),
            ],
        );
        assert_eq!(
            c.call(&effect("k1")).await,
            Err(ConnectorError::Transient("503".into()))
        );
        assert_eq!(c.call(&effect("k1")).await, Ok(json!({"id": 7})));
        // A redelivery of a performed key gets the first answer and is not performed again.
        assert_eq!(c.call(&effect("k1")).await, Ok(json!({"id": 7})));
        let performed: Vec<bool> = c.calls().iter().map(|r| r.performed).collect();
        assert_eq!(performed, vec![false, true, false]);
    }

    #[tokio::test]
    async fn the_journal_survives_the_process() {
        let dir = std::env::temp_dir().join(format!("dossier-journal-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let c = RecordingConnector::new("record", vec![])
            .with_journal(dir.clone())
            .unwrap();
        c.call(&effect("k1")).await.unwrap();
        let again = RecordingConnector::new("record", vec![])
            .with_journal(dir.clone())
            .unwrap();
        again.call(&effect("k1")).await.unwrap();
        assert!(!again.calls()[0].performed);
        let lines = std::fs::read_to_string(&dir).unwrap();
        assert_eq!(lines.lines().count(), 2);
        let _ = std::fs::remove_file(&dir);
    }
}
