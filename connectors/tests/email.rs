//! The `email` connector against a real SMTP server (aiosmtpd, `support/smtp_server.py`) started
//! by each test on a free loopback port, with a self-signed certificate made by `openssl`. The
//! server writes every message it takes into a Maildir, with headers telling what it saw of the
//! session (envelope, TLS version, authenticated user); the tests parse those files with
//! `mailparse`.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dossier_connectors::{ConnectorError, EffectRequest, Registry};
use mailparse::{MailHeaderMap, ParsedMail};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::servers::Smtp;
use support::{free_port, load};

const USER: &str = "relances@exemple.ci";
const PASSWORD: &str = "mot-de-passe-été";

/// A folder with a self-signed certificate for `localhost` and 127.0.0.1.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        Certs::make(true)
    }

    /// `end_entity`: mark the certificate CA:FALSE; openssl's default (CA:TRUE) is what many
    /// self-signed server certificates carry, and what rustls refuses as a server's own.
    fn make(end_entity: bool) -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(support::system_program("openssl"));
        cmd.arg("req");
        if end_entity {
            cmd.args(["-addext", "basicConstraints=critical,CA:FALSE"]);
        }
        let status = cmd
            .args([
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
            ])
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl req failed");
        Certs { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

/// aiosmtpd speaking `tls` (none, starttls or tls) with the certificate of `certs`; `auth`:
/// requiring USER and PASSWORD; `extra`: more arguments (`--reject ADDR`, `--defer ADDR`).
fn start_smtp(tls: &str, certs: Option<&Certs>, auth: bool, extra: &[&str]) -> Smtp {
    let (cert, key) = certs.map(|c| (c.cert(), c.key())).unzip();
    Smtp::start_secured(
        tls,
        cert.as_deref().zip(key.as_deref()),
        auth.then_some((USER, PASSWORD)),
        extra,
    )
}

fn effect(key: &str, request: Value) -> EffectRequest {
    EffectRequest {
        idempotency_key: key.to_string(),
        case_id: "DOS-2026-0042".into(),
        step: "relance_email".into(),
        operation: "send".into(),
        request,
        attempt: 1,
        redelivered: false,
    }
}

/// The Message-ID the connector must derive from `key`, computed here independently.
fn expected_message_id(key: &str, domain: &str) -> String {
    let hex = hex::encode(Sha256::digest(key.as_bytes()));
    format!("<{}@{domain}>", &hex[..32])
}

fn header(mail: &ParsedMail, name: &str) -> String {
    mail.headers
        .get_first_value(name)
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// The addresses of an address header, as `Name <addr>` or `addr`.
fn addresses(mail: &ParsedMail, name: &str) -> Vec<String> {
    let h = mail
        .headers
        .get_first_header(name)
        .unwrap_or_else(|| panic!("no {name} header"));
    mailparse::addrparse_header(h)
        .unwrap()
        .iter()
        .map(|a| match a {
            mailparse::MailAddr::Single(s) => match &s.display_name {
                Some(n) => format!("{n} <{}>", s.addr),
                None => s.addr.clone(),
            },
            mailparse::MailAddr::Group(g) => panic!("group {g:?}"),
        })
        .collect()
}

/// The leaf parts of a message, depth first.
fn leaves<'a>(mail: &'a ParsedMail<'a>) -> Vec<&'a ParsedMail<'a>> {
    if mail.subparts.is_empty() {
        vec![mail]
    } else {
        mail.subparts.iter().flat_map(leaves).collect()
    }
}

fn attachment<'a>(mail: &'a ParsedMail<'a>, filename: &str) -> &'a ParsedMail<'a> {
    leaves(mail)
        .into_iter()
        .find(|p| {
            let d = p.get_content_disposition();
            d.disposition == mailparse::DispositionType::Attachment
                && d.params.get("filename").map(String::as_str) == Some(filename)
        })
        .unwrap_or_else(|| panic!("no attachment named {filename}"))
}

