//! The `email` connector: sends messages through an SMTP server (lettre, rustls).
//!
//! ```yaml
//! connectors:
//!   courriel:
//!     type: email
//!     host: smtp.exemple.ci
//!     tls: starttls            # none | starttls (default) | tls; port 25 | 587 | 465 by default
//!     username: relances@exemple.ci
//!     password_env: DOSSIER_SMTP_PASSWORD
//!     from: "Service recouvrement <relances@exemple.ci>"
//! ```
//!
//! One operation, `send` (arguments: `to`, `cc`, `bcc`, `reply_to`, `from`, `subject`, `text`,
//! `html`, `attachments`; see `connectors/docs/email.md`). Each call opens one SMTP connection,
//! upgrades it (STARTTLS) or starts it in TLS, authenticates when credentials are configured,
//! sends the message and quits. The whole exchange is bounded by `timeout_seconds`. With
//! `tls: none`, credentials are only accepted for a server on this machine (`localhost`,
//! 127.0.0.0/8): building refuses to send a password in clear text over a network.
//!
//! **Idempotency.** The `Message-ID` is derived from the effect's idempotency key
//! (`<first 32 hex digits of sha256(key)@domain of the sender>`), so a message sent again after
//! a crash carries the same id and mail clients and archives show it once. SMTP has no way to
//! ask whether a message was taken, so a connection lost after the data was sent but before the
//! server's answer can still deliver twice: that second copy has the same Message-ID.
//! The case id goes in an `X-Dossier-Case` header.
//!
//! **Failures.**
//! - Transient (worth retrying): the server cannot be reached (refused, unknown host, timeout),
//!   the connection or the TLS handshake is cut, the whole exchange exceeds `timeout_seconds`,
//!   an SMTP 4xx reply (greylisting, mailbox busy, too many connections).
//! - Permanent: the step's arguments (a bad address, no subject, no body, an attachment that
//!   cannot be built), a certificate the connector does not trust (see `ca_file`), a server
//!   without STARTTLS when `tls: starttls`, an SMTP 5xx reply (535 credentials refused, 550
//!   mailbox unknown, 552 message too large), an answer that is not SMTP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use lettre::address::Envelope;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::Message;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::calendar::{Invitation, Method};
use crate::support::{self, BuildContext, BuildError};
use crate::{Connector, ConnectorError, EffectRequest};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text (a relay on the same machine or network only).
    None,
    /// Plain text, then STARTTLS, required (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
}

impl TlsMode {
    fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        }
    }
}

/// The settings of an `email` connector in `dossier.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    host: String,
    port: Option<u16>,
    #[serde(default)]
    tls: TlsMode,
    username: Option<String>,
    password_env: Option<String>,
    ca_file: Option<PathBuf>,
    from: Option<String>,
    reply_to: Option<String>,
    hello_name: Option<String>,
    timeout_seconds: Option<u64>,
}

pub fn build(
    name: &str,
    settings: serde_yaml_ng::Value,
    ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, BuildError> {
    let config: Config = crate::config::settings(settings)?;
    Ok(Arc::new(EmailConnector::new(name, config, ctx)?))
}

/// Sends email through one SMTP server.
pub struct EmailConnector {
    name: String,
    host: String,
    port: u16,
    tls: TlsMode,
    tls_parameters: Option<TlsParameters>,
    has_ca_file: bool,
    credentials: Option<Credentials>,
    from: Option<Mailbox>,
    reply_to: Option<Mailbox>,
    hello_name: ClientId,
    timeout: Duration,
}

impl std::fmt::Debug for EmailConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConnector")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("authenticated", &self.credentials.is_some())
            .finish()
    }
}

