//! Standard Webhooks signatures: `webhook-id`, `webhook-timestamp`, `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, several space-separated during a key
//! rotation), secrets `whsec_<base64>`, a timestamp tolerance.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The key bytes of a `whsec_…` secret.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| "the secret does not start with `whsec_`".to_string())?;
    let key = STANDARD
        .decode(b64)
        .map_err(|e| format!("the secret after `whsec_` is not base64: {e}"))?;
    if key.is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(key)
}

/// The `v1,<base64>` signature of a message (what a sender puts in `webhook-signature`).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(key, id, timestamp, body)
        .map(|m| STANDARD.encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("v1,{digest}")
}

/// The MAC of `id.timestamp.body`. HMAC takes keys of any length, so this is `None` only for
/// an empty key, which `decode_secret` never returns.
fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    if key.is_empty() {
        return None;
    }
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the `{0}` header is missing")]
    Missing(&'static str),
    #[error("the `webhook-timestamp` header is not a number of seconds since 1970: `{0}`")]
    BadTimestamp(String),
    #[error("the timestamp is {off} s away from the server's time (tolerance {tolerance} s): the message is too old or the sender's clock is wrong")]
    OutOfTolerance { off: i64, tolerance: i64 },
    #[error("no signature in `webhook-signature` matches the hook's secret")]
    NoMatch,
    #[error("no secret is configured for this hook")]
    NoSecret,
}

/// Headers of one delivery.
pub struct Signed<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Verifies a delivery against every secret of the hook; returns its id and timestamp.
pub fn verify(
    keys: &[Vec<u8>],
    h: &Signed<'_>,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(String, i64), SignatureError> {
    let id =
        h.id.filter(|s| !s.is_empty())
            .ok_or(SignatureError::Missing("webhook-id"))?;
    let ts_text = h
        .timestamp
        .ok_or(SignatureError::Missing("webhook-timestamp"))?;
    let sigs = h
        .signature
        .ok_or(SignatureError::Missing("webhook-signature"))?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(ts_text.chars().take(40).collect()))?;
    let off = ts.saturating_sub(now);
    if off.unsigned_abs() > tolerance.unsigned_abs() {
        return Err(SignatureError::OutOfTolerance { off, tolerance });
    }
    if keys.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    for sig in sigs.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        let Ok(given) = STANDARD.decode(b64) else {
            continue;
        };
        for key in keys {
            // `verify_slice` compares in constant time.
            if mac(key, id, ts, body).is_some_and(|m| m.verify_slice(&given).is_ok()) {
                return Ok((id.to_string(), ts));
            }
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(sig: &'a str, ts: &'a str) -> Signed<'a> {
        Signed {
            id: Some(ID),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn matches_the_specification_example() {
        let key = decode_secret(SECRET).unwrap();
        assert_eq!(sign(&key, ID, TS, BODY.as_bytes()), EXPECTED);
        let ts = TS.to_string();
        assert_eq!(
            verify(
                &[key],
                &headers(EXPECTED, &ts),
                BODY.as_bytes(),
                TS + 10,
                300
            ),
            Ok((ID.to_string(), TS))
        );
    }

    #[test]
    fn rotation_tolerance_and_tampering() {
        let old = decode_secret(SECRET).unwrap();
        let new = decode_secret("whsec_bmV3IGtleSBieXRlcw==").unwrap();
        let ts = TS.to_string();
        // Signed with the new key only, listed after an unknown one: accepted by either set.
        let sig = format!("v1,AAAA v2,zzz {}", sign(&new, ID, TS, BODY.as_bytes()));
        assert!(verify(
            &[old.clone(), new.clone()],
            &headers(&sig, &ts),
            BODY.as_bytes(),
            TS,
            300
        )
        .is_ok());
        assert_eq!(
            verify(
                std::slice::from_ref(&old),
                &headers(&sig, &ts),
                BODY.as_bytes(),
                TS,
                300
            ),
            Err(SignatureError::NoMatch)
        );
        // One byte changed in the body.
        assert_eq!(
            verify(
                std::slice::from_ref(&old),
                &headers(EXPECTED, &ts),
                br#"{"test": 2432232315}"#,
                TS,
                300
            ),
            Err(SignatureError::NoMatch)
        );
        // Five minutes and one second late, or early.
        assert_eq!(
            verify(
                std::slice::from_ref(&old),
                &headers(EXPECTED, &ts),
                BODY.as_bytes(),
                TS + 301,
                300
            ),
            Err(SignatureError::OutOfTolerance {
                off: -301,
                tolerance: 300
            })
        );
        assert!(matches!(
            verify(
                std::slice::from_ref(&old),
                &headers(EXPECTED, &ts),
                BODY.as_bytes(),
                TS - 301,
                300
            ),
            Err(SignatureError::OutOfTolerance { off: 301, .. })
        ));
        assert_eq!(
            verify(
                std::slice::from_ref(&old),
                &headers(EXPECTED, "soon"),
                BODY.as_bytes(),
                TS,
                300
            ),
            Err(SignatureError::BadTimestamp("soon".into()))
        );
        // A timestamp at the end of the range neither overflows nor passes.
        let far = i64::MIN.to_string();
        assert!(matches!(
            verify(
                std::slice::from_ref(&old),
                &headers(EXPECTED, &far),
                BODY.as_bytes(),
                TS,
                300
            ),
            Err(SignatureError::OutOfTolerance { .. })
        ));
        let missing = Signed {
            id: Some(ID),
            timestamp: None,
            signature: Some(EXPECTED),
        };
        assert_eq!(
            verify(&[old], &missing, BODY.as_bytes(), TS, 300),
            Err(SignatureError::Missing("webhook-timestamp"))
        );
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_***").is_err());
    }
}
