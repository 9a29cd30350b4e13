//! A small IPP/1.1 client, written from RFC 8010 (encoding) and RFC 8011 (model): enough to
//! print a PDF (Print-Job) and to list a printer's jobs (Get-Jobs).
//!
//! A request is an IPP message POSTed over HTTP with `Content-Type: application/ipp`:
//! `ipp://host:port/path` is reached at `http://host:port/path` (`ipps://` at `https://`; both
//! default to port 631). The message is the version (1.1), the operation id, a request id, the
//! attribute groups (each attribute: value tag, name, value) ended by `end-of-attributes-tag`,
//! then the document data.
//!
//! Failures: no answer, a timeout, an HTTP 5xx or an IPP `server-error-*` status are worth
//! retrying ([`ConnectorError::Transient`]), except `server-error-operation-not-supported` and
//! `server-error-version-not-supported`, which a retry does not change; an IPP `client-error-*`
//! status (such as `client-error-document-format-not-supported`), another HTTP status or an answer
//! that is not a well-formed IPP message are permanent.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::support;
use crate::ConnectorError;

/// Operation ids (RFC 8011 §5.4.15).
pub const PRINT_JOB: u16 = 0x0002;
pub const GET_JOB_ATTRIBUTES: u16 = 0x0009;
pub const GET_JOBS: u16 = 0x000A;
pub const GET_PRINTER_ATTRIBUTES: u16 = 0x000B;

/// Delimiter tags (RFC 8010 §3.5.1).
pub const OPERATION_ATTRIBUTES: u8 = 0x01;
pub const JOB_ATTRIBUTES: u8 = 0x02;
pub const END_OF_ATTRIBUTES: u8 = 0x03;
pub const PRINTER_ATTRIBUTES: u8 = 0x04;
pub const UNSUPPORTED_ATTRIBUTES: u8 = 0x05;

/// Value tags (RFC 8010 §3.5.2).
pub mod tag {
    pub const UNSUPPORTED: u8 = 0x10;
    pub const UNKNOWN: u8 = 0x12;
    pub const NO_VALUE: u8 = 0x13;
    pub const INTEGER: u8 = 0x21;
    pub const BOOLEAN: u8 = 0x22;
    pub const ENUM: u8 = 0x23;
    pub const OCTET_STRING: u8 = 0x30;
    pub const TEXT_WITH_LANGUAGE: u8 = 0x35;
    pub const NAME_WITH_LANGUAGE: u8 = 0x36;
    pub const TEXT: u8 = 0x41;
    pub const NAME: u8 = 0x42;
    pub const KEYWORD: u8 = 0x44;
    pub const URI: u8 = 0x45;
    pub const URI_SCHEME: u8 = 0x46;
    pub const CHARSET: u8 = 0x47;
    pub const NATURAL_LANGUAGE: u8 = 0x48;
    pub const MIME_MEDIA_TYPE: u8 = 0x49;
    pub const MEMBER_ATTR_NAME: u8 = 0x4A;
}

/// One value of an attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Integer(i32),
    Enum(i32),
    Boolean(bool),
    /// text, name, keyword, uri, charset, natural language, MIME type…: the tag says which.
    String(String),
    /// textWithLanguage / nameWithLanguage.
    WithLanguage {
        language: String,
        text: String,
    },
    /// unsupported, unknown, no-value: no content.
    OutOfBand,
    /// Anything else, kept as bytes (dates, resolutions, ranges, collections…).
    Bytes(Vec<u8>),
}

