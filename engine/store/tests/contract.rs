//! The storage contract, run against every backend: SQLite on a temporary file, PostgreSQL on a
//! fresh database per test, and the in-memory store.
//!
//! PostgreSQL: the tests connect to `DOSSIER_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), create `dossier_test_<unique>`, run, and drop
//! it. An unreachable server FAILS the PostgreSQL tests: CI provides one, and a silent skip would
//! hide a broken backend.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use dossier_store::memory::MemoryStore;
use dossier_store::postgres::PgStore;
use dossier_store::sqlite::SqliteStore;
use dossier_store::{
    audit_hash, verify_audit, ApiKeyRecord, AuditEntry, AuditRecord, CaseFilter, CaseRecord,
    CaseWrite, DefinitionRecord, EffectRecord, EventRecord, InboxRecord, NumberAllocation,
    NumberRecord, NumberRequest, Store, StoreError, TaskFilter, TaskRecord, TaskUpdate,
    TimerRecord, WaitRecord, AUDIT_GENESIS,
};
use dossier_store::{Decimal, LedgerOutcome, LedgerRequest, PostingRequest};
use dossier_store::{IdClaim, IdClaimOutcome};
use dossier_testkit::TempPg;
use sqlx::Connection;

// ---------------------------------------------------------------------------------------------
// Backends

tokio::task_local! {
    /// The backend under test, for printed output.
    static BACKEND: &'static str;
}

async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("dossier.db"))
        .await
        .expect("open sqlite");
    BACKEND.scope("sqlite", test(Arc::new(store))).await;
}

async fn with_memory<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    BACKEND
        .scope("memory", test(Arc::new(MemoryStore::new())))
        .await;
}

async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_postgres_url(|store, _url| test(store)).await
}

/// [`with_postgres`], also handing the test its database's URL (for a connection of its own).
async fn with_postgres_url<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let pg = TempPg::create("dossier_test").await;
    let url = pg.url().to_string();
    let store = PgStore::connect(&url)
        .await
        .expect("connect to the test database");
    let store = Arc::new(store);
    // Run the test in its own task so that a failing assertion still lets us drop the database.
    let outcome = tokio::spawn(BACKEND.scope("postgres", test(store.clone(), url))).await;
    store.close().await;
    drop(store);
    pg.drop_db().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Generates one `#[tokio::test]` per backend for each contract test.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::with_sqlite(super::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::with_postgres(super::$name).await
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::with_memory(super::$name).await
                }
            )*
        }
    };
}

contract_tests!(
    new_case_round_trip,
    batch_is_atomic,
    duplicate_new_case_conflicts,
    stale_last_seq_conflicts,
    duplicate_event_seq_conflicts,
    duplicate_side_rows_conflict,
    same_case_twice_in_one_batch,
    history_is_ordered_by_seq,
    list_cases_filters_and_pagination,
    count_by_status,
    timers_due_and_removed,
    effects_pagination_and_removal,
    waits_lookup_and_removal,
    task_updates_and_filters,
    definitions_are_insert_or_ignore,
    concurrent_commits_of_disjoint_cases,
    throughput,
    inbox_round_trip,
    duplicate_inbox_key_conflicts,
    duplicate_inbox_key_in_one_batch_conflicts,
    inbox_scope_is_ordered_by_key,
    assign_task_is_compare_and_set,
    count_tasks_by_status,
    api_keys_lifecycle,
    audit_chain_appends_and_verifies,
    concurrent_audit_appends_form_one_chain,
    audit_paging,
    commit_appends_audit_entries,
    failed_batch_appends_no_audit,
    audit_only_writes,
    concurrent_audited_commits_and_appends_form_one_chain,
    numbers_are_gapless_and_in_order,
    numbering_series_and_periods_are_independent,
    repeated_number_key_gets_its_number,
    concurrent_allocations_are_gapless,
    concurrent_requests_with_one_key_get_one_number,
    number_key_reused_elsewhere_is_refused,
    ledger_postings_apply_all_or_none,
    ledger_repeated_key_posts_once,
    ledger_concurrent_debits_respect_the_bound,
    ledger_accounts_by_prefix,
    ledger_concurrent_copies_of_one_request_post_once,
    unique_ids_are_given_once,
);

// ---------------------------------------------------------------------------------------------
// Record builders

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
        data: format!(r#"{{"amount":{seq}}}"#),
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
        payload: format!(r#"{{"seq":{seq},"note":"quote \" and unicode é"}}"#),
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

fn timer(id: &str, case_id: &str, fire_at: i64) -> TimerRecord {
    TimerRecord {
        id: id.to_string(),
        case_id: case_id.to_string(),
        fire_at,
        purpose: "wait".to_string(),
    }
}

fn wait(id: &str, case_id: &str, event_name: &str, correlation: &str) -> WaitRecord {
    WaitRecord {
        id: id.to_string(),
        case_id: case_id.to_string(),
        event_name: event_name.to_string(),
        correlation: correlation.to_string(),
        created_at: 1_000,
    }
}

fn task(id: &str, case_id: &str, role: &str, due_at: Option<i64>) -> TaskRecord {
    TaskRecord {
        id: id.to_string(),
        case_id: case_id.to_string(),
        workflow_id: "loan".to_string(),
        step: "review".to_string(),
        role: role.to_string(),
        title: format!("Review {case_id}"),
        form: r#"{"fields":[]}"#.to_string(),
        status: "open".to_string(),
        assignee: None,
        due_at,
        created_at: 1_000,
        completed_at: None,
        completed_by: None,
        outcome: None,
        data: None,
    }
}

/// A new case with events 1..=`events`.
fn create(id: &str, events: i64) -> CaseWrite {
    CaseWrite {
        case: Some(case(id, events)),
        expected_last_seq: None,
        events: (1..=events).map(|s| event(id, s)).collect(),
        ..Default::default()
    }
}

/// A transition of an existing case from `from` to `to`, with events from+1..=to.
fn advance(id: &str, from: i64, to: i64) -> CaseWrite {
    CaseWrite {
        case: Some(case(id, to)),
        expected_last_seq: Some(from),
        events: (from + 1..=to).map(|s| event(id, s)).collect(),
        ..Default::default()
    }
}

fn inbox(scope: &str, key: &str, case_id: &str) -> InboxRecord {
    InboxRecord {
        scope: scope.to_string(),
        key: key.to_string(),
        request_hash: format!("sha-{scope}-{key}"),
        case_id: case_id.to_string(),
        status: "running".to_string(),
        created_at: 1_000,
    }
}

fn api_key(id: &str, name: &str, created_at: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_string(),
        name: name.to_string(),
        role: "operator".to_string(),
        hash: format!("hash-of-{id}"),
        created_at,
        revoked_at: None,
    }
}

fn audit_entry(n: i64) -> AuditEntry {
    AuditEntry {
        at: 10_000 + n,
        actor: format!("key:k{n}"),
        role: "operator".to_string(),
        action: "POST /api/v1/instances".to_string(),
        target: format!("case-{n}"),
        origin: "127.0.0.1:4242".to_string(),
        request_id: format!("req-{n}"),
        details: format!(r#"{{"status":201,"note":"quote \" é","n":{n}}}"#),
    }
}

fn assert_conflict(result: Result<(), StoreError>, case_id: &str, expected: Option<i64>) {
    match result {
        Err(StoreError::Conflict {
            case_id: c,
            expected: e,
        }) => {
            assert_eq!(c, case_id, "conflict blamed the wrong case");
            assert_eq!(e, expected, "conflict reported the wrong expectation");
        }
        other => panic!("expected a conflict on {case_id}, got {other:?}"),
    }
}

fn all_cases() -> CaseFilter {
    CaseFilter::default()
}

// ---------------------------------------------------------------------------------------------
// The contract

async fn new_case_round_trip(s: Arc<dyn Store>) {
    let mut w = create("c1", 2);
    w.effects_new.push(effect("c1/e1", "c1"));
    w.timers_new.push(timer("c1/t1", "c1", 5_000));
    w.waits_new
        .push(wait("c1/w1", "c1", "signed", r#"{"id":"1"}"#));
    w.tasks_new.push(task("c1/k1", "c1", "clerk", Some(9_000)));
    s.commit(&[w.clone()]).await.unwrap();

    assert_eq!(s.case("c1").await.unwrap(), w.case);
    assert_eq!(s.case("nope").await.unwrap(), None);
    assert_eq!(s.history("c1").await.unwrap(), w.events);
    assert_eq!(s.pending_effects(None, 10).await.unwrap(), w.effects_new);
    assert_eq!(s.due_timers(5_000, 10).await.unwrap(), w.timers_new);
    assert_eq!(s.waits_of_case("c1").await.unwrap(), w.waits_new);
    assert_eq!(s.task("c1/k1").await.unwrap(), Some(w.tasks_new[0].clone()));
    assert_eq!(s.task("nope").await.unwrap(), None);

    // A case with NULLs everywhere they are allowed round-trips too.
    let mut bare = create("c2", 1);
    if let Some(c) = bare.case.as_mut() {
        c.business_key = None;
        c.current_step = None;
    }
    let mut e = effect("c2/e1", "c2");
    e.timeout_ms = None;
    bare.effects_new.push(e);
    s.commit(&[bare.clone()]).await.unwrap();
    assert_eq!(s.case("c2").await.unwrap(), bare.case);
    assert_eq!(
        s.pending_effects(Some("c1/e1"), 10).await.unwrap(),
        bare.effects_new
    );

    // An empty batch is a no-op.
    s.commit(&[]).await.unwrap();
}

async fn batch_is_atomic(s: Arc<dyn Store>) {
    s.commit(&[create("a", 1)]).await.unwrap();

    // A good new case, then a stale update of `a`, then another good one: nothing lands.
    let mut good = create("b", 2);
    good.effects_new.push(effect("b/e1", "b"));
    good.timers_new.push(timer("b/t1", "b", 10));
    good.waits_new.push(wait("b/w1", "b", "ev", "{}"));
    good.tasks_new.push(task("b/k1", "b", "clerk", None));
    let stale = advance("a", 0, 1);
    let result = s.commit(&[good.clone(), stale, create("c", 1)]).await;
    assert_conflict(result, "a", Some(0));

    assert_eq!(s.case("b").await.unwrap(), None);
    assert_eq!(s.case("c").await.unwrap(), None);
    assert!(s.history("b").await.unwrap().is_empty());
    assert!(s.pending_effects(None, 0).await.unwrap().is_empty());
    assert!(s.due_timers(i64::MAX, 0).await.unwrap().is_empty());
    assert!(s.waits_of_case("b").await.unwrap().is_empty());
    assert_eq!(s.task("b/k1").await.unwrap(), None);
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 1)));
    assert_eq!(s.history("a").await.unwrap(), vec![event("a", 1)]);

    // A conflict in the last round also undoes earlier rounds and side-row deletes.
    let mut with_effect = advance("a", 1, 2);
    with_effect.effects_new.push(effect("a/e1", "a"));
    s.commit(&[with_effect]).await.unwrap();
    let mut settle = advance("a", 2, 3);
    settle.effects_done.push("a/e1".to_string());
    let result = s
        .commit(&[settle, create("d", 1), advance("a", 2, 3)])
        .await;
    assert_conflict(result, "a", Some(2));
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 2)));
    assert_eq!(
        s.pending_effects(None, 0).await.unwrap(),
        vec![effect("a/e1", "a")]
    );
    assert_eq!(s.case("d").await.unwrap(), None);

    // The same batch minus the culprit goes through.
    s.commit(&[create("b", 2), create("c", 1)]).await.unwrap();
    assert_eq!(s.list_cases(&all_cases()).await.unwrap().len(), 3);
}

