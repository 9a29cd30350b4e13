//! `signer`: signs claims as a compact JWS (RFC 7515) with Ed25519 (`alg: EdDSA`, RFC 8037), so
//! that anyone holding the public key can check a QR code's payload offline: a professional
//! card, a check-in token. Each token carries its time (`iat`), a random nonce (`jti`, 128 bits
//! from the operating system's CSPRNG) and, when asked, an expiry (`exp`).
//!
//! ```yaml
//! connectors:
//!   signature_carte:
//!     type: signer
//!     private_key_env: DOSSIER_CARTE_CLE_PRIVEE   # PKCS#8 PEM (openssl genpkey -algorithm ed25519)
//!     key_id: carte-2026                           # `kid` in each token's header
//!     issuer: ISMAIL                                # `iss` claim (optional)
//! ```
//!
//! Operation `sign`: `{claims: {...}, expires_at?: "2027-11-21" | RFC 3339}` answers
//! `{token, kid, iat, jti, exp, public_key}` (`public_key`: the raw 32-byte key, base64url, as a
//! JWK's `x`). Signing touches nothing outside the process: a repeated effect signs again with a
//! new nonce, which is harmless (the history keeps the first answer).

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::support::{BuildContext, BuildError};
use crate::{Connector, ConnectorError, EffectRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    private_key_env: String,
    key_id: String,
    #[serde(default)]
    issuer: Option<String>,
}

pub fn build(
    name: &str,
    settings: serde_yaml_ng::Value,
    ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, BuildError> {
    let s: Settings = crate::config::settings(settings)?;
    if s.key_id.trim().is_empty() {
        return Err(BuildError::new(
            "key_id",
            "`key_id` is empty",
            "name the key, such as `carte-2026`: verifiers pick the public key by this name",
        ));
    }
    let secret = ctx.secret("private_key_env", &s.private_key_env)?;
    let key =
        parse_private_key(&secret).map_err(|m| {
            BuildError::new(
            "private_key_env",
            format!("`{}` does not hold an Ed25519 private key: {m}", s.private_key_env),
            "create one with `openssl genpkey -algorithm ed25519` and put the PEM text (or its \
             base64 body) in the variable",
        )
        })?;
    Ok(Arc::new(SignerConnector {
        name: name.to_string(),
        key,
        key_id: s.key_id,
        issuer: s.issuer,
    }))
}

/// An Ed25519 key from a PKCS#8 document: PEM text, or the base64 of its DER.
pub fn parse_private_key(text: &str) -> Result<Ed25519KeyPair, String> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| "it is not PEM or base64".to_string())?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| format!("not a PKCS#8 Ed25519 key ({e})"))
}

struct SignerConnector {
    name: String,
    key: Ed25519KeyPair,
    key_id: String,
    issuer: Option<String>,
}

/// An instant from `expires_at`: a date (midnight UTC) or an RFC 3339 date-time.
fn expiry(v: &Value) -> Result<Option<i64>, ConnectorError> {
    let Some(text) = v.as_str() else {
        return match v {
            Value::Null => Ok(None),
            other => Err(ConnectorError::Permanent(format!(
                "`expires_at` must be a date or a date-time, not {other}"
            ))),
        };
    };
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Some(t.timestamp()))
        .map_err(|_| {
            ConnectorError::Permanent(format!(
                "`expires_at` `{text}` is neither a date (2027-11-21) nor an RFC 3339 date-time"
            ))
        })
}

impl SignerConnector {
    fn sign(&self, effect: &EffectRequest, now: DateTime<Utc>) -> Result<Value, ConnectorError> {
        let claims = match &effect.request["claims"] {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => {
                return Err(ConnectorError::Permanent(format!(
                    "`claims` must be an object (the payload to sign), not {other}"
                )))
            }
        };
        for reserved in ["iat", "jti", "exp", "iss"] {
            if claims.contains_key(reserved) {
                return Err(ConnectorError::Permanent(format!(
                    "the claim `{reserved}` is set by the signer: remove it from `claims`"
                )));
            }
        }
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| ConnectorError::Transient(format!("no random nonce: {e}")))?;
        let jti = hex::encode(nonce);
        let iat = now.timestamp();
        let exp = expiry(&effect.request["expires_at"])?;
        let mut payload = claims;
        payload.insert("iat".into(), json!(iat));
        payload.insert("jti".into(), json!(jti));
        if let Some(e) = exp {
            payload.insert("exp".into(), json!(e));
        }
        if let Some(iss) = &self.issuer {
            payload.insert("iss".into(), json!(iss));
        }
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": self.key_id});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(payload).to_string())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        let token = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        );
        Ok(json!({
            "token": token,
            "kid": self.key_id,
            "iat": iat,
            "jti": jti,
            "exp": exp,
            "public_key": URL_SAFE_NO_PAD.encode(self.key.public_key().as_ref()),
        }))
    }
}

