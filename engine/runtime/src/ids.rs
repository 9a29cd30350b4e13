//! `unique_id` steps: the internal effect that draws an identifier's random part and makes the
//! identifier unique in the store. The live engine draws from the operating system's CSPRNG;
//! simulations and workflow tests draw from a hash of the effect's key, so that a test gives
//! the same identifier every time.

use dossier_core::Event;
use dossier_store::{IdClaim, IdClaimOutcome, Store};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Draws before giving up: with 4 hex characters, 64 taken draws in a row means the pattern is
/// nearly full.
const DRAWS: usize = 64;

/// Where random bytes come from.
pub(crate) enum Source {
    /// The operating system's CSPRNG.
    System,
    /// SHA-256 of the effect's key and a counter (simulations).
    Derived(String),
}

impl Source {
    fn fill(&self, round: usize, buf: &mut [u8]) -> Result<(), String> {
        match self {
            Source::System => getrandom::getrandom(buf).map_err(|e| e.to_string()),
            Source::Derived(key) => {
                let mut block = 0u32;
                let mut filled = 0;
                while filled < buf.len() {
                    let digest = Sha256::digest(format!("{key}#{round}#{block}").as_bytes());
                    let n = (buf.len() - filled).min(digest.len());
                    buf[filled..filled + n].copy_from_slice(&digest[..n]);
                    filled += n;
                    block += 1;
                }
                Ok(())
            }
        }
    }
}

/// `length` characters of `alphabet`, each equally likely (bytes that would favour the first
/// characters are drawn again).
fn draw(source: &Source, round: usize, alphabet: &str, length: usize) -> Result<String, String> {
    let chars: Vec<char> = alphabet.chars().collect();
    let n = chars.len();
    if n == 0 || n > 256 {
        return Err(format!("an alphabet of {n} characters"));
    }
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(length);
    let mut buf = vec![0u8; length * 2 + 8];
    let mut refill = 0;
    while out.chars().count() < length {
        source.fill(round * 1000 + refill, &mut buf)?;
        refill += 1;
        for b in &buf {
            if (*b as usize) < limit && out.chars().count() < length {
                out.push(chars[*b as usize % n]);
            }
        }
    }
    Ok(out)
}

/// Performs a `unique_id` step's effect against `store`.
pub(crate) async fn claim(
    store: &dyn Store,
    source: &Source,
    key: &str,
    case_id: &str,
    at: i64,
    request: &Value,
) -> Event {
    let fail = |error: String, retryable: bool| Event::EffectFailed {
        key: key.to_string(),
        error,
        retryable,
    };
    let pattern = request["pattern"].as_str().unwrap_or_default();
    let length = request["length"].as_u64().unwrap_or(4) as usize;
    let alphabet = request["alphabet"].as_str().unwrap_or("hex");
    let Some(chars) = dossier_model::UniqueIdSpec::characters(alphabet) else {
        return fail(format!("unknown alphabet `{alphabet}`"), false);
    };
    for round in 0..DRAWS {
        let random = match draw(source, round, chars, length) {
            Ok(r) => r,
            Err(e) => return fail(format!("no random part: {e}"), true),
        };
        let id = pattern.replacen(dossier_model::UniqueIdSpec::PLACEHOLDER, &random, 1);
        let claim = IdClaim {
            id: id.clone(),
            key: key.to_string(),
            case_id: case_id.to_string(),
            at,
        };
        match store.claim_unique_id(&claim).await {
            Ok(IdClaimOutcome::Claimed) => {
                return Event::EffectCompleted {
                    key: key.to_string(),
                    result: json!({ "id": id }),
                }
            }
            Ok(IdClaimOutcome::Held(id)) => {
                return Event::EffectCompleted {
                    key: key.to_string(),
                    result: json!({ "id": id }),
                }
            }
            Ok(IdClaimOutcome::Taken) => continue,
            Err(e) => return fail(format!("cannot record the identifier: {e}"), true),
        }
    }
    fail(
        format!(
            "no free identifier of the pattern `{pattern}` after {DRAWS} draws: lengthen its \
             random part (`length`)"
        ),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dossier_store::memory::MemoryStore;

    #[test]
    fn draws_use_only_the_alphabet_and_spread_over_it() {
        let hex = dossier_model::UniqueIdSpec::characters("hex").unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for round in 0..400 {
            let r = draw(&Source::System, round, hex, 4).unwrap();
            assert_eq!(r.len(), 4);
            for c in r.chars() {
                assert!(hex.contains(c), "{r}");
                *seen.entry(c).or_insert(0) += 1;
            }
        }
        // 1,600 characters over 16: each appears (expected 100 times).
        assert_eq!(seen.len(), 16, "{seen:?}");
        let a = draw(&Source::Derived("k".into()), 0, hex, 6).unwrap();
        assert_eq!(a, draw(&Source::Derived("k".into()), 0, hex, 6).unwrap());
        assert_ne!(a, draw(&Source::Derived("k".into()), 1, hex, 6).unwrap());
    }

    #[tokio::test]
    async fn a_taken_identifier_is_drawn_again_and_a_key_keeps_its_own() {
        let store = MemoryStore::default();
        let req = json!({"pattern": "CI261121-{random}-PT", "length": 1, "alphabet": "digits"});
        let mut ids = std::collections::BTreeSet::new();
        for i in 0..10 {
            let key = format!("c{i}:id#1");
            match claim(&store, &Source::System, &key, "c", 0, &req).await {
                Event::EffectCompleted { result, .. } => {
                    let id = result["id"].as_str().unwrap().to_string();
                    assert!(id.starts_with("CI261121-") && id.ends_with("-PT"), "{id}");
                    assert!(ids.insert(id), "given twice");
                }
                other => panic!("{other:?}"),
            }
        }
        // The ten digits are given: an eleventh case finds none free.
        match claim(&store, &Source::System, "c10:id#1", "c", 0, &req).await {
            Event::EffectFailed {
                error, retryable, ..
            } => {
                assert!(error.contains("no free identifier"), "{error}");
                assert!(!retryable);
            }
            other => panic!("{other:?}"),
        }
        // A repeated request gets the identifier it has.
        let again = claim(&store, &Source::System, "c3:id#1", "c", 0, &req).await;
        let first = claim(&store, &Source::System, "c3:id#1", "c", 0, &req).await;
        assert_eq!(again, first);
    }
}