async fn duplicate_new_case_conflicts(s: Arc<dyn Store>) {
    s.commit(&[create("x", 1)]).await.unwrap();
    let result = s.commit(&[create("y", 1), create("x", 1)]).await;
    assert_conflict(result, "x", None);
    assert_eq!(s.case("y").await.unwrap(), None);
    assert_eq!(s.history("x").await.unwrap(), vec![event("x", 1)]);

    // Twice in the same batch.
    let result = s.commit(&[create("z", 1), create("z", 1)]).await;
    assert_conflict(result, "z", None);
    assert_eq!(s.case("z").await.unwrap(), None);
}

async fn stale_last_seq_conflicts(s: Arc<dyn Store>) {
    s.commit(&[create("a", 2)]).await.unwrap();
    assert_conflict(s.commit(&[advance("a", 1, 3)]).await, "a", Some(1));
    assert_conflict(s.commit(&[advance("a", 3, 4)]).await, "a", Some(3));
    // Updating a case that does not exist is a conflict too.
    assert_conflict(s.commit(&[advance("ghost", 0, 1)]).await, "ghost", Some(0));
    assert_eq!(s.case("ghost").await.unwrap(), None);

    s.commit(&[advance("a", 2, 4)]).await.unwrap();
    let stored = s.case("a").await.unwrap().unwrap();
    assert_eq!(stored.last_seq, 4);
    assert_eq!(stored, case("a", 4));
    assert_eq!(s.history("a").await.unwrap().len(), 4);
}

async fn duplicate_event_seq_conflicts(s: Arc<dyn Store>) {
    s.commit(&[create("a", 2), create("b", 1)]).await.unwrap();
    // The case row check passes (expected 2) but the events restart at seq 2.
    let mut bad = advance("a", 2, 3);
    bad.events.insert(0, event("a", 2));
    let result = s.commit(&[advance("b", 1, 2), bad]).await;
    assert_conflict(result, "a", Some(2));
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 2)));
    assert_eq!(s.case("b").await.unwrap(), Some(case("b", 1)));
    assert_eq!(s.history("b").await.unwrap().len(), 1);
}

async fn duplicate_side_rows_conflict(s: Arc<dyn Store>) {
    let mut w = create("a", 1);
    w.effects_new.push(effect("k", "a"));
    w.timers_new.push(timer("t", "a", 10));
    w.waits_new.push(wait("w", "a", "ev", "{}"));
    w.tasks_new.push(task("task", "a", "clerk", None));
    s.commit(&[w]).await.unwrap();

    let mut seq = 1;
    for make in [
        (|w: &mut CaseWrite| w.effects_new.push(effect("k", "a"))) as fn(&mut CaseWrite),
        |w| w.timers_new.push(timer("t", "a", 20)),
        |w| w.waits_new.push(wait("w", "a", "ev", "{}")),
        |w| w.tasks_new.push(task("task", "a", "clerk", None)),
    ] {
        let mut dup = advance("a", seq, seq + 1);
        make(&mut dup);
        assert_conflict(s.commit(&[create("other", 1), dup]).await, "a", Some(seq));
        assert_eq!(s.case("other").await.unwrap(), None);
        // The state is untouched: the clean transition still applies.
        s.commit(&[advance("a", seq, seq + 1)]).await.unwrap();
        seq += 1;
    }
    assert_eq!(s.pending_effects(None, 0).await.unwrap().len(), 1);
    assert_eq!(s.due_timers(i64::MAX, 0).await.unwrap()[0].fire_at, 10);

    // Updating a task that does not exist conflicts.
    let mut missing = advance("a", seq, seq + 1);
    missing.tasks_updated.push(TaskUpdate {
        id: "no-such-task".to_string(),
        status: "completed".to_string(),
        assignee: None,
        role: None,
        completed_at: None,
        completed_by: None,
        outcome: None,
        data: None,
    });
    assert_conflict(s.commit(&[missing]).await, "a", Some(seq));
    assert_eq!(s.case("a").await.unwrap().unwrap().last_seq, seq);
}

async fn same_case_twice_in_one_batch(s: Arc<dyn Store>) {
    s.commit(&[create("a", 1), create("b", 1)]).await.unwrap();
    // a: 1 -> 2 (creates an effect and a timer), b: 1 -> 2, a: 2 -> 3 (settles the effect,
    // reschedules the timer under the same id), a: 3 -> 4 (re-creates the effect key: a retry).
    let mut a2 = advance("a", 1, 2);
    a2.effects_new.push(effect("a/e", "a"));
    a2.timers_new.push(timer("a/t", "a", 100));
    a2.tasks_new.push(task("a/k", "a", "clerk", None));
    let mut a3 = advance("a", 2, 3);
    a3.effects_done.push("a/e".to_string());
    a3.timers_done.push("a/t".to_string());
    a3.timers_new.push(timer("a/t", "a", 200));
    a3.tasks_updated.push(TaskUpdate {
        id: "a/k".to_string(),
        status: "claimed".to_string(),
        assignee: Some("ann".to_string()),
        role: None,
        completed_at: None,
        completed_by: None,
        outcome: None,
        data: None,
    });
    let mut a4 = advance("a", 3, 4);
    let mut retry = effect("a/e", "a");
    retry.attempt = 2;
    a4.effects_new.push(retry.clone());
    s.commit(&[a2, advance("b", 1, 2), a3, a4]).await.unwrap();

    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 4)));
    assert_eq!(s.case("b").await.unwrap(), Some(case("b", 2)));
    assert_eq!(s.history("a").await.unwrap().len(), 4);
    assert_eq!(s.pending_effects(None, 0).await.unwrap(), vec![retry]);
    assert_eq!(
        s.due_timers(i64::MAX, 0).await.unwrap(),
        vec![timer("a/t", "a", 200)]
    );
    let k = s.task("a/k").await.unwrap().unwrap();
    assert_eq!(
        (k.status.as_str(), k.assignee.as_deref()),
        ("claimed", Some("ann"))
    );

    // The second transition of the batch is stale: the first one is undone as well.
    let result = s.commit(&[advance("a", 4, 5), advance("a", 4, 5)]).await;
    assert_conflict(result, "a", Some(4));
    assert_eq!(s.case("a").await.unwrap().unwrap().last_seq, 4);
    assert_eq!(s.history("a").await.unwrap().len(), 4);
}

async fn history_is_ordered_by_seq(s: Arc<dyn Store>) {
    let mut w = create("a", 5);
    w.events.reverse();
    s.commit(&[w]).await.unwrap();
    s.commit(&[create("b", 2)]).await.unwrap();
    let seqs: Vec<i64> = s
        .history("a")
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(s.history("b").await.unwrap().len(), 2);
    assert!(s.history("none").await.unwrap().is_empty());
}

