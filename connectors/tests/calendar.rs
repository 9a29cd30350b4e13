//! The `calendar` connector against a real CalDAV server (Radicale, started here on a free
//! loopback port with its storage in a temporary folder), and against a local axum stub for
//! the exact requests and the answers Radicale cannot be made to give (a concurrent change,
//! a 5xx, a garbled resource).

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use dossier_connectors::{ConnectorError, EffectRequest, Registry};
use ical::parser::ical::component::{IcalCalendar, IcalEvent};
use ical::property::Property;
use serde_json::{json, Value};
use support::servers::Radicale;
use support::{free_port, Hit, Reply, Stub};

const USER: &str = "dossier";
const PASSWORD: &str = "Mot-de-passe 2025";

fn registry(yaml: &str, env: &[(&str, &str)]) -> Registry {
    support::load(yaml, env, Path::new("/")).unwrap_or_else(|e| panic!("{e}"))
}

fn agenda(url: &str, password: &str) -> Registry {
    registry(
        &format!(
            "connectors:\n  agenda:\n    type: calendar\n    url: {url}\n    username: {USER}\n    password_env: AGENDA_PASSWORD\n    timeout_seconds: 5\n"
        ),
        &[("AGENDA_PASSWORD", password)],
    )
}

fn effect(operation: &str, n: u32, invitation: Value) -> EffectRequest {
    EffectRequest {
        idempotency_key: format!("D-2025-0042:visite#{n}"),
        case_id: "D-2025-0042".into(),
        step: "visite".into(),
        operation: operation.into(),
        request: json!({ "invitation": invitation }),
        attempt: 1,
        redelivered: false,
    }
}

fn visit(start: &str, end: &str) -> Value {
    json!({
        "uid": "visite-D-2025-0042@dossier.exemple.ci",
        "summary": "Visite technique — lot 12, bâtiment B",
        "description": "Merci de vous présenter à l'accueil; apportez les plans.",
        "location": "Abidjan, Cocody",
        "start": start,
        "end": end,
        "organizer": {"name": "Service technique", "email": "technique@exemple.ci"},
        "attendees": [
            {"name": "Koné, Awa", "email": "awa.kone@exemple.ci"},
            {"email": "expert@exemple.ci", "role": "OPT-PARTICIPANT", "rsvp": false}
        ],
        "alarms": ["PT15M", "P1D"]
    })
}

/// GETs a resource as the account, returning its ETag and text.
async fn fetch(url: &str) -> (reqwest::StatusCode, Option<String>, String) {
    let r = reqwest::Client::new()
        .get(url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status(), etag, r.text().await.unwrap())
}

fn parse_ical(text: &str) -> IcalCalendar {
    let mut cals = ical::IcalParser::new(std::io::BufReader::new(text.as_bytes()));
    let cal = cals
        .next()
        .expect("one calendar")
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(cals.next().is_none(), "{text}");
    cal
}

fn the_event(cal: &IcalCalendar) -> &IcalEvent {
    assert_eq!(cal.events.len(), 1);
    &cal.events[0]
}

fn value<'a>(props: &'a [Property], name: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.value.as_deref())
}

fn param<'a>(p: &'a Property, name: &str) -> Option<&'a str> {
    p.params
        .as_ref()?
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

/// The `.ics` resources of a collection, by PROPFIND, and whether it is a calendar.
async fn list(collection: &str) -> (bool, Vec<String>) {
    let r = reqwest::Client::new()
        .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), collection)
        .basic_auth(USER, Some(PASSWORD))
        .header("depth", "1")
        .header("content-type", "application/xml")
        .body(r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 207);
    let xml = r.text().await.unwrap();
    let is_calendar = xml.contains("calendar xmlns") || xml.contains(":calendar");
    let hrefs = xml
        .split("href>")
        .filter_map(|s| s.strip_suffix("</D:").or_else(|| s.strip_suffix("</")))
        .filter(|h| h.ends_with(".ics"))
        .map(str::to_string)
        .collect();
    (is_calendar, hrefs)
}

