//! The booking pack (`workflows/reservation.yaml`) end to end under `dossier serve`, against
//! real local servers (aiosmtpd for the emails, Radicale for the shared calendar): five requests
//! arrive at once for a slot of three places: exactly three hold a place (waiting for their
//! payment), two join the waiting list with ranks 1 and 2; the three pay and receive their
//! confirmation with an iCalendar invitation, published on the calendar; two cancellations
//! promote the waiting list in order (rank 1, then rank 2); the capacity and the list's counters
//! are checked in the ledger API. Each confirmation carries a random check-in code (`unique_id`,
//! `RSV-` + 10 alphanumeric characters, all distinct) and shows the slot in Paris time; the
//! first cancellation's refund starts `remboursement_reservation`, whose accounting task, once
//! completed, sends the customer the refund confirmation. Every history replays.

#[path = "support/pack.rs"]
mod pack;
#[path = "../connectors/tests/support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mailparse::MailHeaderMap;
use pack::{dec, Api};
use serde_json::{json, Value};
use support::servers::{Radicale, Smtp};

const AGENDA_PASSWORD: &str = "mot-de-passe-agenda";

/// The pack's files copied into `dir`, with a `dossier.yaml` pointing at this test's servers.
fn project(dir: &Path, smtp: u16, agenda: &str, server: u16) -> PathBuf {
    let root = dir.join("reservation");
    let repo = support::repo_root();
    for sub in ["workflows", "rules", "templates"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(
        repo.join("workflows/reservation.yaml"),
        root.join("workflows/reservation.yaml"),
    )
    .unwrap();
    std::fs::copy(
        repo.join("workflows/remboursement_reservation.yaml"),
        root.join("workflows/remboursement_reservation.yaml"),
    )
    .unwrap();
    std::fs::copy(
        repo.join("rules/reservation.rhai"),
        root.join("rules/reservation.rhai"),
    )
    .unwrap();
    support::copy_tree(
        &repo.join("templates/reservation"),
        &root.join("templates/reservation"),
    );
    let config = format!(
        r#"server:
  listen: 127.0.0.1:{server}
connectors:
  courriel:
    type: email
    host: 127.0.0.1
    port: {smtp}
    tls: none
    from: "Coral Cloud Resorts <reservations@coral-cloud.exemple>"
  agenda:
    type: calendar
    url: {agenda}/coral/reservations/
    username: coral
    password_env: DOSSIER_AGENDA_PASSWORD
  sms:
    type: sms
    provider: orange
    api_url: http://127.0.0.1:9
    token_url: http://127.0.0.1:9/oauth/v3/token
    client_id_env: DOSSIER_ORANGE_CLIENT_ID
    client_secret_env: DOSSIER_ORANGE_CLIENT_SECRET
    sender_address: "tel:+2250000000000"
"#
    );
    std::fs::write(root.join("dossier.yaml"), config).unwrap();
    root
}

fn secrets(mut cmd: Command) -> Command {
    cmd.env("DOSSIER_AGENDA_PASSWORD", AGENDA_PASSWORD)
        .env("DOSSIER_ORANGE_CLIENT_ID", "client-orange")
        .env("DOSSIER_ORANGE_CLIENT_SECRET", "secret-orange");
    cmd
}

impl Api {
    /// The event a case waits for besides its `on_event` interrupts (annulation and
    /// modification), with its correlation, once it waits for one.
    async fn waiting_for(&self, case: &str, key: &str) -> (String, Value) {
        let last = RefCell::new(Value::Null);
        pack::eventually(
            || format!("case {case} waits for nothing: {}", last.borrow()),
            || async {
                let c = self.get(&format!("/api/v1/instances/{case}"), key).await;
                let found = c["waiting_for"].as_array().unwrap().iter().find(|w| {
                    w["event"] != "annulation_demandee" && w["event"] != "modification_demandee"
                });
                let found = found.map(|w| {
                    (
                        w["event"].as_str().unwrap().to_string(),
                        w["correlation"].clone(),
                    )
                });
                *last.borrow_mut() = c;
                found
            },
        )
        .await
    }

    /// Waits until the case's `statut` variable is `want`; returns the case.
    async fn wait_statut(&self, case: &str, key: &str, want: &str) -> Value {
        let last = RefCell::new(Value::Null);
        pack::eventually(
            || format!("case {case} is `{}`, not `{want}`", last.borrow()),
            || async {
                let c = self.get(&format!("/api/v1/instances/{case}"), key).await;
                if c["data"]["statut"] == want {
                    return Some(c);
                }
                *last.borrow_mut() = c["data"]["statut"].clone();
                None
            },
        )
        .await
    }

    /// Waits until the case waits for `event`.
    async fn wait_for_event(&self, case: &str, key: &str, event: &str) -> Value {
        let last = RefCell::new(String::new());
        pack::eventually(
            || format!("case {case} waits for {}, not {event}", last.borrow()),
            || async {
                let (e, corr) = self.waiting_for(case, key).await;
                let found = (e == event).then_some(corr);
                *last.borrow_mut() = e;
                found
            },
        )
        .await
    }

    /// Ledger balances under a prefix, as (account, balance as exact decimal text).
    async fn balances(&self, key: &str, prefix: &str) -> Vec<(String, String)> {
        let v = self
            .get(&format!("/api/v1/ledger/accounts?prefix={prefix}"), key)
            .await;
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["account"].as_str().unwrap().to_string(),
                    dec(&a["balance"]),
                )
            })
            .collect()
    }
}

