//! Calendar invitations (iCalendar, RFC 5545 / iTIP, RFC 5546) and the `calendar` connector,
//! which keeps events in a CalDAV calendar (RFC 4791).
//!
//! ```yaml
//! connectors:
//!   agenda:
//!     type: calendar
//!     url: https://agenda.exemple.ci/dossier/visites/   # the calendar collection
//!     username: dossier                                 # optional, HTTP basic
//!     password_env: DOSSIER_AGENDA_PASSWORD
//!     timeout_seconds: 20
//! ```
//!
//! An [`Invitation`] is a step argument: `uid` (stable across reschedules), `sequence`,
//! `summary`, `description`, `location`, `start`, `end` (RFC 3339 with an offset), `organizer`,
//! `attendees`, `alarms` (ISO 8601 durations before the start), `status`. [`Invitation::to_ics`]
//! writes the iTIP form mailed to people (`METHOD:REQUEST` / `METHOD:CANCEL`),
//! [`Invitation::to_stored_ics`] the form a CalDAV server stores (no `METHOD`, RFC 4791 §4.1).
//!
//! Operations (argument `invitation`):
//! - `publish`: `PUT {url}{uid}.ics` with `If-None-Match: *`. If the event exists (412), it is
//!   read back: the same event (apart from `DTSTAMP` and `SEQUENCE`, with a stored `SEQUENCE`
//!   not below the given one) answers `unchanged` without writing (a replay after a crash);
//!   otherwise it is replaced with `If-Match: <etag>` and `SEQUENCE = max(given, stored + 1)`.
//!   A collection that does not exist yet (404 or 409 on the first PUT) is created once with
//!   `MKCALENDAR`.
//! - `cancel`: the event written with `STATUS:CANCELLED`, without its alarms, `SEQUENCE` raised
//!   the same way, with `If-Match`. Cancelling an event the calendar does not hold is permanent;
//!   cancelling an already cancelled event again writes nothing.
//!
//! The result is `{uid, href, etag, sequence, outcome}`, `outcome` being `created`, `updated`,
//! `unchanged` or `cancelled`. Idempotency: the resource's name derives from the UID and
//! creation is conditional, so a repeated effect never makes a second event; every request also
//! carries `Idempotency-Key: <the effect's key>` for the server's logs. "The same event" is
//! judged on the properties, not the bytes: servers re-serialize what they store (Radicale
//! reorders properties and parameters, refolds lines, writes `-PT24H` as `-P1D`).
//!
//! Transient: unreachable, timeout, 408, 425, 429, 5xx, a 412 on `If-Match` (someone changed the
//! event meanwhile) and an event deleted between two requests. Permanent: 401/403 (check the
//! credentials and rights), any other 4xx, a malformed answer (no ETag, not an iCalendar event,
//! another UID at the resource), an invalid invitation.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use dossier_model::IsoDuration;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::{self, BuildContext, BuildError};
use crate::{Connector, ConnectorError, EffectRequest};

/// The `PRODID` of every calendar Dossier writes.
pub const PRODID: &str = "-//Dossier//Dossier invitations//FR";

/// Largest calendar resource read back from a server.
const MAX_RESOURCE: usize = 1024 * 1024;

/// iTIP method of an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Request,
    Cancel,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Request => "REQUEST",
            Method::Cancel => "CANCEL",
        }
    }
}

/// `STATUS` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Tentative,
    Confirmed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Tentative => "TENTATIVE",
            Status::Confirmed => "CONFIRMED",
            Status::Cancelled => "CANCELLED",
        }
    }
}

/// An attendee's `ROLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Chair,
    ReqParticipant,
    OptParticipant,
    NonParticipant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Chair => "CHAIR",
            Role::ReqParticipant => "REQ-PARTICIPANT",
            Role::OptParticipant => "OPT-PARTICIPANT",
            Role::NonParticipant => "NON-PARTICIPANT",
        }
    }
}

/// The organizer of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: Option<String>,
    /// A plain address, without `mailto:`.
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    pub name: Option<String>,
    pub email: String,
    pub role: Role,
    pub rsvp: bool,
}

/// An event as a workflow describes it (the step's `invitation` argument), checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawInvitation")]
pub struct Invitation {
    pub uid: String,
    pub sequence: u32,
    pub summary: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub organizer: Person,
    pub attendees: Vec<Attendee>,
    /// Reminders, in seconds before the start.
    pub alarms: Vec<u64>,
    pub status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInvitation {
    uid: String,
    #[serde(default)]
    sequence: Option<Value>,
    summary: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    location: Option<String>,
    start: String,
    end: String,
    organizer: RawPerson,
    #[serde(default)]
    attendees: Vec<RawAttendee>,
    #[serde(default)]
    alarms: Vec<String>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerson {
    #[serde(default)]
    name: Option<String>,
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttendee {
    #[serde(default)]
    name: Option<String>,
    email: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    rsvp: Option<bool>,
}

/// Trimmed text, `None` when empty (a template rendering an absent value gives "").
fn optional_text(t: Option<String>) -> Option<String> {
    t.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A whole number from its text, `2.0` included (what an exact decimal gives).
fn whole(text: &str) -> Option<u32> {
    let int = match text.split_once('.') {
        Some((int, frac)) if frac.chars().all(|c| c == '0') => int,
        Some(_) => return None,
        None => text,
    };
    int.parse().ok()
}

fn check_email(field: &str, text: &str) -> Result<String, String> {
    let t = text.trim();
    let t = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("mailto:") => t.get(7..).unwrap_or_default(),
        _ => t,
    };
    let ok = match t.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && t.chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && !"<>\",;:()[]\\".contains(c))
        }
        None => false,
    };
    if ok {
        Ok(t.to_string())
    } else {
        Err(format!(
            "`{field}`: `{text}` is not an email address (write it as nom@exemple.ci)"
        ))
    }
}

fn check_instant(field: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc).trunc_subsecs(0))
        .map_err(|_| {
            format!(
                "`{field}`: `{text}` is not an RFC 3339 date-time with an offset; write it as 2025-03-14T09:30:00+00:00 (or with Z for UTC)"
            )
        })
}

fn check_alarm(text: &str) -> Result<u64, String> {
    let d = IsoDuration::parse(text.trim()).map_err(|e| format!("`alarms`: {e}"))?;
    if d.years > 0 || d.months > 0 {
        return Err(format!(
            "`alarms`: `{text}` uses years or months, which a reminder cannot: give weeks, days, hours or minutes (P1D, PT15M)"
        ));
    }
    Ok(d.approx_seconds())
}

impl TryFrom<RawInvitation> for Invitation {
    type Error = String;

