//! The `sms` connector: text messages through an HTTP gateway, the Orange SMS API (Middle East &
//! Africa) or Twilio's Messages API, and the delivery receipts they post back.
//!
//! ```yaml
//! connectors:
//!   sms_orange:
//!     type: sms
//!     provider: orange
//!     client_id_env: ORANGE_CLIENT_ID
//!     client_secret_env: ORANGE_CLIENT_SECRET
//!     sender_address: "tel:+2250700000000"
//!     sender_name: "MonCommerce"
//!     receipts_url: https://dossier.exemple.ci/receipts/sms_orange
//!     receipt_token_env: ORANGE_RECEIPT_TOKEN
//!   sms_twilio:
//!     type: sms
//!     provider: twilio
//!     account_sid: AC0123456789abcdef0123456789abcdef
//!     auth_token_env: TWILIO_AUTH_TOKEN
//!     from: "+15005550006"
//!     receipts_url: https://dossier.exemple.ci/receipts/sms_twilio
//! ```
//!
//! One operation, `send`, with `to` (E.164: `+2250701020304`) and `body`. The result is
//! `{provider, message_id, to, segments, encoding, status}`; `segments` is the number of SMS the
//! body costs (GSM-7: 160 characters, 153 per part when concatenated; otherwise UCS-2: 70, 67 per
//! part).
//!
//! **Orange**: a bearer token from `token_url` (OAuth2 client credentials, HTTP basic auth), kept
//! until a minute before it expires and shared by concurrent sends (one token request at a
//! time); a 401 on a send drops the token and tries once more with a new one. The send is
//! `POST {api_url}/smsmessaging/v1/outbound/{sender}/requests` with the effect's idempotency key
//! as `clientCorrelator`. **Twilio**: `POST {api_url}/2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded, HTTP basic auth, the idempotency key in `I-Twilio-Idempotency-Token`.
//!
//! Failures: **transient** when the gateway (or the token endpoint) cannot be reached, does not
//! answer within `timeout_seconds`, cuts the connection, or answers 408, 425, 429 or 5xx;
//! **permanent** for a wrong number or an empty body (refused before any request), any other 4xx
//! (refused credentials included, and a second 401 in a row from Orange), and an answer that is
//! not the JSON the gateway documents.
//!
//! Delivery receipts ([`Connector::receipt`]) are read when `receipts_url` is set: Twilio's are
//! checked with `X-Twilio-Signature` (HMAC-SHA1 with the auth token), Orange's with the shared
//! token (`receipt_token_env`) that the connector appends as `token=` to the `notifyURL` it asks
//! Orange to call, since Orange does not sign its callbacks. Statuses are normalized to
//! `queued`, `sent`, `delivered`, `undeliverable`, `failed` or `unknown`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AccessToken, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken,
    RequestTokenError, Scope, StandardRevocableToken, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use crate::support::{self, BuildContext, BuildError, HttpAnswer};
use crate::{Connector, ConnectorError, EffectRequest, IncomingReceipt, Receipt, ReceiptError};

const ORANGE_API: &str = "https://api.orange.com";
const ORANGE_TOKEN: &str = "https://api.orange.com/oauth/v3/token";
const TWILIO_API: &str = "https://api.twilio.com";
/// A token is used until this long before the expiry its endpoint announced.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Orange announces 3,600 s; used when a token answer says nothing.
const DEFAULT_TOKEN_LIFETIME: u64 = 3600;
/// A token is never kept longer than a day, whatever its endpoint announces.
const MAX_TOKEN_LIFETIME: u64 = 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    provider: String,
    timeout_seconds: Option<u64>,
    api_url: Option<String>,
    receipts_url: Option<String>,
    // Orange
    client_id_env: Option<String>,
    client_secret_env: Option<String>,
    sender_address: Option<String>,
    sender_name: Option<String>,
    token_url: Option<String>,
    receipt_token_env: Option<String>,
    // Twilio
    account_sid: Option<String>,
    auth_token_env: Option<String>,
    from: Option<String>,
    messaging_service_sid: Option<String>,
}

const ORANGE_ONLY: &[&str] = &[
    "client_id_env",
    "client_secret_env",
    "sender_address",
    "sender_name",
    "token_url",
    "receipt_token_env",
];
const TWILIO_ONLY: &[&str] = &[
    "account_sid",
    "auth_token_env",
    "from",
    "messaging_service_sid",
];