#[tokio::test]
async fn publish_reschedule_and_cancel_on_radicale() {
    let server = Radicale::start(USER, PASSWORD);
    let collection = format!("{}/{USER}/visites/", server.base);
    let reg = agenda(&collection, PASSWORD);
    let href = format!("{collection}visite-D-2025-0042@dossier.exemple.ci.ics");

    // Created, with the collection made on first use.
    let first = visit("2025-03-14T09:30:00+00:00", "2025-03-14T10:30:00+00:00");
    let created = reg
        .call("agenda", &effect("publish", 1, first.clone()))
        .await
        .unwrap();
    assert_eq!(created["outcome"], "created");
    assert_eq!(created["sequence"], 0);
    assert_eq!(created["uid"], "visite-D-2025-0042@dossier.exemple.ci");
    assert_eq!(created["href"], href.as_str());
    let (is_calendar, hrefs) = list(&collection).await;
    assert!(is_calendar, "MKCALENDAR made a calendar collection");
    assert_eq!(hrefs.len(), 1, "{hrefs:?}");

    let (status, etag, text) = fetch(&href).await;
    assert_eq!(status, 200);
    assert_eq!(
        etag.as_deref(),
        created["etag"].as_str(),
        "the answer's ETag is the server's"
    );
    let cal = parse_ical(&text);
    assert_eq!(
        value(&cal.properties, "METHOD"),
        None,
        "RFC 4791: no METHOD"
    );
    let ev = the_event(&cal);
    assert_eq!(
        value(&ev.properties, "UID"),
        Some("visite-D-2025-0042@dossier.exemple.ci")
    );
    assert_eq!(value(&ev.properties, "SEQUENCE"), Some("0"));
    assert_eq!(value(&ev.properties, "DTSTART"), Some("20250314T093000Z"));
    let organizer = ev
        .properties
        .iter()
        .find(|p| p.name == "ORGANIZER")
        .unwrap();
    assert_eq!(
        organizer.value.as_deref(),
        Some("mailto:technique@exemple.ci")
    );
    assert_eq!(param(organizer, "CN"), Some("Service technique"));
    let attendees: Vec<&Property> = ev
        .properties
        .iter()
        .filter(|p| p.name == "ATTENDEE")
        .collect();
    assert_eq!(attendees.len(), 2);
    assert_eq!(
        attendees[0].value.as_deref(),
        Some("mailto:awa.kone@exemple.ci")
    );
    assert_eq!(param(attendees[0], "ROLE"), Some("REQ-PARTICIPANT"));
    assert_eq!(param(attendees[0], "PARTSTAT"), Some("NEEDS-ACTION"));
    assert_eq!(param(attendees[0], "RSVP"), Some("TRUE"));
    assert_eq!(param(attendees[1], "ROLE"), Some("OPT-PARTICIPANT"));
    assert_eq!(param(attendees[1], "RSVP"), Some("FALSE"));
    assert_eq!(ev.alarms.len(), 2);
    let triggers: Vec<&str> = ev
        .alarms
        .iter()
        .map(|a| value(&a.properties, "TRIGGER").unwrap())
        .collect();
    assert_eq!(triggers, ["-PT15M", "-P1D"]);
    assert_eq!(value(&ev.alarms[0].properties, "ACTION"), Some("DISPLAY"));

    // The same publish again (a replay after a crash): nothing written. A second later, so
    // that its DTSTAMP differs from the stored one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = reg
        .call("agenda", &effect("publish", 1, first.clone()))
        .await
        .unwrap();
    assert_eq!(again["outcome"], "unchanged");
    assert_eq!(again["etag"], created["etag"]);
    assert_eq!(again["sequence"], 0);
    let (_, etag_after, text_after) = fetch(&href).await;
    assert_eq!(etag_after, etag);
    assert_eq!(
        text_after, text,
        "the stored event (its DTSTAMP too) is untouched"
    );

    // Rescheduled: same UID and resource, SEQUENCE raised, new start.
    let moved = visit("2025-03-17T14:00:00+02:00", "2025-03-17T15:00:00+02:00");
    let updated = reg
        .call("agenda", &effect("publish", 2, moved.clone()))
        .await
        .unwrap();
    assert_eq!(updated["outcome"], "updated");
    assert_eq!(updated["sequence"], 1);
    assert_ne!(updated["etag"], created["etag"]);
    let (_, etag, text) = fetch(&href).await;
    assert_eq!(etag.as_deref(), updated["etag"].as_str());
    let cal = parse_ical(&text);
    let ev = the_event(&cal);
    assert_eq!(
        value(&ev.properties, "UID"),
        Some("visite-D-2025-0042@dossier.exemple.ci")
    );
    assert_eq!(value(&ev.properties, "SEQUENCE"), Some("1"));
    assert_eq!(value(&ev.properties, "DTSTART"), Some("20250317T120000Z"));
    assert_eq!(list(&collection).await.1.len(), 1, "still one event");
    // Its replay is unchanged too, at SEQUENCE 1 although the step says nothing of it.
    let replay = reg
        .call("agenda", &effect("publish", 2, moved.clone()))
        .await
        .unwrap();
    assert_eq!(replay["outcome"], "unchanged");
    assert_eq!(replay["sequence"], 1);
    assert_eq!(replay["etag"], updated["etag"]);

    // Cancelled: STATUS:CANCELLED, SEQUENCE 2, no reminder left.
    let cancelled = reg
        .call("agenda", &effect("cancel", 3, moved.clone()))
        .await
        .unwrap();
    assert_eq!(cancelled["outcome"], "cancelled");
    assert_eq!(cancelled["sequence"], 2);
    let (_, etag, text) = fetch(&href).await;
    assert_eq!(etag.as_deref(), cancelled["etag"].as_str());
    let cal = parse_ical(&text);
    let ev = the_event(&cal);
    assert_eq!(value(&ev.properties, "STATUS"), Some("CANCELLED"));
    assert_eq!(value(&ev.properties, "SEQUENCE"), Some("2"));
    assert!(ev.alarms.is_empty());
    // Cancelling again writes nothing.
    let again = reg
        .call("agenda", &effect("cancel", 3, moved.clone()))
        .await
        .unwrap();
    assert_eq!(again["outcome"], "cancelled");
    assert_eq!(again["sequence"], 2);
    assert_eq!(again["etag"], cancelled["etag"]);
    assert_eq!(fetch(&href).await.2, text);

    // Published again with a sequence of its own above the stored one: that one is kept.
    let mut revived = first.clone();
    revived["sequence"] = json!(7);
    let r = reg
        .call("agenda", &effect("publish", 4, revived))
        .await
        .unwrap();
    assert_eq!(r["outcome"], "updated");
    assert_eq!(r["sequence"], 7);
    let cal = parse_ical(&fetch(&href).await.2);
    let ev = the_event(&cal);
    assert_eq!(value(&ev.properties, "SEQUENCE"), Some("7"));
    assert_eq!(value(&ev.properties, "STATUS"), None);
    assert_eq!(ev.alarms.len(), 2);
}

