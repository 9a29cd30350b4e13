//! `dossier serve` over a real socket, on SQLite and PostgreSQL: keys made with `dossier keys`,
//! a case started through the API, a signed webhook and its redelivery, a revoked key, the audit
//! trail with the peer's address, a clean stop on SIGTERM. And the refusal to serve an invalid
//! project.

#[path = "../connectors/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const SECRET: &str = "whsec_c29ja2V0IHRlc3Qgc2VjcmV0";

fn dossier(project: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dossier"))
        .arg("--project")
        .arg(project)
        .args(args)
        .output()
        .expect("dossier runs")
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../server/tests/fixtures/achats")
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(project: &Path, db: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dossier"))
        .arg("--project")
        .arg(project)
        .args(["serve", "--listen", "127.0.0.1:0", "--db", db])
        .env("DOSSIER_HOOK_DEMANDE_ACHAT_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dossier serve starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("dossier: serving on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    Server { child, base }
}

fn new_key(project: &Path, db: &str, role: &str, name: &str) -> String {
    let out = dossier(
        project,
        &["keys", "create", "--role", role, "--name", name, "--db", db],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("dsk_"), "{key}");
    key
}

fn over_a_socket(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    support::copy_tree(&fixture(), project);
    let erp = new_key(project, db, "system", "erp");
    let auditor = new_key(project, db, "auditor", "cabinet-audit");
    // Names are unique among active keys.
    let out = dossier(
        project,
        &[
            "keys", "create", "--role", "admin", "--name", "erp", "--db", db,
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
    let out = dossier(
        project,
        &[
            "keys", "create", "--role", "chef", "--name", "x", "--db", db,
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API role"));
    let list = String::from_utf8(dossier(project, &["keys", "list", "--db", db]).stdout).unwrap();
    assert!(
        list.contains("erp") && list.contains("cabinet-audit"),
        "{list}"
    );
    assert!(
        !list.contains(&erp[15..]),
        "a listing must never show a secret"
    );

    let server = serve(project, db);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = |p: &str| format!("{}{p}", server.base);
        let r = http.get(url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);

        let r = http
            .post(url("/api/v1/instances"))
            .bearer_auth(&erp)
            .header("idempotency-key", "erp-1")
            .json(&json!({"workflow": "validation_achat", "input": {"demande": "DA-1", "demandeur": "Awa", "montant": "10.00"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let started: Value = r.json().await.unwrap();
        assert_eq!(started["workflow"], "validation_achat");

        // A signed webhook starts a case; its redelivery changes nothing.
        let body = json!({"reference": "DA-2", "auteur": "Fatou", "montant": "5"}).to_string();
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let key = dossier_server::webhook::decode_secret(SECRET).unwrap();
        let sig = dossier_server::webhook::sign(&key, "evt_1", ts, body.as_bytes());
        let deliver = || {
            http.post(url("/hooks/demande_achat"))
                .header("webhook-id", "evt_1")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig.clone())
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
        };
        let first = deliver().await.unwrap();
        assert_eq!(first.status(), 202);
        let first: Value = first.json().await.unwrap();
        let again = deliver().await.unwrap();
        assert_eq!(again.status(), 200);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["started"], first["started"]);
        assert_eq!(again["duplicate"], true);

        let r = http.get(url("/api/v1/instances")).bearer_auth(&auditor).send().await.unwrap();
        let list: Value = r.json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");

        // The audit trail names the peer.
        let r = http.get(url("/api/v1/audit")).bearer_auth(&auditor).send().await.unwrap();
        let trail: Value = r.json().await.unwrap();
        let actions: Vec<&str> = trail["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, vec!["keys.create", "keys.create", "instances.start", "hooks.receive"], "{trail}");
        assert!(trail["items"][2]["origin"].as_str().unwrap().starts_with("127.0.0.1:"), "{trail}");
        let r = http.get(url("/api/v1/audit/verify")).bearer_auth(&auditor).send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["intact"], true);

        let metrics = http.get(url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("dossier_cases{status=\"waiting\"} 2"), "{metrics}");

        // Revoked: refused at once by the running server.
        let out = dossier(project, &["keys", "revoke", "erp", "--db", db]);
        assert!(out.status.success());
        let r = http.get(url("/api/v1/instances")).bearer_auth(&erp).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "unauthorized");
    });
    // SIGTERM: the server stops cleanly.
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = server.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(status.expect("the server stops within 5 s").success());
}

#[test]
fn serve_over_a_socket_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dossier.db");
    over_a_socket(db.to_str().unwrap());
}

#[test]
fn serve_over_a_socket_on_postgres() {
    dossier_testkit::with_temp_pg("dossier_serve", over_a_socket);
}

#[test]
fn serve_refuses_an_invalid_project() {
    let dir = tempfile::tempdir().unwrap();
    support::copy_tree(&fixture(), dir.path());
    let wf = dir.path().join("workflows/validation_achat.yaml");
    let text = std::fs::read_to_string(&wf)
        .unwrap()
        .replace("goto: retiree", "goto: retire");
    std::fs::write(&wf, text).unwrap();
    let db = dir.path().join("x.db");
    let out = dossier(
        dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workflows/validation_achat.yaml:"), "{err}");
    assert!(err.contains("error:") && err.contains("retire"), "{err}");
    assert!(err.contains("nothing was run"), "{err}");
    // A configuration error names its file and line.
    std::fs::write(dir.path().join("dossier.yaml"), "server:\n  lisen: x\n").unwrap();
    let out = dossier(dir.path(), &["serve", "--db", db.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dossier.yaml:2:"), "{err}");
}