async fn list_cases_filters_and_pagination(s: Arc<dyn Store>) {
    let mut batch = Vec::new();
    for i in 0..25 {
        let id = format!("case-{i:02}");
        let mut w = create(&id, 1);
        if let Some(c) = w.case.as_mut() {
            c.workflow_id = if i % 2 == 0 { "loan" } else { "claim" }.to_string();
            c.status = if i % 5 == 0 { "completed" } else { "running" }.to_string();
            c.created_at = 1_000 + i;
        }
        batch.push(w);
    }
    s.commit(&batch).await.unwrap();

    let all = s.list_cases(&all_cases()).await.unwrap();
    assert_eq!(all.len(), 25, "limit 0 means no limit");
    let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ordered by id");

    // Keyset pagination, 10 at a time.
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_cases(&CaseFilter {
                after_id: after.clone(),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|c| c.id.clone());
        pages.push(page.len());
    }
    assert_eq!(pages, vec![10, 10, 5]);

    let loans = s
        .list_cases(&CaseFilter {
            workflow_id: Some("loan".to_string()),
            status: Some("running".to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    // Even i in 0..25 not divisible by 5: 13 evens minus 0, 10, 20.
    assert_eq!(loans.len(), 10);
    assert!(loans
        .iter()
        .all(|c| c.workflow_id == "loan" && c.status == "running"));

    let by_key = s
        .list_cases(&CaseFilter {
            business_key: Some("bk-case-07".to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].id, "case-07");

    let window = s
        .list_cases(&CaseFilter {
            created_from: Some(1_005),
            created_to: Some(1_010),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = window.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["case-05", "case-06", "case-07", "case-08", "case-09"]
    );

    let page = s
        .list_cases(&CaseFilter {
            workflow_id: Some("claim".to_string()),
            after_id: Some("case-10".to_string()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = page.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["case-11", "case-13"]);
}

async fn count_by_status(s: Arc<dyn Store>) {
    assert!(s.count_cases_by_status().await.unwrap().is_empty());
    let mut batch = Vec::new();
    for (i, status) in ["running", "waiting", "running", "failed", "running"]
        .iter()
        .enumerate()
    {
        let mut w = create(&format!("c{i}"), 1);
        if let Some(c) = w.case.as_mut() {
            c.status = status.to_string();
        }
        batch.push(w);
    }
    s.commit(&batch).await.unwrap();
    let mut next = advance("c1", 1, 2);
    if let Some(c) = next.case.as_mut() {
        c.status = "completed".to_string();
    }
    s.commit(&[next]).await.unwrap();
    assert_eq!(
        s.count_cases_by_status().await.unwrap(),
        vec![
            ("completed".to_string(), 1),
            ("failed".to_string(), 1),
            ("running".to_string(), 3),
        ]
    );
}

async fn timers_due_and_removed(s: Arc<dyn Store>) {
    assert_eq!(s.next_timer_at().await.unwrap(), None);
    let mut w = create("a", 1);
    w.timers_new = vec![
        timer("t3", "a", 300),
        timer("t1", "a", 100),
        timer("t2b", "a", 200),
        timer("t2a", "a", 200),
    ];
    s.commit(&[w]).await.unwrap();

    assert_eq!(s.next_timer_at().await.unwrap(), Some(100));
    let ids = |v: Vec<TimerRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.due_timers(99, 10).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(ids(s.due_timers(100, 10).await.unwrap()), vec!["t1"]);
    assert_eq!(
        ids(s.due_timers(250, 10).await.unwrap()),
        vec!["t1", "t2a", "t2b"],
        "earliest first, ties by id"
    );
    assert_eq!(
        ids(s.due_timers(1_000, 2).await.unwrap()),
        vec!["t1", "t2a"]
    );

    // A fired timer is removed with the transition it caused.
    let mut fired = advance("a", 1, 2);
    fired.timers_done.push("t1".to_string());
    s.commit(&[fired]).await.unwrap();
    assert_eq!(s.next_timer_at().await.unwrap(), Some(200));

    // A write without a case row only drops side rows (a stale timer), whatever the case's
    // last_seq. Dropping a timer that is already gone is fine.
    let drop_stale = CaseWrite {
        timers_done: vec!["t2a".to_string(), "t1".to_string()],
        ..Default::default()
    };
    s.commit(&[drop_stale]).await.unwrap();
    assert_eq!(
        ids(s.due_timers(i64::MAX, 0).await.unwrap()),
        vec!["t2b", "t3"]
    );
    assert_eq!(s.case("a").await.unwrap().unwrap().last_seq, 2);
}

async fn effects_pagination_and_removal(s: Arc<dyn Store>) {
    let mut batch = Vec::new();
    for i in 0..7 {
        let id = format!("c{i}");
        let mut w = create(&id, 1);
        w.effects_new.push(effect(&format!("{id}/x"), &id));
        batch.push(w);
    }
    batch.reverse();
    s.commit(&batch).await.unwrap();

    let keys = |v: Vec<EffectRecord>| v.into_iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(
        keys(s.pending_effects(None, 3).await.unwrap()),
        vec!["c0/x", "c1/x", "c2/x"]
    );
    assert_eq!(
        keys(s.pending_effects(Some("c2/x"), 3).await.unwrap()),
        vec!["c3/x", "c4/x", "c5/x"]
    );
    assert_eq!(
        keys(s.pending_effects(Some("c5/x"), 3).await.unwrap()),
        vec!["c6/x"]
    );
    assert!(s.pending_effects(Some("c6/x"), 3).await.unwrap().is_empty());

    // Settle three effects in one batch, one of them twice over (idempotent delete).
    let mut done = Vec::new();
    for i in [1, 3, 5] {
        let mut w = advance(&format!("c{i}"), 1, 2);
        w.effects_done.push(format!("c{i}/x"));
        done.push(w);
    }
    done.push(CaseWrite {
        effects_done: vec!["c1/x".to_string()],
        ..Default::default()
    });
    s.commit(&done).await.unwrap();
    assert_eq!(
        keys(s.pending_effects(None, 0).await.unwrap()),
        vec!["c0/x", "c2/x", "c4/x", "c6/x"]
    );
}

async fn waits_lookup_and_removal(s: Arc<dyn Store>) {
    let mut a = create("a", 1);
    a.waits_new
        .push(wait("a/w1", "a", "signed", r#"{"contract":"42"}"#));
    a.waits_new
        .push(wait("a/w2", "a", "paid", r#"{"invoice":"7"}"#));
    let mut b = create("b", 1);
    b.waits_new
        .push(wait("b/w1", "b", "signed", r#"{"contract":"42"}"#));
    b.waits_new
        .push(wait("b/w2", "b", "signed", r#"{"contract":"43"}"#));
    s.commit(&[a, b]).await.unwrap();

    let ids = |v: Vec<WaitRecord>| v.into_iter().map(|w| w.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.waits_for("signed", r#"{"contract":"42"}"#).await.unwrap()),
        vec!["a/w1", "b/w1"]
    );
    assert!(s
        .waits_for("signed", r#"{"contract":"44"}"#)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(s.waits_of_case("a").await.unwrap()),
        vec!["a/w1", "a/w2"]
    );

    let mut satisfied = advance("a", 1, 2);
    satisfied.waits_done.push("a/w1".to_string());
    s.commit(&[satisfied]).await.unwrap();
    assert_eq!(
        ids(s.waits_for("signed", r#"{"contract":"42"}"#).await.unwrap()),
        vec!["b/w1"]
    );
    assert_eq!(ids(s.waits_of_case("a").await.unwrap()), vec!["a/w2"]);
}

async fn task_updates_and_filters(s: Arc<dyn Store>) {
    let mut a = create("a", 1);
    a.tasks_new.push(task("t1", "a", "clerk", Some(500)));
    a.tasks_new.push(task("t2", "a", "manager", Some(1_500)));
    let mut b = create("b", 1);
    b.tasks_new.push(task("t3", "b", "clerk", None));
    s.commit(&[a, b]).await.unwrap();

    let ids = |v: Vec<TaskRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.tasks(&TaskFilter::default()).await.unwrap()),
        vec!["t1", "t2", "t3"]
    );
    assert_eq!(
        ids(s
            .tasks(&TaskFilter {
                role: Some("clerk".to_string()),
                ..Default::default()
            })
            .await
            .unwrap()),
        vec!["t1", "t3"]
    );
    assert_eq!(
        ids(s
            .tasks(&TaskFilter {
                due_before: Some(1_500),
                ..Default::default()
            })
            .await
            .unwrap()),
        vec!["t1"],
        "due_before is strict and skips tasks without a due date"
    );
    assert_eq!(
        ids(s
            .tasks(&TaskFilter {
                case_id: Some("b".to_string()),
                ..Default::default()
            })
            .await
            .unwrap()),
        vec!["t3"]
    );
    assert_eq!(
        ids(s
            .tasks(&TaskFilter {
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap()),
        vec!["t1", "t2"]
    );

    // Claim t1, escalate t2 to another role (role: Some), complete t3 (role: None keeps it).
    let mut a2 = advance("a", 1, 2);
    a2.tasks_updated.push(TaskUpdate {
        id: "t1".to_string(),
        status: "claimed".to_string(),
        assignee: Some("ann".to_string()),
        role: None,
        completed_at: None,
        completed_by: None,
        outcome: None,
        data: None,
    });
    a2.tasks_updated.push(TaskUpdate {
        id: "t2".to_string(),
        status: "open".to_string(),
        assignee: None,
        role: Some("director".to_string()),
        completed_at: None,
        completed_by: None,
        outcome: None,
        data: None,
    });
    let mut b2 = advance("b", 1, 2);
    b2.tasks_updated.push(TaskUpdate {
        id: "t3".to_string(),
        status: "completed".to_string(),
        assignee: Some("bob".to_string()),
        role: None,
        completed_at: Some(2_000),
        completed_by: Some("bob".to_string()),
        outcome: Some("approve".to_string()),
        data: Some(r#"{"ok":true}"#.to_string()),
    });
    s.commit(&[a2, b2]).await.unwrap();

    let t1 = s.task("t1").await.unwrap().unwrap();
    assert_eq!(t1.status, "claimed");
    assert_eq!(t1.assignee.as_deref(), Some("ann"));
    assert_eq!(t1.role, "clerk");
    let t2 = s.task("t2").await.unwrap().unwrap();
    assert_eq!(t2.role, "director");
    let t3 = s.task("t3").await.unwrap().unwrap();
    let mut expected = task("t3", "b", "clerk", None);
    expected.status = "completed".to_string();
    expected.assignee = Some("bob".to_string());
    expected.completed_at = Some(2_000);
    expected.completed_by = Some("bob".to_string());
    expected.outcome = Some("approve".to_string());
    expected.data = Some(r#"{"ok":true}"#.to_string());
    assert_eq!(t3, expected);

    assert_eq!(
        ids(s
            .tasks(&TaskFilter {
                assignee: Some("ann".to_string()),
                status: Some("claimed".to_string()),
                ..Default::default()
            })
            .await
            .unwrap()),
        vec!["t1"]
    );
    assert_eq!(
        ids(s
            .tasks(&TaskFilter {
                role: Some("director".to_string()),
                status: Some("open".to_string()),
                ..Default::default()
            })
            .await
            .unwrap()),
        vec!["t2"]
    );
}

async fn definitions_are_insert_or_ignore(s: Arc<dyn Store>) {
    let def = |hash: &str, kind: &str, source: &str, at: i64| DefinitionRecord {
        hash: hash.to_string(),
        kind: kind.to_string(),
        name: format!("{kind}-{hash}"),
        version: if kind == "workflow" { Some(1) } else { None },
        source: source.to_string(),
        loaded_at: at,
    };
    let first = vec![
        def("h2", "workflow", "steps: []", 20),
        def("h1", "workflow", "steps: [a]", 10),
        def("r1", "rule", "fn x() {}", 5),
    ];
    s.put_definitions(&first).await.unwrap();
    // Again, plus a different source under an existing hash: the stored one stays.
    s.put_definitions(&[
        def("h1", "workflow", "CHANGED", 99),
        def("h3", "workflow", "s", 30),
    ])
    .await
    .unwrap();
    s.put_definitions(&[]).await.unwrap();

    assert_eq!(s.definition("h1").await.unwrap(), Some(first[1].clone()));
    assert_eq!(s.definition("zz").await.unwrap(), None);
    let hashes: Vec<String> = s
        .definitions("workflow")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.hash)
        .collect();
    assert_eq!(hashes, vec!["h1", "h2", "h3"], "oldest first");
    assert_eq!(s.definitions("rule").await.unwrap(), vec![first[2].clone()]);
    assert!(s.definitions("template").await.unwrap().is_empty());
}

async fn concurrent_commits_of_disjoint_cases(s: Arc<dyn Store>) {
    const TASKS: usize = 8;
    const STEPS: i64 = 10;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let ids: Vec<String> = (0..4).map(|i| format!("t{t}-c{i}")).collect();
            s.commit(&ids.iter().map(|id| create(id, 1)).collect::<Vec<_>>())
                .await
                .expect("create");
            for step in 1..STEPS {
                let batch: Vec<CaseWrite> = ids
                    .iter()
                    .map(|id| {
                        let mut w = advance(id, step, step + 1);
                        w.effects_new.push(effect(&format!("{id}/{step}"), id));
                        if step > 1 {
                            w.effects_done.push(format!("{id}/{}", step - 1));
                        }
                        w
                    })
                    .collect();
                s.commit(&batch)
                    .await
                    .expect("disjoint commits never conflict");
            }
        }));
    }
    for h in handles {
        h.await.expect("committer task");
    }
    let cases = s.list_cases(&all_cases()).await.unwrap();
    assert_eq!(cases.len(), TASKS * 4);
    assert!(cases.iter().all(|c| c.last_seq == STEPS));
    assert_eq!(s.pending_effects(None, 0).await.unwrap().len(), TASKS * 4);
    assert_eq!(s.history("t3-c2").await.unwrap().len(), STEPS as usize);
}

/// Not a benchmark (no timing assertion): commits 200 batches of 64 transitions shaped like the
/// engine's (a case row, 2 to 4 events, one outbox insert and one outbox delete) and prints the rate.
/// Run with `--nocapture` (and `--release` for meaningful numbers).
async fn throughput(s: Arc<dyn Store>) {
    const BATCHES: usize = 200;
    const PER_BATCH: usize = 64;
    /// Cases in rotation: the first batches create them, the rest advance them.
    const CASES: usize = 640;
    let payload = format!(
        r#"{{"output":{{"score":712,"notes":"{}"}}}}"#,
        "x".repeat(200)
    );

    let mut seqs = vec![0i64; CASES];
    let mut writes = 0usize;
    let started = Instant::now();
    for b in 0..BATCHES {
        let mut batch = Vec::with_capacity(PER_BATCH);
        for i in 0..PER_BATCH {
            let n = (b * PER_BATCH + i) % CASES;
            let id = format!("case-{n:06}");
            let from = seqs[n];
            // 2 to 4 events, so that batches differ in row counts as the engine's do.
            let to = from + 2 + ((b + i) % 3) as i64;
            let mut w = if from == 0 {
                create(&id, to)
            } else {
                advance(&id, from, to)
            };
            for e in &mut w.events {
                e.payload = payload.clone();
            }
            w.effects_new.push(effect(&format!("{id}/{to}"), &id));
            if from > 0 {
                w.effects_done.push(format!("{id}/{from}"));
            }
            seqs[n] = to;
            batch.push(w);
        }
        s.commit(&batch).await.expect("commit");
        writes += batch.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "throughput {}: {BATCHES} batches x {PER_BATCH} writes in {secs:.3}s = {:.0} batches/s, {:.0} writes/s",
        BACKEND.get(),
        BATCHES as f64 / secs,
        writes as f64 / secs
    );

    assert_eq!(s.pending_effects(None, 0).await.unwrap().len(), CASES);
    for n in [0, 123, CASES - 1] {
        let id = format!("case-{n:06}");
        let c = s.case(&id).await.unwrap().unwrap();
        assert_eq!(c.last_seq, seqs[n]);
        assert_eq!(s.history(&id).await.unwrap().len() as i64, seqs[n]);
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dossier.db");
    let mut w = create("a", 2);
    w.effects_new.push(effect("a/e", "a"));
    w.timers_new.push(timer("a/t", "a", 50));
    w.waits_new.push(wait("a/w", "a", "ev", "{}"));
    w.tasks_new.push(task("a/k", "a", "clerk", Some(60)));
    let def = DefinitionRecord {
        hash: "h".to_string(),
        kind: "workflow".to_string(),
        name: "loan".to_string(),
        version: Some(3),
        source: "steps: []".to_string(),
        loaded_at: 1,
    };
    {
        let s = SqliteStore::open(&path).await.unwrap();
        s.commit(&[w.clone(), create("b", 1)]).await.unwrap();
        s.put_definitions(std::slice::from_ref(&def)).await.unwrap();
        // Dropped without `close`: a returned commit must already be durable.
    }
    {
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(s.case("a").await.unwrap(), w.case);
        assert_eq!(s.history("a").await.unwrap(), w.events);
        assert_eq!(s.pending_effects(None, 0).await.unwrap(), w.effects_new);
        assert_eq!(s.due_timers(50, 0).await.unwrap(), w.timers_new);
        assert_eq!(s.waits_of_case("a").await.unwrap(), w.waits_new);
        assert_eq!(s.task("a/k").await.unwrap(), Some(w.tasks_new[0].clone()));
        assert_eq!(s.definition("h").await.unwrap(), Some(def.clone()));
        assert_eq!(s.list_cases(&all_cases()).await.unwrap().len(), 2);
        // Optimistic concurrency carries over: the stored last_seq is the one to expect.
        assert_conflict(s.commit(&[advance("a", 1, 3)]).await, "a", Some(1));
        s.commit(&[advance("a", 2, 3)]).await.unwrap();
        s.close().await.unwrap();
    }
    let s = SqliteStore::open_url(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(s.case("a").await.unwrap().unwrap().last_seq, 3);
    assert_eq!(s.history("a").await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_url_works() {
    let s = SqliteStore::open_url("sqlite::memory:").await.unwrap();
    s.commit(&[create("a", 1)]).await.unwrap();
    s.commit(&[advance("a", 1, 2)]).await.unwrap();
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 2)));
    assert_eq!(s.history("a").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bad_location_is_an_open_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing-dir").join("dossier.db");
    match SqliteStore::open(&path).await {
        Err(StoreError::Open { location, .. }) => assert!(location.contains("missing-dir")),
        other => panic!("expected an open error, got {other:?}"),
    }
}

/// Batches bigger than one multi-row statement (chunking under the bound-variable limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_large_batch_is_chunked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(&dir.path().join("dossier.db"))
        .await
        .unwrap();
    let batch: Vec<CaseWrite> = (0..3_000).map(|i| create(&format!("c{i:05}"), 2)).collect();
    s.commit(&batch).await.unwrap();
    let next: Vec<CaseWrite> = (0..3_000)
        .map(|i| {
            let id = format!("c{i:05}");
            let mut w = advance(&id, 2, 3);
            w.effects_done = (0..12).map(|k| format!("{id}/{k}")).collect();
            w
        })
        .collect();
    s.commit(&next).await.unwrap();
    assert_eq!(s.list_cases(&all_cases()).await.unwrap().len(), 3_000);
    assert_eq!(s.history("c02999").await.unwrap().len(), 3);
    // A conflict in the last chunk still rolls back the first ones.
    let mut stale: Vec<CaseWrite> = (0..3_000)
        .map(|i| advance(&format!("c{i:05}"), 3, 4))
        .collect();
    stale.push(advance("c00000", 3, 4));
    assert_conflict(s.commit(&stale).await, "c00000", Some(3));
    assert_eq!(s.case("c02999").await.unwrap().unwrap().last_seq, 3);
}

// ---------------------------------------------------------------------------------------------
// Server: inbox, task assignment, API keys, audit trail

async fn inbox_round_trip(s: Arc<dyn Store>) {
    assert_eq!(s.inbox("api:x", "k1").await.unwrap(), None);
    let mut w = create("a", 1);
    w.inbox.push(inbox("api:x", "k1", "a"));
    w.inbox.push(inbox("hook:crm:1", "k1", "a"));
    s.commit(&[w]).await.unwrap();

    assert_eq!(
        s.inbox("api:x", "k1").await.unwrap(),
        Some(inbox("api:x", "k1", "a"))
    );
    assert_eq!(
        s.inbox("hook:crm:1", "k1").await.unwrap(),
        Some(inbox("hook:crm:1", "k1", "a"))
    );
    assert_eq!(s.inbox("api:x", "k2").await.unwrap(), None);
    assert_eq!(s.inbox("api:y", "k1").await.unwrap(), None);
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 1)));

    // A transition of an existing case records its request too, and a write with no case row
    // (only an inbox record) is fine.
    let mut next = advance("a", 1, 2);
    let mut rec = inbox("api:x", "k2", "a");
    rec.status = "completed".to_string();
    rec.created_at = 2_000;
    next.inbox.push(rec.clone());
    let only_inbox = CaseWrite {
        inbox: vec![inbox("api:x", "k3", "b")],
        ..Default::default()
    };
    s.commit(&[next, only_inbox]).await.unwrap();
    assert_eq!(s.inbox("api:x", "k2").await.unwrap(), Some(rec));
    assert_eq!(
        s.inbox("api:x", "k3").await.unwrap(),
        Some(inbox("api:x", "k3", "b"))
    );
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 2)));
}

async fn duplicate_inbox_key_conflicts(s: Arc<dyn Store>) {
    let mut first = create("a", 1);
    first.inbox.push(inbox("api:x", "k", "a"));
    first.effects_new.push(effect("a/e", "a"));
    s.commit(&[first]).await.unwrap();

    // Another case created, then `a` advanced with new side rows and a fresh inbox record,
    // then the taken key: the whole batch fails, blaming `a`'s write.
    let mut other = create("other", 2);
    other.inbox.push(inbox("api:x", "other-key", "other"));
    other
        .tasks_new
        .push(task("other/t", "other", "clerk", None));
    let mut dup = advance("a", 1, 3);
    dup.effects_done.push("a/e".to_string());
    dup.timers_new.push(timer("a/t", "a", 50));
    dup.inbox.push(inbox("api:x", "fresh", "a"));
    let mut again = inbox("api:x", "k", "a");
    again.request_hash = "another body".to_string();
    dup.inbox.push(again);
    assert_conflict(s.commit(&[other, dup]).await, "a", Some(1));

    // Nothing of the batch was written.
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 1)));
    assert_eq!(s.history("a").await.unwrap(), vec![event("a", 1)]);
    assert_eq!(
        s.pending_effects(None, 0).await.unwrap(),
        vec![effect("a/e", "a")]
    );
    assert!(s.due_timers(i64::MAX, 0).await.unwrap().is_empty());
    assert_eq!(s.case("other").await.unwrap(), None);
    assert!(s.history("other").await.unwrap().is_empty());
    assert_eq!(s.task("other/t").await.unwrap(), None);
    assert_eq!(s.inbox("api:x", "other-key").await.unwrap(), None);
    assert_eq!(s.inbox("api:x", "fresh").await.unwrap(), None);
    assert_eq!(
        s.inbox("api:x", "k").await.unwrap(),
        Some(inbox("api:x", "k", "a")),
        "the stored record is not replaced"
    );
    assert_eq!(
        s.inbox_scope("api:x").await.unwrap(),
        vec![inbox("api:x", "k", "a")]
    );

    // A write without a case row is blamed by its inbox record's case.
    let lone = CaseWrite {
        inbox: vec![inbox("api:x", "k", "z")],
        ..Default::default()
    };
    assert_conflict(s.commit(&[lone]).await, "z", None);

    // The same transition without the taken key goes through.
    let mut clean = advance("a", 1, 2);
    clean.inbox.push(inbox("api:x", "fresh", "a"));
    s.commit(&[clean]).await.unwrap();
    assert_eq!(
        s.inbox("api:x", "fresh").await.unwrap(),
        Some(inbox("api:x", "fresh", "a"))
    );
}

async fn duplicate_inbox_key_in_one_batch_conflicts(s: Arc<dyn Store>) {
    // Two writes of one batch taking the same key: the second one is blamed.
    let mut a = create("a", 1);
    a.inbox.push(inbox("hook:crm", "delivery-1", "a"));
    let mut b = create("b", 1);
    b.inbox.push(inbox("hook:crm", "delivery-1", "b"));
    assert_conflict(s.commit(&[a, create("c", 1), b]).await, "b", None);
    for id in ["a", "b", "c"] {
        assert_eq!(s.case(id).await.unwrap(), None, "case {id}");
    }
    assert_eq!(s.inbox("hook:crm", "delivery-1").await.unwrap(), None);

    // Twice in the same write.
    let mut twice = create("d", 1);
    twice.inbox.push(inbox("hook:crm", "delivery-2", "d"));
    twice.inbox.push(inbox("hook:crm", "delivery-2", "d"));
    assert_conflict(s.commit(&[create("e", 1), twice]).await, "d", None);
    assert_eq!(s.case("d").await.unwrap(), None);
    assert_eq!(s.case("e").await.unwrap(), None);
    assert_eq!(s.inbox("hook:crm", "delivery-2").await.unwrap(), None);

    // The same key in another scope, or another key in the same scope, is no conflict; nor is
    // a key split differently between scope and key.
    let mut a = create("a", 1);
    a.inbox.push(inbox("hook:crm", "delivery-1", "a"));
    let mut b = create("b", 1);
    b.inbox.push(inbox("hook:erp", "delivery-1", "b"));
    b.inbox.push(inbox("hook:crm", "delivery-3", "b"));
    let mut c = create("c", 1);
    c.inbox.push(inbox("hook:crmdelivery-1", "", "c"));
    c.inbox.push(inbox("hook:", "crmdelivery-1", "c"));
    s.commit(&[a, b, c]).await.unwrap();
    let keys = |v: Vec<InboxRecord>| v.into_iter().map(|i| i.key).collect::<Vec<_>>();
    assert_eq!(
        keys(s.inbox_scope("hook:crm").await.unwrap()),
        vec!["delivery-1", "delivery-3"]
    );
    assert_eq!(
        s.inbox_scope("hook:erp").await.unwrap(),
        vec![inbox("hook:erp", "delivery-1", "b")]
    );
    assert_eq!(
        s.inbox("hook:crmdelivery-1", "").await.unwrap(),
        Some(inbox("hook:crmdelivery-1", "", "c"))
    );
}

async fn inbox_scope_is_ordered_by_key(s: Arc<dyn Store>) {
    assert!(s.inbox_scope("s1").await.unwrap().is_empty());
    let mut w = create("a", 1);
    for (scope, key) in [
        ("s1", "k3"),
        ("s1", "k10"),
        ("s10", "k0"),
        ("s", "k0"),
        ("s1", "K2"),
        ("s1", "k1"),
        ("s1", "é"),
        ("s1", "_x"),
    ] {
        w.inbox.push(inbox(scope, key, "a"));
    }
    s.commit(&[w]).await.unwrap();
    // Byte order: upper case before `_` before lower case, multi-byte UTF-8 last.
    assert_eq!(
        s.inbox_scope("s1").await.unwrap(),
        ["K2", "_x", "k1", "k10", "k3", "é"]
            .iter()
            .map(|k| inbox("s1", k, "a"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        s.inbox_scope("s").await.unwrap(),
        vec![inbox("s", "k0", "a")]
    );
    assert!(s.inbox_scope("s2").await.unwrap().is_empty());
}

async fn assign_task_is_compare_and_set(s: Arc<dyn Store>) {
    let mut w = create("a", 1);
    w.tasks_new.push(task("t1", "a", "clerk", Some(9_000)));
    w.tasks_new.push(task("t2", "a", "clerk", None));
    s.commit(&[w]).await.unwrap();
    let open = task("t1", "a", "clerk", Some(9_000));
    let mut claimed_by_ann = open.clone();
    claimed_by_ann.status = "claimed".to_string();
    claimed_by_ann.assignee = Some("ann".to_string());

    // Unknown task.
    assert_eq!(
        s.assign_task(
            "nope",
            &["open"],
            "clerk",
            None,
            "claimed",
            Some("ann"),
            None
        )
        .await
        .unwrap(),
        None
    );

    // Ann claims the open task.
    assert_eq!(
        s.assign_task("t1", &["open"], "clerk", None, "claimed", Some("ann"), None)
            .await
            .unwrap(),
        Some((claimed_by_ann.clone(), true))
    );
    assert_eq!(s.task("t1").await.unwrap(), Some(claimed_by_ann.clone()));

    // Bob's claim loses: the task is no longer open.
    assert_eq!(
        s.assign_task("t1", &["open"], "clerk", None, "claimed", Some("bob"), None)
            .await
            .unwrap(),
        Some((claimed_by_ann.clone(), false))
    );
    // Bob cannot release Ann's task (wrong holder).
    assert_eq!(
        s.assign_task("t1", &["claimed"], "clerk", Some("bob"), "open", None, None)
            .await
            .unwrap(),
        Some((claimed_by_ann.clone(), false))
    );
    // Ann cannot "release" from a status the task is not in (wrong status).
    assert_eq!(
        s.assign_task(
            "t1",
            &["open", "completed"],
            "clerk",
            Some("ann"),
            "open",
            None,
            None
        )
        .await
        .unwrap(),
        Some((claimed_by_ann.clone(), false))
    );
    // An empty list of accepted statuses matches nothing.
    assert_eq!(
        s.assign_task("t1", &[], "clerk", None, "open", None, None)
            .await
            .unwrap(),
        Some((claimed_by_ann.clone(), false))
    );
    assert_eq!(s.task("t1").await.unwrap(), Some(claimed_by_ann.clone()));

    // Ann releases it: open again, no assignee, everything else untouched.
    assert_eq!(
        s.assign_task("t1", &["claimed"], "clerk", Some("ann"), "open", None, None)
            .await
            .unwrap(),
        Some((open.clone(), true))
    );
    assert_eq!(s.task("t1").await.unwrap(), Some(open.clone()));

    // A holder never matches a task without assignee.
    assert_eq!(
        s.assign_task(
            "t1",
            &["open"],
            "clerk",
            Some("ann"),
            "claimed",
            Some("ann"),
            None
        )
        .await
        .unwrap(),
        Some((open.clone(), false))
    );

    // Bob claims it; a claim needs the task unassigned: one claimed by someone else, even in
    // a status the claim accepts, is not taken over.
    assert_eq!(
        s.assign_task("t1", &["open"], "clerk", None, "claimed", Some("bob"), None)
            .await
            .unwrap(),
        Some((claimed_by_bob_of(&open), true))
    );
    assert_eq!(
        s.assign_task(
            "t1",
            &["open", "claimed"],
            "clerk",
            None,
            "claimed",
            Some("cy"),
            None
        )
        .await
        .unwrap(),
        Some((claimed_by_bob_of(&open), false))
    );
    // A task escalated to another role is not claimed for the old one.
    assert_eq!(
        s.assign_task(
            "t1",
            &["claimed"],
            "direction",
            Some("bob"),
            "open",
            None,
            None
        )
        .await
        .unwrap(),
        Some((claimed_by_bob_of(&open), false))
    );

    // The other task was never touched.
    assert_eq!(
        s.task("t2").await.unwrap(),
        Some(task("t2", "a", "clerk", None))
    );

    // A claim's audit entry is written with it, and only when the claim succeeds.
    let entry = AuditEntry {
        at: 7,
        actor: "key:0a1b".into(),
        role: "achats,operator".into(),
        action: "tasks.claim".into(),
        target: "t2".into(),
        origin: "127.0.0.1:9".into(),
        request_id: "req-1".into(),
        details: "{}".into(),
    };
    let lost = s
        .assign_task(
            "t2",
            &["claimed"],
            "clerk",
            None,
            "claimed",
            Some("ann"),
            Some(&entry),
        )
        .await
        .unwrap();
    assert_eq!(lost.map(|(_, changed)| changed), Some(false));
    assert!(s.audit(0, 0).await.unwrap().is_empty());
    let won = s
        .assign_task(
            "t2",
            &["open"],
            "clerk",
            None,
            "claimed",
            Some("ann"),
            Some(&entry),
        )
        .await
        .unwrap();
    assert_eq!(
        won.map(|(t, changed)| (t.assignee, changed)),
        Some((Some("ann".to_string()), true))
    );
    let trail = s.audit(0, 0).await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].entry, entry);
    assert_eq!(verify_audit(&trail, AUDIT_GENESIS.to_string()), Ok(()));
}

fn claimed_by_bob_of(open: &TaskRecord) -> TaskRecord {
    let mut t = open.clone();
    t.status = "claimed".to_string();
    t.assignee = Some("bob".to_string());
    t
}

async fn count_tasks_by_status(s: Arc<dyn Store>) {
    assert!(s.count_tasks_by_status().await.unwrap().is_empty());
    let mut w = create("a", 1);
    for id in ["t1", "t2", "t3", "t4"] {
        w.tasks_new.push(task(id, "a", "clerk", None));
    }
    let mut done = task("t5", "a", "clerk", None);
    done.status = "completed".to_string();
    w.tasks_new.push(done);
    s.commit(&[w]).await.unwrap();
    assert_eq!(
        s.count_tasks_by_status().await.unwrap(),
        vec![("completed".to_string(), 1), ("open".to_string(), 4)]
    );

    let claimed = s
        .assign_task("t2", &["open"], "clerk", None, "claimed", Some("ann"), None)
        .await
        .unwrap();
    assert_eq!(claimed.map(|(_, changed)| changed), Some(true));
    let mut cancel = advance("a", 1, 2);
    cancel.tasks_updated.push(TaskUpdate {
        id: "t3".to_string(),
        status: "Review".to_string(),
        assignee: None,
        role: None,
        completed_at: None,
        completed_by: None,
        outcome: None,
        data: None,
    });
    s.commit(&[cancel]).await.unwrap();
    // Ordered by status, byte order ("Review" before the lower-case ones).
    assert_eq!(
        s.count_tasks_by_status().await.unwrap(),
        vec![
            ("Review".to_string(), 1),
            ("claimed".to_string(), 1),
            ("completed".to_string(), 1),
            ("open".to_string(), 2),
        ]
    );
}

async fn api_keys_lifecycle(s: Arc<dyn Store>) {
    assert!(s.api_keys().await.unwrap().is_empty());
    assert_eq!(s.api_key_by_hash("hash-of-k1").await.unwrap(), None);

    let k1 = api_key("k1", "ci", 10);
    let k2 = api_key("k2", "ops", 5);
    let k3 = api_key("k3", "ci", 20);
    // `k4`'s name is `k2`'s id: revoking "k2" takes both.
    let k4 = api_key("k4", "k2", 30);
    let mut k0 = api_key("k0", "legacy", 10);
    k0.revoked_at = Some(7);
    for k in [&k1, &k2, &k3, &k4, &k0] {
        s.put_api_key(k).await.unwrap();
    }
    // Oldest first, ties by id.
    assert_eq!(
        s.api_keys().await.unwrap(),
        vec![k2.clone(), k0.clone(), k1.clone(), k3.clone(), k4.clone()]
    );
    assert_eq!(
        s.api_key_by_hash("hash-of-k3").await.unwrap(),
        Some(k3.clone())
    );
    assert_eq!(s.api_key_by_hash("k3").await.unwrap(), None);

    // A taken id or a taken hash is a conflict naming the new key; nothing changes.
    let mut same_id = api_key("k1", "other", 40);
    same_id.hash = "a new hash".to_string();
    assert_conflict(s.put_api_key(&same_id).await, "k1", None);
    let mut same_hash = api_key("k9", "other", 40);
    same_hash.hash = k2.hash.clone();
    assert_conflict(s.put_api_key(&same_hash).await, "k9", None);
    assert_eq!(s.api_keys().await.unwrap().len(), 5);
    assert_eq!(s.api_key_by_hash("a new hash").await.unwrap(), None);
    assert_eq!(s.api_key_by_hash(&k2.hash).await.unwrap(), Some(k2.clone()));

    // By id (and the key named after that id).
    let revoked = |k: &ApiKeyRecord, at: i64| ApiKeyRecord {
        revoked_at: Some(at),
        ..k.clone()
    };
    assert_eq!(
        s.revoke_api_key("k2", 100).await.unwrap(),
        vec![revoked(&k2, 100), revoked(&k4, 100)]
    );
    assert!(s.revoke_api_key("k2", 150).await.unwrap().is_empty());
    // By name: both `ci` keys, oldest first.
    assert_eq!(
        s.revoke_api_key("ci", 200).await.unwrap(),
        vec![revoked(&k1, 200), revoked(&k3, 200)]
    );
    assert!(s.revoke_api_key("ci", 300).await.unwrap().is_empty());
    // An already revoked key keeps its time; an unknown name revokes nothing.
    assert!(s.revoke_api_key("legacy", 300).await.unwrap().is_empty());
    assert!(s.revoke_api_key("nobody", 300).await.unwrap().is_empty());

    assert_eq!(
        s.api_keys().await.unwrap(),
        vec![
            revoked(&k2, 100),
            k0.clone(),
            revoked(&k1, 200),
            revoked(&k3, 200),
            revoked(&k4, 100)
        ]
    );
    // Revoked keys are still found by hash (the caller checks `revoked_at`).
    assert_eq!(
        s.api_key_by_hash(&k1.hash).await.unwrap(),
        Some(revoked(&k1, 200))
    );
}

/// The record `append_audit` must return for entry `n` after `prev`.
fn expected_audit(seq: i64, prev_hash: &str, entry: AuditEntry) -> AuditRecord {
    AuditRecord {
        seq,
        hash: audit_hash(prev_hash, seq, &entry),
        prev_hash: prev_hash.to_string(),
        entry,
    }
}

async fn audit_chain_appends_and_verifies(s: Arc<dyn Store>) {
    assert!(s.audit(0, 0).await.unwrap().is_empty());
    let mut appended = Vec::new();
    let mut prev = AUDIT_GENESIS.to_string();
    for n in 1..=5 {
        let record = s.append_audit(&audit_entry(n)).await.unwrap();
        assert_eq!(record, expected_audit(n, &prev, audit_entry(n)));
        prev = record.hash.clone();
        appended.push(record);
    }
    assert_ne!(appended[0].hash, appended[1].hash);

    let stored = s.audit(0, 0).await.unwrap();
    assert_eq!(stored, appended);
    assert_eq!(verify_audit(&stored, AUDIT_GENESIS.into()), Ok(()));
    // From a known record on.
    assert_eq!(verify_audit(&stored[2..], stored[1].hash.clone()), Ok(()));
    assert_eq!(verify_audit(&stored[2..], AUDIT_GENESIS.into()), Err(3));

    // Any field changed breaks the chain at that record.
    let tampered = |seq: usize, change: fn(&mut AuditRecord)| {
        let mut records = stored.clone();
        change(&mut records[seq - 1]);
        verify_audit(&records, AUDIT_GENESIS.into())
    };
    assert_eq!(
        tampered(3, |r| r.entry.actor = "key:mallory".into()),
        Err(3)
    );
    assert_eq!(tampered(1, |r| r.entry.at += 1), Err(1));
    assert_eq!(tampered(5, |r| r.entry.details = "{}".into()), Err(5));
    assert_eq!(tampered(2, |r| r.entry.target.push('x')), Err(2));
    // Moving text from one field to the next changes the hash too.
    assert_eq!(
        tampered(4, |r| {
            r.entry.role.push_str("POST");
            r.entry.action = r.entry.action.replacen("POST", "", 1);
        }),
        Err(4)
    );
    // A re-hashed record still breaks the link of the next one.
    assert_eq!(
        tampered(2, |r| {
            r.entry.actor = "key:mallory".into();
            r.hash = audit_hash(&r.prev_hash, r.seq, &r.entry);
        }),
        Err(3)
    );
    // A removed record is a gap.
    let mut gap = stored.clone();
    gap.remove(1);
    assert_eq!(verify_audit(&gap, AUDIT_GENESIS.into()), Err(3));

    // The next append continues the chain.
    let sixth = s.append_audit(&audit_entry(6)).await.unwrap();
    assert_eq!(sixth, expected_audit(6, &stored[4].hash, audit_entry(6)));
}

async fn concurrent_audit_appends_form_one_chain(s: Arc<dyn Store>) {
    const APPENDS: i64 = 20;
    let handles: Vec<_> = (1..=APPENDS)
        .map(|n| {
            let s = s.clone();
            tokio::spawn(async move { s.append_audit(&audit_entry(n)).await })
        })
        .collect();
    let mut returned = Vec::new();
    for h in handles {
        returned.push(h.await.expect("append task").expect("append"));
    }

    let stored = s.audit(0, 0).await.unwrap();
    assert_eq!(
        stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=APPENDS).collect::<Vec<_>>()
    );
    assert_eq!(verify_audit(&stored, AUDIT_GENESIS.into()), Ok(()));
    // Each caller got the record as stored, and every entry is there once.
    returned.sort_by_key(|r| r.seq);
    assert_eq!(returned, stored);
    let mut actors: Vec<String> = stored.iter().map(|r| r.entry.actor.clone()).collect();
    actors.sort();
    let mut expected: Vec<String> = (1..=APPENDS).map(|n| audit_entry(n).actor).collect();
    expected.sort();
    assert_eq!(actors, expected);
}

async fn audit_paging(s: Arc<dyn Store>) {
    let mut all = Vec::new();
    for n in 1..=7 {
        all.push(s.append_audit(&audit_entry(n)).await.unwrap());
    }
    assert_eq!(s.audit(0, 3).await.unwrap(), all[0..3].to_vec());
    assert_eq!(s.audit(3, 3).await.unwrap(), all[3..6].to_vec());
    assert_eq!(s.audit(6, 3).await.unwrap(), all[6..7].to_vec());
    assert!(s.audit(7, 3).await.unwrap().is_empty());
    assert!(s.audit(100, 0).await.unwrap().is_empty());
    assert_eq!(s.audit(5, 0).await.unwrap(), all[5..].to_vec());
    assert_eq!(s.audit(-1, -1).await.unwrap(), all);

    // Walking the trail page by page and checking each page from the last hash seen.
    let mut after = 0;
    let mut prev = AUDIT_GENESIS.to_string();
    let mut pages = Vec::new();
    loop {
        let page = s.audit(after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        assert_eq!(verify_audit(&page, prev.clone()), Ok(()));
        after = last.seq;
        prev = last.hash.clone();
        pages.push(page.len());
    }
    assert_eq!(pages, vec![2, 2, 2, 1]);
}

// ---------------------------------------------------------------------------------------------
// Audit entries committed with the writes they record

/// `w` carrying the audit entries numbered `ns`.
fn audited(mut w: CaseWrite, ns: impl IntoIterator<Item = i64>) -> CaseWrite {
    w.audit = ns.into_iter().map(audit_entry).collect();
    w
}

/// A write with nothing but audit entry `n` (as the engine sends for a call that changed no case).
fn audit_only(n: i64) -> CaseWrite {
    CaseWrite {
        audit: vec![audit_entry(n)],
        ..Default::default()
    }
}

/// The whole trail expected when entries `ns` were appended in this order, from the genesis.
fn expected_chain(ns: impl IntoIterator<Item = i64>) -> Vec<AuditRecord> {
    let mut prev = AUDIT_GENESIS.to_string();
    ns.into_iter()
        .zip(1..)
        .map(|(n, seq)| {
            let record = expected_audit(seq, &prev, audit_entry(n));
            prev = record.hash.clone();
            record
        })
        .collect()
}

async fn commit_appends_audit_entries(s: Arc<dyn Store>) {
    s.append_audit(&audit_entry(1)).await.unwrap();
    s.append_audit(&audit_entry(2)).await.unwrap();
    // Entries of several writes, one write without any in between: batch order.
    s.commit(&[
        audited(create("a", 1), [3, 4]),
        create("b", 1),
        audited(create("c", 1), [5]),
    ])
    .await
    .unwrap();
    assert_eq!(s.audit(0, 0).await.unwrap(), expected_chain(1..=5));
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 1)));
    assert_eq!(s.history("c").await.unwrap(), vec![event("c", 1)]);

    // A batch of several rounds (the same case twice): numbered once, still in batch order.
    s.commit(&[
        audited(advance("a", 1, 2), [6]),
        audited(advance("a", 2, 3), [7, 8]),
    ])
    .await
    .unwrap();
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 3)));

    // `append_audit` continues the chain the commits extended.
    let ninth = s.append_audit(&audit_entry(9)).await.unwrap();
    let all = s.audit(0, 0).await.unwrap();
    assert_eq!(all, expected_chain(1..=9));
    assert_eq!(ninth, all[8]);
    assert_eq!(verify_audit(&all, AUDIT_GENESIS.into()), Ok(()));

    // A batch without entries leaves the trail alone.
    s.commit(&[advance("b", 1, 2)]).await.unwrap();
    assert_eq!(s.audit(0, 0).await.unwrap(), all);
}

async fn failed_batch_appends_no_audit(s: Arc<dyn Store>) {
    let mut first = audited(create("a", 1), [1]);
    first.inbox.push(inbox("api", "k1", "a"));
    s.commit(&[first]).await.unwrap();
    let before = s.audit(0, 0).await.unwrap();
    assert_eq!(before, expected_chain([1]));

    // Audited writes (one with nothing else) before a stale update that carries one too.
    let result = s
        .commit(&[
            audited(create("b", 2), [2]),
            audit_only(3),
            audited(advance("a", 0, 1), [4]),
        ])
        .await;
    assert_conflict(result, "a", Some(0));
    // The conflict in a later round (the same case twice before it).
    let result = s
        .commit(&[
            audited(create("c", 1), [5]),
            audited(advance("c", 1, 2), [6]),
            audited(create("a", 1), [7]),
        ])
        .await;
    assert_conflict(result, "a", None);
    // A request taken twice (a duplicate inbox key).
    let mut again = audited(advance("a", 1, 2), [9]);
    again.inbox.push(inbox("api", "k1", "a"));
    let result = s.commit(&[audited(create("d", 1), [8]), again]).await;
    assert_conflict(result, "a", Some(1));

    assert_eq!(s.audit(0, 0).await.unwrap(), before);
    for id in ["b", "c", "d"] {
        assert_eq!(s.case(id).await.unwrap(), None);
        assert!(s.history(id).await.unwrap().is_empty());
    }
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 1)));
    assert_eq!(s.history("a").await.unwrap(), vec![event("a", 1)]);

    // The failed attempts took no number: the chain goes on from the last committed record.
    s.commit(&[audited(create("b", 2), [2])]).await.unwrap();
    let all = s.audit(0, 0).await.unwrap();
    assert_eq!(all, expected_chain([1, 2]));
    assert_eq!(verify_audit(&all, AUDIT_GENESIS.into()), Ok(()));
}

