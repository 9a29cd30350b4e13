//! End-to-end tests of the HTTP API through the router (no socket), on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

fn demande(reference: &str) -> Value {
    json!({
        "workflow": "validation_achat",
        "input": {"demande": reference, "demandeur": "Awa Koné", "montant": "1250000.50"},
    })
}

async fn start(h: &Harness, reference: &str) -> String {
    let (s, v) = h
        .post("/api/v1/instances", "system", demande(reference))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn task_of(h: &Harness, case: &str) -> Value {
    let (s, v) = h
        .get(&format!("/api/v1/tasks?instance_id={case}"), "admin")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    items[0].clone()
}

// ---- cases ----

async fn start_read_list_and_history(h: Harness) {
    let a = start(&h, "DA-001").await;
    let b = start(&h, "DA-002").await;
    h.wait_status(&a, "waiting").await;
    let (s, v) = h
        .get(&format!("/api/v1/instances/{a}"), "operateur_achats")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "waiting");
    assert_eq!(v["current_step"], "approbation");
    assert_eq!(v["business_key"], "DA-001");
    assert_eq!(v["workflow"], "validation_achat");
    assert_eq!(v["data"]["input"]["montant"], json!("1250000.50"));
    assert_eq!(v["workflow_hash"].as_str().unwrap().len(), 64);
    assert_eq!(v["tasks"][0]["role"], "achats");
    assert_eq!(
        v["tasks"][0]["title"],
        "Demande DA-001 de Awa Koné : 1250000.50 HT"
    );
    let waiting: Vec<&str> = v["waiting_for"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["event"].as_str().unwrap())
        .collect();
    assert_eq!(waiting, vec!["demande_retiree"]);

    // Filters and keyset pagination.
    let (_, v) = h
        .get("/api/v1/instances?business_key=DA-002", "auditor")
        .await;
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![b.as_str()]);
    let (_, page1) = h
        .get(
            "/api/v1/instances?workflow=validation_achat&limit=1",
            "analyst",
        )
        .await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 1);
    let next = page1["next"].as_str().unwrap().to_string();
    let (_, page2) = h
        .get(
            &format!("/api/v1/instances?workflow=validation_achat&limit=1&after={next}"),
            "analyst",
        )
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_ne!(page1["items"][0]["id"], page2["items"][0]["id"]);
    let (_, page3) = h
        .get(
            &format!(
                "/api/v1/instances?limit=1&after={}",
                page2["next"].as_str().unwrap()
            ),
            "analyst",
        )
        .await;
    assert_eq!(page3["items"].as_array().unwrap().len(), 0);
    let (_, v) = h.get("/api/v1/instances?status=completed", "admin").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    let (_, v) = h
        .get(
            "/api/v1/instances?created_from=2026-11-02&created_to=2026-11-03",
            "admin",
        )
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let (_, v) = h
        .get("/api/v1/instances?created_from=2026-11-03", "admin")
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);

    // The history is the hash chain.
    let (s, v) = h
        .get(&format!("/api/v1/instances/{a}/history"), "auditor")
        .await;
    assert_eq!(s, StatusCode::OK);
    let events = v["events"].as_array().unwrap();
    assert_eq!(events[0]["kind"], "case_started");
    assert_eq!(events[0]["seq"], 1);
    for w in events.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
    }
    assert_eq!(v["last_hash"], events.last().unwrap()["hash"]);
    h.stop().await;
}

