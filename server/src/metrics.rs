//! `/healthz`, `/readyz` and `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dossier_store::TaskFilter;
use serde_json::json;

use crate::error::ApiError;
use crate::AppState;

/// Upper bounds, in seconds, of the request latency histogram's buckets.
const HTTP_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Requests by route template (`/api/v1/tasks/{id}/claim`, never the ids), method and status,
/// and the latency of all of them.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    counts: Mutex<BTreeMap<(String, String, u16), u64>>,
    buckets: [AtomicU64; HTTP_BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl HttpMetrics {
    fn observe(&self, route: String, method: String, status: u16, elapsed: std::time::Duration) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((route, method, status)).or_default() += 1;
        drop(counts);
        let secs = elapsed.as_secs_f64();
        let i = HTTP_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(HTTP_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP dossier_http_requests_total Requests served, by route template, method and status.\n# TYPE dossier_http_requests_total counter");
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ((route, method, status), n) in counts {
            let _ = writeln!(
                out,
                "dossier_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(&route)
            );
        }
        let _ = writeln!(out, "# HELP dossier_http_request_duration_seconds Time to answer a request.\n# TYPE dossier_http_request_duration_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = HTTP_BUCKETS
                .get(i)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(
                out,
                "dossier_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "dossier_http_request_duration_seconds_sum {}\ndossier_http_request_duration_seconds_count {cumulative}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}

/// Counts every request under its route template (unknown paths count as `unmatched`).
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    state
        .http
        .observe(route, method, res.status().as_u16(), started.elapsed());
    res
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store().count_cases_by_status().await {
        Ok(_) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "not_ready", "message": "the database does not answer", "details": null})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = render(&state).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The metrics page. Counters are totals since the process started (use `rate()` for per
/// second figures: `rate(dossier_steps_total[1m])` is steps/s).
pub async fn render(state: &AppState) -> Result<String, ApiError> {
    let store = state.store();
    let m = state.engine.metrics();
    let now = state.now_ms();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        name.to_string()
    };
    let _ = family("dossier_cases", "gauge", "Cases by status.");
    let mut body = String::new();
    let mut by_status = store.count_cases_by_status().await?;
    for s in ["running", "waiting", "completed", "failed", "cancelled"] {
        if !by_status.iter().any(|(k, _)| k == s) {
            by_status.push((s.to_string(), 0));
        }
    }
    by_status.sort();
    for (status, n) in &by_status {
        let _ = writeln!(body, "dossier_cases{{status=\"{}\"}} {n}", escape(status));
    }
    out.push_str(&body);
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        &mut out,
        "dossier_steps_total",
        "Workflow steps started (rate() gives steps/s).",
        m.steps,
    );
    counter(
        &mut out,
        "dossier_inputs_total",
        "Inputs recorded in case histories.",
        m.inputs,
    );
    counter(
        &mut out,
        "dossier_commits_total",
        "Group commits of the engine.",
        m.commits,
    );
    counter(
        &mut out,
        "dossier_timers_fired_total",
        "Durable timers handed to the engine.",
        m.timers_fired,
    );
    let _ = writeln!(
        out,
        "# HELP dossier_effects_total Connector calls by connector and result (ok, transient: retried, permanent: to the step's on_error).\n# TYPE dossier_effects_total counter"
    );
    for c in &m.connectors {
        let name = escape(&c.connector);
        for (result, n) in [
            ("ok", c.ok),
            ("transient", c.transient),
            ("permanent", c.permanent),
        ] {
            let _ = writeln!(
                out,
                "dossier_effects_total{{connector=\"{name}\",result=\"{result}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP dossier_effect_latency_seconds Connector call latency, by connector.\n# TYPE dossier_effect_latency_seconds histogram"
    );
    for c in &m.connectors {
        let name = escape(&c.connector);
        let mut total = 0;
        for (bound, n) in &c.latency_buckets {
            let le = bound
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(
                out,
                "dossier_effect_latency_seconds_bucket{{connector=\"{name}\",le=\"{le}\"}} {n}"
            );
            total = *n;
        }
        let _ = writeln!(
            out,
            "dossier_effect_latency_seconds_sum{{connector=\"{name}\"}} {}",
            c.latency_sum_seconds
        );
        let _ = writeln!(
            out,
            "dossier_effect_latency_seconds_count{{connector=\"{name}\"}} {total}"
        );
    }

    let _ = writeln!(out, "# HELP dossier_tasks Human tasks by status (the backlog is open + claimed + awaiting_second).\n# TYPE dossier_tasks gauge");
    let mut tasks = store.count_tasks_by_status().await?;
    for s in [
        "open",
        "claimed",
        "awaiting_second",
        "completed",
        "cancelled",
    ] {
        if !tasks.iter().any(|(k, _)| k == s) {
            tasks.push((s.to_string(), 0));
        }
    }
    tasks.sort();
    for (status, n) in &tasks {
        let _ = writeln!(out, "dossier_tasks{{status=\"{}\"}} {n}", escape(status));
    }
    let mut overdue = 0;
    for s in ["open", "claimed", "awaiting_second"] {
        let f = TaskFilter {
            status: Some(s.into()),
            due_before: Some(now),
            ..TaskFilter::default()
        };
        overdue += store.tasks(&f).await?.len();
    }
    let _ = writeln!(out, "# HELP dossier_tasks_overdue Open tasks past their due date.\n# TYPE dossier_tasks_overdue gauge\ndossier_tasks_overdue {overdue}");
    // The oldest timer still waiting although due: how far behind the timer task is now.
    let lag_now = match store.next_timer_at().await? {
        Some(at) if at < now => (now - at) as f64 / 1000.0,
        _ => 0.0,
    };
    let _ = writeln!(
        out,
        "# HELP dossier_timer_lag_seconds How late the oldest due timer is (0 when none is due).\n# TYPE dossier_timer_lag_seconds gauge\ndossier_timer_lag_seconds {lag_now}"
    );
    let _ = writeln!(
        out,
        "# HELP dossier_timer_fire_lag_seconds How late the timers last handed over were.\n# TYPE dossier_timer_fire_lag_seconds gauge\ndossier_timer_fire_lag_seconds {}",
        m.timer_lag_ms.max(0) as f64 / 1000.0
    );
    state.http.render(&mut out);
    Ok(out)
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