#[tokio::test]
async fn refusals_and_missing_events_on_radicale() {
    let server = Radicale::start(USER, PASSWORD);
    let collection = format!("{}/{USER}/visites/", server.base);
    let inv = visit("2025-03-14T09:30:00+00:00", "2025-03-14T10:30:00+00:00");

    // Wrong password: permanent, with what to check.
    let wrong = agenda(&collection, "pas le bon");
    let e = wrong
        .call("agenda", &effect("publish", 1, inv.clone()))
        .await
        .unwrap_err();
    let ConnectorError::Permanent(m) = &e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("HTTP 401") && m.contains("AGENDA_PASSWORD"),
        "{m}"
    );
    assert!(!m.contains("pas le bon"), "no secret in messages: {m}");

    // No credentials at all.
    let anonymous = registry(
        &format!("connectors:\n  agenda:\n    type: calendar\n    url: {collection}\n"),
        &[],
    );
    let e = anonymous
        .call("agenda", &effect("publish", 1, inv.clone()))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e:?}");
    assert!(
        e.to_string().contains("set `username` and `password_env`"),
        "{e}"
    );

    // Another account's space: refused by the rights, permanent.
    let elsewhere = agenda(&format!("{}/quelquun/visites/", server.base), PASSWORD);
    let e = elsewhere
        .call("agenda", &effect("publish", 1, inv.clone()))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e:?}");

    // Cancelling what was never published.
    let reg = agenda(&collection, PASSWORD);
    let e = reg
        .call("agenda", &effect("cancel", 1, inv.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Permanent(format!(
            "calendar `agenda`: cannot cancel the event `visite-D-2025-0042@dossier.exemple.ci`: the calendar holds no such event ({collection}visite-D-2025-0042@dossier.exemple.ci.ics); was it published?"
        ))
    );

    // An invalid invitation never reaches the server.
    let mut bad = inv.clone();
    bad["end"] = json!("2025-03-14T08:00:00+00:00");
    let e = reg
        .call("agenda", &effect("publish", 1, bad))
        .await
        .unwrap_err();
    expect_test::expect!["agenda.publish: invalid invitation: `end` (2025-03-14T08:00:00+00:00) must be after `start` (2025-03-14T09:30:00+00:00)"]
        .assert_eq(&e.to_string());
    let (status, _, _) = fetch(&collection).await;
    assert_eq!(status, 404, "nothing was created");

    // A UID a path cannot hold is stored under a hashed name, and found again.
    let mut odd = inv.clone();
    odd["uid"] = json!("visite 42/B:1");
    let r = reg
        .call("agenda", &effect("publish", 2, odd.clone()))
        .await
        .unwrap();
    assert_eq!(r["outcome"], "created");
    let href = r["href"].as_str().unwrap().to_string();
    assert!(href.starts_with(&format!("{collection}dossier-")), "{href}");
    let cal = parse_ical(&fetch(&href).await.2);
    assert_eq!(
        value(&the_event(&cal).properties, "UID"),
        Some("visite 42/B:1")
    );
    let r = reg
        .call("agenda", &effect("publish", 2, odd))
        .await
        .unwrap();
    assert_eq!(r["outcome"], "unchanged");
}