impl Value {
    pub fn as_int(&self) -> Option<i32> {
        match self {
            Value::Integer(i) | Value::Enum(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::WithLanguage { text, .. } => Some(text),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The value tag of the first value (all values of an attribute built here share it).
    pub tag: u8,
    pub name: String,
    pub values: Vec<(u8, Value)>,
}

impl Attribute {
    pub fn new(tag: u8, name: &str, values: Vec<Value>) -> Attribute {
        Attribute {
            tag,
            name: name.to_string(),
            values: values.into_iter().map(|v| (tag, v)).collect(),
        }
    }

    pub fn one(tag: u8, name: &str, value: Value) -> Attribute {
        Attribute::new(tag, name, vec![value])
    }

    pub fn first(&self) -> Option<&Value> {
        self.values.first().map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub tag: u8,
    pub attributes: Vec<Attribute>,
}

impl Group {
    pub fn get(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// An IPP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub version: (u8, u8),
    /// The operation id of a request, the status code of a response.
    pub code: u16,
    pub request_id: u32,
    pub groups: Vec<Group>,
    pub data: Vec<u8>,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.data.len());
        out.extend([self.version.0, self.version.1]);
        out.extend(self.code.to_be_bytes());
        out.extend(self.request_id.to_be_bytes());
        for g in &self.groups {
            out.push(g.tag);
            for a in &g.attributes {
                for (i, (tag, v)) in a.values.iter().enumerate() {
                    out.push(*tag);
                    let name = if i == 0 { a.name.as_bytes() } else { &[] };
                    put_bytes(&mut out, name);
                    let value = encode_value(v);
                    put_bytes(&mut out, &value);
                }
            }
        }
        out.push(END_OF_ATTRIBUTES);
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads a message; whatever does not follow RFC 8010 is an error saying where.
    pub fn decode(bytes: &[u8]) -> Result<Message, String> {
        let mut r = Reader { bytes, pos: 0 };
        let major = r.u8()?;
        let minor = r.u8()?;
        let code = r.u16()?;
        let request_id = r.u32()?;
        let mut groups: Vec<Group> = Vec::new();
        loop {
            let t = r.u8()?;
            if t == END_OF_ATTRIBUTES {
                break;
            }
            if t <= 0x0F {
                groups.push(Group {
                    tag: t,
                    attributes: Vec::new(),
                });
                continue;
            }
            let name_len = usize::from(r.u16()?);
            let name = String::from_utf8_lossy(r.take(name_len)?).into_owned();
            let value_len = usize::from(r.u16()?);
            let raw = r.take(value_len)?;
            let value = decode_value(t, raw).map_err(|e| format!("attribute `{name}`: {e}"))?;
            let Some(group) = groups.last_mut() else {
                return Err(format!(
                    "attribute `{name}` comes before any attribute group"
                ));
            };
            if name.is_empty() {
                // An additional value of the previous attribute (or a collection member).
                match group.attributes.last_mut() {
                    Some(a) => a.values.push((t, value)),
                    None => return Err("an additional value comes before any attribute".into()),
                }
            } else {
                group.attributes.push(Attribute {
                    tag: t,
                    name,
                    values: vec![(t, value)],
                });
            }
        }
        Ok(Message {
            version: (major, minor),
            code,
            request_id,
            groups,
            data: r.bytes.get(r.pos..).unwrap_or_default().to_vec(),
        })
    }

    /// The first attribute `name` in a group tagged `group`.
    pub fn attribute(&self, group: u8, name: &str) -> Option<&Attribute> {
        self.groups
            .iter()
            .filter(|g| g.tag == group)
            .find_map(|g| g.get(name))
    }

    /// `status-message` of a response, if any.
    pub fn status_message(&self) -> Option<&str> {
        self.attribute(OPERATION_ATTRIBUTES, "status-message")
            .and_then(Attribute::first)
            .and_then(Value::as_str)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend(len.to_be_bytes());
    out.extend_from_slice(b.get(..usize::from(len)).unwrap_or(b));
}

fn encode_value(v: &Value) -> Vec<u8> {
    match v {
        Value::Integer(i) | Value::Enum(i) => i.to_be_bytes().to_vec(),
        Value::Boolean(b) => vec![u8::from(*b)],
        Value::String(s) => s.as_bytes().to_vec(),
        Value::WithLanguage { language, text } => {
            let mut out = Vec::new();
            put_bytes(&mut out, language.as_bytes());
            put_bytes(&mut out, text.as_bytes());
            out
        }
        Value::OutOfBand => Vec::new(),
        Value::Bytes(b) => b.clone(),
    }
}

fn decode_value(t: u8, raw: &[u8]) -> Result<Value, String> {
    let int = |raw: &[u8]| -> Result<i32, String> {
        <[u8; 4]>::try_from(raw)
            .map(i32::from_be_bytes)
            .map_err(|_| format!("an integer takes 4 bytes, not {}", raw.len()))
    };
    Ok(match t {
        0x10..=0x1F => Value::OutOfBand,
        tag::INTEGER => Value::Integer(int(raw)?),
        tag::ENUM => Value::Enum(int(raw)?),
        tag::BOOLEAN => match raw {
            [b] => Value::Boolean(*b != 0),
            _ => return Err(format!("a boolean takes 1 byte, not {}", raw.len())),
        },
        tag::TEXT_WITH_LANGUAGE | tag::NAME_WITH_LANGUAGE => {
            let mut r = Reader { bytes: raw, pos: 0 };
            let l = usize::from(r.u16()?);
            let language = String::from_utf8_lossy(r.take(l)?).into_owned();
            let l = usize::from(r.u16()?);
            let text = String::from_utf8_lossy(r.take(l)?).into_owned();
            Value::WithLanguage { language, text }
        }
        0x40..=0x5F => Value::String(String::from_utf8_lossy(raw).into_owned()),
        _ => Value::Bytes(raw.to_vec()),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        match end.and_then(|e| self.bytes.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(format!(
                "the message ends early (byte {} of {}, {n} more expected)",
                self.pos,
                self.bytes.len()
            )),
        }
    }

    fn u8(&mut self) -> Result<u8, String> {
        self.take(1).map(|b| b.first().copied().unwrap_or(0))
    }

    fn u16(&mut self) -> Result<u16, String> {
        self.take(2).map(|b| {
            u16::from_be_bytes([
                b.first().copied().unwrap_or(0),
                b.get(1).copied().unwrap_or(0),
            ])
        })
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        <[u8; 4]>::try_from(b)
            .map(u32::from_be_bytes)
            .map_err(|_| "short integer".to_string())
    }
}

/// The keyword of an IPP status code (RFC 8011 §B and PWG 5100.x).
pub fn status_name(code: u16) -> String {
    let name = match code {
        0x0000 => "successful-ok",
        0x0001 => "successful-ok-ignored-or-substituted-attributes",
        0x0002 => "successful-ok-conflicting-attributes",
        0x0400 => "client-error-bad-request",
        0x0401 => "client-error-forbidden",
        0x0402 => "client-error-not-authenticated",
        0x0403 => "client-error-not-authorized",
        0x0404 => "client-error-not-possible",
        0x0405 => "client-error-timeout",
        0x0406 => "client-error-not-found",
        0x0407 => "client-error-gone",
        0x0408 => "client-error-request-entity-too-large",
        0x0409 => "client-error-request-value-too-long",
        0x040A => "client-error-document-format-not-supported",
        0x040B => "client-error-attributes-or-values-not-supported",
        0x040C => "client-error-uri-scheme-not-supported",
        0x040D => "client-error-charset-not-supported",
        0x040E => "client-error-conflicting-attributes",
        0x040F => "client-error-compression-not-supported",
        0x0410 => "client-error-compression-error",
        0x0411 => "client-error-document-format-error",
        0x0412 => "client-error-document-access-error",
        0x0500 => "server-error-internal-error",
        0x0501 => "server-error-operation-not-supported",
        0x0502 => "server-error-service-unavailable",
        0x0503 => "server-error-version-not-supported",
        0x0504 => "server-error-device-error",
        0x0505 => "server-error-temporary-error",
        0x0506 => "server-error-not-accepting-jobs",
        0x0507 => "server-error-busy",
        0x0508 => "server-error-job-canceled",
        0x0509 => "server-error-multiple-document-jobs-not-supported",
        _ => "",
    };
    if name.is_empty() {
        format!("status 0x{code:04x}")
    } else {
        format!("{name} (0x{code:04x})")
    }
}

/// The keyword of a `job-state` (RFC 8011 §5.3.7).
pub fn job_state_name(state: i32) -> &'static str {
    match state {
        3 => "pending",
        4 => "pending-held",
        5 => "processing",
        6 => "processing-stopped",
        7 => "canceled",
        8 => "aborted",
        9 => "completed",
        _ => "unknown",
    }
}

/// Whether a status code is a success.
pub fn is_success(code: u16) -> bool {
    code <= 0x00FF
}

/// The error for an IPP status that is not a success.
pub fn status_error(operation: &str, code: u16, message: Option<&str>) -> ConnectorError {
    let mut msg = format!("ipp: {operation} refused: {}", status_name(code));
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        msg.push_str(&format!(": {}", support::excerpt(m)));
    }
    let transient = (0x0500..=0x05FF).contains(&code) && code != 0x0501 && code != 0x0503;
    if transient {
        ConnectorError::Transient(msg)
    } else {
        ConnectorError::Permanent(msg)
    }
}

/// A job as the printer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i32,
    pub name: Option<String>,
    pub state: Option<i32>,
    pub uri: Option<String>,
}

impl Job {
    fn from_group(g: &Group) -> Option<Job> {
        let id = g.get("job-id")?.first()?.as_int()?;
        Some(Job {
            id,
            name: g
                .get("job-name")
                .and_then(Attribute::first)
                .and_then(Value::as_str)
                .map(str::to_string),
            state: g
                .get("job-state")
                .and_then(Attribute::first)
                .and_then(Value::as_int),
            uri: g
                .get("job-uri")
                .and_then(Attribute::first)
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    pub fn state_name(&self) -> &'static str {
        self.state.map(job_state_name).unwrap_or("unknown")
    }
}

/// The HTTP address of an `ipp://` or `ipps://` printer URI.
pub fn http_url(printer_uri: &str) -> Result<url::Url, String> {
    let u =
        url::Url::parse(printer_uri).map_err(|e| format!("`{printer_uri}` is not a URI: {e}"))?;
    let scheme = match u.scheme() {
        "ipp" | "http" => "http",
        "ipps" | "https" => "https",
        other => {
            return Err(format!(
                "`{printer_uri}`: the scheme `{other}` is not ipp, ipps, http or https"
            ))
        }
    };
    if !u.username().is_empty() || u.password().is_some() {
        // The URI is sent to the printer as `printer-uri`, shown in results and in errors:
        // it must not hold a secret (and this client sends no HTTP credentials).
        return Err("the printer URI carries credentials (user:password@): remove them".into());
    }
    let host = u
        .host()
        .ok_or_else(|| format!("`{printer_uri}` names no host"))?;
    let port = u.port().unwrap_or(match u.scheme() {
        "http" => 80,
        "https" => 443,
        _ => 631,
    });
    let mut text = format!("{scheme}://{host}:{port}{}", u.path());
    if let Some(q) = u.query() {
        text.push('?');
        text.push_str(q);
    }
    url::Url::parse(&text).map_err(|e| format!("`{printer_uri}`: {e}"))
}

/// A printer reached over IPP.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    url: url::Url,
    printer_uri: String,
    user: String,
    next_id: AtomicU32,
}

impl Client {
    /// `printer_uri` as `ipp://host:631/printers/NAME`; `user` is sent as requesting-user-name.
    pub fn new(printer_uri: &str, user: &str, timeout: Duration) -> Result<Client, String> {
        Ok(Client {
            http: support::http_client(timeout).map_err(|e| e.message)?,
            url: http_url(printer_uri)?,
            printer_uri: printer_uri.to_string(),
            user: user.to_string(),
            next_id: AtomicU32::new(1),
        })
    }

    pub fn printer_uri(&self) -> &str {
        &self.printer_uri
    }

    /// The operation attributes every request starts with.
    fn operation_group(&self, extra: Vec<Attribute>) -> Group {
        let mut attributes = vec![
            Attribute::one(
                tag::CHARSET,
                "attributes-charset",
                Value::String("utf-8".into()),
            ),
            Attribute::one(
                tag::NATURAL_LANGUAGE,
                "attributes-natural-language",
                Value::String("fr".into()),
            ),
            Attribute::one(
                tag::URI,
                "printer-uri",
                Value::String(self.printer_uri.clone()),
            ),
            Attribute::one(
                tag::NAME,
                "requesting-user-name",
                Value::String(self.user.clone()),
            ),
        ];
        attributes.extend(extra);
        Group {
            tag: OPERATION_ATTRIBUTES,
            attributes,
        }
    }

    fn request(&self, op: u16, groups: Vec<Group>, data: Vec<u8>) -> Message {
        Message {
            version: (1, 1),
            code: op,
            request_id: self.next_id.fetch_add(1, Ordering::Relaxed),
            groups,
            data,
        }
    }

    /// The Print-Job request for a PDF.
    pub fn print_job_request(&self, job_name: &str, copies: Option<u32>, pdf: Vec<u8>) -> Message {
        let op = self.operation_group(vec![
            Attribute::one(tag::NAME, "job-name", Value::String(job_name.to_string())),
            Attribute::one(
                tag::MIME_MEDIA_TYPE,
                "document-format",
                Value::String("application/pdf".into()),
            ),
        ]);
        let mut groups = vec![op];
        if let Some(c) = copies {
            groups.push(Group {
                tag: JOB_ATTRIBUTES,
                attributes: vec![Attribute::one(
                    tag::INTEGER,
                    "copies",
                    Value::Integer(i32::try_from(c).unwrap_or(i32::MAX)),
                )],
            });
        }
        self.request(PRINT_JOB, groups, pdf)
    }

    /// The Get-Jobs request (`which-jobs` = `all`, `completed` or `not-completed`).
    pub fn get_jobs_request(&self, which: &str) -> Message {
        let op = self.operation_group(vec![
            Attribute::one(tag::KEYWORD, "which-jobs", Value::String(which.into())),
            Attribute::new(
                tag::KEYWORD,
                "requested-attributes",
                ["job-id", "job-name", "job-state", "job-uri"]
                    .iter()
                    .map(|s| Value::String((*s).into()))
                    .collect(),
            ),
        ]);
        self.request(GET_JOBS, vec![op], Vec::new())
    }

    /// POSTs a request; an answer with an unsuccessful status is an error.
    pub async fn send(&self, operation: &str, msg: &Message) -> Result<Message, ConnectorError> {
        let resp = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/ipp")
            .body(msg.encode())
            .send()
            .await
            .map_err(|e| support::transport_error("ipp", &e))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| support::transport_error("ipp", &e))?;
        if status != 200 {
            return Err(support::status_error(
                "ipp",
                status,
                &String::from_utf8_lossy(&body),
            ));
        }
        let answer = Message::decode(&body).map_err(|e| {
            ConnectorError::Permanent(format!("ipp: malformed answer to {operation}: {e}"))
        })?;
        if !is_success(answer.code) {
            return Err(status_error(
                operation,
                answer.code,
                answer.status_message(),
            ));
        }
        Ok(answer)
    }

    /// Prints a PDF; answers the job the printer created.
    pub async fn print_job(
        &self,
        job_name: &str,
        copies: Option<u32>,
        pdf: Vec<u8>,
    ) -> Result<Job, ConnectorError> {
        let answer = self
            .send("Print-Job", &self.print_job_request(job_name, copies, pdf))
            .await?;
        answer
            .groups
            .iter()
            .filter(|g| g.tag == JOB_ATTRIBUTES)
            .find_map(Job::from_group)
            .map(|mut j| {
                j.name.get_or_insert_with(|| job_name.to_string());
                j
            })
            .ok_or_else(|| {
                ConnectorError::Permanent(
                    "ipp: malformed answer to Print-Job: no job-id in it".into(),
                )
            })
    }

    /// Every job the printer still knows (`which-jobs=all`, or completed and not-completed
    /// for printers that do not take `all`).
    pub async fn jobs(&self) -> Result<Vec<Job>, ConnectorError> {
        match self.send("Get-Jobs", &self.get_jobs_request("all")).await {
            Ok(answer) => Ok(jobs_of(&answer)),
            Err(ConnectorError::Permanent(m)) if m.contains("(0x040b)") => {
                let mut jobs = Vec::new();
                for which in ["not-completed", "completed"] {
                    let answer = self.send("Get-Jobs", &self.get_jobs_request(which)).await?;
                    jobs.extend(jobs_of(&answer));
                }
                Ok(jobs)
            }
            Err(e) => Err(e),
        }
    }

    /// The most recent job named `name`, if the printer has one.
    pub async fn find_job(&self, name: &str) -> Result<Option<Job>, ConnectorError> {
        Ok(self
            .jobs()
            .await?
            .into_iter()
            .filter(|j| j.name.as_deref() == Some(name))
            .max_by_key(|j| j.id))
    }
}

fn jobs_of(answer: &Message) -> Vec<Job> {
    answer
        .groups
        .iter()
        .filter(|g| g.tag == JOB_ATTRIBUTES)
        .filter_map(Job::from_group)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn hex(b: &[u8]) -> String {
        b.chunks(16)
            .map(|c| {
                c.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn client() -> Client {
        Client::new(
            "ipp://127.0.0.1:8631/ipp/print",
            "dossier",
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[test]
    fn print_job_request_bytes() {
        let m = client().print_job_request("D-1:imprimer#1", Some(2), b"%PDF".to_vec());
        expect![[r#"
            01 01 00 02 00 00 00 01 01 47 00 12 61 74 74 72
            69 62 75 74 65 73 2d 63 68 61 72 73 65 74 00 05
            75 74 66 2d 38 48 00 1b 61 74 74 72 69 62 75 74
            65 73 2d 6e 61 74 75 72 61 6c 2d 6c 61 6e 67 75
            61 67 65 00 02 66 72 45 00 0b 70 72 69 6e 74 65
            72 2d 75 72 69 00 1e 69 70 70 3a 2f 2f 31 32 37
            2e 30 2e 30 2e 31 3a 38 36 33 31 2f 69 70 70 2f
            70 72 69 6e 74 42 00 14 72 65 71 75 65 73 74 69
            6e 67 2d 75 73 65 72 2d 6e 61 6d 65 00 07 64 6f
            73 73 69 65 72 42 00 08 6a 6f 62 2d 6e 61 6d 65
            00 0e 44 2d 31 3a 69 6d 70 72 69 6d 65 72 23 31
            49 00 0f 64 6f 63 75 6d 65 6e 74 2d 66 6f 72 6d
            61 74 00 0f 61 70 70 6c 69 63 61 74 69 6f 6e 2f
            70 64 66 02 21 00 06 63 6f 70 69 65 73 00 04 00
            00 00 02 03 25 50 44 46"#]]
        .assert_eq(&hex(&m.encode()));
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn get_jobs_lists_its_requested_attributes_as_one_set() {
        let m = client().get_jobs_request("all");
        let decoded = Message::decode(&m.encode()).unwrap();
        let ra = decoded
            .attribute(OPERATION_ATTRIBUTES, "requested-attributes")
            .unwrap();
        let names: Vec<&str> = ra.values.iter().filter_map(|(_, v)| v.as_str()).collect();
        assert_eq!(names, ["job-id", "job-name", "job-state", "job-uri"]);
        assert_eq!(decoded.code, GET_JOBS);
    }

    #[test]
    fn decodes_a_response_with_jobs() {
        let answer = Message {
            version: (1, 1),
            code: 0,
            request_id: 7,
            groups: vec![
                Group {
                    tag: OPERATION_ATTRIBUTES,
                    attributes: vec![Attribute::one(
                        tag::TEXT_WITH_LANGUAGE,
                        "status-message",
                        Value::WithLanguage {
                            language: "fr".into(),
                            text: "ok".into(),
                        },
                    )],
                },
                Group {
                    tag: JOB_ATTRIBUTES,
                    attributes: vec![
                        Attribute::one(tag::INTEGER, "job-id", Value::Integer(4)),
                        Attribute::one(tag::NAME, "job-name", Value::String("k".into())),
                        Attribute::one(tag::ENUM, "job-state", Value::Enum(9)),
                    ],
                },
                Group {
                    tag: JOB_ATTRIBUTES,
                    attributes: vec![Attribute::one(tag::INTEGER, "job-id", Value::Integer(5))],
                },
            ],
            data: Vec::new(),
        };
        let decoded = Message::decode(&answer.encode()).unwrap();
        assert_eq!(decoded.status_message(), Some("ok"));
        let jobs = jobs_of(&decoded);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].state_name(), "completed");
        assert_eq!(jobs[0].name.as_deref(), Some("k"));
        assert_eq!(jobs[1].state_name(), "unknown");
    }

    #[test]
    fn malformed_answers_and_statuses() {
        expect!["the message ends early (byte 8 of 8, 1 more expected)"]
            .assert_eq(&Message::decode(&[1, 1, 0, 0, 0, 0, 0, 1]).unwrap_err());
        expect!["attribute `job-id`: an integer takes 4 bytes, not 2"].assert_eq(
            &Message::decode(&[
                1, 1, 0, 0, 0, 0, 0, 1, 2, 0x21, 0, 6, b'j', b'o', b'b', b'-', b'i', b'd', 0, 2, 0,
                1, 3,
            ])
            .unwrap_err(),
        );
        let e = status_error("Print-Job", 0x040A, Some("Unsupported format"));
        assert!(!e.is_transient());
        expect!["ipp: Print-Job refused: client-error-document-format-not-supported (0x040a): Unsupported format"]
            .assert_eq(&e.to_string());
        assert!(status_error("Print-Job", 0x0507, None).is_transient());
        assert!(status_error("Print-Job", 0x0502, None).is_transient());
        assert!(!status_error("Print-Job", 0x0501, None).is_transient());
    }

    #[test]
    fn printer_uris_become_http_urls() {
        let u = |s: &str| http_url(s).map(|u| u.to_string());
        assert_eq!(
            u("ipp://imprimante.local/ipp/print").unwrap(),
            "http://imprimante.local:631/ipp/print"
        );
        assert_eq!(
            u("ipps://10.0.0.5:8443/printers/A").unwrap(),
            "https://10.0.0.5:8443/printers/A"
        );
        assert_eq!(
            u("ipp://[::1]:631/ipp/print").unwrap(),
            "http://[::1]:631/ipp/print"
        );
        assert!(u("lpd://x/q").unwrap_err().contains("scheme `lpd`"));
        // Credentials would be echoed in `printer-uri`, results and errors.
        let e = u("ipp://admin:s3cret@imprimante.local/ipp/print").unwrap_err();
        assert!(e.contains("credentials") && !e.contains("s3cret"), "{e}");
        assert!(u("ipp://admin@imprimante.local/ipp/print").is_err());
    }
}
