//! The ISMAIL packs end to end under `dossier serve`: the tax filing pack (FNE certification of an
//! invoice, of an invoice first refused for its missing NCC, of a credit note; the monthly VAT
//! return filed and acknowledged) and the wallet pack (a purchase with bonuses, a consumption
//! with cashback and commissions, a transfer, the monthly commission payout with its PDF
//! statement). The project is the pack's own files (`rules/ismail.rhai`, `templates/ismail/`,
//! its workflows) with a `dossier.yaml` pointed at servers on loopback: the real IPP printer
//! simulator and SMTP server, a TCP sink for the ESC/POS printer, and stubs for the FNE, Orange
//! and the filing gateway. Checks what each server received, the ledger through the outputs,
//! and that every history replays. Also: a Côte d'Ivoire invoice issued by `facture`, certified
//! by the FNE before it is emailed (reference and QR code on the PDF, low-sticker alert to the
//! accountants), and an FNE that answers 500 after certifying: the retry finds the first
//! certification and never signs twice. Money is compared as exact decimal text.

#[path = "support/pack.rs"]
mod pack;
#[path = "../connectors/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pack::{contains, dec, key, Api};
use serde_json::{json, Value};
use support::servers::{Printer, Smtp, TicketSink};
use support::{reply, Hit, Stub};

const RECEIPT_TOKEN: &str = "jeton-accuses-0123456789";

const WORKFLOWS: &[&str] = &[
    "facture",
    "certification_facture_fne",
    "declaration_tva_mensuelle",
    "achat_credits",
    "consommation_credits",
    "transfert_credits",
    "expiration_credits",
    "commissions_mensuelles",
];

async fn stub(answer: fn(&Hit, &[Hit]) -> (u16, String)) -> Stub {
    Stub::start(move |hit, before| {
        let (status, body) = answer(hit, before);
        reply(status, body)
    })
    .await
}

/// Orange: the token endpoint, then the send endpoint.
fn orange(hit: &Hit, before: &[Hit]) -> (u16, String) {
    let n = before.len();
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

/// The client whose certification the FNE signs but answers with a 500 (integrators report it).
const CLIENT_EN_PANNE: &str = "Client Panne FNE";

/// What the FNE answers to the signature of `hit`, the n-th request: `inv-<n>`, items
/// `item-<n>-<i>`, dated 21 November 2026 (the VAT period 2026-11). Low on stickers (`warning`)
/// for the invoice issued by `facture` (client phone +2250101010101).
fn signed(hit: &Hit, n: usize) -> Value {
    let body = hit.json();
    let items: Vec<Value> = body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, it)| json!({"id": format!("item-{n}-{i}"), "reference": it["reference"], "description": it["description"], "quantity": it["quantity"]}))
        .collect();
    let low = body["clientPhone"] == "+2250101010101";
    json!({
        "ncc": "2400123A",
        "reference": format!("2400123A26{n:09}"),
        "token": format!("http://fne.stub/fr/verification/{n}"),
        "warning": low,
        "balance_sticker": if low { 3 } else { 99 },
        "invoice": {"id": format!("inv-{n}"), "date": "2026-11-21T10:00:00.000Z", "status": "paid", "items": items}
    })
}

/// The FNE: certifies every invoice and every credit note. For [`CLIENT_EN_PANNE`] it signs but
/// answers 500; its lookup by idempotency key (`GET /external/invoices?idempotencyKey=…`) then
/// finds the certifications signed under that key.
fn fne(hit: &Hit, before: &[Hit]) -> (u16, String) {
    let n = before.len();
    if hit.path == "/ws/external/invoices/sign" {
        let answer = signed(hit, n);
        if hit.json()["clientCompanyName"] == CLIENT_EN_PANNE {
            return (500, r#"{"message":"Internal server error"}"#.into());
        }
        return (200, answer.to_string());
    }
    if hit.method == "GET" && hit.path == "/ws/external/invoices" {
        let key = hit
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("idempotencyKey="))
            .unwrap_or_default()
            .to_string();
        let found: Vec<Value> = before
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                h.path == "/ws/external/invoices/sign"
                    && !key.is_empty()
                    && h.header("idempotency-key") == urlencoding_decode(&key)
            })
            .map(|(i, h)| signed(h, i))
            .collect();
        return (200, Value::Array(found).to_string());
    }
    if hit.path.starts_with("/ws/external/invoices/") && hit.path.ends_with("/refund") {
        let answer = json!({
            "reference": format!("A2400123A26{n:09}"),
            "token": format!("http://fne.stub/fr/verification/a{n}"),
            "warning": false,
            "balance_sticker": 98,
            "invoice": {"id": format!("av-{n}"), "date": "2026-11-21T11:00:00.000Z"}
        });
        return (200, answer.to_string());
    }
    (404, r#"{"message":"Not found"}"#.into())
}

