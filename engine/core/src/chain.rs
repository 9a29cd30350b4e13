//! The hash chain of a case's history: each event's hash covers the hash of the one before it,
//! so changing, removing or reordering any recorded event breaks every later link.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::Event;

/// The `prev_hash` of a case's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event as stored: numbered, timed, chained.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedEvent {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    /// Canonical JSON of the payload (sorted keys, no spaces).
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of one event: SHA-256 over the previous hash, the number, the time, the kind and
/// the canonical payload, separated by newlines.
pub fn event_hash(prev_hash: &str, seq: i64, at_millis: i64, kind: &str, payload: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(at_millis.to_string().as_bytes());
    h.update(b"\n");
    h.update(kind.as_bytes());
    h.update(b"\n");
    h.update(payload.as_bytes());
    hex::encode(h.finalize())
}

/// Numbers, times and chains new events after the case's last event.
pub fn seal(
    events: &[Event],
    at: DateTime<Utc>,
    last_seq: i64,
    last_hash: &str,
) -> Vec<SealedEvent> {
    let mut prev = last_hash.to_string();
    let mut seq = last_seq;
    let millis = at.timestamp_millis();
    // Stored times are milliseconds: truncate so that a re-read event hashes the same.
    let at = DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or(at);
    events
        .iter()
        .map(|e| {
            seq += 1;
            let kind = e.kind().to_string();
            let payload = serde_json::to_string(&e.payload()).expect("events always serialize");
            let hash = event_hash(&prev, seq, millis, &kind, &payload);
            let sealed = SealedEvent {
                seq,
                at,
                kind,
                payload,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            };
            prev = hash;
            sealed
        })
        .collect()
}

/// A link of the chain that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event {seq}: expected number {expected}, the history has a gap or a duplicate")]
    Sequence { seq: i64, expected: i64 },
    #[error("event {seq}: its previous-hash field does not match the hash of event {prev}")]
    BrokenLink { seq: i64, prev: i64 },
    #[error("event {seq}: its content does not match its hash (it was altered)")]
    Altered { seq: i64 },
}

impl ChainError {
    pub fn seq(&self) -> i64 {
        match self {
            ChainError::Sequence { seq, .. }
            | ChainError::BrokenLink { seq, .. }
            | ChainError::Altered { seq } => *seq,
        }
    }
}

/// Checks a whole history, first event first. Returns the first broken link.
pub fn verify<'a, I>(events: I) -> Result<(), ChainError>
where
    I: IntoIterator<Item = (i64, i64, &'a str, &'a str, &'a str, &'a str)>,
{
    let mut prev = GENESIS.to_string();
    for (expected, (seq, at, kind, payload, prev_hash, hash)) in (1..).zip(events) {
        if seq != expected {
            return Err(ChainError::Sequence { seq, expected });
        }
        if prev_hash != prev {
            return Err(ChainError::BrokenLink { seq, prev: seq - 1 });
        }
        if event_hash(prev_hash, seq, at, kind, payload) != hash {
            return Err(ChainError::Altered { seq });
        }
        prev = hash.to_string();
    }
    Ok(())
}