async fn audit_only_writes(s: Arc<dyn Store>) {
    s.commit(&[audit_only(1)]).await.unwrap();
    assert_eq!(s.audit(0, 0).await.unwrap(), expected_chain([1]));
    assert!(s.list_cases(&all_cases()).await.unwrap().is_empty());

    // Around a case write, in one batch.
    s.commit(&[
        audit_only(2),
        audited(create("a", 1), [3]),
        audit_only(4),
        audit_only(5),
    ])
    .await
    .unwrap();
    // Between two rounds' writes (it touches no key, so it joins the first round).
    s.commit(&[
        audited(advance("a", 1, 2), [6]),
        audit_only(7),
        audited(advance("a", 2, 3), [8]),
    ])
    .await
    .unwrap();
    let all = s.audit(0, 0).await.unwrap();
    assert_eq!(all, expected_chain(1..=8));
    assert_eq!(verify_audit(&all, AUDIT_GENESIS.into()), Ok(()));
    assert_eq!(s.case("a").await.unwrap(), Some(case("a", 3)));
    assert_eq!(s.list_cases(&all_cases()).await.unwrap().len(), 1);

    // A write with nothing at all is still a no-op.
    s.commit(&[CaseWrite::default()]).await.unwrap();
    assert_eq!(s.audit(0, 0).await.unwrap(), all);
}