impl EmailConnector {
    fn new(name: &str, c: Config, ctx: &BuildContext) -> Result<EmailConnector, BuildError> {
        let host = c.host.trim().to_string();
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains(':') {
            return Err(BuildError::new(
                "host",
                format!("`{}` is not a host name", c.host),
                "write the SMTP server's name or IP address alone (smtp.exemple.ci), the port in `port`",
            ));
        }
        let port = c.port.unwrap_or(c.tls.default_port());
        if port == 0 {
            return Err(BuildError::new(
                "port",
                "the port cannot be 0",
                "usually 587 with `tls: starttls`, 465 with `tls: tls`, 25 with `tls: none`",
            ));
        }
        let timeout = support::timeout(
            c.timeout_seconds,
            "give the number of seconds the whole SMTP exchange may take, e.g. 30",
        )?;
        let credentials = ctx
            .account(
                c.username.as_deref(),
                c.password_env.as_deref(),
                "the SMTP account, often the sender's address",
            )?
            .map(|a| Credentials::new(a.username, a.password));
        if credentials.is_some() && c.tls == TlsMode::None && !is_loopback(&host) {
            // AUTH PLAIN / LOGIN send the password readable by anyone on the way.
            return Err(BuildError::new(
                "tls",
                format!("`tls: none` would send the password in clear text to `{host}`"),
                "use `tls: starttls` or `tls: tls`; `tls: none` with a password is only for a relay on this machine (localhost)",
            ));
        }
        let from = c
            .from
            .as_deref()
            .map(|f| parse_mailbox(f).map_err(|e| BuildError::new("from", e, ADDRESS_HINT)))
            .transpose()?;
        let reply_to = c
            .reply_to
            .as_deref()
            .map(|f| parse_mailbox(f).map_err(|e| BuildError::new("reply_to", e, ADDRESS_HINT)))
            .transpose()?;
        let hello_name = match c.hello_name.as_deref().map(str::trim) {
            None => ClientId::default(),
            Some(h) if h.is_empty() || h.contains(char::is_whitespace) => {
                return Err(BuildError::new(
                    "hello_name",
                    format!("`{h}` is not a host name"),
                    "write the name this machine gives in EHLO, e.g. dossier.exemple.ci",
                ))
            }
            Some(h) => ClientId::Domain(h.to_string()),
        };
        let tls_parameters = match c.tls {
            TlsMode::None => {
                if c.ca_file.is_some() {
                    return Err(BuildError::new(
                        "ca_file",
                        "`ca_file` is only used with `tls: starttls` or `tls: tls`",
                        "remove `ca_file`, or protect the connection with `tls:`",
                    ));
                }
                None
            }
            TlsMode::Starttls | TlsMode::Tls => {
                let mut builder = TlsParameters::builder(host.clone())
                    .certificate_store(CertificateStore::Default);
                if let Some(file) = &c.ca_file {
                    builder = builder.add_root_certificate(read_ca_file(&ctx.path(file))?);
                }
                Some(builder.build_rustls().map_err(|e| {
                    BuildError::new(
                        "tls",
                        format!("cannot prepare TLS: {e}"),
                        "check `ca_file` and `host`",
                    )
                })?)
            }
        };
        Ok(EmailConnector {
            name: name.to_string(),
            host,
            port,
            tls: c.tls,
            tls_parameters,
            has_ca_file: c.ca_file.is_some(),
            credentials,
            from,
            reply_to,
            hello_name,
            timeout,
        })
    }
}

/// Whether `host` is this machine (what goes there does not cross a network).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

const ADDRESS_HINT: &str = "write an address as name@domain or \"Name <name@domain>\"";

/// Reads the PEM certificate(s) to trust besides the usual authorities.
fn read_ca_file(path: &std::path::Path) -> Result<Certificate, BuildError> {
    let hint = "give a PEM file (-----BEGIN CERTIFICATE-----), relative to the project folder";
    let pem = std::fs::read(path).map_err(|e| {
        BuildError::new(
            "ca_file",
            format!("cannot read `{}`: {e}", path.display()),
            hint,
        )
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(BuildError::new(
            "ca_file",
            format!("`{}` holds no PEM certificate", path.display()),
            hint,
        ));
    }
    Certificate::from_pem(&pem).map_err(|e| {
        BuildError::new(
            "ca_file",
            format!("`{}` is not a valid PEM certificate: {e}", path.display()),
            hint,
        )
    })
}

/// One address, `name@domain` or `Name <name@domain>`, nothing else.
fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a valid email address");
    // lettre's parser stops after the first mailbox and ignores what follows: refuse lists and
    // trailing text here.
    if t.is_empty() || t.contains(['\r', '\n']) {
        return Err(bad());
    }
    let mailbox: Mailbox = t.parse().map_err(|_| bad())?;
    let address = mailbox.email.to_string();
    // The text must be the address alone, or a name followed by `<address>`.
    let whole = t == address
        || match t.strip_suffix('>').and_then(|r| r.rsplit_once('<')) {
            Some((name, inner)) => {
                inner.trim() == address && (mailbox.name.is_some() || name.trim().is_empty())
            }
            None => false,
        };
    if !whole {
        return Err(bad());
    }
    if !mailbox.email.domain().contains('.') && mailbox.email.domain() != "localhost" {
        return Err(format!(
            "`{text}` is not a valid email address (the domain has no dot)"
        ));
    }
    Ok(mailbox)
}