/// A query parameter's value as sent (`%3A` for `:`, `%23` for `#`, `+` for a space).
fn urlencoding_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The filing gateway: takes the return.
fn teledeclaration(_: &Hit, before: &[Hit]) -> (u16, String) {
    let n = before.len();
    (201, json!({"depot": format!("DEP-TVA-{n}")}).to_string())
}

/// The pack's files copied into `dir`, with a `dossier.yaml` pointed at this test's servers.
fn project(dir: &Path, yaml: &str) -> PathBuf {
    let root = dir.join("ismail");
    let repo = support::repo_root();
    std::fs::create_dir_all(root.join("workflows")).unwrap();
    std::fs::create_dir_all(root.join("rules")).unwrap();
    for w in WORKFLOWS {
        let name = format!("{w}.yaml");
        let text = std::fs::read_to_string(repo.join("workflows").join(&name)).unwrap();
        // `dossier serve` runs on the system clock: the FNE's retries a second apart, not a minute.
        let text = text.replace(
            "retry: { max_attempts: 5, backoff: PT1M, max_backoff: PT30M }",
            "retry: { max_attempts: 5, backoff: PT1S, max_backoff: PT2S }",
        );
        std::fs::write(root.join("workflows").join(&name), text).unwrap();
    }
    // The certification takes the invoice's amounts from the invoicing rules (one VAT table).
    for rules in ["ismail", "facturation"] {
        let file = format!("rules/{rules}.rhai");
        std::fs::copy(repo.join(&file), root.join(&file)).unwrap();
    }
    for templates in ["ismail", "factures"] {
        support::copy_tree(
            &repo.join("templates").join(templates),
            &root.join("templates").join(templates),
        );
    }
    std::fs::write(root.join("dossier.yaml"), yaml).unwrap();
    root
}

fn secrets(cmd: &mut Command) -> &mut Command {
    cmd.env("DOSSIER_FNE_API_KEY", "cle-fne")
        .env("DOSSIER_ORANGE_CLIENT_ID", "client-orange")
        .env("DOSSIER_ORANGE_CLIENT_SECRET", "secret-orange")
        .env("DOSSIER_SMS_RECEIPT_TOKEN", RECEIPT_TOKEN)
}