    fn try_from(r: RawInvitation) -> Result<Invitation, String> {
        let uid = r.uid.trim().to_string();
        if uid.is_empty() || uid.len() > 255 || uid.chars().any(char::is_control) {
            return Err(format!(
                "`uid`: `{}` must be 1 to 255 characters without control characters (a stable id such as visite-{{case id}}@exemple.ci)",
                r.uid
            ));
        }
        let sequence = match r.sequence {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => whole(&n.to_string())
                .ok_or_else(|| format!("`sequence`: {n} is not a whole number from 0"))?,
            Some(Value::String(s)) if s.trim().is_empty() => 0,
            Some(Value::String(s)) => whole(s.trim())
                .ok_or_else(|| format!("`sequence`: `{s}` is not a whole number from 0"))?,
            Some(other) => return Err(format!("`sequence`: {other} is not a whole number")),
        };
        let summary = r.summary.trim().to_string();
        if summary.is_empty() {
            return Err("`summary` is empty: give the event a title".to_string());
        }
        let start = check_instant("start", &r.start)?;
        let end = check_instant("end", &r.end)?;
        if end <= start {
            return Err(format!(
                "`end` ({}) must be after `start` ({})",
                r.end.trim(),
                r.start.trim()
            ));
        }
        let organizer = Person {
            name: optional_text(r.organizer.name),
            email: check_email("organizer.email", &r.organizer.email)?,
        };
        let mut attendees = Vec::with_capacity(r.attendees.len());
        for (i, a) in r.attendees.into_iter().enumerate() {
            let role = match a.role.as_deref().map(|s| s.trim().to_ascii_uppercase()) {
                None => Role::ReqParticipant,
                Some(s) => match s.as_str() {
                    "" | "REQ-PARTICIPANT" => Role::ReqParticipant,
                    "CHAIR" => Role::Chair,
                    "OPT-PARTICIPANT" => Role::OptParticipant,
                    "NON-PARTICIPANT" => Role::NonParticipant,
                    _ => {
                        return Err(format!(
                            "`attendees[{i}].role`: `{}` is not a role (CHAIR, REQ-PARTICIPANT, OPT-PARTICIPANT, NON-PARTICIPANT)",
                            a.role.as_deref().unwrap_or_default()
                        ))
                    }
                },
            };
            attendees.push(Attendee {
                name: optional_text(a.name),
                email: check_email(&format!("attendees[{i}].email"), &a.email)?,
                role,
                rsvp: a.rsvp.unwrap_or(true),
            });
        }
        let alarms = r
            .alarms
            .iter()
            .map(|a| check_alarm(a))
            .collect::<Result<Vec<_>, _>>()?;
        let status = match r.status.as_deref().map(|s| s.trim().to_ascii_uppercase()) {
            None => None,
            Some(s) => match s.as_str() {
                "" => None,
                "TENTATIVE" => Some(Status::Tentative),
                "CONFIRMED" => Some(Status::Confirmed),
                "CANCELLED" => Some(Status::Cancelled),
                _ => {
                    return Err(format!(
                        "`status`: `{}` is not an event status (TENTATIVE, CONFIRMED, CANCELLED)",
                        r.status.as_deref().unwrap_or_default()
                    ))
                }
            },
        };
        Ok(Invitation {
            uid,
            sequence,
            summary,
            description: optional_text(r.description),
            location: optional_text(r.location),
            start,
            end,
            organizer,
            attendees,
            alarms,
            status,
        })
    }
}

impl Invitation {
    /// Reads and checks an invitation given as a step argument.
    pub fn parse(value: &Value) -> Result<Invitation, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("invalid invitation: {e}"))
    }

    /// The iTIP `.ics` text for email (`text/calendar; method=REQUEST` or `CANCEL`), stamped
    /// `stamp`: CRLF lines folded at 75 octets. `Cancel` writes `STATUS:CANCELLED` and no
    /// alarm; the caller raises `sequence` for a change or a cancellation.
    pub fn to_ics(&self, method: Method, stamp: DateTime<Utc>) -> String {
        self.render(Some(method), stamp)
    }

    /// The `.ics` text a CalDAV server stores: no `METHOD` (RFC 4791 §4.1). A cancelled event
    /// (`status: CANCELLED`) keeps no alarm.
    pub fn to_stored_ics(&self, stamp: DateTime<Utc>) -> String {
        self.render(None, stamp)
    }

    fn render(&self, method: Option<Method>, stamp: DateTime<Utc>) -> String {
        let cancelled = method == Some(Method::Cancel) || self.status == Some(Status::Cancelled);
        let status = if cancelled {
            Some(Status::Cancelled)
        } else {
            self.status
        };
        let mut w = IcsWriter::default();
        w.line("BEGIN", &[], "VCALENDAR");
        w.line("PRODID", &[], PRODID);
        w.line("VERSION", &[], "2.0");
        w.line("CALSCALE", &[], "GREGORIAN");
        if let Some(m) = method {
            w.line("METHOD", &[], m.as_str());
        }
        w.line("BEGIN", &[], "VEVENT");
        w.line("UID", &[], &escape_text(&self.uid));
        w.line("DTSTAMP", &[], &utc(stamp));
        w.line("SEQUENCE", &[], &self.sequence.to_string());
        w.line("DTSTART", &[], &utc(self.start));
        w.line("DTEND", &[], &utc(self.end));
        w.line("SUMMARY", &[], &escape_text(&self.summary));
        if let Some(d) = &self.description {
            w.line("DESCRIPTION", &[], &escape_text(d));
        }
        if let Some(l) = &self.location {
            w.line("LOCATION", &[], &escape_text(l));
        }
        if let Some(s) = status {
            w.line("STATUS", &[], s.as_str());
        }
        let mut params = Vec::new();
        if let Some(n) = &self.organizer.name {
            params.push(("CN", param_value(n)));
        }
        w.line("ORGANIZER", &params, &mailto(&self.organizer.email));
        for a in &self.attendees {
            let mut params = Vec::new();
            if let Some(n) = &a.name {
                params.push(("CN", param_value(n)));
            }
            params.push(("ROLE", a.role.as_str().to_string()));
            params.push(("PARTSTAT", "NEEDS-ACTION".to_string()));
            params.push(("RSVP", if a.rsvp { "TRUE" } else { "FALSE" }.to_string()));
            w.line("ATTENDEE", &params, &mailto(&a.email));
        }
        if !cancelled {
            for secs in &self.alarms {
                w.line("BEGIN", &[], "VALARM");
                w.line("TRIGGER", &[], &trigger(*secs));
                w.line("ACTION", &[], "DISPLAY");
                w.line(
                    "DESCRIPTION",
                    &[],
                    &escape_text(&format!("Rappel : {}", self.summary)),
                );
                w.line("END", &[], "VALARM");
            }
        }
        w.line("END", &[], "VEVENT");
        w.line("END", &[], "VCALENDAR");
        w.out
    }
}

