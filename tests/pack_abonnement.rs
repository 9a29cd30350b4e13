//! The coworking subscription pack (`examples/abonnement_coworking`) end to end under
//! `dossier serve`: a member subscribes, the invoicing pack's `facture` workflow issues and
//! emails the period's invoice (a real SMTP server, aiosmtpd) and hands back its number at once,
//! its follow-up (`suivi_facture`) starting as a case of its own; the payment event reaches both
//! the follow-up and the subscription, which waits for it itself; the member moves up a level
//! mid-period (the prorated supplement is invoiced through the `facture_demandee` event, the
//! change confirmed by email), then moves back down the same day: a credit note (`avoir`
//! workflow) cites the period's invoice with the prorated line; that invoice being settled, the
//! credit note waits for accounting's decision (refund), and the subscription with it; the
//! confirmation says the amount is refunded. A simulation prices a change without doing
//! anything, the member terminates. A second member terminates while the period's invoice is unpaid: the invoice's
//! follow-up goes on and takes the later payment. Every history replays.

#[path = "support/pack.rs"]
mod pack;
#[path = "../connectors/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mailparse::MailHeaderMap;
use pack::{dec, of_kind, Api};
use serde_json::json;
use support::servers::Smtp;

/// The pack's files copied into `dir` with a `dossier.yaml` pointing at this test's servers.
fn project(dir: &Path, smtp_port: u16, server_port: u16) -> PathBuf {
    let root = dir.join("abonnement");
    let repo = support::repo_root();
    for sub in ["workflows", "rules", "templates"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for file in [
        "workflows/abonnement_coworking.yaml",
        "workflows/simulation_changement_formule.yaml",
        "workflows/facture.yaml",
        "workflows/suivi_facture.yaml",
        "workflows/avoir.yaml",
        "workflows/certification_facture_fne.yaml",
        "rules/abonnements.rhai",
        "rules/penalites.rhai",
        "rules/facturation.rhai",
        "rules/ismail.rhai",
    ] {
        std::fs::copy(repo.join(file), root.join(file)).unwrap();
    }
    for sub in ["abonnements", "factures", "ismail"] {
        support::copy_tree(
            &repo.join("templates").join(sub),
            &root.join("templates").join(sub),
        );
    }
    let config = format!(
        r#"server:
  listen: 127.0.0.1:{server_port}
connectors:
  courriel:
    type: email
    host: 127.0.0.1
    port: {smtp_port}
    tls: none
    from: "Espace Lumière <accueil@lumiere-coworking.fr>"
  sms:
    type: sms
    provider: orange
    api_url: http://127.0.0.1:9
    token_url: http://127.0.0.1:9/oauth/v3/token
    client_id_env: DOSSIER_ORANGE_CLIENT_ID
    client_secret_env: DOSSIER_ORANGE_CLIENT_SECRET
    sender_address: "tel:+2250000000000"
    sender_name: Lumiere
  imprimante:
    type: printer
    ipp_url: ipp://localhost:9/ipp/print
  caisse:
    type: printer
    escpos: {{ host: 127.0.0.1, port: 9, width: 48 }}
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

fn secrets(mut cmd: Command) -> Command {
    cmd.env("DOSSIER_ORANGE_CLIENT_ID", "client-orange")
        .env("DOSSIER_ORANGE_CLIENT_SECRET", "secret-orange")
        .env("DOSSIER_FNE_API_KEY", "cle-fne");
    cmd
}

impl Api {
    /// Waits until the case has started waiting `times` times for the event `name`.
    async fn wait_awaiting(&self, case: &str, key: &str, name: &str, times: usize) {
        pack::eventually(
            || format!("case {case} never waited {times} time(s) for {name}"),
            || async {
                let history = self.history(case, key).await;
                let n = of_kind(&history, "event_awaited")
                    .iter()
                    .filter(|e| e["payload"]["event"] == name)
                    .count();
                (n >= times).then_some(())
            },
        )
        .await
    }
}

/// The SMTP server's messages, once there are `n` of them: (subject, plain text, attachments).
fn mails(smtp: &Smtp, n: usize) -> Vec<(String, String, Vec<String>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let raw = smtp.messages();
        if raw.len() >= n {
            assert_eq!(raw.len(), n, "more messages than expected");
            return raw
                .iter()
                .map(|m| {
                    let mail = mailparse::parse_mail(m).unwrap();
                    let subject = mail.headers.get_first_value("Subject").unwrap_or_default();
                    let mut text = String::new();
                    let mut files = Vec::new();
                    let mut stack = vec![&mail];
                    while let Some(p) = stack.pop() {
                        if p.subparts.is_empty() {
                            let disposition = p.get_content_disposition();
                            if let Some(name) = disposition.params.get("filename") {
                                files.push(name.clone());
                            } else if p.ctype.mimetype == "text/plain" {
                                text = p.get_body().unwrap();
                            }
                        }
                        stack.extend(p.subparts.iter());
                    }
                    (subject, text, files)
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} message(s), {n} expected",
            raw.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_invoiced_paid_upgraded_simulated_and_terminated() {
    let smtp = Smtp::start(&[]);
    let server_port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let root = project(dir.path(), smtp.port, server_port);
    let db = dir.path().join("dossier.db").to_string_lossy().into_owned();

    let out = secrets(pack::dossier(&root))
        .arg("validate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let system = pack::key(&root, &db, "system", "intranet-coworking");
    let admin = pack::key(&root, &db, "admin", "direction");
    let _server = pack::serve(secrets(pack::dossier(&root)), &db, server_port);
    let api = Api::on_port(server_port);
    let now = chrono::Utc::now();
    let today = now.format("%Y-%m-%d").to_string();

    // ---- Subscription: Hot Desk by the month from today, 290 € HT (occupancy 50 %) ----
    let abonnement = api
        .start(
            &system,
            "abonnement_coworking",
            json!({
                "abonnement": "ABO-E2E-0001",
                "membre": "Awa Koné",
                "email": "awa.kone@exemple.fr",
                "telephone": "+33600000001",
                "espace": "lyon_republique",
                "niveau": "hot_desk",
                "formule": "mois",
                "postes": 1,
                "debut": today,
                "taux_occupation": 0.50,
            }),
        )
        .await;
    // The invoicing pack issues the period's invoice and emails it with its PDF. `facture` hands
    // back the number once the invoice is sent (read from the answers: its shape belongs to the
    // invoicing pack); its follow-up is a case of its own (not a child), and the subscription
    // waits for the payment itself.
    api.wait_awaiting(&abonnement, &admin, "paiement_recu", 1)
        .await;
    let invoices = api.get("/api/v1/instances?workflow=facture", &admin).await;
    let invoice = invoices["items"][0]["id"].as_str().unwrap().to_string();
    let issued = api.wait_status(&invoice, &admin, "completed").await;
    let first = issued["data"]["numero"]["number"]
        .as_str()
        .unwrap_or_else(|| panic!("the invoice's number: {issued}"))
        .to_string();
    assert_eq!(issued["data"]["statut"], "envoyee", "{issued}");
    let running = api
        .get(&format!("/api/v1/instances/{abonnement}"), &admin)
        .await;
    assert_eq!(
        running["data"]["facture_periode"]["facture"],
        first.as_str(),
        "{running}"
    );
    let sent = mails(&smtp, 1);
    assert!(sent[0].0.contains(&first), "{:?}", sent[0]);
    assert!(sent[0].0.contains("348,00 €"), "{:?}", sent[0]);
    assert_eq!(sent[0].2, [format!("{first}.pdf")]);
    let follow_up = api.case_of(&admin, "suivi_facture", &first).await;
    api.wait_awaiting(&follow_up, &admin, "paiement_recu", 1)
        .await;
    let followed = api
        .get(&format!("/api/v1/instances/{follow_up}"), &admin)
        .await;
    assert!(followed["parent_id"].is_null(), "{followed}");

    // ---- Payment: it reaches the invoice's follow-up and the subscription, which goes on ----
    let paid = api
        .event(
            &system,
            "paiement_recu",
            json!({"facture": first, "montant": 348.00, "mode": "virement"}),
        )
        .await;
    let mut reached: Vec<String> = paid["reached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    reached.sort();
    let mut both = vec![abonnement.clone(), follow_up.clone()];
    both.sort();
    assert_eq!(reached, both, "{paid}");
    api.wait_awaiting(&abonnement, &admin, "changement_formule", 1)
        .await;
    let settled = api.wait_status(&follow_up, &admin, "completed").await;
    assert_eq!(settled["data"]["statut"], "payee", "{settled}");
    let running = api
        .get(&format!("/api/v1/instances/{abonnement}"), &admin)
        .await;
    assert_eq!(running["data"]["statut"], "actif", "{running}");
    assert_eq!(dec(&running["data"]["regle_periode"]), "348", "{running}");

    // ---- Upgrade to a dedicated desk today (occupancy 80 %: 450 € + 5 % = 472.50 € HT) ----
    // Changed on the period's first day: the whole period is exchanged, whatever its length:
    // credit 290.00, new level 472.50, supplement 182.50 € HT (219.00 € TTC).
    let changed = api
        .event(
            &system,
            "changement_formule",
            json!({"abonnement": "ABO-E2E-0001", "niveau": "bureau_dedie", "taux_occupation": 0.80}),
        )
        .await;
    assert_eq!(changed["reached"], json!([abonnement]), "{changed}");
    api.wait_awaiting(&abonnement, &admin, "changement_formule", 2)
        .await;
    let sent = mails(&smtp, 3);
    let supplement_case = api.case_of(&admin, "facture", "ABO-E2E-0001-C1").await;
    let supplement_issued = api.wait_status(&supplement_case, &admin, "completed").await;
    let second = supplement_issued["data"]["numero"]["number"]
        .as_str()
        .unwrap_or_else(|| panic!("the supplement's number: {supplement_issued}"))
        .to_string();
    assert_ne!(second, first);
    let supplement = sent
        .iter()
        .find(|m| m.0.contains(&second))
        .unwrap_or_else(|| panic!("the supplement's invoice: {sent:?}"));
    assert!(supplement.0.contains("219,00 €"), "{supplement:?}");
    let confirmation = sent
        .iter()
        .find(|m| m.0.contains("passe en Bureau dédié"))
        .unwrap_or_else(|| panic!("the change's confirmation: {sent:?}"));
    assert!(
        confirmation.1.contains("supplément à régler : 182,50 € HT"),
        "{confirmation:?}"
    );
    // The supplement's invoice is a case of its own, started by the `facture_demandee` event.
    let factures = api.get("/api/v1/instances?workflow=facture", &admin).await;
    assert_eq!(factures["items"].as_array().unwrap().len(), 2, "{factures}");

    // ---- Back down to Hot Desk the same day: a credit note on the period's invoice ----
    // Hot Desk at 80 % occupancy: 290 € + 5 % = 304.50 € HT; the whole period is exchanged:
    // credit 472.50, new level 304.50, in the member's favour 168.00 € HT (201.60 € TTC). The
    // period's invoice (290 € HT) can take it: the credit note cites it, with that line.
    let changed = api
        .event(
            &system,
            "changement_formule",
            json!({"abonnement": "ABO-E2E-0001", "niveau": "hot_desk"}),
        )
        .await;
    assert_eq!(changed["reached"], json!([abonnement]), "{changed}");
    // The credit note is a child case of the subscription, keyed by the invoice it corrects.
    let avoir = api.case_of(&admin, "avoir", &first).await;
    let credit_case = api.get(&format!("/api/v1/instances/{avoir}"), &admin).await;
    assert_eq!(credit_case["parent_id"], json!(abonnement), "{credit_case}");
    // The invoice is settled (its follow-up closed): no follow-up takes the credit note, which
    // waits for accounting's decision, and the subscription waits for the credit note.
    let task = api.task_of(&admin, "comptabilite", &avoir).await;
    let credit_data = api.get(&format!("/api/v1/instances/{avoir}"), &admin).await["data"].clone();
    let numero_avoir = credit_data["numero"]["number"]
        .as_str()
        .unwrap_or_else(|| panic!("the credit note's number: {credit_data}"))
        .to_string();
    // It cites the period's invoice (its number, and its date: checked against the ledger by
    // the credit note's own control) with the prorated line.
    assert!(task["title"].as_str().unwrap().contains(&first), "{task}");
    assert!(!credit_data["controle"].is_null(), "{credit_data}");
    let ligne = &credit_data["totaux"]["lignes"][0];
    assert_eq!(dec(&ligne["prix_unitaire"]), "168", "{credit_data}");
    assert_eq!(dec(&ligne["quantite"]), "1", "{credit_data}");
    assert_eq!(
        dec(&credit_data["totaux"]["total_ttc"]),
        "201.6",
        "{credit_data}"
    );
    // The credit note went to the member with its PDF, and is posted on the invoice.
    let sent = mails(&smtp, 4);
    let note = sent
        .iter()
        .find(|m| m.0.contains(&numero_avoir))
        .unwrap_or_else(|| panic!("the credit note's email: {sent:?}"));
    assert!(note.0.contains(&first), "{note:?}");
    assert_eq!(note.2, [format!("{numero_avoir}.pdf")]);
    assert_eq!(
        api.balance(&admin, &format!("factures/{first}/avoirs"))
            .await,
        "201.6"
    );
    api.complete(
        &admin,
        &task,
        "rembourse",
        json!({"commentaire": "virement du jour"}),
    )
    .await;
    let refunded = api.wait_status(&avoir, &admin, "completed").await;
    assert_eq!(refunded["data"]["statut"], "rembourse", "{refunded}");
    api.wait_awaiting(&abonnement, &admin, "changement_formule", 3)
        .await;
    let sent = mails(&smtp, 5);
    let confirmation = sent
        .iter()
        .find(|m| m.0.contains("passe en Hot Desk"))
        .unwrap_or_else(|| panic!("the downgrade's confirmation: {sent:?}"));
    assert!(
        confirmation.1.contains("en votre faveur : 168,00 € HT."),
        "{confirmation:?}"
    );
    assert!(
        confirmation.1.contains(&format!(
            "L'avoir {numero_avoir} sur la facture {first} vous est envoyé séparément ; son montant vous est remboursé."
        )),
        "{confirmation:?}"
    );
    // No other invoice: the credit is not netted into any price.
    let factures = api.get("/api/v1/instances?workflow=facture", &admin).await;
    assert_eq!(factures["items"].as_array().unwrap().len(), 2, "{factures}");

    // ---- A simulation prices a change and does nothing ----
    let simulation = api
        .start(
            &system,
            "simulation_changement_formule",
            json!({
                "abonnement": "ABO-E2E-0001",
                "devise": "EUR",
                "niveau": "hot_desk",
                "formule": "mois",
                "postes": 1,
                "prix_ht": 260.00,
                "debut_periode": "2026-11-23",
                "nouveau_niveau": "bureau_dedie",
                "taux_occupation": 0.80,
                "date_changement": "2026-12-03",
            }),
        )
        .await;
    // `data` holds the case's variables: the pricing is in `changement`.
    let simulated = api.wait_status(&simulation, &admin, "completed").await;
    let priced = &simulated["data"];
    assert_eq!(priced["resultat"], "chiffre", "{simulated}");
    let prorata = &priced["changement"]["prorata"];
    assert_eq!(dec(&prorata["solde"]), "141.67", "{simulated}");
    assert_eq!(prorata["jours_restants"], 20, "{simulated}");
    assert_eq!(prorata["jours_periode"], 30, "{simulated}");
    assert!(
        priced["resume"]
            .as_str()
            .unwrap()
            .ends_with("Vous paieriez un supplément de 141,67 € HT (TVA en sus)."),
        "{simulated}"
    );
    assert!(
        of_kind(&api.history(&simulation, &admin).await, "effect_requested").is_empty(),
        "a simulation has no effect"
    );
    assert_eq!(smtp.messages().len(), 5, "nothing sent by the simulation");

    // ---- Termination at the member's request: access until the end of the paid period ----
    api.event(
        &system,
        "resiliation_demandee",
        json!({"abonnement": "ABO-E2E-0001"}),
    )
    .await;
    // `data` holds the case's variables, the output's among them.
    let ended = api.wait_status(&abonnement, &admin, "completed").await;
    let data = &ended["data"];
    assert_eq!(data["statut"], "resilie", "{ended}");
    assert_eq!(data["motif_fin"], "demande_membre");
    assert_eq!(data["niveau"], "hot_desk");
    assert_eq!(data["factures"], json!([first]));
    assert_eq!(data["date_fin_acces"], data["periode"]["dernier_jour"]);
    assert_eq!(data["historique"][0]["vers"], "bureau_dedie");
    assert_eq!(dec(&data["historique"][0]["solde"]), "182.5");
    assert_eq!(data["historique"][1]["vers"], "hot_desk");
    assert_eq!(dec(&data["historique"][1]["solde"]), "-168");
    assert_eq!(data["avoirs"][0]["avoir"], numero_avoir.as_str(), "{ended}");
    assert_eq!(data["avoirs"][0]["facture"], first.as_str(), "{ended}");
    assert_eq!(data["avoirs"][0]["statut"], "rembourse", "{ended}");
    assert_eq!(dec(&data["avoirs"][0]["montant_ttc"]), "201.6", "{ended}");
    let sent = mails(&smtp, 6);
    assert!(
        sent.iter()
            .any(|m| m.0.contains("résiliation de votre abonnement ABO-E2E-0001")),
        "{sent:?}"
    );

    // ---- A second member terminates while the period's invoice is unpaid ----
    let unpaid = api
        .start(
            &system,
            "abonnement_coworking",
            json!({
                "abonnement": "ABO-E2E-0002",
                "membre": "Marc Dupont",
                "email": "marc.dupont@exemple.fr",
                "telephone": "+33600000005",
                "espace": "lyon_republique",
                "niveau": "hot_desk",
                "formule": "mois",
                "postes": 1,
                "debut": today,
            }),
        )
        .await;
    api.wait_awaiting(&unpaid, &admin, "paiement_recu", 1).await;
    let pending = api
        .get(&format!("/api/v1/instances/{unpaid}"), &admin)
        .await;
    let third = pending["data"]["facture_periode"]["facture"]
        .as_str()
        .unwrap_or_else(|| panic!("the second member's invoice: {pending}"))
        .to_string();
    assert!(third != first && third != second, "{third}");
    let sent = mails(&smtp, 7);
    assert!(sent.iter().any(|m| m.0.contains(&third)), "{sent:?}");
    let third_follow_up = api.case_of(&admin, "suivi_facture", &third).await;
    api.wait_awaiting(&third_follow_up, &admin, "paiement_recu", 1)
        .await;
    let terminated = api
        .event(
            &system,
            "resiliation_demandee",
            json!({"abonnement": "ABO-E2E-0002"}),
        )
        .await;
    assert_eq!(terminated["reached"], json!([unpaid]), "{terminated}");
    let ended = api.wait_status(&unpaid, &admin, "completed").await;
    assert_eq!(ended["data"]["statut"], "resilie", "{ended}");
    assert_eq!(ended["data"]["motif_fin"], "demande_membre", "{ended}");
    // Not paid: the access closes the same day.
    assert_eq!(ended["data"]["date_fin_acces"], today.as_str(), "{ended}");
    mails(&smtp, 8);
    // The invoice stays due: its follow-up was not cancelled with the subscription, and the
    // later payment reaches it alone.
    let still = api
        .get(&format!("/api/v1/instances/{third_follow_up}"), &admin)
        .await;
    assert_eq!(still["status"], "waiting", "{still}");
    let late = api
        .event(
            &system,
            "paiement_recu",
            json!({"facture": third, "montant": 348.00, "mode": "especes"}),
        )
        .await;
    assert_eq!(late["reached"], json!([third_follow_up]), "{late}");
    let settled = api.wait_status(&third_follow_up, &admin, "completed").await;
    assert_eq!(settled["data"]["statut"], "payee", "{settled}");

    // Every case of the pack replays as it was recorded.
    let all = api.get("/api/v1/instances", &admin).await;
    let ids: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    // Two subscriptions, three invoices and their three follow-ups, the credit note, the
    // simulation.
    assert_eq!(ids.len(), 10, "{all}");
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
        assert_eq!(report["chain"]["intact"], true, "{report}");
        assert_eq!(report["replay"]["identical"], true, "{report}");
    }
}