async fn concurrent_audited_commits_and_appends_form_one_chain(s: Arc<dyn Store>) {
    const COMMITS: i64 = 20;
    const APPENDS: i64 = 10;
    let mut commits = Vec::new();
    let mut appends = Vec::new();
    // Spawned interleaved: an append after every other commit.
    for n in 1..=COMMITS {
        let sc = s.clone();
        commits.push(tokio::spawn(async move {
            sc.commit(&[audited(create(&format!("cc{n}"), 1), [n])])
                .await
        }));
        if n % 2 == 0 {
            let sa = s.clone();
            let m = COMMITS + n / 2;
            appends.push(tokio::spawn(async move {
                sa.append_audit(&audit_entry(m)).await
            }));
        }
    }
    for h in commits {
        h.await.expect("commit task").expect("commit");
    }
    let mut returned = Vec::new();
    for h in appends {
        returned.push(h.await.expect("append task").expect("append"));
    }

    let stored = s.audit(0, 0).await.unwrap();
    assert_eq!(
        stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=COMMITS + APPENDS).collect::<Vec<_>>()
    );
    assert_eq!(verify_audit(&stored, AUDIT_GENESIS.into()), Ok(()));
    // Every entry is there once, and each append got its record as stored.
    let mut entries: Vec<AuditEntry> = stored.iter().map(|r| r.entry.clone()).collect();
    entries.sort_by_key(|e| e.at);
    assert_eq!(
        entries,
        (1..=COMMITS + APPENDS).map(audit_entry).collect::<Vec<_>>()
    );
    for r in &returned {
        assert_eq!(Some(r), stored.get((r.seq - 1) as usize));
    }
    assert_eq!(
        s.list_cases(&all_cases()).await.unwrap().len(),
        COMMITS as usize
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only

/// The key of the audit trail's advisory lock (`AUDIT_LOCK` in `postgres.rs`).
const PG_AUDIT_LOCK: i64 = 0x646f_7373_6175_6469;

/// A batch with audit entries waits for the audit lock; a batch without any does not take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_audit_lock_only_for_batches_with_entries() {
    with_postgres_url(|s, url| async move {
        let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(PG_AUDIT_LOCK)
            .execute(&mut holder)
            .await
            .unwrap();

        // Not serialised behind the lock.
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.commit(&[create("free", 1)]),
        )
        .await
        .expect("a batch without audit entries does not wait for the audit lock")
        .unwrap();

        // Waits for it.
        let sc = s.clone();
        let audited_commit =
            tokio::spawn(async move { sc.commit(&[audited(create("held", 1), [1])]).await });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(
            !audited_commit.is_finished(),
            "a batch with audit entries committed while another held the audit lock"
        );
        assert_eq!(s.case("held").await.unwrap(), None);

        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PG_AUDIT_LOCK)
            .execute(&mut holder)
            .await
            .unwrap();
        audited_commit.await.expect("commit task").unwrap();
        assert_eq!(s.audit(0, 0).await.unwrap(), expected_chain([1]));
        assert_eq!(s.case("held").await.unwrap(), Some(case("held", 1)));
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Numbering series

/// The request of effect `key` of case `case_of(key)` for a number of `series` in `period`.
fn number_req(series: &str, period: &str, key: &str, at: i64) -> NumberRequest {
    NumberRequest {
        series: series.to_string(),
        period: period.to_string(),
        key: key.to_string(),
        case_id: case_of(key),
        at,
    }
}

/// The case an effect key belongs to (`c7:invoice#1` → `c7`), as in the engine's keys.
fn case_of(key: &str) -> String {
    key.split(':').next().unwrap_or(key).to_string()
}

fn allocation(series: &str, period: &str, seq: i64, fresh: bool) -> NumberAllocation {
    NumberAllocation {
        series: series.to_string(),
        period: period.to_string(),
        seq,
        fresh,
    }
}

fn number_record(series: &str, period: &str, seq: i64, key: &str, at: i64) -> NumberRecord {
    NumberRecord {
        series: series.to_string(),
        period: period.to_string(),
        seq,
        key: key.to_string(),
        case_id: case_of(key),
        at,
    }
}

/// Allocates and expects success.
async fn number(s: &Arc<dyn Store>, series: &str, period: &str, key: &str) -> NumberAllocation {
    s.allocate_number(&number_req(series, period, key, 5_000))
        .await
        .unwrap_or_else(|e| panic!("allocate {series}/{period} for {key}: {e}"))
}

fn seqs(records: &[NumberRecord]) -> Vec<i64> {
    records.iter().map(|r| r.seq).collect()
}

async fn numbers_are_gapless_and_in_order(s: Arc<dyn Store>) {
    assert!(s.numbers("FAC", "2026").await.unwrap().is_empty());
    for n in 1..=5 {
        let key = format!("c{n}:invoice#1");
        let got = s
            .allocate_number(&number_req("FAC", "2026", &key, 1_000 + n))
            .await
            .unwrap();
        assert_eq!(got, allocation("FAC", "2026", n, true));
    }
    // In order, with who got each number, for which case and when.
    assert_eq!(
        s.numbers("FAC", "2026").await.unwrap(),
        (1..=5)
            .map(|n| number_record("FAC", "2026", n, &format!("c{n}:invoice#1"), 1_000 + n))
            .collect::<Vec<_>>()
    );
}

async fn numbering_series_and_periods_are_independent(s: Arc<dyn Store>) {
    // Interleaved: each (series, period) counts on its own from 1.
    let plan = [
        ("FAC", "2026", 1),
        ("FAC", "2027", 1),
        ("AVO", "2026", 1),
        ("FAC", "2026", 2),
        ("AVO", "2026", 2),
        ("FAC", "2026", 3),
        ("FAC", "2027", 2),
        // Names are compared exactly.
        ("fac", "2026", 1),
        ("FAC", "2026-01", 1),
    ];
    for (i, (series, period, expected)) in plan.into_iter().enumerate() {
        let got = number(&s, series, period, &format!("c{i}:n#1")).await;
        assert_eq!(got, allocation(series, period, expected, true), "step {i}");
    }
    assert_eq!(
        seqs(&s.numbers("FAC", "2026").await.unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(seqs(&s.numbers("FAC", "2027").await.unwrap()), vec![1, 2]);
    assert_eq!(seqs(&s.numbers("AVO", "2026").await.unwrap()), vec![1, 2]);
    assert_eq!(seqs(&s.numbers("fac", "2026").await.unwrap()), vec![1]);
    assert_eq!(seqs(&s.numbers("FAC", "2026-01").await.unwrap()), vec![1]);
    assert!(s.numbers("AVO", "2027").await.unwrap().is_empty());
    let keys: Vec<String> = s
        .numbers("AVO", "2026")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, vec!["c2:n#1", "c4:n#1"]);
}

async fn repeated_number_key_gets_its_number(s: Arc<dyn Store>) {
    let first = s
        .allocate_number(&number_req("FAC", "2026", "a:invoice#1", 100))
        .await
        .unwrap();
    assert_eq!(first, allocation("FAC", "2026", 1, true));
    assert_eq!(
        number(&s, "FAC", "2026", "b:invoice#1").await,
        allocation("FAC", "2026", 2, true)
    );
    // The engine asks again after a crash, later: the same number, not fresh.
    for at in [200, 300] {
        let again = s
            .allocate_number(&number_req("FAC", "2026", "a:invoice#1", at))
            .await
            .unwrap();
        assert_eq!(again, allocation("FAC", "2026", 1, false));
    }
    // Even from another case: the key is what names the request.
    let mut other_case = number_req("FAC", "2026", "b:invoice#1", 400);
    other_case.case_id = "z".to_string();
    assert_eq!(
        s.allocate_number(&other_case).await.unwrap(),
        allocation("FAC", "2026", 2, false)
    );
    // The repeats consumed nothing: the next key gets the next number.
    assert_eq!(
        number(&s, "FAC", "2026", "c:invoice#1").await,
        allocation("FAC", "2026", 3, true)
    );
    // The records keep the first request's case and time.
    assert_eq!(
        s.numbers("FAC", "2026").await.unwrap(),
        vec![
            number_record("FAC", "2026", 1, "a:invoice#1", 100),
            number_record("FAC", "2026", 2, "b:invoice#1", 5_000),
            number_record("FAC", "2026", 3, "c:invoice#1", 5_000),
        ]
    );
}

async fn concurrent_allocations_are_gapless(s: Arc<dyn Store>) {
    const TASKS: i64 = 50;
    let handles: Vec<_> = (1..=TASKS)
        .map(|n| {
            let s = s.clone();
            tokio::spawn(async move {
                let key = format!("c{n}:invoice#1");
                let got = s.allocate_number(&number_req("FAC", "2026", &key, n)).await;
                (key, got)
            })
        })
        .collect();
    let mut given = std::collections::BTreeMap::new();
    for h in handles {
        let (key, got) = h.await.expect("allocation task");
        let got = got.expect("allocate");
        assert!(got.fresh, "{key} got an old number");
        assert_eq!((got.series.as_str(), got.period.as_str()), ("FAC", "2026"));
        assert_eq!(given.insert(got.seq, key), None, "number given twice");
    }
    // Exactly 1..=50: no duplicate (checked above), no gap.
    assert_eq!(
        given.keys().copied().collect::<Vec<_>>(),
        (1..=TASKS).collect::<Vec<_>>()
    );
    let stored = s.numbers("FAC", "2026").await.unwrap();
    assert_eq!(seqs(&stored), (1..=TASKS).collect::<Vec<_>>());
    for r in &stored {
        assert_eq!(
            given.get(&r.seq),
            Some(&r.key),
            "number {} as stored",
            r.seq
        );
        assert_eq!(r.case_id, case_of(&r.key));
    }
    assert_eq!(
        number(&s, "FAC", "2026", "next:invoice#1").await,
        allocation("FAC", "2026", TASKS + 1, true)
    );
}

async fn concurrent_requests_with_one_key_get_one_number(s: Arc<dyn Store>) {
    const KEYS: i64 = 5;
    const COPIES: i64 = 6;
    // Every key asked for by several tasks at once, the copies interleaved.
    let mut handles = Vec::new();
    for copy in 0..COPIES {
        for k in 1..=KEYS {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                let key = format!("c{k}:invoice#1");
                let got = s
                    .allocate_number(&number_req("FAC", "2026", &key, copy))
                    .await;
                (key, got)
            }));
        }
    }
    let mut per_key: std::collections::BTreeMap<String, Vec<NumberAllocation>> = Default::default();
    for h in handles {
        let (key, got) = h.await.expect("allocation task");
        per_key.entry(key).or_default().push(got.expect("allocate"));
    }
    let mut given = Vec::new();
    for (key, answers) in &per_key {
        assert_eq!(answers.len(), COPIES as usize);
        let seq = answers[0].seq;
        assert!(
            answers.iter().all(|a| a.seq == seq),
            "{key} got several numbers: {answers:?}"
        );
        assert_eq!(
            answers.iter().filter(|a| a.fresh).count(),
            1,
            "{key}: exactly one answer is the fresh one: {answers:?}"
        );
        given.push(seq);
    }
    given.sort();
    assert_eq!(given, (1..=KEYS).collect::<Vec<_>>());
    let stored = s.numbers("FAC", "2026").await.unwrap();
    assert_eq!(seqs(&stored), (1..=KEYS).collect::<Vec<_>>());
    for r in &stored {
        assert_eq!(per_key[&r.key][0].seq, r.seq);
    }
    // The losers consumed nothing.
    assert_eq!(
        number(&s, "FAC", "2026", "next:invoice#1").await,
        allocation("FAC", "2026", KEYS + 1, true)
    );
}

