//! `ledger` steps: the internal effect that applies postings to accounts. The live engine
//! applies them in the store (one transaction, all or none, idempotent by the effect's key);
//! simulations and workflow tests apply them to an in-memory store the same way.

use dossier_core::Event;
use dossier_store::{Decimal, LedgerOutcome, LedgerRequest, PostingRequest};
use serde_json::{json, Value};

/// The store's request for a `ledger` step's effect (the machine wrote every quantity as an
/// exact decimal text), or why it cannot be made.
pub(crate) fn request(
    key: &str,
    case_id: &str,
    at: i64,
    request: &Value,
) -> Result<LedgerRequest, String> {
    let decimal = |v: &Value, n: usize, what: &str| -> Result<Option<Decimal>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => s.parse::<Decimal>().map(Some).map_err(|_| {
                format!("posting {n}: the {what} `{s}` is not an exact decimal (at most 28 digits)")
            }),
            other => Err(format!("posting {n}: the {what} {other} is not a decimal")),
        }
    };
    let mut postings = Vec::new();
    for (i, p) in request["postings"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let n = i + 1;
        let account = p["account"].as_str().unwrap_or_default().to_string();
        let amount =
            decimal(&p["amount"], n, "amount")?.ok_or_else(|| format!("posting {n}: no amount"))?;
        postings.push(PostingRequest {
            account,
            amount,
            min: decimal(&p["min"], n, "lower bound")?,
            max: decimal(&p["max"], n, "upper bound")?,
        });
    }
    Ok(LedgerRequest {
        key: key.to_string(),
        case_id: case_id.to_string(),
        at,
        postings,
    })
}

/// A decimal as an exact JSON number (its own scale kept: `60.50`); the API answers balances
/// the same way.
pub fn decimal_json(d: Decimal) -> Value {
    serde_json::from_str(&d.to_string()).unwrap_or(Value::Null)
}

/// The step's answer: `{postings: [{account, amount, balance}]}`, or a permanent failure naming
/// the posting refused and the bound (its `on_error` decides what follows).
pub(crate) fn answer(key: String, outcome: LedgerOutcome) -> Event {
    match outcome {
        LedgerOutcome::Posted { postings, .. } => Event::EffectCompleted {
            key,
            result: json!({
                "postings": postings.iter().map(|p| json!({
                    "account": p.account,
                    "amount": decimal_json(p.amount),
                    "balance": decimal_json(p.balance),
                })).collect::<Vec<_>>(),
            }),
        },
        LedgerOutcome::Refused(r) => {
            let after = r.balance + r.amount;
            let (which, side) = if r.lower {
                ("lower", "below")
            } else {
                ("upper", "above")
            };
            Event::EffectFailed {
                key,
                error: format!(
                    "posting {} on `{}` refused: its balance {} would become {after}, {side} its {which} bound {}; nothing was posted",
                    r.index + 1,
                    r.account,
                    r.balance,
                    r.bound
                ),
                retryable: false,
            }
        }
    }
}

/// A ledger request that cannot be made or applied: permanent when the request is malformed,
/// transient when the store failed (the step's `retry` may try again).
pub(crate) fn failure(key: String, error: String, retryable: bool) -> Event {
    Event::EffectFailed {
        key,
        error,
        retryable,
    }
}

/// Applies a `ledger` step's effect to `store`: what the live engine and simulations share.
pub(crate) async fn post(
    store: &dyn dossier_store::Store,
    key: &str,
    case_id: &str,
    at: i64,
    req: &Value,
) -> Event {
    let ledger_req = match request(key, case_id, at, req) {
        Ok(r) => r,
        Err(m) => return failure(key.to_string(), m, false),
    };
    match store.post_ledger(&ledger_req).await {
        Ok(outcome) => answer(key.to_string(), outcome),
        Err(e) => failure(
            key.to_string(),
            format!("cannot apply the postings: {e}"),
            true,
        ),
    }
}
