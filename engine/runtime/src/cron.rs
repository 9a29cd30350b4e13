//! Serves `cron` triggers: starts one case per slot of each schedule.
//!
//! [`spawn`] starts a task that looks at the engine's clock ([`Engine::now`]) every second of
//! real time and, for each `cron` trigger of the deployed workflows, starts one case for every
//! slot that came due since its last look. The case's input is the trigger's `input` computed
//! over the payload `{"scheduled_at": "<slot, RFC 3339 UTC>", "schedule": "<cron text>"}`, or
//! that payload itself when the trigger has no `input`.
//!
//! - **Once per slot.** Each start carries an inbox key: scope `cron:<workflow>:<schedule>`
//!   (the schedule as written, then its time zone when it has one), key the slot instant in
//!   RFC 3339 UTC, written in the transaction that starts the case. Several nodes on one
//!   database, two runners on one engine, or a restart within the same minute start a slot
//!   once; the others find the record and start nothing.
//! - **No catch-up.** The first look is the time of [`spawn`]: slots that came due while no
//!   runner was running (the process was down or starting) are not started afterwards. A look
//!   reaches back at most [`MAX_LOOK_BACK`]: a clock that jumps further (a suspended machine, a
//!   test clock moved by a year) counts as downtime for the older slots.
//! - **Time zones.** A schedule reads the wall clock of its trigger's `timezone` (UTC when
//!   absent); a local time skipped in spring fires at the end of the gap, a local time
//!   repeated in autumn fires once (see [`dossier_model::cron`]).
//! - **Failures.** A slot whose case cannot start (its input does not compute, the store
//!   fails) is logged and left; the next slots go on. The task ends when the engine has
//!   stopped, at the first slot it can no longer start.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use dossier_model::cron::{parse_timezone, CronSchedule, Tz};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::triggers::{trigger_input, Start};
use crate::{Engine, InboxKey, RuntimeError};

/// How often the runner looks at the engine's clock, in real time.
pub const TICK: Duration = Duration::from_secs(1);

/// How far back one look reaches: slots older than this before the engine's time are never
/// started (one day: at most 1,440 starts per look for a schedule firing every minute).
pub const MAX_LOOK_BACK: chrono::Duration = chrono::Duration::days(1);

/// One cron trigger, ready to run.
struct Schedule {
    start: Start,
    cron: CronSchedule,
    tz: Tz,
    /// The inbox scope of its slots.
    scope: String,
}

/// Starts the task serving the engine's `cron` triggers; it ends at once when there are none,
/// and when the engine has stopped. Slots before this call are never started.
pub fn spawn(engine: Engine) -> JoinHandle<()> {
    // Read before the task runs, so that a slot coming due right after this call is served.
    let since = engine.now();
    let schedules = schedules(&engine.triggers().crons);
    tokio::spawn(run(engine, schedules, since))
}

/// The deployed cron triggers; one whose schedule or time zone does not parse (a project is
/// validated before it is deployed, so only by a bug) is logged and left out.
fn schedules(crons: &[Start]) -> Vec<Schedule> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for start in crons {
        let Some(text) = &start.trigger.cron else {
            continue;
        };
        let cron = match CronSchedule::parse(text) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(workflow = %start.workflow, error = %e, "cron trigger left out");
                continue;
            }
        };
        let tz = match &start.trigger.timezone {
            None => Tz::UTC,
            Some(name) => match parse_timezone(name) {
                Ok(tz) => tz,
                Err(e) => {
                    tracing::error!(workflow = %start.workflow, error = %e, "cron trigger left out");
                    continue;
                }
            },
        };
        let mut scope = format!(
            "cron:{}:{}",
            start.workflow,
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        if let Some(name) = &start.trigger.timezone {
            scope.push(' ');
            scope.push_str(name);
        }
        // The same schedule twice in one workflow (with different inputs) starts twice.
        let n = seen.entry(scope.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            scope.push_str(&format!("#{n}"));
        }
        out.push(Schedule {
            start: start.clone(),
            cron,
            tz,
            scope,
        });
    }
    out
}