#[tokio::test]
async fn server_down_is_transient() {
    let port = free_port();
    let reg = agenda(
        &format!("http://127.0.0.1:{port}/{USER}/visites/"),
        PASSWORD,
    );
    let inv = visit("2025-03-14T09:30:00+00:00", "2025-03-14T10:30:00+00:00");
    for op in ["publish", "cancel"] {
        let e = reg
            .call("agenda", &effect(op, 1, inv.clone()))
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        assert!(e.to_string().contains("cannot connect"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// A scripted stub: the exact requests, and answers Radicale does not give on demand.

/// An answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// Answers each request with the next scripted answer (then 500).
async fn stub(script: Vec<Answer>) -> Stub {
    let script = Mutex::new(script.into_iter().rev().collect::<Vec<_>>());
    Stub::start(move |_, _| {
        let (status, headers, body) =
            script
                .lock()
                .unwrap()
                .pop()
                .unwrap_or((500, vec![], "script exhausted".into()));
        Reply {
            status,
            headers,
            body,
            delay: Duration::ZERO,
        }
    })
    .await
}

fn header<'a>(h: &'a Hit, name: &str) -> Option<&'a str> {
    h.headers.get(name).map(|v| v.to_str().unwrap())
}

fn stored_event(sequence: u32, start: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//y//FR\r\nBEGIN:VEVENT\r\nUID:visite-D-2025-0042@dossier.exemple.ci\r\nDTSTAMP:20250101T000000Z\r\nSEQUENCE:{sequence}\r\nDTSTART:{start}\r\nDTEND:20250314T103000Z\r\nSUMMARY:Ancienne visite\r\nORGANIZER:mailto:technique@exemple.ci\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

#[tokio::test]
async fn exact_requests_collection_creation_and_replacement() {
    let server = stub(vec![
        (409, vec![], "no collection".into()),
        (201, vec![], String::new()),
        (201, vec![("etag", "\"e1\"".into())], String::new()),
        // A second effect: the event exists, holds something else.
        (412, vec![], String::new()),
        (
            200,
            vec![
                ("etag", "\"e1\"".into()),
                ("content-type", "text/calendar".into()),
            ],
            stored_event(3, "20250314T080000Z"),
        ),
        (204, vec![("etag", "\"e2\"".into())], String::new()),
    ])
    .await;
    let base = server.base.clone();
    let reg = agenda(&format!("{base}/{USER}/visites"), PASSWORD);
    let inv = visit("2025-03-14T09:30:00+00:00", "2025-03-14T10:30:00+00:00");
    let r = reg
        .call("agenda", &effect("publish", 1, inv.clone()))
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({"uid": "visite-D-2025-0042@dossier.exemple.ci", "href": format!("{base}/{USER}/visites/visite-D-2025-0042@dossier.exemple.ci.ics"),
               "etag": "\"e1\"", "sequence": 0, "outcome": "created"})
    );
    let r = reg
        .call("agenda", &effect("publish", 2, inv.clone()))
        .await
        .unwrap();
    assert_eq!(r["outcome"], "updated");
    assert_eq!(r["sequence"], 4, "max(given 0, stored 3 + 1)");
    assert_eq!(r["etag"], "\"e2\"");

    let seen = server.hits();
    let summary: Vec<String> = seen
        .iter()
        .map(|s| {
            format!(
                "{} {} if-none-match={:?} if-match={:?} key={:?}",
                s.method,
                s.path,
                header(s, "if-none-match"),
                header(s, "if-match"),
                header(s, "idempotency-key")
            )
        })
        .collect();
    expect_test::expect![[r#"
        PUT /dossier/visites/visite-D-2025-0042@dossier.exemple.ci.ics if-none-match=Some("*") if-match=None key=Some("D-2025-0042:visite#1")
        MKCALENDAR /dossier/visites/ if-none-match=None if-match=None key=Some("D-2025-0042:visite#1")
        PUT /dossier/visites/visite-D-2025-0042@dossier.exemple.ci.ics if-none-match=Some("*") if-match=None key=Some("D-2025-0042:visite#1")
        PUT /dossier/visites/visite-D-2025-0042@dossier.exemple.ci.ics if-none-match=Some("*") if-match=None key=Some("D-2025-0042:visite#2")
        GET /dossier/visites/visite-D-2025-0042@dossier.exemple.ci.ics if-none-match=None if-match=None key=Some("D-2025-0042:visite#2")
        PUT /dossier/visites/visite-D-2025-0042@dossier.exemple.ci.ics if-none-match=None if-match=Some("\"e1\"") key=Some("D-2025-0042:visite#2")"#]]
    .assert_eq(&summary.join("\n"));
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    for s in &seen {
        assert_eq!(header(s, "authorization"), Some(basic.as_str()));
    }
    let put = &seen[0];
    assert_eq!(
        header(put, "content-type"),
        Some("text/calendar; charset=utf-8")
    );
    assert!(put
        .body
        .starts_with("BEGIN:VCALENDAR\r\nPRODID:-//Dossier//Dossier invitations//FR\r\n"));
    assert!(!put.body.contains("METHOD:"));
    assert!(put.body.contains("\r\nSEQUENCE:0\r\n"));
    assert_eq!(seen[1].body, "", "MKCALENDAR without a body");
    assert!(
        seen[5].body.contains("\r\nSEQUENCE:4\r\n"),
        "{}",
        seen[5].body
    );
}

#[tokio::test]
async fn transient_and_permanent_answers() {
    let inv = visit("2025-03-14T09:30:00+00:00", "2025-03-14T10:30:00+00:00");
    let event = |seq| {
        (
            200,
            vec![("etag", "\"e1\"".to_string())],
            stored_event(seq, "20250314T080000Z"),
        )
    };
    let cases: Vec<(&str, Vec<Answer>)> = vec![
        // Someone changed the event between our GET and our PUT.
        (
            "publish",
            vec![
                (412, vec![], String::new()),
                event(1),
                (412, vec![], String::new()),
            ],
        ),
        ("cancel", vec![event(1), (412, vec![], String::new())]),
        // The server fails.
        ("publish", vec![(503, vec![], "maintenance".into())]),
        ("publish", vec![(429, vec![], "slow down".into())]),
        // Gone between the PUT and the GET.
        (
            "publish",
            vec![(412, vec![], String::new()), (404, vec![], String::new())],
        ),
        // The server answers nonsense.
        (
            "publish",
            vec![
                (412, vec![], String::new()),
                (
                    200,
                    vec![("etag", "\"x\"".into())],
                    "<html>hello</html>".into(),
                ),
            ],
        ),
        (
            "cancel",
            vec![(200, vec![], stored_event(1, "20250314T080000Z"))],
        ),
        ("publish", vec![(400, vec![], "bad ics".into())]),
        (
            "publish",
            vec![
                (412, vec![], String::new()),
                (
                    200,
                    vec![("etag", "\"x\"".into())],
                    stored_event(1, "20250314T080000Z").replace("visite-D-2025-0042@", "autre@"),
                ),
            ],
        ),
        (
            "publish",
            vec![
                (409, vec![], "conflict".into()),
                (403, vec![], String::new()),
            ],
        ),
        (
            "publish",
            vec![
                (409, vec![], "conflict".into()),
                (409, vec![], "no parent".into()),
                (409, vec![], "still".into()),
            ],
        ),
    ];
    let mut out = Vec::new();
    for (op, script) in cases {
        let server = stub(script).await;
        let base = server.base.clone();
        let reg = agenda(&format!("{base}/c/"), PASSWORD);
        let e = reg
            .call("agenda", &effect(op, 1, inv.clone()))
            .await
            .unwrap_err();
        let kind = if e.is_transient() {
            "transient"
        } else {
            "permanent"
        };
        out.push(format!(
            "{op}: {kind}: {}",
            e.to_string().replace(&base, "BASE")
        ));
    }
    expect_test::expect![[r#"
        publish: transient: calendar `agenda`: PUT BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics: HTTP 412: the event changed since it was read; a retry reads it again
        cancel: transient: calendar `agenda`: PUT BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics: HTTP 412: the event changed since it was read; a retry reads it again
        publish: transient: calendar `agenda`: PUT BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics: HTTP 503: maintenance
        publish: transient: calendar `agenda`: PUT BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics: HTTP 429: slow down
        publish: transient: calendar `agenda`: BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics existed at the PUT and was gone at the GET (deleted meanwhile)
        publish: permanent: calendar `agenda`: GET BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics: malformed answer (not an iCalendar event): not an iCalendar content line: <html>hello</html>
        cancel: permanent: calendar `agenda`: GET BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics: malformed answer: no ETag, so the event cannot be updated safely
        publish: permanent: calendar `agenda`: PUT BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics: HTTP 400: bad ics
        publish: permanent: calendar `agenda`: malformed answer: BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics holds the event `autre@dossier.exemple.ci`, not `visite-D-2025-0042@dossier.exemple.ci`
        publish: permanent: calendar `agenda`: MKCALENDAR BASE/c/: HTTP 403 (refused): check `username` (dossier), the password in `AGENDA_PASSWORD` and the account's rights on BASE/c/
        publish: permanent: calendar `agenda`: PUT BASE/c/visite-D-2025-0042@dossier.exemple.ci.ics: HTTP 409: still (MKCALENDAR BASE/c/ answered HTTP 409: no parent); check that `url` is a calendar collection whose parent exists, and that no other resource holds the UID"#]].assert_eq(&out.join("\n"));
}

#[tokio::test]
async fn an_endless_answer_is_cut_short() {
    // A server that answers the GET with a body that never ends (bounded here to 10 s and
    // 640 MB, so the test stops whatever happens).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Type: text/calendar\r\nConnection: close\r\n\r\n",
        );
        let chunk = vec![b'X'; 64 * 1024];
        for _ in 0..10_000 {
            if s.write_all(&chunk).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    let reg = agenda(&format!("http://127.0.0.1:{port}/c/"), PASSWORD);
    let started = std::time::Instant::now();
    let e = reg
        .call(
            "agenda",
            &effect(
                "cancel",
                1,
                visit("2025-03-14T09:30:00+00:00", "2025-03-14T10:30:00+00:00"),
            ),
        )
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e:?}");
    assert!(
        e.to_string()
            .contains("malformed answer: the resource is larger than 1048576 bytes"),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reg = registry(
        &format!("connectors:\n  agenda:\n    type: calendar\n    url: http://127.0.0.1:{port}/c/\n    timeout_seconds: 1\n"),
        &[],
    );
    let started = std::time::Instant::now();
    let e = reg
        .call(
            "agenda",
            &effect(
                "publish",
                1,
                visit("2025-03-14T09:30:00+00:00", "2025-03-14T10:30:00+00:00"),
            ),
        )
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(listener);
}
