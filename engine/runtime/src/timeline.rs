//! Printing a case's history as a timeline an analyst can read.

use chrono::{DateTime, Utc};
use dossier_core::Event;
use serde_json::Value;

/// `+7d02h`: the time elapsed since the start, compactly.
pub fn elapsed(start: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let secs = (at - start).num_seconds().max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    match (d, h, m, s) {
        (0, 0, 0, 0) => "+0".to_string(),
        (0, 0, 0, s) => format!("+{s}s"),
        (0, 0, m, _) => format!("+{m}m"),
        (0, h, m, _) => format!("+{h}h{m:02}m"),
        (d, 0, 0, _) => format!("+{d}d"),
        (d, h, _, _) => format!("+{d}d{h:02}h"),
    }
}

fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// One line describing an event, without its time.
pub fn describe(e: &Event) -> String {
    match e {
        Event::CaseStarted {
            workflow,
            version,
            input,
            business_key,
            ..
        } => {
            let key = business_key
                .as_deref()
                .map(|k| format!(" [{k}]"))
                .unwrap_or_default();
            format!(
                "case started: {workflow} v{version}{key} input {}",
                brief(input)
            )
        }
        Event::StepStarted { step } => format!("step {step}"),
        Event::CaseInterrupted { event, goto } => format!("  interrupted by {event}: go to {goto}"),
        Event::StepCompleted { step } => format!("  done {step}"),
        Event::RuleEvaluated {
            rule,
            inputs,
            output,
            ..
        } => {
            format!(
                "  rule {rule}({}) = {}",
                brief(&serde_json::to_value(inputs).unwrap_or_default()),
                brief(output)
            )
        }
        Event::VariablesAssigned { values, .. } => {
            format!(
                "  set {}",
                brief(&serde_json::to_value(values).unwrap_or_default())
            )
        }
        Event::BranchTaken { arm, target, .. } => match arm {
            Some(i) => format!("  branch: condition {} holds, go to {target}", i + 1),
            None => format!("  branch: otherwise, go to {target}"),
        },
        Event::TemplateRendered {
            template, output, ..
        } => {
            format!(
                "  rendered {template} ({} characters)",
                output.chars().count()
            )
        }
        Event::EffectRequested {
            connector,
            operation,
            request,
            attempt,
            ..
        } => {
            let again = if *attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            format!("  → {connector}.{operation} {}{again}", brief(request))
        }
        Event::EffectCompleted { result, .. } => format!("  ← answer {}", brief(result)),
        Event::EffectFailed {
            error, retryable, ..
        } => {
            format!(
                "  ← failure{}: {error}",
                if *retryable { " (transient)" } else { "" }
            )
        }
        Event::TimerSet {
            fire_at, purpose, ..
        } => format!("  timer {} until {}", purpose.name(), fire_at.to_rfc3339()),
        Event::TimerFired { .. } => "timer fired".to_string(),
        Event::TimerCancelled { .. } => "  timer cancelled".to_string(),
        Event::EventAwaited {
            event, correlation, ..
        } => {
            format!(
                "  waiting for event {event} {}",
                brief(&serde_json::to_value(correlation).unwrap_or_default())
            )
        }
        Event::EventReceived { event, payload, .. } => {
            format!("event {event} received {}", brief(payload))
        }
        Event::EventTimedOut { .. } => "  no event in time".to_string(),
        Event::TaskCreated {
            role,
            title,
            due_at,
            ..
        } => {
            let due = due_at
                .map(|d| format!(", due {}", d.to_rfc3339()))
                .unwrap_or_default();
            format!("  task for {role}: {title}{due}")
        }
        Event::TaskDecided { outcome, by, .. } => format!("task decided by {by}: {outcome}"),
        Event::TaskAwaitingSecondDecision { first_by, .. } => {
            format!("  four eyes: {first_by} decided, a second person must confirm")
        }
        Event::TaskDecisionsDiffer { first_by, first_outcome, second_by, second_outcome, .. } => format!(
            "  four eyes: {second_by} chose {second_outcome}, {first_by} chose {first_outcome}: the task is open again"
        ),
        Event::TaskCompleted { outcome, by, .. } => {
            format!("  task completed: {outcome} (by {by})")
        }
        Event::TaskReminded { .. } => "  task reminder".to_string(),
        Event::TaskNoticeFailed { notice, error, .. } => {
            format!("  task {notice} not sent: {error}")
        }
        Event::TaskOverdue { escalated_to, .. } => match escalated_to {
            Some(r) => format!("  task overdue, escalated to {r}"),
            None => "  task overdue".to_string(),
        },
        Event::TaskCancelled { .. } => "  task cancelled".to_string(),
        Event::ChildStarted {
            workflow, child, ..
        } => format!("  sub-workflow {workflow} started ({child})"),
        Event::ChildFinished { status, output, .. } => {
            format!("sub-workflow ended {status}: {}", brief(output))
        }
        Event::StepFailed {
            step,
            error,
            attempt,
            will_retry,
        } => {
            let retry = if *will_retry { ", will retry" } else { "" };
            format!("  step {step} failed (attempt {attempt}{retry}): {error}")
        }
        Event::CancelRequested { reason, by } => format!("cancel requested by {by}: {reason}"),
        Event::ReceiptReceived {
            connector,
            message_id,
            status,
            ..
        } => format!("receipt from {connector}: message {message_id} {status}"),
        Event::CompensationStarted { reason } => format!("compensating: {reason}"),
        Event::Compensated { step } => format!("  compensated {step}"),
        Event::CompensationFailed { step, error } => {
            format!("  compensation of {step} failed: {error}")
        }
        Event::CaseCompleted { output } => format!("case completed, output {}", brief(output)),
        Event::CaseFailed { error } => format!("case failed: {error}"),
        Event::CaseCancelled { reason } => format!("case cancelled: {reason}"),
    }
}

/// A whole timeline, one event per line: `2026-01-08T08:00:00Z  +7d  step relance_sms`.
pub fn render(start: DateTime<Utc>, events: &[(DateTime<Utc>, &Event)]) -> String {
    let mut out = String::new();
    for (at, e) in events {
        out.push_str(&format!(
            "{}  {:>8}  {}\n",
            at.format("%Y-%m-%dT%H:%M:%SZ"),
            elapsed(start, *at),
            describe(e)
        ));
    }
    out
}
