//! The real-estate agency pack (`examples/immobilier`) end to end under `dossier serve`, against
//! real local servers (aiosmtpd for the emails, Radicale for the shared CalDAV calendar) and a
//! stub of the Orange SMS API: a lead is captured and contacted; a visit is published in the
//! calendar and mailed with its `.ics` to the client and the agent, reminded by SMS and email,
//! rescheduled (same UID, SEQUENCE raised, an updated `.ics`), then cancelled (STATUS:CANCELLED,
//! METHOD:CANCEL); a visit that already took place gets its report, which reaches the lead's
//! journal; a lease is generated as a PDF contract from the property's and parties' data, signed
//! by both parties (events), invoiced at entry through the invoicing pack (the invoice certified
//! by the FNE, a stub of the DGI's API, before it is emailed with the FNE reference), converts
//! the lead, and waits for its first monthly rent call. Every history replays.

#[path = "../connectors/tests/support/mod.rs"]
mod support;

#[path = "support/pack.rs"]
mod pack;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mailparse::MailHeaderMap;
use pack::Api;
use serde_json::{json, Value};
use support::servers::{Radicale, Smtp};
use support::{reply, Hit, Stub};

const AGENDA_PASSWORD: &str = "mot-de-passe-agenda";

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
fn project(dir: &Path, smtp: u16, agenda: &str, sms: &str, fne: &str, server: u16) -> PathBuf {
    let root = dir.join("immobilier");
    let repo = support::repo_root();
    for sub in ["workflows", "rules", "templates"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for file in [
        "workflows/prospect_immobilier.yaml",
        "workflows/visite_bien.yaml",
        "workflows/bail_location.yaml",
        "workflows/facture.yaml",
        // Une facture ivoirienne est certifiée par la FNE avant l'envoi.
        "workflows/certification_facture_fne.yaml",
        "workflows/suivi_facture.yaml",
        "rules/immobilier.rhai",
        "rules/facturation.rhai",
        "rules/ismail.rhai",
    ] {
        std::fs::copy(repo.join(file), root.join(file)).unwrap();
    }
    for sub in ["immobilier", "factures", "ismail"] {
        support::copy_tree(
            &repo.join("templates").join(sub),
            &root.join("templates").join(sub),
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
    from: "Agence Immobilière du Plateau <contact@immo-plateau.exemple.ci>"
  sms:
    type: sms
    provider: orange
    api_url: http://{sms}
    token_url: http://{sms}/oauth/v3/token
    client_id_env: DOSSIER_ORANGE_CLIENT_ID
    client_secret_env: DOSSIER_ORANGE_CLIENT_SECRET
    sender_address: "tel:+2250000000000"
    sender_name: ImmoPlateau
  imprimante:
    type: printer
    ipp_url: ipp://localhost:9/ipp/print
  agenda:
    type: calendar
    url: {agenda}/dossier/agenda/
    username: dossier
    password_env: DOSSIER_AGENDA_PASSWORD
  # La facture ivoirienne est certifiée par la FNE avant l'envoi ; sans ticket de caisse (la
  # facture part par courriel), le connecteur doit exister pour certification_facture_fne.
  fne:
    type: fiscal
    api_url: http://{fne}/ws
    api_key_env: DOSSIER_FNE_API_KEY
    point_of_sale: AGENCE_1
    establishment: PLATEAU
    timeout_seconds: 20
  caisse:
    type: printer
    escpos: {{ host: 127.0.0.1, port: 9, width: 48 }}
"#
    );
    std::fs::write(root.join("dossier.yaml"), config).unwrap();
    root
}

fn secrets(cmd: &mut Command) -> &mut Command {
    cmd.env("DOSSIER_ORANGE_CLIENT_ID", "client-orange")
        .env("DOSSIER_ORANGE_CLIENT_SECRET", "secret-orange")
        .env("DOSSIER_AGENDA_PASSWORD", AGENDA_PASSWORD)
        .env("DOSSIER_FNE_API_KEY", "cle-fne")
}

impl Api {
    /// Waits until the case has started `step` at least `times` times.
    async fn wait_step(&self, case: &str, key: &str, step: &str, times: usize) {
        pack::eventually(
            || format!("case {case} never reached {step} {times} time(s)"),
            || async {
                let history = self.history(case, key).await;
                let n = pack::of_kind(&history, "step_started")
                    .iter()
                    .filter(|e| e["payload"]["step"] == step)
                    .count();
                (n >= times).then_some(())
            },
        )
        .await
    }
}

/// One message taken by the SMTP server, taken apart.
struct Mail {
    subject: String,
    to: String,
    text: String,
    /// (file name, media type with its parameters, body)
    files: Vec<(String, String, Vec<u8>)>,
}

fn parse(raw: &[u8]) -> Mail {
    let mail = mailparse::parse_mail(raw).unwrap();
    let mut out = Mail {
        subject: mail.headers.get_first_value("Subject").unwrap_or_default(),
        to: mail.headers.get_first_value("To").unwrap_or_default(),
        text: String::new(),
        files: Vec::new(),
    };
    let mut stack = vec![&mail];
    while let Some(p) = stack.pop() {
        if p.subparts.is_empty() {
            let disposition = p.get_content_disposition();
            if let Some(name) = disposition.params.get("filename") {
                let method = p.ctype.params.get("method").cloned().unwrap_or_default();
                out.files.push((
                    name.clone(),
                    format!("{};{method}", p.ctype.mimetype),
                    p.get_body_raw().unwrap(),
                ));
            } else if p.ctype.mimetype == "text/plain" {
                out.text = p.get_body().unwrap().replace("\r\n", "\n");
            }
        }
        stack.extend(p.subparts.iter());
    }
    out
}

/// The SMTP server's messages, once there are `n` of them.
fn mails(smtp: &Smtp, n: usize) -> Vec<Mail> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let raw = smtp.messages();
        if raw.len() >= n {
            assert_eq!(raw.len(), n, "more messages than expected");
            return raw.iter().map(|m| parse(m)).collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} message(s), {n} expected",
            raw.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The calendar's copy of an event, unfolded.
async fn stored_event(base: &str, uid: &str) -> String {
    let ics = reqwest::Client::new()
        .get(format!("{base}/dossier/agenda/{uid}.ics"))
        .basic_auth("dossier", Some(AGENDA_PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    ics.replace("\r\n ", "")
}

/// An RFC 3339 instant `minutes` from now, to the minute, in UTC.
fn at(minutes: i64) -> (String, String) {
    let t = chrono::Utc::now() + chrono::Duration::minutes(minutes);
    (
        t.format("%Y-%m-%dT%H:%M:00Z").to_string(),
        t.format("%Y%m%dT%H%M00Z").to_string(),
    )
}

fn visit(reference: &str, debut: &str) -> Value {
    json!({
        "visite": reference,
        "bien": "APT-PLATEAU-12",
        "adresse": "Résidence Les Cocotiers, appartement 12, Plateau, Abidjan",
        "description_bien": "Appartement 3 pièces meublé, 85 m²",
        "client": "Awa Traoré",
        "client_email": "awa.traore@exemple.ci",
        "client_telephone": "+2250707070707",
        "agent": "Koffi Yao",
        "agent_email": "koffi.yao@immo-plateau.exemple.ci",
        "agent_telephone": "+2250505050505",
        "debut": debut,
        "prospect": "PROS-E2E-0001",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_visits_and_a_lease_reach_the_calendar_the_mailbox_and_replay() {
    let smtp = Smtp::start(&[]);
    let radicale = Radicale::start("dossier", AGENDA_PASSWORD);
    let sms_stub = Stub::start(|hit, before| {
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
        &radicale.base,
        &sms_stub.addr.to_string(),
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
    let system = pack::key(&root, &db, "system", "crm-agence");
    let admin = pack::key(&root, &db, "admin", "direction");
    let agent = pack::key(&root, &db, "operator,agent_immobilier", "koffi.yao");
    let mut cmd = pack::dossier(&root);
    secrets(&mut cmd);
    let _server = pack::serve(cmd, &db, server_port);
    let api = Api::on_port(server_port);
    let now = chrono::Utc::now();
    let year = now.format("%Y").to_string();
    let today = now.format("%Y-%m-%d").to_string();

    // ---- A lead: acknowledgement to the prospect, alert to the agent, first contact ----
    let prospect = api
        .start(
            &system,
            "prospect_immobilier",
            json!({
                "prospect": "PROS-E2E-0001",
                "nom": "Awa Traoré",
                "email": "awa.traore@exemple.ci",
                "telephone": "+2250707070707",
                "source": "site",
                "transaction": "location",
                "type_bien": "appartement",
                "budget": 160000,
                "delai_projet": 45,
                "agent": "Koffi Yao",
                "agent_email": "koffi.yao@immo-plateau.exemple.ci",
            }),
        )
        .await;
    let sent = mails(&smtp, 2);
    assert!(
        sent[0]
            .subject
            .contains("nous avons bien reçu votre demande"),
        "{}",
        sent[0].subject
    );
    assert!(sent[0].to.contains("awa.traore@exemple.ci"));
    assert_eq!(
        sent[1].subject,
        "Prospect PROS-E2E-0001 à contacter : Awa Traoré (tiede, 60 points)"
    );
    let contact = api.task_of(&agent, "agent_immobilier", &prospect).await;
    api.complete(
        &agent,
        &contact,
        "contacte",
        json!({"note": "Cherche un 3 pièces meublé au Plateau"}),
    )
    .await;
    api.wait_step(&prospect, &admin, "attente_interaction", 1)
        .await;

    // ---- A visit tomorrow: published, mailed with its .ics, reminded at once (less than a day) ----
    let (debut, debut_ics) = at(23 * 60);
    let uid = "visite-VIS-E2E-0001@immo-plateau.exemple.ci";
    let visite = api
        .start(&system, "visite_bien", visit("VIS-E2E-0001", &debut))
        .await;
    api.wait_step(&visite, &admin, "attente_fin_visite", 1)
        .await;
    let stored = stored_event(&radicale.base, uid).await;
    assert!(stored.contains(&format!("UID:{uid}")), "{stored}");
    assert!(stored.contains("SEQUENCE:0"), "{stored}");
    assert!(stored.contains(&format!("DTSTART:{debut_ics}")), "{stored}");
    assert!(stored.contains("mailto:awa.traore@exemple.ci"), "{stored}");
    assert!(
        stored.contains("mailto:koffi.yao@immo-plateau.exemple.ci"),
        "{stored}"
    );
    let sent = mails(&smtp, 4);
    let invitation = &sent[2];
    assert!(
        invitation.subject.contains("visite confirmée"),
        "{}",
        invitation.subject
    );
    assert!(
        invitation.to.contains("awa.traore@exemple.ci") && invitation.to.contains("koffi.yao@")
    );
    assert_eq!(invitation.files.len(), 1);
    assert_eq!(invitation.files[0].0, "visite-VIS-E2E-0001.ics");
    assert_eq!(invitation.files[0].1, "text/calendar;REQUEST");
    let ics = String::from_utf8_lossy(&invitation.files[0].2).replace("\r\n ", "");
    assert!(
        ics.contains("METHOD:REQUEST")
            && ics.contains(&format!("UID:{uid}"))
            && ics.contains("SEQUENCE:0"),
        "{ics}"
    );
    assert!(
        sent[3].subject.contains("rappel de la visite"),
        "{}",
        sent[3].subject
    );
    // The reminder SMS: one to the client, one to the agent.
    let texts: Vec<(String, String)> = sms_stub
        .hits()
        .iter()
        .filter(|h| h.path != "/oauth/v3/token")
        .map(|h| {
            let r = h.json()["outboundSMSMessageRequest"].clone();
            (
                r["address"].as_str().unwrap().to_string(),
                r["outboundSMSTextMessage"]["message"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(texts[0].0, "tel:+2250707070707");
    assert!(
        texts[0].1.contains("rappel, visite du bien APT-PLATEAU-12"),
        "{texts:?}"
    );
    // The visit is less than a day away: "demain" or "aujourd'hui", by the calendar day.
    assert!(
        texts[0].1.contains("APT-PLATEAU-12 demain ")
            || texts[0].1.contains("APT-PLATEAU-12 aujourd'hui "),
        "{texts:?}"
    );
    assert_eq!(texts[1].0, "tel:+2250505050505");

    // ---- Rescheduled two days later: same UID, SEQUENCE raised, an updated invitation ----
    let (nouveau, nouveau_ics) = at(2 * 24 * 60);
    let moved = api
        .event(
            &system,
            "visite_reprogrammee",
            json!({"visite": "VIS-E2E-0001", "debut": nouveau}),
        )
        .await;
    assert_eq!(moved["reached"], json!([visite]), "{moved}");
    api.wait_step(&visite, &admin, "attente_rappel", 2).await;
    let stored = stored_event(&radicale.base, uid).await;
    assert!(stored.contains(&format!("UID:{uid}")), "{stored}");
    assert!(stored.contains("SEQUENCE:1"), "{stored}");
    assert!(
        stored.contains(&format!("DTSTART:{nouveau_ics}")),
        "{stored}"
    );
    let sent = mails(&smtp, 5);
    let update = &sent[4];
    assert!(
        update.subject.contains("visite reprogrammée"),
        "{}",
        update.subject
    );
    let ics = String::from_utf8_lossy(&update.files[0].2).replace("\r\n ", "");
    assert!(
        ics.contains(&format!("UID:{uid}"))
            && ics.contains("SEQUENCE:1")
            && ics.contains(&format!("DTSTART:{nouveau_ics}")),
        "{ics}"
    );

    // ---- Cancelled: STATUS:CANCELLED in the calendar, METHOD:CANCEL by email ----
    api.event(
        &system,
        "visite_annulee",
        json!({"visite": "VIS-E2E-0001", "motif": "bien déjà loué"}),
    )
    .await;
    let cancelled = api.wait_status(&visite, &admin, "completed").await;
    assert_eq!(cancelled["data"]["statut"], "annulee", "{cancelled}");
    let stored = stored_event(&radicale.base, uid).await;
    assert!(
        stored.contains("STATUS:CANCELLED") && stored.contains("SEQUENCE:2"),
        "{stored}"
    );
    let sent = mails(&smtp, 6);
    let annulation = &sent[5];
    assert!(
        annulation.subject.contains("annulée"),
        "{}",
        annulation.subject
    );
    assert!(
        annulation.text.contains("Motif : bien déjà loué."),
        "{}",
        annulation.text
    );
    assert_eq!(annulation.files[0].1, "text/calendar;CANCEL");
    let ics = String::from_utf8_lossy(&annulation.files[0].2).replace("\r\n ", "");
    assert!(
        ics.contains("METHOD:CANCEL") && ics.contains(&format!("UID:{uid}")),
        "{ics}"
    );

    // ---- A visit that already took place: the agent's report reaches the lead's journal ----
    let (passee, _) = at(-60);
    let visite2 = api
        .start(&system, "visite_bien", visit("VIS-E2E-0002", &passee))
        .await;
    let report = api.task_of(&agent, "agent_immobilier", &visite2).await;
    api.complete(
        &agent,
        &report,
        "effectuee",
        json!({"commentaire": "Très intéressée, demande le bail", "interet": "fort", "suite": "candidature"}),
    )
    .await;
    let done = api.wait_status(&visite2, &admin, "completed").await;
    assert_eq!(done["data"]["statut"], "effectuee", "{done}");
    api.wait_step(&prospect, &admin, "interaction_recue", 1)
        .await;
    let _ = mails(&smtp, 7); // its invitation (no reminder: the visit had begun)

    // ---- The lease: contract PDF, two signatures, entry invoice, the lead converted ----
    let bail = api
        .start(
            &system,
            "bail_location",
            json!({
                "reference": "LOC-E2E-0001",
                "bien": "APT-PLATEAU-12",
                "adresse_bien": "Résidence Les Cocotiers, appartement 12, Plateau, Abidjan",
                "description_bien": "Appartement de 3 pièces, 85 m², 2e étage, parking",
                "meuble": true,
                "bailleur": "Mariam Diabaté",
                "bailleur_email": "mariam.diabate@exemple.ci",
                "locataire": "Awa Traoré",
                "locataire_email": "awa.traore@exemple.ci",
                "locataire_telephone": "+2250707070707",
                "locataire_piece": "CNI CI002345678",
                "revenus_mensuels": 600000,
                "loyer_mensuel": 150000,
                "charges_mensuelles": 10000,
                "date_debut": today,
                "duree_mois": 12,
                "prospect": "PROS-E2E-0001",
            }),
        )
        .await;
    api.wait_step(&bail, &admin, "attente_signature", 1).await;
    let sent = mails(&smtp, 8);
    let contrat = &sent[7];
    let numero = format!("BAIL-{year}-0001");
    assert!(contrat.subject.contains(&numero), "{}", contrat.subject);
    assert!(
        contrat.to.contains("awa.traore@exemple.ci")
            && contrat.to.contains("mariam.diabate@exemple.ci")
    );
    assert_eq!(contrat.files[0].0, format!("{numero}.pdf"));
    let pdf = &contrat.files[0].2;
    assert!(pdf.starts_with(b"%PDF-"));
    let text = pdf_extract::extract_text_from_mem(pdf).unwrap();
    for expected in [
        "Contrat de bail à usage d'habitation",
        numero.as_str(),
        "Mariam Diabaté",
        "Awa Traoré",
        "CNI CI002345678",
        "Résidence Les Cocotiers",
        "150 000 FCFA",
        "300 000 FCFA",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from the contract:\n{text}"
        );
    }
    for partie in ["locataire", "bailleur"] {
        let signed = api
            .event(
                &system,
                "bail_signe",
                json!({"reference": "LOC-E2E-0001", "partie": partie}),
            )
            .await;
        assert_eq!(signed["reached"], json!([bail]), "{signed}");
        api.wait_step(
            &bail,
            &admin,
            "toutes_signatures",
            if partie == "locataire" { 1 } else { 2 },
        )
        .await;
    }
    // The lease waits for the first monthly rent call, after its entry invoice.
    api.wait_step(&bail, &admin, "prochain_appel", 1).await;
    let c = api.wait_status(&bail, &admin, "waiting").await;
    let facture = format!("FAC-CI-{year}-0001");
    assert_eq!(c["data"]["statut"], "en_cours", "{c}");
    assert_eq!(c["data"]["factures"], json!([facture]), "{c}");
    assert_eq!(c["data"]["facture_entree"]["devise"], "XOF", "{c}");
    // The entry invoice was certified by the FNE (one signature, a private tenant: B2C, its three
    // lines exempt by law) before it was emailed.
    let entree = &c["data"]["facture_entree"];
    assert_eq!(entree["statut"], "envoyee", "{c}");
    assert_eq!(entree["fne"]["statut"], "certifiee", "{c}");
    assert_eq!(entree["fne"]["reference"], "2400123A26000000000", "{c}");
    assert_eq!(entree["fne"]["invoice_id"], "inv-0", "{c}");
    let hits = fne_stub.hits();
    assert_eq!(hits.len(), 1, "one signature: {hits:?}");
    assert_eq!(hits[0].path, "/ws/external/invoices/sign");
    assert_eq!(hits[0].header("authorization"), "Bearer cle-fne");
    let body = hits[0].json();
    assert_eq!(body["template"], "B2C", "{body}");
    assert_eq!(body["clientCompanyName"], "Awa Traoré", "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{body}");
    assert!(
        items.iter().all(|it| it["taxes"] == json!(["TVAD"])),
        "{body}"
    );
    let sent = mails(&smtp, 9);
    let invoice = &sent[8];
    assert!(invoice.subject.contains(&facture), "{}", invoice.subject);
    assert_eq!(invoice.files[0].0, format!("{facture}.pdf"));
    let text = pdf_extract::extract_text_from_mem(&invoice.files[0].2).unwrap();
    assert!(
        text.contains("Dépôt de garantie (2 mois de loyer)"),
        "{text}"
    );
    assert!(
        text.contains("Facture normalisée (FNE) n° 2400123A26000000000"),
        "the FNE reference on the PDF: {text}"
    );
    // The lead is converted by the signature.
    let lead = api.wait_status(&prospect, &admin, "completed").await;
    assert_eq!(lead["data"]["statut"], "converti", "{lead}");
    assert_eq!(lead["data"]["bail"], numero.as_str(), "{lead}");
    let journal: Vec<&str> = lead["data"]["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        journal,
        ["capture", "appel", "visite", "conversion"],
        "{lead}"
    );

    // Every case of the pack replays as it was recorded (the invoice's too).
    let factures = api.get("/api/v1/instances?workflow=facture", &admin).await;
    let invoice_case = factures["items"][0]["id"].as_str().unwrap().to_string();
    let certifications = api
        .get(
            "/api/v1/instances?workflow=certification_facture_fne",
            &admin,
        )
        .await;
    assert_eq!(
        certifications["items"].as_array().unwrap().len(),
        1,
        "{certifications}"
    );
    assert_eq!(
        certifications["items"][0]["business_key"],
        facture.as_str(),
        "{certifications}"
    );
    assert_eq!(
        certifications["items"][0]["parent_id"],
        invoice_case.as_str(),
        "{certifications}"
    );
    let certification_case = certifications["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for c in [
        &prospect,
        &visite,
        &visite2,
        &bail,
        &invoice_case,
        &certification_case,
    ] {
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
