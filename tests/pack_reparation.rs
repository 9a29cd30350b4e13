//! The repair pack (`examples/reparation`) end to end under `dossier serve`, against real local
//! servers (aiosmtpd for the emails, a TCP sink standing for the ESC/POS till printer) and a
//! stub for the Orange SMS API: a device is taken in (ticket with the tracking QR code, SMS and
//! email), diagnosed through the technician's inbox, quoted and accepted by event; its part is
//! out of stock, so a purchase order (`reappro_pieces`) opens, the store receives the delivery
//! into the ledger and the waiting repair reserves the part (falling under the threshold opens a
//! second order); a failed test sends it back to intervention; the invoice is issued by the
//! invoicing pack and certified by the FNE (a stub of the DGI's API) before it is emailed with
//! the FNE reference; the device is collected; a warranty claim opens a warranty repair, which
//! is then cancelled; the stock is read through the ledger API and every history replays.

#[path = "../connectors/tests/support/mod.rs"]
mod support;

#[path = "support/pack.rs"]
mod pack;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mailparse::MailHeaderMap;
use pack::{contains, dec, Api};
use serde_json::{json, Value};
use support::servers::{Smtp, TicketSink};
use support::{reply, Hit, Stub};

// A Côte d'Ivoire invoice is certified by the FNE before it is sent: `facture` calls
// `certification_facture_fne` (rules `ismail`, templates `ismail/` for its alert and ticket).
const WORKFLOWS: &[&str] = &[
    "reparation",
    "reappro_pieces",
    "facture",
    "certification_facture_fne",
    "suivi_facture",
];
const RULES: &[&str] = &["reparation", "facturation", "penalites", "ismail"];
const TEMPLATES: &[&str] = &["reparation", "factures", "ismail"];

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

/// The FNE (DGI): signs every invoice, the n-th request as `2400123A26<n>`, its lines as items
/// `item-<n>-<i>`, plenty of stickers left.
fn fne(hit: &Hit, n: usize) -> (u16, String) {
    if hit.path != "/ws/external/invoices/sign" {
        return (404, r#"{"message":"Not found"}"#.into());
    }
    let body = hit.json();
    let items: Vec<Value> = body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, it)| {
            json!({"id": format!("item-{n}-{i}"), "reference": it["reference"],
                   "description": it["description"], "quantity": it["quantity"]})
        })
        .collect();
    let answer = json!({
        "ncc": "2400123A",
        "reference": format!("2400123A26{n:09}"),
        "token": format!("http://fne.stub/fr/verification/{n}"),
        "warning": false,
        "balance_sticker": 99,
        "invoice": {"id": format!("inv-{n}"), "date": chrono::Utc::now().to_rfc3339(),
                    "status": "paid", "items": items}
    });
    (200, answer.to_string())
}