impl Settings {
    fn is_set(&self, field: &str) -> bool {
        match field {
            "client_id_env" => self.client_id_env.is_some(),
            "client_secret_env" => self.client_secret_env.is_some(),
            "sender_address" => self.sender_address.is_some(),
            "sender_name" => self.sender_name.is_some(),
            "token_url" => self.token_url.is_some(),
            "receipt_token_env" => self.receipt_token_env.is_some(),
            "account_sid" => self.account_sid.is_some(),
            "auth_token_env" => self.auth_token_env.is_some(),
            "from" => self.from.is_some(),
            "messaging_service_sid" => self.messaging_service_sid.is_some(),
            _ => false,
        }
    }
}

/// Builds an `sms` connector from its settings (see the module documentation).
pub fn build(
    name: &str,
    settings: serde_yaml_ng::Value,
    ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, BuildError> {
    let s: Settings = crate::config::settings(settings)?;
    let timeout = support::timeout(
        s.timeout_seconds,
        "give the number of seconds to wait for the gateway, for example 30",
    )?;
    let receipts_url = s
        .receipts_url
        .as_deref()
        .map(|u| support::parse_url("receipts_url", u))
        .transpose()?;
    let (provider, others) = match s.provider.as_str() {
        "orange" => (
            Provider::Orange(Box::new(orange(&s, receipts_url.is_some(), ctx)?)),
            TWILIO_ONLY,
        ),
        "twilio" => (Provider::Twilio(twilio(&s, ctx)?), ORANGE_ONLY),
        other => {
            let mut hint = "write `provider: orange` or `provider: twilio`".to_string();
            if let Some(g) = dossier_model::did_you_mean(other, ["orange", "twilio"]) {
                hint = format!("did you mean `{g}`? {hint}");
            }
            return Err(BuildError::new(
                "provider",
                format!("unknown SMS provider `{other}`"),
                hint,
            ));
        }
    };
    if let Some(f) = others.iter().find(|f| s.is_set(f)) {
        return Err(BuildError::new(
            f,
            format!("`{f}` is not a setting of the `{}` provider", s.provider),
            "remove it, or change `provider`",
        ));
    }
    let http = support::http_client_without_redirects(timeout)?;
    Ok(Arc::new(SmsConnector {
        name: name.to_string(),
        provider,
        http,
        receipts_url,
    }))
}

fn required<'a>(field: &str, value: &'a Option<String>, hint: &str) -> Result<&'a str, BuildError> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(BuildError::new(
            field,
            format!("`{field}` is missing"),
            hint.to_string(),
        )),
    }
}

fn base_url(field: &str, value: Option<&str>, default: &str) -> Result<String, BuildError> {
    let u = support::parse_url(field, value.unwrap_or(default))?;
    Ok(u.as_str().trim_end_matches('/').to_string())
}

fn orange(s: &Settings, receipts: bool, ctx: &BuildContext) -> Result<Orange, BuildError> {
    let id_var = required(
        "client_id_env",
        &s.client_id_env,
        "name the environment variable holding the Orange application's client id",
    )?;
    let secret_var = required(
        "client_secret_env",
        &s.client_secret_env,
        "name the environment variable holding the Orange application's client secret",
    )?;
    let sender = required(
        "sender_address",
        &s.sender_address,
        "write the number the SMS come from, as tel:+2250700000000",
    )?;
    if !sender
        .strip_prefix("tel:+")
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(BuildError::new(
            "sender_address",
            format!("`{sender}` is not a sender address"),
            "write it as tel: then the number with its country code: tel:+2250700000000",
        ));
    }
    let client_id = ctx.secret("client_id_env", id_var)?;
    let client_secret = ctx.secret("client_secret_env", secret_var)?;
    let receipt_token = match (receipts, s.receipt_token_env.as_deref()) {
        (true, Some(var)) => Some(ctx.secret("receipt_token_env", var)?),
        (true, None) => {
            return Err(BuildError::new(
                "receipt_token_env",
                "`receipts_url` is set but `receipt_token_env` is missing",
                "Orange does not sign its receipts: name an environment variable holding a long random token, which Dossier adds to the receipt URL and checks",
            ))
        }
        (false, Some(_)) => {
            return Err(BuildError::new(
                "receipt_token_env",
                "`receipt_token_env` is set but `receipts_url` is not",
                "add `receipts_url` (Dossier's public receipt URL for this connector), or remove `receipt_token_env`",
            ))
        }
        (false, None) => None,
    };
    let token_url_text = s.token_url.as_deref().unwrap_or(ORANGE_TOKEN);
    support::parse_url("token_url", token_url_text)?;
    let token_url = TokenUrl::new(token_url_text.to_string()).map_err(|e| {
        BuildError::new(
            "token_url",
            format!("`{token_url_text}` is not a URL: {e}"),
            "write it as https://host/path",
        )
    })?;
    let oauth = oauth2::Client::<
        BasicErrorResponse,
        OrangeToken,
        BasicTokenIntrospectionResponse,
        StandardRevocableToken,
        BasicRevocationErrorResponse,
    >::new(ClientId::new(client_id))
    .set_client_secret(ClientSecret::new(client_secret))
    .set_token_uri(token_url);
    Ok(Orange {
        oauth,
        api_url: base_url("api_url", s.api_url.as_deref(), ORANGE_API)?,
        sender_address: sender.to_string(),
        sender_name: s.sender_name.clone().filter(|n| !n.trim().is_empty()),
        receipt_token,
        token: tokio::sync::Mutex::new(None),
    })
}