/// One address or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendArgs {
    to: OneOrMany,
    cc: Option<OneOrMany>,
    bcc: Option<OneOrMany>,
    reply_to: Option<OneOrMany>,
    from: Option<String>,
    subject: String,
    text: Option<String>,
    html: Option<String>,
    #[serde(default)]
    attachments: Vec<AttachmentArg>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum IcsMethod {
    Request,
    Cancel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentArg {
    filename: String,
    /// Document markup, laid out as a PDF.
    pdf: Option<String>,
    /// The PDF's title (default: the file name without its extension).
    title: Option<String>,
    /// An invitation (see the calendar connector), sent as an iTIP `.ics`.
    ics: Option<Value>,
    method: Option<IcsMethod>,
    content_base64: Option<String>,
    content_type: Option<String>,
}

/// The message's body before attachments.
enum Body {
    Single(SinglePart),
    Alternative(MultiPart),
}

/// An attachment ready to go.
struct Built {
    filename: String,
    content_type: String,
    bytes: Vec<u8>,
}

/// The first 32 hex digits of sha256(key) at the sender's domain.
fn message_id(key: &str, from: &Mailbox) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    let short = digest.get(..32).unwrap_or(&digest);
    format!("<{short}@{}>", from.email.domain())
}

impl EmailConnector {
    fn permanent(&self, op: &str, msg: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Permanent(format!("{}.{op}: {msg}", self.name))
    }

