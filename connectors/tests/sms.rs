//! The `sms` connector against local axum stubs of the Orange SMS API (token endpoint and send
//! endpoint) and of Twilio's Messages API, which record every request and count the calls; and
//! its delivery receipts, signed (Twilio) or tokened (Orange) as the providers do.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use dossier_connectors::{
    Connector, ConnectorError, EffectRequest, IncomingReceipt, Receipt, ReceiptError, Registry,
};
use hmac::Mac;
use serde_json::{json, Value};

use support::{reply, Hit, Reply, Stub};

const ENV: &[(&str, &str)] = &[
    ("ORANGE_ID", "orangeid42"),
    ("ORANGE_SECRET", "orangesecret99"),
    ("ORANGE_RECEIPT", "rcpt-s3cret-token"),
    ("TWILIO_TOKEN", "twiliotoken7"),
];
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN_PATH: &str = "/oauth/v3/token";
const SEND_PATH: &str = "/smsmessaging/v1/outbound/tel%3A%2B2250700000000/requests";

fn try_build(yaml: &str) -> Result<Registry, String> {
    support::load(yaml, ENV, Path::new("/p"))
}

fn build(yaml: &str) -> Arc<dyn Connector> {
    let r = try_build(yaml).unwrap_or_else(|e| panic!("{e}"));
    r.get("sms").expect("the sms connector").clone()
}

fn orange(base: &str, extra: &str) -> Arc<dyn Connector> {
    build(&format!(
        "connectors:\n  sms:\n    type: sms\n    provider: orange\n    client_id_env: ORANGE_ID\n    client_secret_env: ORANGE_SECRET\n    sender_address: \"tel:+2250700000000\"\n    api_url: {base}\n    token_url: {base}{TOKEN_PATH}\n{extra}"
    ))
}

fn twilio(base: &str, extra: &str) -> Arc<dyn Connector> {
    build(&format!(
        "connectors:\n  sms:\n    type: sms\n    provider: twilio\n    account_sid: {SID}\n    auth_token_env: TWILIO_TOKEN\n    api_url: {base}\n{extra}"
    ))
}

fn send(key: &str, to: &str, body: &str) -> EffectRequest {
    EffectRequest {
        idempotency_key: key.to_string(),
        case_id: "case-1".to_string(),
        step: "relance".to_string(),
        operation: "send".to_string(),
        request: json!({"to": to, "body": body}),
        attempt: 1,
        redelivered: false,
    }
}

const KEY: &str = "case-1:relance#1";

