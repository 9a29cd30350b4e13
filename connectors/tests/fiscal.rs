//! The `fiscal` connector against a local axum stub of the FNE API (sign, refund, and the
//! lookup by idempotency key), which records every request, keeps its certifications, and can
//! be told to certify and then answer 500, or to certify slowly.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dossier_connectors::support::BuildContext;
use dossier_connectors::{Connector, ConnectorError, EffectRequest, Registry};
use serde_json::{json, Value};

use support::{reply, Hit, Reply};

/// How the stub answers a sign request.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Sign {
    Certify,
    /// Certifies, then answers 500 (what integrators report).
    CertifyThen500,
    /// Answers 500 without certifying.
    Fail500,
    /// Certifies, then answers after 3 s.
    CertifySlowly,
    Refuse400,
    Garbled,
}

#[derive(Default)]
struct Fne {
    /// (idempotency key, answer), in the order certified.
    certified: Vec<(String, Value)>,
    /// How the next sign requests are answered, first first; then `Certify`.
    plan: Vec<Sign>,
    lookup_broken: bool,
    /// The lookup ignores its filter and lists every certification.
    lookup_unfiltered: bool,
}

struct Stub {
    base: String,
    state: Arc<Mutex<Fne>>,
    server: support::Stub,
}

const KEY_HEADER: &str = "idempotency-key";

fn answer(n: usize, hit: &Hit) -> Value {
    let body = hit.json();
    let items: Vec<Value> = body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, it)| {
            json!({"id": format!("item-{n}-{}", i + 1), "reference": it.get("reference").cloned().unwrap_or(json!("")),
                   "description": it["description"], "quantity": it["quantity"], "amount": it["amount"],
                   "taxes": [{"amount": 18, "name": "TVA normal - TVA sur HT 18,00% - A", "shortName": "TVA"}]})
        })
        .collect();
    json!({
        "ncc": "9606123E",
        "reference": format!("9606123E25{n:09}"),
        "token": format!("http://54.247.95.108/fr/verification/019465c1-3f61-766c-9652-{n:012}"),
        "warning": false,
        "balance_sticker": 180 - n,
        "invoice": {
            "id": format!("inv-{n}"),
            "reference": format!("9606123E25{n:09}"),
            "type": "invoice",
            "date": "2025-01-14T16:59:11.016Z",
            "amount": 30000,
            "vatAmount": 5400,
            "status": "paid",
            "template": body["template"],
            "items": items,
        }
    })
}

