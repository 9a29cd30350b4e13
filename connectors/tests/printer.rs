//! The `printer` connector against real servers: CUPS' `ippeveprinter` (an IPP Everywhere
//! printer simulator that keeps the files it receives), a TCP sink standing for an ESC/POS
//! receipt printer, and the file system for kept PDFs.
//!
//! `ippeveprinter` will not start without D-Bus (for DNS-SD, even with `-r off`), so each
//! printer gets a private `dbus-daemon` as its "system bus" (see `support::servers::Printer`).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dossier_connectors::support::BuildContext;
use dossier_connectors::{escpos, printer, Connector, ConnectorError, EffectRequest};
use expect_test::expect;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::servers::{Printer, TicketSink};
use support::{free_port, system_program};

fn connector(settings: &str, base_dir: &Path) -> Arc<dyn Connector> {
    let env = |_: &str| None;
    let ctx = BuildContext {
        env: &env,
        base_dir: base_dir.to_path_buf(),
    };
    match printer::build(
        "imprimante",
        serde_yaml_ng::from_str(settings).unwrap(),
        &ctx,
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    }
}

fn effect(key: &str, operation: &str, request: Value) -> EffectRequest {
    EffectRequest {
        idempotency_key: key.to_string(),
        case_id: "DOS-2024-017".into(),
        step: "imprimer".into(),
        operation: operation.into(),
        request,
        attempt: 1,
        redelivered: false,
    }
}

