//! The KYC onboarding pack end to end under `dossier serve`: ten sign-ups at once each get an
//! ID in the seed's `CCYYMMDD-XXXX-UL` format, all different; each starts its professional card
//! case, whose QR token verifies with the public key of a freshly generated Ed25519 key
//! (exported as DOSSIER_CARTE_CLE_PRIVEE) and expires within 30 days (short-lived tokens,
//! re-signed while the card is active), and whose card PDF arrives by email (aiosmtpd) with an
//! SMS (Orange stub), the QR code drawn in the PDF being exactly the QR code of that token; a sign-up with an expired ID card goes to the compliance inbox, which asks
//! for more documents, receives them and approves; a card is suspended and reactivated (new
//! token), another revoked (notice by email and SMS); every history replays.

#[path = "support/pack.rs"]
mod pack;
#[path = "../connectors/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pack::{key, Api};
use ring::rand::SecureRandom;
use ring::signature::KeyPair;
use serde_json::{json, Value};
use support::servers::Smtp;
use support::{reply, Hit, Stub};

const RECEIPT_TOKEN: &str = "jeton-accuses-kyc-0123456789";

/// Orange: the token endpoint, then the send endpoint.
async fn orange() -> Stub {
    Stub::start(|hit, before| {
        if hit.path == "/oauth/v3/token" {
            return reply(
                200,
                json!({"access_token": "jeton-orange", "token_type": "Bearer", "expires_in": "3600"})
                    .to_string(),
            );
        }
        let mut req = hit.json();
        req["outboundSMSMessageRequest"]["resourceURL"] =
            json!(format!("http://orange.stub{}/req-{}", hit.path, before.len()));
        reply(201, req.to_string())
    })
    .await
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn b64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// base64url without padding (JWS segments, the signer's `public_key`).
fn b64url_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {text}"),
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// The pack's files copied into `dir`, with a `dossier.yaml` pointed at this test's servers.
fn project(dir: &Path, yaml: &str) -> PathBuf {
    let root = dir.join("kyc");
    let repo = support::repo_root();
    std::fs::create_dir_all(root.join("workflows")).unwrap();
    std::fs::create_dir_all(root.join("rules")).unwrap();
    for w in ["inscription_kyc", "carte_professionnelle"] {
        let name = format!("{w}.yaml");
        std::fs::copy(
            repo.join("workflows").join(&name),
            root.join("workflows").join(&name),
        )
        .unwrap();
    }
    std::fs::copy(repo.join("rules/kyc.rhai"), root.join("rules/kyc.rhai")).unwrap();
    support::copy_tree(&repo.join("templates/kyc"), &root.join("templates/kyc"));
    std::fs::write(root.join("dossier.yaml"), yaml).unwrap();
    root
}

/// An input file of `examples/kyc`.
fn example(name: &str) -> Value {
    let path = support::repo_root().join("examples/kyc").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

impl Api {
    /// Waits until the case (`GET /instances/{id}`: status, current step, data) satisfies `ok`.
    async fn wait_for(&self, case: &str, key: &str, ok: impl Fn(&Value) -> bool) -> Value {
        pack::eventually(
            || format!("case {case} never reached the awaited state"),
            || async {
                let c = self.get(&format!("/api/v1/instances/{case}"), key).await;
                ok(&c).then_some(c)
            },
        )
        .await
    }

    /// The open (or claimed) task of `case` in the `conformite` inbox.
    async fn open_task(&self, case: &str, key: &str) -> Value {
        pack::eventually(
            || format!("no open task for {case}"),
            || async {
                let tasks = self.get("/api/v1/tasks?role=conformite", key).await;
                tasks["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| {
                        t["instance_id"] == case
                            && (t["status"] == "open" || t["status"] == "claimed")
                    })
                    .cloned()
            },
        )
        .await
    }
}

/// Checks a compact JWS with the public key; its claims.
fn verify(token: &str, public_key: &[u8]) -> Value {
    let (signed, signature) = token.rsplit_once('.').expect("a compact JWS");
    let header: Value =
        serde_json::from_slice(&b64url_decode(signed.split('.').next().unwrap())).unwrap();
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert_eq!(header["kid"], "carte-2026", "{header}");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(signed.as_bytes(), &b64url_decode(signature))
        .expect("the card's token verifies with the public key");
    serde_json::from_slice(&b64url_decode(signed.split('.').nth(1).unwrap())).unwrap()
}

/// The leaves of a parsed message.
fn leaves<'a>(p: &'a mailparse::ParsedMail<'a>, out: &mut Vec<&'a mailparse::ParsedMail<'a>>) {
    if p.subparts.is_empty() {
        out.push(p);
    }
    for s in &p.subparts {
        leaves(s, out);
    }
}

