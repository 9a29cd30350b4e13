//! OIDC bearer tokens: `Authorization: Bearer <JWT>` issued by an OpenID Connect provider
//! (Keycloak, Entra ID, Auth0, Dex...).
//!
//! The provider's public keys come from its JWKS (`jwks_url`, fetched over HTTP, or
//! `jwks_file`), loaded once by [`Oidc::new`]. A token is accepted when:
//! - its header names an asymmetric algorithm (RS*, PS*, ES256, ES384, EdDSA): `none` and the
//!   HMAC algorithms are refused, whatever the JWKS holds, and `jku`/`jwk`/`x5u` headers are
//!   ignored (keys only ever come from the configured JWKS);
//! - its `kid` names a key of the JWKS that allows that algorithm (a token without `kid` is
//!   checked against the only key of a one-key JWKS). An unknown `kid` with a `jwks_url` makes
//!   the JWKS be fetched again (the provider rotated its keys), at most once every 60 s;
//! - the signature holds (checked by `jsonwebtoken`);
//! - `exp` is present and not past, `nbf` (if present) is reached, both with
//!   `leeway_seconds`, against the time the caller passes (the server's clock, virtual in
//!   tests: this module never reads the clock for these checks);
//! - `iss` equals the configured issuer and `aud` holds the configured audience;
//! - `sub` is a non-empty string.
//!
//! The caller becomes `Principal { id: "oidc:<sub>", name, roles }`, the name from
//! `name_claim` (falling back to `email`, then `sub`), the roles from `roles_claim`: an array
//! of strings or one space/comma-separated string, at a dotted path for nested claims
//! (`realm_access.roles` in Keycloak). A claim whose own name holds dots
//! (`https://example.com/roles`, Auth0) is found too: the whole name is tried first.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::auth::Principal;

/// The `oidc` section of `dossier.yaml`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// Must be in the token's `aud`.
    pub audience: String,
    /// Where the provider publishes its keys (fetched over HTTP).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Or a file holding the JWKS.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The claim holding the roles; a dotted path reaches into objects
    /// (`realm_access.roles` for Keycloak realm roles).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// The claim holding the user's name (falls back to `email`, then `sub`).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// Tolerated clock difference with the provider, for `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_roles_claim() -> String {
    "roles".to_string()
}

fn default_name_claim() -> String {
    "preferred_username".to_string()
}

fn default_leeway() -> u64 {
    60
}

/// The shortest time between two fetches of the JWKS caused by unknown `kid`s, so that
/// tokens with made-up key ids cannot make the server hammer the provider.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS accepted (a real one is a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The algorithms accepted in a token's header.
const ACCEPTED: &str = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// Why a configuration or a token is refused. The messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the `oidc` section is not valid: {0}")]
    Config(String),
    #[error("cannot fetch the JWKS from {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("cannot read the JWKS file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the JWKS from {origin} is not usable: {message}")]
    BadJwks { origin: String, message: String },
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("the token's algorithm `{0}` is refused: only asymmetric signatures are accepted ({ACCEPTED})")]
    AlgorithmRefused(String),
    #[error("unknown signing key `{kid}`: the provider's JWKS has no such key{note}")]
    UnknownKey { kid: String, note: String },
    #[error("the token names no signing key (no `kid` in its header) and the provider's JWKS holds {count} keys: cannot choose one")]
    NoKid { count: usize },
    #[error(
        "the signing key {key} does not allow the token's algorithm `{alg}` (it allows {allowed})"
    )]
    AlgorithmMismatch {
        key: String,
        alg: String,
        allowed: String,
    },
    #[error("bad signature: the token was altered, or was not signed by the key {key}")]
    BadSignature { key: String },
    #[error("the signing key {key} is not a valid key: {message}")]
    BadKey { key: String, message: String },
    #[error("the token has no `{0}`")]
    MissingClaim(&'static str),
    #[error("the token's claim `{claim}` is not valid: {message}")]
    BadClaim { claim: String, message: String },
    #[error("the token expired at {} (it is now {}, leeway {leeway} s): get a new token", unix_time(*exp), unix_time(*now))]
    Expired { exp: i64, now: i64, leeway: u64 },
    #[error("the token is not valid before {} (it is now {}, leeway {leeway} s): check the clocks of the server and the provider", unix_time(*nbf), unix_time(*now))]
    NotYetValid { nbf: i64, now: i64, leeway: u64 },
    #[error("wrong issuer: the token was issued by `{found}`, this server trusts `{expected}`")]
    WrongIssuer { found: String, expected: String },
    #[error("wrong audience: the token is for {found}, this server is `{expected}`")]
    WrongAudience { found: String, expected: String },
}

/// `2025-06-15T12:00:00Z`, or the raw number when it is out of range.
fn unix_time(secs: i64) -> String {
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => format!("{secs} (unix time)"),
    }
}