async fn idempotency_keys(h: Harness) {
    let body = demande("DA-010").to_string().into_bytes();
    let key = [("idempotency-key", "f3b1c2d4-0001")];
    let (s1, h1, v1) = h
        .call(
            "POST",
            "/api/v1/instances",
            Some("system"),
            &key,
            Some(body.clone()),
        )
        .await;
    assert_eq!(s1, StatusCode::CREATED, "{v1}");
    assert!(h1.get("idempotent-replayed").is_none());
    // Same key, same body (keys in another order): the first answer again, nothing new.
    let reordered = json!({"input": {"montant": "1250000.50", "demandeur": "Awa Koné", "demande": "DA-010"}, "workflow": "validation_achat"});
    let (s2, h2, v2) = h
        .call(
            "POST",
            "/api/v1/instances",
            Some("system"),
            &key,
            Some(reordered.to_string().into_bytes()),
        )
        .await;
    assert_eq!(s2, StatusCode::CREATED);
    assert_eq!(v2, v1);
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        h2.get("location").unwrap().to_str().unwrap(),
        format!("/api/v1/instances/{}", v1["id"].as_str().unwrap())
    );
    // Same key, another body: refused.
    let (s3, _, v3) = h
        .call(
            "POST",
            "/api/v1/instances",
            Some("system"),
            &key,
            Some(demande("DA-011").to_string().into_bytes()),
        )
        .await;
    assert_eq!(s3, StatusCode::CONFLICT, "{v3}");
    assert_eq!(v3["error"], "idempotency_key_reused");
    // Another caller may use the same key text for its own request.
    let (s4, _, v4) = h
        .call("POST", "/api/v1/instances", Some("admin"), &key, Some(body))
        .await;
    assert_eq!(s4, StatusCode::CREATED);
    assert_ne!(v4["id"], v1["id"]);
    assert_eq!(h.case_count().await, 2);
    // Ten concurrent retries of one request start one case.
    let body = demande("DA-012").to_string().into_bytes();
    let mut joins = Vec::new();
    for _ in 0..10 {
        let app = h.app.clone();
        let key_text = h.keys["system"].clone();
        let body = body.clone();
        joins.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::post("/api/v1/instances")
                .header("authorization", format!("Bearer {key_text}"))
                .header("content-type", "application/json")
                .header("idempotency-key", "concurrent-1")
                .body(axum::body::Body::from(body))
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for j in joins {
        let (s, v) = j.await.unwrap();
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(h.case_count().await, 3);
    h.stop().await;
}

async fn bad_input_gets_a_4xx_and_writes_nothing(h: Harness) {
    let audit_before = h.audit_count().await;
    let cases = |v: &Value| v["error"].as_str().unwrap_or("").to_string();
    // Malformed JSON.
    let (s, _, v) = h
        .call(
            "POST",
            "/api/v1/instances",
            Some("system"),
            &[],
            Some(b"{\"workflow\": ".to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(cases(&v), "invalid_json");
    assert!(
        v["message"].as_str().unwrap().contains("not valid JSON"),
        "{v}"
    );
    assert_eq!(v["details"]["line"], 1);
    // Unknown field.
    let (s, v) = h
        .post(
            "/api/v1/instances",
            "system",
            json!({"workflow": "validation_achat", "inptu": {}}),
        )
        .await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::BAD_REQUEST, "invalid_body".into()),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("inptu"), "{v}");
    // Unknown workflow.
    let (s, v) = h
        .post(
            "/api/v1/instances",
            "system",
            json!({"workflow": "validation_achats", "input": {}}),
        )
        .await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_workflow".into()),
        "{v}"
    );
    assert_eq!(v["details"]["known"], json!(["validation_achat"]));
    // Input that does not fit the schema: every field named.
    let (s, v) = h.post("/api/v1/instances", "system", json!({"workflow": "validation_achat", "input": {"demande": "DA-1", "montant": "beaucoup", "couleur": "bleu"}})).await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input".into()),
        "{v}"
    );
    let fields: Vec<&str> = v["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for f in ["montant", "couleur", "demandeur"] {
        assert!(fields.contains(&f), "{f} missing from {v}");
    }
    // Not JSON at all.
    let (s, _, v) = h
        .call(
            "POST",
            "/api/v1/instances",
            Some("system"),
            &[("content-type", "text/plain")],
            Some(b"hello".to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Oversized body.
    let big = json!({"workflow": "validation_achat", "input": {"demande": "x".repeat(70 * 1024)}});
    let (s, v) = h.post("/api/v1/instances", "system", big).await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into()),
        "{v}"
    );
    // Bad idempotency key.
    let long = "k".repeat(256);
    let (s, _, v) = h
        .call(
            "POST",
            "/api/v1/instances",
            Some("system"),
            &[("idempotency-key", long.as_str())],
            Some(demande("DA-9").to_string().into_bytes()),
        )
        .await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::BAD_REQUEST, "bad_idempotency_key".into())
    );
    // Unknown things.
    let (s, v) = h.get("/api/v1/instances/nope", "admin").await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::NOT_FOUND, "unknown_instance".into())
    );
    let (s, v) = h
        .post(
            "/api/v1/tasks/nope/complete",
            "admin",
            json!({"outcome": "approuve"}),
        )
        .await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::NOT_FOUND, "unknown_task".into())
    );
    let (s, v) = h.get("/api/v1/instances?statut=waiting", "admin").await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::BAD_REQUEST, "unknown_parameter".into())
    );
    let (s, v) = h.get("/api/v1/instances?status=asleep", "admin").await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::BAD_REQUEST, "bad_parameter".into())
    );
    let (s, v) = h.get("/api/v1/instances?limit=0", "admin").await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::BAD_REQUEST, "bad_parameter".into())
    );
    let (s, hd, v) = h
        .call("DELETE", "/api/v1/instances", Some("admin"), &[], None)
        .await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into()),
        "{v}"
    );
    assert!(hd.get("allow").is_some());
    let (s, _, v) = h
        .call("GET", "/api/v1/instances/%FF%FE", Some("admin"), &[], None)
        .await;
    assert!(s.is_client_error(), "{s}");
    assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    let (s, v) = h.get("/api/v1/nothing-here", "admin").await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::NOT_FOUND, "no_such_endpoint".into())
    );
    // Credentials.
    let (s, _, v) = h.call("GET", "/api/v1/instances", None, &[], None).await;
    assert_eq!(
        (s, cases(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let (s, _, v) = h
        .call(
            "GET",
            "/api/v1/instances",
            None,
            &[("authorization", "Bearer dsk_0000000000_ffff")],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _, v) = h
        .call(
            "GET",
            "/api/v1/instances",
            None,
            &[("authorization", "Bearer eyJhbGciOi.x.y")],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        v["message"].as_str().unwrap().contains("no OIDC provider"),
        "{v}"
    );
    // Nothing of all that was written.
    assert_eq!(h.case_count().await, 0);
    assert_eq!(h.audit_count().await, audit_before);
    // A revoked key stops working at once.
    h.store.revoke_api_key("system", 1).await.unwrap();
    let (s, v) = h.post("/api/v1/instances", "system", demande("DA-1")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["message"].as_str().unwrap().contains("revoked"), "{v}");
    h.stop().await;
}

// ---- events ----

async fn events_reach_the_correlated_cases(h: Harness) {
    let a = start(&h, "DA-100").await;
    let b = start(&h, "DA-101").await;
    h.wait_status(&b, "waiting").await;
    // Withdrawing DA-100 reaches that case only.
    let (s, v) = h
        .post(
            "/api/v1/events",
            "system",
            json!({"name": "demande_retiree", "payload": {"demande": "DA-100"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["reached"], json!([a]));
    h.wait_status(&a, "completed").await;
    let (_, va) = h.get(&format!("/api/v1/instances/{a}"), "admin").await;
    assert_eq!(va["data"]["statut"], "retiree");
    let (_, vb) = h.get(&format!("/api/v1/instances/{b}"), "admin").await;
    assert_eq!(vb["status"], "waiting");
    // An event to one case that does not wait for it: 409 with what it waits for.
    let (s, v) = h
        .post(
            &format!("/api/v1/instances/{b}/events"),
            "system",
            json!({"name": "livraison", "payload": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "not_waiting");
    assert_eq!(v["details"]["waiting_for"], json!(["demande_retiree"]));
    // To one case, whatever the correlation keys.
    let (s, v) = h
        .post(
            &format!("/api/v1/instances/{b}/events"),
            "admin",
            json!({"name": "demande_retiree", "payload": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    h.wait_status(&b, "completed").await;
    // No case waits: the `event` trigger starts one with the payload as input.
    let payload = json!({"demande": "DA-102", "demandeur": "Kouassi", "montant": "90000"});
    let (s, _, v) = h
        .call(
            "POST",
            "/api/v1/events",
            Some("system"),
            &[("idempotency-key", "ev-1")],
            Some(
                json!({"name": "demande_creee", "payload": payload})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let started = v["started"].as_array().unwrap().clone();
    assert_eq!(started.len(), 1);
    let c = started[0].as_str().unwrap();
    h.wait_status(c, "waiting").await;
    assert_eq!(
        h.store
            .case(c)
            .await
            .unwrap()
            .unwrap()
            .business_key
            .as_deref(),
        Some("DA-102")
    );
    // The same request again: nothing new, the first answer.
    let (s, hd, v2) = h
        .call(
            "POST",
            "/api/v1/events",
            Some("system"),
            &[("idempotency-key", "ev-1")],
            Some(
                json!({"name": "demande_creee", "payload": payload})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(v2["started"], json!(started));
    assert_eq!(hd.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(h.case_count().await, 3);

    // A retry answers from the first delivery: a case that began to wait since is not reached.
    let retire = json!({"name": "demande_retiree", "payload": {"demande": "DA-103"}})
        .to_string()
        .into_bytes();
    let (s, hd, v) = h
        .call(
            "POST",
            "/api/v1/events",
            Some("system"),
            &[("idempotency-key", "ev-2")],
            Some(retire.clone()),
        )
        .await;
    assert_eq!(
        (s, v["reached"].clone()),
        (StatusCode::ACCEPTED, json!([])),
        "{v}"
    );
    assert!(
        hd.get("idempotent-replayed").is_none(),
        "a first call is not a replay"
    );
    let first = start(&h, "DA-103").await;
    h.wait_status(&first, "waiting").await;
    let (_, _, v) = h
        .call(
            "POST",
            "/api/v1/events",
            Some("system"),
            &[("idempotency-key", "ev-3")],
            Some(retire.clone()),
        )
        .await;
    assert_eq!(v["reached"], json!([first]));
    h.wait_status(&first, "completed").await;
    let second = start(&h, "DA-103").await;
    h.wait_status(&second, "waiting").await;
    let (s, hd, v) = h
        .call(
            "POST",
            "/api/v1/events",
            Some("system"),
            &[("idempotency-key", "ev-3")],
            Some(retire),
        )
        .await;
    assert_eq!(
        (s, v["reached"].clone()),
        (StatusCode::ACCEPTED, json!([first])),
        "{v}"
    );
    assert_eq!(hd.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        h.store.case(&second).await.unwrap().unwrap().status,
        "waiting"
    );
    // An instance event's key belongs to that case: the same key and body sent to another case
    // is another request.
    let third = start(&h, "DA-104").await;
    h.wait_status(&third, "waiting").await;
    let body = json!({"name": "demande_retiree", "payload": {}})
        .to_string()
        .into_bytes();
    for case in [&second, &third] {
        let (s, _, v) = h
            .call(
                "POST",
                &format!("/api/v1/instances/{case}/events"),
                Some("system"),
                &[("idempotency-key", "same")],
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        h.wait_status(case, "completed").await;
    }
    // Audited: each call that delivered or started something, once; no refusal, no replay.
    let trail = h.store.audit(0, 0).await.unwrap();
    let count = |action: &str| trail.iter().filter(|r| r.entry.action == action).count();
    assert_eq!(
        (
            count("events.send"),
            count("instances.event"),
            count("instances.start")
        ),
        (3, 3, 5)
    );
    h.stop().await;
}

// ---- tasks ----

async fn task_lifecycle_with_four_eyes(h: Harness) {
    let case = start(&h, "DA-200").await;
    h.wait_status(&case, "waiting").await;
    let task = task_of(&h, &case).await;
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["status"], "open");
    assert_eq!(task["four_eyes"], true);
    assert_eq!(task["outcomes"], json!(["approuve", "rejete"]));
    assert_eq!(task["due_at"], "2026-11-02T10:00:00.000Z");
    let path = |what: &str| format!("/api/v1/tasks/{id}/{what}");

    // The inbox of each operator holds the tasks of their roles only.
    let (_, v) = h.get("/api/v1/tasks", "operateur_achats").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (_, v) = h.get("/api/v1/tasks", "operateur_compta").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    let (s, _) = h.get("/api/v1/tasks?role=achats", "operateur_compta").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = h.post(&path("claim"), "operateur_compta", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // Claim, then the others cannot take or decide it.
    let (s, v) = h.post(&path("claim"), "operateur_achats", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["assignee"].as_str()),
        (Some("claimed"), Some("operateur_achats"))
    );
    let (s, v) = h.post(&path("claim"), "operatrice_achats", json!({})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("task_claimed"))
    );
    let (s, v) = h
        .post(
            &path("complete"),
            "operatrice_achats",
            json!({"outcome": "approuve"}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("task_claimed"))
    );
    let (s, _) = h
        .post(&path("release"), "operatrice_achats", json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, v) = h
        .get(
            "/api/v1/tasks?assignee=operateur_achats&status=claimed",
            "admin",
        )
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);

    // Form data is checked against the task's fields; nothing is recorded when it is refused.
    let before = h.kinds(&case).await.len();
    let (s, v) = h
        .post(
            &path("complete"),
            "operateur_achats",
            json!({"outcome": "valide"}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_outcome")),
        "{v}"
    );
    assert_eq!(v["details"]["outcomes"], json!(["approuve", "rejete"]));
    let (s, v) = h
        .post(
            &path("complete"),
            "operateur_achats",
            json!({"outcome": "approuve", "data": {"budget": "loisirs"}}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_form")),
        "{v}"
    );
    assert_eq!(v["details"]["fields"][0]["field"], "budget");
    assert_eq!(h.kinds(&case).await.len(), before);

    // First decision: the task waits for a second person.
    let (s, v) = h.post(&path("complete"), "operateur_achats", json!({"outcome": "approuve", "data": {"budget": "investissement", "commentaire": "conforme"}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["task"]["status"], "awaiting_second");
    assert_eq!(v["task"]["first_decision_by"], "operateur_achats");
    assert_eq!(v["task"]["assignee"], Value::Null);
    // The same person cannot claim nor decide it again.
    let (s, v) = h.post(&path("claim"), "operateur_achats", json!({})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("four_eyes")),
        "{v}"
    );
    let (s, v) = h
        .post(
            &path("complete"),
            "operateur_achats",
            json!({"outcome": "approuve", "data": {}}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("four_eyes")),
        "{v}"
    );
    // A claim of a task awaiting its second decision is exclusive too.
    let (s, _) = h.post(&path("claim"), "admin", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.post(&path("claim"), "operatrice_achats", json!({})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("task_claimed")),
        "{v}"
    );
    let (s, _) = h.post(&path("release"), "admin", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    // Another one claims, releases (the task stays awaiting its second decision), decides.
    let (s, v) = h.post(&path("claim"), "operatrice_achats", json!({})).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("awaiting_second")),
        "{v}"
    );
    let (s, v) = h
        .post(&path("release"), "operatrice_achats", json!({}))
        .await;
    assert_eq!(
        (s, v["status"].as_str(), v["assignee"].as_str()),
        (StatusCode::OK, Some("awaiting_second"), None),
        "{v}"
    );
    let (s, v) = h
        .post(
            &path("complete"),
            "operatrice_achats",
            json!({"outcome": "approuve", "data": {"commentaire": "vu"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["task"]["status"], "completed");
    assert_eq!(v["task"]["completed_by"], "operatrice_achats");
    // Completed: no more work on it.
    let (s, v) = h
        .post(
            &path("complete"),
            "operatrice_achats",
            json!({"outcome": "rejete"}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("task_not_open"))
    );
    let (s, _) = h.post(&path("claim"), "operateur_achats", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // The case moved on, and its history says who decided what.
    h.wait_status(&case, "waiting").await;
    let (_, c) = h.get(&format!("/api/v1/instances/{case}"), "admin").await;
    assert_eq!(c["current_step"], "commande");
    let history = h.store.history(&case).await.unwrap();
    let decided: Vec<Value> = history
        .iter()
        .filter(|e| e.kind == "task_decided")
        .map(|e| serde_json::from_str::<Value>(&e.payload).unwrap())
        .collect();
    assert_eq!(decided.len(), 2);
    assert_eq!(decided[0]["by"], "operateur_achats");
    assert_eq!(decided[0]["data"]["budget"], "investissement");
    assert_eq!(decided[1]["by"], "operatrice_achats");
    // The delivery ends the case.
    let (s, v) = h
        .post(
            "/api/v1/events",
            "system",
            json!({"name": "livraison", "payload": {"demande": "DA-200", "bon": "BL-77"}}),
        )
        .await;
    assert_eq!(
        (s, v["reached"].clone()),
        (StatusCode::ACCEPTED, json!([case]))
    );
    h.wait_status(&case, "completed").await;
    h.stop().await;
}

async fn reminders_and_escalation_run_on_durable_timers(h: Harness) {
    let case = start(&h, "DA-300").await;
    h.wait_status(&case, "waiting").await;
    let task = task_of(&h, &case).await;
    let id = task["id"].as_str().unwrap().to_string();
    let (_, v) = h.get("/api/v1/tasks?overdue=true", "admin").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    // One hour later: the reminder.
    h.clock.advance(chrono::Duration::minutes(61));
    for _ in 0..300 {
        if h.kinds(&case).await.iter().any(|k| k == "task_reminded") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(h.kinds(&case).await.iter().any(|k| k == "task_reminded"));
    // Past the due date: overdue, escalated to the direction's inbox.
    h.clock.advance(chrono::Duration::minutes(60));
    let mut escalated = Value::Null;
    for _ in 0..300 {
        let (_, t) = h.get(&format!("/api/v1/tasks/{id}"), "admin").await;
        if t["role"] == "direction" {
            escalated = t;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(escalated["role"], "direction", "never escalated");
    assert_eq!(escalated["overdue"], true);
    assert!(h.kinds(&case).await.iter().any(|k| k == "task_overdue"));
    let (_, v) = h.get("/api/v1/tasks?overdue=true", "admin").await;
    assert_eq!(v["items"][0]["id"], json!(id));
    let (_, v) = h.get("/api/v1/tasks", "directeur").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    // A decision prepared before the escalation (seen in the `achats` inbox) is refused.
    let stale = dossier_runtime::TaskGuard {
        task: id.clone(),
        role: "achats".into(),
        holder: "operateur_achats".into(),
    };
    let e = h
        .engine
        .decide_task_guarded("approuve", json!({}), "operateur_achats", stale, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, dossier_runtime::RuntimeError::TaskMoved { ref role, .. } if role == "direction"),
        "{e}"
    );
    // The purchasing operators no longer work it; the director decides.
    let (s, _) = h
        .post(
            &format!("/api/v1/tasks/{id}/complete"),
            "operateur_achats",
            json!({"outcome": "rejete"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = h
        .post(
            &format!("/api/v1/tasks/{id}/complete"),
            "directeur",
            json!({"outcome": "rejete"}),
        )
        .await;
    assert_eq!(
        (s, v["task"]["status"].as_str()),
        (StatusCode::OK, Some("awaiting_second")),
        "{v}"
    );
    let (s, v) = h
        .post(
            &format!("/api/v1/tasks/{id}/complete"),
            "admin",
            json!({"outcome": "rejete"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.wait_status(&case, "completed").await;
    let (_, c) = h.get(&format!("/api/v1/instances/{case}"), "auditor").await;
    assert_eq!(c["data"]["statut"], "rejetee");
    h.stop().await;
}

async fn cancel_runs_and_ended_cases_refuse(h: Harness) {
    let case = start(&h, "DA-400").await;
    h.wait_status(&case, "waiting").await;
    let (s, v) = h
        .post(
            &format!("/api/v1/instances/{case}/cancel"),
            "admin",
            json!({"reason": "doublon"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.wait_status(&case, "cancelled").await;
    let task = task_of(&h, &case).await;
    assert_eq!(task["status"], "cancelled");
    let (s, v) = h
        .post(
            &format!("/api/v1/instances/{case}/cancel"),
            "admin",
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("instance_ended")),
        "{v}"
    );
    // Cancel with no body at all.
    let other = start(&h, "DA-401").await;
    h.wait_status(&other, "waiting").await;
    let (s, _, v) = h
        .call(
            "POST",
            &format!("/api/v1/instances/{other}/cancel"),
            Some("admin"),
            &[],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.stop().await;
}

// ---- delivery receipts ----

async fn receipts_in_history(h: &Harness, case: &str) -> Vec<Value> {
    let (s, v) = h
        .get(&format!("/api/v1/instances/{case}/history"), "auditor")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "receipt_received")
        .cloned()
        .collect()
}

async fn receipts_are_checked_and_recorded(h: Harness) {
    let case = start(&h, "DA-450").await;
    h.wait_status(&case, "waiting").await;
    let receipt = |status: &str| {
        json!({"case": case, "key": format!("{case}:sms#1"), "id": "SM-1", "status": status})
            .to_string()
            .into_bytes()
    };
    let post = |path: &'static str, token: &'static str, body: Vec<u8>| {
        let h = &h;
        async move {
            let headers = [("x-token", token), ("host", "dossier.exemple.ci")];
            h.call("POST", path, None, &headers, Some(body)).await
        }
    };
    // Refused before anything is recorded: an unknown connector, one that takes no receipts,
    // a caller the connector does not recognise, a body it cannot read, an unknown case.
    let (s, _, v) = post("/receipts/inconnu", "bon", receipt("delivered")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_receipt_endpoint")),
        "{v}"
    );
    let (s, _, v) = post("/receipts/log", "bon", receipt("delivered")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _, v) = post("/receipts/sms_test", "mauvais", receipt("delivered")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _, v) = post("/receipts/sms_test", "bon", b"{pas du json".to_vec()).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_receipt")),
        "{v}"
    );
    let ghost = json!({"case": "00000000-0000-0000-0000-000000000000", "key": "k", "id": "SM-9", "status": "delivered"});
    let (s, _, v) = post("/receipts/sms_test", "bon", ghost.to_string().into_bytes()).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(receipts_in_history(&h, &case).await.is_empty());

    // Recorded once, however often the provider repeats it; the URL is rebuilt as called.
    let (s, _, v) = post("/receipts/sms_test?case=1", "bon", receipt("delivered")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["duplicate"], false);
    let (s, _, v) = post("/receipts/sms_test?case=1", "bon", receipt("delivered")).await;
    assert_eq!((s, &v["duplicate"]), (StatusCode::OK, &json!(true)), "{v}");
    let got = receipts_in_history(&h, &case).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let p = &got[0]["payload"];
    assert_eq!(p["connector"], "sms_test");
    assert_eq!(p["message_id"], "SM-1");
    assert_eq!(p["status"], "delivered");
    assert_eq!(p["key"], format!("{case}:sms#1"));
    assert_eq!(
        p["detail"]["url"],
        "http://dossier.exemple.ci/receipts/sms_test?case=1"
    );
    // The case did not move.
    let (_, c) = h.get(&format!("/api/v1/instances/{case}"), "auditor").await;
    assert_eq!(c["status"], "waiting");

    // A receipt arriving after the case ended is still recorded, and the history replays.
    let (s, _) = h
        .post(
            &format!("/api/v1/instances/{case}/cancel"),
            "admin",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    h.wait_status(&case, "cancelled").await;
    let (s, _, v) = post("/receipts/sms_test", "bon", receipt("read")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(receipts_in_history(&h, &case).await.len(), 2);
    let (_, c) = h.get(&format!("/api/v1/instances/{case}"), "auditor").await;
    assert_eq!(c["status"], "cancelled");
    let (s, v) = h
        .post(
            &format!("/api/v1/instances/{case}/replay"),
            "auditor",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["chain"]["intact"], true, "{v}");
    assert_eq!(v["replay"]["identical"], true, "{v}");
    h.stop().await;
}

// ---- webhooks ----

async fn webhooks_are_verified_and_deduplicated(h: Harness) {
    let body = json!({"reference": "DA-500", "auteur": "Fatou", "montant": "300000"})
        .to_string()
        .into_bytes();
    let now = h.now_secs();
    let send = |headers: Vec<(String, String)>, body: Vec<u8>, hook: &'static str| {
        let h = &h;
        async move {
            let hs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            h.call("POST", &format!("/hooks/{hook}"), None, &hs, Some(body))
                .await
        }
    };
    let audit_before = h.audit_count().await;
    // Refusals first: nothing may be written by any of them.
    let mut bad = signed_headers(HOOK_SECRET, "msg_1", now, &body);
    bad[2].1 = signed_headers("whsec_YXV0cmUgc2VjcmV0", "msg_1", now, &body)[2]
        .1
        .clone();
    let (s, _, v) = send(bad, body.clone(), "demande_achat").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("bad_signature")),
        "{v}"
    );
    let (s, _, v) = send(
        signed_headers(HOOK_SECRET, "msg_1", now - 301, &body),
        body.clone(),
        "demande_achat",
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("timestamp_out_of_tolerance")),
        "{v}"
    );
    let mut tampered = body.clone();
    tampered[20] ^= 1;
    let (s, _, _) = send(
        signed_headers(HOOK_SECRET, "msg_1", now, &body),
        tampered,
        "demande_achat",
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, v) = send(
        signed_headers(HOOK_SECRET, "msg_1", now, &body)[..2].to_vec(),
        body.clone(),
        "demande_achat",
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_header"))
    );
    let (s, _, v) = send(
        signed_headers(HOOK_SECRET, "msg_1", now, &body),
        body.clone(),
        "inconnu",
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_hook"))
    );
    let not_json = b"reference=DA-500".to_vec();
    let (s, _, v) = send(
        signed_headers(HOOK_SECRET, "msg_1", now, &not_json),
        not_json,
        "demande_achat",
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let huge = vec![b' '; 65 * 1024];
    let (s, _, _) = send(
        signed_headers(HOOK_SECRET, "msg_1", now, &huge),
        huge,
        "demande_achat",
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.case_count().await, 0);
    assert_eq!(h.audit_count().await, audit_before);

    // A good delivery starts the case, with the trigger's input mapping.
    let (s, _, v) = send(
        signed_headers(HOOK_SECRET, "msg_1", now, &body),
        body.clone(),
        "demande_achat",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["duplicate"], false);
    let case = v["started"][0].as_str().unwrap().to_string();
    h.wait_status(&case, "waiting").await;
    let rec = h.store.case(&case).await.unwrap().unwrap();
    assert_eq!(rec.business_key.as_deref(), Some("DA-500"));
    let data: Value = serde_json::from_str(&rec.data).unwrap();
    assert_eq!(data["input"]["demandeur"], "Fatou");
    // Redelivered (even signed later, with the rotated key): 200, the same case, nothing new.
    let (s, _, v) = send(
        signed_headers(HOOK_SECRET_NEW, "msg_1", now + 60, &body),
        body.clone(),
        "demande_achat",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["duplicate"].clone(), v["started"].clone()),
        (json!(true), json!([case]))
    );
    assert_eq!(h.case_count().await, 1);
    // The same id with another body is not a redelivery.
    let other = json!({"reference": "DA-501", "auteur": "Fatou", "montant": "1"})
        .to_string()
        .into_bytes();
    let (s, _, v) = send(
        signed_headers(HOOK_SECRET, "msg_1", now, &other),
        other,
        "demande_achat",
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("webhook_id_reused"))
    );
    assert_eq!(h.case_count().await, 1);

    // A notice no case waits for: accepted, not a duplicate, nothing recorded for it.
    let early = json!({"demande": "DA-999"}).to_string().into_bytes();
    let (s, _, v) = send(
        signed_headers(TRANSPORT_SECRET, "liv_0", now, &early),
        early,
        "transporteur",
    )
    .await;
    assert_eq!(
        (s, v["duplicate"].clone(), v["reached"].clone()),
        (StatusCode::ACCEPTED, json!(false), json!([])),
        "{v}"
    );
    // A hook configured as an event: the carrier's delivery notice reaches the waiting case.
    let id = task_of(&h, &case).await["id"].as_str().unwrap().to_string();
    for who in ["operateur_achats", "operatrice_achats"] {
        let (s, v) = h
            .post(
                &format!("/api/v1/tasks/{id}/complete"),
                who,
                json!({"outcome": "approuve"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    for _ in 0..300 {
        if h.store
            .case(&case)
            .await
            .unwrap()
            .unwrap()
            .current_step
            .as_deref()
            == Some("commande")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let notice = json!({"demande": "DA-500", "bon": "BL-1"})
        .to_string()
        .into_bytes();
    let (s, _, v) = send(
        signed_headers(TRANSPORT_SECRET, "liv_1", now, &notice),
        notice.clone(),
        "transporteur",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["reached"], json!([case]));
    h.wait_status(&case, "completed").await;
    let (s, _, v) = send(
        signed_headers(TRANSPORT_SECRET, "liv_1", now, &notice),
        notice,
        "transporteur",
    )
    .await;
    assert_eq!(
        (s, v["duplicate"].clone(), v["reached"].clone()),
        (StatusCode::OK, json!(true), json!([case]))
    );
    let received = h
        .kinds(&case)
        .await
        .iter()
        .filter(|k| *k == "event_received")
        .count();
    assert_eq!(received, 1);
    // Audited once per delivery that did something, in the transaction that did it.
    let actions: Vec<String> = h
        .store
        .audit(0, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert_eq!(
        actions,
        vec![
            "hooks.receive",
            "tasks.complete",
            "tasks.complete",
            "hooks.receive"
        ]
    );
    h.stop().await;
}

// ---- roles ----

/// Every documented endpoint, every role: 403 exactly when the role is not allowed.
async fn role_matrix(h: Harness) {
    let case = start(&h, "DA-600").await;
    h.wait_status(&case, "waiting").await;
    let task = task_of(&h, &case).await["id"].as_str().unwrap().to_string();
    let callers = ["admin", "analyst", "auditor", "system", "operateur_achats"];
    fn role_of(c: &str) -> &str {
        if c == "operateur_achats" {
            "operator"
        } else {
            c
        }
    }
    let mut checked = 0;
    for e in dossier_server::api::ENDPOINTS {
        if e.roles.is_empty() {
            continue;
        }
        let path = e.path.replace(
            "{id}",
            if e.path.contains("tasks") {
                &task
            } else {
                &case
            },
        );
        for caller in callers {
            let body = if e.method == "post" {
                Some(b"{}".to_vec())
            } else {
                None
            };
            let (s, _, v) = h
                .call(&e.method.to_uppercase(), &path, Some(caller), &[], body)
                .await;
            let allowed = e.roles.contains(&role_of(caller));
            assert_eq!(
                s == StatusCode::FORBIDDEN,
                !allowed,
                "{} {} as {caller}: {s} {v}",
                e.method,
                e.path
            );
            assert_ne!(
                s,
                StatusCode::NOT_FOUND,
                "{} {} is documented but not routed: {v}",
                e.method,
                e.path
            );
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{} {}", e.method, e.path);
            checked += 1;
        }
        let (s, _, _) = h
            .call(&e.method.to_uppercase(), &path, None, &[], None)
            .await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{} {} without a key",
            e.method,
            e.path
        );
    }
    assert!(checked >= 17 * 5, "{checked}");
    // Auditors and analysts never changed anything: every change in the trail is someone else's.
    let trail = h.store.audit(0, 0).await.unwrap();
    assert!(trail
        .iter()
        .any(|r| r.entry.action == "instances.cancel" && r.entry.role == "admin"));
    for r in &trail {
        assert!(
            !["auditor", "analyst"].contains(&r.entry.role.as_str()),
            "{} changed something: {:?}",
            r.entry.role,
            r.entry
        );
    }
    h.stop().await;
}

// ---- audit, replay, export ----

async fn audit_trail_replay_and_export(h: Harness) {
    let case = start(&h, "DA-700").await;
    h.wait_status(&case, "waiting").await;
    let id = task_of(&h, &case).await["id"].as_str().unwrap().to_string();
    h.post(
        &format!("/api/v1/tasks/{id}/claim"),
        "operateur_achats",
        json!({}),
    )
    .await;
    h.post(
        &format!("/api/v1/tasks/{id}/complete"),
        "operateur_achats",
        json!({"outcome": "rejete", "data": {"commentaire": "hors budget"}}),
    )
    .await;
    let (s, _, _) = h
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/complete"),
            Some("operatrice_achats"),
            &[("x-request-id", "req-42")],
            Some(json!({"outcome": "rejete"}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    h.wait_status(&case, "completed").await;

    let (s, v) = h.get("/api/v1/audit", "auditor").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "instances.start",
            "tasks.claim",
            "tasks.complete",
            "tasks.complete"
        ]
    );
    assert!(items[0]["actor"].as_str().unwrap().starts_with("key:"));
    assert_eq!(items[0]["role"], "system");
    assert_eq!(items[0]["target"], json!(case));
    assert_eq!(items[2]["details"]["outcome"], "rejete");
    assert_eq!(items[3]["request_id"], "req-42");
    assert_eq!(items[3]["role"], "achats,operator");
    assert_eq!(items[3]["origin"], "in-process");
    let (_, v) = h.get("/api/v1/audit/verify", "auditor").await;
    assert_eq!(
        (v["intact"].clone(), v["entries"].clone()),
        (json!(true), json!(4)),
        "{v}"
    );
    let (_, v) = h.get("/api/v1/audit?after=2&limit=1", "admin").await;
    assert_eq!(v["items"][0]["seq"], 3);
    assert_eq!(v["next"], 3);

    // Replay and export.
    let (s, v) = h
        .post(
            &format!("/api/v1/instances/{case}/replay"),
            "auditor",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["chain"]["intact"], true);
    assert_eq!(v["replay"]["identical"], true);
    let (s, v) = h
        .get(&format!("/api/v1/instances/{case}/export"), "auditor")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["format"], "dossier-case/1");
    let decisions = v["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0]["by"], "operateur_achats");
    assert_eq!(decisions[0]["data"]["commentaire"], "hors budget");
    assert!(!v["definitions"].as_object().unwrap().is_empty());

    // Someone edits the audit table behind the API's back: the chain says where.
    tamper_audit(&h, 2).await;
    let (_, v) = h.get("/api/v1/audit/verify", "auditor").await;
    assert_eq!(
        (v["intact"].clone(), v["broken_at"].clone()),
        (json!(false), json!(2)),
        "{v}"
    );
    h.stop().await;
}

async fn tamper_audit(h: &Harness, seq: i64) {
    use sqlx::Connection;
    let sql = format!("UPDATE audit SET actor = 'key:quelquun' WHERE seq = {seq}");
    match h.backend {
        Backend::Sqlite => {
            let path = h.sqlite_path.as_ref().unwrap();
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
                .await
                .unwrap();
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(h.pg_url.as_ref().unwrap())
                .await
                .unwrap();
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
    }
}

// ---- workflows, health, metrics ----

async fn workflows_validation_health_and_metrics(h: Harness) {
    let (s, v) = h.get("/api/v1/workflows", "analyst").await;
    assert_eq!(s, StatusCode::OK);
    let wf = &v["items"][0];
    assert_eq!(wf["id"], "validation_achat");
    assert_eq!(wf["deployed"]["version"], 1);
    assert_eq!(wf["versions"][0]["hash"], wf["deployed"]["hash"]);
    assert_eq!(wf["triggers"][0]["webhook"], "demande_achat");

    let good = std::fs::read_to_string(fixture().join("workflows/validation_achat.yaml")).unwrap();
    let (s, v) = h
        .post(
            "/api/v1/workflows/validate",
            "analyst",
            json!({"files": {"workflows/validation_achat.yaml": good}}),
        )
        .await;
    assert_eq!(
        (s, v["valid"].clone()),
        (StatusCode::OK, json!(true)),
        "{v}"
    );
    let broken = good.replace("goto: retiree", "goto: retire");
    let (s, v) = h
        .post(
            "/api/v1/workflows/validate",
            "analyst",
            json!({"files": {"workflows/validation_achat.yaml": broken}}),
        )
        .await;
    assert_eq!(
        (s, v["valid"].clone()),
        (StatusCode::OK, json!(false)),
        "{v}"
    );
    let d = &v["diagnostics"][0];
    assert_eq!(d["file"], "workflows/validation_achat.yaml");
    assert_eq!(d["severity"], "error");
    assert!(d["line"].as_u64().unwrap() > 1);
    assert!(d["message"].as_str().unwrap().contains("retire"), "{d}");
    let (s, v) = h
        .post(
            "/api/v1/workflows/validate",
            "analyst",
            json!({"files": {"../etc/passwd": "x"}}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_path"))
    );
    // Validation deploys nothing.
    let (_, v) = h.get("/api/v1/workflows", "analyst").await;
    assert_eq!(v["items"][0]["versions"].as_array().unwrap().len(), 1);

    let (s, _, v) = h.call("GET", "/healthz", None, &[], None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, _, _) = h.call("GET", "/readyz", None, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, v) = h.call("GET", "/api/v1/openapi.json", None, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["openapi"], "3.1.0");
    assert_eq!(
        v["paths"]["/api/v1/tasks/{id}/complete"]["post"]["x-roles"],
        json!(["admin", "operator"])
    );

    let case = start(&h, "DA-800").await;
    h.wait_status(&case, "waiting").await;
    let (s, _, v) = h.call("GET", "/metrics", None, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap().to_string();
    for line in [
        "dossier_cases{status=\"waiting\"} 1",
        "dossier_cases{status=\"completed\"} 0",
        "dossier_tasks{status=\"open\"} 1",
        "dossier_tasks_overdue 0",
        "dossier_timer_lag_seconds 0",
        "# TYPE dossier_effect_latency_seconds histogram",
        // Counted under the route template, never the ids.
        "dossier_http_requests_total{route=\"/api/v1/instances\",method=\"POST\",status=\"201\"} 1",
        "dossier_http_requests_total{route=\"/api/v1/workflows/validate\",method=\"POST\",status=\"422\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "`{line}` missing from\n{text}"
        );
    }
    let steps: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("dossier_steps_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(steps >= 1, "{text}");
    h.stop().await;
}

server_tests!(
    start_read_list_and_history,
    idempotency_keys,
    bad_input_gets_a_4xx_and_writes_nothing,
    events_reach_the_correlated_cases,
    task_lifecycle_with_four_eyes,
    reminders_and_escalation_run_on_durable_timers,
    cancel_runs_and_ended_cases_refuse,
    webhooks_are_verified_and_deduplicated,
    receipts_are_checked_and_recorded,
    role_matrix,
    audit_trail_replay_and_export,
    workflows_validation_health_and_metrics,
);