fn twilio(s: &Settings, ctx: &BuildContext) -> Result<Twilio, BuildError> {
    let sid = required(
        "account_sid",
        &s.account_sid,
        "copy the Account SID (AC…) from the Twilio console",
    )?;
    if !(sid.starts_with("AC") && sid.chars().all(|c| c.is_ascii_alphanumeric())) {
        return Err(BuildError::new(
            "account_sid",
            format!("`{sid}` is not a Twilio Account SID"),
            "an Account SID starts with AC followed by 32 hexadecimal characters",
        ));
    }
    let token_var = required(
        "auth_token_env",
        &s.auth_token_env,
        "name the environment variable holding the Twilio auth token",
    )?;
    let sender = match (
        s.from.as_deref().filter(|f| !f.trim().is_empty()),
        s.messaging_service_sid
            .as_deref()
            .filter(|f| !f.trim().is_empty()),
    ) {
        (Some(f), None) => TwilioSender::From(f.to_string()),
        (None, Some(m)) => TwilioSender::Service(m.to_string()),
        (Some(_), Some(_)) => {
            return Err(BuildError::new(
                "messaging_service_sid",
                "both `from` and `messaging_service_sid` are set",
                "keep one: the sending number (`from`) or the Messaging Service (`messaging_service_sid`, MG…)",
            ))
        }
        (None, None) => {
            return Err(BuildError::new(
                "",
                "neither `from` nor `messaging_service_sid` is set",
                "add `from: \"+1…\"` (a Twilio number or sender id) or `messaging_service_sid: MG…`",
            ))
        }
    };
    let auth_token = ctx.secret("auth_token_env", token_var)?;
    Ok(Twilio {
        api_url: base_url("api_url", s.api_url.as_deref(), TWILIO_API)?,
        account_sid: sid.to_string(),
        auth_token,
        sender,
    })
}

type OrangeOAuth = oauth2::Client<
    BasicErrorResponse,
    OrangeToken,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Orange's token answer: like RFC 6749's, but `expires_in` comes as a string (`"3600"`).
#[derive(Debug, Serialize, Deserialize)]
struct OrangeToken {
    access_token: AccessToken,
    #[serde(deserialize_with = "oauth2::helpers::deserialize_untagged_enum_case_insensitive")]
    token_type: BasicTokenType,
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<u64>,
}

fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(serde_json::Number),
    }
    match Option::<Either>::deserialize(d)? {
        None => Ok(None),
        Some(Either::Text(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{t}` is not a number of seconds"))),
        Some(Either::Number(n)) => n
            .to_string()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{n}` is not a number of seconds"))),
    }
}

impl TokenResponse for OrangeToken {
    type TokenType = BasicTokenType;
    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        None
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        None
    }
}

struct SmsConnector {
    name: String,
    provider: Provider,
    http: reqwest::Client,
    receipts_url: Option<Url>,
}

enum Provider {
    Orange(Box<Orange>),
    Twilio(Twilio),
}

struct Orange {
    oauth: OrangeOAuth,
    api_url: String,
    sender_address: String,
    sender_name: Option<String>,
    receipt_token: Option<String>,
    /// Held while a token is fetched, so that concurrent sends wait for that one request.
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    value: String,
    fresh_until: Instant,
}

struct Twilio {
    api_url: String,
    account_sid: String,
    auth_token: String,
    sender: TwilioSender,
}

