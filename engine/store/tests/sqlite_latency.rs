//! Commit latency and throughput of the SQLite store on a temporary file (WAL,
//! `synchronous=FULL`). Not a benchmark gate: it prints numbers and asserts correctness only.
//!
//! ```text
//! cargo test -p dossier-store --release --test sqlite_latency -- --nocapture
//! ```

use std::time::{Duration, Instant};

use dossier_store::sqlite::SqliteStore;
use dossier_store::{CaseRecord, CaseWrite, EffectRecord, EventRecord, Store};

/// ~250 bytes of JSON, like an engine event payload.
fn payload(seq: i64) -> String {
    let text = format!(
        r#"{{"seq":{seq},"step":"review","output":{{"score":712,"notes":"{}"}}}}"#,
        "x".repeat(190)
    );
    debug_assert!((240..=270).contains(&text.len()));
    text
}

fn case(id: &str, seq: i64) -> CaseRecord {
    CaseRecord {
        id: id.to_string(),
        workflow_id: "loan".to_string(),
        workflow_version: 1,
        workflow_hash: "wfhash".to_string(),
        business_key: Some(format!("bk-{id}")),
        parent_id: None,
        status: "running".to_string(),
        current_step: Some("review".to_string()),
        data: format!(r#"{{"amount":{seq},"applicant":"someone"}}"#),
        pins: "{}".to_string(),
        last_seq: seq,
        last_hash: format!("h{seq}"),
        created_at: 1_000,
        updated_at: 1_000 + seq,
    }
}

fn event(case_id: &str, seq: i64) -> EventRecord {
    EventRecord {
        case_id: case_id.to_string(),
        seq,
        at: 1_000 + seq,
        kind: "step_completed".to_string(),
        payload: payload(seq),
        prev_hash: format!("h{}", seq - 1),
        hash: format!("h{seq}"),
    }
}

fn effect(key: &str, case_id: &str) -> EffectRecord {
    EffectRecord {
        key: key.to_string(),
        case_id: case_id.to_string(),
        step: "notify".to_string(),
        connector: "http".to_string(),
        operation: "post".to_string(),
        request: r#"{"url":"https://example.test"}"#.to_string(),
        attempt: 1,
        timeout_ms: Some(5_000),
        created_at: 1_000,
    }
}

/// The write of one transition of case `id` from `from` (0: the case is new) with `events`
/// events, one outbox insert and (unless the case is new) the delete of the previous effect.
fn transition(id: &str, from: i64, events: i64) -> CaseWrite {
    let to = from + events;
    CaseWrite {
        case: Some(case(id, to)),
        expected_last_seq: (from > 0).then_some(from),
        events: (from + 1..=to).map(|s| event(id, s)).collect(),
        effects_new: vec![effect(&format!("{id}/{to}"), id)],
        effects_done: if from > 0 {
            vec![format!("{id}/{from}")]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commit_latency_and_throughput() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("latency.db"))
        .await
        .expect("open");

    // Latency: sequential single-write commits, each a realistic transition of one case (one
    // case update, 4 events of ~250 bytes, one effect insert, one effect delete).
    const COMMITS: usize = 2_000;
    const WARMUP: usize = 50;
    const EVENTS: i64 = 4;
    store
        .commit(&[transition("lat", 0, EVENTS)])
        .await
        .expect("create");
    let mut seq = EVENTS;
    let mut samples = Vec::with_capacity(COMMITS);
    for i in 0..WARMUP + COMMITS {
        let w = transition("lat", seq, EVENTS);
        let started = Instant::now();
        store
            .commit(std::slice::from_ref(&w))
            .await
            .expect("commit");
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
        seq += EVENTS;
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "sqlite single-write commit latency over {COMMITS}: mean {:.1} us, p50 {:.1} us, \
         p90 {:.1} us, p99 {:.1} us, max {:.1} us",
        micros(mean),
        micros(pct(0.5)),
        micros(pct(0.9)),
        micros(pct(0.99)),
        micros(pct(1.0)),
    );
    let c = store.case("lat").await.expect("read").expect("case");
    assert_eq!(c.last_seq, seq);
    assert_eq!(
        store.history("lat").await.expect("history").len() as i64,
        seq
    );
    let pending = store.pending_effects(None, 0).await.expect("effects");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].key, format!("lat/{seq}"));

    // Throughput: 200 batches of 64 transitions over 640 cases (creates first, then advances),
    // 2 to 4 events each.
    const BATCHES: usize = 200;
    const PER_BATCH: usize = 64;
    const CASES: usize = 640;
    let mut seqs = vec![0i64; CASES];
    let mut batches = Vec::with_capacity(BATCHES);
    for b in 0..BATCHES {
        let mut batch = Vec::with_capacity(PER_BATCH);
        for i in 0..PER_BATCH {
            let n = (b * PER_BATCH + i) % CASES;
            let events = 2 + ((b + i) % 3) as i64;
            batch.push(transition(&format!("case-{n:06}"), seqs[n], events));
            seqs[n] += events;
        }
        batches.push(batch);
    }
    let started = Instant::now();
    for batch in &batches {
        store.commit(batch).await.expect("batch commit");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sqlite throughput: {BATCHES} batches x {PER_BATCH} writes in {secs:.3}s = \
         {:.0} batches/s, {:.0} writes/s ({:.1} us per batch)",
        BATCHES as f64 / secs,
        (BATCHES * PER_BATCH) as f64 / secs,
        secs * 1e6 / BATCHES as f64,
    );
    assert_eq!(
        store.pending_effects(None, 0).await.expect("effects").len(),
        CASES + 1
    );
    for n in [0, 321, CASES - 1] {
        let id = format!("case-{n:06}");
        let c = store.case(&id).await.expect("read").expect("case");
        assert_eq!(c.last_seq, seqs[n]);
        assert_eq!(
            store.history(&id).await.expect("history").len() as i64,
            seqs[n]
        );
    }
    store.close().await.expect("close");
}