/// One verification key of the JWKS.
struct Key {
    kid: Option<String>,
    /// The algorithms this key may verify: one if the JWK names its `alg`, else all those of
    /// its key type (and curve).
    algs: Vec<Algorithm>,
    decoding: DecodingKey,
}

impl Key {
    fn label(&self) -> String {
        match &self.kid {
            Some(kid) => format!("`{kid}`"),
            None => "(without `kid`)".to_string(),
        }
    }
}

enum Source {
    Url {
        url: String,
        client: reqwest::Client,
    },
    File(PathBuf),
}

/// A configured OIDC provider: its keys and the checks of its tokens. `Send + Sync`, shared
/// in an `Arc`.
pub struct Oidc {
    config: OidcConfig,
    source: Source,
    keys: RwLock<Arc<Vec<Arc<Key>>>>,
    /// When an unknown `kid` last made the JWKS be fetched again; held while fetching, so
    /// concurrent requests with the same new `kid` cause one fetch.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    refetch_interval: Duration,
}

impl fmt::Debug for Oidc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oidc")
            .field("config", &self.config)
            .field("keys", &self.current_keys().len())
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// Loads the keys once (error if neither or both of `jwks_url`/`jwks_file` are set, or
    /// loading fails, or the JWKS holds no usable signing key).
    pub async fn new(config: OidcConfig) -> Result<Oidc, OidcError> {
        if config.issuer.trim().is_empty() {
            return Err(OidcError::Config(
                "`issuer` is empty: give the provider's issuer URL, as in its tokens' `iss`".into(),
            ));
        }
        if config.audience.trim().is_empty() {
            return Err(OidcError::Config(
                "`audience` is empty: give the client id the tokens are issued for (their `aud`)"
                    .into(),
            ));
        }
        let source = match (&config.jwks_url, &config.jwks_file) {
            (Some(url), None) => {
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| OidcError::Fetch {
                        url: url.clone(),
                        message: error_chain(&e),
                    })?;
                Source::Url {
                    url: url.clone(),
                    client,
                }
            }
            (None, Some(path)) => Source::File(path.clone()),
            (None, None) => {
                return Err(OidcError::Config(
                    "neither `jwks_url` nor `jwks_file` is set: give one, where the provider's keys are".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(OidcError::Config(
                    "both `jwks_url` and `jwks_file` are set: keep only one".into(),
                ))
            }
        };
        let oidc = Oidc {
            config,
            source,
            keys: RwLock::new(Arc::new(Vec::new())),
            last_refetch: tokio::sync::Mutex::new(None),
            refetch_interval: REFETCH_INTERVAL,
        };
        let keys = oidc.load().await?;
        oidc.set_keys(keys);
        Ok(oidc)
    }

    /// The configuration this provider was built from.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Validates a token at time `now` (unix seconds) and returns its principal:
    /// `id = "oidc:<sub>"`, `name` from the name claim, `roles` from the roles claim.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Principal, OidcError> {
        let token = token.trim();
        let (alg, kid) = parse_header(token)?;
        let key = self.select_key(kid.as_deref(), alg).await?;
        let claims = check_signature(token, &key, alg)?;
        self.principal(&claims, now)
    }

    fn current_keys(&self) -> Arc<Vec<Arc<Key>>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_keys(&self, keys: Vec<Arc<Key>>) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    async fn load(&self) -> Result<Vec<Arc<Key>>, OidcError> {
        match &self.source {
            Source::Url { url, client } => {
                let body = fetch(client, url).await?;
                parse_jwks(&body, url)
            }
            Source::File(path) => {
                let body = tokio::fs::read(path)
                    .await
                    .map_err(|source| OidcError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                parse_jwks(&body, &path.display().to_string())
            }
        }
    }

    /// The key that verifies a token with this `kid` and algorithm; fetches the JWKS again
    /// for an unknown `kid` (rate-limited).
    async fn select_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Key>, OidcError> {
        let Some(kid) = kid else {
            let keys = self.current_keys();
            return match keys.as_slice() {
                [only] => allow(only, alg),
                _ => Err(OidcError::NoKid { count: keys.len() }),
            };
        };
        if let Some(found) = find_key(&self.current_keys(), kid, alg) {
            return found;
        }
        let Source::Url { .. } = &self.source else {
            let note = match &self.source {
                Source::File(path) => format!(
                    " (the keys come from the file {}: update it and restart the server if the provider rotated its keys)",
                    path.display()
                ),
                Source::Url { .. } => String::new(),
            };
            return Err(OidcError::UnknownKey {
                kid: kid.to_string(),
                note,
            });
        };
        let mut last = self.last_refetch.lock().await;
        // Another request may have fetched the new keys while this one waited.
        if let Some(found) = find_key(&self.current_keys(), kid, alg) {
            return found;
        }
        if let Some(at) = *last {
            if at.elapsed() < self.refetch_interval {
                return Err(OidcError::UnknownKey {
                    kid: kid.to_string(),
                    note: format!(
                        " (the JWKS was fetched again less than {} s ago)",
                        self.refetch_interval.as_secs()
                    ),
                });
            }
        }
        *last = Some(Instant::now());
        match self.load().await {
            Ok(keys) => {
                tracing::info!(
                    kid,
                    keys = keys.len(),
                    "OIDC: fetched the JWKS again for an unknown key id"
                );
                self.set_keys(keys);
                find_key(&self.current_keys(), kid, alg).unwrap_or_else(|| {
                    Err(OidcError::UnknownKey {
                        kid: kid.to_string(),
                        note: ", even after fetching it again".to_string(),
                    })
                })
            }
            Err(e) => {
                tracing::warn!(kid, error = %e, "OIDC: cannot fetch the JWKS again");
                Err(OidcError::UnknownKey {
                    kid: kid.to_string(),
                    note: format!(" (fetching it again failed: {e})"),
                })
            }
        }
    }

    /// The time, issuer and audience checks, then the principal.
    fn principal(&self, claims: &Map<String, Value>, now: i64) -> Result<Principal, OidcError> {
        let leeway = self.config.leeway_seconds;
        let slack = i64::try_from(leeway).unwrap_or(i64::MAX);
        let exp = numeric_date(claims, "exp")?.ok_or(OidcError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(slack) {
            return Err(OidcError::Expired { exp, now, leeway });
        }
        if let Some(nbf) = numeric_date(claims, "nbf")? {
            if now.saturating_add(slack) < nbf {
                return Err(OidcError::NotYetValid { nbf, now, leeway });
            }
        }

        match claims.get("iss") {
            None | Some(Value::Null) => return Err(OidcError::MissingClaim("iss")),
            Some(Value::String(iss)) if *iss == self.config.issuer => {}
            Some(other) => {
                return Err(OidcError::WrongIssuer {
                    found: value_text(other),
                    expected: self.config.issuer.clone(),
                })
            }
        }

        let audience = &self.config.audience;
        let aud_ok = match claims.get("aud") {
            None | Some(Value::Null) => return Err(OidcError::MissingClaim("aud")),
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
            Some(_) => false,
        };
        if !aud_ok {
            let found = match claims.get("aud") {
                Some(Value::Array(auds)) if auds.is_empty() => "no audience".to_string(),
                Some(Value::Array(auds)) => {
                    auds.iter().map(value_text).collect::<Vec<_>>().join(", ")
                }
                Some(other) => value_text(other),
                None => "no audience".to_string(),
            };
            return Err(OidcError::WrongAudience {
                found,
                expected: audience.clone(),
            });
        }

        let sub = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.trim().is_empty() => sub.clone(),
            _ => return Err(OidcError::MissingClaim("sub")),
        };
        let name = [self.config.name_claim.as_str(), "email"]
            .iter()
            .find_map(|claim| match lookup(claims, claim) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| sub.clone());
        let roles = roles(claims, &self.config.roles_claim)?;
        Ok(Principal {
            id: format!("oidc:{sub}"),
            name,
            roles,
        })
    }
}