    fn addresses(
        &self,
        field: &str,
        list: Option<&OneOrMany>,
    ) -> Result<Vec<Mailbox>, ConnectorError> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        list.items()
            .into_iter()
            .map(|a| {
                parse_mailbox(a)
                    .map_err(|e| self.permanent("send", format!("`{field}`: {e}; {ADDRESS_HINT}")))
            })
            .collect()
    }

    fn attachment(&self, i: usize, a: &AttachmentArg) -> Result<Built, ConnectorError> {
        let at = |msg: String| {
            self.permanent(
                "send",
                format!("attachment {} (`{}`): {msg}", i + 1, a.filename),
            )
        };
        if a.filename.trim().is_empty() || a.filename.contains(|c: char| c.is_control()) {
            return Err(at("`filename` must be a non-empty file name".into()));
        }
        let given = [a.pdf.is_some(), a.ics.is_some(), a.content_base64.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given != 1 {
            return Err(at(
                "give exactly one of `pdf` (document markup), `ics` (an invitation) or `content_base64` (with `content_type`)".into(),
            ));
        }
        if a.method.is_some() && a.ics.is_none() {
            return Err(at("`method` only goes with `ics`".into()));
        }
        if a.title.is_some() && a.pdf.is_none() {
            return Err(at("`title` only goes with `pdf`".into()));
        }
        if a.content_type.is_some() && a.content_base64.is_none() {
            return Err(at("`content_type` only goes with `content_base64`".into()));
        }
        if let Some(markup) = &a.pdf {
            let title = match &a.title {
                Some(t) => t.clone(),
                None => a
                    .filename
                    .rsplit_once('.')
                    .map(|(stem, _)| stem)
                    .unwrap_or(&a.filename)
                    .to_string(),
            };
            let bytes = crate::document::render_pdf(markup, &title)
                .map_err(|e| at(format!("the PDF cannot be made: {e}")))?;
            return Ok(Built {
                filename: a.filename.clone(),
                content_type: "application/pdf".into(),
                bytes,
            });
        }
        if let Some(value) = &a.ics {
            let invitation = Invitation::parse(value).map_err(at)?;
            let (method, name) = match a.method.unwrap_or(IcsMethod::Request) {
                IcsMethod::Request => (Method::Request, "REQUEST"),
                IcsMethod::Cancel => (Method::Cancel, "CANCEL"),
            };
            let text = invitation.to_ics(method, chrono::Utc::now());
            if text.trim().is_empty() {
                return Err(at("the invitation gave an empty calendar".into()));
            }
            return Ok(Built {
                filename: a.filename.clone(),
                content_type: format!("text/calendar; method={name}; charset=UTF-8"),
                bytes: text.into_bytes(),
            });
        }
        let encoded = a.content_base64.as_deref().unwrap_or_default();
        let Some(content_type) = a.content_type.as_deref() else {
            return Err(at(
                "`content_base64` needs `content_type` (e.g. application/pdf)".into(),
            ));
        };
        if ContentType::parse(content_type).is_err() {
            return Err(at(format!(
                "`{content_type}` is not a media type (write it as type/subtype, e.g. image/png)"
            )));
        }
        let compact: String = encoded
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| at(format!("`content_base64` is not base64: {e}")))?;
        Ok(Built {
            filename: a.filename.clone(),
            content_type: content_type.to_string(),
            bytes,
        })
    }

    /// Builds the message, or says why it cannot be sent; touches no network.
    fn compose(&self, effect: &EffectRequest) -> Result<(Message, Value), ConnectorError> {
        let args: SendArgs = support::args(&self.name, effect)?;
        let from = match (&args.from, &self.from) {
            (Some(f), _) => parse_mailbox(f)
                .map_err(|e| self.permanent("send", format!("`from`: {e}; {ADDRESS_HINT}")))?,
            (None, Some(f)) => f.clone(),
            (None, None) => {
                return Err(self.permanent(
                    "send",
                    "no sender: give `from` in the step or in the connector's settings",
                ))
            }
        };
        let to = self.addresses("to", Some(&args.to))?;
        let cc = self.addresses("cc", args.cc.as_ref())?;
        let bcc = self.addresses("bcc", args.bcc.as_ref())?;
        let reply_to = match &args.reply_to {
            Some(list) => self.addresses("reply_to", Some(list))?,
            None => self.reply_to.iter().cloned().collect(),
        };
        if to.is_empty() {
            return Err(self.permanent("send", "`to` is empty: give at least one recipient"));
        }
        if args.subject.trim().is_empty() {
            return Err(self.permanent("send", "`subject` is empty"));
        }
        let text = args.text.as_deref().filter(|t| !t.trim().is_empty());
        let html = args.html.as_deref().filter(|t| !t.trim().is_empty());
        let body = match (text, html) {
            (Some(t), Some(h)) => Body::Alternative(MultiPart::alternative_plain_html(
                t.to_string(),
                h.to_string(),
            )),
            (Some(t), None) => Body::Single(SinglePart::plain(t.to_string())),
            (None, Some(h)) => Body::Single(SinglePart::html(h.to_string())),
            (None, None) => {
                return Err(self.permanent(
                    "send",
                    "the message has no body: give `text`, `html` or both",
                ))
            }
        };
        let built = args
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| self.attachment(i, a))
            .collect::<Result<Vec<_>, _>>()?;

        let id = message_id(&effect.idempotency_key, &from);
        let mut builder = Message::builder()
            .from(from.clone())
            .subject(args.subject.trim())
            .message_id(Some(id.clone()))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Dossier-Case"),
                effect.case_id.clone(),
            ));
        for m in &to {
            builder = builder.to(m.clone());
        }
        for m in &cc {
            builder = builder.cc(m.clone());
        }
        for m in &bcc {
            builder = builder.bcc(m.clone());
        }
        for m in &reply_to {
            builder = builder.reply_to(m.clone());
        }
        let message = if built.is_empty() {
            match body {
                Body::Single(part) => builder.singlepart(part),
                Body::Alternative(multi) => builder.multipart(multi),
            }
        } else {
            let mut mixed = match body {
                Body::Single(part) => MultiPart::mixed().singlepart(part),
                Body::Alternative(multi) => MultiPart::mixed().multipart(multi),
            };
            for b in &built {
                let ct = ContentType::parse(&b.content_type).map_err(|e| {
                    self.permanent("send", format!("`{}`: bad media type: {e}", b.filename))
                })?;
                mixed =
                    mixed.singlepart(Attachment::new(b.filename.clone()).body(b.bytes.clone(), ct));
            }
            builder.multipart(mixed)
        };
        let message = message
            .map_err(|e| self.permanent("send", format!("cannot build the message: {e}")))?;
        let list = |v: &[Mailbox]| v.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        let attachments: Vec<Value> = built
            .iter()
            .map(|b| {
                json!({
                    "filename": b.filename,
                    "content_type": b.content_type,
                    "bytes": b.bytes.len(),
                    "sha256": hex::encode(Sha256::digest(&b.bytes)),
                })
            })
            .collect();
        let summary = json!({
            "message_id": id,
            "from": from.to_string(),
            "to": list(&to),
            "cc": list(&cc),
            "bcc": list(&bcc),
            "attachments": attachments,
        });
        Ok((message, summary))
    }

    /// One SMTP session: connect, protect, authenticate, send, quit.
    async fn deliver(&self, envelope: &Envelope, bytes: &[u8]) -> Result<Response, ConnectorError> {
        let wrapper = match self.tls {
            TlsMode::Tls => self.tls_parameters.clone(),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello_name,
            wrapper,
            None,
        )
        .await
        .map_err(|e| self.smtp_error("connecting", &e))?;
        if self.tls == TlsMode::Starttls {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(self.permanent(
                    "send",
                    format!(
                        "the SMTP server {}:{} does not offer STARTTLS; set `tls: tls` if it expects TLS from the start (port 465), or `tls: none` for a local relay",
                        self.host, self.port
                    ),
                ));
            }
            if let Some(params) = &self.tls_parameters {
                // On failure the connection is left without a stream: drop it, say nothing more.
                conn.starttls(params.clone(), &self.hello_name)
                    .await
                    .map_err(|e| self.smtp_error("starting TLS", &e))?;
            }
        }
        let outcome = self.session(&mut conn, envelope, bytes).await;
        match &outcome {
            Ok(_) => {
                // The message is taken; a failed QUIT changes nothing.
                let _ = conn.quit().await;
            }
            Err(_) => conn.abort().await,
        }
        outcome
    }

    /// Authenticates and sends, on a connection already protected as configured.
    async fn session(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<Response, ConnectorError> {
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| self.smtp_error("authenticating", &e))?;
        }
        conn.send(envelope, bytes)
            .await
            .map_err(|e| self.smtp_error("sending", &e))
    }

    /// Splits lettre's errors into transient and permanent ones.
    fn smtp_error(&self, stage: &str, e: &lettre::transport::smtp::Error) -> ConnectorError {
        let server = format!("{}:{}", self.host, self.port);
        let detail = error_chain(e);
        let msg = format!("{}.send: {stage} ({server}): {detail}", self.name);
        if e.is_permanent() {
            let hint = match e.status().map(|c| c.to_string()) {
                Some(c) if c == "535" || c == "534" || c == "530" => {
                    "; check `username` and the password in the variable named by `password_env`"
                }
                _ => "",
            };
            return ConnectorError::Permanent(format!("{msg}{hint}"));
        }
        if e.is_transient() || e.is_timeout() {
            return ConnectorError::Transient(msg);
        }
        if is_untrusted_certificate(&detail) {
            let hint = if detail.contains("CaUsedAsEndEntity") {
                "the server presents a CA certificate (basicConstraints CA:TRUE) as its own; make the server's certificate with CA:FALSE, or sign it with a private CA and give that CA in `ca_file`"
            } else if self.has_ca_file {
                "the certificate is not signed by `ca_file` nor by a public authority, or is not valid for `host`"
            } else {
                "if the server uses a private or self-signed certificate, give its PEM file in `ca_file`; check that `host` is the name the certificate is for"
            };
            return ConnectorError::Permanent(format!(
                "{msg}: the server's certificate is not trusted: {hint}"
            ));
        }
        if e.is_response() || e.is_client() {
            return ConnectorError::Permanent(msg);
        }
        ConnectorError::Transient(msg)
    }
}

