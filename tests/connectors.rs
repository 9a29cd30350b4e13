//! The example `examples/connecteurs` end to end: `dossier serve` runs the repair-intake workflow
//! whose steps call every kind of connector, each pointed by `dossier.yaml` at a real server on
//! loopback (aiosmtpd, Radicale, ippeveprinter, a TCP sink standing for the ESC/POS printer) or
//! at a local stub where no public test server exists (Orange SMS, the FNE, the CRM). The test
//! checks what every server received, the case history (each request and answer), a delivery
//! receipt posted back by "Orange", the incident task when the FNE refuses, and that both
//! histories replay.

#[path = "../connectors/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::servers::{Printer, Radicale, Smtp, TicketSink};
use support::{reply, Hit, Stub};

const AGENDA_PASSWORD: &str = "mot-de-passe-agenda";
const CRM_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const RECEIPT_TOKEN: &str = "jeton-accuses-0123456789";

/// A stub answering with `answer(hit, n)` (`n`: how many requests came before).
async fn stub(answer: fn(&Hit, usize) -> (u16, String)) -> Stub {
    Stub::start(move |hit, before| {
        let (status, body) = answer(hit, before.len());
        reply(status, body)
    })
    .await
}

/// Orange: the token endpoint, then the send endpoint.
fn orange(hit: &Hit, n: usize) -> (u16, String) {
    if hit.path == "/oauth/v3/token" {
        return (
            200,
            json!({"access_token": "jeton-orange", "token_type": "Bearer", "expires_in": "3600"})
                .to_string(),
        );
    }
    let mut req = hit.json();
    req["outboundSMSMessageRequest"]["resourceURL"] =
        json!(format!("http://orange.stub{}/req-{n}", hit.path));
    (201, req.to_string())
}

/// The FNE: certifies, except for the client "Koffi Refus" (deposit DEP-2026-0043), whose
/// invoice it refuses.
fn fne(hit: &Hit, n: usize) -> (u16, String) {
    if hit.path != "/ws/external/invoices/sign" {
        return (404, r#"{"message":"Not found"}"#.into());
    }
    let body = hit.json();
    if hit.body.contains("Koffi Refus") {
        return (
            400,
            r#"{"message":"Le point de vente ACCUEIL_1 n'est pas autorisé"}"#.into(),
        );
    }
    let items: Vec<Value> = body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, it)| json!({"id": format!("item-{n}-{i}"), "reference": it["reference"], "description": it["description"], "quantity": it["quantity"]}))
        .collect();
    let answer = json!({
        "ncc": "9606123E",
        "reference": format!("9606123E26{n:09}"),
        "token": format!("http://fne.stub/fr/verification/{n}"),
        "warning": false,
        "balance_sticker": 99,
        "invoice": {"id": format!("inv-{n}"), "reference": format!("9606123E26{n:09}"), "date": "2026-11-21T10:00:00.000Z", "status": "paid", "items": items}
    });
    (200, answer.to_string())
}

fn crm(_: &Hit, _: usize) -> (u16, String) {
    (200, "{}".into())
}

/// The example project copied into `dir`, its `dossier.yaml` pointed at this test's servers.
fn project(dir: &Path, ports: &BTreeMap<&str, String>) -> PathBuf {
    let root = dir.join("connecteurs");
    support::copy_tree(&support::repo_root().join("examples/connecteurs"), &root);
    let file = root.join("dossier.yaml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    for (from, to) in ports {
        assert!(text.contains(from), "dossier.yaml has no `{from}`");
        text = text.replace(from, to);
    }
    std::fs::write(&file, text).unwrap();
    root
}

