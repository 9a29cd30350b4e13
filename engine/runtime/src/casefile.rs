//! The case file an auditor takes away (`dossier export`, `GET /api/v1/instances/{id}/export`)
//! and the replay report (`dossier replay`, `POST /api/v1/instances/{id}/replay`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dossier_core::chain;
use dossier_core::replay::{replay, RecordedEvent};
use dossier_core::Event;
use dossier_store::{CaseRecord, EventRecord, Store};
use serde_json::{json, Value};

use crate::programs::Programs;
use crate::{Result, RuntimeError};

pub fn event_json(e: &EventRecord) -> Value {
    json!({
        "seq": e.seq,
        "at": e.at,
        "kind": e.kind,
        "payload": serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null),
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
}

/// The case file: the case row, its history, the decisions (rules with their inputs and
/// outputs, task decisions with who decided), the documents issued and the pinned sources.
pub async fn export(store: &dyn Store, case_id: &str) -> Result<Value> {
    let case = store
        .case(case_id)
        .await?
        .ok_or_else(|| RuntimeError::UnknownCase(case_id.to_string()))?;
    let history = store.history(case_id).await?;
    let pins: BTreeMap<String, String> = serde_json::from_str(&case.pins)
        .map_err(|e| RuntimeError::Corrupt(format!("case {case_id}: pins: {e}")))?;
    let mut definitions = serde_json::Map::new();
    for hash in std::iter::once(&case.workflow_hash).chain(pins.values()) {
        if let Some(d) = store.definition(hash).await? {
            definitions.insert(
                hash.clone(),
                json!({"kind": d.kind, "name": d.name, "version": d.version, "source": d.source}),
            );
        }
    }
    let mut decisions = Vec::new();
    let mut documents = Vec::new();
    for e in &history {
        let p: Value = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
        match e.kind.as_str() {
            "rule_evaluated" => decisions.push(json!({"seq": e.seq, "at": e.at, "step": p["step"], "rule": p["rule"], "rule_hash": p["rule_hash"], "inputs": p["inputs"], "output": p["output"]})),
            "template_rendered" => documents.push(json!({"seq": e.seq, "at": e.at, "step": p["step"], "template": p["template"], "template_hash": p["template_hash"], "text": p["output"]})),
            "task_decided" => decisions.push(json!({"seq": e.seq, "at": e.at, "task": p["task"], "outcome": p["outcome"], "data": p["data"], "by": p["by"]})),
            _ => {}
        }
    }
    Ok(json!({
        "format": "dossier-case/1",
        "case": {
            "id": case.id, "workflow_id": case.workflow_id, "workflow_version": case.workflow_version,
            "workflow_hash": case.workflow_hash, "business_key": case.business_key, "parent_id": case.parent_id,
            "status": case.status, "current_step": case.current_step, "pins": pins,
            "data": serde_json::from_str::<Value>(&case.data).unwrap_or(Value::Null),
            "last_seq": case.last_seq, "last_hash": case.last_hash,
            "created_at": case.created_at, "updated_at": case.updated_at,
        },
        "history": history.iter().map(event_json).collect::<Vec<_>>(),
        "decisions": decisions,
        "documents": documents,
        "definitions": definitions,
    }))
}

/// The result of checking one case.
pub struct ReplayReport {
    pub events: usize,
    /// The hash chain, and its end against the case row (a history cut short breaks no link).
    pub chain: std::result::Result<(), String>,
    pub replay: std::result::Result<(), String>,
}

/// Verifies the chain, then re-runs the history with the pinned program.
pub async fn check_case(
    programs: &Programs,
    case: &CaseRecord,
    history: &[EventRecord],
) -> ReplayReport {
    let chain = chain::verify(history.iter().map(|e| {
        (
            e.seq,
            e.at,
            e.kind.as_str(),
            e.payload.as_str(),
            e.prev_hash.as_str(),
            e.hash.as_str(),
        )
    }))
    .map_err(|e| e.to_string())
    .and_then(|()| {
        let (seq, hash) = history.last().map(|e| (e.seq, e.hash.as_str())).unwrap_or((0, ""));
        if seq == case.last_seq && hash == case.last_hash {
            Ok(())
        } else {
            Err(format!(
                "event {}: the history ends at event {seq}, but the case records event {} as its last: events were removed",
                seq + 1,
                case.last_seq
            ))
        }
    });
    let replayed = async {
        let program = programs.for_case(case).await.map_err(|e| e.to_string())?;
        let mut events = Vec::new();
        for h in history {
            let payload: Value =
                serde_json::from_str(&h.payload).map_err(|e| format!("event {}: {e}", h.seq))?;
            let event = Event::from_parts(&h.kind, &payload)
                .map_err(|e| format!("event {}: {e}", h.seq))?;
            let at = DateTime::<Utc>::from_timestamp_millis(h.at).unwrap_or_default();
            events.push(RecordedEvent {
                seq: h.seq,
                at,
                event,
            });
        }
        replay(&program, &case.id, &events)
            .map(|_| ())
            .map_err(|d| d.to_string())
    }
    .await;
    ReplayReport {
        events: history.len(),
        chain,
        replay: replayed,
    }
}