/// The error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    // lettre wraps a failed handshake in two "Connection error"s.
    let mut msg = e
        .to_string()
        .replace("Connection error: Connection error: ", "Connection error: ");
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        src = s.source();
    }
    msg
}

/// rustls reports a certificate it cannot verify as `invalid peer certificate: …`
/// (unknown issuer, wrong name, expired); the handshake error reaches us only as text
/// through lettre's and tokio-rustls' wrappers.
fn is_untrusted_certificate(detail: &str) -> bool {
    detail.contains("invalid peer certificate")
}

#[async_trait]
impl Connector for EmailConnector {
    fn operations(&self) -> Vec<String> {
        vec!["send".to_string()]
    }

    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        if effect.operation != "send" {
            return Err(self.permanent(
                &effect.operation,
                "unknown operation (the email connector has: send)",
            ));
        }
        let (message, mut summary) = self.compose(effect)?;
        let bytes = message.formatted();
        let exchange = self.deliver(message.envelope(), &bytes);
        let response = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ConnectorError::Transient(format!(
                    "{}.send: the SMTP exchange with {}:{} took more than {} s",
                    self.name,
                    self.host,
                    self.port,
                    self.timeout.as_secs()
                )))
            }
        };
        let text: Vec<&str> = response.message().collect();
        summary["smtp"] = json!({
            "code": response.code().to_string().parse::<u16>().unwrap_or_default(),
            "message": support::excerpt(&text.join(" ")),
        });
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with(env: &dyn Fn(&str) -> Option<String>) -> BuildContext<'_> {
        BuildContext {
            env,
            base_dir: PathBuf::from("/nonexistent-project"),
        }
    }

    fn connector(yaml: &str) -> Result<EmailConnector, BuildError> {
        let env = |k: &str| (k == "SMTP_PASSWORD").then(|| "s3cret".to_string());
        let ctx = ctx_with(&env);
        let config: Config = crate::config::settings(serde_yaml_ng::from_str(yaml).unwrap())?;
        EmailConnector::new("courriel", config, &ctx)
    }

    fn effect(request: Value) -> EffectRequest {
        EffectRequest {
            idempotency_key: "case-1:relance#1".into(),
            case_id: "case-1".into(),
            step: "relance".into(),
            operation: "send".into(),
            request,
            attempt: 1,
            redelivered: false,
        }
    }

    fn compose_error(request: Value) -> String {
        let c = connector("host: 127.0.0.1\ntls: none\nfrom: Relances <relances@exemple.ci>\n")
            .unwrap();
        match c.compose(&effect(request)) {
            Ok(_) => panic!("composed"),
            Err(ConnectorError::Permanent(m)) => m,
            Err(e) => panic!("not permanent: {e:?}"),
        }
    }

    #[test]
    fn addresses() {
        for ok in [
            "jean@exemple.ci",
            "Jean Kouassi <jean@exemple.ci>",
            "\"Kouassi, Jean\" <jean@exemple.ci>",
            "Élodie <elodie@exemple.fr>",
            " jean@exemple.ci ",
        ] {
            assert!(parse_mailbox(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "jean",
            "jean@",
            "@exemple.ci",
            "jean@exemple",
            "jean@exemple.ci, paul@exemple.ci",
            "jean@exemple.ci paul@exemple.ci",
            "Jean <jean@exemple.ci> x",
            "Jean <jean@exemple.ci>, Paul <paul@exemple.ci>",
            "jean@exemple.ci\r\nBcc: x@y.z",
            "Jean <jean@exemple.ci",
            "jean@exemple.ci, Paul <jean@exemple.ci>",
            "<jean@exemple.ci> <paul@exemple.ci>",
        ] {
            assert!(parse_mailbox(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn message_id_comes_from_the_key_and_the_sender_domain() {
        let from = parse_mailbox("Relances <relances@exemple.ci>").unwrap();
        let id = message_id("case-1:relance#1", &from);
        expect_test::expect!["<574f88da06be76f38cf630fd456d593b@exemple.ci>"].assert_eq(&id);
        assert_eq!(id, message_id("case-1:relance#1", &from));
        assert_ne!(id, message_id("case-1:relance#2", &from));
    }

    #[test]
    fn settings_errors() {
        let e = connector("host: smtp.exemple.ci\nusername: u\npassword_env: NOPE\n").unwrap_err();
        assert_eq!(e.field, "password_env");
        assert!(e.message.contains("`NOPE` is not set"), "{}", e.message);
        let e = connector("host: smtp.exemple.ci\nusername: u\n").unwrap_err();
        assert_eq!(e.field, "username");
        let e = connector("host: smtp.exemple.ci\npasword_env: X\n").unwrap_err();
        assert_eq!(e.field, "pasword_env");
        let e = connector("host: smtp.exemple.ci\ntls: ssl\n").unwrap_err();
        assert!(e.message.contains("unknown variant `ssl`"), "{}", e.message);
        let e = connector("host: smtp.exemple.ci\nfrom: relances\n").unwrap_err();
        expect_test::expect![[r#"
            BuildError {
                field: "from",
                message: "`relances` is not a valid email address",
                hint: "write an address as name@domain or \"Name <name@domain>\"",
            }
        "#]]
        .assert_debug_eq(&e);
        let e = connector("host: smtp.exemple.ci\nca_file: certs/ca.pem\n").unwrap_err();
        assert_eq!(e.field, "ca_file");
        assert!(
            e.message.contains("/nonexistent-project/certs/ca.pem"),
            "{}",
            e.message
        );
        let e = connector("host: smtp.exemple.ci:587\n").unwrap_err();
        assert_eq!(e.field, "host");
        let e = connector("host: x\ntls: none\nca_file: a.pem\n").unwrap_err();
        assert_eq!(e.field, "ca_file");
        // A password in clear text over the network: refused; to this machine: accepted.
        let auth = "username: u\npassword_env: SMTP_PASSWORD\n";
        let e = connector(&format!("host: smtp.exemple.ci\ntls: none\n{auth}")).unwrap_err();
        assert_eq!(e.field, "tls");
        assert_eq!(
            e.message,
            "`tls: none` would send the password in clear text to `smtp.exemple.ci`"
        );
        for local in ["localhost", "127.0.0.1", "127.0.0.53"] {
            assert!(connector(&format!("host: {local}\ntls: none\n{auth}")).is_ok());
        }
    }

    #[test]
    fn default_ports() {
        let port = |y: &str| connector(y).unwrap().port;
        assert_eq!(port("host: h\ntls: none\n"), 25);
        assert_eq!(port("host: h\n"), 587);
        assert_eq!(port("host: h\ntls: tls\n"), 465);
        assert_eq!(port("host: h\ntls: tls\nport: 2465\n"), 2465);
        let c = connector("host: h\nusername: u\npassword_env: SMTP_PASSWORD\n").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn arguments_are_checked_before_any_connection() {
        expect_test::expect!["courriel.send: `to`: `jean.exemple.ci` is not a valid email address; write an address as name@domain or \"Name <name@domain>\""]
            .assert_eq(&compose_error(json!({"to": "jean.exemple.ci", "subject": "s", "text": "t"})));
        expect_test::expect!["courriel.send: `cc`: `x@` is not a valid email address; write an address as name@domain or \"Name <name@domain>\""]
            .assert_eq(&compose_error(json!({"to": ["a@b.ci"], "cc": ["ok@b.ci", "x@"], "subject": "s", "text": "t"})));
        expect_test::expect![
            "courriel.send: the step's arguments are wrong: missing field `subject`"
        ]
        .assert_eq(&compose_error(json!({"to": "a@b.ci", "text": "t"})));
        expect_test::expect!["courriel.send: the message has no body: give `text`, `html` or both"]
            .assert_eq(&compose_error(json!({"to": "a@b.ci", "subject": "s"})));
        expect_test::expect!["courriel.send: `to` is empty: give at least one recipient"]
            .assert_eq(&compose_error(
                json!({"to": [], "subject": "s", "text": "t"}),
            ));
        expect_test::expect!["courriel.send: the step's arguments are wrong: unknown field `body`, expected one of `to`, `cc`, `bcc`, `reply_to`, `from`, `subject`, `text`, `html`, `attachments`"]
            .assert_eq(&compose_error(json!({"to": "a@b.ci", "subject": "s", "body": "t"})));
        expect_test::expect!["courriel.send: attachment 1 (`a.bin`): give exactly one of `pdf` (document markup), `ics` (an invitation) or `content_base64` (with `content_type`)"]
            .assert_eq(&compose_error(json!({"to": "a@b.ci", "subject": "s", "text": "t",
                "attachments": [{"filename": "a.bin", "pdf": "x", "content_base64": "AA=="}]})));
        expect_test::expect!["courriel.send: attachment 1 (`a.bin`): `content_base64` needs `content_type` (e.g. application/pdf)"]
            .assert_eq(&compose_error(json!({"to": "a@b.ci", "subject": "s", "text": "t",
                "attachments": [{"filename": "a.bin", "content_base64": "AA=="}]})));
        expect_test::expect!["courriel.send: attachment 2 (`b.bin`): `content_base64` is not base64: Invalid symbol 33, offset 2."]
            .assert_eq(&compose_error(json!({"to": "a@b.ci", "subject": "s", "text": "t",
                "attachments": [{"filename": "a.bin", "content_base64": "AA==", "content_type": "application/octet-stream"},
                                {"filename": "b.bin", "content_base64": "AA!=", "content_type": "application/octet-stream"}]})));
        expect_test::expect!["courriel.send: attachment 1 (`a.bin`): `text` is not a media type (write it as type/subtype, e.g. image/png)"]
            .assert_eq(&compose_error(json!({"to": "a@b.ci", "subject": "s", "text": "t",
                "attachments": [{"filename": "a.bin", "content_base64": "AA==", "content_type": "text"}]})));
        expect_test::expect!["courriel.send: attachment 1 (`a.ics`): `method` only goes with `ics`"]
            .assert_eq(&compose_error(json!({"to": "a@b.ci", "subject": "s", "text": "t",
                "attachments": [{"filename": "a.ics", "method": "cancel", "content_base64": "AA==", "content_type": "text/calendar"}]})));
        let c = connector("host: 127.0.0.1\ntls: none\n").unwrap();
        let e = c
            .compose(&effect(
                json!({"to": "a@b.ci", "subject": "s", "text": "t"}),
            ))
            .unwrap_err();
        expect_test::expect![
            "courriel.send: no sender: give `from` in the step or in the connector's settings"
        ]
        .assert_eq(&e.to_string());
    }

    #[test]
    fn composed_message() {
        let c = connector(
            "host: 127.0.0.1\ntls: none\nfrom: Relances <relances@exemple.ci>\nreply_to: compta@exemple.ci\n",
        )
        .unwrap();
        let (message, summary) = c
            .compose(&effect(json!({
                "to": "Jean <jean@client.ci>",
                "bcc": "archive@exemple.ci",
                "subject": "Relance : facture n° F-001 échue",
                "text": "Bonjour",
                "attachments": [{"filename": "note.txt", "content_base64": "Ym9uam91cg==", "content_type": "text/plain"}],
            })))
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(
            text.contains("Message-ID: <574f88da06be76f38cf630fd456d593b@exemple.ci>\r\n"),
            "{text}"
        );
        assert!(text.contains("X-Dossier-Case: case-1\r\n"), "{text}");
        assert!(text.contains("Reply-To: compta@exemple.ci\r\n"), "{text}");
        assert!(
            !text.contains("archive@"),
            "the Bcc header must not be sent: {text}"
        );
        let rcpt = recipients(&message);
        assert_eq!(rcpt, vec!["jean@client.ci", "archive@exemple.ci"]);
        expect_test::expect![[r#"
            {
              "attachments": [
                {
                  "bytes": 7,
                  "content_type": "text/plain",
                  "filename": "note.txt",
                  "sha256": "2cb4b1431b84ec15d35ed83bb927e27e8967d75f4bcd9cc4b25c8d879ae23e18"
                }
              ],
              "bcc": [
                "archive@exemple.ci"
              ],
              "cc": [],
              "from": "Relances <relances@exemple.ci>",
              "message_id": "<574f88da06be76f38cf630fd456d593b@exemple.ci>",
              "to": [
                "Jean <jean@client.ci>"
              ]
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&summary).unwrap());
    }

    #[test]
    fn step_arguments_cannot_add_headers() {
        // A line break in a file name is refused.
        let e = compose_error(json!({"to": "a@b.ci", "subject": "s", "text": "t",
            "attachments": [{"filename": "a.pdf\r\nX-Injected: 2", "content_base64": "AA==",
                             "content_type": "application/octet-stream"}]}));
        assert!(
            e.contains("`filename` must be a non-empty file name"),
            "{e}"
        );
        // So is one in a media type.
        let e = compose_error(json!({"to": "a@b.ci", "subject": "s", "text": "t",
            "attachments": [{"filename": "a.bin", "content_base64": "AA==",
                             "content_type": "text/plain\r\nBcc: espion@ailleurs.ci"}]}));
        assert!(e.contains("is not a media type"), "{e}");
        // A subject's line breaks and a file name's quotes are encoded, not written raw.
        let c = connector("host: 127.0.0.1\ntls: none\nfrom: relances@exemple.ci\n").unwrap();
        let (message, _) = c
            .compose(&effect(json!({
                "to": "jean@client.ci",
                "subject": "Relance\r\nBcc: espion@ailleurs.ci\r\nX-Injected: 1",
                "text": "Bonjour",
                "attachments": [{"filename": "a\";X-Injected=3.pdf", "content_base64": "AA==",
                                 "content_type": "application/octet-stream"}],
            })))
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        for line in text.split("\r\n") {
            assert!(
                !line.starts_with("Bcc:") && !line.starts_with("X-Injected:"),
                "injected header line {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("filename=\"a\";"), "{text}");
        let rcpt = recipients(&message);
        assert_eq!(rcpt, ["jean@client.ci"]);
    }

    /// The envelope's recipients (RCPT TO).
    fn recipients(message: &Message) -> Vec<String> {
        message
            .envelope()
            .to()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn certificate_errors_are_recognized() {
        assert!(is_untrusted_certificate(
            "Connection error: invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_untrusted_certificate(
            "Connection error: Connection refused (os error 111)"
        ));
    }
}
