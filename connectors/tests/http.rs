//! The `http` connector against a local axum service that records every request it receives.

mod support;

use std::path::Path;
use std::time::Duration;

use dossier_connectors::{ConnectorError, EffectRequest, Registry};
use serde_json::{json, Value};
use support::{reply, Reply, Stub};

/// A service answering by path: `/ok` 201 JSON, `/down` 503, `/missing` 404, `/garbled` bad
/// JSON, `/slow` after 3 s, `/text` plain text.
async fn service() -> Stub {
    Stub::start(|hit, _| match hit.path.as_str() {
        "/api/clients" => reply(201, r#"{"id":"CLI-42","solde":"1250.50"}"#),
        "/api/down" => reply(503, "{}"),
        "/api/missing" => reply(404, r#"{"error":"client inconnu"}"#),
        "/api/garbled" => reply(200, "{not json"),
        "/api/slow" => Reply {
            delay: Duration::from_secs(3),
            ..reply(200, "{}")
        },
        _ => Reply {
            headers: vec![("content-type", "text/plain".into())],
            ..reply(200, "bien reçu")
        },
    })
    .await
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn registry(base: &str, extra: &str) -> Registry {
    let text = format!(
        "connectors:\n  crm:\n    type: http\n    base_url: {base}/api\n    headers: {{ Accept-Language: fr }}\n    bearer_token_env: CRM_TOKEN\n    webhook_secret_env: CRM_WEBHOOK\n    timeout_seconds: 1\n{extra}"
    );
    support::load(
        &text,
        &[("CRM_TOKEN", "t0ken"), ("CRM_WEBHOOK", SECRET)],
        Path::new("."),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn effect(operation: &str, request: Value) -> EffectRequest {
    EffectRequest {
        idempotency_key: "case-1:notifier_crm#1".into(),
        case_id: "case-1".into(),
        step: "notifier_crm".into(),
        operation: operation.into(),
        request,
        attempt: 1,
        redelivered: false,
    }
}

#[tokio::test]
async fn a_json_request_carries_the_key_and_the_secrets_and_records_the_answer() {
    let server = service().await;
    let base = server.base.clone();
    let r = registry(&base, "");
    // The body as a template renders it: a string holding JSON.
    let out = r
        .call(
            "crm",
            &effect(
                "request",
                json!({"path": "clients", "query": {"pays": "CI"}, "body": "{\"nom\": \"Maquis Chez Tantie\", \"montant\": 1250.50}", "expect": [201]}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(out["status"], 201);
    assert_eq!(out["body"]["id"], "CLI-42");
    assert_eq!(out["body"]["solde"], "1250.50");
    let seen = server.hits();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(
        (s.path.as_str(), s.query.as_str()),
        ("/api/clients", "pays=CI")
    );
    assert_eq!(s.headers["idempotency-key"], "case-1:notifier_crm#1");
    assert_eq!(s.headers["authorization"], "Bearer t0ken");
    assert_eq!(s.headers["accept-language"], "fr");
    assert_eq!(s.headers["content-type"], "application/json");
    // The decimal went through as written, not through a float.
    assert_eq!(s.body, r#"{"montant":1250.50,"nom":"Maquis Chez Tantie"}"#);
}

#[tokio::test]
async fn failures_are_transient_or_permanent() {
    let server = service().await;
    let base = server.base.clone();
    let r = registry(&base, "");
    let call = |req: Value| {
        let r = r.clone();
        async move { r.call("crm", &effect("request", req)).await }
    };
    let e = call(json!({"path": "down"})).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    let e = call(json!({"path": "missing", "method": "GET"}))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Permanent(r#"http `crm`: HTTP 404: {"error":"client inconnu"}"#.into())
    );
    let e = call(json!({"path": "garbled"})).await.unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("malformed answer"),
        "{e}"
    );
    let e = call(json!({"path": "slow"})).await.unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("no answer in time"),
        "{e}"
    );
    // A 404 the step expects is an answer, not a failure.
    let ok = call(json!({"path": "missing", "expect": [200, 404]}))
        .await
        .unwrap();
    assert_eq!(ok["status"], 404);
    let before = server.hits().len();
    // Refused before any request: a body template that is not JSON, a URL elsewhere.
    let e = call(json!({"path": "clients", "body": "{\"nom\": }"}))
        .await
        .unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("line 1, column 9"),
        "{e}"
    );
    let e = call(json!({"url": "http://127.0.0.1:9/api/clients"}))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("outside the connector's base_url"),
        "{e}"
    );
    let e = call(json!({"url": format!("{base}/admin")}))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("outside the connector's base_url"),
        "{e}"
    );
    let e = call(json!({"path": "clients", "verbe": "GET"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown field `verbe`"), "{e}");
    assert_eq!(server.hits().len(), before);
    // Nobody listening.
    let port = support::free_port();
    let r = registry(&format!("http://127.0.0.1:{port}"), "");
    let e = r
        .call("crm", &effect("request", json!({"path": "clients"})))
        .await
        .unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("cannot connect"),
        "{e}"
    );
}

#[tokio::test]
async fn an_outgoing_webhook_is_signed_and_keeps_its_id_across_retries() {
    let server = service().await;
    let base = server.base.clone();
    let r = registry(&base, "");
    let req = json!({"path": "hooks/dossier", "type": "facture.payee", "data": {"facture": "FAC-2026-0101", "montant": "1250000"}});
    let mut retry = effect("webhook", req.clone());
    r.call("crm", &effect("webhook", req)).await.unwrap();
    retry.attempt = 2;
    let out = r.call("crm", &retry).await.unwrap();
    assert_eq!(out["webhook_id"], "msg_case-1:notifier_crm#1");
    let seen = server.hits();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.headers["webhook-id"], "msg_case-1:notifier_crm#1");
        let signed = dossier_connectors::webhook::Signed {
            id: s.headers.get("webhook-id").and_then(|v| v.to_str().ok()),
            timestamp: s
                .headers
                .get("webhook-timestamp")
                .and_then(|v| v.to_str().ok()),
            signature: s
                .headers
                .get("webhook-signature")
                .and_then(|v| v.to_str().ok()),
        };
        let key = dossier_connectors::webhook::decode_secret(SECRET).unwrap();
        let now = chrono::Utc::now().timestamp();
        dossier_connectors::webhook::verify(
            std::slice::from_ref(&key),
            &signed,
            s.body.as_bytes(),
            now,
            300,
        )
        .expect("the receiver's check passes");
        // A body changed on the way fails the same check.
        let tampered = s.body.replace("1250000", "1");
        assert!(dossier_connectors::webhook::verify(
            &[key],
            &signed,
            tampered.as_bytes(),
            now,
            300
        )
        .is_err());
        let body: Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(body["type"], "facture.payee");
        assert_eq!(body["data"]["facture"], "FAC-2026-0101");
    }
}

#[test]
fn configuration_errors_name_the_line() {
    let text = "connectors:\n  crm:\n    type: http\n    base_url: ftp://crm\n  erp:\n    type: http\n    base_url: https://erp.exemple.ci\n    bearer_token_env: ERP_TOKEN\n  compta:\n    type: http\n    base_url: https://compta.exemple.ci\n    mot_de_passe: secret\n";
    let e = support::load(text, &[], Path::new(".")).unwrap_err();
    expect_test::expect![[r#"
        dossier.yaml:12:5: error: connector `compta`: unknown field `mot_de_passe`, expected one of `base_url`, `headers`, `bearer_token_env`, `basic`, `header_secrets`, `webhook_secret_env`, `timeout_seconds`
          hint: the settings of the `http` connector type are described in connectors/docs/http.md
        dossier.yaml:4:5: error: connector `crm`: `ftp://crm` is not an http or https URL
          hint: write it as https://host/path
        dossier.yaml:8:5: error: connector `erp`: the environment variable `ERP_TOKEN` is not set
          hint: export ERP_TOKEN=… before starting Dossier; secrets never go in this file"#]]
    .assert_eq(&e);
}