/// The dark modules of the QR code drawn in a PDF: the document connector draws each run of
/// dark modules of a row as a filled rectangle (`re`) one module high.
fn qr_in_pdf(pdf: &[u8]) -> Vec<Vec<bool>> {
    let doc = lopdf::Document::load_mem(pdf).unwrap();
    let mut rects: Vec<[f32; 4]> = Vec::new();
    for page in doc.get_pages().values() {
        let content =
            lopdf::content::Content::decode(&doc.get_page_content(*page).unwrap()).unwrap();
        for op in content.operations.iter().filter(|o| o.operator == "re") {
            let n: Vec<f32> = op.operands.iter().map(|o| o.as_float().unwrap()).collect();
            rects.push([n[0], n[1], n[2], n[3]]);
        }
    }
    assert!(
        !rects.is_empty(),
        "no filled rectangle (QR code) in the PDF"
    );
    // The QR code's rectangles are all one module high.
    let module = rects[0][3];
    let rects: Vec<_> = rects
        .into_iter()
        .filter(|r| (r[3] - module).abs() < 0.01)
        .collect();
    let x0 = rects.iter().map(|r| r[0]).fold(f32::MAX, f32::min);
    let x1 = rects.iter().map(|r| r[0] + r[2]).fold(f32::MIN, f32::max);
    let top = rects.iter().map(|r| r[1] + r[3]).fold(f32::MIN, f32::max);
    let n = ((x1 - x0) / module).round() as usize;
    let mut grid = vec![vec![false; n]; n];
    for r in &rects {
        let row = ((top - (r[1] + r[3])) / module).round() as usize;
        let col = ((r[0] - x0) / module).round() as usize;
        let len = (r[2] / module).round() as usize;
        for cell in &mut grid[row][col..col + len] {
            *cell = true;
        }
    }
    grid
}

/// The modules of the QR code of `text` (error correction M, as the document connector draws it).
fn qr_of(text: &str) -> Vec<Vec<bool>> {
    let code =
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).unwrap();
    let n = code.width();
    let colors = code.to_colors();
    (0..n)
        .map(|r| {
            (0..n)
                .map(|c| colors[r * n + c] == qrcode::Color::Dark)
                .collect()
        })
        .collect()
}

/// A token's expiry as the card's texts write it (Abidjan time = UTC).
fn date_fr(exp: i64) -> String {
    chrono::DateTime::from_timestamp(exp, 0)
        .unwrap()
        .format("%d/%m/%Y à %H:%M")
        .to_string()
}

/// The messages sent to `to` so far: (subject, text body, PDF attachments' text).
fn mails_to(smtp: &Smtp, to: &str) -> Vec<(String, String, Vec<String>)> {
    mails_with_pdfs(smtp, to)
        .into_iter()
        .map(|(s, t, pdfs)| (s, t, pdfs.into_iter().map(|p| p.0).collect()))
        .collect()
}

/// A message: subject, text body, PDF attachments as (text, bytes).
type Mail = (String, String, Vec<(String, Vec<u8>)>);

