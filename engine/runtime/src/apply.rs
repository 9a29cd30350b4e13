//! Turning a state-machine transition into the rows one transaction writes.

use chrono::{DateTime, Utc};
use dossier_core::chain::{seal, SealedEvent, GENESIS};
use dossier_core::{Action, CaseState, Program, Transition};
use dossier_store::{
    CaseRecord, CaseWrite, EventRecord, TaskRecord, TaskUpdate, TimerRecord, WaitRecord,
};

/// Where a case's chain stands before a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub last_seq: i64,
    pub last_hash: String,
    pub created_at: i64,
}

impl ChainHead {
    pub fn genesis(created_at: i64) -> ChainHead {
        ChainHead {
            last_seq: 0,
            last_hash: GENESIS.to_string(),
            created_at,
        }
    }
}

/// Builds the write of one transition. Returns it with the sealed events and the new head.
pub fn case_write(
    prog: &Program,
    state: &CaseState,
    transition: &Transition,
    now: DateTime<Utc>,
    head: &ChainHead,
) -> (CaseWrite, Vec<SealedEvent>, ChainHead) {
    let sealed = seal(&transition.events, now, head.last_seq, &head.last_hash);
    let now_ms = now.timestamp_millis();
    let new_head = match sealed.last() {
        Some(e) => ChainHead {
            last_seq: e.seq,
            last_hash: e.hash.clone(),
            created_at: head.created_at,
        },
        None => head.clone(),
    };
    let mut w = CaseWrite {
        expected_last_seq: if head.last_seq == 0 {
            None
        } else {
            Some(head.last_seq)
        },
        ..CaseWrite::default()
    };
    w.events = sealed
        .iter()
        .map(|e| EventRecord {
            case_id: state.case_id.clone(),
            seq: e.seq,
            at: e.at.timestamp_millis(),
            kind: e.kind.clone(),
            payload: e.payload.clone(),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        })
        .collect();
    w.case = Some(CaseRecord {
        id: state.case_id.clone(),
        workflow_id: prog.workflow.id.clone(),
        workflow_version: prog.workflow.version as i64,
        workflow_hash: prog.hash.clone(),
        business_key: state.business_key.clone(),
        parent_id: state.parent.as_ref().map(|p| p.case_id.clone()),
        status: state.status_name().to_string(),
        current_step: state.current_step(prog),
        data: serde_json::to_string(&state.vars).unwrap_or_else(|_| "{}".into()),
        pins: prog.pins_json().to_string(),
        last_seq: new_head.last_seq,
        last_hash: new_head.last_hash.clone(),
        created_at: head.created_at,
        updated_at: now_ms,
    });
    for a in &transition.actions {
        match a {
            // Connector effects need no outbox row: the history records them, and a case with an
            // effect in flight is `running`, so a restarted engine finds it and hands the effect
            // out again (`CaseState::pending_effects`). That spares two row writes per effect.
            Action::PerformEffect { .. } | Action::EffectSettled { .. } => {}
            Action::SetTimer {
                timer,
                fire_at,
                purpose,
            } => w.timers_new.push(TimerRecord {
                id: timer.clone(),
                case_id: state.case_id.clone(),
                fire_at: fire_at.timestamp_millis(),
                purpose: purpose.name().to_string(),
            }),
            Action::CancelTimer { timer } => w.timers_done.push(timer.clone()),
            Action::AwaitEvent {
                wait,
                event,
                correlation,
            } => w.waits_new.push(WaitRecord {
                id: wait.clone(),
                case_id: state.case_id.clone(),
                event_name: event.clone(),
                correlation: correlation.clone(),
                created_at: now_ms,
            }),
            Action::StopAwaiting { wait } => w.waits_done.push(wait.clone()),
            Action::CreateTask {
                task,
                step,
                role,
                title,
                form,
                due_at,
            } => w.tasks_new.push(TaskRecord {
                id: task.clone(),
                case_id: state.case_id.clone(),
                workflow_id: prog.workflow.id.clone(),
                step: step.clone(),
                role: role.clone(),
                title: title.clone(),
                form: form.to_string(),
                status: "open".into(),
                assignee: None,
                due_at: due_at.map(|d| d.timestamp_millis()),
                created_at: now_ms,
                completed_at: None,
                completed_by: None,
                outcome: None,
                data: None,
            }),
            Action::UpdateTask {
                task,
                status,
                role,
                by,
                outcome,
                data,
            } => w.tasks_updated.push(TaskUpdate {
                id: task.clone(),
                status: status.clone(),
                assignee: None,
                role: role.clone(),
                completed_at: if status == "completed" {
                    Some(now_ms)
                } else {
                    None
                },
                completed_by: by.clone(),
                outcome: outcome.clone(),
                data: data.as_ref().map(|d| d.to_string()),
            }),
            // Started and notified by the driver, which needs other cases' programs.
            Action::StartChild { .. } | Action::CancelChild { .. } | Action::Finished { .. } => {}
        }
    }
    let cancelled: Vec<String> = w
        .timers_done
        .iter()
        .filter(|t| w.timers_new.iter().any(|n| &n.id == *t))
        .cloned()
        .collect();
    if !cancelled.is_empty() {
        w.timers_new.retain(|n| !cancelled.contains(&n.id));
        w.timers_done.retain(|t| !cancelled.contains(t));
    }
    let stopped: Vec<String> = w
        .waits_done
        .iter()
        .filter(|t| w.waits_new.iter().any(|n| &n.id == *t))
        .cloned()
        .collect();
    if !stopped.is_empty() {
        w.waits_new.retain(|n| !stopped.contains(&n.id));
        w.waits_done.retain(|t| !stopped.contains(t));
    }
    (w, sealed, new_head)
}