/// A UTC date-time as iCalendar writes it: `20250314T093000Z`.
fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn mailto(email: &str) -> String {
    format!("mailto:{email}")
}

/// A reminder `secs` before the start, written the way CalDAV servers re-serialize it (days,
/// then hours, minutes, seconds: `PT24H` becomes `-P1D`).
fn trigger(secs: u64) -> String {
    if secs == 0 {
        "PT0S".to_string()
    } else {
        format!("-{}", IsoDuration::from_seconds(secs))
    }
}

/// Escapes a TEXT value (RFC 5545 §3.3.11): backslash, semicolon, comma, newlines; other
/// control characters but tab are dropped.
pub fn escape_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A parameter value (a `CN`): quoted when it holds `:`, `;` or `,`. A parameter value cannot
/// hold a double quote nor a line break: they become `'` and a space.
pub fn param_value(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter_map(|c| match c {
            '"' => Some('\''),
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    if clean.contains([':', ';', ',']) {
        format!("\"{clean}\"")
    } else {
        clean
    }
}

/// Appends `line` folded at 75 octets (RFC 5545 §3.1), never inside a UTF-8 character; each
/// continuation line starts with a space, counted in its 75 octets. A fold never leaves blanks
/// at the end of a physical line (some readers strip them): they move to the next line.
pub fn fold_line(line: &str, out: &mut String) {
    let mut cur = String::new();
    let mut first = true;
    for c in line.chars() {
        let limit = if first { 75 } else { 74 };
        if cur.len() + c.len_utf8() > limit {
            let keep = cur.trim_end_matches([' ', '\t']).len();
            let carry = cur.get(keep..).unwrap_or_default().to_string();
            let (head, carry) = if keep > 0 && carry.len() + c.len_utf8() <= 74 {
                (cur.get(..keep).unwrap_or_default(), carry)
            } else {
                (cur.as_str(), String::new())
            };
            if !first {
                out.push(' ');
            }
            out.push_str(head);
            out.push_str("\r\n");
            cur = carry;
            first = false;
        }
        cur.push(c);
    }
    if !first {
        out.push(' ');
    }
    out.push_str(&cur);
    out.push_str("\r\n");
}

#[derive(Default)]
struct IcsWriter {
    out: String,
}

impl IcsWriter {
    /// One content line; `value` and the parameter values are already escaped.
    fn line(&mut self, name: &str, params: &[(&str, String)], value: &str) {
        let mut l = String::from(name);
        for (k, v) in params {
            l.push(';');
            l.push_str(k);
            l.push('=');
            l.push_str(v);
        }
        l.push(':');
        l.push_str(value);
        fold_line(&l, &mut self.out);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading back what a server stores.

/// One content line: name (upper case), parameters (names upper case, values unquoted), value
/// (as written, escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContentLine {
    name: String,
    params: Vec<(String, String)>,
    value: String,
}

/// The content lines of an iCalendar text, unfolded (CRLF or LF line ends).
fn unfold(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for raw in bytes.split(|b| *b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match (raw.first(), lines.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.extend_from_slice(raw.get(1..).unwrap_or(&[])),
            (Some(_), _) => lines.push(raw.to_vec()),
            (None, _) => {}
        }
    }
    lines
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .collect()
}

fn parse_line(s: &str) -> Option<ContentLine> {
    let end = s.find([';', ':'])?;
    let name = s.get(..end)?.trim().to_ascii_uppercase();
    if name.is_empty() {
        return None;
    }
    let mut rest = s.get(end..)?;
    let mut params = Vec::new();
    while let Some(r) = rest.strip_prefix(';') {
        let eq = r.find('=')?;
        let pname = r.get(..eq)?.trim().to_ascii_uppercase();
        let mut r = r.get(eq + 1..)?;
        let mut values = Vec::new();
        loop {
            if let Some(q) = r.strip_prefix('"') {
                let close = q.find('"')?;
                values.push(q.get(..close)?.to_string());
                r = q.get(close + 1..)?;
            } else {
                let stop = r.find([',', ';', ':'])?;
                values.push(r.get(..stop)?.to_string());
                r = r.get(stop..)?;
            }
            match r.strip_prefix(',') {
                Some(next) => r = next,
                None => break,
            }
        }
        params.push((pname, values.join(",")));
        rest = r;
    }
    let value = rest.strip_prefix(':')?.to_string();
    Some(ContentLine {
        name,
        params,
        value,
    })
}

/// Undoes TEXT escaping.
fn unescape_text(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n' | 'N') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A property as compared between what Dossier would write and what a server holds: the
/// server may re-serialize (order of properties and parameters, quoting, escaping, folding,
/// `PT24H` as `P1D`), none of which changes the event.
fn normalized(l: &ContentLine) -> String {
    let mut params: Vec<(String, String)> = l
        .params
        .iter()
        .filter(|(k, _)| !(l.name == "TRIGGER" && k == "VALUE"))
        .map(|(k, v)| {
            let v = if k == "CN" {
                v.clone()
            } else {
                v.to_ascii_uppercase()
            };
            (k.clone(), v)
        })
        .collect();
    params.sort();
    let value = match l.name.as_str() {
        "ORGANIZER" | "ATTENDEE" => l.value.trim().to_lowercase(),
        "TRIGGER" => {
            let v = l.value.trim();
            let (sign, d) = match v.strip_prefix('-') {
                Some(d) => ("-", d),
                None => ("", v.strip_prefix('+').unwrap_or(v)),
            };
            match IsoDuration::parse(d) {
                Ok(d) if d.approx_seconds() == 0 => "0".to_string(),
                Ok(d) => format!("{sign}{}", d.approx_seconds()),
                Err(_) => v.to_string(),
            }
        }
        "STATUS" | "DTSTART" | "DTEND" => l.value.trim().to_ascii_uppercase(),
        _ => unescape_text(&l.value),
    };
    let mut s = l.name.clone();
    for (k, v) in params {
        s.push_str(&format!(";{k}={v}"));
    }
    s.push(':');
    s.push_str(&value);
    s
}

/// What the connector needs of a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredEvent {
    uid: Option<String>,
    sequence: u32,
    /// Every property and alarm but `DTSTAMP`, `SEQUENCE`, `CREATED`, `LAST-MODIFIED`,
    /// normalized and sorted.
    content: Vec<String>,
}

impl StoredEvent {
    fn read(bytes: &[u8]) -> Result<StoredEvent, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut uid = None;
        let mut sequence = 0u32;
        let mut events = 0;
        let mut content = Vec::new();
        let mut alarm: Option<Vec<String>> = None;
        let mut saw_calendar = false;
        for text in unfold(bytes) {
            let l = parse_line(&text).ok_or_else(|| {
                format!("not an iCalendar content line: {}", support::excerpt(&text))
            })?;
            let top = stack.last().map(String::as_str);
            match l.name.as_str() {
                "BEGIN" => {
                    let c = l.value.trim().to_ascii_uppercase();
                    match (top, c.as_str()) {
                        (None, "VCALENDAR") => saw_calendar = true,
                        (Some("VCALENDAR"), "VEVENT") => events += 1,
                        (Some("VEVENT"), "VALARM") => alarm = Some(Vec::new()),
                        _ => {}
                    }
                    stack.push(c);
                }
                "END" => {
                    let c = l.value.trim().to_ascii_uppercase();
                    if stack.pop().as_deref() != Some(c.as_str()) {
                        return Err(format!("`END:{c}` does not close the open component"));
                    }
                    if c == "VALARM" && stack.last().map(String::as_str) == Some("VEVENT") {
                        if let Some(mut a) = alarm.take() {
                            a.sort();
                            content.push(format!("VALARM[{}]", a.join("|")));
                        }
                    }
                }
                _ => match top {
                    Some("VEVENT") => match l.name.as_str() {
                        "UID" => uid = Some(unescape_text(l.value.trim())),
                        "SEQUENCE" => {
                            let n =
                                l.value.trim().parse::<u32>().map_err(|_| {
                                    format!("`SEQUENCE:{}` is not a number", l.value)
                                })?;
                            sequence = sequence.max(n);
                        }
                        "DTSTAMP" | "CREATED" | "LAST-MODIFIED" => {}
                        _ => content.push(normalized(&l)),
                    },
                    Some("VALARM") => {
                        if let Some(a) = alarm.as_mut() {
                            a.push(normalized(&l));
                        }
                    }
                    _ => {}
                },
            }
        }
        if !saw_calendar || !stack.is_empty() {
            return Err("not a complete VCALENDAR".to_string());
        }
        if events == 0 {
            return Err("the calendar holds no VEVENT".to_string());
        }
        content.sort();
        Ok(StoredEvent {
            uid,
            sequence,
            content,
        })
    }
}

/// The name of an event's resource in the collection: the UID when it is made of safe
/// characters, else a hash of it (a UID may hold `/`, `:` or spaces that a path cannot).
pub fn resource_name(uid: &str) -> String {
    let safe = uid.len() <= 200
        && !uid.starts_with('.')
        && !uid.is_empty()
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if safe {
        format!("{uid}.ics")
    } else {
        use sha2::Digest as _;
        let h = hex::encode(sha2::Sha256::digest(uid.as_bytes()));
        format!("dossier-{}.ics", h.get(..40).unwrap_or(&h))
    }
}

// ---------------------------------------------------------------------------------------------
// The connector.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    invitation: Value,
}

pub struct CalendarConnector {
    name: String,
    collection: url::Url,
    auth: Option<support::Account>,
    client: reqwest::Client,
}

pub fn build(
    name: &str,
    settings: serde_yaml_ng::Value,
    ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, BuildError> {
    let cfg: Config = crate::config::settings(settings)?;
    let collection = support::parse_base_url("url", &cfg.url)?;
    if collection.query().is_some() || collection.fragment().is_some() {
        return Err(BuildError::new(
            "url",
            format!("`{}` has a query or a fragment", cfg.url),
            "give the calendar collection's URL, such as https://agenda.exemple.ci/dossier/visites/",
        ));
    }
    let auth = ctx.account(
        cfg.username.as_deref(),
        cfg.password_env.as_deref(),
        "the CalDAV account",
    )?;
    let timeout = support::timeout(
        cfg.timeout_seconds,
        "give the seconds to wait for the server, such as 20",
    )?;
    Ok(Arc::new(CalendarConnector {
        name: name.to_string(),
        collection,
        auth,
        client: support::http_client(timeout)?,
    }))
}

/// A server's answer, once 401/403 and transient statuses are sorted out.
struct Answer {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        support::excerpt(&String::from_utf8_lossy(&self.body))
    }
}

enum Precondition {
    /// `If-None-Match: *`: create only.
    Absent,
    /// `If-Match: <etag>`: replace only that version.
    Matches(String),
}

impl CalendarConnector {
    fn service(&self) -> String {
        format!("calendar `{}`", self.name)
    }

    fn permanent(&self, m: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Permanent(format!("{}: {m}", self.service()))
    }

    fn transient(&self, m: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Transient(format!("{}: {m}", self.service()))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &url::Url,
        effect: &EffectRequest,
        precondition: Option<&Precondition>,
        body: Option<String>,
    ) -> Result<Answer, ConnectorError> {
        let service = self.service();
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .header("idempotency-key", &effect.idempotency_key);
        if let Some(a) = &self.auth {
            req = req.basic_auth(&a.username, Some(&a.password));
        }
        match precondition {
            Some(Precondition::Absent) => req = req.header("if-none-match", "*"),
            Some(Precondition::Matches(etag)) => req = req.header("if-match", etag.as_str()),
            None => {}
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "text/calendar; charset=utf-8")
                .body(b);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| support::transport_error(&service, &e))?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read at most one byte past the largest resource: a server streaming without end
        // would otherwise fill the memory until the timeout.
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| support::transport_error(&service, &e))?
        {
            let take = (MAX_RESOURCE + 1)
                .saturating_sub(body.len())
                .min(chunk.len());
            body.extend_from_slice(chunk.get(..take).unwrap_or_default());
            if body.len() > MAX_RESOURCE {
                break;
            }
        }
        let answer = Answer { status, etag, body };
        if status == 401 || status == 403 {
            let account = match &self.auth {
                Some(a) => format!(
                    "check `username` ({}), the password in `{}` and the account's rights on {}",
                    a.username, a.password_env, self.collection
                ),
                None => "the server wants credentials: set `username` and `password_env`".into(),
            };
            return Err(self.permanent(format!(
                "{method} {url}: HTTP {status} (refused): {account}"
            )));
        }
        if support::status_is_transient(status) {
            return Err(self.transient(format!("{method} {url}: HTTP {status}: {}", answer.text())));
        }
        Ok(answer)
    }

    async fn put(
        &self,
        url: &url::Url,
        effect: &EffectRequest,
        precondition: Precondition,
        ics: String,
    ) -> Result<Answer, ConnectorError> {
        self.send(
            reqwest::Method::PUT,
            url,
            effect,
            Some(&precondition),
            Some(ics),
        )
        .await
    }

    async fn mkcalendar(&self, effect: &EffectRequest) -> Result<Answer, ConnectorError> {
        let method = reqwest::Method::from_bytes(b"MKCALENDAR")
            .map_err(|e| self.permanent(format!("MKCALENDAR: {e}")))?;
        self.send(method, &self.collection, effect, None, None)
            .await
    }

    /// The stored event at `url` with its ETag; `None` when there is none.
    async fn fetch(
        &self,
        url: &url::Url,
        effect: &EffectRequest,
    ) -> Result<Option<(StoredEvent, String)>, ConnectorError> {
        let a = self
            .send(reqwest::Method::GET, url, effect, None, None)
            .await?;
        match a.status {
            404 | 410 => return Ok(None),
            200 => {}
            s => return Err(self.permanent(format!("GET {url}: HTTP {s}: {}", a.text()))),
        }
        if a.body.len() > MAX_RESOURCE {
            return Err(self.permanent(format!(
                "GET {url}: malformed answer: the resource is larger than {MAX_RESOURCE} bytes"
            )));
        }
        let event = StoredEvent::read(&a.body).map_err(|m| {
            self.permanent(format!(
                "GET {url}: malformed answer (not an iCalendar event): {m}"
            ))
        })?;
        let Some(etag) = a.etag else {
            return Err(self.permanent(format!(
                "GET {url}: malformed answer: no ETag, so the event cannot be updated safely"
            )));
        };
        Ok(Some((event, etag)))
    }

    fn invitation(&self, effect: &EffectRequest) -> Result<Invitation, ConnectorError> {
        let a: Args = support::args(&self.name, effect)?;
        Invitation::parse(&a.invitation).map_err(|m| {
            ConnectorError::Permanent(format!("{}.{}: {m}", self.name, effect.operation))
        })
    }

    fn href(&self, uid: &str) -> Result<url::Url, ConnectorError> {
        let name = resource_name(uid);
        self.collection
            .join(&name)
            .map_err(|e| self.permanent(format!("`{name}` does not make a URL: {e}")))
    }

    fn result(
        inv: &Invitation,
        href: &url::Url,
        etag: Option<String>,
        sequence: u32,
        outcome: &str,
    ) -> Value {
        json!({
            "uid": inv.uid,
            "href": href.as_str(),
            "etag": etag,
            "sequence": sequence,
            "outcome": outcome,
        })
    }

    async fn publish(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let inv = self.invitation(effect)?;
        let href = self.href(&inv.uid)?;
        let stamp = Utc::now();
        // The MKCALENDAR answer, once the collection was found missing.
        let mut made: Option<Answer> = None;
        loop {
            let a = self
                .put(
                    &href,
                    effect,
                    Precondition::Absent,
                    inv.to_stored_ics(stamp),
                )
                .await?;
            match (a.status, &made) {
                (200 | 201 | 204, _) => {
                    return Ok(Self::result(&inv, &href, a.etag, inv.sequence, "created"))
                }
                (412, _) => return self.replace(effect, &inv, &href, stamp, false).await,
                (404 | 409, None) => {
                    let m = self.mkcalendar(effect).await?;
                    // 405 / 409: it exists (made meanwhile) or cannot be made; the PUT tells.
                    if !(200..300).contains(&m.status) && m.status != 405 && m.status != 409 {
                        return Err(self.permanent(format!(
                            "PUT {href}: HTTP {} ({}); creating the collection {} with MKCALENDAR gave HTTP {}: {}",
                            a.status,
                            a.text(),
                            self.collection,
                            m.status,
                            m.text()
                        )));
                    }
                    made = Some(m);
                }
                (404 | 409, Some(m)) => {
                    return Err(self.permanent(format!(
                        "PUT {href}: HTTP {}: {} (MKCALENDAR {} answered HTTP {}: {}); check that `url` is a calendar collection whose parent exists, and that no other resource holds the UID",
                        a.status,
                        a.text(),
                        self.collection,
                        m.status,
                        m.text()
                    )))
                }
                (s, _) => {
                    return Err(self.permanent(format!("PUT {href}: HTTP {s}: {}", a.text())))
                }
            }
        }
    }

    async fn cancel(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let mut inv = self.invitation(effect)?;
        inv.status = Some(Status::Cancelled);
        let href = self.href(&inv.uid)?;
        self.replace(effect, &inv, &href, Utc::now(), true).await
    }

    /// Replaces the stored event with `inv` unless it already says the same.
    async fn replace(
        &self,
        effect: &EffectRequest,
        inv: &Invitation,
        href: &url::Url,
        stamp: DateTime<Utc>,
        cancelling: bool,
    ) -> Result<Value, ConnectorError> {
        let Some((stored, etag)) = self.fetch(href, effect).await? else {
            return Err(if cancelling {
                self.permanent(format!(
                    "cannot cancel the event `{}`: the calendar holds no such event ({href}); was it published?",
                    inv.uid
                ))
            } else {
                self.transient(format!(
                    "{href} existed at the PUT and was gone at the GET (deleted meanwhile)"
                ))
            });
        };
        if let Some(u) = &stored.uid {
            if u != &inv.uid {
                return Err(self.permanent(format!(
                    "malformed answer: {href} holds the event `{u}`, not `{}`",
                    inv.uid
                )));
            }
        }
        let wanted = StoredEvent::read(inv.to_stored_ics(stamp).as_bytes())
            .map_err(|m| self.permanent(format!("internal: unreadable event: {m}")))?;
        let done = if cancelling { "cancelled" } else { "unchanged" };
        if wanted.content == stored.content && stored.sequence >= inv.sequence {
            return Ok(Self::result(inv, href, Some(etag), stored.sequence, done));
        }
        let mut next = inv.clone();
        next.sequence = inv.sequence.max(stored.sequence.saturating_add(1));
        let a = self
            .put(
                href,
                effect,
                Precondition::Matches(etag),
                next.to_stored_ics(stamp),
            )
            .await?;
        match a.status {
            200 | 201 | 204 => Ok(Self::result(
                inv,
                href,
                a.etag,
                next.sequence,
                if cancelling { "cancelled" } else { "updated" },
            )),
            412 => Err(self.transient(format!(
                "PUT {href}: HTTP 412: the event changed since it was read; a retry reads it again"
            ))),
            s => Err(self.permanent(format!("PUT {href}: HTTP {s}: {}", a.text()))),
        }
    }
}