impl Stub {
    async fn start(plan: Vec<Sign>) -> Stub {
        let state = Arc::new(Mutex::new(Fne {
            plan,
            ..Fne::default()
        }));
        let st = state.clone();
        let server = support::Stub::start(move |hit, _| {
            let (status, body, delay) = respond(&mut st.lock().unwrap(), hit);
            Reply {
                delay,
                ..reply(status, body)
            }
        })
        .await;
        Stub {
            base: format!("{}/ws", server.base),
            state,
            server,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.server.hits()
    }

    fn certifications(&self) -> usize {
        self.state.lock().unwrap().certified.len()
    }

    /// (method, path) of each request, in order.
    fn calls(&self) -> Vec<(String, String)> {
        self.hits()
            .iter()
            .map(|h| (h.method.clone(), h.path.clone()))
            .collect()
    }
}

fn respond(fne: &mut Fne, hit: &Hit) -> (u16, String, Duration) {
    let now = Duration::ZERO;
    if hit.header("authorization") != "Bearer fne-api-key" {
        return (
            401,
            r#"{"error":"Unauthorized","statusCode":401}"#.into(),
            now,
        );
    }
    let key = hit.header(KEY_HEADER).to_string();
    match (hit.method.as_str(), hit.path.as_str()) {
        ("POST", "/ws/external/invoices/sign") => {
            let how = if fne.plan.is_empty() {
                Sign::Certify
            } else {
                fne.plan.remove(0)
            };
            let mut certify = || {
                let a = answer(fne.certified.len() + 1, hit);
                fne.certified.push((key.clone(), a.clone()));
                a.to_string()
            };
            match how {
                Sign::Certify => (200, certify(), now),
                Sign::CertifyThen500 => {
                    certify();
                    (500, r#"{"message":"Internal server error","statusCode":500}"#.into(), now)
                }
                Sign::Fail500 => (500, r#"{"message":"Internal server error","statusCode":500}"#.into(), now),
                Sign::CertifySlowly => (200, certify(), Duration::from_secs(3)),
                Sign::Refuse400 => (
                    400,
                    r#"{"message":"Point of sale is not valid","error":"VALIDATION_ERROR","statusCode":400}"#.into(),
                    now,
                ),
                Sign::Garbled => (200, "<html>ok</html>".into(), now),
            }
        }
        ("GET", "/ws/external/invoices") => {
            if fne.lookup_broken {
                return (
                    404,
                    r#"{"message":"Cannot GET /external/invoices","statusCode":404}"#.into(),
                    now,
                );
            }
            let wanted: Vec<(String, String)> = url::form_urlencoded::parse(hit.query.as_bytes())
                .into_owned()
                .collect();
            let by = |name: &str| {
                wanted
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            let found: Vec<Value> = match (by("idempotencyKey"), by("reference")) {
                _ if fne.lookup_unfiltered => {
                    fne.certified.iter().map(|(_, a)| a.clone()).collect()
                }
                (Some(k), None) => fne
                    .certified
                    .iter()
                    .filter(|(c, _)| *c == k)
                    .map(|(_, a)| a.clone())
                    .collect(),
                (None, Some(r)) => fne
                    .certified
                    .iter()
                    .filter(|(_, a)| a["reference"] == r.as_str())
                    .map(|(_, a)| a.clone())
                    .collect(),
                _ => {
                    return (
                        400,
                        r#"{"message":"idempotencyKey or reference is required"}"#.into(),
                        now,
                    )
                }
            };
            (200, Value::Array(found).to_string(), now)
        }
        ("POST", path)
            if path.starts_with("/ws/external/invoices/") && path.ends_with("/refund") =>
        {
            let id = &path["/ws/external/invoices/".len()..path.len() - "/refund".len()];
            if !fne.certified.iter().any(|(_, a)| a["invoice"]["id"] == id) {
                return (
                    404,
                    r#"{"message":"Invoice not found","statusCode":404}"#.into(),
                    now,
                );
            }
            let n = fne.certified.len() + 1;
            let a = json!({
                "ncc": "9606123E",
                "reference": format!("A9606123E25{n:08}"),
                "token": format!("http://54.247.95.108/fr/verification/avoir-{n}"),
                "warning": false,
                "balance_sticker": 180 - n,
            });
            fne.certified.push((key, a.clone()));
            (201, a.to_string(), now)
        }
        _ => (404, r#"{"message":"Not found"}"#.into(), now),
    }
}

fn try_build(yaml: &str) -> Result<Registry, String> {
    support::load(yaml, &[("FNE_API_KEY", "fne-api-key")], Path::new("/p"))
}

fn fne(base: &str) -> Arc<dyn Connector> {
    let r = try_build(&format!(
        "connectors:\n  fne:\n    type: fiscal\n    api_url: {base}\n    api_key_env: FNE_API_KEY\n    point_of_sale: CAISSE_1\n    establishment: SIEGE\n    timeout_seconds: 1\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    r.get("fne").expect("the fne connector").clone()
}

const KEY: &str = "case-7:certifier#1";

fn effect(operation: &str, attempt: u32, request: Value) -> EffectRequest {
    EffectRequest {
        idempotency_key: KEY.to_string(),
        case_id: "case-7".to_string(),
        step: "certifier".to_string(),
        operation: operation.to_string(),
        request,
        attempt,
        redelivered: false,
    }
}

fn b2c() -> Value {
    json!({
        "number": "FAC-2025-0042",
        "template": "B2C",
        "payment_method": "cash",
        "client": {"name": "Awa Koné", "phone": "0709080765"},
        "seller_name": "Ali Hassan",
        "lines": [
            {"reference": "REP-ECRAN", "description": "Remplacement écran", "quantity": "1",
             "unit_price": "25000", "vat": "TVA", "unit": "pce"},
            {"description": "Main d'œuvre", "quantity": "2", "unit_price": "2500.50", "vat": "TVA",
             "discount": "10"}
        ]
    })
}

#[tokio::test]
async fn certifies_a_b2c_invoice() {
    let stub = Stub::start(vec![]).await;
    let r = fne(&stub.base)
        .call(&effect("certify", 1, b2c()))
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({
            "reference": "9606123E25000000001",
            "verification_url": "http://54.247.95.108/fr/verification/019465c1-3f61-766c-9652-000000000001",
            "certified_at": "2025-01-14T16:59:11.016Z",
            "invoice_number": "FAC-2025-0042",
            "invoice_id": "inv-1",
            "ncc": "9606123E",
            "amount_excl_tax": "30000",
            "vat_amount": "5400",
            "items": [
                {"id": "item-1-1", "reference": "REP-ECRAN", "description": "Remplacement écran", "quantity": "1"},
                {"id": "item-1-2", "reference": "", "description": "Main d'œuvre", "quantity": "2"}
            ],
            "balance_sticker": 179,
            "warning": false,
            "already_certified": false
        })
    );
    let hits = stub.hits();
    assert_eq!(
        hits.len(),
        1,
        "a first attempt that succeeds looks nothing up"
    );
    let h = &hits[0];
    assert_eq!(h.method, "POST");
    assert_eq!(h.path, "/ws/external/invoices/sign");
    assert_eq!(h.query, "");
    assert_eq!(h.header("authorization"), "Bearer fne-api-key");
    assert_eq!(h.header("idempotency-key"), KEY);
    assert_eq!(h.header("content-type"), "application/json");
    assert_eq!(h.header("accept"), "application/json");
    // Amounts go as JSON numbers with the exact digits given.
    assert!(h.body.contains(r#""amount":2500.50"#), "{}", h.body);
    let expected: Value = serde_json::from_str(
        r#"{
            "invoiceType": "sale",
            "paymentMethod": "cash",
            "template": "B2C",
            "isRne": false,
            "clientCompanyName": "Awa Koné",
            "clientPhone": "0709080765",
            "clientSellerName": "Ali Hassan",
            "pointOfSale": "CAISSE_1",
            "establishment": "SIEGE",
            "foreignCurrency": "",
            "foreignCurrencyRate": 0,
            "discount": 0,
            "customTaxes": [],
            "items": [
                {"taxes": ["TVA"], "customTaxes": [], "reference": "REP-ECRAN",
                 "description": "Remplacement écran", "quantity": 1, "amount": 25000,
                 "measurementUnit": "pce"},
                {"taxes": ["TVA"], "customTaxes": [], "description": "Main d'œuvre",
                 "quantity": 2, "amount": 2500.50, "discount": 10}
            ]
        }"#,
    )
    .unwrap();
    assert_eq!(h.json(), expected);
}

#[tokio::test]
async fn a_b2b_invoice_without_ncc_is_refused_before_any_call() {
    let stub = Stub::start(vec![]).await;
    let mut inv = b2c();
    inv["template"] = json!("B2B");
    let e = fne(&stub.base)
        .call(&effect("certify", 1, inv.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Permanent(
            "fiscal.certify: invoice FAC-2025-0042 is B2B but its client has no NCC: give `client.ncc`, the buyer's taxpayer account number (or use template B2C for a consumer)".into()
        )
    );
    assert!(stub.hits().is_empty());

    // With the NCC, it goes through and the NCC is sent.
    inv["client"]["ncc"] = json!("9502363N");
    fne(&stub.base)
        .call(&effect("certify", 1, inv))
        .await
        .unwrap();
    assert_eq!(stub.hits()[0].json()["clientNcc"], "9502363N");
    assert_eq!(stub.hits()[0].json()["template"], "B2B");
}

#[tokio::test]
async fn a_500_after_certifying_returns_that_certification_and_never_signs_twice() {
    let stub = Stub::start(vec![Sign::CertifyThen500]).await;
    let conn = fne(&stub.base);
    let r = conn.call(&effect("certify", 1, b2c())).await.unwrap();
    assert_eq!(r["reference"], "9606123E25000000001");
    assert_eq!(r["invoice_id"], "inv-1");
    assert_eq!(r["already_certified"], true);
    assert_eq!(
        stub.calls(),
        [
            ("POST".to_string(), "/ws/external/invoices/sign".to_string()),
            ("GET".to_string(), "/ws/external/invoices".to_string()),
        ]
    );
    let lookup = &stub.hits()[1];
    assert_eq!(lookup.query, "idempotencyKey=case-7%3Acertifier%231");
    assert_eq!(lookup.header("authorization"), "Bearer fne-api-key");

    // The engine retries anyway (say the result was lost in a crash): look up, do not sign.
    let again = conn.call(&effect("certify", 2, b2c())).await.unwrap();
    assert_eq!(again, r);
    assert_eq!(stub.certifications(), 1);
    assert_eq!(stub.calls().len(), 3);
    assert_eq!(stub.calls()[2].0, "GET");
}

#[tokio::test]
async fn a_first_attempt_redelivered_after_a_crash_looks_up_before_signing() {
    // Dossier stopped while the first attempt was in flight, after the FNE had certified it:
    // the engine hands the effect out again with the same attempt number, marked redelivered.
    let stub = Stub::start(vec![Sign::Certify]).await;
    let conn = fne(&stub.base);
    let first = conn.call(&effect("certify", 1, b2c())).await.unwrap();
    assert_eq!(first["already_certified"], false);
    let mut again = effect("certify", 1, b2c());
    again.redelivered = true;
    let r = conn.call(&again).await.unwrap();
    assert_eq!(r["reference"], first["reference"]);
    assert_eq!(r["already_certified"], true);
    assert_eq!(stub.certifications(), 1);
    assert_eq!(
        stub.calls(),
        [
            ("POST".to_string(), "/ws/external/invoices/sign".to_string()),
            ("GET".to_string(), "/ws/external/invoices".to_string()),
        ]
    );
    // Redelivered, with nothing certified before: the lookup finds nothing, then it signs once.
    let stub = Stub::start(vec![Sign::Certify]).await;
    let conn = fne(&stub.base);
    let r = conn.call(&again).await.unwrap();
    assert_eq!(r["already_certified"], false);
    assert_eq!(stub.certifications(), 1);
    assert_eq!(stub.calls()[0].0, "GET");
}

#[tokio::test]
async fn a_500_without_certification_is_transient_and_the_retry_signs_once() {
    let stub = Stub::start(vec![Sign::Fail500]).await;
    let conn = fne(&stub.base);
    let e = conn.call(&effect("certify", 1, b2c())).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        e.to_string(),
        "fne: HTTP 500: Internal server error (the FNE holds no certification for this request, so the next attempt signs it)"
    );
    let r = conn.call(&effect("certify", 2, b2c())).await.unwrap();
    assert_eq!(r["already_certified"], false);
    assert_eq!(r["reference"], "9606123E25000000001");
    let calls: Vec<String> = stub
        .calls()
        .into_iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        calls,
        [
            "POST /ws/external/invoices/sign",
            "GET /ws/external/invoices",
            "GET /ws/external/invoices",
            "POST /ws/external/invoices/sign",
        ]
    );
    assert_eq!(stub.certifications(), 1);
    // Both signs carried the same key.
    let signs: Vec<String> = stub
        .hits()
        .iter()
        .filter(|h| h.method == "POST")
        .map(|h| h.header("idempotency-key").to_string())
        .collect();
    assert_eq!(signs, [KEY, KEY]);
}

#[tokio::test]
async fn a_timeout_after_certifying_finds_the_certification() {
    let stub = Stub::start(vec![Sign::CertifySlowly]).await;
    let started = std::time::Instant::now();
    let r = fne(&stub.base)
        .call(&effect("certify", 1, b2c()))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(r["reference"], "9606123E25000000001");
    assert_eq!(r["already_certified"], true);
    assert_eq!(stub.certifications(), 1);
}

#[tokio::test]
async fn a_failing_lookup_is_transient_and_signs_nothing() {
    let stub = Stub::start(vec![]).await;
    stub.state.lock().unwrap().lookup_broken = true;
    let e = fne(&stub.base)
        .call(&effect("certify", 2, b2c()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Transient(
            "fne: before signing again, looking up the earlier attempt failed: fne lookup: HTTP 404: Cannot GET /external/invoices".into()
        )
    );
    assert_eq!(
        stub.calls(),
        [("GET".to_string(), "/ws/external/invoices".to_string())]
    );
    assert_eq!(stub.certifications(), 0);

    // A 500 on sign with no way to look: transient too.
    let stub = Stub::start(vec![Sign::CertifyThen500]).await;
    stub.state.lock().unwrap().lookup_broken = true;
    let e = fne(&stub.base)
        .call(&effect("certify", 1, b2c()))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("then looking the request up failed"),
        "{e}"
    );
}

#[tokio::test]
async fn a_lookup_that_does_not_filter_is_not_trusted() {
    let stub = Stub::start(vec![]).await;
    let conn = fne(&stub.base);
    for key in ["case-1:certifier#1", "case-2:certifier#1"] {
        let mut e = effect("certify", 1, b2c());
        e.idempotency_key = key.into();
        conn.call(&e).await.unwrap();
    }
    stub.state.lock().unwrap().lookup_unfiltered = true;
    // A retry of a third effect: the lookup lists both others' certifications.
    let e = conn.call(&effect("certify", 2, b2c())).await.unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Transient(
            "fne: before signing again, looking up the earlier attempt failed: fne lookup: 2 certifications answer one idempotency key; the administration does not seem to filter by `idempotencyKey`, so none can be trusted".into()
        )
    );
    assert_eq!(stub.certifications(), 2, "nothing signed");
    assert_eq!(stub.calls().last().unwrap().0, "GET");
}

#[tokio::test]
async fn refusals_and_garbled_answers_are_permanent() {
    let stub = Stub::start(vec![Sign::Refuse400, Sign::Garbled]).await;
    let conn = fne(&stub.base);
    let e = conn.call(&effect("certify", 1, b2c())).await.unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Permanent(
            "fne: HTTP 400: Point of sale is not valid (VALIDATION_ERROR)".into()
        )
    );
    let e = conn.call(&effect("certify", 1, b2c())).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("malformed answer"), "{e}");
    // Neither looked anything up.
    assert_eq!(stub.calls().iter().filter(|(m, _)| m == "GET").count(), 0);

    // A refused key.
    let env = support::env_from(&[("FNE_API_KEY", "wrong")]);
    let ctx = BuildContext {
        env: &env,
        base_dir: "/p".into(),
    };
    let settings = format!(
        "api_url: {}\napi_key_env: FNE_API_KEY\npoint_of_sale: P\nestablishment: E\n",
        stub.base
    );
    let wrong_key =
        dossier_connectors::fiscal::build("fne", serde_yaml_ng::from_str(&settings).unwrap(), &ctx)
            .unwrap_or_else(|e| panic!("{e:?}"));
    let e = wrong_key
        .call(&effect("certify", 1, b2c()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Permanent(
            "fne: HTTP 401: Unauthorized (check the API key in the variable `api_key_env` names)"
                .into()
        )
    );
}

#[tokio::test]
async fn an_unreachable_administration_is_transient() {
    let port = support::free_port();
    let e = fne(&format!("http://127.0.0.1:{port}/ws"))
        .call(&effect("certify", 1, b2c()))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().starts_with("fne: cannot connect"), "{e}");
}

#[tokio::test]
async fn refunds_a_certified_invoice() {
    let stub = Stub::start(vec![]).await;
    let conn = fne(&stub.base);
    let certified = conn.call(&effect("certify", 1, b2c())).await.unwrap();
    let mut refund = effect(
        "refund",
        1,
        json!({
            "invoice_id": certified["invoice_id"],
            "number": "AV-2025-0003",
            "items": [{"id": certified["items"][1]["id"], "quantity": "1"}]
        }),
    );
    refund.idempotency_key = "case-7:avoir#1".into();
    let r = conn.call(&refund).await.unwrap();
    assert_eq!(
        r,
        json!({
            "reference": "A9606123E2500000002",
            "verification_url": "http://54.247.95.108/fr/verification/avoir-2",
            "certified_at": null,
            "credit_note_number": "AV-2025-0003",
            "credit_note_id": null,
            "refunded_invoice_id": "inv-1",
            "balance_sticker": 178,
            "warning": false,
            "already_certified": false
        })
    );
    let hits = stub.hits();
    assert_eq!(hits.len(), 2);
    let h = &hits[1];
    assert_eq!(h.method, "POST");
    assert_eq!(h.path, "/ws/external/invoices/inv-1/refund");
    assert_eq!(h.header("authorization"), "Bearer fne-api-key");
    assert_eq!(h.header("idempotency-key"), "case-7:avoir#1");
    assert_eq!(
        h.json(),
        json!({"items": [{"id": "item-1-2", "quantity": 1}]})
    );

    // A retried refund looks up first and finds the credit note.
    refund.attempt = 2;
    let again = conn.call(&refund).await.unwrap();
    assert_eq!(again["reference"], "A9606123E2500000002");
    assert_eq!(again["already_certified"], true);
    assert_eq!(stub.certifications(), 2);

    // Refused before any call: no lines, a zero quantity.
    let before = stub.hits().len();
    for (items, expected) in [
        (json!([]), "`items` is empty"),
        (
            json!([{"id": "item-1-1", "quantity": 0}]),
            "`quantity` is 0",
        ),
    ] {
        let e = conn
            .call(&effect(
                "refund",
                1,
                json!({"invoice_id": "inv-1", "items": items}),
            ))
            .await
            .unwrap_err();
        assert!(!e.is_transient() && e.to_string().contains(expected), "{e}");
    }
    // `..` would be resolved as a path segment (POST /external/invoices/refund).
    for id in ["..", "."] {
        let e = conn
            .call(&effect(
                "refund",
                1,
                json!({"invoice_id": id, "items": [{"id": "item-1-1", "quantity": 1}]}),
            ))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ConnectorError::Permanent(format!(
                "fiscal.refund: `invoice_id` is `{id}`, which is not an FNE invoice id (`invoice_id` in the certify step's result)"
            ))
        );
    }
    assert_eq!(stub.hits().len(), before);

    // An unknown invoice: the administration's 404 is permanent.
    let e = conn
        .call(&effect(
            "refund",
            1,
            json!({"invoice_id": "inv-404", "items": [{"id": "x", "quantity": 1}]}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Permanent("fne: HTTP 404: Invoice not found".into())
    );
}

#[tokio::test]
async fn status_looks_a_certification_up_by_its_reference() {
    let stub = Stub::start(vec![]).await;
    let conn = fne(&stub.base);
    let certified = conn.call(&effect("certify", 1, b2c())).await.unwrap();
    let status = |reference: &str| {
        let conn = conn.clone();
        let e = effect("status", 1, json!({ "reference": reference }));
        async move { conn.call(&e).await }
    };
    let r = status("9606123E25000000001").await.unwrap();
    let mut expected = certified.clone();
    let obj = expected.as_object_mut().unwrap();
    obj.remove("invoice_number");
    obj.remove("already_certified");
    obj.insert("found".into(), json!(true));
    obj.insert("status".into(), json!("paid"));
    assert_eq!(r, expected);
    let h = &stub.hits()[1];
    assert_eq!(
        (h.method.as_str(), h.path.as_str()),
        ("GET", "/ws/external/invoices")
    );
    assert_eq!(h.query, "reference=9606123E25000000001");
    assert_eq!(h.header("authorization"), "Bearer fne-api-key");

    assert_eq!(
        status("9606123E25000000999").await.unwrap(),
        json!({"found": false, "reference": "9606123E25000000999"})
    );
    assert_eq!(stub.certifications(), 1);

    // An administration without the read (the DGI's published API): its 404, permanent.
    stub.state.lock().unwrap().lookup_broken = true;
    assert_eq!(
        status("9606123E25000000001").await.unwrap_err(),
        ConnectorError::Permanent("fne: HTTP 404: Cannot GET /external/invoices".into())
    );
}

#[test]
fn configuration_errors_are_located() {
    let e = try_build(
        "connectors:\n  fne:\n    type: fiscal\n    api_url: http://127.0.0.1:1/ws\n    api_key_env: FNE_MISSING\n    point_of_sale: CAISSE_1\n    establishment: SIEGE\n",
    )
    .unwrap_err();
    expect_test::expect![[r#"
        dossier.yaml:5:5: error: connector `fne`: the environment variable `FNE_MISSING` is not set
          hint: export FNE_MISSING=… before starting Dossier; secrets never go in this file"#]]
    .assert_eq(&e);

    let e = try_build(
        "connectors:\n  fne:\n    type: fiscal\n    api_url: http://127.0.0.1:1/ws\n    api_key_env: FNE_API_KEY\n    establishment: SIEGE\n",
    )
    .unwrap_err();
    assert!(e.contains("missing field `point_of_sale`"), "{e}");

    let e = try_build(
        "connectors:\n  fne:\n    type: fiscal\n    api_url: http://127.0.0.1:1/ws\n    api_key: s3cret\n    point_of_sale: CAISSE_1\n    establishment: SIEGE\n",
    )
    .unwrap_err();
    assert!(
        e.starts_with("dossier.yaml:5:5: error: connector `fne`: unknown field `api_key`"),
        "{e}"
    );

    let e = try_build(
        "connectors:\n  fne:\n    type: fiscal\n    api_url: http://user:s3cret@127.0.0.1:1/ws\n    api_key_env: FNE_API_KEY\n    point_of_sale: CAISSE_1\n    establishment: SIEGE\n",
    )
    .unwrap_err();
    expect_test::expect![[r#"
        dossier.yaml:4:5: error: connector `fne`: the URL carries credentials (user:password@)
          hint: remove them: secrets go in environment variables named by the `*_env` settings"#]]
    .assert_eq(&e);

    let e = try_build(
        "connectors:\n  fne:\n    type: fiscal\n    api_url: fne.dgi.gouv.ci\n    api_key_env: FNE_API_KEY\n    point_of_sale: CAISSE_1\n    establishment: SIEGE\n",
    )
    .unwrap_err();
    assert!(
        e.starts_with("dossier.yaml:4:5: error: connector `fne`: `fne.dgi.gouv.ci` is not a URL"),
        "{e}"
    );
}
