//! The dunning pack (`workflows/relance_facture.yaml`, `rules/relances.rhai`,
//! `rules/penalites.rhai`, `templates/relances/`) end to end under `dossier serve`, against real
//! local servers: aiosmtpd for the emails, ippeveprinter for the printed letters, a stub for the
//! Orange SMS API. `dossier serve` runs on the system clock, so the invoices fall due in the past
//! and each case catches up at once on the last level due (`relances.plan_niveau`):
//!
//! - an XOF invoice of an ISMAIL creditor that has credits, opened by the `facture_echue` event,
//!   three days late: the "premier rappel" SMS, paid for with 2 credits from the wallet seeded by
//!   `achat_credits`; a partial payment (`POST /api/v1/events`), then the balance through the
//!   signed `paiement_mobile` hook: `payee`, ISMAIL's 5 % commission on each payment;
//! - an EUR invoice opened by the signed `facture_emise` webhook, ten days late: the email with
//!   the L441-10 penalties and the 40 € indemnity; the `facture_echue` event reaches it (no
//!   second case); a dispute suspends it, closed with a credit note; the rest paid: `payee`;
//! - an XOF invoice of a creditor with no credits, sixteen days late: the `recouvrement` task
//!   "crédits insuffisants"; the wallet topped up, "réessayer": the formal notice printed (IPP);
//! - an EUR invoice twenty days late: the collection department's decision task; a write-off
//!   above the threshold waits for the `direction` role (the department cannot approve it).
//!
//! Checks what the SMTP server, the printer and the SMS stub received, the wallets and
//! commissions through the ledger API, and that every history replays.

#[path = "support/pack.rs"]
mod pack;
#[path = "../connectors/tests/support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;

use mailparse::MailHeaderMap;
use pack::Api;
use serde_json::{json, Value};
use support::servers::{Printer, Smtp};
use support::{reply, Hit, Stub};

const RECEIPT_TOKEN: &str = "jeton-accuses-0123456789";
const FACTURE_EMISE_SECRET: &str = "whsec_c2VjcmV0IGRlIGxhIGZhY3R1cmF0aW9uIQ==";
const PAIEMENT_MOBILE_SECRET: &str = "whsec_c2VjcmV0IGR1IHBhaWVtZW50IG1vYmlsZQ==";

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

/// The pack's files (and the ISMAIL wallet's, for the credits) copied into `dir`, with a
/// `dossier.yaml` pointed at this test's servers.
fn project(dir: &Path, yaml: &str) -> PathBuf {
    let root = dir.join("recouvrement");
    let repo = support::repo_root();
    for sub in ["workflows", "rules"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for w in ["relance_facture", "achat_credits", "expiration_credits"] {
        let file = format!("workflows/{w}.yaml");
        std::fs::copy(repo.join(&file), root.join(&file)).unwrap();
    }
    for r in ["relances", "penalites", "ismail"] {
        let file = format!("rules/{r}.rhai");
        std::fs::copy(repo.join(&file), root.join(&file)).unwrap();
    }
    for t in ["relances", "ismail"] {
        support::copy_tree(
            &repo.join("templates").join(t),
            &root.join("templates").join(t),
        );
    }
    std::fs::write(root.join("dossier.yaml"), yaml).unwrap();
    root
}

fn secrets(mut cmd: Command) -> Command {
    cmd.env("DOSSIER_ORANGE_CLIENT_ID", "client-orange")
        .env("DOSSIER_ORANGE_CLIENT_SECRET", "secret-orange")
        .env("DOSSIER_SMS_RECEIPT_TOKEN", RECEIPT_TOKEN)
        .env("DOSSIER_HOOK_FACTURE_EMISE_SECRET", FACTURE_EMISE_SECRET)
        .env(
            "DOSSIER_HOOK_PAIEMENT_MOBILE_SECRET",
            PAIEMENT_MOBILE_SECRET,
        );
    cmd
}

impl Api {
    /// Sends an event that starts one case; its id.
    async fn start_by_event(&self, key: &str, name: &str, payload: Value) -> String {
        let v = self.event(key, name, payload).await;
        let started = v["started"].as_array().cloned().unwrap_or_default();
        assert_eq!(started.len(), 1, "{name} starts one case: {v}");
        started[0].as_str().unwrap().to_string()
    }

    /// A webhook delivery signed the Standard Webhooks way; (status, answer).
    async fn hook(&self, name: &str, secret: &str, id: &str, payload: Value) -> (u16, Value) {
        let body = payload.to_string();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let k = dossier_server::webhook::decode_secret(secret).unwrap();
        let sig = dossier_server::webhook::sign(&k, id, ts, body.as_bytes());
        let resp = self
            .client
            .post(format!("{}/hooks/{name}", self.base))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Waits until the case satisfies `ok` (its JSON from `GET /instances/{id}`); that JSON.
    async fn wait_case(
        &self,
        case: &str,
        key: &str,
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let last = RefCell::new(Value::Null);
        pack::eventually(
            || format!("case {case} never got {what}: {}", last.borrow()),
            || async {
                let c = self.get(&format!("/api/v1/instances/{case}"), key).await;
                if ok(&c) {
                    return Some(c);
                }
                *last.borrow_mut() = c;
                None
            },
        )
        .await
    }

    /// Waits until the case waits at `step`.
    async fn wait_step(&self, case: &str, key: &str, step: &str) -> Value {
        self.wait_case(case, key, &format!("waiting at {step}"), |c| {
            c["status"] == "waiting" && c["current_step"] == step
        })
        .await
    }

    /// Waits until the case waits for the date of level `rank` of the ladder (a level already
    /// due goes through `attente_niveau` for a moment: it is not a stable state).
    async fn wait_level(&self, case: &str, key: &str, rank: i64) -> Value {
        self.wait_case(case, key, &format!("waiting for level {rank}"), |c| {
            c["status"] == "waiting"
                && c["current_step"] == "attente_niveau"
                && c["data"]["relance"]["rang"] == rank
        })
        .await
    }

    /// Buys credits for `user` through `achat_credits`; the wallet's balance after it.
    async fn buy_credits(
        &self,
        system: &str,
        admin: &str,
        payment: &str,
        user: &str,
        fcfa: u64,
    ) -> String {
        let case = self
            .start_by_event(
                system,
                "paiement_credits_recu",
                json!({"paiement": payment, "utilisateur": user, "telephone": "+2250505050505",
                       "montant_fcfa": fcfa, "moyen": "mobile-money", "premier_achat": false}),
            )
            .await;
        let out = self.wait_output(&case, admin).await;
        assert_eq!(out["statut"], "credite", "{out}");
        exact(&out["solde"])
    }
}

/// A decimal of the API's JSON as its exact text, trailing zeros kept (`"24.30"`, where
/// `pack::dec` gives `24.3`): the API writes decimals as JSON numbers that keep their digits
/// (or as text), and money is compared digit for digit, never through a float (`24.3` and
/// `24.30000001` must not pass for `24.30`).
fn exact(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '-') =>
        {
            s.clone()
        }
        _ => panic!("not a decimal: {v}"),
    }
}