/// The accepted algorithm and the `kid` of a token's header. Refuses `none`, HMAC and
/// anything else not in [`ACCEPTED`].
fn parse_header(token: &str) -> Result<(Algorithm, Option<String>), OidcError> {
    let parts: Vec<&str> = token.split('.').collect();
    match parts.len() {
        3 => {}
        5 => {
            return Err(OidcError::Malformed(
                "this is an encrypted token (JWE): only signed tokens (JWS) are accepted".into(),
            ))
        }
        n => {
            return Err(OidcError::Malformed(format!(
                "a JWT has 3 parts separated by `.`, this one has {n}"
            )))
        }
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(parts[0].trim_end_matches('='))
        .map_err(|_| OidcError::Malformed("the header is not base64url".into()))?;
    let header: Value = serde_json::from_slice(&bytes)
        .map_err(|_| OidcError::Malformed("the header is not JSON".into()))?;
    let Some(header) = header.as_object() else {
        return Err(OidcError::Malformed(
            "the header is not a JSON object".into(),
        ));
    };
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        Some(_) => {
            return Err(OidcError::Malformed(
                "the header's `alg` is not a string".into(),
            ))
        }
        None => return Err(OidcError::Malformed("the header has no `alg`".into())),
    };
    let Some(alg) = accepted_algorithm(alg) else {
        return Err(OidcError::AlgorithmRefused(alg.clone()));
    };
    if header.contains_key("crit") {
        return Err(OidcError::Malformed(
            "the header has critical extensions (`crit`), which this server does not support"
                .into(),
        ));
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => {
            return Err(OidcError::Malformed(
                "the header's `kid` is not a string".into(),
            ))
        }
    };
    Ok((alg, kid))
}