/// The messages sent to `to` so far, with their PDF attachments' bytes.
fn mails_with_pdfs(smtp: &Smtp, to: &str) -> Vec<Mail> {
    use mailparse::MailHeaderMap;
    let mut found = Vec::new();
    for raw in smtp.messages() {
        let mail = mailparse::parse_mail(&raw).unwrap();
        if !mail
            .headers
            .get_first_value("To")
            .unwrap_or_default()
            .contains(to)
        {
            continue;
        }
        let subject = mail.headers.get_first_value("Subject").unwrap_or_default();
        let mut parts = Vec::new();
        leaves(&mail, &mut parts);
        let text = parts
            .iter()
            .find(|p| p.ctype.mimetype == "text/plain")
            .map(|p| p.get_body().unwrap())
            .unwrap_or_default();
        let pdfs = parts
            .iter()
            .filter(|p| p.ctype.mimetype == "application/pdf")
            .map(|p| {
                let raw = p.get_body_raw().unwrap();
                (pdf_extract::extract_text_from_mem(&raw).unwrap(), raw)
            })
            .collect();
        found.push((subject, text, pdfs));
    }
    found
}

/// SMS bodies sent to `to` so far.
fn sms_to(stub: &Stub, to: &str) -> Vec<String> {
    stub.hits()
        .iter()
        .filter(|h: &&Hit| h.path != "/oauth/v3/token")
        .map(|h| h.json()["outboundSMSMessageRequest"].clone())
        .filter(|r| {
            r["address"] == json!([format!("tel:{to}")]) || r["address"] == format!("tel:{to}")
        })
        .map(|r| {
            r["outboundSMSTextMessage"]["message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn wait_until(what: &str, ok: impl Fn() -> bool) {
    pack::eventually(
        || format!("still waiting for {what}"),
        || async { ok().then_some(()) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kyc_sign_ups_get_unique_ids_and_signed_cards_under_serve() {
    // A fresh Ed25519 key: PKCS#8 (v1) of a random seed, in base64, as the signer reads it.
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut seed).unwrap();
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&seed);
    let private_key = b64(&pkcs8);
    let public_key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();

    let smtp = Smtp::start(&[]);
    let orange_stub = orange().await;
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
    from: "ISMAIL <conformite@ismail.exemple.ci>"
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
  signature_carte:
    type: signer
    private_key_env: DOSSIER_CARTE_CLE_PRIVEE
    key_id: carte-2026
    issuer: ISMAIL
"#,
        smtp_port = smtp.port,
        orange = orange_stub.addr,
    );
    let dir = tempfile::tempdir().unwrap();
    let root = project(dir.path(), &yaml);
    let db = dir.path().join("dossier.db").to_string_lossy().into_owned();
    let secrets = |cmd: &mut Command| {
        cmd.env("DOSSIER_ORANGE_CLIENT_ID", "client-orange")
            .env("DOSSIER_ORANGE_CLIENT_SECRET", "secret-orange")
            .env("DOSSIER_SMS_RECEIPT_TOKEN", RECEIPT_TOKEN)
            .env("DOSSIER_CARTE_CLE_PRIVEE", &private_key);
    };

    let mut validate = pack::dossier(&root);
    validate.arg("validate");
    secrets(&mut validate);
    let out = validate.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let system = key(&root, &db, "system", "portail");
    let admin = key(&root, &db, "admin", "direction");
    let conformite = key(&root, &db, "operator,conformite", "fatou");
    let mut serve = pack::dossier(&root);
    secrets(&mut serve);
    let _server = pack::serve(serve, &db, server_port);
    // Shared by the concurrent sign-ups.
    let api = Api::on_port(server_port);
    let mut cases = Vec::new();
    let today = chrono::Utc::now().date_naive();
    let aammjj = today.format("%y%m%d").to_string();
    let validite = (today + chrono::Months::new(12))
        .format("%Y-%m-%d")
        .to_string();

    // ---- Ten sign-ups at once: ten different IDs in the seed's format ----
    let mut handles = Vec::new();
    for i in 0..10 {
        let mut input = example("inscription_partenaire.json");
        input["demande"] = json!(format!("INS-E2E-{i:02}"));
        input["email"] = json!(format!("partenaire{i}@exemple.ci"));
        input["telephone"] = json!(format!("+22507070000{i:02}"));
        let api = api.clone();
        let system = system.clone();
        handles.push(tokio::spawn(async move {
            api.start(&system, "inscription_kyc", input).await
        }));
    }
    let mut signups = Vec::new();
    for h in handles {
        signups.push(h.await.unwrap());
    }
    let mut ids = BTreeSet::new();
    let mut cards = Vec::new();
    for case in &signups {
        let out = api.wait_output(case, &admin).await;
        assert_eq!(out["statut"], "approuvee", "{out}");
        assert_eq!(out["consentement"]["version"], "CGU-KYC-2026-09", "{out}");
        assert_eq!(out["consentement"]["canal"], "web", "{out}");
        let id = out["identifiant"].as_str().unwrap().to_string();
        // CCYYMMDD-XXXX-UL: 16 characters.
        assert_eq!(id.len(), 16, "{id}");
        assert_eq!(&id[..8], format!("CI{aammjj}"), "{id}");
        assert_eq!(&id[8..9], "-", "{id}");
        assert!(
            id[9..13]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
            "{id}"
        );
        assert_eq!(&id[13..], "-PT", "{id}");
        ids.insert(id.clone());
        let started = out["carte"]["started"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(started.len(), 1, "the card case: {out}");
        cards.push((id, started[0].as_str().unwrap().to_string()));
    }
    assert_eq!(ids.len(), 10, "ten different IDs: {ids:?}");
    cases.extend(signups.iter().cloned());

    // ---- Each card: issued, signed, sent by email (PDF) and SMS ----
    for (id, card) in &cards {
        let c = api
            .wait_for(card, &admin, |c| c["current_step"] == "attente_echeance")
            .await;
        assert_eq!(c["business_key"], id.as_str(), "{c}");
        assert_eq!(c["data"]["statut"], "actif", "{c}");
        cases.push(card.clone());
    }
    let (id0, card0) = cards[0].clone();
    let c = api.get(&format!("/api/v1/instances/{card0}"), &admin).await;
    let jeton = &c["data"]["jeton"];
    assert_eq!(
        b64url_decode(jeton["public_key"].as_str().unwrap()),
        public_key,
        "the signer's public key is the one of the exported private key"
    );
    let claims = verify(jeton["token"].as_str().unwrap(), &public_key);
    assert_eq!(claims["id"], id0.as_str(), "{claims}");
    assert_eq!(claims["nom"], "Aya Kouassi", "{claims}");
    assert_eq!(claims["role"], "Partenaire", "{claims}");
    assert_eq!(claims["statut"], "actif", "{claims}");
    assert_eq!(claims["validite"], validite.as_str(), "{claims}");
    assert_eq!(claims["iss"], "ISMAIL", "{claims}");
    assert!(
        claims["iat"].is_number() && claims["exp"].is_number(),
        "{claims}"
    );
    // A short-lived token: 30 days (params.duree_jeton), not the card's 12 months.
    let exp0 = claims["exp"].as_i64().unwrap();
    let lifetime = exp0 - claims["iat"].as_i64().unwrap();
    assert!(
        (30 * 86400 - 120..=30 * 86400 + 120).contains(&lifetime),
        "the token lives 30 days: {claims}"
    );
    assert!(
        c["data"]["calendrier"]["resigner_le"].is_string(),
        "a re-signature is scheduled: {c}"
    );
    let qr_fin = date_fr(exp0);
    assert!(
        claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "{claims}"
    );
    let first_jti = claims["jti"].clone();

    wait_until("the ten activation emails", || smtp.messages().len() >= 10).await;
    let mails = mails_to(&smtp, "partenaire0@exemple.ci");
    assert_eq!(mails.len(), 1, "{mails:?}");
    let (subject, text, pdfs) = &mails_with_pdfs(&smtp, "partenaire0@exemple.ci")[0];
    assert_eq!(
        subject,
        "ISMAIL : votre compte est activé, voici votre carte professionnelle"
    );
    assert!(
        text.contains(&format!("Votre identifiant ISMAIL : {id0}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("QR code valable jusqu'au {qr_fin}")),
        "{text}"
    );
    assert_eq!(pdfs.len(), 1, "the card as a PDF");
    let qr_line = format!("QR code valable jusqu'au {qr_fin}");
    for want in [
        id0.as_str(),
        "Carte d'identité professionnelle",
        "Partenaire",
        "Actif",
        "KOUASSI",
        qr_line.as_str(),
    ] {
        assert!(pdfs[0].0.contains(want), "{want} in {}", pdfs[0].0);
    }
    // The QR code drawn in the card PDF is the QR code of the signed token.
    assert_eq!(
        qr_in_pdf(&pdfs[0].1),
        qr_of(jeton["token"].as_str().unwrap()),
        "the card's QR code holds the token"
    );
    wait_until("the ten activation SMS", || {
        sms_to(&orange_stub, "+2250707000009").len() == 1
    })
    .await;
    let sms = sms_to(&orange_stub, "+2250707000000");
    assert_eq!(
        sms,
        [format!("ISMAIL : votre compte est activé. Votre ID : {id0}. Votre carte professionnelle vous a été envoyée par courriel.\n")]
    );

    // ---- An expired ID card: compliance asks for more, gets it, approves ----
    let review = api
        .start(
            &system,
            "inscription_kyc",
            example("inscription_client_piece_expiree.json"),
        )
        .await;
    let task = api.open_task(&review, &conformite).await;
    assert!(
        task["title"]
            .as_str()
            .unwrap()
            .contains("risque moyen (50 points)"),
        "{task}"
    );
    api.complete(
        &conformite,
        &task,
        "completer",
        json!({"motif": "une pièce d'identité en cours de validité"}),
    )
    .await;
    api.wait_for(&review, &admin, |c| {
        c["current_step"] == "attente_complements"
    })
    .await;
    wait_until("the request for documents", || {
        !mails_to(&smtp, "moussa.traore@exemple.ci").is_empty()
    })
    .await;
    let (subject, text, _) = mails_to(&smtp, "moussa.traore@exemple.ci").remove(0);
    assert_eq!(
        subject,
        "ISMAIL : pièces complémentaires pour votre inscription INS-2026-0102"
    );
    assert!(
        text.contains("une pièce d'identité en cours de validité"),
        "{text}"
    );
    let v = api
        .event(
            &system,
            "pieces_complementaires",
            example("pieces_complementaires.json"),
        )
        .await;
    assert_eq!(v["reached"], json!([review.clone()]), "{v}");
    let task = api.open_task(&review, &conformite).await;
    assert!(
        task["title"]
            .as_str()
            .unwrap()
            .contains("risque faible (0 points)"),
        "{task}"
    );
    api.complete(&conformite, &task, "approuver", json!({}))
        .await;
    let out = api.wait_output(&review, &admin).await;
    assert_eq!(out["statut"], "approuvee", "{out}");
    assert_eq!(out["soumissions"], 2, "{out}");
    assert_eq!(out["revues"][0]["decision"], "completer", "{out}");
    assert_eq!(out["revues"][1]["decision"], "approuver", "{out}");
    assert_eq!(out["revues"][1]["par"], "fatou", "{out}");
    let id_client = out["identifiant"].as_str().unwrap().to_string();
    assert!(
        id_client.starts_with(&format!("CI{aammjj}-")) && id_client.ends_with("-CL"),
        "{id_client}"
    );
    assert!(!ids.contains(&id_client));
    cases.push(review);

    // ---- Card 1 suspended, then reactivated: a new token, still valid ----
    let (id1, card1) = cards[1].clone();
    let v = api
        .event(
            &system,
            "suspension_carte",
            json!({"identifiant": id1, "motif": "contrôle de conformité"}),
        )
        .await;
    assert_eq!(v["reached"], json!([card1.clone()]), "{v}");
    api.wait_for(&card1, &admin, |c| {
        c["data"]["statut"] == "suspendu" && c["current_step"] == "attente_suspendue"
    })
    .await;
    wait_until("the suspension SMS", || {
        sms_to(&orange_stub, "+2250707000001").len() == 2
    })
    .await;
    let v = api
        .event(&system, "reactivation_carte", json!({"identifiant": id1}))
        .await;
    assert_eq!(v["reached"], json!([card1.clone()]), "{v}");
    let c = api
        .wait_for(&card1, &admin, |c| {
            c["data"]["edition"] == 2 && c["current_step"] == "attente_echeance"
        })
        .await;
    assert_eq!(c["data"]["statut"], "actif", "{c}");
    let claims = verify(c["data"]["jeton"]["token"].as_str().unwrap(), &public_key);
    assert_eq!(claims["id"], id1.as_str());
    assert_eq!(claims["statut"], "actif");
    assert_ne!(claims["jti"], first_jti);
    wait_until("the reactivation email", || {
        mails_to(&smtp, "partenaire1@exemple.ci").len() == 3
    })
    .await;
    let subjects_after: Vec<String> = mails_to(&smtp, "partenaire1@exemple.ci")
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(
        subjects_after[1],
        format!("ISMAIL : votre carte professionnelle {id1} est suspendue")
    );
    // The suspension notice says when the last QR code stops being valid (no re-signing).
    let suspension_text = &mails_to(&smtp, "partenaire1@exemple.ci")[1].1;
    assert!(
        suspension_text.contains("cesse d'être valide au plus tard le"),
        "{suspension_text}"
    );
    // The reactivated card's PDF carries the new token.
    let reactivated = &mails_with_pdfs(&smtp, "partenaire1@exemple.ci")[2];
    assert_eq!(
        qr_in_pdf(&reactivated.2[0].1),
        qr_of(c["data"]["jeton"]["token"].as_str().unwrap()),
        "the reactivated card's QR code holds the new token"
    );
    assert_eq!(
        subjects_after[2],
        format!("ISMAIL : votre carte professionnelle est réactivée ({id1})")
    );

    // ---- Card 0 revoked: notices by email and SMS, the case ends ----
    let v = api
        .event(
            &system,
            "revocation_carte",
            example("revocation.json")
                .as_object()
                .map(|m| {
                    let mut m = m.clone();
                    m.insert("identifiant".into(), json!(id0));
                    Value::Object(m)
                })
                .unwrap(),
        )
        .await;
    assert_eq!(v["reached"], json!([card0.clone()]), "{v}");
    let out = api.wait_output(&card0, &admin).await;
    assert_eq!(out["statut"], "revoquee", "{out}");
    assert_eq!(out["motif"], "fraude documentaire avérée", "{out}");
    assert_eq!(out["jetons"][0]["jti"], first_jti, "{out}");
    // No token signed after the revocation: the last one lapses at its expiry.
    assert_eq!(out["jetons"].as_array().unwrap().len(), 1, "{out}");
    let last =
        chrono::DateTime::parse_from_rfc3339(out["dernier_jeton_expire_le"].as_str().unwrap())
            .unwrap()
            .timestamp();
    assert_eq!(last, exp0, "{out}");
    wait_until("the revocation email", || {
        mails_to(&smtp, "partenaire0@exemple.ci").len() == 2
    })
    .await;
    let (subject, text, _) = mails_to(&smtp, "partenaire0@exemple.ci").remove(1);
    assert_eq!(
        subject,
        format!("ISMAIL : votre carte professionnelle {id0} est révoquée")
    );
    assert!(
        text.contains("Motif : fraude documentaire avérée"),
        "{text}"
    );
    wait_until("the revocation SMS", || {
        sms_to(&orange_stub, "+2250707000000").len() == 2
    })
    .await;
    assert_eq!(
        sms_to(&orange_stub, "+2250707000000")[1],
        format!("ISMAIL : votre carte professionnelle {id0} est révoquée (fraude documentaire avérée). Son QR code cesse d'être valide au plus tard le {qr_fin}. Contact : conformite@ismail.exemple.ci\n")
    );
    // A revoked card's case is over: a late suspension reaches nothing.
    let v = api
        .event(&system, "suspension_carte", json!({"identifiant": id0}))
        .await;
    assert_eq!(v["reached"], json!([]), "{v}");

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