#[async_trait]
impl Connector for SignerConnector {
    fn operations(&self) -> Vec<String> {
        vec!["sign".into()]
    }

    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        match effect.operation.as_str() {
            "sign" => self.sign(effect, Utc::now()),
            other => Err(ConnectorError::Permanent(format!(
                "connector `{}` (signer) has no operation `{other}`; it has: sign",
                self.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    /// A key made with `openssl genpkey -algorithm ed25519` (a test key, nothing else).
    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDd74/ZGYHnGK2fCpIuVGbp2nGHS6NKog9QPwQ5Cudpb\n-----END PRIVATE KEY-----\n";

    fn signer() -> SignerConnector {
        SignerConnector {
            name: "carte".into(),
            key: parse_private_key(PEM).expect("the test key"),
            key_id: "carte-2026".into(),
            issuer: Some("ISMAIL".into()),
        }
    }

    fn effect(request: Value) -> EffectRequest {
        EffectRequest {
            idempotency_key: "c1:carte#1".into(),
            case_id: "c1".into(),
            step: "carte".into(),
            operation: "sign".into(),
            request,
            attempt: 1,
            redelivered: false,
        }
    }

    fn part(token: &str, i: usize) -> Value {
        let p = token.split('.').nth(i).expect("a part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("json")
    }

    #[test]
    fn a_token_verifies_with_the_public_key_alone() {
        let s = signer();
        let now = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .to_utc();
        let a = s
            .sign(
                &effect(json!({"claims": {"sub": "CI261121-3F9A-PT", "role": "partenaire"}, "expires_at": "2027-11-21"})),
                now,
            )
            .unwrap();
        let token = a["token"].as_str().unwrap();
        assert_eq!(
            part(token, 0),
            json!({"alg": "EdDSA", "typ": "JWT", "kid": "carte-2026"})
        );
        let claims = part(token, 1);
        assert_eq!(claims["sub"], "CI261121-3F9A-PT");
        assert_eq!(claims["iat"], json!(now.timestamp()));
        assert_eq!(claims["exp"], json!(1_826_755_200));
        assert_eq!(claims["iss"], "ISMAIL");
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        // A verifier with only the public key of the answer.
        let public = URL_SAFE_NO_PAD
            .decode(a["public_key"].as_str().unwrap())
            .unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        UnparsedPublicKey::new(&ED25519, &public)
            .verify(input.as_bytes(), &sig)
            .expect("the signature verifies");
        // One changed character of the payload breaks it.
        let forged = input.replacen("eyJ", "eyK", 1);
        assert!(UnparsedPublicKey::new(&ED25519, &public)
            .verify(forged.as_bytes(), &sig)
            .is_err());
        // Two tokens of the same claims differ by their nonce.
        let b = s
            .sign(&effect(json!({"claims": {"sub": "x"}})), now)
            .unwrap();
        let c = s
            .sign(&effect(json!({"claims": {"sub": "x"}})), now)
            .unwrap();
        assert_ne!(b["jti"], c["jti"]);
        assert_eq!(b["exp"], Value::Null);
    }

    #[test]
    fn bad_requests_and_keys_are_refused() {
        let s = signer();
        let now = Utc::now();
        for (req, want) in [
            (json!({"claims": "x"}), "must be an object"),
            (json!({"claims": {"jti": "1"}}), "set by the signer"),
            (
                json!({"claims": {}, "expires_at": "bientôt"}),
                "neither a date",
            ),
        ] {
            match s.sign(&effect(req), now) {
                Err(ConnectorError::Permanent(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(parse_private_key("pas une clé").is_err());
        assert!(
            parse_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_err()
        );
    }
}