async fn number_key_reused_elsewhere_is_refused(s: Arc<dyn Store>) {
    assert_eq!(
        number(&s, "FAC", "2026", "a:invoice#1").await,
        allocation("FAC", "2026", 1, true)
    );
    for (series, period) in [("AVO", "2026"), ("FAC", "2027")] {
        let err = s
            .allocate_number(&number_req(series, period, "a:invoice#1", 9))
            .await
            .expect_err("a key holds one number");
        match &err {
            StoreError::NumberKeyReused(reuse) => {
                assert_eq!(
                    reuse.held,
                    number_record("FAC", "2026", 1, "a:invoice#1", 5_000)
                );
                assert_eq!(reuse.refused, number_req(series, period, "a:invoice#1", 9));
            }
            other => panic!("expected NumberKeyReused, got {other:?}"),
        }
        let message = err.to_string();
        for part in ["a:invoice#1", "FAC", "2026", series, period] {
            assert!(message.contains(part), "{message:?} names {part}");
        }
    }
    // Nothing consumed, anywhere.
    assert!(s.numbers("AVO", "2026").await.unwrap().is_empty());
    assert!(s.numbers("FAC", "2027").await.unwrap().is_empty());
    assert_eq!(
        number(&s, "AVO", "2026", "b:credit#1").await,
        allocation("AVO", "2026", 1, true)
    );
    assert_eq!(
        number(&s, "FAC", "2027", "c:invoice#1").await,
        allocation("FAC", "2027", 1, true)
    );
    assert_eq!(
        number(&s, "FAC", "2026", "d:invoice#1").await,
        allocation("FAC", "2026", 2, true)
    );
    // The key still has its number.
    assert_eq!(
        number(&s, "FAC", "2026", "a:invoice#1").await,
        allocation("FAC", "2026", 1, false)
    );
    assert_eq!(
        s.numbers("FAC", "2026").await.unwrap(),
        vec![
            number_record("FAC", "2026", 1, "a:invoice#1", 5_000),
            number_record("FAC", "2026", 2, "d:invoice#1", 5_000),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_numbers_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dossier.db");
    {
        let s: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
        number(&s, "FAC", "2026", "a:invoice#1").await;
        number(&s, "FAC", "2026", "b:invoice#1").await;
        // Dropped without `close`: a returned allocation is durable.
    }
    let s: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    assert_eq!(
        number(&s, "FAC", "2026", "b:invoice#1").await,
        allocation("FAC", "2026", 2, false)
    );
    assert_eq!(
        number(&s, "FAC", "2026", "c:invoice#1").await,
        allocation("FAC", "2026", 3, true)
    );
}

/// Waits until `n` sessions of the test database wait for a lock (the allocations blocked on a
/// counter's row lock, past their lookup of the key).
async fn wait_for_lock_waiters(conn: &mut sqlx::PgConnection, n: i64) {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} of {n} allocations blocked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Two nodes racing on one key, deterministically: both find the key free and block on the
/// counter; the loser's record hits the unique key, its transaction (counter included) rolls
/// back, and it answers the winner's number. A key taken in another series meanwhile is refused
/// the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_number_key_race_rolls_back_the_loser() {
    with_postgres_url(|s, url| async move {
        number(&s, "FAC", "2026", "first:invoice#1").await;
        let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut watcher = sqlx::PgConnection::connect(&url).await.unwrap();
        let lock_counter = "SELECT last FROM number_series \
                            WHERE series = 'FAC' AND period = '2026' FOR UPDATE";

        // The same key twice.
        let mut tx = holder.begin().await.unwrap();
        sqlx::query(lock_counter).execute(&mut *tx).await.unwrap();
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.allocate_number(&number_req("FAC", "2026", "race:invoice#1", 7))
                        .await
                })
            })
            .collect();
        wait_for_lock_waiters(&mut watcher, 2).await;
        tx.commit().await.unwrap();
        let mut answers = Vec::new();
        for r in racers {
            answers.push(r.await.expect("racer").expect("allocate"));
        }
        answers.sort_by_key(|a| a.fresh);
        assert_eq!(
            answers,
            vec![
                allocation("FAC", "2026", 2, false),
                allocation("FAC", "2026", 2, true)
            ]
        );

        // The key taken in another series while the request waits for the counter.
        let mut tx = holder.begin().await.unwrap();
        sqlx::query(lock_counter).execute(&mut *tx).await.unwrap();
        let sc = s.clone();
        let waiting = tokio::spawn(async move {
            sc.allocate_number(&number_req("FAC", "2026", "x:n#1", 8))
                .await
        });
        wait_for_lock_waiters(&mut watcher, 1).await;
        assert_eq!(
            number(&s, "AVO", "2026", "x:n#1").await,
            allocation("AVO", "2026", 1, true)
        );
        tx.commit().await.unwrap();
        match waiting.await.expect("waiting request") {
            Err(StoreError::NumberKeyReused(reuse)) => {
                assert_eq!(reuse.held, number_record("AVO", "2026", 1, "x:n#1", 5_000));
                assert_eq!(reuse.refused, number_req("FAC", "2026", "x:n#1", 8));
            }
            other => panic!("expected NumberKeyReused, got {other:?}"),
        }

        // The losers' increments were rolled back: no gap.
        assert_eq!(
            number(&s, "FAC", "2026", "next:invoice#1").await,
            allocation("FAC", "2026", 3, true)
        );
        let (last,): (i64,) = sqlx::query_as(
            "SELECT last FROM number_series WHERE series = 'FAC' AND period = '2026'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        assert_eq!(last, 3);
        let keys: Vec<String> = s
            .numbers("FAC", "2026")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(
            keys,
            vec!["first:invoice#1", "race:invoice#1", "next:invoice#1"]
        );
    })
    .await
}