fn accepted_algorithm(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The key of the JWKS with this `kid` that allows `alg`; `None` when no key has this `kid`.
fn find_key(keys: &[Arc<Key>], kid: &str, alg: Algorithm) -> Option<Result<Arc<Key>, OidcError>> {
    let mut with_kid = keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
    let first = with_kid.next()?;
    if first.algs.contains(&alg) {
        return Some(Ok(first.clone()));
    }
    Some(
        with_kid
            .find(|k| k.algs.contains(&alg))
            .map(|k| Ok(k.clone()))
            .unwrap_or_else(|| allow(first, alg)),
    )
}

fn allow(key: &Arc<Key>, alg: Algorithm) -> Result<Arc<Key>, OidcError> {
    if key.algs.contains(&alg) {
        Ok(key.clone())
    } else {
        Err(OidcError::AlgorithmMismatch {
            key: key.label(),
            alg: format!("{alg:?}"),
            allowed: key
                .algs
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// Checks the signature with `jsonwebtoken` and returns the claims. The time, issuer and
/// audience checks are ours ([`Oidc::principal`]): `jsonwebtoken` would read the clock.
fn check_signature(
    token: &str,
    key: &Key,
    alg: Algorithm,
) -> Result<Map<String, Value>, OidcError> {
    // `alg` is among `key.algs`, all of the key's family: `decode` checks that too.
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature => OidcError::BadSignature { key: key.label() },
            ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::Crypto(_) => OidcError::BadKey {
                key: key.label(),
                message: e.to_string(),
            },
            ErrorKind::InvalidAlgorithm => OidcError::AlgorithmMismatch {
                key: key.label(),
                alg: format!("{alg:?}"),
                allowed: format!("{:?}", key.algs),
            },
            ErrorKind::Json(_) => {
                OidcError::Malformed("the payload is not a JSON object of claims".into())
            }
            ErrorKind::Base64(_) => OidcError::Malformed("a part is not base64url".into()),
            ErrorKind::Utf8(_) => OidcError::Malformed("the payload is not UTF-8".into()),
            _ => OidcError::Malformed(e.to_string()),
        }),
    }
}

/// A NumericDate claim (seconds since 1970; fractions are dropped).
fn numeric_date(claims: &Map<String, Value>, claim: &str) -> Result<Option<i64>, OidcError> {
    let bad = |message: &str| OidcError::BadClaim {
        claim: claim.to_string(),
        message: message.to_string(),
    };
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(secs) => Ok(Some(secs)),
            None => match n.as_f64() {
                // `as` saturates: no overflow on huge values.
                Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
                _ => Err(bad("not a number of seconds since 1970")),
            },
        },
        Some(_) => Err(bad("not a number of seconds since 1970")),
    }
}

/// A claim by name, or by dotted path into nested objects (`realm_access.roles`). The whole
/// name is tried first, for claims whose names hold dots (`https://example.com/roles`).
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The roles: an array of strings, or one string separated by spaces or commas. No claim
/// means no role.
fn roles(claims: &Map<String, Value>, claim: &str) -> Result<BTreeSet<String>, OidcError> {
    let bad = || OidcError::BadClaim {
        claim: claim.to_string(),
        message: "roles must be an array of strings or a space/comma-separated string".into(),
    };
    match lookup(claims, claim) {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::String(text)) => Ok(text
            .split([' ', ','])
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect()),
        Some(Value::Array(items)) => {
            let mut roles = BTreeSet::new();
            for item in items {
                let role = item.as_str().ok_or_else(bad)?.trim();
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            }
            Ok(roles)
        }
        Some(_) => Err(bad()),
    }
}

/// A claim's value for a message: strings as `text`, anything else as JSON (shortened).
fn value_text(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let short: String = text.chars().take(200).collect();
    format!("`{short}`")
}

/// The error and its causes, `a: b: c` (reqwest's own message is terse).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, OidcError> {
    let failed = |message: String| OidcError::Fetch {
        url: url.to_string(),
        message,
    };
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!("the server answered {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(failed(format!(
                "the answer is larger than {MAX_JWKS_BYTES} bytes: not a JWKS"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The signing keys of a JWKS. Entries this server cannot use (encryption keys, symmetric
/// keys, unsupported curves or algorithms) are skipped; none left is an error.
fn parse_jwks(body: &[u8], origin: &str) -> Result<Vec<Arc<Key>>, OidcError> {
    let bad = |message: String| OidcError::BadJwks {
        origin: origin.to_string(),
        message,
    };
    let doc: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON ({e})")))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err(bad(
            "no `keys` array: is this the provider's `jwks_uri` (see its /.well-known/openid-configuration)?"
                .into(),
        ));
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match key_from_jwk(entry) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(why) => {
                let name = match entry.get("kid").and_then(Value::as_str) {
                    Some(kid) => format!("`{kid}`"),
                    None => format!("#{}", i + 1),
                };
                skipped.push(format!("key {name}: {why}"));
            }
        }
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            "it holds no key".to_string()
        } else {
            format!("no usable signing key ({})", skipped.join("; "))
        };
        return Err(bad(why));
    }
    if !skipped.is_empty() {
        tracing::debug!(origin, skipped = %skipped.join("; "), "OIDC: JWKS entries skipped");
    }
    Ok(keys)
}