async fn run(engine: Engine, schedules: Vec<Schedule>, mut last: DateTime<Utc>) {
    if schedules.is_empty() {
        return;
    }
    tracing::info!(schedules = schedules.len(), "serving cron triggers");
    loop {
        tokio::time::sleep(TICK).await;
        let now = engine.now();
        if now <= last {
            // The clock has not moved (or went back): nothing new came due.
            continue;
        }
        let from = now
            .checked_sub_signed(MAX_LOOK_BACK)
            .map_or(last, |oldest| last.max(oldest));
        for s in &schedules {
            for slot in due(s, from, now) {
                if let Err(Stopped) = fire(&engine, s, slot, now).await {
                    tracing::debug!("the engine has stopped: cron triggers are no longer served");
                    return;
                }
            }
        }
        last = now;
    }
}

/// The slots of `s` after `from` and up to `now` included, in order.
fn due(s: &Schedule, from: DateTime<Utc>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut slots = Vec::new();
    let mut t = from.with_timezone(&s.tz);
    while let Some(next) = s.cron.next_after(t) {
        let slot = next.with_timezone(&Utc);
        if slot > now {
            break;
        }
        slots.push(slot);
        t = next;
    }
    slots
}

struct Stopped;

/// Starts the case of one slot, at most once across runners and nodes.
async fn fire(
    engine: &Engine,
    s: &Schedule,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Stopped> {
    let at = slot.to_rfc3339_opts(SecondsFormat::Secs, true);
    let workflow = &s.start.workflow;
    let payload = json!({ "scheduled_at": at, "schedule": s.cron.text() });
    let project = engine.programs().project();
    let input = match trigger_input(project, &s.start.trigger, &payload, now) {
        Ok(input) => input,
        Err(e) => {
            tracing::error!(%workflow, slot = %at, error = %e, "the cron trigger cannot start its case");
            return Ok(());
        }
    };
    let key = InboxKey {
        scope: s.scope.clone(),
        request_hash: hex::encode(Sha256::digest(at.as_bytes())),
        key: at.clone(),
    };
    match engine
        .start_case_once(workflow, input, None, Some(key))
        .await
    {
        Ok(applied) if applied.duplicate.is_some() => {
            tracing::debug!(%workflow, slot = %at, case = %applied.case_id, "cron slot already started");
        }
        Ok(applied) => {
            tracing::info!(%workflow, slot = %at, case = %applied.case_id, "cron trigger started a case");
        }
        Err(RuntimeError::Stopped) => return Err(Stopped),
        Err(e) => {
            tracing::error!(%workflow, slot = %at, error = %e, "the cron trigger cannot start its case");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dossier_model::Trigger;

    fn start(workflow: &str, cron: &str, timezone: Option<&str>) -> Start {
        Start {
            workflow: workflow.into(),
            trigger: Trigger {
                webhook: None,
                event: None,
                cron: Some(cron.into()),
                timezone: timezone.map(Into::into),
                input: Default::default(),
            },
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn scopes_name_the_workflow_schedule_and_zone() {
        let s = schedules(&[
            start("a", "*/5  * * * *", None),
            start("a", "*/5 * * * *", None),
            start("a", "0 8 * * *", Some("Europe/Paris")),
            start("b", "*/5 * * * *", None),
        ]);
        let scopes: Vec<&str> = s.iter().map(|s| s.scope.as_str()).collect();
        assert_eq!(
            scopes,
            [
                "cron:a:*/5 * * * *",
                "cron:a:*/5 * * * *#2",
                "cron:a:0 8 * * * Europe/Paris",
                "cron:b:*/5 * * * *"
            ]
        );
    }

    #[test]
    fn due_slots_are_after_the_last_look_and_up_to_now() {
        let s = schedules(&[start("a", "*/5 * * * *", None)]);
        let slots = due(
            &s[0],
            utc("2026-03-02T09:00:00Z"),
            utc("2026-03-02T09:15:00Z"),
        );
        let slots: Vec<String> = slots
            .iter()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .collect();
        assert_eq!(
            slots,
            [
                "2026-03-02T09:05:00Z",
                "2026-03-02T09:10:00Z",
                "2026-03-02T09:15:00Z"
            ]
        );
        // In a time zone: 08:00 in Paris is 07:00 UTC in winter.
        let s = schedules(&[start("a", "0 8 * * *", Some("Europe/Paris"))]);
        assert_eq!(
            due(
                &s[0],
                utc("2026-03-02T06:59:00Z"),
                utc("2026-03-02T07:00:00Z")
            ),
            [utc("2026-03-02T07:00:00Z")]
        );
        assert!(due(
            &s[0],
            utc("2026-03-02T07:00:00Z"),
            utc("2026-03-02T08:00:00Z")
        )
        .is_empty());
    }
}
