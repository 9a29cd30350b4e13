//! What the connector tests share: free loopback ports, the servers installed by
//! `scripts/test-servers.sh` (called by `scripts/test.sh`), and child processes that are killed
//! when the test ends, whatever way it ends.
#![allow(dead_code)]

pub mod servers;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

/// A port nobody listens on right now, on 127.0.0.1, and never handed out before in this
/// process: the servers bind it a moment later, and two tests running side by side must not be
/// given the same one between its release and their bind.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The repository's root: the first folder above this crate holding `scripts/test-servers.sh`
/// (this module is also used by the end-to-end tests of `engine/cli`).
pub fn repo_root() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join("scripts/test-servers.sh").exists() {
            return dir.to_path_buf();
        }
        dir = dir
            .parent()
            .expect("the crate is inside the repository that has scripts/test-servers.sh");
    }
}

/// A program of the test virtual environment (aiosmtpd, Radicale). Fails with the command to
/// run when it is missing: these tests never skip.
pub fn venv_program(name: &str) -> PathBuf {
    let p = repo_root().join("target/test-servers/venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/test-servers.sh` (scripts/test.sh does it)",
        p.display()
    );
    p
}

/// A program from the system (`ippeveprinter`), with the same message when it is missing.
pub fn system_program(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed: run `bash scripts/test-servers.sh` (scripts/test.sh does it)"
    );
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts connections on `port` (or the process died, or 20 s passed).
pub fn wait_for_port(guard: &mut ChildGuard, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A connection to a port in the ephemeral range where nobody listens yet can connect
        // to itself (TCP simultaneous open): that is not the server.
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            if s.local_addr().ok() != s.peer_addr().ok() {
                return;
            }
        }
        if let Ok(Some(status)) = guard.child.try_wait() {
            panic!(
                "{} exited with {status} before listening on {port}",
                guard.name
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {port} within 20 s",
            guard.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies the folder `from` (a project) into `to`, which it creates.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The environment of a test: nothing but what it passes.
pub fn env_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// Builds the connectors a `dossier.yaml` text declares, with the environment `env` and the
/// project folder `project`; when it cannot, its diagnostics, one a line.
pub fn load(
    yaml: &str,
    env: &[(&str, &str)],
    project: &Path,
) -> Result<dossier_connectors::Registry, String> {
    let env = env_from(env);
    let ctx = dossier_connectors::support::BuildContext {
        env: &env,
        base_dir: project.to_path_buf(),
    };
    dossier_connectors::config::load("dossier.yaml", yaml, &ctx, Default::default()).map_err(|ds| {
        ds.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// One request a local stub received (SMS gateways and the fiscal administration have no
/// public test server: their stubs record what they get, and the tests check it exactly).
#[derive(Clone, Debug)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Hit {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }
}

/// What a [`Stub`] answers to one request.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// How long the stub waits before answering.
    pub delay: Duration,
}

/// A JSON answer, given at once.
pub fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".to_string())],
        body: body.into(),
        delay: Duration::ZERO,
    }
}

/// A local HTTP stub on a free loopback port: records every request as a [`Hit`] and answers
/// it with `respond(request, the requests before it)`. Stopped when dropped.
pub struct Stub {
    pub addr: SocketAddr,
    /// `http://` and the address.
    pub base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    pub async fn start(respond: impl Fn(&Hit, &[Hit]) -> Reply + Send + Sync + 'static) -> Stub {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let respond = Arc::new(respond);
        let h = hits.clone();
        let app = axum::Router::new().fallback(axum::routing::any(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (h, respond) = (h.clone(), respond.clone());
                async move {
                    let hit = Hit {
                        method: method.to_string(),
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or("").to_string(),
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let r = {
                        let mut all = h.lock().unwrap();
                        let r = respond(&hit, &all);
                        all.push(hit);
                        r
                    };
                    tokio::time::sleep(r.delay).await;
                    let mut headers = HeaderMap::new();
                    for (k, v) in r.headers {
                        headers.insert(k, v.parse().unwrap());
                    }
                    (StatusCode::from_u16(r.status).unwrap(), headers, r.body)
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stub {
            addr,
            base: format!("http://{addr}"),
            hits,
            task,
        }
    }

    /// The requests received so far, in order.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// How many requests went to `path`.
    pub fn count(&self, path: &str) -> usize {
        self.hits().iter().filter(|h| h.path == path).count()
    }
}