/// Orange's token endpoint (numbered tokens, `expires_in` as Orange writes it) and send
/// endpoint (201 with a resourceURL), with a `send_status` deciding each send's answer.
fn orange_responder(
    expires_in: Value,
    token_delay: Duration,
    send_status: impl Fn(&Hit) -> u16 + Send + Sync + 'static,
) -> impl Fn(&Hit, &[Hit]) -> Reply + Send + Sync + 'static {
    move |hit, earlier| {
        if hit.path == TOKEN_PATH {
            let n = earlier.iter().filter(|h| h.path == TOKEN_PATH).count() + 1;
            let mut r = reply(
                200,
                json!({"token_type": "Bearer", "access_token": format!("tok-{n}"), "expires_in": expires_in})
                    .to_string(),
            );
            r.delay = token_delay;
            return r;
        }
        let n = earlier.iter().filter(|h| h.path == SEND_PATH).count() + 1;
        match send_status(hit) {
            201 => reply(
                201,
                json!({"outboundSMSMessageRequest": {
                    "address": ["tel:+2250701020304"],
                    "senderAddress": "tel:+2250700000000",
                    "outboundSMSTextMessage": {"message": "x"},
                    "resourceURL": format!("https://api.orange.com/smsmessaging/v1/outbound/tel%3A%2B2250700000000/requests/msg-{n}")
                }})
                .to_string(),
            ),
            401 => reply(
                401,
                r#"{"code":42,"message":"Expired credentials","description":"The requested service needs credentials, and the ones provided were out-of-date."}"#,
            ),
            s => reply(s, "{}"),
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn orange_sends_with_one_cached_token_and_asks_for_receipts() {
    let stub = Stub::start(orange_responder(json!("3600"), Duration::ZERO, |_| 201)).await;
    let sms = orange(
        &stub.base,
        "    sender_name: MonCommerce\n    receipts_url: https://dossier.exemple.ci/receipts/sms_orange\n    receipt_token_env: ORANGE_RECEIPT\n",
    );
    let first = sms
        .call(&send(
            KEY,
            "+2250701020304",
            "Votre facture FAC-42 est échue.",
        ))
        .await
        .unwrap();
    assert_eq!(
        first,
        json!({"provider": "orange", "message_id": "msg-1", "to": "+2250701020304",
               "segments": 1, "encoding": "GSM-7", "status": "queued"})
    );
    let second = sms
        .call(&send(
            "case-1:relance#2",
            "+2250701020305",
            "Rappel : votre reçu",
        ))
        .await
        .unwrap();
    assert_eq!(second["message_id"], "msg-2");
    assert_eq!(second["encoding"], "UCS-2");

    let hits = stub.hits();
    assert_eq!(
        stub.count(TOKEN_PATH),
        1,
        "one token for both sends: {hits:#?}"
    );
    assert_eq!(stub.count(SEND_PATH), 2);
    assert_eq!(hits.len(), 3);

    let token = &hits[0];
    assert_eq!(token.method, "POST");
    assert_eq!(token.path, TOKEN_PATH);
    assert_eq!(
        token.header("authorization"),
        basic("orangeid42", "orangesecret99")
    );
    assert_eq!(
        token.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(token.body, "grant_type=client_credentials");

    let s = &hits[1];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, SEND_PATH);
    assert_eq!(s.query, "");
    assert_eq!(s.header("authorization"), "Bearer tok-1");
    assert_eq!(s.header("content-type"), "application/json");
    assert_eq!(
        s.json(),
        json!({"outboundSMSMessageRequest": {
            "address": "tel:+2250701020304",
            "senderAddress": "tel:+2250700000000",
            "senderName": "MonCommerce",
            "outboundSMSTextMessage": {"message": "Votre facture FAC-42 est échue."},
            "clientCorrelator": KEY,
            "receiptRequest": {
                "notifyURL": "https://dossier.exemple.ci/receipts/sms_orange?token=rcpt-s3cret-token",
                "callbackData": "case-1|case-1:relance#1"
            }
        }})
    );
    assert_eq!(hits[2].header("authorization"), "Bearer tok-1");
    assert_eq!(
        hits[2].json()["outboundSMSMessageRequest"]["clientCorrelator"],
        "case-1:relance#2"
    );

    // The receipt Orange posts back to that notifyURL, with that callbackData.
    let sent = s.json();
    let notify = sent["outboundSMSMessageRequest"]["receiptRequest"]["notifyURL"]
        .as_str()
        .unwrap()
        .to_string();
    let data = sent["outboundSMSMessageRequest"]["receiptRequest"]["callbackData"].clone();
    let body = json!({"deliveryInfoNotification": {
        "callbackData": data,
        "deliveryInfo": {"address": "tel:+2250701020304", "deliveryStatus": "DeliveredToTerminal"}
    }})
    .to_string();
    let got = orange_receipt(&sms, &notify, &body).unwrap();
    assert_eq!(
        got,
        Receipt {
            case_id: "case-1".into(),
            effect_key: KEY.into(),
            message_id: String::new(),
            status: "delivered".into(),
            detail: json!({"provider": "orange", "status": "DeliveredToTerminal", "address": "tel:+2250701020304"}),
        }
    );
}

#[tokio::test]
async fn orange_takes_a_new_token_when_the_old_one_expires() {
    // 61 s announced, used until a minute before: stale after one second.
    let stub = Stub::start(orange_responder(json!(61), Duration::ZERO, |_| 201)).await;
    let sms = orange(&stub.base, "");
    sms.call(&send(KEY, "+2250701020304", "un")).await.unwrap();
    sms.call(&send(KEY, "+2250701020304", "deux"))
        .await
        .unwrap();
    assert_eq!(stub.count(TOKEN_PATH), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sms.call(&send(KEY, "+2250701020304", "trois"))
        .await
        .unwrap();
    assert_eq!(stub.count(TOKEN_PATH), 2);
    let auth: Vec<String> = stub
        .hits()
        .iter()
        .filter(|h| h.path == SEND_PATH)
        .map(|h| h.header("authorization").to_string())
        .collect();
    assert_eq!(auth, ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test]
async fn an_absurd_token_lifetime_is_capped_not_a_panic() {
    // `Instant + u64::MAX seconds` overflows: the connector must not trust the number.
    for expires_in in [json!(u64::MAX), json!(u64::MAX.to_string())] {
        let stub = Stub::start(orange_responder(expires_in, Duration::ZERO, |_| 201)).await;
        let sms = orange(&stub.base, "");
        for body in ["un", "deux"] {
            let r = sms.call(&send(KEY, "+2250701020304", body)).await.unwrap();
            assert_eq!(r["status"], "queued");
        }
        assert_eq!(stub.count(TOKEN_PATH), 1);
        assert_eq!(stub.count(SEND_PATH), 2);
    }
}

#[tokio::test]
async fn orange_refreshes_once_on_401() {
    let stub = Stub::start(orange_responder(json!("3600"), Duration::ZERO, |h| {
        if h.header("authorization") == "Bearer tok-1" {
            401
        } else {
            201
        }
    }))
    .await;
    let sms = orange(&stub.base, "");
    let r = sms
        .call(&send(KEY, "+2250701020304", "Bonjour"))
        .await
        .unwrap();
    assert_eq!(r["message_id"], "msg-2");
    let seen: Vec<(String, String)> = stub
        .hits()
        .iter()
        .map(|h| (h.path.clone(), h.header("authorization").to_string()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                TOKEN_PATH.to_string(),
                basic("orangeid42", "orangesecret99")
            ),
            (SEND_PATH.to_string(), "Bearer tok-1".to_string()),
            (
                TOKEN_PATH.to_string(),
                basic("orangeid42", "orangesecret99")
            ),
            (SEND_PATH.to_string(), "Bearer tok-2".to_string()),
        ]
    );
    // Both tries carry the same correlator: Orange can tell them apart from two messages.
    for h in stub.hits().iter().filter(|h| h.path == SEND_PATH) {
        assert_eq!(
            h.json()["outboundSMSMessageRequest"]["clientCorrelator"],
            KEY
        );
    }
}

#[tokio::test]
async fn orange_gives_up_after_a_second_401() {
    let stub = Stub::start(orange_responder(json!("3600"), Duration::ZERO, |_| 401)).await;
    let sms = orange(&stub.base, "");
    let e = sms
        .call(&send(KEY, "+2250701020304", "Bonjour"))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("Expired credentials"), "{e}");
    assert_eq!(stub.count(TOKEN_PATH), 2);
    assert_eq!(stub.count(SEND_PATH), 2);
}

#[tokio::test]
async fn concurrent_sends_share_one_token_request() {
    let stub = Stub::start(orange_responder(
        json!("3600"),
        Duration::from_millis(300),
        |_| 201,
    ))
    .await;
    let sms = orange(&stub.base, "");
    let mut tasks = Vec::new();
    for i in 0..5 {
        let sms = sms.clone();
        tasks.push(tokio::spawn(async move {
            sms.call(&send(
                &format!("case-1:relance#{i}"),
                "+2250701020304",
                "Bonjour",
            ))
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(stub.count(TOKEN_PATH), 1);
    assert_eq!(stub.count(SEND_PATH), 5);
}

#[tokio::test]
async fn orange_token_endpoint_failures() {
    // 503 from the token endpoint: worth retrying, and nothing was sent.
    let down = Stub::start(|h: &Hit, _: &[Hit]| {
        if h.path == TOKEN_PATH {
            reply(503, "<html>maintenance</html>")
        } else {
            reply(201, "{}")
        }
    })
    .await;
    let e = orange(&down.base, "")
        .call(&send(KEY, "+2250701020304", "Bonjour"))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    assert_eq!(down.count(SEND_PATH), 0);

    // Refused credentials: permanent, with Orange's words.
    let refused = Stub::start(|h: &Hit, _: &[Hit]| {
        if h.path == TOKEN_PATH {
            reply(
                401,
                r#"{"error":"invalid_client","error_description":"The requested service needs credentials, but the ones provided were invalid."}"#,
            )
        } else {
            reply(201, "{}")
        }
    })
    .await;
    let e = orange(&refused.base, "")
        .call(&send(KEY, "+2250701020304", "Bonjour"))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("invalid_client"), "{e}");
    assert!(
        e.to_string().contains("the ones provided were invalid"),
        "{e}"
    );
    assert_eq!(refused.count(SEND_PATH), 0);
}

#[tokio::test]
async fn an_invalid_number_is_refused_before_any_request() {
    let stub = Stub::start(orange_responder(json!("3600"), Duration::ZERO, |_| 201)).await;
    let sms = orange(&stub.base, "");
    let e = sms
        .call(&send(KEY, "07 01 02 03 04", "Bonjour"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Permanent(
            "sms.send: `to` is `07 01 02 03 04`, which is not a phone number in international form: write + then the country code and the number, without spaces (+2250701020304)".into()
        )
    );
    let e = sms
        .call(&send(KEY, "+2250701020304", "  "))
        .await
        .unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("`body` is empty"),
        "{e}"
    );
    let mut extra = send(KEY, "+2250701020304", "x");
    extra.request["priority"] = json!("high");
    let e = sms.call(&extra).await.unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("unknown field `priority`"),
        "{e}"
    );
    assert!(stub.hits().is_empty());
}

const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

fn twilio_created(hit: &Hit) -> Reply {
    let to = hit
        .form()
        .into_iter()
        .find(|(k, _)| k == "To")
        .map(|(_, v)| v)
        .unwrap_or_default();
    reply(
        201,
        json!({"sid": "SM5ef8732a3c49700934481addd5ce1659", "status": "queued", "to": to,
               "num_segments": "1", "account_sid": SID})
        .to_string(),
    )
}

#[tokio::test]
async fn twilio_sends_a_form_with_basic_auth_and_the_idempotency_token() {
    let stub = Stub::start(|h: &Hit, _: &[Hit]| twilio_created(h)).await;
    let sms = twilio(
        &stub.base,
        "    from: \"+15005550006\"\n    receipts_url: https://dossier.exemple.ci/receipts/sms_twilio\n",
    );
    let long = "Bonjour, ".repeat(20);
    let r = sms.call(&send(KEY, "+2250701020304", &long)).await.unwrap();
    assert_eq!(
        r,
        json!({"provider": "twilio", "message_id": "SM5ef8732a3c49700934481addd5ce1659",
               "to": "+2250701020304", "segments": 2, "encoding": "GSM-7", "status": "queued"})
    );
    let hits = stub.hits();
    assert_eq!(hits.len(), 1);
    let h = &hits[0];
    assert_eq!(h.method, "POST");
    assert_eq!(h.path, MESSAGES);
    assert_eq!(h.header("authorization"), basic(SID, "twiliotoken7"));
    assert_eq!(h.header("i-twilio-idempotency-token"), KEY);
    assert_eq!(
        h.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let callback =
        "https://dossier.exemple.ci/receipts/sms_twilio?case=case-1&key=case-1%3Arelance%231";
    assert_eq!(
        h.form(),
        [
            ("To".to_string(), "+2250701020304".to_string()),
            ("From".to_string(), "+15005550006".to_string()),
            ("Body".to_string(), long.clone()),
            ("StatusCallback".to_string(), callback.to_string()),
        ]
    );

    // Twilio then posts the status to that URL, signed with the auth token.
    let params = [
        ("AccountSid", SID),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15005550006"),
        ("MessageSid", "SM5ef8732a3c49700934481addd5ce1659"),
        ("MessageStatus", "delivered"),
        ("SmsSid", "SM5ef8732a3c49700934481addd5ce1659"),
        ("SmsStatus", "delivered"),
        ("To", "+2250701020304"),
    ];
    let signature = sign("twiliotoken7", callback, &params);
    let got = twilio_receipt(&sms, callback, &params, Some(&signature)).unwrap();
    assert_eq!(
        got,
        Receipt {
            case_id: "case-1".into(),
            effect_key: KEY.into(),
            message_id: "SM5ef8732a3c49700934481addd5ce1659".into(),
            status: "delivered".into(),
            detail: json!({"provider": "twilio", "status": "delivered", "to": "+2250701020304"}),
        }
    );
}

#[tokio::test]
async fn twilio_with_a_messaging_service_and_no_receipts() {
    let stub = Stub::start(|h: &Hit, _: &[Hit]| twilio_created(h)).await;
    let sms = twilio(
        &stub.base,
        "    messaging_service_sid: MG9752274e9e519418a7406176694466fa\n",
    );
    sms.call(&send(KEY, "+2250701020304", "Bonjour"))
        .await
        .unwrap();
    assert_eq!(
        stub.hits()[0].form(),
        [
            ("To".to_string(), "+2250701020304".to_string()),
            (
                "MessagingServiceSid".to_string(),
                "MG9752274e9e519418a7406176694466fa".to_string()
            ),
            ("Body".to_string(), "Bonjour".to_string()),
        ]
    );
    // No receipts_url: this connector takes no receipts.
    let incoming = IncomingReceipt {
        url: "https://dossier.exemple.ci/receipts/sms",
        headers: &[],
        body: b"",
    };
    assert!(sms.receipt(&incoming).is_none());
}

#[tokio::test]
async fn gateway_failures_are_classified() {
    let stub = Stub::start(|h: &Hit, _: &[Hit]| {
        let body: String = h
            .form()
            .into_iter()
            .find(|(k, _)| k == "Body")
            .map(|(_, v)| v)
            .unwrap_or_default();
        match body.as_str() {
            "500" => reply(500, r#"{"code": 20500, "message": "Internal Server Error"}"#),
            "429" => reply(429, r#"{"code": 20429, "message": "Too Many Requests"}"#),
            "400" => reply(
                400,
                r#"{"code": 21211, "message": "The 'To' number +2250701020304 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#,
            ),
            "garbled" => reply(201, "{\"sid\": \"SM1\", "),
            "slow" => Reply {
                delay: Duration::from_secs(3),
                ..twilio_created(h)
            },
            _ => twilio_created(h),
        }
    })
    .await;
    let sms = twilio(
        &stub.base,
        "    from: \"+15005550006\"\n    timeout_seconds: 1\n",
    );
    let call = |body: &'static str| {
        let sms = sms.clone();
        async move { sms.call(&send(KEY, "+2250701020304", body)).await }
    };

    let e = call("500").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        e.to_string(),
        "twilio: HTTP 500: 20500 Internal Server Error"
    );
    assert!(call("429").await.unwrap_err().is_transient());
    let e = call("400").await.unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Permanent(
            "twilio: HTTP 400: 21211 The 'To' number +2250701020304 is not a valid phone number."
                .into()
        )
    );
    let e = call("garbled").await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("malformed answer"), "{e}");
    let started = std::time::Instant::now();
    let e = call("slow").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("no answer in time"), "{e}");
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(stub.hits().len(), 5);

    // Nobody listening.
    let port = support::free_port();
    let down = twilio(
        &format!("http://127.0.0.1:{port}"),
        "    from: \"+15005550006\"\n",
    );
    let e = down
        .call(&send(KEY, "+2250701020304", "Bonjour"))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
}

/// Twilio's signature, computed here independently of the connector's code.
fn sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn twilio_receipt(
    sms: &Arc<dyn Connector>,
    url: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> Result<Receipt, ReceiptError> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut headers = vec![(
        "content-type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    if let Some(s) = signature {
        headers.push(("x-twilio-signature".to_string(), s.to_string()));
    }
    sms.receipt(&IncomingReceipt {
        url,
        headers: &headers,
        body: body.as_bytes(),
    })
    .expect("the connector takes receipts")
}

fn orange_receipt(
    sms: &Arc<dyn Connector>,
    url: &str,
    body: &str,
) -> Result<Receipt, ReceiptError> {
    let headers = [("content-type".to_string(), "application/json".to_string())];
    sms.receipt(&IncomingReceipt {
        url,
        headers: &headers,
        body: body.as_bytes(),
    })
    .expect("the connector takes receipts")
}

#[tokio::test]
async fn twilio_receipts_must_be_signed_and_complete() {
    let sms = twilio(
        "http://127.0.0.1:9",
        "    from: \"+15005550006\"\n    receipts_url: https://dossier.exemple.ci/receipts/sms_twilio\n",
    );
    let url = "https://dossier.exemple.ci/receipts/sms_twilio?case=case-9&key=case-9%3Arappel%232";
    let params = [
        ("MessageSid", "SM0000000000000000000000000000000a"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    let good = sign("twiliotoken7", url, &params);
    let r = twilio_receipt(&sms, url, &params, Some(&good)).unwrap();
    assert_eq!(
        (r.case_id.as_str(), r.effect_key.as_str(), r.status.as_str()),
        ("case-9", "case-9:rappel#2", "undeliverable")
    );
    assert_eq!(
        r.detail,
        json!({"provider": "twilio", "status": "undelivered", "error_code": "30003"})
    );

    // Signed with another token, no signature, a changed parameter, another URL.
    let other = sign("not-the-token", url, &params);
    for (signature, params, url) in [
        (Some(other.as_str()), &params[..], url),
        (None, &params[..], url),
        (
            Some(good.as_str()),
            &[
                ("MessageSid", "SM0000000000000000000000000000000a"),
                ("MessageStatus", "delivered"),
                ("ErrorCode", "30003"),
            ][..],
            url,
        ),
        (
            Some(good.as_str()),
            &params[..],
            "https://dossier.exemple.ci/receipts/sms_twilio?case=case-8&key=case-9%3Arappel%232",
        ),
    ] {
        match twilio_receipt(&sms, url, params, signature) {
            Err(ReceiptError::Unauthorized(_)) => {}
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }

    // Properly signed but not a status callback of ours.
    let no_status = [("MessageSid", "SM0000000000000000000000000000000a")];
    let s = sign("twiliotoken7", url, &no_status);
    assert_eq!(
        twilio_receipt(&sms, url, &no_status, Some(&s)),
        Err(ReceiptError::Malformed(
            "no MessageStatus in the receipt".into()
        ))
    );
    let bare = "https://dossier.exemple.ci/receipts/sms_twilio";
    let s = sign("twiliotoken7", bare, &params);
    assert_eq!(
        twilio_receipt(&sms, bare, &params, Some(&s)),
        Err(ReceiptError::Malformed(
            "the StatusCallback URL carries no `case` and `key`".into()
        ))
    );
}

#[tokio::test]
async fn orange_receipts_must_carry_the_token() {
    let sms = orange(
        "http://127.0.0.1:9",
        "    receipts_url: https://dossier.exemple.ci/receipts/sms_orange\n    receipt_token_env: ORANGE_RECEIPT\n",
    );
    let url = "https://dossier.exemple.ci/receipts/sms_orange?token=rcpt-s3cret-token";
    let body = json!({"deliveryInfoNotification": {
        "callbackData": "case-3|case-3:sms#1",
        "deliveryInfo": {"address": "tel:+2250701020304", "deliveryStatus": "DeliveryImpossible"}
    }})
    .to_string();
    let r = orange_receipt(&sms, url, &body).unwrap();
    assert_eq!(
        (r.case_id.as_str(), r.effect_key.as_str(), r.status.as_str()),
        ("case-3", "case-3:sms#1", "undeliverable")
    );

    for bad in [
        "https://dossier.exemple.ci/receipts/sms_orange?token=rcpt-s3cret-tokeN",
        "https://dossier.exemple.ci/receipts/sms_orange?token=",
        "https://dossier.exemple.ci/receipts/sms_orange",
    ] {
        match orange_receipt(&sms, bad, &body) {
            Err(ReceiptError::Unauthorized(_)) => {}
            other => panic!("{bad}: expected Unauthorized, got {other:?}"),
        }
    }

    // Case and key may come in the URL instead of callbackData.
    let by_query = format!("{url}&case=case-4&key=case-4%3Asms%231");
    let body2 = json!({"deliveryInfoNotification": {
        "deliveryInfo": {"address": "tel:+2250701020304", "deliveryStatus": "DeliveredToNetwork"}
    }})
    .to_string();
    let r = orange_receipt(&sms, &by_query, &body2).unwrap();
    assert_eq!(
        (r.case_id.as_str(), r.effect_key.as_str(), r.status.as_str()),
        ("case-4", "case-4:sms#1", "sent")
    );

    for (body, expected) in [
        (
            "{\"deliveryInfoNotification\": ",
            "an Orange receipt is JSON",
        ),
        ("{\"other\": 1}", "no `deliveryInfoNotification`"),
        (
            r#"{"deliveryInfoNotification": {"callbackData": "case-3|k"}}"#,
            "no `deliveryInfo.deliveryStatus`",
        ),
        (
            r#"{"deliveryInfoNotification": {"deliveryInfo": {"deliveryStatus": "DeliveredToTerminal"}}}"#,
            "names no case",
        ),
        (
            r#"{"deliveryInfoNotification": {"callbackData": "nopipe", "deliveryInfo": {"deliveryStatus": "DeliveredToTerminal"}}}"#,
            "not `case|key`",
        ),
    ] {
        match orange_receipt(&sms, url, body) {
            Err(ReceiptError::Malformed(m)) => assert!(m.contains(expected), "{m}"),
            other => panic!("{body}: expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn configuration_errors_are_located() {
    let e = try_build(
        "connectors:\n  sms:\n    type: sms\n    provider: orang\n    client_id_env: ORANGE_ID\n",
    )
    .unwrap_err();
    expect_test::expect![[r#"
        dossier.yaml:4:5: error: connector `sms`: unknown SMS provider `orang`
          hint: did you mean `orange`? write `provider: orange` or `provider: twilio`"#]]
    .assert_eq(&e);

    let e = try_build(
        "connectors:\n  sms:\n    type: sms\n    provider: orange\n    client_id_env: ORANGE_ID\n    client_secret_env: MISSING_SECRET\n    sender_address: \"tel:+2250700000000\"\n",
    )
    .unwrap_err();
    expect_test::expect![[r#"
        dossier.yaml:6:5: error: connector `sms`: the environment variable `MISSING_SECRET` is not set
          hint: export MISSING_SECRET=… before starting Dossier; secrets never go in this file"#]]
    .assert_eq(&e);

    let e = try_build(
        "connectors:\n  sms:\n    type: sms\n    provider: twilio\n    account_sid: AC0123\n    auth_token_env: TWILIO_TOKEN\n    from: \"+15005550006\"\n    sender_name: Boutique\n",
    )
    .unwrap_err();
    expect_test::expect![[r#"
        dossier.yaml:8:5: error: connector `sms`: `sender_name` is not a setting of the `twilio` provider
          hint: remove it, or change `provider`"#]]
    .assert_eq(&e);

    let e = try_build(
        "connectors:\n  sms:\n    type: sms\n    provider: orange\n    client_id_env: ORANGE_ID\n    client_secret_env: ORANGE_SECRET\n    sender_address: \"tel:+2250700000000\"\n    receipts_url: https://dossier.exemple.ci/receipts/sms\n",
    )
    .unwrap_err();
    expect_test::expect![[r#"
        dossier.yaml:2:3: error: connector `sms`: `receipts_url` is set but `receipt_token_env` is missing
          hint: Orange does not sign its receipts: name an environment variable holding a long random token, which Dossier adds to the receipt URL and checks"#]]
    .assert_eq(&e);

    let e = try_build(
        "connectors:\n  sms:\n    type: sms\n    provider: orange\n    client_id_env: ORANGE_ID\n    client_secret_env: ORANGE_SECRET\n    sender_address: \"0700000000\"\n",
    )
    .unwrap_err();
    expect_test::expect![[r#"
        dossier.yaml:7:5: error: connector `sms`: `0700000000` is not a sender address
          hint: write it as tel: then the number with its country code: tel:+2250700000000"#]]
    .assert_eq(&e);

    let e = try_build(
        "connectors:\n  sms:\n    type: sms\n    provider: twilio\n    account_sid: AC0123\n    auth_token_env: TWILIO_TOKEN\n    from: \"+15005550006\"\n    receipts_url: https://twilio:s3cret@dossier.exemple.ci/receipts/sms\n",
    )
    .unwrap_err();
    expect_test::expect![[r#"
        dossier.yaml:8:5: error: connector `sms`: the URL carries credentials (user:password@)
          hint: remove them: secrets go in environment variables named by the `*_env` settings"#]]
    .assert_eq(&e);

    let e = try_build(
        "connectors:\n  sms:\n    type: sms\n    provider: twilio\n    account_sid: AC0123\n    auth_token_env: TWILIO_TOKEN\n    form: \"+15005550006\"\n",
    )
    .unwrap_err();
    assert!(
        e.starts_with("dossier.yaml:7:5: error: connector `sms`: unknown field `form`"),
        "{e}"
    );
}