/// Calls `operation` with `request` under the key `k:1`: a call that must fail.
async fn failure(c: &dyn Connector, operation: &str, request: Value) -> ConnectorError {
    c.call(&effect("k:1", operation, request))
        .await
        .unwrap_err()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn pdf_text(b: &[u8]) -> String {
    pdf_extract::extract_text_from_mem(b).expect("pdf-extract reads the PDF")
}

const RECU: &str = "@center\n# Reçu de paiement n° 2024-017\n@left\nÉlève : Zoé Ægir — « déjà réglé »\n\n| Désignation | Qté | Montant |\n|---|:-:|---:|\n| Cahier d'activités | 2 | 12,50 € |\n| **Total TTC** | | **25,00 €** |\n---\n[qr] https://exemple.ci/v/2024-017\n";

/// The jobs the printer lists, asked with CUPS' own `ipptool` (not with the code under test):
/// `(job-id, job-name, job-state)`.
fn ipptool_jobs(uri: &str) -> Vec<(String, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("get-jobs.test");
    std::fs::write(
        &test,
        r#"{
  NAME "Get-Jobs"
  OPERATION Get-Jobs
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR language attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR keyword which-jobs all
  ATTR keyword requested-attributes job-id,job-name,job-state
  STATUS successful-ok
  DISPLAY job-id
  DISPLAY job-name
  DISPLAY job-state
}
"#,
    )
    .unwrap();
    let out = Command::new(system_program("ipptool"))
        .args(["-T", "10", "-c", uri])
        .arg(&test)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ipptool failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, ',').collect();
            (
                f[0].to_string(),
                f.get(1).unwrap_or(&"").trim_matches('"').to_string(),
                f.get(2).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

/// Calls until the printer stops answering with a transient failure (as the engine's retries
/// would), for at most 60 s.
async fn call_retrying(c: &dyn Connector, e: &EffectRequest) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.call(e).await {
            Ok(v) => return v,
            Err(err) if err.is_transient() && Instant::now() < deadline => {
                assert!(err.to_string().contains("server-error-busy"), "{err}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => panic!("{err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prints_once_per_idempotency_key_on_an_ipp_printer() {
    let p = Printer::start("application/pdf");
    let c = connector(
        &format!("ipp_url: {}\ntimeout_seconds: 10\n", p.uri),
        Path::new("/"),
    );
    assert_eq!(c.operations(), ["print"]);
    let req = json!({"document": RECU, "title": "Reçu 2024-017", "copies": 1});
    let first = c
        .call(&effect("DOS-2024-017:imprimer#1", "print", req.clone()))
        .await
        .unwrap();
    assert_eq!(first["already_printed"], json!(false), "{first}");
    assert_eq!(first["printer_uri"], json!(p.uri));
    assert_eq!(first["job_name"], json!("DOS-2024-017:imprimer#1"));
    let job_id = first["job_id"].as_i64().unwrap();
    assert!(job_id > 0, "{first}");

    // The printer knows the job by the idempotency key.
    let jobs = ipptool_jobs(&p.uri);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].0, job_id.to_string());
    assert_eq!(jobs[0].1, "DOS-2024-017:imprimer#1");

    // It kept exactly the PDF we sent, with the French text intact.
    let files = p.spooled(1);
    assert_eq!(files.len(), 1, "{files:?}");
    let kept = std::fs::read(&files[0]).unwrap();
    assert_eq!(json!(sha256(&kept)), first["sha256"]);
    assert_eq!(json!(kept.len()), first["bytes"]);
    let text = pdf_text(&kept);
    for needle in [
        "Reçu de paiement n° 2024-017",
        "Élève : Zoé Ægir — « déjà réglé »",
        "Cahier d'activités",
        "25,00 €",
        "Page 1 / 1",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    // The same effect again (a retry after a crash): answered with the job, nothing printed.
    let again = c
        .call(&effect("DOS-2024-017:imprimer#1", "print", req.clone()))
        .await
        .unwrap();
    assert_eq!(again["already_printed"], json!(true), "{again}");
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(again["sha256"], first["sha256"]);
    assert_eq!(ipptool_jobs(&p.uri).len(), 1);

    // Another effect prints another job, once the printer is done with the first one: until
    // then it answers server-error-busy, a transient failure the engine retries.
    let other = call_retrying(&*c, &effect("DOS-2024-018:imprimer#1", "print", req)).await;
    assert_eq!(other["already_printed"], json!(false));
    assert_ne!(other["job_id"], first["job_id"]);
    let names: Vec<String> = ipptool_jobs(&p.uri).into_iter().map(|j| j.1).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"DOS-2024-018:imprimer#1".to_string()),
        "{names:?}"
    );
    assert_eq!(p.spooled(2).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_printer_refusing_pdf_is_a_permanent_failure() {
    let p = Printer::start("image/pwg-raster");
    let c = connector(&format!("ipp_url: {}\n", p.uri), Path::new("/"));
    let e = failure(&*c, "print", json!({"document": "Bonjour", "title": "t"})).await;
    assert!(!e.is_transient(), "{e}");
    // ippeveprinter says client-error-attributes-or-values-not-supported (others say
    // client-error-document-format-not-supported): a client error either way.
    assert!(e.to_string().contains("client-error-"), "{e}");
    assert!(e.to_string().contains("document-format"), "{e}");
    assert!(ipptool_jobs(&p.uri).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_printer_that_is_down_is_a_transient_failure() {
    let port = free_port();
    let c = connector(
        &format!("ipp_url: ipp://127.0.0.1:{port}/ipp/print\nescpos: {{host: 127.0.0.1, port: {port}}}\ntimeout_seconds: 3\n"),
        Path::new("/"),
    );
    let e = failure(&*c, "print", json!({"document": "Bonjour", "title": "t"})).await;
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    let e = failure(&*c, "ticket", json!({"document": "Bonjour"})).await;
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn markup_errors_are_permanent_and_name_their_lines() {
    let c = connector(
        "ipp_url: ipp://127.0.0.1:9/ipp/print\ndocuments_dir: docs\n",
        Path::new("/nonexistent"),
    );
    let e = failure(
        &*c,
        "print",
        json!({"document": "# Facture\n\n[qrcode] x\n@milieu\n", "title": "t"}),
    )
    .await;
    assert!(matches!(e, ConnectorError::Permanent(_)), "{e}");
    expect![[r#"
        imprimante.print: the document's markup is wrong:
        line 3: unknown directive `[qrcode]`: the directives are [qr], [page] and [cut] (start the line with `\` to print it as text)
        line 4: unknown alignment `@milieu`: write @left, @center or @right (start the line with `\` to print it as text)"#]]
    .assert_eq(&e.to_string());
    let e = failure(&*c, "pdf", json!({"document": "x", "titre": "t"})).await;
    assert!(matches!(e, ConnectorError::Permanent(_)), "{e}");
    assert!(e.to_string().contains("unknown field `titre`"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_reaches_the_receipt_printer_byte_for_byte() {
    let sink = TicketSink::start();
    let c = connector(
        &format!(
            "escpos: {{host: 127.0.0.1, port: {}, width: 32}}\n",
            sink.port
        ),
        Path::new("/"),
    );
    assert_eq!(c.operations(), ["ticket"]);
    let doc = "@center\n# Reçu\n@left\nTotal : 25,00 €\n@center\n[qr] https://x.ci/v/17\n[cut]\n";
    let result = c
        .call(&effect("k:1", "ticket", json!({"document": doc})))
        .await
        .unwrap();
    let mut tickets = sink.received(1);
    assert_eq!(tickets.len(), 1, "one connection");
    let got = tickets.remove(0);
    assert_eq!(result["bytes"], json!(got.len()));
    assert_eq!(result["sha256"], json!(sha256(&got)));
    // Initialise, PC858, centred double-size bold title, the text in PC858 (€ = d5), the QR code
    // (model 2, size, correction M, store, print), then feed and cut.
    expect![[r#"
        1b "@" 1b "t" 13 1b "a" 01 1b "E" 01 1d "!" 11 "Re" 87 "u" 0a
        1d "!" 00 1b "E" 00 1b "a" 00 "Total : 25,00 " d5 0a
        1b "a" 01 1d "(k" 04 00 "1A2" 00 1d "(k" 03 00 "1C" 06 1d "(k" 03 00 "1E1" 1d "(k" 14 00 "1P0https://x.ci/v/17" 1d "(k" 03 00 "1Q0" 0a
        1b "a" 00 1b "d" 04 1d "V" 00"#]]
    .assert_eq(&escpos::dump(&got));
    assert!(got.starts_with(&[0x1B, 0x40, 0x1B, 0x74, 19]));
    assert!(got.ends_with(&[0x1D, 0x56, 0x00]));
}

#[tokio::test(flavor = "multi_thread")]
async fn pdf_files_are_kept_whole_in_the_documents_folder() {
    let project = tempfile::tempdir().unwrap();
    let c = connector("documents_dir: documents\n", project.path());
    assert_eq!(c.operations(), ["pdf"]);
    let mut long =
        String::from("# Relevé de compte\n| Date | Libellé | Montant |\n|---|---|---:|\n");
    for i in 1..=45 {
        long.push_str(&format!(
            "| 2024-03-{:02} | Écriture n° {i} | {i},00 € |\n",
            i % 28 + 1
        ));
    }
    let r = c
        .call(&effect(
            "DOS-2024-017:archiver#1",
            "pdf",
            json!({"document": long, "title": "Relevé", "filename": "releve-2024-03"}),
        ))
        .await
        .unwrap();
    let path = project.path().join("documents/releve-2024-03.pdf");
    assert_eq!(r["path"], json!(path.display().to_string()));
    assert_eq!(r["pages"], json!(2));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(r["sha256"], json!(sha256(&bytes)));
    let text = pdf_text(&bytes);
    for needle in [
        "Relevé de compte",
        "Écriture n° 45",
        "45,00 €",
        "Page 1 / 2",
        "Page 2 / 2",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    // Written through a temporary file: nothing else is left in the folder.
    let names: Vec<String> = std::fs::read_dir(project.path().join("documents"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["releve-2024-03.pdf"]);

    // Without a filename, the name comes from the idempotency key; a retry writes the same bytes.
    let args = json!({"document": RECU, "title": "Reçu"});
    let a = c
        .call(&effect("DOS-2024-017:archiver#2", "pdf", args.clone()))
        .await
        .unwrap();
    let b = c
        .call(&effect("DOS-2024-017:archiver#2", "pdf", args))
        .await
        .unwrap();
    assert_eq!(a, b);
    let file = a["file"].as_str().unwrap();
    assert!(
        file.starts_with("DOS-2024-017_archiver_2-") && file.ends_with(".pdf"),
        "{file}"
    );

    let e = c
        .call(&effect(
            "k",
            "pdf",
            json!({"document": "x", "title": "t", "filename": "../x"}),
        ))
        .await
        .unwrap_err();
    assert!(
        !e.is_transient() && e.to_string().contains("`filename`"),
        "{e}"
    );
}