enum TwilioSender {
    From(String),
    Service(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendArgs {
    to: String,
    body: String,
}

#[async_trait]
impl Connector for SmsConnector {
    fn operations(&self) -> Vec<String> {
        vec!["send".to_string()]
    }

    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        if effect.operation != "send" {
            return Err(ConnectorError::Permanent(format!(
                "{}: no operation `{}` (the sms connector has: send)",
                self.name, effect.operation
            )));
        }
        let args: SendArgs = support::args("sms", effect)?;
        check_number(&args.to)?;
        if args.body.trim().is_empty() {
            return Err(ConnectorError::Permanent(
                "sms.send: `body` is empty: give the text of the message".to_string(),
            ));
        }
        let parts = segments(&args.body);
        let (provider, message_id, status) = match &self.provider {
            Provider::Orange(o) => self.send_orange(o, effect, &args).await?,
            Provider::Twilio(t) => self.send_twilio(t, effect, &args).await?,
        };
        Ok(json!({
            "provider": provider,
            "message_id": message_id,
            "to": args.to,
            "segments": parts.count,
            "encoding": parts.encoding.name(),
            "status": status,
        }))
    }

    fn receipt(&self, incoming: &IncomingReceipt) -> Option<Result<Receipt, ReceiptError>> {
        self.receipts_url.as_ref()?;
        Some(match &self.provider {
            Provider::Orange(o) => o.receipt(incoming),
            Provider::Twilio(t) => t.receipt(incoming),
        })
    }
}

/// Refuses what is not an E.164 number (`+`, country code, at most 15 digits).
fn check_number(to: &str) -> Result<(), ConnectorError> {
    let ok = to.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()) && !d.starts_with('0')
    });
    if ok {
        Ok(())
    } else {
        Err(ConnectorError::Permanent(format!(
            "sms.send: `to` is `{to}`, which is not a phone number in international form: \
             write + then the country code and the number, without spaces (+2250701020304)"
        )))
    }
}

impl SmsConnector {
    async fn send_orange(
        &self,
        o: &Orange,
        effect: &EffectRequest,
        args: &SendArgs,
    ) -> Result<(&'static str, Value, String), ConnectorError> {
        let sender: String =
            url::form_urlencoded::byte_serialize(o.sender_address.as_bytes()).collect();
        let url = format!("{}/smsmessaging/v1/outbound/{sender}/requests", o.api_url);
        let mut request = json!({
            "address": format!("tel:{}", args.to),
            "senderAddress": o.sender_address,
            "outboundSMSTextMessage": {"message": args.body},
            "clientCorrelator": effect.idempotency_key,
        });
        if let Some(n) = &o.sender_name {
            request["senderName"] = json!(n);
        }
        if let (Some(receipts), Some(token)) = (&self.receipts_url, &o.receipt_token) {
            let mut notify = receipts.clone();
            notify.query_pairs_mut().append_pair("token", token);
            request["receiptRequest"] = json!({
                "notifyURL": notify.as_str(),
                "callbackData": format!("{}|{}", effect.case_id, effect.idempotency_key),
            });
        }
        let body = json!({ "outboundSMSMessageRequest": request });

        let mut token = o.token(&self.http).await?;
        let mut refreshed = false;
        loop {
            let request = self
                .http
                .post(&url)
                .bearer_auth(&token)
                .header("Accept", "application/json")
                .json(&body);
            let HttpAnswer { status, text, .. } = support::send("orange", request).await?;
            if status == 401 {
                o.forget(&token).await;
                if refreshed {
                    return Err(ConnectorError::Permanent(format!(
                        "orange: the gateway refused a new token too (HTTP 401: {}): check the \
                         application's subscription to the SMS API",
                        server_message(&text)
                    )));
                }
                refreshed = true;
                token = o.token(&self.http).await?;
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(http_error("orange", status, &text));
            }
            let answer = support::json_body("orange", &text)?;
            let message_id = answer
                .pointer("/outboundSMSMessageRequest/resourceURL")
                .and_then(Value::as_str)
                .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
                .filter(|id| !id.is_empty())
                .map(|id| json!(id))
                .unwrap_or(Value::Null);
            return Ok(("orange", message_id, "queued".to_string()));
        }
    }

    async fn send_twilio(
        &self,
        t: &Twilio,
        effect: &EffectRequest,
        args: &SendArgs,
    ) -> Result<(&'static str, Value, String), ConnectorError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            t.api_url, t.account_sid
        );
        let mut form: Vec<(&str, String)> = vec![("To", args.to.clone())];
        match &t.sender {
            TwilioSender::From(f) => form.push(("From", f.clone())),
            TwilioSender::Service(m) => form.push(("MessagingServiceSid", m.clone())),
        }
        form.push(("Body", args.body.clone()));
        if let Some(receipts) = &self.receipts_url {
            let mut callback = receipts.clone();
            callback
                .query_pairs_mut()
                .append_pair("case", &effect.case_id)
                .append_pair("key", &effect.idempotency_key);
            form.push(("StatusCallback", callback.to_string()));
        }
        let request = self
            .http
            .post(&url)
            .basic_auth(&t.account_sid, Some(&t.auth_token))
            .header("I-Twilio-Idempotency-Token", &effect.idempotency_key)
            .header("Accept", "application/json")
            .form(&form);
        let HttpAnswer { status, text, .. } = support::send("twilio", request).await?;
        if !(200..300).contains(&status) {
            return Err(http_error("twilio", status, &text));
        }
        let answer = support::json_body("twilio", &text)?;
        let message_id = answer
            .get("sid")
            .and_then(Value::as_str)
            .map(|s| json!(s))
            .unwrap_or(Value::Null);
        let raw = answer.get("status").and_then(Value::as_str).unwrap_or("");
        Ok(("twilio", message_id, twilio_status(raw).to_string()))
    }
}