#[async_trait]
impl Connector for CalendarConnector {
    fn operations(&self) -> Vec<String> {
        vec!["publish".into(), "cancel".into()]
    }

    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        match effect.operation.as_str() {
            "publish" => self.publish(effect).await,
            "cancel" => self.cancel(effect).await,
            other => {
                Err(self.permanent(format!("no operation `{other}` (it has: publish, cancel)")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use expect_test::expect;

    fn stamp() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap()
    }

    fn visit() -> Value {
        json!({
            "uid": "visite-D-2025-0042@dossier.exemple.ci",
            "summary": "Visite technique, lot 12; bâtiment B",
            "description": "Apporter le dossier\net les plans.",
            "location": "Abidjan, Cocody",
            "start": "2025-03-14T09:30:00+00:00",
            "end": "2025-03-14T10:30:00+00:00",
            "organizer": {"name": "Service technique", "email": "technique@exemple.ci"},
            "attendees": [
                {"name": "Koné, Awa", "email": "awa.kone@exemple.ci"},
                {"email": "mailto:expert@exemple.ci", "role": "opt-participant", "rsvp": false}
            ],
            "alarms": ["PT15M", "PT24H"]
        })
    }

    fn parse_ical(text: &str) -> ical::parser::ical::component::IcalCalendar {
        let mut cals = ical::IcalParser::new(std::io::BufReader::new(text.as_bytes()));
        let cal = cals.next().expect("one calendar").expect("parses");
        assert!(cals.next().is_none());
        cal
    }

    fn prop<'a>(props: &'a [ical::property::Property], name: &str) -> Option<&'a str> {
        props
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.value.as_deref())
    }

