//! Counters the engine keeps for `/metrics`: plain atomics, read without stopping anything.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds, in seconds, of the effect latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Inputs whose transition was committed.
    pub inputs: AtomicU64,
    /// `step_started` events committed.
    pub steps: AtomicU64,
    /// Batches committed.
    pub commits: AtomicU64,
    /// Connector calls by connector name: outcomes and latency.
    connectors: Mutex<BTreeMap<String, ConnectorCounts>>,
    pub timers_fired: AtomicU64,
    /// How late the timers handed over last were, in ms (the largest of the round).
    pub timer_lag_ms: AtomicI64,
}

/// How a connector call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    /// Failed, worth retrying (unreachable, timeout, 5xx...).
    Transient,
    /// Failed for good (refused, bad request...).
    Permanent,
}

#[derive(Debug, Default, Clone)]
struct ConnectorCounts {
    ok: u64,
    transient: u64,
    permanent: u64,
    /// Counts per bucket (the last one is `+Inf`), not cumulative.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum_us: u64,
}

impl Metrics {
    pub fn effect_done(&self, connector: &str, outcome: CallOutcome, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut all = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        let c = all.entry(connector.to_string()).or_default();
        match outcome {
            CallOutcome::Ok => c.ok += 1,
            CallOutcome::Transient => c.transient += 1,
            CallOutcome::Permanent => c.permanent += 1,
        }
        c.buckets[i] += 1;
        c.sum_us = c
            .sum_us
            .saturating_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let connectors = self
            .connectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, c)| {
                let mut cumulative = 0;
                let latency_buckets = c
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        cumulative += n;
                        (LATENCY_BUCKETS.get(i).copied(), cumulative)
                    })
                    .collect();
                ConnectorSnapshot {
                    connector: name.clone(),
                    ok: c.ok,
                    transient: c.transient,
                    permanent: c.permanent,
                    latency_buckets,
                    latency_sum_seconds: c.sum_us as f64 / 1e6,
                }
            })
            .collect();
        MetricsSnapshot {
            inputs: self.inputs.load(Ordering::Relaxed),
            steps: self.steps.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            connectors,
            timers_fired: self.timers_fired.load(Ordering::Relaxed),
            timer_lag_ms: self.timer_lag_ms.load(Ordering::Relaxed),
        }
    }
}

/// The engine's counters at one instant (totals since the process started).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub inputs: u64,
    pub steps: u64,
    pub commits: u64,
    /// One entry per connector called since the start, by name.
    pub connectors: Vec<ConnectorSnapshot>,
    pub timers_fired: u64,
    pub timer_lag_ms: i64,
}

/// One connector's calls since the process started.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorSnapshot {
    pub connector: String,
    pub ok: u64,
    pub transient: u64,
    pub permanent: u64,
    /// Cumulative counts per upper bound in seconds (`None`: `+Inf`).
    pub latency_buckets: Vec<(Option<f64>, u64)>,
    pub latency_sum_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_lands_in_cumulative_buckets_per_connector() {
        let m = Metrics::default();
        m.effect_done("sms", CallOutcome::Ok, Duration::from_micros(800));
        m.effect_done("sms", CallOutcome::Transient, Duration::from_millis(30));
        m.effect_done("sms", CallOutcome::Ok, Duration::from_secs(20));
        m.effect_done("courriel", CallOutcome::Permanent, Duration::from_millis(3));
        let s = m.snapshot();
        let names: Vec<&str> = s.connectors.iter().map(|c| c.connector.as_str()).collect();
        assert_eq!(names, ["courriel", "sms"]);
        let courriel = &s.connectors[0];
        assert_eq!(
            (courriel.ok, courriel.transient, courriel.permanent),
            (0, 0, 1)
        );
        let sms = &s.connectors[1];
        assert_eq!((sms.ok, sms.transient, sms.permanent), (2, 1, 0));
        let at = |bound: Option<f64>| {
            sms.latency_buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(at(Some(0.001)), Some(1));
        assert_eq!(at(Some(0.025)), Some(1));
        assert_eq!(at(Some(0.05)), Some(2));
        assert_eq!(at(Some(10.0)), Some(2));
        assert_eq!(at(None), Some(3));
        assert!((sms.latency_sum_seconds - 20.0308).abs() < 1e-9);
    }
}