/// The (first) calendar of an iCalendar attachment.
fn parse_calendar(ics: &[u8]) -> ical::parser::ical::component::IcalCalendar {
    ical::IcalParser::new(std::io::BufReader::new(ics))
        .next()
        .expect("a calendar")
        .expect("a valid calendar")
}

fn property(props: &[ical::property::Property], name: &str) -> Option<String> {
    props
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.value.clone())
}

fn invitation() -> Value {
    json!({
        "uid": "rdv-DOS-2026-0042@exemple.ci",
        "summary": "Rendez-vous : échéancier de paiement",
        "start": "2026-03-02T09:00:00Z",
        "end": "2026-03-02T09:30:00Z",
        "location": "Agence du Plateau, Abidjan",
        "organizer": {"email": "relances@exemple.ci", "name": "Service recouvrement"},
        "attendees": [{"email": "jean.kouassi@client.ci", "name": "Jean Kouassi"}],
    })
}

/// Plain text to 127.0.0.1, no account.
fn plain_config(port: u16) -> String {
    format!(
        "connectors:\n  courriel:\n    type: email\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    from: relances@exemple.ci\n"
    )
}

fn starttls_config(port: u16, ca_file: &Path) -> String {
    format!(
        "connectors:\n  courriel:\n    type: email\n    host: localhost\n    port: {port}\n    tls: starttls\n    ca_file: {}\n    username: {USER}\n    password_env: SMTP_PASSWORD\n    from: \"Service recouvrement <relances@exemple.ci>\"\n    hello_name: dossier.exemple.ci\n    timeout_seconds: 10\n",
        ca_file.display()
    )
}