/// A counter at the largest BIGINT gives no number (and is not wrapped or turned into anything
/// else); repeats are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_exhausted_number_series_is_an_error() {
    with_postgres_url(|s, url| async move {
        number(&s, "FAC", "2026", "a:invoice#1").await;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE number_series SET last = $1")
            .bind(i64::MAX)
            .execute(&mut conn)
            .await
            .unwrap();
        match s
            .allocate_number(&number_req("FAC", "2026", "b:invoice#1", 1))
            .await
        {
            Err(StoreError::NumberSeriesExhausted { series, period }) => {
                assert_eq!((series.as_str(), period.as_str()), ("FAC", "2026"))
            }
            other => panic!("expected NumberSeriesExhausted, got {other:?}"),
        }
        let (last,): (i64,) = sqlx::query_as("SELECT last FROM number_series")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(last, i64::MAX);
        assert_eq!(seqs(&s.numbers("FAC", "2026").await.unwrap()), vec![1]);
        assert_eq!(
            number(&s, "FAC", "2026", "a:invoice#1").await,
            allocation("FAC", "2026", 1, false)
        );
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Ledger

fn dec(s: &str) -> Decimal {
    s.parse().expect("a decimal")
}

/// A posting with the default bounds of a `ledger` step (min 0, no max).
fn posting(account: &str, amount: &str) -> PostingRequest {
    PostingRequest {
        account: account.to_string(),
        amount: dec(amount),
        min: Some(Decimal::ZERO),
        max: None,
    }
}

fn ledger_req(key: &str, postings: Vec<PostingRequest>) -> LedgerRequest {
    LedgerRequest {
        key: key.to_string(),
        case_id: format!("case-{key}"),
        at: 1_000,
        postings,
    }
}

/// The balances of the postings made, or the refusal.
fn posted(o: LedgerOutcome) -> Vec<(String, i64, Decimal)> {
    match o {
        LedgerOutcome::Posted { postings, .. } => postings
            .into_iter()
            .map(|p| (p.account, p.seq, p.balance))
            .collect(),
        LedgerOutcome::Refused(r) => panic!("refused: {r:?}"),
    }
}

async fn balance(s: &Arc<dyn Store>, account: &str) -> Option<Decimal> {
    s.ledger_accounts(account)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.account == account)
        .map(|a| a.balance)
}

async fn ledger_postings_apply_all_or_none(s: Arc<dyn Store>) {
    let buy = s
        .post_ledger(&ledger_req(
            "c1:achat#1",
            vec![posting("credits/A", "100.50")],
        ))
        .await
        .unwrap();
    assert_eq!(posted(buy), vec![("credits/A".into(), 1, dec("100.50"))]);
    // A transfer of 40 from A to B: both postings, each with its balance after it.
    let transfer = s
        .post_ledger(&ledger_req(
            "c2:transfert#1",
            vec![posting("credits/A", "-40"), posting("credits/B", "40")],
        ))
        .await
        .unwrap();
    assert_eq!(
        posted(transfer),
        vec![
            ("credits/A".into(), 2, dec("60.50")),
            ("credits/B".into(), 1, dec("40")),
        ]
    );
    // A transfer of 70 breaks A's lower bound: B is not credited either.
    let refused = s
        .post_ledger(&ledger_req(
            "c3:transfert#1",
            vec![posting("credits/B", "70"), posting("credits/A", "-70")],
        ))
        .await
        .unwrap();
    match refused {
        LedgerOutcome::Refused(r) => {
            assert_eq!(r.index, 1);
            assert_eq!(r.account, "credits/A");
            assert_eq!(r.balance, dec("60.50"));
            assert_eq!(r.amount, dec("-70"));
            assert_eq!(r.bound, Decimal::ZERO);
            assert!(r.lower);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(balance(&s, "credits/A").await, Some(dec("60.50")));
    assert_eq!(balance(&s, "credits/B").await, Some(dec("40")));
    assert_eq!(s.ledger_postings("credits/B").await.unwrap().len(), 1);
    // An upper bound: a capacity of 2 places.
    let place = |key: &str| {
        ledger_req(
            key,
            vec![PostingRequest {
                max: Some(dec("2")),
                ..posting("places/atelier", "1")
            }],
        )
    };
    posted(s.post_ledger(&place("r1:place#1")).await.unwrap());
    posted(s.post_ledger(&place("r2:place#1")).await.unwrap());
    match s.post_ledger(&place("r3:place#1")).await.unwrap() {
        LedgerOutcome::Refused(r) => assert!(!r.lower && r.bound == dec("2")),
        other => panic!("a third place: {other:?}"),
    }
    // No lower bound: a running total may go below zero; a posting of 0 reads a balance.
    let total = s
        .post_ledger(&ledger_req(
            "av1:tva#1",
            vec![
                PostingRequest {
                    min: None,
                    ..posting("tva/2026-11/TVA", "-18.00")
                },
                posting("credits/A", "0"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(
        posted(total),
        vec![
            ("tva/2026-11/TVA".into(), 1, dec("-18.00")),
            ("credits/A".into(), 3, dec("60.50")),
        ]
    );
}

async fn ledger_repeated_key_posts_once(s: Arc<dyn Store>) {
    let req = ledger_req(
        "c1:debit#1",
        vec![posting("credits/A", "10"), posting("stock/ecran", "3")],
    );
    let first = s.post_ledger(&req).await.unwrap();
    let again = s.post_ledger(&req).await.unwrap();
    match (&first, &again) {
        (
            LedgerOutcome::Posted {
                postings: a,
                fresh: true,
            },
            LedgerOutcome::Posted {
                postings: b,
                fresh: false,
            },
        ) => assert_eq!(a, b, "a repeat answers the postings made"),
        other => panic!("{other:?}"),
    }
    assert_eq!(balance(&s, "credits/A").await, Some(dec("10")));
    assert_eq!(balance(&s, "stock/ecran").await, Some(dec("3")));
    let journal = s.ledger_postings("credits/A").await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].key, "c1:debit#1");
    assert_eq!(journal[0].case_id, "case-c1:debit#1");
}

async fn ledger_concurrent_debits_respect_the_bound(s: Arc<dyn Store>) {
    const STOCK: i64 = 10;
    const ASKS: i64 = 25;
    posted(
        s.post_ledger(&ledger_req(
            "r:stock#1",
            vec![posting("stock/piece", &STOCK.to_string())],
        ))
        .await
        .unwrap(),
    );
    // 25 cases take one part each, at once, some also crediting a second account (the lock
    // order must keep two-account requests from deadlocking).
    let mut handles = Vec::new();
    for i in 0..ASKS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut postings = vec![posting("stock/piece", "-1")];
            if i % 2 == 0 {
                postings.insert(0, posting("sorties/atelier", "1"));
            }
            s.post_ledger(&ledger_req(&format!("c{i}:piece#1"), postings))
                .await
                .expect("post")
        }));
    }
    let mut taken = 0;
    for h in handles {
        if let LedgerOutcome::Posted { .. } = h.await.expect("task") {
            taken += 1;
        }
    }
    assert_eq!(taken, STOCK, "exactly the stock is handed out");
    assert_eq!(balance(&s, "stock/piece").await, Some(Decimal::ZERO));
    let journal = s.ledger_postings("stock/piece").await.unwrap();
    assert_eq!(journal.len() as i64, STOCK + 1);
    // Each posting's balance follows from the one before: no lost update.
    for w in journal.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].balance, w[0].balance + w[1].amount);
    }
}