/// The SMS texts the Orange stub received so far for the invoices' customers (the credit
/// purchases confirm theirs to another number): (recipient, text).
fn sms_sent(stub: &Stub) -> Vec<(String, String)> {
    stub.hits()
        .into_iter()
        .filter(|h| h.path != "/oauth/v3/token")
        .map(|h| {
            let r = &h.json()["outboundSMSMessageRequest"];
            let to = r["address"]
                .as_array()
                .and_then(|a| a.first().cloned())
                .unwrap_or_else(|| r["address"].clone());
            (
                to.as_str().unwrap_or_default().to_string(),
                r["outboundSMSTextMessage"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .filter(|(to, _)| to == "tel:+2250700000000")
        .collect()
}

/// The text of every leaf `text/plain` part of a message.
fn mail_text(raw: &[u8]) -> String {
    fn walk(p: &mailparse::ParsedMail, out: &mut String) {
        if p.subparts.is_empty() && p.ctype.mimetype == "text/plain" {
            out.push_str(&p.get_body().unwrap());
        }
        for s in &p.subparts {
            walk(s, out);
        }
    }
    let mail = mailparse::parse_mail(raw).unwrap();
    let mut out = String::new();
    walk(&mail, &mut out);
    out
}

/// `dd/mm/yyyy` of the day `days` from today (UTC).
fn day(days: i64) -> chrono::NaiveDate {
    chrono::Utc::now().date_naive() + chrono::Duration::days(days)
}

fn fr(d: chrono::NaiveDate) -> String {
    d.format("%d/%m/%Y").to_string()
}

fn iso(d: chrono::NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn invoice(
    facture: &str,
    client: &str,
    montant: Value,
    devise: &str,
    echeance: chrono::NaiveDate,
) -> Value {
    json!({
        "facture": facture,
        "client": client,
        "telephone": "+2250700000000",
        "email": "compta@client.exemple.ci",
        "montant_ttc": montant,
        "devise": devise,
        "echeance": iso(echeance),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dunning_pack_runs_under_serve_and_replays() {
    let smtp = Smtp::start(&[]);
    let printer = Printer::start("application/pdf");
    let orange_stub = Stub::start(|hit, before| {
        let (status, body) = orange(hit, before.len());
        reply(status, body)
    })
    .await;
    let server_port = support::free_port();
    let yaml = format!(
        r#"server:
  listen: 127.0.0.1:{server_port}
hooks:
  facture_emise: {{}}
  paiement_mobile:
    event: paiement_recu
connectors:
  courriel:
    type: email
    host: 127.0.0.1
    port: {smtp_port}
    tls: none
    from: "Service recouvrement <recouvrement@dossier.exemple>"
  sms:
    type: sms
    provider: orange
    api_url: http://{orange}
    token_url: http://{orange}/oauth/v3/token
    client_id_env: DOSSIER_ORANGE_CLIENT_ID
    client_secret_env: DOSSIER_ORANGE_CLIENT_SECRET
    sender_address: "tel:+2250000000000"
    sender_name: Dossier
    receipts_url: http://127.0.0.1:{server_port}/receipts/sms
    receipt_token_env: DOSSIER_SMS_RECEIPT_TOKEN
  imprimante:
    type: printer
    ipp_url: {printer_uri}
"#,
        smtp_port = smtp.port,
        orange = orange_stub.addr,
        printer_uri = printer.uri,
    );
    let dir = tempfile::tempdir().unwrap();
    let root = project(dir.path(), &yaml);
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
    let system = pack::key(&root, &db, "system", "facturation");
    let admin = pack::key(&root, &db, "admin", "administrateur");
    let recouvrement = pack::key(&root, &db, "operator,recouvrement", "agent-recouvrement");
    let direction = pack::key(&root, &db, "operator,direction", "directrice");
    let _server = pack::serve(secrets(pack::dossier(&root)), &db, server_port);
    let api = Api::on_port(server_port);
    let mut cases = Vec::new();

    // ---- 1. The creditor IMMO-PLATEAU buys 20 credits (1 000 FCFA) ----
    let solde = api
        .buy_credits(&system, &admin, "PAY-OM-REL-1", "IMMO-PLATEAU", 1000)
        .await;
    assert_eq!(solde, "20");
    assert_eq!(api.balance(&admin, "credits/IMMO-PLATEAU").await, "20");

    // ---- 2. An XOF invoice three days late, opened by `facture_echue`: the J+1 SMS ----
    // The J-3 reminder is past its due date, J+1 is due, J+8 is not yet: one SMS at once.
    // The payload is what suivi_facture emits (original amount, `deja_paye`); the trigger keeps
    // the dunning fields only.
    let echeance_a = day(-3);
    let sms_a = api
        .start_by_event(&system, "facture_echue", {
            let mut f = invoice(
                "F-REL-001",
                "Immeuble Plateau SA",
                json!(250000),
                "XOF",
                echeance_a,
            );
            f["creancier"] = json!("IMMO-PLATEAU");
            f["deja_paye"] = json!(0);
            f
        })
        .await;
    let c = api.wait_level(&sms_a, &admin, 3).await;
    assert_eq!(c["data"]["relances_envoyees"], 1, "{c}");
    let sms = sms_sent(&orange_stub);
    assert_eq!(sms.len(), 1, "one SMS, not the missed J-3 one: {sms:?}");
    assert_eq!(sms[0].0, "tel:+2250700000000");
    assert_eq!(
        sms[0].1,
        format!(
            "Immeuble Plateau SA, sauf erreur de notre part, votre facture F-REL-001 échue le {} n'est pas réglée (250 000 FCFA). Merci de la régler sans tarder : des intérêts de retard courent depuis l'échéance. Si c'est déjà fait, ne tenez pas compte de ce message.",
            fr(echeance_a)
        )
    );
    // 2 credits (100 FCFA) debited from the creditor's wallet before the SMS left.
    let journal = api
        .get(
            "/api/v1/ledger/postings?account=credits/IMMO-PLATEAU",
            &admin,
        )
        .await;
    assert_eq!(journal["consistent"], true, "{journal}");
    let amounts: Vec<(String, String)> = journal["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (exact(&p["amount"]), exact(&p["balance"])))
        .collect();
    assert_eq!(
        amounts,
        [
            ("20".to_string(), "20".to_string()),
            ("-2".to_string(), "18".to_string())
        ],
        "{journal}"
    );
    assert_eq!(
        journal["items"][1]["instance_id"],
        sms_a.as_str(),
        "{journal}"
    );

    // A partial payment: the balance is recomputed, the ladder goes on (J+8 not due yet).
    let v = api
        .event(
            &system,
            "paiement_recu",
            json!({"facture": "F-REL-001", "montant": 100000}),
        )
        .await;
    assert_eq!(v["reached"], json!([sms_a.clone()]), "{v}");
    assert_eq!(v["started"], json!([]), "{v}");
    let c = api
        .wait_case(&sms_a, &admin, "the partial payment", |c| {
            c["status"] == "waiting"
                && c["current_step"] == "attente_niveau"
                && c["data"]["total_paye"].is_number()
                && exact(&c["data"]["total_paye"]) == "100000"
        })
        .await;
    assert_eq!(exact(&c["data"]["solde"]), "150000", "{c}");
    assert_eq!(
        exact(&c["data"]["commission"]),
        "5000",
        "5 % of 100 000: {c}"
    );
    // The balance through the signed mobile payment hook (no amount: the whole balance).
    let (s, v) = api
        .hook(
            "paiement_mobile",
            PAIEMENT_MOBILE_SECRET,
            "om-evt-0001",
            json!({"facture": "F-REL-001", "operateur": "orange-money"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["reached"], json!([sms_a.clone()]), "{v}");
    let out = api.wait_output(&sms_a, &admin).await;
    assert_eq!(out["statut"], "payee", "{out}");
    assert_eq!(exact(&out["total_paye"]), "250000", "{out}");
    assert_eq!(exact(&out["solde"]), "0", "{out}");
    assert_eq!(exact(&out["credits_consommes"]), "2", "{out}");
    assert_eq!(exact(&out["commission"]), "12500", "{out}");
    assert_eq!(out["relances_envoyees"], 1, "{out}");
    assert_eq!(out["niveau_atteint"], 2, "{out}");
    assert_eq!(
        api.balance(&admin, "commissions/IMMO-PLATEAU/XOF").await,
        "12500"
    );
    cases.push(sms_a);

    // ---- 3. An EUR invoice ten days late, opened by the signed `facture_emise` webhook ----
    // A professional debtor (SIREN given): L441-10 penalties and the 40 € indemnity. The
    // semester's ECB rate is not in rules/penalites.rhai yet: the email waits for the
    // department, which enters the published rate.
    let echeance_b = day(-10);
    let facture_b = {
        let mut f = invoice(
            "F-REL-002",
            "Atelier Graphique Sarl",
            json!("7300.00"),
            "EUR",
            echeance_b,
        );
        f["identifiant_client"] = json!("412 345 678");
        f
    };
    let (s, v) = api
        .hook(
            "facture_emise",
            FACTURE_EMISE_SECRET,
            "fact-evt-0001",
            facture_b.clone(),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let started = v["started"].as_array().cloned().unwrap_or_default();
    assert_eq!(started.len(), 1, "{v}");
    let mail_b = started[0].as_str().unwrap().to_string();
    // Its redelivery (same webhook id) changes nothing.
    let (s, again) = api
        .hook(
            "facture_emise",
            FACTURE_EMISE_SECRET,
            "fact-evt-0001",
            facture_b.clone(),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["started"], v["started"], "{again}");
    // A badly signed delivery is refused.
    let (s, _) = api
        .hook(
            "facture_emise",
            "whsec_bWF1dmFpcyBzZWNyZXQ=",
            "fact-evt-0002",
            invoice("F-REL-999", "Inconnu", json!("1.00"), "EUR", echeance_b),
        )
        .await;
    assert_eq!(s, 401);
    let task = api.task_of(&recouvrement, "recouvrement", &mail_b).await;
    assert_eq!(
        task["title"],
        "Facture F-REL-002 : taux à confirmer avant « Relance avec pénalités »"
    );
    assert!(
        smtp.messages().is_empty(),
        "nothing sent before the rate is confirmed"
    );
    api.complete(&recouvrement, &task, "saisir_taux", json!({"taux": "2.15"}))
        .await;
    api.wait_level(&mail_b, &admin, 4).await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    let mail = mailparse::parse_mail(&mails[0]).unwrap();
    assert_eq!(
        mail.headers.get_first_value("Subject").unwrap(),
        "Relance : facture F-REL-002 impayée"
    );
    assert!(mail
        .headers
        .get_first_value("To")
        .unwrap()
        .contains("compta@client.exemple.ci"));
    let text = mail_text(&mails[0]);
    // 7 300,00 € × 12,15 % × 10 days / 365 = 24,30 € ; + 40 € (D441-5).
    for needle in [
        "la facture n° F-REL-002 d'un montant de 7 300,00 € TTC".to_string(),
        format!("échue le {}", fr(echeance_b)),
        "article L441-10 du code de commerce".to_string(),
        "l'indemnité forfaitaire pour frais de recouvrement de l'article D441-5, soit 40,00 €"
            .to_string(),
        format!("Au {}, avec 10 jours de retard", fr(day(0))),
        "pénalités de retard : 24,30 €".to_string(),
        format!(
            "du {} au {}, 10 jours à 12,15 % l'an",
            fr(day(-9)),
            fr(day(0))
        ),
        "(2,15 %, saisi par le service recouvrement) majoré de 10 points".to_string(),
        "indemnité forfaitaire de recouvrement : 40,00 €".to_string(),
        "total à régler : 7 364,30 €".to_string(),
    ] {
        assert!(text.contains(&needle), "`{needle}` in:\n{text}");
    }
    assert!(!text.contains("provisoire"), "{text}");
    assert!(sms_sent(&orange_stub).len() == 1, "no SMS for this invoice");
    // The invoicing announces the due date: the open case takes it, no second case.
    let v = api
        .event(&system, "facture_echue", {
            let mut f = facture_b.clone();
            f["deja_paye"] = json!("0.00");
            f
        })
        .await;
    assert_eq!(v["reached"], json!([mail_b.clone()]), "{v}");
    assert_eq!(v["started"], json!([]), "{v}");
    api.wait_level(&mail_b, &admin, 4).await;
    // A dispute suspends the ladder; a 300 € credit note (avoir_emis, as avoir.yaml sends it)
    // reaches the suspended case; the dispute closed, the ladder resumes on the new balance.
    let v = api
        .event(
            &system,
            "litige_ouvert",
            json!({"facture": "F-REL-002", "motif": "prestation contestée"}),
        )
        .await;
    assert_eq!(v["reached"], json!([mail_b.clone()]), "{v}");
    let c = api
        .wait_step(&mail_b, &admin, "attente_cloture_litige")
        .await;
    assert_eq!(c["data"]["statut"], "en_litige", "{c}");
    let v = api
        .event(
            &system,
            "avoir_emis",
            json!({"facture": "F-REL-002", "avoir": "AV-2026-0001", "date": iso(day(0)),
                   "montant_ttc": "300.00", "devise": "EUR"}),
        )
        .await;
    assert_eq!(v["reached"], json!([mail_b.clone()]), "{v}");
    let c = api
        .wait_case(&mail_b, &admin, "the credit note", |c| {
            c["status"] == "waiting"
                && c["current_step"] == "attente_cloture_litige"
                && c["data"]["total_avoirs"].is_number()
                && exact(&c["data"]["total_avoirs"]) == "300.00"
        })
        .await;
    assert_eq!(exact(&c["data"]["solde"]), "7000.00", "{c}");
    let v = api
        .event(
            &system,
            "litige_clos",
            json!({"facture": "F-REL-002", "issue": "resolu"}),
        )
        .await;
    assert_eq!(v["reached"], json!([mail_b.clone()]), "{v}");
    let c = api.wait_level(&mail_b, &admin, 4).await;
    assert_eq!(c["data"]["statut"], "en_cours", "{c}");
    assert_eq!(exact(&c["data"]["solde"]), "7000.00", "{c}");
    assert_eq!(c["data"]["relance"]["rang"], 4, "{c}");
    assert_eq!(smtp.messages().len(), 1, "nothing sent again");
    // Paid in full (no amount: the balance).
    let v = api
        .event(&system, "paiement_recu", json!({"facture": "F-REL-002"}))
        .await;
    assert_eq!(v["reached"], json!([mail_b.clone()]), "{v}");
    let out = api.wait_output(&mail_b, &admin).await;
    assert_eq!(out["statut"], "payee", "{out}");
    assert_eq!(out["professionnel"], true, "{out}");
    assert_eq!(exact(&out["total_avoirs"]), "300.00", "{out}");
    assert_eq!(exact(&out["total_paye"]), "7000.00", "{out}");
    assert_eq!(exact(&out["penalite"]), "24.30", "{out}");
    assert_eq!(exact(&out["indemnite"]), "40.00", "{out}");
    assert_eq!(
        exact(&out["commission"]),
        "0.00",
        "no creditor, no commission: {out}"
    );
    assert_eq!(out["avoirs_recus"][0]["avoir"], "AV-2026-0001", "{out}");
    cases.push(mail_b);

    // ---- 4. A creditor without credits: the rate, the task, the top-up, the printed letter ----
    // The UMOA 2026 rate is not in the table: the department lets the letter go at the
    // provisional rate (printed as such), then the credits are missing.
    let echeance_c = day(-16);
    let lettre_c = api
        .start_by_event(&system, "facture_echue", {
            let mut f = invoice(
                "F-REL-003",
                "Hôtel Ivoire Lagune",
                json!(3650000),
                "XOF",
                echeance_c,
            );
            f["creancier"] = json!("IMMO-VIDE");
            f
        })
        .await;
    let task = api.task_of(&recouvrement, "recouvrement", &lettre_c).await;
    assert_eq!(
        task["title"],
        "Facture F-REL-003 : taux à confirmer avant « Mise en demeure »"
    );
    api.complete(
        &recouvrement,
        &task,
        "envoyer_taux_provisoire",
        json!({"commentaire": "taux 2026 pas encore publié"}),
    )
    .await;
    let task = api.task_of(&recouvrement, "recouvrement", &lettre_c).await;
    assert_eq!(
        task["title"],
        "Facture F-REL-003 : IMMO-VIDE n'a plus assez de crédits pour « Mise en demeure »"
    );
    assert!(
        task["instructions"]
            .as_str()
            .unwrap()
            .contains("dont le portefeuille n'en a que 0"),
        "{task}"
    );
    assert_eq!(
        printer.spooled(0).len(),
        0,
        "nothing printed before the credits"
    );
    let solde = api
        .buy_credits(&system, &admin, "PAY-OM-REL-2", "IMMO-VIDE", 1000)
        .await;
    assert_eq!(solde, "20");
    api.complete(&recouvrement, &task, "reessayer", json!({}))
        .await;
    api.wait_level(&lettre_c, &admin, 5).await;
    assert_eq!(api.balance(&admin, "credits/IMMO-VIDE").await, "18");
    let files = printer.spooled(1);
    assert_eq!(files.len(), 1, "{files:?}");
    let pdf = std::fs::read(&files[0]).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let letter = pdf_extract::extract_text_from_mem(&pdf).unwrap();
    // The PDF wraps its paragraphs: words are compared across line ends.
    let letter = letter.split_whitespace().collect::<Vec<_>>().join(" ");
    // 3 650 000 FCFA × 5,50 % × 16 days / 365 = 8 800 FCFA; no indemnity in XOF.
    for needle in [
        "Mise en demeure de payer",
        "Hôtel Ivoire Lagune",
        "F-REL-003",
        "3 650 000 FCFA",
        "8 800 FCFA",
        "3 658 800 FCFA",
        "sous 8 jours",
        "(taux provisoire)",
    ] {
        assert!(
            letter.contains(needle),
            "`{needle}` in the letter:\n{letter}"
        );
    }
    assert!(!letter.contains("D441-5"), "no indemnity in XOF:\n{letter}");
    let v = api
        .event(&system, "paiement_recu", json!({"facture": "F-REL-003"}))
        .await;
    assert_eq!(v["reached"], json!([lettre_c.clone()]), "{v}");
    let out = api.wait_output(&lettre_c, &admin).await;
    assert_eq!(out["statut"], "payee", "{out}");
    assert_eq!(exact(&out["credits_consommes"]), "2", "{out}");
    assert_eq!(exact(&out["commission"]), "182500", "{out}");
    cases.push(lettre_c);

    // ---- 5. Twenty days late: the department's decision, a write-off over the threshold ----
    let echeance_d = day(-20);
    let mut facture_d = invoice(
        "F-REL-004",
        "Négoce Atlantique",
        json!("7300.00"),
        "EUR",
        echeance_d,
    );
    facture_d["professionnel"] = json!(true);
    let perte_d = api.start(&system, "relance_facture", facture_d).await;
    let task = api.task_of(&recouvrement, "recouvrement", &perte_d).await;
    // 7 300,00 € × 12,15 % × 20 days / 365 = 48,60 € ; + 40 €.
    assert_eq!(
        task["title"],
        "Facture F-REL-004 (Négoce Atlantique) impayée : 7 388,60 € à recouvrer"
    );
    api.complete(
        &recouvrement,
        &task,
        "passage_en_perte",
        json!({"commentaire": "société en liquidation"}),
    )
    .await;
    let validation = api.task_of(&direction, "direction", &perte_d).await;
    assert_eq!(
        validation["title"],
        "Passage en perte de la facture F-REL-004 (Négoce Atlantique) : 7 300,00 €"
    );
    assert!(validation["instructions"]
        .as_str()
        .unwrap()
        .contains("société en liquidation"));
    // The collection department cannot approve its own write-off.
    let (s, v) = api
        .try_complete(&recouvrement, &validation, "approuver", json!({}))
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        api.get(&format!("/api/v1/instances/{perte_d}"), &admin)
            .await["status"],
        "waiting"
    );
    api.complete(
        &direction,
        &validation,
        "approuver",
        json!({"motif": "liquidation judiciaire"}),
    )
    .await;
    let out = api.wait_output(&perte_d, &admin).await;
    assert_eq!(out["statut"], "passee_en_perte", "{out}");
    assert_eq!(exact(&out["solde"]), "7300.00", "{out}");
    assert_eq!(exact(&out["montant_perdu"]), "7300.00", "{out}");
    assert_eq!(
        out["relances_envoyees"], 0,
        "the automatic levels were missed: {out}"
    );
    assert_eq!(out["niveau_atteint"], 5, "{out}");
    // The write-off is announced to the invoice's follow-up (`facture_passee_en_perte`); no
    // follow-up runs in this project: the event reached nobody and started nothing.
    let c = api
        .get(&format!("/api/v1/instances/{perte_d}"), &admin)
        .await;
    assert_eq!(
        c["data"]["signalement_perte"],
        json!({"reached": [], "started": []}),
        "{c}"
    );
    cases.push(perte_d);

    // ---- 6. Opened when the invoice is sent (`suivi_facture_demande` from facture.yaml) ----
    // Due in two days: the J-3 reminder is due now and goes; the due date announced later by
    // the invoicing (`facture_echue`) reaches this case and starts no other one.
    let echeance_e = day(2);
    let emise_e = api
        .start_by_event(
            &system,
            "suivi_facture_demande",
            json!({"facture": "F-REL-005", "date_facture": iso(day(-28)),
                   "client": "Librairie du Plateau", "email": "compta@client.exemple.ci",
                   "telephone": "+2250700000000", "montant_ttc": "480.00", "devise": "EUR",
                   "echeance": iso(echeance_e), "envoyee": true}),
        )
        .await;
    let c = api.wait_level(&emise_e, &admin, 2).await;
    assert_eq!(c["data"]["relances_envoyees"], 1, "{c}");
    let sms = sms_sent(&orange_stub);
    assert_eq!(sms.len(), 2, "{sms:?}");
    assert_eq!(
        sms[1].1,
        format!(
            "Librairie du Plateau, votre facture F-REL-005 de 480,00 € arrive à échéance le {}. Merci de prévoir son règlement. Si c'est déjà fait, ne tenez pas compte de ce message.",
            fr(echeance_e)
        )
    );
    let v = api
        .event(
            &system,
            "facture_echue",
            json!({"facture": "F-REL-005", "client": "Librairie du Plateau",
                   "email": "compta@client.exemple.ci", "telephone": "+2250700000000",
                   "montant_ttc": "480.00", "deja_paye": "0.00", "devise": "EUR",
                   "echeance": iso(echeance_e)}),
        )
        .await;
    assert_eq!(v["reached"], json!([emise_e.clone()]), "{v}");
    assert_eq!(v["started"], json!([]), "no second case: {v}");
    api.wait_level(&emise_e, &admin, 2).await;
    let v = api
        .event(
            &system,
            "paiement_recu",
            json!({"facture": "F-REL-005", "montant": "480.00"}),
        )
        .await;
    assert_eq!(v["reached"], json!([emise_e.clone()]), "{v}");
    let out = api.wait_output(&emise_e, &admin).await;
    assert_eq!(out["statut"], "payee", "{out}");
    assert_eq!(exact(&out["total_paye"]), "480.00", "{out}");
    assert_eq!(
        out["professionnel"], false,
        "no identifier: a consumer: {out}"
    );
    cases.push(emise_e);

    // Nothing else was sent: two SMS, one email, one letter.
    assert_eq!(sms_sent(&orange_stub).len(), 2);
    assert_eq!(smtp.messages().len(), 1);
    assert_eq!(printer.spooled(1).len(), 1);

    // The wallets and commissions as the ledger has them.
    let wallets = api
        .get("/api/v1/ledger/accounts?prefix=credits/", &admin)
        .await;
    let balances: Vec<(String, String)> = wallets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["account"].as_str().unwrap().to_string(),
                exact(&a["balance"]),
            )
        })
        .collect();
    assert_eq!(
        balances,
        [
            ("credits/IMMO-PLATEAU".to_string(), "18".to_string()),
            ("credits/IMMO-VIDE".to_string(), "18".to_string())
        ],
        "{wallets}"
    );
    assert_eq!(
        api.balance(&admin, "commissions/IMMO-VIDE/XOF").await,
        "182500"
    );

    // ---- 7. Every history replays as it was recorded (the credit purchases too) ----
    let all = api.get("/api/v1/instances", &admin).await;
    let ids: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    for c in &cases {
        assert!(ids.contains(c), "{c} listed: {all}");
    }
    for c in &ids {
        let (s, report) = api
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/instances/{c}/replay"),
                &admin,
                None,
            )
            .await;
        assert_eq!(s, 200, "{c}: {report}");
        assert_eq!(report["chain"]["intact"], true, "{c}: {report}");
        assert_eq!(report["replay"]["identical"], true, "{c}: {report}");
    }
}

/// The message models the default ladder does not use (`params.echelle` of relance_facture):
/// the email `rappel` and the SMS `dernier_rappel`, rendered by the real connectors under
/// `dossier serve`. The project's ladder is replaced, in this test's copy only, by
/// J+1 email `rappel`, J+2 SMS `dernier_rappel`, J+30 decision, sent at midnight UTC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_message_models_render_under_serve() {
    let smtp = Smtp::start(&[]);
    let orange_stub = Stub::start(|hit, before| {
        let (status, body) = orange(hit, before.len());
        reply(status, body)
    })
    .await;
    let server_port = support::free_port();
    let yaml = format!(
        r#"server:
  listen: 127.0.0.1:{server_port}
connectors:
  courriel:
    type: email
    host: 127.0.0.1
    port: {smtp_port}
    tls: none
    from: "Service recouvrement <recouvrement@dossier.exemple>"
  sms:
    type: sms
    provider: orange
    api_url: http://{orange}
    token_url: http://{orange}/oauth/v3/token
    client_id_env: DOSSIER_ORANGE_CLIENT_ID
    client_secret_env: DOSSIER_ORANGE_CLIENT_SECRET
    sender_address: "tel:+2250000000000"
    sender_name: Dossier
    receipts_url: http://127.0.0.1:{server_port}/receipts/sms
    receipt_token_env: DOSSIER_SMS_RECEIPT_TOKEN
  imprimante:
    type: printer
    ipp_url: ipp://127.0.0.1:9/ipp/print
"#,
        smtp_port = smtp.port,
        orange = orange_stub.addr,
    );
    let dir = tempfile::tempdir().unwrap();
    let root = project(dir.path(), &yaml);
    // The ladder of this copy: the only change to the workflow.
    let file = root.join("workflows/relance_facture.yaml");
    let source = std::fs::read_to_string(&file).unwrap();
    let from = source.find("  echelle:\n").expect("the ladder");
    let to = source
        .find("  heure_envoi: PT9H\n")
        .expect("the sending hour");
    let to = to + "  heure_envoi: PT9H\n".len();
    let variant = format!(
        "{}{}{}",
        &source[..from],
        "  echelle:\n    - { nom: Rappel par courriel, jours: 1, canal: email, modele: rappel }\n    - { nom: Dernier rappel, jours: 2, canal: sms, modele: dernier_rappel }\n    - { nom: Décision du service recouvrement, jours: 30, canal: manuel }\n  heure_envoi: PT0H\n",
        &source[to..]
    );
    std::fs::write(&file, variant).unwrap();
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
    let system = pack::key(&root, &db, "system", "facturation");
    let admin = pack::key(&root, &db, "admin", "administrateur");
    let _server = pack::serve(secrets(pack::dossier(&root)), &db, server_port);
    let api = Api::on_port(server_port);

    // Due yesterday, 100 € already paid: J+1 (today 00:00) is due, J+2 is not: the email
    // `rappel` for the rest.
    let echeance_a = day(-1);
    let rappel = api
        .start_by_event(&system, "facture_echue", {
            let mut f = invoice(
                "F-VAR-001",
                "Atelier Graphique Sarl",
                json!("1200.00"),
                "EUR",
                echeance_a,
            );
            f["deja_paye"] = json!("100.00");
            f
        })
        .await;
    api.wait_level(&rappel, &admin, 2).await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    let mail = mailparse::parse_mail(&mails[0]).unwrap();
    assert_eq!(
        mail.headers.get_first_value("Subject").unwrap(),
        "Rappel : facture F-VAR-001"
    );
    assert_eq!(
        mail_text(&mails[0]).replace("\r\n", "\n").trim_end(),
        format!(
            "Madame, Monsieur,\n\nSauf erreur de notre part, la facture n° F-VAR-001 d'un montant de 1 200,00 € TTC, échue le {}, n'est pas réglée : il reste 1 100,00 € à payer. Nous vous remercions de bien vouloir la régler dans les meilleurs délais.\n\nSi vous avez réglé cette facture entre-temps, merci de ne pas tenir compte de ce courriel.\n\nLe service comptabilité clients",
            fr(echeance_a)
        )
    );

    // Due two days ago, XOF: J+1 is skipped (J+2 is due), the SMS `dernier_rappel` with the
    // total: 365 000 FCFA × 5,50 % × 2 days / 365 = 110 FCFA of interest.
    let echeance_b = day(-2);
    let dernier = api
        .start_by_event(
            &system,
            "facture_echue",
            invoice(
                "F-VAR-002",
                "Immeuble Plateau SA",
                json!(365000),
                "XOF",
                echeance_b,
            ),
        )
        .await;
    api.wait_level(&dernier, &admin, 3).await;
    let sms = sms_sent(&orange_stub);
    assert_eq!(sms.len(), 1, "{sms:?}");
    assert_eq!(
        sms[0].1,
        format!(
            "Immeuble Plateau SA, DERNIER RAPPEL : votre facture F-VAR-002 échue le {} n'est toujours pas réglée (365 110 FCFA avec les intérêts de retard). Sans règlement, votre dossier sera confié à notre service recouvrement.",
            fr(echeance_b)
        )
    );
    for (case, facture) in [(&rappel, "F-VAR-001"), (&dernier, "F-VAR-002")] {
        let v = api
            .event(&system, "paiement_recu", json!({"facture": facture}))
            .await;
        assert_eq!(v["reached"], json!([case.clone()]), "{v}");
        let out = api.wait_output(case, &admin).await;
        assert_eq!(out["statut"], "payee", "{out}");
        assert_eq!(out["relances_envoyees"], 1, "{out}");
    }
    assert_eq!(
        exact(&api.wait_output(&rappel, &admin).await["total_paye"]),
        "1200.00"
    );
}