/// The messages whose subject contains `needle`, waiting up to 30 s for `count` of them.
fn mails_with(smtp: &Smtp, needle: &str, count: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Vec<Vec<u8>> = smtp
            .messages()
            .into_iter()
            .filter(|m| {
                let parsed = mailparse::parse_mail(m).unwrap();
                parsed
                    .headers
                    .get_first_value("Subject")
                    .unwrap_or_default()
                    .contains(needle)
            })
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} message(s) about `{needle}`, {count} expected",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The decoded text/plain body of a message.
fn plain_text(mail: &mailparse::ParsedMail) -> String {
    if mail.subparts.is_empty() {
        return if mail.ctype.mimetype == "text/plain" {
            mail.get_body().unwrap()
        } else {
            String::new()
        };
    }
    mail.subparts.iter().map(plain_text).collect()
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

fn demande(reference: &str, debut: &str, fin: &str) -> Value {
    json!({
        "reference": reference,
        "ressource": "KAYAK-LAGON",
        "debut": debut,
        "fin": fin,
        "participants": 1,
        "client": format!("Client {reference}"),
        "email": format!("{}@clients.exemple", reference.to_lowercase()),
        "niveau_fidelite": "or",
        "consentement_avis": true
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_waiting_list_invitations_and_replay() {
    let smtp = Smtp::start(&[]);
    let radicale = Radicale::start("coral", AGENDA_PASSWORD);
    let server_port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let root = project(dir.path(), smtp.port, &radicale.base, server_port);
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
    let system = pack::key(&root, &db, "system", "front-office");
    let admin = pack::key(&root, &db, "admin", "direction");
    let _server = pack::serve(secrets(pack::dossier(&root)), &db, server_port);
    let api = Api::on_port(server_port);

    // A slot four days ahead (the 72-hour full-refund tier), two hours long.
    let start = chrono::Utc::now() + chrono::Duration::days(4);
    let debut = start.format("%Y-%m-%dT%H:00:00Z").to_string();
    let fin = (start + chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string();
    let slot = format!("KAYAK-LAGON/{debut}");

    // ---- 1. Five requests at once for three places ----
    let refs: Vec<String> = (1..=5).map(|n| format!("RES-E2E-{n}")).collect();
    let mut handles = Vec::new();
    for r in &refs {
        let api = api.clone();
        let system = system.clone();
        let input = demande(r, &debut, &fin);
        handles.push(tokio::spawn(async move {
            api.start(&system, "reservation", input).await
        }));
    }
    let mut cases = Vec::new();
    for h in handles {
        cases.push(h.await.unwrap());
    }
    let mut holding = Vec::new(); // (reference, case) with a place, waiting for the payment
    let mut waiting = Vec::new(); // (rank, reference, case) on the waiting list
    for (r, c) in refs.iter().zip(&cases) {
        let (event, corr) = api.waiting_for(c, &admin).await;
        match event.as_str() {
            "paiement_recu" => holding.push((r.clone(), c.clone())),
            "place_liberee" => {
                assert_eq!(corr["cle"], slot.as_str(), "{corr}");
                waiting.push((corr["rang"].as_i64().unwrap(), r.clone(), c.clone()));
            }
            other => panic!("{r} waits for {other}"),
        }
    }
    assert_eq!(holding.len(), 3, "exactly three hold a place: {holding:?}");
    assert_eq!(waiting.len(), 2, "two on the waiting list: {waiting:?}");
    waiting.sort();
    assert_eq!(
        waiting.iter().map(|w| w.0).collect::<Vec<_>>(),
        [1, 2],
        "ranks 1 and 2"
    );
    assert_eq!(
        api.balances(&admin, "places/").await,
        [(format!("places/{slot}"), "3".to_string())]
    );
    assert_eq!(
        api.balances(&admin, "file/").await,
        [
            (format!("file/{slot}/inscrits"), "2".to_string()),
            (format!("file/{slot}/promu"), "0".to_string())
        ]
    );
    mails_with(&smtp, "liste d'attente, rang", 2);
    mails_with(&smtp, "paiement à effectuer", 3);

    // ---- 2. The three pay: confirmation with the invitation, calendar publication ----
    for (r, _) in &holding {
        api.event(
            &system,
            "paiement_recu",
            json!({"reservation": r, "montant": 500}),
        )
        .await;
    }
    for (_, c) in &holding {
        // Confirmed, and waiting for the reminder, the day before the slot.
        let case = api.wait_statut(c, &admin, "confirmee").await;
        let case = if case["current_step"] == "attente_rappel" {
            case
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            api.get(&format!("/api/v1/instances/{c}"), &admin).await
        };
        assert_eq!(case["current_step"], "attente_rappel", "{case}");
    }
    // The check-in codes: drawn at random (`unique_id`), `RSV-` + 10 alphanumeric characters,
    // distinct, and the QR carries `<reference>:<code>`.
    let mut codes = Vec::new();
    for (r, c) in &holding {
        let case = api.get(&format!("/api/v1/instances/{c}"), &admin).await;
        let code = case["data"]["qr"]["code"].as_str().unwrap().to_string();
        assert_eq!(code.len(), 14, "{code}");
        assert!(code.starts_with("RSV-"), "{code}");
        assert!(
            code[4..].chars().all(|ch| ch.is_ascii_alphanumeric()),
            "{code}"
        );
        assert_eq!(
            case["data"]["qr"]["charge_utile"],
            format!("{r}:{code}"),
            "{case}"
        );
        codes.push(code);
    }
    let mut distinct = codes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{codes:?}");
    let confirmations = mails_with(&smtp, "confirmée", 3);
    for raw in &confirmations {
        let mail = mailparse::parse_mail(raw).unwrap();
        // The slot in Paris time, named; the customer's own code.
        let body = plain_text(&mail);
        assert!(body.contains("(heure de Paris)"), "{body}");
        assert!(!body.contains("UTC"), "{body}");
        assert!(codes.iter().any(|c| body.contains(c.as_str())), "{body}");
        let kinds: Vec<String> = parts(&mail).into_iter().map(|(t, _)| t).collect();
        assert!(kinds.contains(&"application/pdf".to_string()), "{kinds:?}");
        let ics: Vec<Vec<u8>> = parts(&mail)
            .into_iter()
            .filter(|(t, _)| t == "text/calendar")
            .map(|(_, b)| b)
            .collect();
        assert_eq!(ics.len(), 1, "one invitation");
        let text = String::from_utf8_lossy(&ics[0]).replace("\r\n ", "");
        assert!(text.contains("METHOD:REQUEST"), "{text}");
        assert!(text.contains("UID:reservation-RES-E2E-"), "{text}");
        assert!(
            text.contains(&format!("DTSTART:{}", start.format("%Y%m%dT%H0000Z"))),
            "{text}"
        );
    }
    let (first_ref, first_case) = holding[0].clone();
    let calendar_event = |reference: String| {
        let url = format!(
            "{}/coral/reservations/reservation-{reference}-1@coral-cloud.exemple.ics",
            radicale.base
        );
        async move {
            reqwest::Client::new()
                .get(url)
                .basic_auth("coral", Some(AGENDA_PASSWORD))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .replace("\r\n ", "")
        }
    };
    let ics = calendar_event(first_ref.clone()).await;
    assert!(ics.contains("STATUS:CONFIRMED"), "{ics}");
    assert!(ics.contains("SEQUENCE:0"), "{ics}");

    // ---- 3. A cancellation (four days ahead: full refund) promotes rank 1, not rank 2 ----
    api.event(
        &system,
        "annulation_demandee",
        json!({"reservation": first_ref}),
    )
    .await;
    let out = api.wait_output(&first_case, &admin).await;
    assert_eq!(out["statut"], "annulee", "{out}");
    assert_eq!(dec(&out["rembourse"]), dec(&out["montant_paye"]), "{out}");
    assert_eq!(dec(&out["penalite"]), "0", "{out}");
    let (_, rank1_ref, rank1_case) = waiting[0].clone();
    let (_, rank2_ref, rank2_case) = waiting[1].clone();
    api.wait_for_event(&rank1_case, &admin, "paiement_recu")
        .await;
    let promoted_case = api
        .wait_statut(&rank1_case, &admin, "en_attente_paiement")
        .await;
    assert_eq!(promoted_case["data"]["promu"], true, "{promoted_case}");
    assert_eq!(promoted_case["data"]["rang"], 1, "{promoted_case}");
    let corr = api
        .wait_for_event(&rank2_case, &admin, "place_liberee")
        .await;
    assert_eq!(corr["rang"], 2, "{corr}");
    let promoted = mails_with(&smtp, "paiement à effectuer", 4);
    assert!(
        promoted.iter().any(|m| {
            let p = mailparse::parse_mail(m).unwrap();
            p.headers
                .get_first_value("Subject")
                .unwrap_or_default()
                .contains(&rank1_ref)
        }),
        "the rank-1 customer is asked to pay"
    );
    let ics = calendar_event(first_ref.clone()).await;
    assert!(ics.contains("STATUS:CANCELLED"), "{ics}");
    mails_with(&smtp, &format!("{first_ref} annulée"), 1);

    // The refund is carried out: `remboursement_demande` started the refund workflow, whose
    // task waits in the accounting inbox; once completed, the customer gets the confirmation.
    let refund = api
        .case_of(&admin, "remboursement_reservation", &first_ref)
        .await;
    let task = api.task_of(&admin, "comptabilite", &refund).await;
    api.complete(
        &admin,
        &task,
        "rembourse",
        json!({"operation": "RMB-E2E-1"}),
    )
    .await;
    let refunded = api.wait_output(&refund, &admin).await;
    assert_eq!(refunded["statut"], "rembourse", "{refunded}");
    assert_eq!(
        dec(&refunded["montant"]),
        dec(&out["rembourse"]),
        "{refunded}"
    );
    let confirmation = mails_with(&smtp, &format!("{first_ref} : remboursement de"), 1);
    let body = plain_text(&mailparse::parse_mail(&confirmation[0]).unwrap());
    assert!(body.contains("RMB-E2E-1"), "{body}");

    // ---- 4. A second cancellation promotes rank 2 ----
    let (second_ref, second_case) = holding[1].clone();
    api.event(
        &system,
        "annulation_demandee",
        json!({"reservation": second_ref}),
    )
    .await;
    assert_eq!(
        api.wait_output(&second_case, &admin).await["statut"],
        "annulee"
    );
    api.wait_for_event(&rank2_case, &admin, "paiement_recu")
        .await;
    let promoted_case = api
        .wait_statut(&rank2_case, &admin, "en_attente_paiement")
        .await;
    assert_eq!(promoted_case["data"]["rang"], 2, "{promoted_case}");
    mails_with(
        &smtp,
        &format!("{rank2_ref} : Kayak dans le lagon, paiement"),
        1,
    );

    // The ledger: still three places taken, both ranks promoted.
    assert_eq!(
        api.balances(&admin, "places/").await,
        [(format!("places/{slot}"), "3".to_string())]
    );
    assert_eq!(
        api.balances(&admin, "file/").await,
        [
            (format!("file/{slot}/inscrits"), "2".to_string()),
            (format!("file/{slot}/promu"), "2".to_string())
        ]
    );
    let postings = api
        .get(
            &format!("/api/v1/ledger/postings?account=places/{slot}"),
            &admin,
        )
        .await;
    assert_eq!(postings["consistent"], true, "{postings}");
    // One posting per place moved, no padding: three holds, two releases, two promotions, and
    // no zero-amount line (the `for_each` postings follow the occurrences actually booked).
    let amounts: Vec<String> = postings["items"]
        .as_array()
        .expect("the journal's items")
        .iter()
        .map(|p| dec(&p["amount"]))
        .collect();
    assert_eq!(amounts.len(), 7, "{postings}");
    assert!(amounts.iter().all(|a| a == "1" || a == "-1"), "{postings}");
    // Each amount is exactly 1 or -1 (checked above): their sum, in integers.
    let sum: i64 = amounts.iter().map(|a| if a == "1" { 1 } else { -1 }).sum();
    assert_eq!(sum, 3, "{postings}");

    // ---- 5. Every history replays as it was recorded ----
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
        assert_eq!(report["replay"]["identical"], true, "{c}: {report}");
    }
}
