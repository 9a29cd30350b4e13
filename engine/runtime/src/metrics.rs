//! Counters the engine keeps for `/metrics`: plain atomics, read without stopping anything.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
    pub effects_ok: AtomicU64,
    pub effects_failed: AtomicU64,
    /// Effect latency histogram: counts per bucket (the last one is `+Inf`), sum in µs.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    pub latency_sum_us: AtomicU64,
    pub timers_fired: AtomicU64,
    /// How late the timers handed over last were, in ms (the largest of the round).
    pub timer_lag_ms: AtomicI64,
}

impl Metrics {
    pub fn effect_done(&self, ok: bool, elapsed: std::time::Duration) {
        if ok {
            self.effects_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.effects_failed.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.latency_buckets.len());
        for (i, b) in self.latency_buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            buckets.push((LATENCY_BUCKETS.get(i).copied(), cumulative));
        }
        MetricsSnapshot {
            inputs: self.inputs.load(Ordering::Relaxed),
            steps: self.steps.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            effects_ok: self.effects_ok.load(Ordering::Relaxed),
            effects_failed: self.effects_failed.load(Ordering::Relaxed),
            effect_latency_buckets: buckets,
            effect_latency_sum_seconds: self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
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
    pub effects_ok: u64,
    pub effects_failed: u64,
    /// Cumulative counts per upper bound in seconds (`None`: `+Inf`).
    pub effect_latency_buckets: Vec<(Option<f64>, u64)>,
    pub effect_latency_sum_seconds: f64,
    pub timers_fired: u64,
    pub timer_lag_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_lands_in_cumulative_buckets() {
        let m = Metrics::default();
        m.effect_done(true, Duration::from_micros(800));
        m.effect_done(false, Duration::from_millis(30));
        m.effect_done(true, Duration::from_secs(20));
        let s = m.snapshot();
        assert_eq!((s.effects_ok, s.effects_failed), (2, 1));
        let at = |bound: Option<f64>| {
            s.effect_latency_buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(at(Some(0.001)), Some(1));
        assert_eq!(at(Some(0.025)), Some(1));
        assert_eq!(at(Some(0.05)), Some(2));
        assert_eq!(at(Some(10.0)), Some(2));
        assert_eq!(at(None), Some(3));
        assert!((s.effect_latency_sum_seconds - 20.0308).abs() < 1e-9);
    }
}