impl Orange {
    /// The cached token, or a new one (the lock makes concurrent callers share one request).
    async fn token(&self, http: &reqwest::Client) -> Result<String, ConnectorError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if Instant::now() < t.fresh_until {
                return Ok(t.value.clone());
            }
        }
        let started = Instant::now();
        let answer = self
            .oauth
            .exchange_client_credentials()
            .request_async(&TokenHttp(http))
            .await
            .map_err(token_error)?;
        let lifetime = Duration::from_secs(
            answer
                .expires_in
                .unwrap_or(DEFAULT_TOKEN_LIFETIME)
                .min(MAX_TOKEN_LIFETIME),
        );
        let value = answer.access_token.secret().clone();
        *cached = Some(CachedToken {
            value: value.clone(),
            // `Instant + Duration` panics on overflow: the lifetime is the server's to choose.
            fresh_until: started
                .checked_add(lifetime.saturating_sub(TOKEN_MARGIN))
                .unwrap_or(started),
        });
        Ok(value)
    }

    /// Drops `token` if it is still the cached one (a concurrent send may have renewed it).
    async fn forget(&self, token: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == token) {
            *cached = None;
        }
    }

    fn receipt(&self, incoming: &IncomingReceipt) -> Result<Receipt, ReceiptError> {
        let expected = self.receipt_token.as_deref().ok_or_else(|| {
            ReceiptError::Unauthorized("this connector has no receipt token".to_string())
        })?;
        let url = Url::parse(incoming.url)
            .map_err(|e| ReceiptError::Unauthorized(format!("unreadable receipt URL: {e}")))?;
        let query = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let given = query("token").ok_or_else(|| {
            ReceiptError::Unauthorized("the receipt URL carries no `token`".to_string())
        })?;
        if !same_secret(&given, expected) {
            return Err(ReceiptError::Unauthorized(
                "the receipt URL's `token` is wrong".to_string(),
            ));
        }
        let body: Value = serde_json::from_slice(incoming.body).map_err(|e| {
            ReceiptError::Malformed(format!("an Orange receipt is JSON, and this is not: {e}"))
        })?;
        let note = body.get("deliveryInfoNotification").ok_or_else(|| {
            ReceiptError::Malformed("no `deliveryInfoNotification` in the receipt".to_string())
        })?;
        let raw = note
            .pointer("/deliveryInfo/deliveryStatus")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ReceiptError::Malformed(
                    "no `deliveryInfo.deliveryStatus` in the receipt".to_string(),
                )
            })?;
        let (case_id, effect_key) = match note.get("callbackData").and_then(Value::as_str) {
            Some(data) => data
                .split_once('|')
                .map(|(c, k)| (c.to_string(), k.to_string()))
                .ok_or_else(|| {
                    ReceiptError::Malformed(format!(
                        "`callbackData` is `{data}`, not `case|key`"
                    ))
                })?,
            None => match (query("case"), query("key")) {
                (Some(c), Some(k)) => (c, k),
                _ => {
                    return Err(ReceiptError::Malformed(
                        "the receipt names no case: no `callbackData` and no `case` and `key` in its URL"
                            .to_string(),
                    ))
                }
            },
        };
        if case_id.is_empty() || effect_key.is_empty() {
            return Err(ReceiptError::Malformed(
                "the receipt's case or effect key is empty".to_string(),
            ));
        }
        // Orange's notification does not always carry the message's id.
        let message_id = note
            .get("resourceURL")
            .and_then(Value::as_str)
            .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
            .or_else(|| {
                note.pointer("/deliveryInfo/messageId")
                    .and_then(Value::as_str)
            })
            .unwrap_or("")
            .to_string();
        let mut detail = json!({"provider": "orange", "status": raw});
        if let Some(a) = note
            .pointer("/deliveryInfo/address")
            .and_then(Value::as_str)
        {
            detail["address"] = json!(a);
        }
        Ok(Receipt {
            case_id,
            effect_key,
            message_id,
            status: orange_status(raw).to_string(),
            detail,
        })
    }
}