async fn ledger_accounts_by_prefix(s: Arc<dyn Store>) {
    for (i, a) in [
        "tva/2026-11/TVA",
        "tva/2026-11/TVAB",
        "tva/2026-12/TVA",
        "tv",
    ]
    .iter()
    .enumerate()
    {
        posted(
            s.post_ledger(&ledger_req(&format!("k{i}"), vec![posting(a, "5")]))
                .await
                .unwrap(),
        );
    }
    let names: Vec<String> = s
        .ledger_accounts("tva/2026-11/")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.account)
        .collect();
    assert_eq!(names, vec!["tva/2026-11/TVA", "tva/2026-11/TVAB"]);
    assert_eq!(s.ledger_accounts("").await.unwrap().len(), 4);
    assert!(s.ledger_accounts("zz").await.unwrap().is_empty());
}

/// A restart on one node while another hands the same effect out: copies of one request race,
/// exactly one applies it, the others answer with its postings.
async fn ledger_concurrent_copies_of_one_request_post_once(s: Arc<dyn Store>) {
    let mut handles = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.post_ledger(&ledger_req(
                "c1:transfert#1",
                vec![posting("credits/B", "5"), posting("recus/B", "5")],
            ))
            .await
            .expect("post")
        }));
    }
    let mut fresh = 0;
    let mut answers = Vec::new();
    for h in handles {
        match h.await.expect("task") {
            LedgerOutcome::Posted { postings, fresh: f } => {
                fresh += usize::from(f);
                answers.push(postings);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fresh, 1, "one copy applies the request");
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(balance(&s, "credits/B").await, Some(dec("5")));
    assert_eq!(balance(&s, "recus/B").await, Some(dec("5")));
}

// ---------------------------------------------------------------------------------------------
// Unique identifiers

fn id_claim(id: &str, key: &str) -> IdClaim {
    IdClaim {
        id: id.to_string(),
        key: key.to_string(),
        case_id: format!("case-{key}"),
        at: 1_000,
    }
}

async fn unique_ids_are_given_once(s: Arc<dyn Store>) {
    let claimed = s
        .claim_unique_id(&id_claim("CI261121-3F9A-PT", "c1:id#1"))
        .await;
    assert_eq!(claimed.unwrap(), IdClaimOutcome::Claimed);
    // Another case drawing the same identifier must draw again.
    let taken = s
        .claim_unique_id(&id_claim("CI261121-3F9A-PT", "c2:id#1"))
        .await;
    assert_eq!(taken.unwrap(), IdClaimOutcome::Taken);
    // A repeated request keeps the identifier it has, whatever it drew this time.
    let held = s
        .claim_unique_id(&id_claim("CI261121-0000-PT", "c1:id#1"))
        .await;
    assert_eq!(
        held.unwrap(),
        IdClaimOutcome::Held("CI261121-3F9A-PT".into())
    );
    // Copies of one request racing on two identifiers: the key gets exactly one.
    let mut handles = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.claim_unique_id(&id_claim(&format!("CI261121-{i:04}-CL"), "c3:id#1"))
                .await
                .expect("claim")
        }));
    }
    let mut claimed = Vec::new();
    let mut held = std::collections::BTreeSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.await.expect("task") {
            IdClaimOutcome::Claimed => claimed.push(format!("CI261121-{i:04}-CL")),
            IdClaimOutcome::Held(id) => {
                held.insert(id);
            }
            IdClaimOutcome::Taken => panic!("no copy drew a taken identifier"),
        }
    }
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert!(held.iter().all(|id| *id == claimed[0]), "{held:?}");
}
