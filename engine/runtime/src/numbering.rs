//! `number` steps: the internal effect that gives a case the next number of a gapless series,
//! allocated in the store (one transaction per number, idempotent by the effect's key): the
//! live engine's, or the in-memory store of simulations and workflow tests. Also the one
//! dispatcher of the effects the runtime answers itself against the store
//! ([`internal_effect`]: numbers, ledger postings, unique identifiers).

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

/// Gives a `number` step its number: allocated in `store`, the same for the same key.
pub(crate) async fn allocate(
    store: &dyn dossier_store::Store,
    key: &str,
    case_id: &str,
    at: i64,
    request: &Value,
) -> Event {
    let ask = Ask::of(request);
    let req = dossier_store::NumberRequest {
        series: ask.series.clone(),
        period: ask.period.clone(),
        key: key.to_string(),
        case_id: case_id.to_string(),
        at,
    };
    match store.allocate_number(&req).await {
        Ok(a) => ask.answer(key.to_string(), a.seq),
        Err(e) => Event::EffectFailed {
            key: key.to_string(),
            error: format!(
                "cannot allocate a number of the series `{}` ({}): {e}",
                ask.series, ask.period
            ),
            retryable: true,
        },
    }
}

/// Performs an effect the runtime answers itself against the store (a `number`, `ledger` or
/// `unique_id` step), or `None` for any other connector. The live engine and simulations
/// (an in-memory store) share it; only where the random part of an identifier comes from
/// differs.
pub(crate) async fn internal_effect(
    store: &dyn dossier_store::Store,
    ids: &crate::ids::Source,
    connector: &str,
    key: &str,
    case_id: &str,
    at: i64,
    request: &Value,
) -> Option<Event> {
    Some(match connector {
        dossier_core::NUMBERING_CONNECTOR => allocate(store, key, case_id, at, request).await,
        dossier_core::LEDGER_CONNECTOR => {
            crate::ledger::post(store, key, case_id, at, request).await
        }
        dossier_core::IDS_CONNECTOR => {
            crate::ids::claim(store, ids, key, case_id, at, request).await
        }
        _ => return None,
    })
}
