//! The invoicing pack (`examples/facturation`) end to end under `dossier serve`, against real
//! local servers (aiosmtpd for the emails, ippeveprinter for the receipts, a TCP sink standing
//! for the ESC/POS till printer): an invoice is issued, numbered, emailed with its PDF and
//! posted to the ledger, and the invoice case ends once sent after starting its follow-up (a case
//! of its own, through the `suivi_facture_demande` event); a cash deposit prints a receipt and a ticket and reaches the invoice's
//! follow-up; a bank statement settles the balance and sends its unknown line to the
//! accounting inbox; a credit note on the paid invoice becomes a refund task; an accepted quote
//! starts a new invoice through the `facture_demandee` event, which the dunning then writes off
//! (`facture_passee_en_perte`: its follow-up takes the balance off the ledger and closes); the
//! numbering registers are gapless and every history replays.

#[path = "../connectors/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailparse::MailHeaderMap;
use serde_json::{json, Value};
use support::servers::{Printer, Smtp, TicketSink};

/// The pack's files copied into `dir`, with a `dossier.yaml` pointing at this test's servers.
fn project(dir: &Path, smtp: u16, printer_uri: &str, till: u16, server: u16) -> PathBuf {
    let root = dir.join("facturation");
    let repo = support::repo_root();
    for sub in ["workflows", "rules", "templates"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for name in [
        "facture",
        "suivi_facture",
        "avoir",
        "devis",
        "encaissement_especes",
        "rapprochement_bancaire",
        // A Côte d'Ivoire invoice is certified by this sub-workflow (not played here: every
        // invoice of this test is French; see tests/pack_ismail.rs).
        "certification_facture_fne",
    ] {
        let file = format!("workflows/{name}.yaml");
        std::fs::copy(repo.join(&file), root.join(&file)).unwrap();
    }
    for rules in ["facturation", "ismail"] {
        let file = format!("rules/{rules}.rhai");
        std::fs::copy(repo.join(&file), root.join(&file)).unwrap();
    }
    for templates in ["factures", "ismail"] {
        support::copy_tree(
            &repo.join("templates").join(templates),
            &root.join("templates").join(templates),
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
    from: "Service facturation <facturation@lumiere-coworking.fr>"
  imprimante:
    type: printer
    ipp_url: {printer_uri}
  caisse:
    type: printer
    escpos: {{ host: 127.0.0.1, port: {till}, width: 48 }}
  fne:
    type: fiscal
    api_url: http://127.0.0.1:9/ws
    api_key_env: DOSSIER_FNE_API_KEY
    point_of_sale: CAISSE_1
    establishment: SIEGE
"#
    );
    std::fs::write(root.join("dossier.yaml"), config).unwrap();
    root
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
        .env("DOSSIER_FNE_API_KEY", "cle-fne")
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

    async fn get(&self, path: &str, key: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, key, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    async fn start(&self, key: &str, workflow: &str, input: Value) -> String {
        let (s, started) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/instances",
                key,
                Some(json!({"workflow": workflow, "input": input})),
            )
            .await;
        assert_eq!(s, 201, "{started}");
        started["id"].as_str().unwrap().to_string()
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

    /// The one case of `workflow` with this business key, once it exists.
    async fn case_of(&self, key: &str, workflow: &str, business_key: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self
                .get(
                    &format!("/api/v1/instances?workflow={workflow}&business_key={business_key}"),
                    key,
                )
                .await;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if let Some(c) = items.first() {
                assert_eq!(items.len(), 1, "{list}");
                return c.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {workflow} case for {business_key}"
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

    /// Waits until a history event of `kind` whose text contains `needle` is in the case.
    async fn wait_history(&self, case: &str, key: &str, kind: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let history = self.history(case, key).await;
            if history
                .iter()
                .any(|e| e["kind"] == kind && e.to_string().contains(needle))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no `{kind}` with `{needle}` in {case}: {history:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The open task of `case` in the `comptabilite` inbox, once it exists.
    async fn task_of(&self, key: &str, case: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let tasks = self.get("/api/v1/tasks?role=comptabilite", key).await;
            if let Some(t) = tasks["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["instance_id"] == case && t["status"] == "open")
            {
                return t.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no open task for {case}: {tasks}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn complete(&self, key: &str, task: &Value, outcome: &str, data: Value) {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/tasks/{}/complete", task["id"].as_str().unwrap()),
                key,
                Some(json!({"outcome": outcome, "data": data})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
}

/// The leaf parts of a message: (media type, raw body).
fn parts(mail: &mailparse::ParsedMail) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(p: &mailparse::ParsedMail, out: &mut Vec<(String, Vec<u8>)>) {
        if p.subparts.is_empty() {
            out.push((p.ctype.mimetype.clone(), p.get_body_raw().unwrap()));
        }
        for s in &p.subparts {
            walk(s, out);
        }
    }
    walk(mail, &mut out);
    out
}

/// The message whose subject contains `needle`, waiting up to 20 s for it.
fn mail_with(smtp: &Smtp, needle: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for m in smtp.messages() {
            let parsed = mailparse::parse_mail(&m).unwrap();
            let subject = parsed
                .headers
                .get_first_value("Subject")
                .unwrap_or_default();
            if subject.contains(needle) {
                return m;
            }
        }
        assert!(Instant::now() < deadline, "no message about `{needle}`");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The text of the one PDF attached to a message.
fn attached_pdf_text(raw: &[u8]) -> String {
    let mail = mailparse::parse_mail(raw).unwrap();
    let pdfs: Vec<Vec<u8>> = parts(&mail)
        .into_iter()
        .filter(|(t, _)| t == "application/pdf")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(pdfs.len(), 1, "one PDF attached");
    assert!(pdfs[0].starts_with(b"%PDF-"));
    pdf_extract::extract_text_from_mem(&pdfs[0]).unwrap()
}

/// A decimal amount of a JSON answer, written without trailing zeros (`50.00` -> `50`).
fn amount(v: &Value) -> String {
    let text = v.to_string().trim_matches('"').to_string();
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn coworking_invoice() -> Value {
    json!({
        "reference": "ABO-2026-0042",
        "pays": "FR",
        "client": "Atelier Graphique Sarl",
        "adresse": "8 quai Saint-Vincent, 69001 Lyon",
        "identifiant_client": "SIREN 987 654 321",
        "email": "compta@atelier-graphique.fr",
        "telephone": "+33612345678",
        "lignes": [
            {"designation": "Abonnement mensuel poste nomade", "quantite": 1, "prix_unitaire": 250.00, "tva": "normal"},
            {"designation": "Salle de réunion (heures)", "quantite": 3, "prix_unitaire": 35.00, "remise": 10, "tva": "normal"},
            {"designation": "Boissons chaudes", "quantite": 12, "prix_unitaire": 1.80, "tva": "intermediaire"},
            {"designation": "Guide du télétravail (livre)", "quantite": 2, "prix_unitaire": 15.90, "tva": "reduit"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_payments_statement_credit_note_and_quote_end_to_end() {
    let smtp = Smtp::start(&[]);
    let printer = Printer::start("application/pdf");
    let till = TicketSink::start();
    let server_port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let root = project(dir.path(), smtp.port, &printer.uri, till.port, server_port);
    let db = dir.path().join("dossier.db").to_string_lossy().into_owned();

    let out = Command::new(env!("CARGO_BIN_EXE_dossier"))
        .env("DOSSIER_FNE_API_KEY", "cle-fne")
        .arg("--project")
        .arg(&root)
        .arg("validate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let system = key(&root, &db, "system", "logiciel-facturation");
    let admin = key(&root, &db, "admin", "direction");
    let compta = key(&root, &db, "operator,comptabilite", "compta");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dossier"))
        .env("DOSSIER_FNE_API_KEY", "cle-fne")
        .arg("--project")
        .arg(&root)
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
    let now = chrono::Utc::now();
    let year = now.format("%Y").to_string();
    let today_fr = now.format("%d/%m/%Y").to_string();
    // One numbering series per issuer: the period carries the country (FAC-FR-2026-0001).
    let period = format!("FR-{year}");
    let fac1 = format!("FAC-{period}-0001");

    // ---- 1. The invoice: numbered, emailed with its PDF; it ends once sent, after asking for
    // its follow-up (the `suivi_facture_demande` event starts a case of its own, not a child) ----
    let invoice = api.start(&system, "facture", coworking_invoice()).await;
    let issued = api.output(&invoice, &admin).await;
    assert_eq!(issued["statut"], "envoyee", "{issued}");
    assert_eq!(issued["facture"], fac1.as_str(), "{issued}");
    assert_eq!(amount(&issued["montant_ttc"]), "470.71", "{issued}");
    assert_eq!(amount(&issued["total_ht"]), "397.9", "{issued}");
    assert_eq!(issued["devise"], "EUR", "{issued}");
    let follow_up = api.case_of(&admin, "suivi_facture", &fac1).await;
    let follow_up = follow_up["id"].as_str().unwrap().to_string();
    assert_eq!(issued["suivi"], json!([follow_up]), "{issued}");
    let followed = api
        .get(&format!("/api/v1/instances/{follow_up}"), &admin)
        .await;
    assert!(followed["parent_id"].is_null(), "{followed}");
    assert_eq!(followed["status"], "waiting", "{followed}");
    // The follow-up got the client's identifier from the invoice request, to pass on to the
    // dunning in `facture_echue` (L441-10 penalties between professionals only).
    api.wait_history(&follow_up, &admin, "case_started", "SIREN 987 654 321")
        .await;
    let mail = mail_with(&smtp, &format!("facture {fac1}"));
    let parsed = mailparse::parse_mail(&mail).unwrap();
    assert_eq!(
        parsed.headers.get_first_value("Subject").unwrap(),
        format!("Espace Lumière Coworking : facture {fac1} (470,71 €)")
    );
    assert!(parsed
        .headers
        .get_first_value("To")
        .unwrap()
        .contains("compta@atelier-graphique.fr"));
    let types: Vec<String> = parts(&parsed).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        ["text/plain", "text/html", "application/pdf"],
        "{types:?}"
    );
    let pdf = attached_pdf_text(&mail);
    for needle in [
        format!("Facture n° {fac1}").as_str(),
        "Atelier Graphique Sarl",
        "344,50",
        "68,90",
        "1,75",
        "470,71",
        "Pas d'escompte pour paiement anticipé.",
    ] {
        assert!(
            pdf.contains(needle),
            "`{needle}` missing from the invoice PDF:\n{pdf}"
        );
    }

    // ---- 2. A cash deposit of 200 €: receipt printed, ticket, the follow-up takes it ----
    let cash = api
        .start(
            &system,
            "encaissement_especes",
            json!({"facture": fac1, "client": "Atelier Graphique Sarl", "pays": "FR",
                   "montant": 200, "remis": 250, "caissier": "Julien P."}),
        )
        .await;
    let done = api.output(&cash, &admin).await;
    assert_eq!(done["statut"], "encaisse", "{done}");
    assert_eq!(done["recu"], format!("REC-{period}-0001"), "{done}");
    assert_eq!(amount(&done["rendu"]), "50", "{done}");
    assert_eq!(amount(&done["reste_du"]), "270.71", "{done}");
    let spooled = printer.spooled(1);
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    let receipt = pdf_extract::extract_text_from_mem(&std::fs::read(&spooled[0]).unwrap()).unwrap();
    assert!(
        receipt.contains(&format!("Reçu n° REC-{period}-0001")),
        "{receipt}"
    );
    assert!(receipt.contains("Monnaie rendue"), "{receipt}");
    let tickets = till.received(1);
    assert_eq!(tickets.len(), 1);
    let ticket = &tickets[0];
    assert!(ticket.starts_with(&[0x1b, 0x40]), "ESC @ first");
    let number = format!("REC-{period}-0001");
    assert!(ticket.windows(number.len()).any(|w| w == number.as_bytes()));
    assert!(
        ticket.windows(3).any(|w| w == [0x1d, 0x56, 0x00]),
        "a GS V cut"
    );
    // The follow-up took the payment and lowered the balance in the ledger.
    api.wait_history(&follow_up, &admin, "effect_completed", "270.71")
        .await;

    // ---- 3. The bank statement: the balance is settled, the unknown line goes to accounting ----
    let statement = format!(
        "Date;Libellé;Débit;Crédit\n\
         {today_fr};VIR SEPA RECU /DE ATELIER GRAPHIQUE SARL /MOTIF {fac1};;270,71\n\
         {today_fr};PRLV SEPA EDF ELECTRICITE;84,12;\n\
         {today_fr};VIR SEPA RECU /DE M. DUPONT JEAN /MOTIF LOCATION SALLE;;180,00\n"
    );
    let matching = api
        .start(
            &system,
            "rapprochement_bancaire",
            json!({"releve": statement}),
        )
        .await;
    let task = api.task_of(&compta, &matching).await;
    assert_eq!(
        task["title"],
        format!("Relevé du {today_fr} : VIR SEPA RECU /DE M. DUPONT JEAN /MOTIF LOCATION SALLE (180,00 €)")
    );
    api.complete(
        &compta,
        &task,
        "ecarter",
        json!({"commentaire": "location payée au guichet"}),
    )
    .await;
    let done = api.output(&matching, &admin).await;
    assert_eq!(done["lignes"], 3, "{done}");
    assert_eq!(done["ignorees"], 1, "{done}");
    assert_eq!(done["rapprochees"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(done["rapprochees"][0]["facture"], fac1.as_str(), "{done}");
    assert_eq!(
        done["rapprochees"][0]["decision"], "paiement_complet",
        "{done}"
    );
    assert_eq!(done["ecartees"][0]["par"], "compta", "{done}");
    assert_eq!(
        done["ecartees"][0]["commentaire"], "location payée au guichet",
        "{done}"
    );

    // The invoice is paid: its follow-up ends.
    let settled = api.output(&follow_up, &admin).await;
    assert_eq!(settled["statut"], "payee", "{settled}");
    assert_eq!(amount(&settled["solde"]), "0", "{settled}");
    assert_eq!(amount(&settled["paye"]), "470.71", "{settled}");
    let modes: Vec<&str> = settled["reglements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["especes", "virement"], "{settled}");

    // ---- 4. A credit note on the paid invoice: no follow-up any more, a refund task ----
    let credit = api
        .start(
            &system,
            "avoir",
            json!({"facture": fac1, "date_facture": now.format("%Y-%m-%d").to_string(),
                   "pays": "FR", "client": "Atelier Graphique Sarl",
                   "email": "compta@atelier-graphique.fr",
                   "motif": "Réservation de la salle de réunion annulée",
                   "lignes": [{"designation": "Salle de réunion (heures)", "quantite": 3,
                               "prix_unitaire": 35.00, "remise": 10, "tva": "normal"}]}),
        )
        .await;
    let task = api.task_of(&compta, &credit).await;
    assert_eq!(
        task["title"],
        format!("Avoir AV-{period}-0001 sur la facture {fac1} (Atelier Graphique Sarl) : 113,40 € à rembourser")
    );
    api.complete(&compta, &task, "rembourse", json!({})).await;
    let done = api.output(&credit, &admin).await;
    assert_eq!(done["statut"], "rembourse", "{done}");
    assert_eq!(done["avoir"], format!("AV-{period}-0001"), "{done}");
    assert_eq!(done["suivi_atteint"], false, "{done}");
    let credit_pdf = attached_pdf_text(&mail_with(&smtp, &format!("avoir AV-{period}-0001")));
    assert!(
        credit_pdf.contains(&format!("Avoir sur la facture n° {fac1} du {today_fr}.")),
        "{credit_pdf}"
    );

    // ---- 5. A quote, accepted: the invoice is requested and a new invoice case starts ----
    let quote = api
        .start(
            &system,
            "devis",
            json!({"client": "Cabinet Martin Avocats", "email": "contact@cabinet-martin.fr",
                   "pays": "FR", "modele": "bureau_prive"}),
        )
        .await;
    api.wait_status(&quote, &admin, "waiting").await;
    let dev1 = format!("DEV-{period}-0001");
    assert!(attached_pdf_text(&mail_with(&smtp, &format!("devis {dev1}"))).contains("1 620,00"));
    let (s, v) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/events",
            &system,
            Some(
                json!({"name": "reponse_devis", "payload": {"devis": dev1, "decision": "accepte"}}),
            ),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["reached"], json!([quote]), "{v}");
    let done = api.output(&quote, &admin).await;
    assert_eq!(done["statut"], "accepte", "{done}");
    assert_eq!(done["devis"], dev1.as_str(), "{done}");
    let started = done["facture_demandee"][0].as_str().unwrap().to_string();
    let second = api.wait_status(&started, &admin, "completed").await;
    assert_eq!(second["workflow"], "facture");
    assert_eq!(second["business_key"], dev1.as_str());
    let fac2 = format!("FAC-{period}-0002");
    let mail = mail_with(&smtp, &format!("facture {fac2}"));
    assert!(attached_pdf_text(&mail).contains(&format!("Référence : {dev1}")));
    let second_follow_up = api.case_of(&admin, "suivi_facture", &fac2).await;
    let second_follow_up = second_follow_up["id"].as_str().unwrap().to_string();
    api.wait_status(&second_follow_up, &admin, "waiting").await;

    // ---- 5b. The dunning writes the second invoice off (`facture_passee_en_perte`, as
    // relance_facture.yaml emits it): its follow-up takes the balance off the ledger and closes ----
    let (s, v) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/events",
            &system,
            Some(json!({"name": "facture_passee_en_perte",
                        "payload": {"facture": fac2, "montant": 1620.00}})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["reached"], json!([second_follow_up]), "{v}");
    let lost = api.output(&second_follow_up, &admin).await;
    assert_eq!(lost["statut"], "passee_en_perte", "{lost}");
    assert_eq!(amount(&lost["montant_perdu"]), "1620", "{lost}");
    assert_eq!(amount(&lost["solde"]), "0", "{lost}");
    assert_eq!(lost["signalee_au_recouvrement"], false, "{lost}");
    let accounts = api
        .get(
            &format!("/api/v1/ledger/accounts?prefix=creances/{fac2}"),
            &admin,
        )
        .await;
    let creance = accounts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == format!("creances/{fac2}").as_str())
        .unwrap_or_else(|| panic!("no account creances/{fac2}: {accounts}"))
        .clone();
    assert_eq!(amount(&creance["balance"]), "0", "{accounts}");

    // ---- 6. The numbering registers: gapless ----
    for (series, count) in [("FAC", 2), ("AV", 1), ("DEV", 1), ("REC", 1)] {
        let register = api
            .get(
                &format!("/api/v1/numbers?series={series}&period={period}"),
                &admin,
            )
            .await;
        assert_eq!(register["count"], count, "{series}: {register}");
        assert_eq!(register["gapless"], true, "{series}: {register}");
    }

    // ---- 7. Every history replays as it was recorded ----
    let all = api.get("/api/v1/instances", &admin).await;
    let ids: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    // Two invoices and their two follow-ups, the cash payment, the statement, the credit note,
    // the quote.
    assert_eq!(ids.len(), 8, "{all}");
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