    #[test]
    fn request_snapshot() {
        let inv = Invitation::parse(&visit()).unwrap();
        let ics = inv.to_ics(Method::Request, stamp());
        assert!(ics.lines().all(|l| l.len() <= 75));
        assert!(
            !ics.replace("\r\n", "").contains('\n'),
            "every line ends with CRLF"
        );
        expect![[r#"
            BEGIN:VCALENDAR
            PRODID:-//Dossier//Dossier invitations//FR
            VERSION:2.0
            CALSCALE:GREGORIAN
            METHOD:REQUEST
            BEGIN:VEVENT
            UID:visite-D-2025-0042@dossier.exemple.ci
            DTSTAMP:20250301T080000Z
            SEQUENCE:0
            DTSTART:20250314T093000Z
            DTEND:20250314T103000Z
            SUMMARY:Visite technique\, lot 12\; bâtiment B
            DESCRIPTION:Apporter le dossier\net les plans.
            LOCATION:Abidjan\, Cocody
            ORGANIZER;CN=Service technique:mailto:technique@exemple.ci
            ATTENDEE;CN="Koné, Awa";ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TR
             UE:mailto:awa.kone@exemple.ci
            ATTENDEE;ROLE=OPT-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=FALSE:mailto:exper
             t@exemple.ci
            BEGIN:VALARM
            TRIGGER:-PT15M
            ACTION:DISPLAY
            DESCRIPTION:Rappel : Visite technique\, lot 12\; bâtiment B
            END:VALARM
            BEGIN:VALARM
            TRIGGER:-P1D
            ACTION:DISPLAY
            DESCRIPTION:Rappel : Visite technique\, lot 12\; bâtiment B
            END:VALARM
            END:VEVENT
            END:VCALENDAR
        "#]]
        .assert_eq(&ics.replace("\r\n", "\n"));

        // What a calendar program reads.
        let cal = parse_ical(&ics);
        assert_eq!(prop(&cal.properties, "METHOD"), Some("REQUEST"));
        let ev = &cal.events[0];
        assert_eq!(
            prop(&ev.properties, "UID"),
            Some("visite-D-2025-0042@dossier.exemple.ci")
        );
        assert_eq!(
            prop(&ev.properties, "SUMMARY"),
            Some("Visite technique\\, lot 12\\; bâtiment B")
        );
        let attendee = ev.properties.iter().find(|p| p.name == "ATTENDEE").unwrap();
        assert_eq!(
            attendee.value.as_deref(),
            Some("mailto:awa.kone@exemple.ci")
        );
        let params = attendee.params.as_ref().unwrap();
        assert!(
            params.contains(&("CN".into(), vec!["Koné, Awa".into()])),
            "{params:?}"
        );
        assert!(params.contains(&("RSVP".into(), vec!["TRUE".into()])));
        assert_eq!(ev.alarms.len(), 2);
        assert_eq!(prop(&ev.alarms[1].properties, "TRIGGER"), Some("-P1D"));
    }

    #[test]
    fn cancel_and_stored_forms() {
        let mut inv = Invitation::parse(&visit()).unwrap();
        inv.sequence = 2;
        let ics = inv.to_ics(Method::Cancel, stamp());
        let cal = parse_ical(&ics);
        assert_eq!(prop(&cal.properties, "METHOD"), Some("CANCEL"));
        let ev = &cal.events[0];
        assert_eq!(prop(&ev.properties, "STATUS"), Some("CANCELLED"));
        assert_eq!(prop(&ev.properties, "SEQUENCE"), Some("2"));
        assert!(ev.alarms.is_empty(), "a cancellation rings no reminder");

        let stored = inv.to_stored_ics(stamp());
        assert!(
            !stored.contains("METHOD"),
            "RFC 4791: no METHOD in a stored object"
        );
        let cal = parse_ical(&stored);
        assert_eq!(prop(&cal.properties, "METHOD"), None);
        assert_eq!(cal.events[0].alarms.len(), 2);
        assert_eq!(prop(&cal.events[0].properties, "STATUS"), None);
    }

    #[test]
    fn folding_never_splits_a_character() {
        // 74 ASCII octets, then "é" (2 octets) straddles the 75th.
        let line = format!("DESCRIPTION:{}é{}", "a".repeat(62), "b".repeat(200));
        let mut out = String::new();
        fold_line(&line, &mut out);
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines[0].len(), 74, "the é moves to the next line");
        assert!(lines[1].starts_with(" é"));
        for l in &lines {
            assert!(l.len() <= 75, "{l:?}");
        }
        assert_eq!(lines.last(), Some(&""), "ends with CRLF");
        let unfolded = out.replace("\r\n ", "");
        assert_eq!(unfolded, format!("{line}\r\n"));

        // A blank where the fold falls goes to the next line: some readers strip line ends.
        let mut out = String::new();
        fold_line(&format!("SUMMARY:{} suite", "a".repeat(66)), &mut out);
        assert_eq!(out, format!("SUMMARY:{}\r\n  suite\r\n", "a".repeat(66)));

        // Exactly 75 octets: not folded.
        let mut out = String::new();
        fold_line(&"x".repeat(75), &mut out);
        assert_eq!(out, format!("{}\r\n", "x".repeat(75)));
        let mut out = String::new();
        fold_line(&"x".repeat(76), &mut out);
        assert_eq!(out, format!("{}\r\n x\r\n", "x".repeat(75)));
    }

    #[test]
    fn long_french_description_folds_and_reads_back() {
        let description = "Rendez-vous à l'agence d'Abidjan-Plateau : présentez-vous à l'accueil, \
            muni de votre pièce d'identité; le conseiller vérifiera l'échéancier, les pénalités \
            éventuelles et la quittance. Merci de prévenir en cas d'empêchement.\n\
            Élément suivant : « signature » du contrat — après vérification.";
        let mut v = visit();
        v["description"] = json!(description);
        let inv = Invitation::parse(&v).unwrap();
        let ics = inv.to_ics(Method::Request, stamp());
        let mut folded_inside_a_word = false;
        for l in ics.split("\r\n") {
            assert!(l.len() <= 75, "{} octets: {l:?}", l.len());
            folded_inside_a_word |= l.starts_with(' ') && !l.starts_with("  ");
        }
        assert!(folded_inside_a_word);
        let cal = parse_ical(&ics);
        let got = prop(&cal.events[0].properties, "DESCRIPTION").unwrap();
        assert_eq!(unescape_text(got), description);
        // Every fold point of this text, moved one character at a time, stays valid UTF-8.
        for shift in 0..8 {
            let mut v = visit();
            v["description"] = json!(format!("{}{description}", "é".repeat(shift)));
            let ics = Invitation::parse(&v)
                .unwrap()
                .to_ics(Method::Request, stamp());
            let cal = parse_ical(&ics);
            let got = prop(&cal.events[0].properties, "DESCRIPTION").unwrap();
            assert_eq!(
                unescape_text(got),
                format!("{}{description}", "é".repeat(shift))
            );
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_text("a\\b;c,d\r\ne\rf\ng\u{7}h\ti"),
            "a\\\\b\\;c\\,d\\ne\\nf\\ng".to_string() + "h\ti"
        );
        assert_eq!(unescape_text("a\\\\b\\;c\\,d\\ne\\Nf"), "a\\b;c,d\ne\nf");
        assert_eq!(param_value("Awa Koné"), "Awa Koné");
        assert_eq!(param_value("Koné, Awa"), "\"Koné, Awa\"");
        assert_eq!(param_value("Dr: \"Awa\"\nK"), "\"Dr: 'Awa' K\"");
    }

    #[test]
    fn step_arguments_cannot_add_properties() {
        let mut v = visit();
        v["summary"] = json!("Visite\r\nATTENDEE:mailto:espion@ailleurs.ci");
        v["location"] = json!("Cocody\nX-INJECTED:1");
        v["description"] = json!("a\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:autre");
        v["organizer"]["name"] =
            json!("Service\r\nX-INJECTED:2;\"CN=x\":mailto:espion@ailleurs.ci");
        v["attendees"][0]["name"] = json!("Awa\"\r\nX-INJECTED:3");
        let inv = Invitation::parse(&v).unwrap();
        let ics = inv.to_ics(Method::Request, stamp());
        for line in ics.split("\r\n") {
            assert!(
                !line.starts_with("X-INJECTED") && !line.starts_with("ATTENDEE:mailto:espion"),
                "{line:?} in:\n{ics}"
            );
        }
        let cal = parse_ical(&ics);
        assert_eq!(cal.events.len(), 1);
        let ev = &cal.events[0];
        assert_eq!(
            ev.properties
                .iter()
                .filter(|p| p.name == "ATTENDEE")
                .count(),
            2
        );
        assert_eq!(
            prop(&ev.properties, "UID"),
            Some("visite-D-2025-0042@dossier.exemple.ci")
        );
        let organizer = ev
            .properties
            .iter()
            .find(|p| p.name == "ORGANIZER")
            .unwrap();
        assert_eq!(
            organizer.value.as_deref(),
            Some("mailto:technique@exemple.ci")
        );
        // An address with a line break or a parameter is refused outright.
        for bad in ["a@b.ci\r\nX-INJECTED:4", "a@b.ci;RSVP=TRUE", "a@b.ci:x"] {
            let mut v = visit();
            v["attendees"][0]["email"] = json!(bad);
            let e = Invitation::parse(&v).unwrap_err();
            assert!(e.contains("is not an email address"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn invalid_invitations_say_what_to_fix() {
        let cases = [
            json!({"uid": "x"}),
            {
                let mut v = visit();
                v["end"] = json!("2025-03-14T09:00:00+00:00");
                v
            },
            {
                let mut v = visit();
                v["start"] = json!("14/03/2025 09:30");
                v
            },
            {
                let mut v = visit();
                v["alarms"] = json!(["P1M"]);
                v
            },
            {
                let mut v = visit();
                v["alarms"] = json!(["15 minutes"]);
                v
            },
            {
                let mut v = visit();
                v["attendees"] = json!([{"email": "pas une adresse"}]);
                v
            },
            {
                let mut v = visit();
                v["attendees"] = json!([{"email": "a@b.ci", "role": "boss"}]);
                v
            },
            {
                let mut v = visit();
                v["titre"] = json!("x");
                v
            },
            {
                let mut v = visit();
                v["status"] = json!("done");
                v
            },
            {
                let mut v = visit();
                v["sequence"] = json!(-1);
                v
            },
            {
                let mut v = visit();
                v["uid"] = json!(" ");
                v
            },
        ];
        let out: Vec<String> = cases
            .iter()
            .map(|c| Invitation::parse(c).unwrap_err())
            .collect();
        expect![[r#"
            invalid invitation: missing field `summary`
            invalid invitation: `end` (2025-03-14T09:00:00+00:00) must be after `start` (2025-03-14T09:30:00+00:00)
            invalid invitation: `start`: `14/03/2025 09:30` is not an RFC 3339 date-time with an offset; write it as 2025-03-14T09:30:00+00:00 (or with Z for UTC)
            invalid invitation: `alarms`: `P1M` uses years or months, which a reminder cannot: give weeks, days, hours or minutes (P1D, PT15M)
            invalid invitation: `alarms`: `15 minutes` is not an ISO 8601 duration: it must start with P (P7D, PT2H)
            invalid invitation: `attendees[0].email`: `pas une adresse` is not an email address (write it as nom@exemple.ci)
            invalid invitation: `attendees[0].role`: `boss` is not a role (CHAIR, REQ-PARTICIPANT, OPT-PARTICIPANT, NON-PARTICIPANT)
            invalid invitation: unknown field `titre`, expected one of `uid`, `sequence`, `summary`, `description`, `location`, `start`, `end`, `organizer`, `attendees`, `alarms`, `status`
            invalid invitation: `status`: `done` is not an event status (TENTATIVE, CONFIRMED, CANCELLED)
            invalid invitation: `sequence`: -1 is not a whole number from 0
            invalid invitation: `uid`: ` ` must be 1 to 255 characters without control characters (a stable id such as visite-{case id}@exemple.ci)"#]]
        .assert_eq(&out.join("\n"));
    }

    #[test]
    fn defaults_and_templated_values() {
        let mut v = visit();
        v["sequence"] = json!("3");
        assert_eq!(whole("2.00"), Some(2));
        assert_eq!(whole("2.5"), None);
        assert_eq!(whole("-1"), None);
        v["description"] = json!("  ");
        v["start"] = json!("2025-03-14T11:30:00.250+02:00");
        let inv = Invitation::parse(&v).unwrap();
        assert_eq!(inv.sequence, 3);
        assert_eq!(inv.description, None);
        assert_eq!(
            inv.start,
            Utc.with_ymd_and_hms(2025, 3, 14, 9, 30, 0).unwrap()
        );
        assert_eq!(inv.attendees[0].role, Role::ReqParticipant);
        assert!(inv.attendees[0].rsvp);
        assert_eq!(inv.attendees[1].email, "expert@exemple.ci");
        assert_eq!(inv.alarms, vec![900, 86_400]);
    }

    #[test]
    fn a_reserialized_event_is_the_same_event() {
        let inv = Invitation::parse(&visit()).unwrap();
        let mine = StoredEvent::read(inv.to_stored_ics(stamp()).as_bytes()).unwrap();
        // What a server may store instead: other order, quoting, folding, LF ends, DTSTAMP,
        // durations, parameter order.
        let theirs = "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//Dossier//Dossier invitations//FR\n\
            CALSCALE:GREGORIAN\nBEGIN:VEVENT\nUID:visite-D-2025-0042@dossier.exemple.ci\n\
            ATTENDEE;CN=\"Koné, Awa\";PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT;RSVP=TR\n UE:\n mailto:awa.kone@exemple.ci\n\
            ATTENDEE;PARTSTAT=NEEDS-ACTION;ROLE=OPT-PARTICIPANT;RSVP=FALSE:MAILTO:expert@exemple.ci\n\
            DESCRIPTION:Apporter le dossier\\Net les plans.\nDTEND:20250314T103000Z\n\
            DTSTAMP:20250309T120000Z\nDTSTART:20250314T093000Z\nLOCATION:Abidjan\\, Cocody\n\
            ORGANIZER;CN=\"Service technique\":mailto:technique@exemple.ci\nSEQUENCE:4\n\
            SUMMARY:Visite technique\\, lot 12\\; bâtiment B\n\
            BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:Rappel : Visite technique\\, lot 12\\; bâtiment B\nTRIGGER;VALUE=DURATION:-PT24H\nEND:VALARM\n\
            BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:Rappel : Visite technique\\, lot 12\\; bâtiment B\nTRIGGER:-PT15M\nEND:VALARM\n\
            END:VEVENT\nEND:VCALENDAR\n";
        let theirs = StoredEvent::read(format!("\u{feff}{theirs}").as_bytes()).unwrap();
        assert_eq!(theirs.sequence, 4);
        assert_eq!(theirs.uid.as_deref(), Some(inv.uid.as_str()));
        assert_eq!(mine.content, theirs.content);

        let mut moved = inv.clone();
        moved.start = Utc.with_ymd_and_hms(2025, 3, 14, 9, 0, 0).unwrap();
        let moved = StoredEvent::read(moved.to_stored_ics(stamp()).as_bytes()).unwrap();
        assert_ne!(moved.content, mine.content);
        let mut cancelled = inv.clone();
        cancelled.status = Some(Status::Cancelled);
        let cancelled = StoredEvent::read(cancelled.to_stored_ics(stamp()).as_bytes()).unwrap();
        assert_ne!(cancelled.content, mine.content);
    }

    #[test]
    fn unreadable_resources_are_reported() {
        let errs: Vec<String> = [
            "hello",
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n",
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSEQUENCE:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nEND:VCALENDAR\r\n",
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nATTENDEE;CN=\"x:mailto:a@b\r\n",
        ]
        .iter()
        .map(|t| StoredEvent::read(t.as_bytes()).unwrap_err())
        .collect();
        expect![[r#"
            not an iCalendar content line: hello
            the calendar holds no VEVENT
            `SEQUENCE:x` is not a number
            `END:VCALENDAR` does not close the open component
            not an iCalendar content line: ATTENDEE;CN="x:mailto:a@b"#]]
        .assert_eq(&errs.join("\n"));
    }

    #[test]
    fn resource_names() {
        assert_eq!(
            resource_name("visite-42@dossier.exemple.ci"),
            "visite-42@dossier.exemple.ci.ics"
        );
        let odd = resource_name("visite 42/../x:y");
        assert!(
            odd.starts_with("dossier-") && odd.ends_with(".ics"),
            "{odd}"
        );
        assert_eq!(odd.len(), "dossier-".len() + 40 + 4);
        assert_ne!(resource_name(".hidden"), ".hidden.ics");
    }

    #[test]
    fn settings_are_checked() {
        let env = |k: &str| (k == "PW").then(|| "secret".to_string());
        let ctx = BuildContext {
            env: &env,
            base_dir: "/p".into(),
        };
        let err = |yaml: &str| {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
            match build("agenda", v, &ctx) {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("{}: {} / {}", e.field, e.message, e.hint),
            }
        };
        let out = [
            err(
                "url: http://127.0.0.1:5232/dossier/visites\nusername: dossier\npassword_env: PW\n",
            ),
            err("url: http://127.0.0.1:5232/dossier/visites/\nusername: dossier\n"),
            err("url: http://127.0.0.1:5232/x/\npassword_env: PW\n"),
            err("url: http://127.0.0.1:5232/x/\nusername: d\npassword_env: NOPE\n"),
            err("url: http://u:p@127.0.0.1:5232/x/\n"),
            err("url: ftp://127.0.0.1/x/\n"),
            err("url: http://127.0.0.1/x/\ntimeout_seconds: 0\n"),
            err("url: http://127.0.0.1/x/\npasword_env: PW\n"),
        ];
        expect![[r#"
            ok
            username: `username` is set without `password_env` / add `password_env:` with the name of the environment variable holding the password
            password_env: `password_env` is set without `username` / add `username:` (the CalDAV account)
            password_env: the environment variable `NOPE` is not set / export NOPE=… before starting Dossier; secrets never go in this file
            url: the URL carries credentials (user:password@) / remove them: secrets go in environment variables named by the `*_env` settings
            url: `ftp://127.0.0.1/x/` is not an http or https URL / write it as https://host/path
            timeout_seconds: `timeout_seconds` must be at least 1 / give the seconds to wait for the server, such as 20
            pasword_env: unknown field `pasword_env`, expected one of `url`, `username`, `password_env`, `timeout_seconds` / "#]]
        .assert_eq(&out.join("\n"));
    }
}