impl Twilio {
    fn receipt(&self, incoming: &IncomingReceipt) -> Result<Receipt, ReceiptError> {
        let signature = header(incoming, "x-twilio-signature").ok_or_else(|| {
            ReceiptError::Unauthorized("no X-Twilio-Signature header".to_string())
        })?;
        let params: Vec<(String, String)> = url::form_urlencoded::parse(incoming.body)
            .into_owned()
            .collect();
        if !twilio_signature_valid(&self.auth_token, incoming.url, &params, signature) {
            return Err(ReceiptError::Unauthorized(
                "the X-Twilio-Signature does not match this URL and body".to_string(),
            ));
        }
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let url = Url::parse(incoming.url)
            .map_err(|e| ReceiptError::Malformed(format!("unreadable receipt URL: {e}")))?;
        let query = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .filter(|v| !v.is_empty())
        };
        let (Some(case_id), Some(effect_key)) = (query("case"), query("key")) else {
            return Err(ReceiptError::Malformed(
                "the StatusCallback URL carries no `case` and `key`".to_string(),
            ));
        };
        let message_id = param("MessageSid")
            .or_else(|| param("SmsSid"))
            .ok_or_else(|| ReceiptError::Malformed("no MessageSid in the receipt".to_string()))?;
        let raw = param("MessageStatus")
            .or_else(|| param("SmsStatus"))
            .ok_or_else(|| {
                ReceiptError::Malformed("no MessageStatus in the receipt".to_string())
            })?;
        let mut detail = json!({"provider": "twilio", "status": raw});
        if let Some(code) = param("ErrorCode") {
            detail["error_code"] = json!(code);
        }
        if let Some(to) = param("To") {
            detail["to"] = json!(to);
        }
        Ok(Receipt {
            case_id,
            effect_key,
            message_id: message_id.to_string(),
            status: twilio_status(raw).to_string(),
            detail,
        })
    }
}

fn header<'a>(incoming: &'a IncomingReceipt, name: &str) -> Option<&'a str> {
    incoming
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Twilio's request signature: base64 of HMAC-SHA1 (key: the auth token) over the full URL
/// followed by each POST parameter's name and value, sorted by name. Twilio's own libraries
/// also accept the URL with its default port written out or left off; so does this.
fn twilio_signature_valid(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    url_variants(url).iter().any(|candidate| {
        let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()) else {
            return false;
        };
        mac.update(candidate.as_bytes());
        for (k, v) in &sorted {
            mac.update(k.as_bytes());
            mac.update(v.as_bytes());
        }
        // `verify_slice` compares in constant time.
        mac.verify_slice(&given).is_ok()
    })
}

/// Computes a Twilio signature (what Twilio sends), for tests and tools.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().collect();
    sorted.sort();
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The URL as received, and with its scheme's default port left off and written out.
fn url_variants(raw: &str) -> Vec<String> {
    let mut out = vec![raw.to_string()];
    // `Url` forgets a default port (`port()` is `None` for both `https://h/` and `https://h:443/`).
    if let Ok(u) = Url::parse(raw) {
        if let (None, Some(default)) = (u.port(), u.port_or_known_default()) {
            let head = &u[..url::Position::AfterHost];
            let tail = &u[url::Position::AfterPort..];
            for v in [format!("{head}{tail}"), format!("{head}:{default}{tail}")] {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Compares two secrets in constant time (through HMAC tags, so lengths do not leak either).
fn same_secret(given: &str, expected: &str) -> bool {
    let key = b"dossier sms receipt token";
    let Ok(mut reference) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    reference.update(expected.as_bytes());
    let tag = reference.finalize().into_bytes();
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(given.as_bytes());
    mac.verify_slice(&tag).is_ok()
}

fn twilio_status(raw: &str) -> &'static str {
    match raw.to_ascii_lowercase().as_str() {
        "delivered" | "read" => "delivered",
        "undelivered" => "undeliverable",
        "failed" | "canceled" => "failed",
        "sent" => "sent",
        "queued" | "accepted" | "scheduled" | "sending" => "queued",
        _ => "unknown",
    }
}

fn orange_status(raw: &str) -> &'static str {
    match raw {
        "DeliveredToTerminal" => "delivered",
        "DeliveredToNetwork" => "sent",
        "DeliveryImpossible" => "undeliverable",
        "MessageWaiting" => "queued",
        _ => "unknown",
    }
}

/// The token endpoint's HTTP exchange for `oauth2`: the connector's client (no redirects, its
/// timeout), and failures already classified (a 5xx or 429 is transient, which `oauth2` alone
/// could not tell from a refusal).
struct TokenHttp<'a>(&'a reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for TokenHttp<'_> {
    type Error = ConnectorError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<oauth2::HttpResponse, ConnectorError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(token_http(self.0, request))
    }
}

