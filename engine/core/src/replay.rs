//! Replay: feed a recorded history's inputs back to the state machine and check that it derives
//! exactly the recorded decisions. The runtime uses the same path to rebuild a case's state.

use chrono::{DateTime, Utc};

use crate::{CaseState, Event, Program};

/// An event read back from the history.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub event: Event,
}

/// Where the re-derived history departs from the recorded one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("event {seq}: {message}")]
pub struct Divergence {
    pub seq: i64,
    pub message: String,
    pub recorded: Option<Event>,
    pub derived: Option<Event>,
}

fn short(e: &Event) -> String {
    let text = serde_json::to_string(e).unwrap_or_default();
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &text[..cut])
    } else {
        text
    }
}

/// Re-runs a history. Returns the rebuilt state, or the first divergence.
pub fn replay(
    prog: &Program,
    case_id: &str,
    history: &[RecordedEvent],
) -> Result<CaseState, Box<Divergence>> {
    let mut state: Option<CaseState> = None;
    let mut i = 0;
    while i < history.len() {
        let rec = &history[i];
        if !rec.event.is_input() {
            return Err(Box::new(Divergence {
                seq: rec.seq,
                message: format!(
                    "the recorded `{}` was not derived by the workflow (it expected the next input here)",
                    rec.event.kind()
                ),
                recorded: Some(rec.event.clone()),
                derived: None,
            }));
        }
        let transition = match (&mut state, &rec.event) {
            (
                None,
                Event::CaseStarted {
                    input,
                    business_key,
                    parent,
                    ..
                },
            ) => {
                match CaseState::start(
                    prog,
                    case_id,
                    input.clone(),
                    business_key.clone(),
                    parent.clone(),
                    rec.at,
                ) {
                    Ok((s, t)) => {
                        state = Some(s);
                        t
                    }
                    Err(e) => {
                        return Err(Box::new(Divergence {
                            seq: rec.seq,
                            message: format!("the case would not start again: {e}"),
                            recorded: Some(rec.event.clone()),
                            derived: None,
                        }))
                    }
                }
            }
            (None, _) => {
                return Err(Box::new(Divergence {
                    seq: rec.seq,
                    message: "the history does not begin with `case_started`".into(),
                    recorded: Some(rec.event.clone()),
                    derived: None,
                }))
            }
            (Some(_), Event::CaseStarted { .. }) => {
                return Err(Box::new(Divergence {
                    seq: rec.seq,
                    message: "a second `case_started`".into(),
                    recorded: Some(rec.event.clone()),
                    derived: None,
                }))
            }
            (Some(s), input) => match s.handle(prog, input.clone(), rec.at) {
                Ok(t) => t,
                Err(e) => {
                    return Err(Box::new(Divergence {
                        seq: rec.seq,
                        message: format!("the workflow now refuses this input: {e}"),
                        recorded: Some(rec.event.clone()),
                        derived: None,
                    }))
                }
            },
        };
        if transition.events.is_empty() {
            return Err(Box::new(Divergence {
                seq: rec.seq,
                message: format!(
                    "the workflow now ignores the recorded `{}`",
                    rec.event.kind()
                ),
                recorded: Some(rec.event.clone()),
                derived: None,
            }));
        }
        for (j, derived) in transition.events.iter().enumerate() {
            match history.get(i + j) {
                Some(recorded) if recorded.event == *derived => {}
                Some(recorded) => {
                    return Err(Box::new(Divergence {
                        seq: recorded.seq,
                        message: format!(
                            "recorded {} but the workflow derives {}",
                            short(&recorded.event),
                            short(derived)
                        ),
                        recorded: Some(recorded.event.clone()),
                        derived: Some(derived.clone()),
                    }))
                }
                None => {
                    let seq = history.last().map(|r| r.seq + 1).unwrap_or(1);
                    return Err(Box::new(Divergence {
                        seq,
                        message: format!(
                            "the history ends where the workflow derives {}",
                            short(derived)
                        ),
                        recorded: None,
                        derived: Some(derived.clone()),
                    }));
                }
            }
        }
        i += transition.events.len();
    }
    state.ok_or_else(|| {
        Box::new(Divergence {
            seq: 1,
            message: "the history is empty".into(),
            recorded: None,
            derived: None,
        })
    })
}