fn secrets(cmd: &mut Command) -> &mut Command {
    cmd.env("DOSSIER_FNE_API_KEY", "cle-fne")
        .env("DOSSIER_AGENDA_PASSWORD", AGENDA_PASSWORD)
        .env("DOSSIER_ORANGE_CLIENT_ID", "client-orange")
        .env("DOSSIER_ORANGE_CLIENT_SECRET", "secret-orange")
        .env("DOSSIER_SMS_RECEIPT_TOKEN", RECEIPT_TOKEN)
        .env("DOSSIER_CRM_WEBHOOK_SECRET", CRM_SECRET)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn key(project: &Path, db: &str, role: &str, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dossier"))
        .arg("--project")
        .arg(project)
        .args(["keys", "create", "--role", role, "--name", name, "--db", db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("dsk_"))
        .expect("a dsk_ key is printed")
        .to_string()
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Starts the repair-intake workflow for a deposit, as `key`; the case's id.
    async fn deposit(&self, key: &str, numero: &str, client: &str) -> String {
        let (s, started) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/instances",
                key,
                Some(json!({"workflow": "depot_reparation", "input": input(numero, client)})),
            )
            .await;
        assert_eq!(s, 201, "{started}");
        started["id"].as_str().unwrap().to_string()
    }

    async fn get(&self, path: &str, key: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, key, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    async fn wait_status(&self, case: &str, key: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = self.get(&format!("/api/v1/instances/{case}"), key).await;
            if c["status"] == want {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "case {case} is still {}: {c}",
                c["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn history(&self, case: &str, key: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/instances/{case}/history"), key)
            .await["events"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// The events of one kind in a case history.
fn of_kind<'a>(history: &'a [Value], kind: &str) -> Vec<&'a Value> {
    history.iter().filter(|e| e["kind"] == kind).collect()
}

fn input(numero: &str, client: &str) -> Value {
    json!({
        "numero_depot": numero,
        "client": client,
        "telephone": "+2250707070707",
        "email": "awa.traore@exemple.ci",
        "appareil": "Samsung Galaxy A54",
        "numero_serie": "R58N12345AB",
        "panne": "Écran fissuré, ne charge plus",
        "acompte": 15000,
        "retrait_debut": "2026-11-28T10:00:00Z",
        "retrait_fin": "2026-11-28T10:30:00Z",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_intake_reaches_every_server_and_replays() {
    // The servers.
    let smtp = Smtp::start(&[]);
    let radicale = Radicale::start("atelier", AGENDA_PASSWORD);
    let printer = Printer::start("application/pdf");
    let till = TicketSink::start();
    let orange_stub = stub(orange).await;
    let fne_stub = stub(fne).await;
    let crm_stub = stub(crm).await;
    let server_port = support::free_port();
    let printer_port = printer
        .uri
        .trim_start_matches("ipp://localhost:")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ports: BTreeMap<&str, String> = [
        ("127.0.0.1:8701", fne_stub.addr.to_string()),
        ("127.0.0.1:8702", orange_stub.addr.to_string()),
        ("127.0.0.1:8703", crm_stub.addr.to_string()),
        ("localhost:8631", format!("localhost:{printer_port}")),
        ("port: 9100", format!("port: {}", till.port)),
        ("http://127.0.0.1:5232", radicale.base.clone()),
        ("port: 2525", format!("port: {}", smtp.port)),
        ("127.0.0.1:8080", format!("127.0.0.1:{server_port}")),
    ]
    .into_iter()
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let root = project(dir.path(), &ports);
    let db = dir.path().join("dossier.db").to_string_lossy().into_owned();

    // The project is valid with its secrets, and `dossier serve` starts on it.
    let out = secrets(
        Command::new(env!("CARGO_BIN_EXE_dossier"))
            .arg("--project")
            .arg(&root)
            .arg("validate"),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let system = key(&root, &db, "system", "logiciel-atelier");
    let admin = key(&root, &db, "admin", "responsable");
    let accueil = key(&root, &db, "operator,accueil", "accueil");
    let mut child = secrets(
        Command::new(env!("CARGO_BIN_EXE_dossier"))
            .arg("--project")
            .arg(&root),
    )
    .args(["serve", "--db", &db])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Server(child);
    assert_eq!(
        line.trim(),
        format!("dossier: serving on http://127.0.0.1:{server_port}")
    );
    let api = Api {
        base: format!("http://127.0.0.1:{server_port}"),
        client: reqwest::Client::new(),
    };

    // ---- A deposit goes through every connector ----
    let case = api.deposit(&system, "DEP-2026-0042", "Awa Traoré").await;
    let done = api.wait_status(&case, &admin, "completed").await;
    assert_eq!(done["data"]["statut"], "enregistre", "{done}");

    // The FNE: one certification, with the bearer key and the effect's idempotency key.
    let hits = fne_stub.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].header("authorization"), "Bearer cle-fne");
    let fne_key = hits[0].header("idempotency-key").to_string();
    assert!(
        fne_key.starts_with(&format!("{case}:certification_acompte#")),
        "{fne_key}"
    );
    let signed = hits[0].json();
    assert_eq!(signed["template"], "B2C");
    assert_eq!(signed["pointOfSale"], "ACCUEIL_1", "{signed}");
    assert_eq!(
        signed["items"][0]["amount"].to_string(),
        "15000",
        "{signed}"
    );

    // The IPP printer kept one PDF: the receipt, with the FNE reference.
    let files = printer.spooled(1);
    assert_eq!(files.len(), 1, "{files:?}");
    let pdf = std::fs::read(&files[0]).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let text = pdf_extract::extract_text_from_mem(&pdf).unwrap();
    assert!(text.contains("Reçu de dépôt n° DEP-2026-0042"), "{text}");
    assert!(text.contains("9606123E26000000000"), "{text}");
    assert!(text.contains("Écran fissuré, ne charge plus"), "{text}");
    // The deposit invoice's number: the first of the ACP series this year.
    let year = chrono::Utc::now().format("%Y").to_string();
    assert!(
        text.contains(&format!("Facture d'acompte n° ACP-{year}-00001")),
        "{text}"
    );

    // The ticket printer got one ticket: init, the deposit number, a QR code, a cut.
    let tickets = till.received(1);
    assert_eq!(tickets.len(), 1);
    let t = &tickets[0];
    assert!(t.starts_with(&[0x1b, 0x40]), "ESC @ first");
    assert!(t
        .windows(14)
        .any(|w| w == b"DEP-2026-0042\n" || &w[..13] == b"DEP-2026-0042"));
    assert!(
        t.windows(3).any(|w| w == [0x1d, 0x28, 0x6b]),
        "a GS ( k QR code"
    );
    assert!(t.windows(3).any(|w| w == [0x1d, 0x56, 0x00]), "a GS V cut");
    let qr_payload = b"https://suivi.reparations.exemple.ci/depots/DEP-2026-0042";
    assert!(
        t.windows(qr_payload.len()).any(|w| w == qr_payload),
        "the tracking link in the QR code"
    );

    // Radicale holds the appointment.
    let ics = reqwest::Client::new()
        .get(format!(
            "{}/atelier/retraits/retrait-DEP-2026-0042@reparations.exemple.ci.ics",
            radicale.base
        ))
        .basic_auth("atelier", Some(AGENDA_PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unfolded = ics.replace("\r\n ", "");
    assert!(
        unfolded.contains("UID:retrait-DEP-2026-0042@reparations.exemple.ci"),
        "{ics}"
    );
    assert!(unfolded.contains("SEQUENCE:0"), "{ics}");
    assert!(unfolded.contains("DTSTART:20261128T100000Z"), "{ics}");
    assert!(unfolded.contains("mailto:awa.traore@exemple.ci"), "{ics}");

    // The client's email: subject, both bodies, the receipt PDF and the invitation.
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    let mail = mailparse::parse_mail(&mails[0]).unwrap();
    use mailparse::MailHeaderMap;
    assert_eq!(
        mail.headers.get_first_value("Subject").unwrap(),
        "Atelier Koné Réparations : dépôt DEP-2026-0042 enregistré"
    );
    assert!(mail
        .headers
        .get_first_value("To")
        .unwrap()
        .contains("awa.traore@exemple.ci"));
    assert_eq!(
        mail.headers.get_first_value("X-Dossier-Case").unwrap(),
        case
    );
    let mut parts = Vec::new();
    fn walk<'a>(p: &'a mailparse::ParsedMail<'a>, out: &mut Vec<&'a mailparse::ParsedMail<'a>>) {
        if p.subparts.is_empty() {
            out.push(p);
        }
        for s in &p.subparts {
            walk(s, out);
        }
    }
    walk(&mail, &mut parts);
    let types: Vec<String> = parts.iter().map(|p| p.ctype.mimetype.clone()).collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "text/html",
            "application/pdf",
            "text/calendar"
        ],
        "{types:?}"
    );
    let text_body = parts[0].get_body().unwrap().replace("\r\n", "\n");
    assert!(
        text_body.contains("certifié par la DGI sous le numéro\n9606123E26000000000"),
        "{text_body}"
    );
    let attached_pdf = parts[2].get_body_raw().unwrap();
    assert!(pdf_extract::extract_text_from_mem(&attached_pdf)
        .unwrap()
        .contains("Reçu de dépôt n° DEP-2026-0042"));
    assert_eq!(
        parts[3].ctype.params.get("method").map(String::as_str),
        Some("REQUEST")
    );
    let invitation = parts[3].get_body().unwrap().replace("\r\n ", "");
    assert!(
        invitation.contains("METHOD:REQUEST")
            && invitation.contains("UID:retrait-DEP-2026-0042@reparations.exemple.ci"),
        "{invitation}"
    );

    // Orange: one token, one SMS carrying the effect's key and asking for a receipt.
    let hits = orange_stub.hits();
    assert_eq!(
        hits.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(),
        [
            "/oauth/v3/token",
            "/smsmessaging/v1/outbound/tel%3A%2B2250000000000/requests"
        ]
    );
    assert_eq!(hits[1].header("authorization"), "Bearer jeton-orange");
    let sms = hits[1].json()["outboundSMSMessageRequest"].clone();
    assert_eq!(sms["address"], "tel:+2250707070707");
    let sms_key = sms["clientCorrelator"].as_str().unwrap().to_string();
    assert!(
        sms_key.starts_with(&format!("{case}:sms_client#")),
        "{sms_key}"
    );
    assert!(sms["outboundSMSTextMessage"]["message"]
        .as_str()
        .unwrap()
        .contains("facture 9606123E26000000000"));
    let notify = sms["receiptRequest"]["notifyURL"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        notify,
        format!("http://127.0.0.1:{server_port}/receipts/sms?token={RECEIPT_TOKEN}")
    );

    // The CRM: one webhook, signed with its secret.
    let hits = crm_stub.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].path, "/api/evenements");
    let signed = dossier_connectors::webhook::Signed {
        id: Some(hits[0].header("webhook-id")),
        timestamp: Some(hits[0].header("webhook-timestamp")),
        signature: Some(hits[0].header("webhook-signature")),
    };
    let secret = dossier_connectors::webhook::decode_secret(CRM_SECRET).unwrap();
    dossier_connectors::webhook::verify(
        &[secret],
        &signed,
        hits[0].body.as_bytes(),
        chrono::Utc::now().timestamp(),
        300,
    )
    .expect("the CRM can check the signature");
    assert_eq!(
        hits[0].json()["data"]["reference_fne"],
        "9606123E26000000000"
    );
    assert_eq!(
        hits[0].json()["data"]["facture"],
        format!("ACP-{year}-00001")
    );

    // The history holds each request and answer, in the workflow's order.
    let history = api.history(&case, &admin).await;
    let calls: Vec<(String, String)> = of_kind(&history, "effect_requested")
        .into_iter()
        .map(|e| {
            (
                e["payload"]["connector"].as_str().unwrap().to_string(),
                e["payload"]["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("fne", "certify"),
        ("dossier.numbering", "next"),
        ("imprimante", "print"),
        ("caisse", "ticket"),
        ("agenda", "publish"),
        ("courriel", "send"),
        ("sms", "send"),
        ("crm", "webhook"),
    ]
    .iter()
    .map(|(c, o)| (c.to_string(), o.to_string()))
    .collect();
    assert_eq!(calls, expected);
    let answers: Vec<&Value> = of_kind(&history, "effect_completed")
        .into_iter()
        .map(|e| &e["payload"]["result"])
        .collect();
    assert_eq!(answers.len(), 8);
    assert_eq!(answers[0]["reference"], "9606123E26000000000");
    assert_eq!(
        answers[1],
        &json!({"number": format!("ACP-{year}-00001"), "series": "ACP", "period": year, "seq": 1})
    );
    assert!(
        answers[2]["job_id"].is_number() && answers[2]["job_state"].is_string(),
        "{}",
        answers[2]
    );
    assert_eq!(answers[4]["outcome"], "created");
    assert!(answers[5]["message_id"]
        .as_str()
        .unwrap()
        .ends_with("@reparations.exemple.ci>"));
    assert_eq!(answers[6]["provider"], "orange");
    let all = serde_json::to_string(&history).unwrap();
    for secret in [
        "cle-fne",
        AGENDA_PASSWORD,
        "secret-orange",
        "jeton-orange",
        CRM_SECRET,
    ] {
        assert!(
            !all.contains(secret),
            "the history holds the secret {secret}"
        );
    }

    // Orange posts the delivery receipt back: recorded on the case, once.
    let receipt = json!({"deliveryInfoNotification": {"callbackData": format!("{case}|{sms_key}"), "deliveryInfo": {"address": "tel:+2250707070707", "deliveryStatus": "DeliveredToTerminal"}}});
    for expected in [202, 200] {
        let r = reqwest::Client::new()
            .post(&notify)
            .json(&receipt)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), expected);
    }
    let wrong = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{server_port}/receipts/sms?token=faux"
        ))
        .json(&receipt)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let history = api.history(&case, &admin).await;
    let receipts = of_kind(&history, "receipt_received");
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0]["payload"]["status"], "delivered");
    assert_eq!(receipts[0]["payload"]["key"], sms_key.as_str());

    // ---- The FNE refuses a deposit: an incident task, then the operator gives up ----
    let refused = api.deposit(&system, "DEP-2026-0043", "Koffi Refus").await;
    api.wait_status(&refused, &admin, "waiting").await;
    let history = api.history(&refused, &admin).await;
    let failed = of_kind(&history, "effect_failed");
    assert_eq!(failed.len(), 1, "a refusal is not retried: {failed:?}");
    assert_eq!(failed[0]["payload"]["retryable"], false, "{}", failed[0]);
    assert!(
        failed[0]["payload"]["error"]
            .as_str()
            .unwrap()
            .contains("n'est pas autorisé"),
        "{}",
        failed[0]
    );
    let tasks = api.get("/api/v1/tasks?role=accueil", &accueil).await;
    let task = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["instance_id"] == refused.as_str())
        .cloned()
        .expect("an incident task");
    assert_eq!(
        task["title"],
        "Dépôt DEP-2026-0043 : l'acompte n'a pas pu être certifié"
    );
    let instructions = task["instructions"].as_str().unwrap_or_default();
    assert!(
        instructions.contains(
            "Erreur de la FNE : fne: HTTP 400: Le point de vente ACCUEIL_1 n'est pas autorisé"
        ),
        "{instructions}"
    );
    let (s, v) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/tasks/{}/complete", task["id"].as_str().unwrap()),
            &accueil,
            Some(json!({"outcome": "abandonner"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let ended = api.wait_status(&refused, &admin, "completed").await;
    assert_eq!(ended["data"]["statut"], "abandonne");
    assert_eq!(
        fne_stub.hits().len(),
        2,
        "one refused certification, no retry"
    );
    assert_eq!(
        smtp.messages().len(),
        1,
        "nothing sent for the abandoned deposit"
    );

    // The register of the ACP series: one number, the first deposit's; the refused one took none.
    let register = api
        .get(&format!("/api/v1/numbers?series=ACP&period={year}"), &admin)
        .await;
    assert_eq!(register["count"], 1, "{register}");
    assert_eq!(register["gapless"], true);
    assert_eq!(register["items"][0]["seq"], 1);
    assert_eq!(register["items"][0]["instance_id"], case.as_str());
    let (s, v) = api
        .call(
            reqwest::Method::GET,
            "/api/v1/numbers?series=ACP",
            &admin,
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("missing_parameter")),
        "{v}"
    );

    // `/metrics` counts the calls by connector and outcome.
    let metrics = reqwest::get(format!("{}/metrics", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "dossier_effects_total{connector=\"fne\",result=\"ok\"} 1",
        "dossier_effects_total{connector=\"fne\",result=\"permanent\"} 1",
        "dossier_effects_total{connector=\"courriel\",result=\"ok\"} 1",
        "dossier_effects_total{connector=\"sms\",result=\"ok\"} 1",
        "dossier_effects_total{connector=\"crm\",result=\"ok\"} 1",
        "dossier_effect_latency_seconds_count{connector=\"agenda\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "`{line}` missing from\n{metrics}"
        );
    }

    // Both histories replay as they were recorded.
    for c in [&case, &refused] {
        let (s, report) = api
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/instances/{c}/replay"),
                &admin,
                None,
            )
            .await;
        assert_eq!(s, 200, "{report}");
        assert_eq!(report["chain"]["intact"], true, "{report}");
        assert_eq!(report["replay"]["identical"], true, "{report}");
    }
}