async fn token_http(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, ConnectorError> {
    let request: reqwest::Request = request.try_into().map_err(|e: reqwest::Error| {
        ConnectorError::Permanent(format!("orange token: cannot build the request: {e}"))
    })?;
    let resp = http
        .execute(request)
        .await
        .map_err(|e| support::transport_error("orange token", &e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .map_err(|e| support::transport_error("orange token", &e))?;
    if support::status_is_transient(status.as_u16()) {
        return Err(support::status_error(
            "orange token",
            status.as_u16(),
            &String::from_utf8_lossy(&body),
        ));
    }
    let mut answer = oauth2::http::Response::builder().status(status);
    for (k, v) in headers.iter() {
        answer = answer.header(k, v);
    }
    answer
        .body(body.to_vec())
        .map_err(|e| ConnectorError::Permanent(format!("orange token: unreadable answer: {e}")))
}

fn token_error(e: RequestTokenError<ConnectorError, BasicErrorResponse>) -> ConnectorError {
    match e {
        RequestTokenError::Request(e) => e,
        RequestTokenError::ServerResponse(r) => ConnectorError::Permanent(format!(
            "orange token: the credentials were refused ({r}): check the client id and secret"
        )),
        RequestTokenError::Parse(e, body) => ConnectorError::Permanent(format!(
            "orange token: malformed answer ({e}): {}",
            support::excerpt(&String::from_utf8_lossy(&body))
        )),
        RequestTokenError::Other(m) => {
            ConnectorError::Permanent(format!("orange token: unexpected answer: {m}"))
        }
    }
}

/// An unexpected status, with the gateway's own message when it gave one.
fn http_error(service: &str, status: u16, body: &str) -> ConnectorError {
    support::status_error_saying(service, status, &server_message(body))
}

/// The readable part of a gateway's error answer: Twilio's `code` and `message`, Orange's
/// `requestError` text with its variables, an OAuth `error_description`; else the body.
fn server_message(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return support::excerpt(body);
    };
    if let Some(e) = v.get("requestError").and_then(|r| {
        r.get("serviceException")
            .or_else(|| r.get("policyException"))
    }) {
        let id = e.get("messageId").and_then(Value::as_str).unwrap_or("");
        let mut text = e
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(vars) = e.get("variables").and_then(Value::as_array) {
            for (i, var) in vars.iter().enumerate() {
                let shown = var
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| var.to_string());
                text = text.replace(&format!("%{}", i + 1), &shown);
            }
        }
        return support::excerpt(format!("{id} {text}").trim());
    }
    let message = v
        .get("message")
        .or_else(|| v.get("error_description"))
        .or_else(|| v.get("description"))
        .and_then(Value::as_str);
    match (message, v.get("code")) {
        (Some(m), Some(code)) => support::excerpt(&format!("{code} {m}")),
        (Some(m), None) => support::excerpt(m),
        _ => support::excerpt(body),
    }
}

/// How a text is encoded and how many SMS it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub count: u32,
    pub encoding: Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The GSM 03.38 default alphabet (7 bits a character, extension characters count twice).
    Gsm7,
    /// Anything else: UTF-16 code units.
    Ucs2,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }
}

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The number of SMS `text` takes: one of 160 GSM-7 septets or 70 UCS-2 units, or parts of 153
/// and 67 when it is longer (the rest carries the concatenation header). A part never splits an
/// extension character or a surrogate pair.
pub fn segments(text: &str) -> Segments {
    let mut costs = Vec::new();
    let mut gsm = true;
    for c in text.chars() {
        if GSM_BASIC.contains(c) {
            costs.push(1);
        } else if GSM_EXTENSION.contains(c) {
            costs.push(2);
        } else {
            gsm = false;
            break;
        }
    }
    let (encoding, single, part) = if gsm {
        (Encoding::Gsm7, 160, 153)
    } else {
        costs = text.chars().map(|c| c.len_utf16()).collect();
        (Encoding::Ucs2, 70, 67)
    };
    let total: usize = costs.iter().sum();
    let count = if total <= single {
        1
    } else {
        let (mut parts, mut used) = (1u32, 0usize);
        for c in costs {
            if used + c > part {
                parts += 1;
                used = 0;
            }
            used += c;
        }
        parts
    };
    Segments { count, encoding }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm_and_ucs2_segments() {
        let s = |t: &str| {
            let r = segments(t);
            (r.count, r.encoding.name())
        };
        assert_eq!(s("Bonjour"), (1, "GSM-7"));
        assert_eq!(s(&"a".repeat(160)), (1, "GSM-7"));
        assert_eq!(s(&"a".repeat(161)), (2, "GSM-7"));
        assert_eq!(s(&"a".repeat(306)), (2, "GSM-7"));
        assert_eq!(s(&"a".repeat(307)), (3, "GSM-7"));
        // é, è, à are in the GSM alphabet; € counts twice.
        assert_eq!(s("Échéance à régler"), (1, "GSM-7"));
        assert_eq!(s(&"€".repeat(80)), (1, "GSM-7"));
        assert_eq!(s(&"€".repeat(81)), (2, "GSM-7"));
        // An extension character is not split across parts: 152 + 2 > 153.
        assert_eq!(
            s(&format!("{}€{}", "a".repeat(152), "a".repeat(7))),
            (2, "GSM-7")
        );
        // ê and ç are not: the whole text goes UCS-2.
        assert_eq!(s("Votre reçu"), (1, "UCS-2"));
        assert_eq!(s(&format!("ê{}", "a".repeat(69))), (1, "UCS-2"));
        assert_eq!(s(&format!("ê{}", "a".repeat(70))), (2, "UCS-2"));
        assert_eq!(s(&format!("ê{}", "a".repeat(133))), (2, "UCS-2"));
        assert_eq!(s(&format!("ê{}", "a".repeat(134))), (3, "UCS-2"));
        // An emoji is two UTF-16 units.
        assert_eq!(s(&"🙂".repeat(35)), (1, "UCS-2"));
        assert_eq!(s(&"🙂".repeat(36)), (2, "UCS-2"));
    }

    #[test]
    fn numbers_are_e164() {
        assert!(check_number("+2250701020304").is_ok());
        assert!(check_number("+33612345678").is_ok());
        for bad in [
            "0701020304",
            "+225 07 01 02 03 04",
            "+0225070102",
            "+",
            "+1234567",
            "+1234567890123456",
            "tel:+2250701020304",
        ] {
            let e = check_number(bad).unwrap_err();
            assert!(!e.is_transient());
            assert!(e.to_string().contains(bad), "{e}");
        }
        expect_test::expect![[r#"sms.send: `to` is `0701020304`, which is not a phone number in international form: write + then the country code and the number, without spaces (+2250701020304)"#]]
        .assert_eq(&check_number("0701020304").unwrap_err().to_string());
    }

    /// The worked example of Twilio's "Webhooks security" page.
    #[test]
    fn twilio_documented_signature() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ];
        assert_eq!(
            twilio_signature("12345", url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        let owned: Vec<(String, String)> = params
            .iter()
            .rev()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(twilio_signature_valid(
            "12345",
            url,
            &owned,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        // With the default port written out, as some proxies report the URL.
        assert!(twilio_signature_valid(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &owned,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!twilio_signature_valid(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &owned,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!twilio_signature_valid(
            "54321",
            url,
            &owned,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!twilio_signature_valid("12345", url, &owned, "not base64!"));
        let mut tampered = owned.clone();
        tampered[0].1 = "+18005551213".to_string();
        assert!(!twilio_signature_valid(
            "12345",
            url,
            &tampered,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("", "abc"));
        assert!(!same_secret("abcd", "abc"));
    }

    #[test]
    fn statuses_are_normalized() {
        assert_eq!(orange_status("DeliveredToTerminal"), "delivered");
        assert_eq!(orange_status("DeliveredToNetwork"), "sent");
        assert_eq!(orange_status("DeliveryImpossible"), "undeliverable");
        assert_eq!(orange_status("MessageWaiting"), "queued");
        assert_eq!(orange_status("DeliveryUncertain"), "unknown");
        assert_eq!(twilio_status("delivered"), "delivered");
        assert_eq!(twilio_status("undelivered"), "undeliverable");
        assert_eq!(twilio_status("failed"), "failed");
        assert_eq!(twilio_status("sent"), "sent");
        assert_eq!(twilio_status("queued"), "queued");
        assert_eq!(twilio_status("accepted"), "queued");
        assert_eq!(twilio_status("bizarre"), "unknown");
    }

    #[test]
    fn gateway_messages() {
        let orange = r#"{"requestError":{"serviceException":{"messageId":"SVC0004","text":"No valid addresses provided in message part %1","variables":["address"]}}}"#;
        assert_eq!(
            server_message(orange),
            "SVC0004 No valid addresses provided in message part address"
        );
        let twilio = r#"{"code": 21211, "message": "The 'To' number +225 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        assert_eq!(
            server_message(twilio),
            "21211 The 'To' number +225 is not a valid phone number."
        );
        assert_eq!(server_message("<html>oops</html>"), "<html>oops</html>");
    }
}