fn key_from_jwk(entry: &Value) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone())
        .map_err(|e| format!("not a JWK this server understands ({e})"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (`use: enc`)".into());
    }
    let of_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => return Err(format!("curve {other:?} is not supported for EC keys")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            ref other => return Err(format!("curve {other:?} is not supported for OKP keys")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key (`kty: oct`): never accepted".into())
        }
    };
    let algs = match jwk.common.key_algorithm {
        None => of_type,
        Some(declared) => match signing_algorithm(declared) {
            Some(alg) if of_type.contains(&alg) => vec![alg],
            Some(alg) => return Err(format!("its `alg` {alg:?} does not fit its key type")),
            None => {
                return Err(format!(
                    "its `alg` {declared:?} is not an asymmetric signature algorithm"
                ))
            }
        },
    };
    let decoding =
        DecodingKey::from_jwk(&jwk).map_err(|e| format!("invalid key material ({e})"))?;
    Ok(Key {
        kid: jwk.common.key_id,
        algs,
        decoding,
    })
}

fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{LazyLock, Mutex};

    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::KeyPair as _;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const NOW: i64 = 1_750_000_000;
    const ISSUER: &str = "http://127.0.0.1/realms/dossier";
    const AUDIENCE: &str = "dossier";

    struct RsaKey {
        pem: String,
        n: String,
        e: String,
    }

    impl RsaKey {
        fn generate() -> RsaKey {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
            RsaKey {
                pem: key
                    .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                    .unwrap()
                    .to_string(),
                n: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            }
        }

        fn jwk(&self, kid: &str) -> Value {
            json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": self.n, "e": self.e})
        }

        fn encoding(&self) -> EncodingKey {
            EncodingKey::from_rsa_pem(self.pem.as_bytes()).unwrap()
        }
    }

    /// Two RSA keys, generated once per test run (2048-bit generation takes a moment).
    static KEYS: LazyLock<[RsaKey; 2]> = LazyLock::new(|| [RsaKey::generate(), RsaKey::generate()]);

    fn jwks(keys: &[Value]) -> String {
        json!({ "keys": keys }).to_string()
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "u-42",
            "preferred_username": "alice",
            "email": "alice@example.com",
            "roles": ["operator", "recouvrement"],
            "iat": NOW - 10,
            "exp": NOW + 300,
        })
    }

    fn sign(key: &RsaKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &key.encoding()).unwrap()
    }

    fn config() -> OidcConfig {
        serde_yaml_ng::from_str(&format!(
            "issuer: {ISSUER}\naudience: {AUDIENCE}\njwks_url: http://127.0.0.1:1/unused\n"
        ))
        .unwrap()
    }

    /// A provider serving its JWKS over HTTP on 127.0.0.1, counting the requests.
    struct Provider {
        url: String,
        body: Arc<Mutex<String>>,
        hits: Arc<AtomicUsize>,
    }

    impl Provider {
        async fn start(body: String) -> Provider {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/certs", listener.local_addr().unwrap());
            let body = Arc::new(Mutex::new(body));
            let hits = Arc::new(AtomicUsize::new(0));
            let (served, counted) = (body.clone(), hits.clone());
            // Ends with the test's runtime.
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                }
            });
            Provider { url, body, hits }
        }

        fn serve(&self, body: String) {
            *self.body.lock().unwrap() = body;
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        fn config(&self) -> OidcConfig {
            OidcConfig {
                jwks_url: Some(self.url.clone()),
                ..config()
            }
        }
    }

    /// A provider with the first RSA key as `k1`, and its verifier.
    async fn provider() -> (Provider, Oidc) {
        let provider = Provider::start(jwks(&[KEYS[0].jwk("k1")])).await;
        let oidc = Oidc::new(provider.config()).await.unwrap();
        (provider, oidc)
    }

    fn roles(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|r| r.to_string()).collect()
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn oidc_is_shareable_and_verify_is_send() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        fn check(oidc: &Oidc) {
            send_sync(oidc);
            send(&oidc.verify("", 0));
        }
        let _ = check;
    }

    #[test]
    fn config_has_defaults_and_refuses_unknown_fields() {
        let c = config();
        assert_eq!(c.roles_claim, "roles");
        assert_eq!(c.name_claim, "preferred_username");
        assert_eq!(c.leeway_seconds, 60);
        assert_eq!(c.jwks_file, None);
        let err = serde_yaml_ng::from_str::<OidcConfig>(
            "issuer: x\naudience: y\njwks_url: http://h/\nrole_claim: groups\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("role_claim"), "{err}");
    }

    #[tokio::test]
    async fn config_needs_exactly_one_key_source() {
        let neither = OidcConfig {
            jwks_url: None,
            ..config()
        };
        let err = Oidc::new(neither).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("neither `jwks_url` nor `jwks_file`"),
            "{err}"
        );
        let both = OidcConfig {
            jwks_file: Some("jwks.json".into()),
            ..config()
        };
        let err = Oidc::new(both).await.unwrap_err();
        assert!(
            err.to_string().contains("both `jwks_url` and `jwks_file`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn loading_fails_clearly() {
        // Nobody listens on this port any more.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        drop(listener);
        let err = Oidc::new(OidcConfig {
            jwks_url: Some(url.clone()),
            ..config()
        })
        .await
        .unwrap_err();
        assert!(matches!(err, OidcError::Fetch { .. }), "{err}");
        assert!(err.to_string().contains(&url), "{err}");

        let provider = Provider::start("{\"issuer\": \"x\"}".into()).await;
        let err = Oidc::new(provider.config()).await.unwrap_err();
        assert!(err.to_string().contains("no `keys` array"), "{err}");

        provider.serve(jwks(&[json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"})]));
        let err = Oidc::new(provider.config()).await.unwrap_err();
        assert!(err.to_string().contains("no usable signing key"), "{err}");
        assert!(err.to_string().contains("`kty: oct`"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let err = Oidc::new(OidcConfig {
            jwks_url: None,
            jwks_file: Some(dir.path().join("missing.json")),
            ..config()
        })
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot read the JWKS file"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn valid_token_gives_the_principal() {
        let (_provider, oidc) = provider().await;
        let token = sign(&KEYS[0], Some("k1"), &claims());
        let p = oidc.verify(&token, NOW).await.unwrap();
        assert_eq!(p.id, "oidc:u-42");
        assert_eq!(p.name, "alice");
        assert_eq!(p.roles, roles(&["operator", "recouvrement"]));

        // `aud` may be an array; surrounding blanks are ignored.
        let mut c = claims();
        c["aud"] = json!(["account", AUDIENCE]);
        let p = oidc
            .verify(&format!(" {} ", sign(&KEYS[0], Some("k1"), &c)), NOW)
            .await
            .unwrap();
        assert_eq!(p.id, "oidc:u-42");
    }

    #[tokio::test]
    async fn name_falls_back_to_email_then_sub_and_roles_may_be_a_string() {
        let (_provider, oidc) = provider().await;
        let mut c = claims();
        c.as_object_mut().unwrap().remove("preferred_username");
        c["roles"] = json!("admin, auditor  comptabilite");
        let p = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap();
        assert_eq!(p.name, "alice@example.com");
        assert_eq!(p.roles, roles(&["admin", "auditor", "comptabilite"]));

        c.as_object_mut().unwrap().remove("email");
        c.as_object_mut().unwrap().remove("roles");
        let p = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap();
        assert_eq!(p.name, "u-42");
        assert!(p.roles.is_empty());

        c["roles"] = json!({"not": "a list"});
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("claim `roles`"), "{err}");
    }

    #[tokio::test]
    async fn dotted_roles_claim_reaches_nested_claims() {
        let provider = Provider::start(jwks(&[KEYS[0].jwk("k1")])).await;
        let oidc = Oidc::new(OidcConfig {
            roles_claim: "realm_access.roles".into(),
            name_claim: "name".into(),
            ..provider.config()
        })
        .await
        .unwrap();
        let mut c = claims();
        c["realm_access"] = json!({"roles": ["operator", "direction"]});
        c["name"] = json!("Alice Martin");
        let p = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap();
        assert_eq!(p.roles, roles(&["direction", "operator"]));
        assert_eq!(p.name, "Alice Martin");

        // A claim whose own name holds dots (Auth0's namespaced claims).
        let oidc = Oidc::new(OidcConfig {
            roles_claim: "https://dossier.example/roles".into(),
            ..provider.config()
        })
        .await
        .unwrap();
        let mut c = claims();
        c["https://dossier.example/roles"] = json!(["analyst"]);
        let p = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap();
        assert_eq!(p.roles, roles(&["analyst"]));
    }

    #[tokio::test]
    async fn expired_token_is_refused_after_the_leeway() {
        let (_provider, oidc) = provider().await;
        let mut c = claims();
        c["exp"] = json!(NOW - 30);
        // Within the 60 s leeway.
        oidc.verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap();
        c["exp"] = json!(NOW - 61);
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::Expired { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("the token expired at 2025-06-15T15:05:39Z"),
            "{text}"
        );
        // The time is the one passed in, not the clock: the same token was fine earlier.
        oidc.verify(&sign(&KEYS[0], Some("k1"), &c), NOW - 100)
            .await
            .unwrap();

        c.as_object_mut().unwrap().remove("exp");
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "the token has no `exp`");
    }

    #[tokio::test]
    async fn token_not_yet_valid_is_refused() {
        let (_provider, oidc) = provider().await;
        let mut c = claims();
        c["nbf"] = json!(NOW + 50);
        oidc.verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap();
        c["nbf"] = json!(NOW + 120);
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::NotYetValid { .. }), "{err}");
        assert!(err.to_string().contains("not valid before"), "{err}");
    }

    #[tokio::test]
    async fn wrong_issuer_is_refused() {
        let (_provider, oidc) = provider().await;
        let mut c = claims();
        c["iss"] = json!("http://127.0.0.1/realms/other");
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::WrongIssuer { .. }), "{err}");
        assert!(err.to_string().contains("realms/other"), "{err}");
    }

    #[tokio::test]
    async fn wrong_audience_is_refused() {
        let (_provider, oidc) = provider().await;
        let mut c = claims();
        c["aud"] = json!(["account", "billing"]);
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::WrongAudience { .. }), "{err}");
        assert!(err.to_string().starts_with("wrong audience"), "{err}");
        c.as_object_mut().unwrap().remove("aud");
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "the token has no `aud`");
    }

    #[tokio::test]
    async fn token_without_sub_is_refused() {
        let (_provider, oidc) = provider().await;
        let mut c = claims();
        c.as_object_mut().unwrap().remove("sub");
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k1"), &c), NOW)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "the token has no `sub`");
    }

    #[tokio::test]
    async fn tampered_payload_has_a_bad_signature() {
        let (_provider, oidc) = provider().await;
        let token = sign(&KEYS[0], Some("k1"), &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims();
        c["roles"] = json!(["admin"]);
        let forged = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        let err = oidc.verify(&forged, NOW).await.unwrap_err();
        assert!(matches!(err, OidcError::BadSignature { .. }), "{err}");
        assert!(err.to_string().starts_with("bad signature"), "{err}");

        // Signed by another key under `k1`'s name.
        let err = oidc
            .verify(&sign(&KEYS[1], Some("k1"), &claims()), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::BadSignature { .. }), "{err}");
    }

    #[tokio::test]
    async fn hs256_token_is_refused() {
        let (provider, oidc) = provider().await;
        // The classic confusion: the public key's bytes used as an HMAC secret.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let secret = URL_SAFE_NO_PAD.decode(&KEYS[0].n).unwrap();
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
        let err = oidc.verify(&token, NOW).await.unwrap_err();
        assert!(
            matches!(&err, OidcError::AlgorithmRefused(alg) if alg == "HS256"),
            "{err}"
        );
        assert!(
            err.to_string().contains("only asymmetric signatures"),
            "{err}"
        );
        // Refused before any key lookup: no fetch.
        assert_eq!(provider.hits(), 1);
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let (_provider, oidc) = provider().await;
        for alg in ["none", "None", "NONE"] {
            let token = format!(
                "{}.{}.",
                b64(&json!({"alg": alg, "typ": "JWT", "kid": "k1"})),
                b64(&claims())
            );
            let err = oidc.verify(&token, NOW).await.unwrap_err();
            assert!(
                matches!(&err, OidcError::AlgorithmRefused(a) if a == alg),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn algorithm_must_fit_the_key() {
        let (_provider, oidc) = provider().await;
        // `k1` is declared RS256 in the JWKS: the same key with RS512 is refused.
        let mut header = Header::new(Algorithm::RS512);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(&header, &claims(), &KEYS[0].encoding()).unwrap();
        let err = oidc.verify(&token, NOW).await.unwrap_err();
        assert!(matches!(err, OidcError::AlgorithmMismatch { .. }), "{err}");

        // An ES256 header on an RSA key: refused, not a panic.
        let token = format!(
            "{}.{}.AAAA",
            b64(&json!({"alg": "ES256", "kid": "k1"})),
            b64(&claims())
        );
        let err = oidc.verify(&token, NOW).await.unwrap_err();
        assert!(matches!(err, OidcError::AlgorithmMismatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn malformed_tokens_are_refused_without_panic() {
        let (_provider, oidc) = provider().await;
        let good = sign(&KEYS[0], Some("k1"), &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            "abc".to_string(),
            "a.b".to_string(),
            "a.b.c.d.e".to_string(),
            "!!!.x.y".to_string(),
            format!("{}.x.y", URL_SAFE_NO_PAD.encode("not json")),
            format!("{}.x.y", b64(&json!(["RS256"]))),
            format!("{}.x.y", b64(&json!({"kid": "k1"}))),
            format!("{}.x.y", b64(&json!({"alg": "RS256", "kid": 7}))),
            format!(
                "{}.x.y",
                b64(&json!({"alg": "RS256", "kid": "k1", "crit": ["exp"]}))
            ),
            format!("{}.{}.%%%", parts[0], parts[1]),
            format!("{}.{}.", parts[0], parts[1]),
        ];
        for token in &cases {
            let err = oidc.verify(token, NOW).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    OidcError::Malformed(_)
                        | OidcError::BadSignature { .. }
                        | OidcError::BadKey { .. }
                ),
                "{token}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_kid_refetches_once_and_accepts_the_rotated_key() {
        let (provider, oidc) = provider().await;
        assert_eq!(provider.hits(), 1);
        oidc.verify(&sign(&KEYS[0], Some("k1"), &claims()), NOW)
            .await
            .unwrap();
        assert_eq!(provider.hits(), 1, "a known key needs no fetch");

        // The provider rotates: `k1` out, `k2` in.
        provider.serve(jwks(&[KEYS[1].jwk("k2")]));
        let p = oidc
            .verify(&sign(&KEYS[1], Some("k2"), &claims()), NOW)
            .await
            .unwrap();
        assert_eq!(p.id, "oidc:u-42");
        assert_eq!(provider.hits(), 2, "exactly one fetch for the new key");
        oidc.verify(&sign(&KEYS[1], Some("k2"), &claims()), NOW)
            .await
            .unwrap();
        assert_eq!(provider.hits(), 2);

        // Made-up and retired key ids: no more fetches within 60 s.
        for kid in ["k3", "k4", "k1"] {
            let err = oidc
                .verify(&sign(&KEYS[0], Some(kid), &claims()), NOW)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, OidcError::UnknownKey { kid: k, .. } if k == kid),
                "{err}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("unknown signing key `{kid}`")),
                "{err}"
            );
        }
        assert_eq!(provider.hits(), 2);
    }

    #[tokio::test]
    async fn refetch_after_the_interval_and_still_unknown() {
        let (provider, mut oidc) = provider().await;
        oidc.refetch_interval = Duration::ZERO;
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k9"), &claims()), NOW)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("even after fetching it again"),
            "{err}"
        );
        assert_eq!(provider.hits(), 2);
        let _ = oidc
            .verify(&sign(&KEYS[0], Some("k9"), &claims()), NOW)
            .await;
        assert_eq!(provider.hits(), 3);

        // A failing refetch keeps the keys already known.
        provider.serve("not json".into());
        let err = oidc
            .verify(&sign(&KEYS[0], Some("k9"), &claims()), NOW)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("fetching it again failed"),
            "{err}"
        );
        oidc.verify(&sign(&KEYS[0], Some("k1"), &claims()), NOW)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn token_without_kid_needs_a_single_key() {
        let (provider, oidc) = provider().await;
        let p = oidc
            .verify(&sign(&KEYS[0], None, &claims()), NOW)
            .await
            .unwrap();
        assert_eq!(p.id, "oidc:u-42");

        provider.serve(jwks(&[KEYS[0].jwk("k1"), KEYS[1].jwk("k2")]));
        let oidc = Oidc::new(provider.config()).await.unwrap();
        let err = oidc
            .verify(&sign(&KEYS[0], None, &claims()), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::NoKid { count: 2 }), "{err}");
    }

    #[tokio::test]
    async fn jwks_file_with_rsa_ec_and_ed25519_keys() {
        let rng = ring::rand::SystemRandom::new();
        let ec_alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let ec_pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(ec_alg, &rng).unwrap();
        let ec =
            ring::signature::EcdsaKeyPair::from_pkcs8(ec_alg, ec_pkcs8.as_ref(), &rng).unwrap();
        let point = ec.public_key().as_ref(); // 0x04 || x || y
        let ed_pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = ring::signature::Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();

        let set = jwks(&[
            json!({"kty": "oct", "kid": "hmac", "k": URL_SAFE_NO_PAD.encode("secret")}),
            json!({"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "enc", "n": KEYS[1].n, "e": KEYS[1].e}),
            json!({"kty": "weird", "kid": "w"}),
            json!({"kty": "RSA", "kid": "rsa", "n": KEYS[0].n, "e": KEYS[0].e}),
            json!({"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
                   "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}),
            json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())}),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, set).unwrap();
        let oidc = Oidc::new(OidcConfig {
            jwks_url: None,
            jwks_file: Some(path),
            ..config()
        })
        .await
        .unwrap();
        assert_eq!(oidc.current_keys().len(), 3);

        let tokens = [
            (Algorithm::RS256, "rsa", KEYS[0].encoding()),
            // No `alg` in the JWK: any RSA signature algorithm.
            (Algorithm::PS384, "rsa", KEYS[0].encoding()),
            (
                Algorithm::ES256,
                "ec",
                EncodingKey::from_ec_der(ec_pkcs8.as_ref()),
            ),
            (
                Algorithm::EdDSA,
                "ed",
                EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
            ),
        ];
        for (alg, kid, key) in tokens {
            let mut header = Header::new(alg);
            header.kid = Some(kid.into());
            let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
            let p = oidc.verify(&token, NOW).await.unwrap();
            assert_eq!(p.id, "oidc:u-42", "{alg:?}");
        }

        // The skipped entries are unknown keys; a file source does not refetch.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("hmac".into());
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"secret")).unwrap();
        assert!(matches!(
            oidc.verify(&token, NOW).await,
            Err(OidcError::AlgorithmRefused(_))
        ));
        let err = oidc
            .verify(&sign(&KEYS[1], Some("enc"), &claims()), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains("restart the server"), "{err}");
    }
}