#[tokio::test]
async fn starttls_with_auth_sends_bodies_and_attachments() {
    let certs = Certs::new();
    let smtp = start_smtp("starttls", Some(&certs), true, &[]);
    // ca_file relative to the project folder.
    let registry = load(
        &starttls_config(smtp.port, Path::new("cert.pem")),
        &[("SMTP_PASSWORD", PASSWORD)],
        certs.dir.path(),
    )
    .unwrap();
    let binary: Vec<u8> = (0u8..=255).chain(0u8..=255).collect();
    let key = "DOS-2026-0042:relance_email#1";
    let result = registry
        .call(
            "courriel",
            &effect(
                key,
                json!({
                    "to": "Jean Kouassi <jean.kouassi@client.ci>",
                    "cc": ["comptable@client.ci"],
                    "bcc": "archives@exemple.ci",
                    "reply_to": "Comptabilité <compta@exemple.ci>",
                    "subject": "Relance : facture n° F-2026-001 échue — pénalités",
                    "text": "Bonjour,\nvotre facture F-2026-001 est échue depuis 12 jours.\n",
                    "html": "<p>Bonjour,</p><p>votre facture <b>F-2026-001</b> est échue.</p>",
                    "attachments": [
                        {"filename": "rendez-vous.ics", "ics": invitation()},
                        {"filename": "relevé.bin", "content_base64": base64::engine::general_purpose::STANDARD.encode(&binary), "content_type": "application/octet-stream"},
                    ],
                }),
            ),
        )
        .await
        .unwrap();

    let raw = smtp.only_message();
    let mail = mailparse::parse_mail(&raw).unwrap();
    // What the server saw of the session.
    assert!(
        header(&mail, "X-Test-Tls").starts_with("TLSv1."),
        "not encrypted"
    );
    assert_eq!(header(&mail, "X-Test-Auth"), USER);
    assert_eq!(header(&mail, "X-Test-Mail-From"), "relances@exemple.ci");
    assert_eq!(
        header(&mail, "X-Test-Rcpt-To"),
        "jean.kouassi@client.ci, comptable@client.ci, archives@exemple.ci"
    );
    // The headers.
    assert_eq!(
        addresses(&mail, "From"),
        ["Service recouvrement <relances@exemple.ci>"]
    );
    assert_eq!(
        addresses(&mail, "To"),
        ["Jean Kouassi <jean.kouassi@client.ci>"]
    );
    assert_eq!(addresses(&mail, "Cc"), ["comptable@client.ci"]);
    assert_eq!(
        addresses(&mail, "Reply-To"),
        ["Comptabilité <compta@exemple.ci>"]
    );
    assert!(mail.headers.get_first_value("Bcc").is_none(), "Bcc leaked");
    assert_eq!(
        header(&mail, "Subject"),
        "Relance : facture n° F-2026-001 échue — pénalités"
    );
    // Encoded on the wire (RFC 2047), not raw UTF-8.
    let raw_subject = mail.headers.get_first_header("Subject").unwrap();
    assert!(raw_subject.get_value_raw().is_ascii());
    let id = expected_message_id(key, "exemple.ci");
    assert_eq!(header(&mail, "Message-ID"), id);
    assert_eq!(header(&mail, "X-Dossier-Case"), "DOS-2026-0042");
    assert!(mail.headers.get_first_value("Date").is_some());
    // The bodies: multipart/mixed [ multipart/alternative [text, html], ics, binary ].
    assert_eq!(mail.ctype.mimetype, "multipart/mixed");
    let alternative = &mail.subparts[0];
    assert_eq!(alternative.ctype.mimetype, "multipart/alternative");
    assert_eq!(alternative.subparts[0].ctype.mimetype, "text/plain");
    assert_eq!(
        alternative.subparts[0]
            .get_body()
            .unwrap()
            .replace("\r\n", "\n"),
        "Bonjour,\nvotre facture F-2026-001 est échue depuis 12 jours.\n"
    );
    assert_eq!(alternative.subparts[1].ctype.mimetype, "text/html");
    assert_eq!(
        alternative.subparts[1].get_body().unwrap(),
        "<p>Bonjour,</p><p>votre facture <b>F-2026-001</b> est échue.</p>"
    );
    // The binary attachment, byte for byte, under its accented name.
    let bin = attachment(&mail, "relevé.bin");
    assert_eq!(bin.ctype.mimetype, "application/octet-stream");
    assert_eq!(bin.get_body_raw().unwrap(), binary);
    // The invitation: text/calendar with its method, a calendar with the UID.
    let ics = attachment(&mail, "rendez-vous.ics");
    assert_eq!(ics.ctype.mimetype, "text/calendar");
    assert_eq!(ics.ctype.params.get("method").unwrap(), "REQUEST");
    assert_eq!(ics.ctype.charset.to_lowercase(), "utf-8");
    let ics_bytes = ics.get_body_raw().unwrap();
    let calendar = parse_calendar(&ics_bytes);
    assert_eq!(
        property(&calendar.properties, "METHOD").as_deref(),
        Some("REQUEST")
    );
    let event = calendar.events.first().expect("an event");
    assert_eq!(
        property(&event.properties, "UID").as_deref(),
        Some("rdv-DOS-2026-0042@exemple.ci")
    );

    // The result recorded in the case history.
    assert_eq!(result["message_id"], id);
    assert_eq!(result["from"], "Service recouvrement <relances@exemple.ci>");
    assert_eq!(
        result["to"],
        json!(["Jean Kouassi <jean.kouassi@client.ci>"])
    );
    assert_eq!(result["cc"], json!(["comptable@client.ci"]));
    assert_eq!(result["smtp"]["code"], 250);
    assert_eq!(
        result["smtp"]["message"],
        "2.0.0 Message accepted for delivery"
    );
    let atts = result["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2);
    assert_eq!(atts[0]["filename"], "rendez-vous.ics");
    assert_eq!(
        atts[0]["content_type"],
        "text/calendar; method=REQUEST; charset=UTF-8"
    );
    assert_eq!(atts[0]["bytes"], ics_bytes.len());
    assert_eq!(atts[0]["sha256"], hex::encode(Sha256::digest(&ics_bytes)));
    assert_eq!(atts[1]["filename"], "relevé.bin");
    assert_eq!(atts[1]["bytes"], 512);
    assert_eq!(atts[1]["sha256"], hex::encode(Sha256::digest(&binary)));
    assert!(!result.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn a_resend_carries_the_same_message_id() {
    let smtp = start_smtp("none", None, false, &[]);
    let registry = load(&plain_config(smtp.port), &[], Path::new("/nonexistent")).unwrap();
    let args = json!({"to": "jean@client.ci", "subject": "Rappel", "text": "Bonjour"});
    for key in ["K:step#1", "K:step#1", "K:step#2"] {
        // A connection refused or reset before the SMTP greeting delivered nothing; the engine
        // retries such transient failures, and so does this test (seen on loaded CI machines).
        let mut tries = 0;
        loop {
            tries += 1;
            match registry.call("courriel", &effect(key, args.clone())).await {
                Ok(_) => break,
                Err(dossier_connectors::ConnectorError::Transient(m))
                    if tries < 3 && m.contains("connecting") =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await
                }
                Err(e) => panic!("send {key}: {e:?}"),
            }
        }
    }
    let ids: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| header(&mailparse::parse_mail(m).unwrap(), "Message-ID"))
        .collect();
    let first = expected_message_id("K:step#1", "exemple.ci");
    let second = expected_message_id("K:step#2", "exemple.ci");
    let mut expected = vec![first.clone(), first, second];
    let mut got = ids.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    // Plain text alone goes as a single text/plain part; nothing was encrypted or authenticated.
    let mail_bytes = &smtp.messages()[0];
    let mail = mailparse::parse_mail(mail_bytes).unwrap();
    assert_eq!(mail.ctype.mimetype, "text/plain");
    assert_eq!(mail.get_body().unwrap().trim_end(), "Bonjour");
    assert_eq!(header(&mail, "X-Test-Tls"), "none");
    assert_eq!(header(&mail, "X-Test-Auth"), "none");
}

#[tokio::test]
async fn implicit_tls() {
    let certs = Certs::new();
    let smtp = start_smtp("tls", Some(&certs), true, &[]);
    let yaml = format!(
        "connectors:\n  courriel:\n    type: email\n    host: 127.0.0.1\n    port: {}\n    tls: tls\n    ca_file: {}\n    username: {USER}\n    password_env: SMTP_PASSWORD\n    from: relances@exemple.ci\n",
        smtp.port,
        certs.cert().display()
    );
    let registry = load(&yaml, &[("SMTP_PASSWORD", PASSWORD)], Path::new("/")).unwrap();
    let result = registry
        .call(
            "courriel",
            &effect(
                "DOS-1:avis#1",
                json!({
                    "to": ["a@client.ci", "b@client.ci"],
                    "from": "Direction <direction@exemple.ci>",
                    "subject": "Avis",
                    "html": "<p>Réunion à 9 h</p>",
                    "attachments": [{"filename": "annulation.ics", "ics": invitation(), "method": "cancel"}],
                }),
            ),
        )
        .await
        .unwrap();
    let raw = smtp.only_message();
    let mail = mailparse::parse_mail(&raw).unwrap();
    assert!(header(&mail, "X-Test-Tls").starts_with("TLSv1."));
    assert_eq!(header(&mail, "X-Test-Auth"), USER);
    // The step's `from` replaces the default sender, and gives the Message-ID its domain.
    assert_eq!(header(&mail, "X-Test-Mail-From"), "direction@exemple.ci");
    assert_eq!(
        addresses(&mail, "From"),
        ["Direction <direction@exemple.ci>"]
    );
    assert_eq!(addresses(&mail, "To"), ["a@client.ci", "b@client.ci"]);
    assert_eq!(header(&mail, "X-Test-Rcpt-To"), "a@client.ci, b@client.ci");
    // multipart/mixed [ text/html, the cancellation ].
    assert_eq!(mail.ctype.mimetype, "multipart/mixed");
    assert_eq!(mail.subparts[0].ctype.mimetype, "text/html");
    assert_eq!(
        mail.subparts[0].get_body().unwrap().trim_end(),
        "<p>Réunion à 9 h</p>"
    );
    let ics = attachment(&mail, "annulation.ics");
    assert_eq!(ics.ctype.mimetype, "text/calendar");
    assert_eq!(ics.ctype.params.get("method").unwrap(), "CANCEL");
    let ics_text = ics.get_body().unwrap();
    let calendar = parse_calendar(ics_text.as_bytes());
    assert_eq!(
        property(&calendar.properties, "METHOD").as_deref(),
        Some("CANCEL")
    );
    let id = expected_message_id("DOS-1:avis#1", "exemple.ci");
    assert_eq!(header(&mail, "Message-ID"), id);
    assert_eq!(result["message_id"], id);
    assert_eq!(
        result["attachments"][0]["content_type"],
        "text/calendar; method=CANCEL; charset=UTF-8"
    );
}

fn permanent(e: ConnectorError) -> String {
    match e {
        ConnectorError::Permanent(m) => m,
        ConnectorError::Transient(m) => panic!("expected a permanent error, got transient: {m}"),
    }
}

fn transient(e: ConnectorError) -> String {
    match e {
        ConnectorError::Transient(m) => m,
        ConnectorError::Permanent(m) => panic!("expected a transient error, got permanent: {m}"),
    }
}

fn simple_message() -> Value {
    json!({"to": "jean@client.ci", "subject": "Relance", "text": "Bonjour"})
}

/// Sends the simple message, which must fail.
async fn send_simple(registry: &Registry) -> ConnectorError {
    registry
        .call("courriel", &effect("k#1", simple_message()))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn wrong_password_is_permanent() {
    let certs = Certs::new();
    let smtp = start_smtp("starttls", Some(&certs), true, &[]);
    let registry = load(
        &starttls_config(smtp.port, &certs.cert()),
        &[("SMTP_PASSWORD", "pas-le-bon")],
        Path::new("/"),
    )
    .unwrap();
    let e = send_simple(&registry).await;
    let m = permanent(e);
    assert!(m.contains("535"), "{m}");
    assert!(m.contains("password_env"), "{m}");
    assert!(!m.contains("pas-le-bon"), "the password leaked: {m}");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn server_not_running_is_transient() {
    let port = free_port();
    let yaml = format!(
        "connectors:\n  courriel:\n    type: email\n    host: 127.0.0.1\n    port: {port}\n    tls: starttls\n    from: relances@exemple.ci\n"
    );
    let registry = load(&yaml, &[], Path::new("/")).unwrap();
    let m = transient(send_simple(&registry).await);
    assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}");
    assert!(m.to_lowercase().contains("refused"), "{m}");
}

#[tokio::test]
async fn untrusted_certificate_is_permanent_with_a_hint() {
    let certs = Certs::new();
    let smtp = start_smtp("starttls", Some(&certs), true, &[]);
    let yaml = format!(
        "connectors:\n  courriel:\n    type: email\n    host: localhost\n    port: {}\n    username: {USER}\n    password_env: SMTP_PASSWORD\n    from: relances@exemple.ci\n",
        smtp.port
    );
    let registry = load(&yaml, &[("SMTP_PASSWORD", PASSWORD)], Path::new("/")).unwrap();
    let m = permanent(send_simple(&registry).await);
    assert!(m.contains("not trusted"), "{m}");
    assert!(m.contains("ca_file"), "{m}");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn a_ca_certificate_as_the_servers_own_is_refused_with_a_hint() {
    let certs = Certs::make(false);
    let smtp = start_smtp("tls", Some(&certs), false, &[]);
    let yaml = format!(
        "connectors:\n  courriel:\n    type: email\n    host: localhost\n    port: {}\n    tls: tls\n    ca_file: {}\n    from: relances@exemple.ci\n",
        smtp.port,
        certs.cert().display()
    );
    let registry = load(&yaml, &[], Path::new("/")).unwrap();
    let m = permanent(send_simple(&registry).await);
    assert!(m.contains("CaUsedAsEndEntity"), "{m}");
    assert!(m.contains("CA:FALSE"), "{m}");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn rejected_and_deferred_recipients() {
    let smtp = start_smtp(
        "none",
        None,
        false,
        &[
            "--reject",
            "inconnu@client.ci",
            "--defer",
            "plein@client.ci",
        ],
    );
    let registry = load(&plain_config(smtp.port), &[], Path::new("/")).unwrap();
    let send = |to: &str| {
        effect(
            "k#1",
            json!({"to": to, "subject": "Relance", "text": "Bonjour"}),
        )
    };
    let m = permanent(
        registry
            .call("courriel", &send("inconnu@client.ci"))
            .await
            .unwrap_err(),
    );
    assert!(m.contains("550") && m.contains("mailbox unknown"), "{m}");
    let m = transient(
        registry
            .call("courriel", &send("plein@client.ci"))
            .await
            .unwrap_err(),
    );
    assert!(m.contains("451") && m.contains("try again later"), "{m}");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn starttls_required_but_not_offered_is_permanent() {
    let smtp = start_smtp("none", None, false, &[]);
    let yaml = format!(
        "connectors:\n  courriel:\n    type: email\n    host: 127.0.0.1\n    port: {}\n    from: relances@exemple.ci\n",
        smtp.port
    );
    let registry = load(&yaml, &[], Path::new("/")).unwrap();
    let m = permanent(send_simple(&registry).await);
    assert!(m.contains("does not offer STARTTLS"), "{m}");
    assert!(smtp.messages().is_empty(), "sent in clear text");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let yaml = format!(
        "connectors:\n  courriel:\n    type: email\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    from: relances@exemple.ci\n    timeout_seconds: 1\n"
    );
    let registry = load(&yaml, &[], Path::new("/")).unwrap();
    let started = Instant::now();
    let m = transient(send_simple(&registry).await);
    assert!(started.elapsed() < Duration::from_secs(5), "{m}");
    assert!(m.contains("more than 1 s"), "{m}");
}

#[tokio::test]
async fn bad_arguments_are_permanent_and_connect_to_nothing() {
    // A listener that only records whether anyone connected.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let yaml = format!(
        "connectors:\n  courriel:\n    type: email\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    from: relances@exemple.ci\n"
    );
    let registry = load(&yaml, &[], Path::new("/")).unwrap();
    let cases = [
        (
            json!({"to": ["jean@client.ci", "paul(at)client.ci"], "subject": "s", "text": "t"}),
            "courriel.send: `to`: `paul(at)client.ci` is not a valid email address; write an address as name@domain or \"Name <name@domain>\"",
        ),
        (
            json!({"to": "jean@client.ci", "bcc": "x@", "subject": "s", "text": "t"}),
            "courriel.send: `bcc`: `x@` is not a valid email address; write an address as name@domain or \"Name <name@domain>\"",
        ),
        (
            json!({"to": "jean@client.ci", "text": "t"}),
            "courriel.send: the step's arguments are wrong: missing field `subject`",
        ),
        (
            json!({"to": "jean@client.ci", "subject": "s"}),
            "courriel.send: the message has no body: give `text`, `html` or both",
        ),
        (
            json!({"to": "jean@client.ci", "subject": "s", "text": "t",
                   "attachments": [{"filename": "x.ics", "ics": {"summary": "sans uid"}}]}),
            "courriel.send: attachment 1 (`x.ics`): ",
        ),
    ];
    for (args, expected) in cases {
        let m = permanent(
            registry
                .call("courriel", &effect("k#1", args))
                .await
                .unwrap_err(),
        );
        assert!(m.starts_with(expected), "{m}");
    }
    let e = registry
        .call(
            "courriel",
            &EffectRequest {
                operation: "print".into(),
                ..effect("k#1", simple_message())
            },
        )
        .await
        .unwrap_err();
    assert!(permanent(e).contains("no operation `print`"));
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(_) => panic!("the connector connected before checking its arguments"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn configuration_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pas-un-certificat.pem"), "bonjour").unwrap();
    let yaml = "connectors:
  courriel:
    type: email
    host: smtp.exemple.ci
    username: relances@exemple.ci
    password_env: DOSSIER_SMTP_PASSWORD
  autre:
    type: email
    host: smtp.exemple.ci
    pasword_env: X
  tiers:
    type: email
    host: smtp.exemple.ci
    ca_file: pas-un-certificat.pem
  quatre:
    type: email
    host: smtp.exemple.ci
    from: relances
";
    let e = load(yaml, &[], dir.path()).unwrap_err();
    let e = e.replace(&dir.path().display().to_string(), "<project>");
    expect_test::expect![[r#"
        dossier.yaml:10:5: error: connector `autre`: unknown field `pasword_env`, expected one of `host`, `port`, `tls`, `username`, `password_env`, `ca_file`, `from`, `reply_to`, `hello_name`, `timeout_seconds`
          hint: the settings of the `email` connector type are described in connectors/docs/email.md
        dossier.yaml:6:5: error: connector `courriel`: the environment variable `DOSSIER_SMTP_PASSWORD` is not set
          hint: export DOSSIER_SMTP_PASSWORD=… before starting Dossier; secrets never go in this file
        dossier.yaml:18:5: error: connector `quatre`: `relances` is not a valid email address
          hint: write an address as name@domain or "Name <name@domain>"
        dossier.yaml:14:5: error: connector `tiers`: `<project>/pas-un-certificat.pem` holds no PEM certificate
          hint: give a PEM file (-----BEGIN CERTIFICATE-----), relative to the project folder"#]]
    .assert_eq(&e);
    // With the secret set, the same section builds (and touches no network).
    let ok = "connectors:\n  courriel:\n    type: email\n    host: smtp.exemple.ci\n    username: u\n    password_env: DOSSIER_SMTP_PASSWORD\n";
    let r = load(ok, &[("DOSSIER_SMTP_PASSWORD", "x")], dir.path()).unwrap();
    assert_eq!(r.catalog()["courriel"], vec!["send".to_string()]);
}

#[tokio::test]
async fn pdf_attachment() {
    let smtp = start_smtp("none", None, false, &[]);
    let registry = load(&plain_config(smtp.port), &[], Path::new("/")).unwrap();
    let markup = "# Relevé de compte\nClient : Jean Kouassi\nSolde dû : 1 250,50 EUR\n";
    let result = registry
        .call(
            "courriel",
            &effect(
                "DOS-7:releve#1",
                json!({
                    "to": "jean@client.ci",
                    "subject": "Votre relevé",
                    "text": "Ci-joint votre relevé.",
                    "attachments": [{"filename": "releve.pdf", "pdf": markup}],
                }),
            ),
        )
        .await
        .unwrap();
    let raw = smtp.only_message();
    let mail = mailparse::parse_mail(&raw).unwrap();
    let pdf = attachment(&mail, "releve.pdf");
    assert_eq!(pdf.ctype.mimetype, "application/pdf");
    let bytes = pdf.get_body_raw().unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let text = pdf_extract::extract_text_from_mem(&bytes).unwrap();
    let squeezed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in ["Relevé de compte", "Jean Kouassi", "1 250,50 EUR"] {
        assert!(squeezed.contains(needle), "{needle:?} not in {squeezed:?}");
    }
    assert_eq!(result["attachments"][0]["content_type"], "application/pdf");
    assert_eq!(result["attachments"][0]["bytes"], bytes.len());
}
