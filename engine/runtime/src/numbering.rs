//! `number` steps: the internal effect that gives a case the next number of a gapless series.
//! The live engine allocates it in the store (one transaction per number, idempotent by the
//! effect's key); simulations and workflow tests count in memory the same way.

use std::collections::BTreeMap;

use dossier_core::Event;
use serde_json::{json, Value};

/// What a `number` step asks for.
pub(crate) struct Ask {
    pub series: String,
    pub period: String,
    pub format: String,
}

impl Ask {
    pub fn of(request: &Value) -> Ask {
        let s = |k: &str| request[k].as_str().unwrap_or_default().to_string();
        Ask {
            series: s("series"),
            period: s("period"),
            format: s("format"),
        }
    }

    /// The step's answer once `seq` is allocated: `{number, series, period, seq}`.
    pub fn answer(&self, key: String, seq: i64) -> Event {
        match dossier_model::numbering::format_number(&self.format, &self.series, &self.period, seq)
        {
            Ok(number) => Event::EffectCompleted {
                key,
                result: json!({"number": number, "series": self.series, "period": self.period, "seq": seq}),
            },
            Err(m) => Event::EffectFailed {
                key,
                error: format!("the number format `{}`: {m}", self.format),
                retryable: false,
            },
        }
    }
}

/// Numbering in memory, for simulations: gapless per series and period, the same number for
/// the same key.
#[derive(Debug, Default)]
pub(crate) struct MemoryNumbers {
    last: BTreeMap<(String, String), i64>,
    given: BTreeMap<String, i64>,
}

impl MemoryNumbers {
    pub fn allocate(&mut self, ask: &Ask, key: &str) -> i64 {
        if let Some(seq) = self.given.get(key) {
            return *seq;
        }
        let last = self
            .last
            .entry((ask.series.clone(), ask.period.clone()))
            .or_insert(0);
        *last += 1;
        self.given.insert(key.to_string(), *last);
        *last
    }
}