/// An input file of `examples/ismail`.
fn example(name: &str) -> Value {
    let path = support::repo_root().join("examples/ismail").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

impl Api {
    /// Sends an event that starts one case; its id.
    async fn start_by_event(&self, key: &str, name: &str, payload: Value) -> String {
        let v = self.event(key, name, payload).await;
        let started = v["started"].as_array().cloned().unwrap_or_default();
        assert_eq!(started.len(), 1, "{name} starts one case: {v}");
        started[0].as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ismail_packs_run_under_serve_and_replay() {
    let smtp = Smtp::start(&[]);
    let printer = Printer::start("application/pdf");
    let till = TicketSink::start();
    let orange_stub = stub(orange).await;
    let fne_stub = stub(fne).await;
    let depot_stub = stub(teledeclaration).await;
    let server_port = support::free_port();
    let printer_port = printer
        .uri
        .trim_start_matches("ipp://localhost:")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let yaml = format!(
        r#"server:
  listen: 127.0.0.1:{server_port}
connectors:
  courriel:
    type: email
    host: 127.0.0.1
    port: {smtp_port}
    tls: none
    from: "ISMAIL <commissions@ismail.exemple.ci>"
  sms:
    type: sms
    provider: orange
    api_url: http://{orange}
    token_url: http://{orange}/oauth/v3/token
    client_id_env: DOSSIER_ORANGE_CLIENT_ID
    client_secret_env: DOSSIER_ORANGE_CLIENT_SECRET
    sender_address: "tel:+2250000000000"
    sender_name: ISMAIL
    receipts_url: http://127.0.0.1:{server_port}/receipts/sms
    receipt_token_env: DOSSIER_SMS_RECEIPT_TOKEN
  imprimante:
    type: printer
    ipp_url: ipp://localhost:{printer_port}/ipp/print
  caisse:
    type: printer
    escpos: {{ host: 127.0.0.1, port: {till_port}, width: 48 }}
  fne:
    type: fiscal
    api_url: http://{fne}/ws
    api_key_env: DOSSIER_FNE_API_KEY
    point_of_sale: CAISSE_1
    establishment: SIEGE
    timeout_seconds: 20
  teledeclaration:
    type: http
    base_url: http://{depot}/api/
"#,
        smtp_port = smtp.port,
        orange = orange_stub.addr,
        till_port = till.port,
        fne = fne_stub.addr,
        depot = depot_stub.addr,
    );
    let dir = tempfile::tempdir().unwrap();
    let root = project(dir.path(), &yaml);
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
    let system = key(&root, &db, "system", "plateforme");
    let admin = key(&root, &db, "admin", "direction");
    let compta = key(&root, &db, "operator,comptabilite", "comptable");
    let mut cmd = pack::dossier(&root);
    secrets(&mut cmd);
    let _server = pack::serve(cmd, &db, server_port);
    let api = Api::on_port(server_port);
    let mut cases = Vec::new();

    // ---- A B2B invoice: certified, VAT accumulated, ticket with the DGI's QR code ----
    let facture = api
        .start_by_event(&system, "facture_a_certifier", example("facture_b2b.json"))
        .await;
    let out = api.wait_output(&facture, &admin).await;
    assert_eq!(out["statut"], "certifiee", "{out}");
    assert_eq!(out["reference"], "2400123A26000000000", "{out}");
    assert_eq!(out["periode_tva"], "2026-11", "{out}");
    assert_eq!(dec(&out["totaux"]["total_tva"]), "22950", "{out}");
    let hits = fne_stub.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].header("authorization"), "Bearer cle-fne");
    let signed = hits[0].json();
    assert_eq!(signed["template"], "B2B");
    assert_eq!(signed["clientNcc"], "9606123E", "{signed}");
    assert_eq!(signed["items"].as_array().unwrap().len(), 3, "{signed}");
    let tickets = till.received(1);
    assert_eq!(tickets.len(), 1);
    let t = &tickets[0];
    assert!(t.starts_with(&[0x1b, 0x40]), "ESC @ first");
    assert!(contains(t, &[0x1d, 0x28, 0x6b]), "a GS ( k QR code");
    assert!(
        contains(t, b"http://fne.stub/fr/verification/0"),
        "the verification URL in the QR code"
    );
    assert!(contains(t, b"FAC-CI-2026-0042"));
    cases.push(facture.clone());

    // ---- A B2B invoice without the client's NCC: nothing sent to the FNE, a task ----
    let sans_ncc = api
        .start_by_event(
            &system,
            "facture_a_certifier",
            example("facture_b2b_sans_ncc.json"),
        )
        .await;
    api.wait_status(&sans_ncc, &admin, "waiting").await;
    assert_eq!(fne_stub.hits().len(), 1, "refused before any call");
    let tasks = api.get("/api/v1/tasks?role=comptabilite", &compta).await;
    let task = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["instance_id"] == sans_ncc.as_str())
        .cloned()
        .expect("a task for the accountants");
    assert_eq!(
        task["title"],
        "Facture FAC-CI-2026-0043 (Société Ivoirienne de Négoce) non certifiable : facture B2B sans numéro de compte contribuable (NCC) du client"
    );
    api.complete(&compta, &task, "corriger", json!({"ncc": "1234567A"}))
        .await;
    let done = api.wait_output(&sans_ncc, &admin).await;
    assert_eq!(done["statut"], "certifiee", "{done}");
    let hits = fne_stub.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].json()["clientNcc"], "1234567A");
    cases.push(sans_ncc);

    // ---- A credit note on the first invoice: a refund citing its FNE ids ----
    let mut avoir = example("avoir.json");
    avoir["origine"]["invoice_id"] = out["invoice_id"].clone();
    avoir["lignes"][0]["item_id"] = out["items"][1]["id"].clone();
    let credit_note = api
        .start_by_event(&system, "facture_a_certifier", avoir)
        .await;
    let done = api.wait_output(&credit_note, &admin).await;
    assert_eq!(done["statut"], "certifiee", "{done}");
    assert_eq!(done["reference"], "A2400123A26000000002");
    let hits = fne_stub.hits();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[2].path, "/ws/external/invoices/inv-0/refund");
    assert_eq!(
        hits[2].json()["items"],
        json!([{"id": "item-0-1", "quantity": 1}])
    );
    cases.push(credit_note);

    // ---- The VAT return of November: totals of the three, printed, filed, acknowledged ----
    let declaration = api
        .start(
            &system,
            "declaration_tva_mensuelle",
            example("declaration_novembre.json"),
        )
        .await;
    api.wait_status(&declaration, &admin, "waiting").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while depot_stub.hits().is_empty() {
        assert!(Instant::now() < deadline, "the return is filed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hits = depot_stub.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].path, "/api/declarations/tva");
    let filed = hits[0].json();
    // 120 000 + 10 000 - 50 000 at 18 %, 15 000 at 9 %.
    assert_eq!(filed["periode"], "2026-11", "{filed}");
    assert_eq!(dec(&filed["declaration"]["total_base"]), "95000", "{filed}");
    assert_eq!(dec(&filed["declaration"]["total_tva"]), "15750", "{filed}");
    assert_eq!(dec(&filed["declaration"]["tva_due"]), "15750", "{filed}");
    let files = printer.spooled(1);
    assert_eq!(files.len(), 1, "{files:?}");
    let pdf = std::fs::read(&files[0]).unwrap();
    let text = pdf_extract::extract_text_from_mem(&pdf).unwrap();
    assert!(text.contains("Déclaration de TVA"), "{text}");
    assert!(text.contains("15 750 FCFA"), "{text}");
    let v = api
        .event(
            &system,
            "accuse_declaration_tva",
            json!({"periode": "2026-11", "reference": "AR-DGI-2026-778812"}),
        )
        .await;
    assert_eq!(v["reached"], json!([declaration.clone()]), "{v}");
    let done = api.wait_output(&declaration, &admin).await;
    assert_eq!(done["statut"], "accusee", "{done}");
    assert_eq!(done["accuse"]["reference"], "AR-DGI-2026-778812");
    cases.push(declaration);

    // ---- Wallet: a purchase (bonuses, sponsor), its expiry case, a consumption, a transfer ----
    let achat = api
        .start_by_event(&system, "paiement_credits_recu", example("achat.json"))
        .await;
    let done = api.wait_output(&achat, &admin).await;
    assert_eq!(done["statut"], "credite", "{done}");
    assert_eq!(dec(&done["solde"]), "1070", "{done}");
    let expirations = api
        .get("/api/v1/instances?workflow=expiration_credits", &admin)
        .await;
    let items = expirations["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "the lot's expiry case: {expirations}");
    assert_eq!(items[0]["status"], "waiting");
    cases.push(achat);

    let conso = api
        .start_by_event(
            &system,
            "consommation_credits",
            example("consommation.json"),
        )
        .await;
    let out = api.wait_output(&conso, &admin).await;
    assert_eq!(out["statut"], "consommee", "{out}");
    // 1 070 - 25 + 0,75 of cashback; senior 6 % and team lead 2 % of 25 credits.
    assert_eq!(dec(&out["solde"]), "1045.75", "{out}");
    assert_eq!(out["commissions"][0]["agent"], "COM-AKA", "{out}");
    assert_eq!(dec(&out["commissions"][0]["credits"]), "1.5", "{out}");
    assert_eq!(out["commissions"][1]["agent"], "COM-KON", "{out}");
    assert_eq!(dec(&out["commissions"][1]["credits"]), "0.5", "{out}");
    cases.push(conso);

    let transfert = api
        .start_by_event(
            &system,
            "transfert_credits_demande",
            example("transfert.json"),
        )
        .await;
    let done = api.wait_output(&transfert, &admin).await;
    assert_eq!(done["statut"], "transfere", "{done}");
    assert_eq!(dec(&done["solde_emetteur"]), "945.75", "{done}");
    // The sponsor had 20 credits of bonus, and now the 100 transferred.
    assert_eq!(dec(&done["solde_beneficiaire"]), "120", "{done}");
    cases.push(transfert);
    let sms: Vec<Hit> = orange_stub
        .hits()
        .into_iter()
        .filter(|h| h.path != "/oauth/v3/token")
        .collect();
    assert_eq!(sms.len(), 3, "purchase, transfer received, transfer sent");

    // ---- The month's commissions paid into the sales staff's wallets, PDF statements ----
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let payout = api
        .start(
            &system,
            "commissions_mensuelles",
            json!({ "periode": month }),
        )
        .await;
    let done = api.wait_output(&payout, &admin).await;
    let versements = done["versements"].as_array().cloned().unwrap_or_default();
    let paid: Vec<(String, String, String)> = versements
        .iter()
        .map(|v| {
            (
                v["agent"].as_str().unwrap_or_default().to_string(),
                dec(&v["credits"]),
                dec(&v["solde"]),
            )
        })
        .collect();
    assert_eq!(
        paid,
        [
            ("COM-AKA".to_string(), "1.5".to_string(), "1.5".to_string()),
            ("COM-KON".to_string(), "0.5".to_string(), "0.5".to_string())
        ],
        "{done}"
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2);
    let mail = mailparse::parse_mail(&mails[0]).unwrap();
    use mailparse::MailHeaderMap;
    assert!(mail
        .headers
        .get_first_value("To")
        .unwrap()
        .contains("aya.koffi@ismail.exemple.ci"));
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
    let pdf_part = parts
        .iter()
        .find(|p| p.ctype.mimetype == "application/pdf")
        .expect("the statement as a PDF");
    let statement = pdf_extract::extract_text_from_mem(&pdf_part.get_body_raw().unwrap()).unwrap();
    assert!(statement.contains("Relevé de commissions"), "{statement}");
    assert!(statement.contains("1,50 crédit"), "{statement}");
    cases.push(payout);

    // ---- A Côte d'Ivoire invoice issued by `facture`: certified by the FNE BEFORE the email ----
    let year = chrono::Utc::now().format("%Y").to_string();
    let before = fne_stub.hits().len();
    let invoice = api
        .start(
            &system,
            "facture",
            json!({"reference": "CMD-2026-0107", "pays": "CI",
                   "client": "Société Ivoirienne de Négoce", "identifiant_client": "1234567X",
                   "email": "tresorerie@sin.ci", "telephone": "+2250101010101",
                   "lignes": [
                       {"designation": "Sac de riz 25 kg", "quantite": 10, "prix_unitaire": 15000, "tva": "TVA"},
                       {"designation": "Livraison", "quantite": 1, "prix_unitaire": 5000, "remise": 12.5, "tva": "TVAB"},
                       {"designation": "Médicament", "quantite": 2, "prix_unitaire": 1250, "tva": "TVAD"}]}),
        )
        .await;
    let out = api.wait_output(&invoice, &admin).await;
    let fac = format!("FAC-CI-{year}-0001");
    assert_eq!(out["statut"], "envoyee", "{out}");
    assert_eq!(out["facture"], fac.as_str(), "{out}");
    assert_eq!(dec(&out["montant_ttc"]), "184269", "{out}");
    assert_eq!(dec(&out["total_tva"]), "27394", "{out}");
    let hits = fne_stub.hits();
    let signs: Vec<&Hit> = hits[before..]
        .iter()
        .filter(|h| h.path == "/ws/external/invoices/sign")
        .collect();
    assert_eq!(signs.len(), 1, "{hits:?}");
    let body = signs[0].json();
    assert_eq!(body["template"], "B2B", "{body}");
    assert_eq!(body["clientNcc"], "1234567X", "{body}");
    assert_eq!(body["paymentMethod"], "deferred", "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 3, "{body}");
    let reference = out["fne"]["reference"].as_str().unwrap().to_string();
    assert_eq!(out["fne"]["statut"], "certifiee", "{out}");
    let subject_of = |raw: &[u8]| {
        mailparse::parse_mail(raw)
            .unwrap()
            .headers
            .get_first_value("Subject")
            .unwrap_or_default()
    };
    let mails = smtp.messages();
    let raw = mails
        .iter()
        .find(|m| subject_of(m.as_slice()).contains(&format!("facture {fac}")))
        .expect("the invoice's email");
    let mail = mailparse::parse_mail(raw).unwrap();
    let mut parts = Vec::new();
    walk(&mail, &mut parts);
    let pdf_part = parts
        .iter()
        .find(|p| p.ctype.mimetype == "application/pdf")
        .expect("the invoice as a PDF");
    let text = pdf_extract::extract_text_from_mem(&pdf_part.get_body_raw().unwrap()).unwrap();
    assert!(text.contains(&format!("Facture n° {fac}")), "{text}");
    assert!(
        text.contains(&reference),
        "the FNE reference on the PDF: {text}"
    );
    assert!(text.contains("184 269 FCFA"), "{text}");
    // The FNE is low on stickers: the accountants are told.
    let alert = mails
        .iter()
        .find(|m| subject_of(m.as_slice()).starts_with("FNE : stock de vignettes bas"))
        .expect("the low-sticker alert");
    let alert = mailparse::parse_mail(alert).unwrap();
    assert_eq!(
        alert.headers.get_first_value("Subject").unwrap(),
        "FNE : stock de vignettes bas (3 restantes)"
    );
    assert!(alert
        .headers
        .get_first_value("To")
        .unwrap()
        .contains("comptabilite@ismail.ci"));
    cases.push(invoice);

    // ---- The FNE answers 500 after certifying: the retry finds it, never signs twice ----
    let before = fne_stub.hits().len();
    let mut panne = example("facture_b2b.json");
    panne["facture"] = json!("FAC-CI-2026-0099");
    panne["client"] = json!({"name": CLIENT_EN_PANNE, "ncc": "1111111A"});
    let broken = api
        .start_by_event(&system, "facture_a_certifier", panne)
        .await;
    let out = api.wait_output(&broken, &admin).await;
    assert_eq!(out["statut"], "certifiee", "{out}");
    assert_eq!(out["deja_certifiee"], true, "{out}");
    let hits = fne_stub.hits();
    let signed_at: Vec<usize> = (before..hits.len())
        .filter(|&i| hits[i].path == "/ws/external/invoices/sign")
        .collect();
    assert_eq!(
        signed_at.len(),
        1,
        "one signature only: {:?}",
        &hits[before..]
    );
    let lookups = hits[before..]
        .iter()
        .filter(|h| h.method == "GET" && h.query.contains("idempotencyKey="))
        .count();
    assert_eq!(
        lookups,
        1,
        "the second attempt looked the first up: {:?}",
        &hits[before..]
    );
    assert_eq!(
        out["reference"],
        format!("2400123A26{:09}", signed_at[0]),
        "the first attempt's certification: {out}"
    );
    assert_eq!(dec(&out["totaux"]["total_tva"]), "22950", "{out}");
    cases.push(broken);

    // Every history replays as it was recorded.
    for c in &cases {
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
