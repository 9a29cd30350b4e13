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

#[path = "support/pack.rs"]
mod pack;
#[path = "../connectors/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mailparse::MailHeaderMap;
use pack::{contains, dec, Api};
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

impl Api {
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
        pack::eventually(
            || format!("no `{kind}` with `{needle}` in {case}"),
            || async {
                let history = self.history(case, key).await;
                history
                    .iter()
                    .any(|e| e["kind"] == kind && e.to_string().contains(needle))
                    .then_some(())
            },
        )
        .await
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

    let out = pack::dossier(&root)
        .env("DOSSIER_FNE_API_KEY", "cle-fne")
        .arg("validate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let system = pack::key(&root, &db, "system", "logiciel-facturation");
    let admin = pack::key(&root, &db, "admin", "direction");
    let compta = pack::key(&root, &db, "operator,comptabilite", "compta");
    let mut cmd = pack::dossier(&root);
    cmd.env("DOSSIER_FNE_API_KEY", "cle-fne");
    let _server = pack::serve(cmd, &db, server_port);
    let api = Api::on_port(server_port);
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
    assert_eq!(dec(&issued["montant_ttc"]), "470.71", "{issued}");
    assert_eq!(dec(&issued["total_ht"]), "397.9", "{issued}");
    assert_eq!(issued["devise"], "EUR", "{issued}");
    let follow_up = api.case_of(&admin, "suivi_facture", &fac1).await;
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
    assert_eq!(dec(&done["rendu"]), "50", "{done}");
    assert_eq!(dec(&done["reste_du"]), "270.71", "{done}");
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
    assert!(contains(ticket, number.as_bytes()));
    assert!(contains(ticket, &[0x1d, 0x56, 0x00]), "a GS V cut");
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
    let task = api.task_of(&compta, "comptabilite", &matching).await;
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
    assert_eq!(dec(&settled["solde"]), "0", "{settled}");
    assert_eq!(dec(&settled["paye"]), "470.71", "{settled}");
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
    let task = api.task_of(&compta, "comptabilite", &credit).await;
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
    let v = api
        .event(
            &system,
            "reponse_devis",
            json!({"devis": dev1, "decision": "accepte"}),
        )
        .await;
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
    api.wait_status(&second_follow_up, &admin, "waiting").await;

    // ---- 5b. The dunning writes the second invoice off (`facture_passee_en_perte`, as
    // relance_facture.yaml emits it): its follow-up takes the balance off the ledger and closes ----
    let v = api
        .event(
            &system,
            "facture_passee_en_perte",
            json!({"facture": fac2, "montant": 1620.00}),
        )
        .await;
    assert_eq!(v["reached"], json!([second_follow_up]), "{v}");
    let lost = api.output(&second_follow_up, &admin).await;
    assert_eq!(lost["statut"], "passee_en_perte", "{lost}");
    assert_eq!(dec(&lost["montant_perdu"]), "1620", "{lost}");
    assert_eq!(dec(&lost["solde"]), "0", "{lost}");
    assert_eq!(lost["signalee_au_recouvrement"], false, "{lost}");
    assert_eq!(api.balance(&admin, &format!("creances/{fac2}")).await, "0");

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
