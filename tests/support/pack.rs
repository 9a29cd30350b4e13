//! What the packs' end-to-end tests (`tests/pack_*.rs`) share: `dossier serve` started on a
//! copied project and stopped with the test, API keys, and a small client of the HTTP API that
//! waits for cases and tasks with a deadline instead of sleeping.
//!
//! Each test includes it with `#[path = "support/pack.rs"] mod pack;` next to the connectors'
//! test support (real servers and stubs).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a test waits for a case, a task or an account before failing.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `dossier` on `project`: the command the test completes with its secrets.
pub fn dossier(project: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dossier"));
    cmd.arg("--project").arg(project);
    cmd
}

/// A running `dossier serve`, killed when dropped.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd serve --db DB` and waits for its first line, which must announce `port`.
pub fn serve(mut cmd: Command, db: &str, port: u16) -> Server {
    let mut child = cmd
        .args(["serve", "--db", db])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dossier serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("its first line");
    let server = Server(child);
    assert_eq!(
        line.trim(),
        format!("dossier: serving on http://127.0.0.1:{port}")
    );
    server
}

/// A new API key (`dossier keys create`), as printed once.
pub fn key(project: &Path, db: &str, role: &str, name: &str) -> String {
    let out = dossier(project)
        .args(["keys", "create", "--role", role, "--name", name, "--db", db])
        .output()
        .expect("dossier keys create runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("dsk_"))
        .expect("a dsk_ key is printed")
        .to_string()
}

/// Polls `probe` until it gives something or `DEADLINE` passes (then fails with `what`).
pub async fn eventually<T, F, Fut>(what: impl Fn() -> String, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {}", what());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The HTTP API of the server under test (cheap to clone: concurrent requests).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn on_port(port: u16) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    /// Any call: the status and the JSON answer (or its text).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("an answer body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A GET that must answer 200.
    pub async fn get(&self, path: &str, key: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, key, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// Starts a case (201); its id.
    pub async fn start(&self, key: &str, workflow: &str, input: Value) -> String {
        let (s, started) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/instances",
                key,
                Some(json!({"workflow": workflow, "input": input})),
            )
            .await;
        assert_eq!(s, 201, "{started}");
        started["id"].as_str().expect("a case id").to_string()
    }

    /// Sends an event (202); the answer (`reached`, `started`).
    pub async fn event(&self, key: &str, name: &str, payload: Value) -> Value {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/events",
                key,
                Some(json!({"name": name, "payload": payload})),
            )
            .await;
        assert_eq!(s, 202, "{v}");
        v
    }

    /// A case, once its status is `want`.
    pub async fn wait_status(&self, case: &str, key: &str, want: &str) -> Value {
        eventually(
            || format!("case {case} never became {want}"),
            || async {
                let c = self.get(&format!("/api/v1/instances/{case}"), key).await;
                (c["status"] == want).then_some(c)
            },
        )
        .await
    }

    /// The output of a case, once it completed (from its `case_completed` event).
    pub async fn wait_output(&self, case: &str, key: &str) -> Value {
        self.wait_status(case, key, "completed").await;
        let history = self.history(case, key).await;
        of_kind(&history, "case_completed")
            .last()
            .unwrap_or_else(|| panic!("no case_completed in {history:?}"))["payload"]["output"]
            .clone()
    }

    /// The one case of `workflow` with this business key, once it exists.
    pub async fn case_of(&self, key: &str, workflow: &str, business_key: &str) -> String {
        eventually(
            || format!("no {workflow} case for {business_key}"),
            || async {
                let list = self
                    .get(
                        &format!(
                            "/api/v1/instances?workflow={workflow}&business_key={business_key}"
                        ),
                        key,
                    )
                    .await;
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let c = items.first()?;
                assert_eq!(items.len(), 1, "{list}");
                Some(c["id"].as_str().expect("a case id").to_string())
            },
        )
        .await
    }

    /// A case's history events.
    pub async fn history(&self, case: &str, key: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/instances/{case}/history"), key)
            .await["events"]
            .as_array()
            .expect("history events")
            .clone()
    }

    /// The open task of `case` in the inbox of `role`, once it exists.
    pub async fn task_of(&self, key: &str, role: &str, case: &str) -> Value {
        eventually(
            || format!("no open {role} task for {case}"),
            || async {
                let tasks = self.get(&format!("/api/v1/tasks?role={role}"), key).await;
                tasks["items"]
                    .as_array()
                    .expect("task items")
                    .iter()
                    .find(|t| t["instance_id"] == case && t["status"] == "open")
                    .cloned()
            },
        )
        .await
    }

    /// Completes a task; the status and answer (a test may expect a refusal).
    pub async fn try_complete(
        &self,
        key: &str,
        task: &Value,
        outcome: &str,
        data: Value,
    ) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!(
                "/api/v1/tasks/{}/complete",
                task["id"].as_str().expect("a task id")
            ),
            key,
            Some(json!({"outcome": outcome, "data": data})),
        )
        .await
    }

    /// Completes a task, which must be accepted (200).
    pub async fn complete(&self, key: &str, task: &Value, outcome: &str, data: Value) {
        let (s, v) = self.try_complete(key, task, outcome, data).await;
        assert_eq!(s, 200, "{v}");
    }

    /// The balance of a ledger account as decimal text without trailing zeros (`201.6`).
    pub async fn balance(&self, key: &str, account: &str) -> String {
        let v = self
            .get(&format!("/api/v1/ledger/accounts?prefix={account}"), key)
            .await;
        let item = v["items"]
            .as_array()
            .expect("account items")
            .iter()
            .find(|a| a["account"] == account)
            .unwrap_or_else(|| panic!("no account {account}: {v}"))
            .clone();
        dec(&item["balance"])
    }
}

/// The events of one kind in a case history.
pub fn of_kind<'a>(history: &'a [Value], kind: &str) -> Vec<&'a Value> {
    history.iter().filter(|e| e["kind"] == kind).collect()
}

/// A JSON number (or a text holding one) as decimal text without trailing zeros
/// (`182.50` -> `182.5`): money is compared exactly, never as a float.
pub fn dec(v: &Value) -> String {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("not a decimal: {other}"),
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Whether `needle` occurs in `haystack` (bytes of a ticket or a PDF).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