/// The pack's files copied into `dir`, with a `dossier.yaml` pointing at this test's servers.
fn project(dir: &Path, smtp: u16, orange: &str, till: u16, fne: &str, server: u16) -> PathBuf {
    let root = dir.join("reparation");
    let repo = support::repo_root();
    for sub in ["workflows", "rules"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for w in WORKFLOWS {
        let file = format!("workflows/{w}.yaml");
        std::fs::copy(repo.join(&file), root.join(&file)).unwrap();
    }
    for r in RULES {
        let file = format!("rules/{r}.rhai");
        std::fs::copy(repo.join(&file), root.join(&file)).unwrap();
    }
    for t in TEMPLATES {
        support::copy_tree(
            &repo.join("templates").join(t),
            &root.join("templates").join(t),
        );
    }
    let config = format!(
        r#"server:
  listen: 127.0.0.1:{server}
connectors:
  courriel:
    type: email
    host: 127.0.0.1
    port: {smtp}
    tls: none
    from: "Atelier Koné Réparations <atelier@reparations.exemple.ci>"
  sms:
    type: sms
    provider: orange
    api_url: http://{orange}
    token_url: http://{orange}/oauth/v3/token
    client_id_env: DOSSIER_ORANGE_CLIENT_ID
    client_secret_env: DOSSIER_ORANGE_CLIENT_SECRET
    sender_address: "tel:+2250000000000"
    sender_name: AtelierKone
  # Les factures ne sont pas imprimées dans ce test (le connecteur doit exister pour facture.yaml).
  imprimante:
    type: printer
    ipp_url: ipp://127.0.0.1:9/ipp/print
  caisse:
    type: printer
    escpos: {{ host: 127.0.0.1, port: {till}, width: 48 }}
  # La facture ivoirienne est certifiée par la FNE avant l'envoi.
  fne:
    type: fiscal
    api_url: http://{fne}/ws
    api_key_env: DOSSIER_FNE_API_KEY
    point_of_sale: ATELIER_1
    establishment: COCODY
    timeout_seconds: 20
"#
    );
    std::fs::write(root.join("dossier.yaml"), config).unwrap();
    root
}

fn secrets(cmd: &mut Command) -> &mut Command {
    cmd.env("DOSSIER_ORANGE_CLIENT_ID", "client-orange")
        .env("DOSSIER_ORANGE_CLIENT_SECRET", "secret-orange")
        .env("DOSSIER_FNE_API_KEY", "cle-fne")
}

/// An input file of `examples/reparation`.
fn example(name: &str) -> Value {
    let path = support::repo_root().join("examples/reparation").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

impl Api {
    /// Sends an event as an example file holds it (`{name, payload}`); the answer
    /// `{reached, started}`.
    async fn send(&self, key: &str, event: Value) -> Value {
        let name = event["name"].as_str().expect("an event name");
        self.event(key, name, event["payload"].clone()).await
    }

    /// The case's data once `etape` (the stage shown to the client) reaches `want`.
    async fn wait_stage(&self, case: &str, key: &str, want: &str) -> Value {
        pack::eventually(
            || format!("case {case} never reached stage {want}"),
            || async {
                let c = self.get(&format!("/api/v1/instances/{case}"), key).await;
                (c["data"]["etape"] == want).then_some(c)
            },
        )
        .await
    }

    /// Waits until the case is waiting at `step` (started, and the case is waiting again): an
    /// event sent earlier would reach no one.
    async fn wait_waiting_at(&self, case: &str, key: &str, step: &str) {
        pack::eventually(
            || format!("case {case} is not waiting at {step}"),
            || async {
                let c = self.get(&format!("/api/v1/instances/{case}"), key).await;
                let reached = self
                    .history(case, key)
                    .await
                    .iter()
                    .any(|e| e["kind"] == "step_started" && e["payload"]["step"] == step);
                (reached && c["status"] == "waiting").then_some(())
            },
        )
        .await
    }

    /// The output of a completed case (its `case_completed` event).
    async fn output(&self, case: &str, key: &str) -> Value {
        self.wait_status(case, key, "completed").await;
        let history = self.history(case, key).await;
        history
            .iter()
            .rev()
            .find(|e| e["kind"] == "case_completed")
            .map(|e| e["payload"]["output"].clone())
            .unwrap_or_else(|| panic!("{case} has no case_completed event: {history:?}"))
    }

    /// The cases of `workflow`, waiting until there are `n`.
    async fn cases_of(&self, key: &str, workflow: &str, n: usize) -> Vec<Value> {
        pack::eventually(
            || format!("no {n} {workflow} cases"),
            || async {
                let list = self
                    .get(&format!("/api/v1/instances?workflow={workflow}"), key)
                    .await;
                let items = list["items"].as_array().cloned().unwrap_or_default();
                if items.len() >= n {
                    assert_eq!(items.len(), n, "{list}");
                    Some(items)
                } else {
                    None
                }
            },
        )
        .await
    }

    /// The open task of `case` at `step` in `role`'s inbox, once it exists.
    async fn task(&self, key: &str, role: &str, case: &str, step: &str) -> Value {
        pack::eventually(
            || format!("no open task {step} for {case} in {role}"),
            || async {
                let tasks = self.get(&format!("/api/v1/tasks?role={role}"), key).await;
                tasks["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| {
                        t["instance_id"] == case && t["step"] == step && t["status"] == "open"
                    })
                    .cloned()
            },
        )
        .await
    }
}

/// The subjects of the messages received so far.
fn subjects(smtp: &Smtp) -> Vec<String> {
    smtp.messages()
        .iter()
        .map(|m| {
            mailparse::parse_mail(m)
                .unwrap()
                .headers
                .get_first_value("Subject")
                .unwrap_or_default()
        })
        .collect()
}

/// Waits until a message whose subject contains `needle` has arrived; its text (first part,
/// line ends as `\n`).
fn mail_with(smtp: &Smtp, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for m in smtp.messages() {
            let parsed = mailparse::parse_mail(&m).unwrap();
            let subject = parsed
                .headers
                .get_first_value("Subject")
                .unwrap_or_default();
            if subject.contains(needle) {
                let body = if parsed.subparts.is_empty() {
                    parsed.get_body().unwrap()
                } else {
                    parsed.subparts[0].get_body().unwrap()
                };
                return body.replace("\r\n", "\n");
            }
        }
        assert!(
            Instant::now() < deadline,
            "no message about `{needle}`: {:?}",
            subjects(smtp)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The text of the PDF attached to the message whose subject contains `needle`.
fn attached_pdf_text(smtp: &Smtp, needle: &str) -> String {
    fn walk<'a>(p: &'a mailparse::ParsedMail<'a>, out: &mut Vec<&'a mailparse::ParsedMail<'a>>) {
        if p.subparts.is_empty() {
            out.push(p);
        }
        for s in &p.subparts {
            walk(s, out);
        }
    }
    mail_with(smtp, needle);
    let raw = smtp
        .messages()
        .into_iter()
        .find(|m| {
            mailparse::parse_mail(m)
                .unwrap()
                .headers
                .get_first_value("Subject")
                .unwrap_or_default()
                .contains(needle)
        })
        .unwrap();
    let mail = mailparse::parse_mail(&raw).unwrap();
    let mut parts = Vec::new();
    walk(&mail, &mut parts);
    let pdf = parts
        .iter()
        .find(|p| p.ctype.mimetype == "application/pdf")
        .unwrap_or_else(|| panic!("no PDF attached to `{needle}`"));
    pdf_extract::extract_text_from_mem(&pdf.get_body_raw().unwrap()).unwrap()
}

/// The SMS texts Orange received so far.
fn sms_texts(orange: &Stub) -> Vec<String> {
    orange
        .hits()
        .iter()
        .filter(|h| h.path != "/oauth/v3/token")
        .map(|h| {
            h.json()["outboundSMSMessageRequest"]["outboundSMSTextMessage"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Waits until an SMS containing `needle` has been sent.
async fn sms_with(orange: &Stub, needle: &str) {
    pack::eventually(
        || format!("no SMS with `{needle}`: {:?}", sms_texts(orange)),
        || async {
            sms_texts(orange)
                .iter()
                .any(|t| t.contains(needle))
                .then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_from_intake_to_warranty_under_serve() {
    let smtp = Smtp::start(&[]);
    let till = TicketSink::start();
    let orange = Stub::start(|hit, before| {
        let (status, body) = orange(hit, before.len());
        reply(status, body)
    })
    .await;
    let fne_stub = Stub::start(|hit, before| {
        let (status, body) = fne(hit, before.len());
        reply(status, body)
    })
    .await;
    let server_port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let root = project(
        dir.path(),
        smtp.port,
        &orange.addr.to_string(),
        till.port,
        &fne_stub.addr.to_string(),
        server_port,
    );
    let db = dir.path().join("dossier.db").to_string_lossy().into_owned();

    let out = secrets(pack::dossier(&root).arg("validate"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let accueil = pack::key(&root, &db, "system", "logiciel-accueil");
    let admin = pack::key(&root, &db, "admin", "direction");
    let technicien = pack::key(&root, &db, "operator,technicien", "awa.k");
    let magasin = pack::key(&root, &db, "operator,magasin", "magasinier");
    let mut cmd = pack::dossier(&root);
    secrets(&mut cmd);
    let _server = pack::serve(cmd, &db, server_port);
    let api = Api::on_port(server_port);
    let year = chrono::Utc::now().format("%Y").to_string();
    let suivi = "https://suivi.reparations.exemple.ci/reparations/REP-2611-0042";

    // ---- 1. Intake: the ticket with the tracking QR code, the SMS and the email ----
    let repair = api
        .start(&accueil, "reparation", example("depot.json"))
        .await;
    let c = api.wait_stage(&repair, &admin, "diagnostic").await;
    assert_eq!(c["data"]["statut"], "en_cours", "{c}");
    assert_eq!(c["data"]["technicien"], "Awa K.", "{c}");
    let tickets = till.received(1);
    assert_eq!(tickets.len(), 1);
    let ticket = &tickets[0];
    assert!(ticket.starts_with(&[0x1b, 0x40]), "ESC @ first");
    assert!(contains(ticket, b"REP-2611-0042"), "the repair number");
    assert!(contains(ticket, b"R58N12345AB"), "the serial number");
    assert!(contains(ticket, b"Mariam D."), "the receptionist");
    assert!(contains(ticket, &[0x1d, 0x28, 0x6b]), "a GS ( k QR code");
    assert!(
        contains(ticket, suivi.as_bytes()),
        "the QR code holds the link"
    );
    assert!(contains(ticket, &[0x1d, 0x56, 0x00]), "a GS V cut");
    sms_with(&orange, "est bien reçu (réparation REP-2611-0042)").await;
    let text = mail_with(&smtp, "réparation REP-2611-0042 enregistrée");
    assert!(
        text.contains("Galaxy A54 (n° de série R58N12345AB)"),
        "{text}"
    );

    // ---- 2. Diagnostic by the technician, quote sent and accepted ----
    let task = api
        .task(&technicien, "technicien", &repair, "diagnostic")
        .await;
    assert_eq!(
        task["title"],
        "[Awa K.] Diagnostic REP-2611-0042 : Samsung Galaxy A54"
    );
    let d = example("diagnostic.json");
    api.complete(&technicien, &task, "reparable", d["data"].clone())
        .await;
    let quote = mail_with(&smtp, "devis de la réparation REP-2611-0042 (70 800 FCFA)");
    assert!(quote.contains("Total TTC : 70 800 FCFA"), "{quote}");
    sms_with(&orange, "70 800 FCFA TTC").await;
    api.wait_stage(&repair, &admin, "devis").await;
    api.wait_waiting_at(&repair, &admin, "attente_reponse_devis")
        .await;
    let v = api.send(&accueil, example("decision_devis.json")).await;
    assert_eq!(v["reached"], json!([repair]), "{v}");

    // ---- 3. The part is out of stock: a purchase order, the delivery, the reservation ----
    let c = api.wait_stage(&repair, &admin, "attente_pieces").await;
    assert_eq!(c["data"]["statut"], "en_attente", "{c}");
    let orders = api.cases_of(&admin, "reappro_pieces", 1).await;
    let order = orders[0]["id"].as_str().unwrap().to_string();
    assert_eq!(orders[0]["business_key"], "ECR-A54");
    assert!(
        mail_with(&smtp, "Rupture : Écran Samsung Galaxy A54 (ECR-A54)")
            .contains("manque pour la réparation REP-2611-0042")
    );
    let task = api.task(&magasin, "magasin", &order, "commande").await;
    assert_eq!(
        task["title"],
        "Rupture : commander Écran Samsung Galaxy A54 (ECR-A54)"
    );
    api.complete(
        &magasin,
        &task,
        "commandee",
        json!({"quantite": 2, "fournisseur": "Pièces Pro Abidjan"}),
    )
    .await;
    let task = api.task(&magasin, "magasin", &order, "reception").await;
    api.complete(&magasin, &task, "recue", json!({"quantite_recue": 2}))
        .await;
    let done = api.output(&order, &admin).await;
    assert_eq!(done["statut"], "recue", "{done}");
    assert_eq!(dec(&done["stock"]), "2", "{done}");
    // The delivery wakes the repair up: it reserves one screen (2 -> 1, under the threshold
    // of 2), which opens a second purchase order.
    api.wait_stage(&repair, &admin, "intervention").await;
    assert_eq!(api.balance(&admin, "stock/ECR-A54").await, "1");
    let orders = api.cases_of(&admin, "reappro_pieces", 2).await;
    let second = orders.iter().find(|o| o["id"] != order.as_str()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.task(&magasin, "magasin", &second, "commande").await;
    assert!(mail_with(&smtp, "Stock bas : Écran Samsung Galaxy A54")
        .contains("il en reste\n1 (seuil 2)"));

    // ---- 4. Intervention, a failed test, a second intervention, the test passes ----
    let task = api
        .task(&technicien, "technicien", &repair, "intervention")
        .await;
    api.complete(
        &technicien,
        &task,
        "terminee",
        json!({"commentaire": "Écran remplacé"}),
    )
    .await;
    let task = api.task(&technicien, "technicien", &repair, "test").await;
    api.complete(
        &technicien,
        &task,
        "echec",
        json!({"commentaire": "Tactile inopérant en bas de l'écran"}),
    )
    .await;
    let task = api
        .task(&technicien, "technicien", &repair, "intervention")
        .await;
    assert!(task["instructions"]
        .as_str()
        .unwrap()
        .contains("Le test n° 1 a échoué : Tactile inopérant en bas de l'écran"));
    api.complete(&technicien, &task, "terminee", json!({}))
        .await;
    let task = api.task(&technicien, "technicien", &repair, "test").await;
    assert_eq!(
        task["title"],
        "[Awa K.] Test REP-2611-0042 (essai 2) : Samsung Galaxy A54"
    );
    api.complete(&technicien, &task, "reussi", json!({})).await;

    // ---- 5. The invoice (invoicing pack), certified by the FNE, the ready notice, the pickup ----
    let fac = format!("FAC-CI-{year}-0001");
    let c = api.wait_stage(&repair, &admin, "pret").await;
    assert_eq!(c["data"]["statut"], "terminee", "{c}");
    // The emailed invoice carries the FNE reference (and its verification QR code).
    let text = attached_pdf_text(&smtp, &format!("facture {fac}"));
    assert!(text.contains(&format!("Facture n° {fac}")), "{text}");
    assert!(
        text.contains("Facture normalisée (FNE) n° 2400123A26000000000"),
        "the FNE reference on the PDF: {text}"
    );
    assert!(text.contains("70 800 FCFA"), "{text}");
    // One signature, before the email: a consumer (B2C), paid at pickup (deferred), the quote's
    // two lines.
    let hits = fne_stub.hits();
    assert_eq!(hits.len(), 1, "one signature: {hits:?}");
    assert_eq!(hits[0].path, "/ws/external/invoices/sign");
    assert_eq!(hits[0].header("authorization"), "Bearer cle-fne");
    let body = hits[0].json();
    assert_eq!(body["template"], "B2C", "{body}");
    assert_eq!(body["paymentMethod"], "deferred", "{body}");
    assert_eq!(body["clientCompanyName"], "Awa Traoré", "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 2, "{body}");
    let invoices = api.cases_of(&admin, "facture", 1).await;
    assert_eq!(invoices[0]["business_key"], "REP-2611-0042");
    assert_eq!(invoices[0]["parent_id"], repair.as_str());
    let invoice_case = invoices[0]["id"].as_str().unwrap().to_string();
    let certifications = api.cases_of(&admin, "certification_facture_fne", 1).await;
    assert_eq!(certifications[0]["business_key"], fac.as_str());
    assert_eq!(certifications[0]["parent_id"], invoice_case.as_str());
    api.cases_of(&admin, "suivi_facture", 1).await;
    sms_with(&orange, &format!("facture {fac} : 70 800 FCFA")).await;
    // The repair keeps the invoice as the invoicing pack returned it: sent, certified.
    let c = api
        .get(&format!("/api/v1/instances/{repair}"), &admin)
        .await;
    let invoice = &c["data"]["facture"];
    assert_eq!(invoice["facture"], fac.as_str(), "{c}");
    assert_eq!(invoice["statut"], "envoyee", "{c}");
    assert_eq!(invoice["fne"]["statut"], "certifiee", "{c}");
    assert_eq!(invoice["fne"]["reference"], "2400123A26000000000", "{c}");
    assert_eq!(invoice["fne"]["invoice_id"], "inv-0", "{c}");
    let ready = mail_with(&smtp, "votre Samsung Galaxy A54 est prêt");
    assert!(
        ready.contains(&format!("La facture {fac} (70 800 FCFA TTC)")),
        "{ready}"
    );
    // The pickup is announced once the repair waits for it (after the ready notices).
    api.wait_waiting_at(&repair, &admin, "attente_retrait")
        .await;
    let v = api.send(&accueil, example("appareil_retire.json")).await;
    assert_eq!(v["reached"], json!([repair]), "{v}");
    let c = api.wait_stage(&repair, &admin, "garantie").await;
    let steps: Vec<&str> = c["data"]["suivi"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["etape"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "reception",
            "diagnostic",
            "devis",
            "attente_pieces",
            "intervention",
            "test",
            "intervention",
            "test",
            "pret",
            "retire"
        ],
        "{c}"
    );
    assert_eq!(c["data"]["essais"], 2, "{c}");
    api.wait_waiting_at(&repair, &admin, "attente_reclamation")
        .await;

    // ---- 6. A warranty claim opens a warranty repair; it is then cancelled ----
    let v = api
        .send(&accueil, example("reclamation_garantie.json"))
        .await;
    assert_eq!(v["reached"], json!([repair]), "{v}");
    sms_with(&orange, "Réparation REP-2611-0042-G1 ouverte").await;
    let repairs = api.cases_of(&admin, "reparation", 2).await;
    let warranty = repairs
        .iter()
        .find(|r| r["business_key"] == "REP-2611-0042-G1")
        .expect("the warranty repair")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = api.wait_stage(&warranty, &admin, "diagnostic").await;
    assert_eq!(c["data"]["garantie"], true, "{c}");
    let tickets = till.received(2);
    assert_eq!(tickets.len(), 2);
    // The text is printed in code page PC858: ASCII needles only.
    assert!(
        contains(&tickets[1], b"REP-2611-0042-G1"),
        "the warranty repair's number"
    );
    assert!(
        contains(&tickets[1], b"sous garantie (REP-2611-0042)"),
        "the warranty mention"
    );
    assert!(contains(&tickets[1], format!("{suivi}-G1").as_bytes()));
    api.task(&technicien, "technicien", &warranty, "diagnostic")
        .await;
    let v = api.send(&accueil, example("annulation.json")).await;
    assert_eq!(v["reached"], json!([warranty]), "{v}");
    let done = api.output(&warranty, &admin).await;
    assert_eq!(done["statut"], "annulee", "{done}");
    assert_eq!(done["motif"], "appareil récupéré par le client", "{done}");
    sms_with(&orange, "la réparation REP-2611-0042-G1 est annulée").await;
    let tasks = api.get("/api/v1/tasks?role=technicien", &technicien).await;
    assert!(tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["instance_id"] != warranty.as_str() || t["status"] != "open"));

    // ---- 6b. Cancelling the delivered repair is refused: noted, the warranty goes on ----
    let v = api
        .event(
            &accueil,
            "annulation_reparation",
            json!({"reparation": "REP-2611-0042", "motif": "erreur de saisie"}),
        )
        .await;
    assert_eq!(v["reached"], json!([repair]), "{v}");
    let mut refused = Value::Null;
    for _ in 0..200 {
        let c = api
            .get(&format!("/api/v1/instances/{repair}"), &admin)
            .await;
        if c["data"]["annulations_refusees"]
            .as_array()
            .map_or(0, |a| a.len())
            == 1
        {
            refused = c;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        refused["data"]["annulations_refusees"][0]["etape"], "garantie",
        "{refused}"
    );
    assert_eq!(refused["data"]["statut"], "terminee", "{refused}");
    api.wait_waiting_at(&repair, &admin, "attente_reclamation")
        .await;
    // Both repairs are over for the technician: her load is back to 0 on the ledger.
    let loads = api
        .get("/api/v1/ledger/accounts?prefix=charge/", &admin)
        .await;
    let awa = loads["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "charge/Awa K.")
        .unwrap_or_else(|| panic!("no charge/Awa K.: {loads}"));
    assert_eq!(dec(&awa["balance"]), "0", "{loads}");

    // ---- 7. The stock through the ledger API, and every history replays ----
    let list = api
        .get("/api/v1/ledger/accounts?prefix=stock/", &admin)
        .await;
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(api.balance(&admin, "stock/ECR-A54").await, "1");
    let c = api
        .get(&format!("/api/v1/instances/{repair}"), &admin)
        .await;
    assert_eq!(c["status"], "waiting", "{c}");
    assert_eq!(c["data"]["statut"], "terminee", "{c}");
    let all = api.get("/api/v1/instances", &admin).await;
    let ids: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    // Two repairs, two purchase orders, the invoice, its FNE certification and its follow-up.
    assert_eq!(ids.len(), 7, "{all}");
    for c in &ids {
        let (s, report) = api
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/instances/{c}/replay"),
                &admin,
                None,
            )
            .await;
        assert_eq!(s, 200, "{report}");
        assert_eq!(report["chain"]["intact"], true, "{c}: {report}");
        assert_eq!(report["replay"]["identical"], true, "{c}: {report}");
    }
}
