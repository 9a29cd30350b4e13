//! Pieces shared by the SQL backends: column lists, row tuples and their conversion into records,
//! and the planning of a batch into rounds that can be applied with batched statements.
//!
//! Both schemas are identical (see `migrations/`), so the column lists and the positional row
//! tuples are shared; each backend only differs in how it binds and batches.

use std::collections::HashSet;

use crate::{
    audit_hash, ApiKeyRecord, AuditEntry, AuditRecord, CaseRecord, CaseWrite, DefinitionRecord,
    EffectRecord, EventRecord, InboxRecord, NumberAllocation, NumberKeyReuse, NumberRecord,
    NumberRequest, StoreError, TaskRecord, TaskUpdate, TimerRecord, WaitRecord, AUDIT_GENESIS,
};

// Column lists as macros rather than consts so that `concat!` can build whole `&'static str`
// statements from them (sqlx caches prepared statements by their SQL text).
macro_rules! case_cols {
    () => {
        "id, workflow_id, workflow_version, workflow_hash, business_key, parent_id, status, \
         current_step, data, pins, last_seq, last_hash, created_at, updated_at"
    };
}
macro_rules! event_cols {
    () => {
        "case_id, seq, at, kind, payload, prev_hash, hash"
    };
}
macro_rules! effect_cols {
    () => {
        "key, case_id, step, connector, operation, request, attempt, timeout_ms, created_at"
    };
}
macro_rules! timer_cols {
    () => {
        "id, case_id, fire_at, purpose"
    };
}
macro_rules! wait_cols {
    () => {
        "id, case_id, event_name, correlation, created_at"
    };
}
macro_rules! task_cols {
    () => {
        "id, case_id, workflow_id, step, role, title, form, status, assignee, due_at, \
         created_at, completed_at, completed_by, outcome, data"
    };
}
macro_rules! definition_cols {
    () => {
        "hash, kind, name, version, source, loaded_at"
    };
}
macro_rules! inbox_cols {
    () => {
        "scope, key, request_hash, case_id, status, created_at"
    };
}
macro_rules! api_key_cols {
    () => {
        "id, name, role, hash, created_at, revoked_at"
    };
}
macro_rules! audit_cols {
    () => {
        "seq, at, actor, role, action, target, origin, request_id, details, prev_hash, hash"
    };
}
macro_rules! number_cols {
    () => {
        "series, period, seq, key, case_id, at"
    };
}
pub(crate) use {
    api_key_cols, audit_cols, case_cols, definition_cols, effect_cols, event_cols, inbox_cols,
    number_cols, task_cols, timer_cols, wait_cols,
};

// Positional row tuples, decoded in the order of the column lists above. Tuples implement
// `FromRow` for every sqlx database, which keeps the record types free of sqlx derives.
pub(crate) type CaseRow = (
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    String,
    String,
    i64,
    String,
    i64,
    i64,
);
pub(crate) type EventRow = (String, i64, i64, String, String, String, String);
pub(crate) type EffectRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    i64,
);
pub(crate) type TimerRow = (String, String, i64, String);
pub(crate) type WaitRow = (String, String, String, String, i64);
pub(crate) type TaskRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);
pub(crate) type DefinitionRow = (String, String, String, Option<i64>, String, i64);
pub(crate) type InboxRow = (String, String, String, String, String, i64);
pub(crate) type ApiKeyRow = (String, String, String, String, i64, Option<i64>);
pub(crate) type NumberRow = (String, String, i64, String, String, i64);
pub(crate) type AuditRow = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

pub(crate) fn case_from(r: CaseRow) -> CaseRecord {
    CaseRecord {
        id: r.0,
        workflow_id: r.1,
        workflow_version: r.2,
        workflow_hash: r.3,
        business_key: r.4,
        parent_id: r.5,
        status: r.6,
        current_step: r.7,
        data: r.8,
        pins: r.9,
        last_seq: r.10,
        last_hash: r.11,
        created_at: r.12,
        updated_at: r.13,
    }
}

pub(crate) fn event_from(r: EventRow) -> EventRecord {
    EventRecord {
        case_id: r.0,
        seq: r.1,
        at: r.2,
        kind: r.3,
        payload: r.4,
        prev_hash: r.5,
        hash: r.6,
    }
}

pub(crate) fn effect_from(r: EffectRow) -> EffectRecord {
    EffectRecord {
        key: r.0,
        case_id: r.1,
        step: r.2,
        connector: r.3,
        operation: r.4,
        request: r.5,
        attempt: r.6,
        timeout_ms: r.7,
        created_at: r.8,
    }
}

pub(crate) fn timer_from(r: TimerRow) -> TimerRecord {
    TimerRecord {
        id: r.0,
        case_id: r.1,
        fire_at: r.2,
        purpose: r.3,
    }
}

pub(crate) fn wait_from(r: WaitRow) -> WaitRecord {
    WaitRecord {
        id: r.0,
        case_id: r.1,
        event_name: r.2,
        correlation: r.3,
        created_at: r.4,
    }
}

pub(crate) fn task_from(r: TaskRow) -> TaskRecord {
    TaskRecord {
        id: r.0,
        case_id: r.1,
        workflow_id: r.2,
        step: r.3,
        role: r.4,
        title: r.5,
        form: r.6,
        status: r.7,
        assignee: r.8,
        due_at: r.9,
        created_at: r.10,
        completed_at: r.11,
        completed_by: r.12,
        outcome: r.13,
        data: r.14,
    }
}

pub(crate) fn definition_from(r: DefinitionRow) -> DefinitionRecord {
    DefinitionRecord {
        hash: r.0,
        kind: r.1,
        name: r.2,
        version: r.3,
        source: r.4,
        loaded_at: r.5,
    }
}

pub(crate) fn inbox_from(r: InboxRow) -> InboxRecord {
    InboxRecord {
        scope: r.0,
        key: r.1,
        request_hash: r.2,
        case_id: r.3,
        status: r.4,
        created_at: r.5,
    }
}

pub(crate) fn api_key_from(r: ApiKeyRow) -> ApiKeyRecord {
    ApiKeyRecord {
        id: r.0,
        name: r.1,
        role: r.2,
        hash: r.3,
        created_at: r.4,
        revoked_at: r.5,
    }
}

pub(crate) fn audit_from(r: AuditRow) -> AuditRecord {
    AuditRecord {
        seq: r.0,
        entry: AuditEntry {
            at: r.1,
            actor: r.2,
            role: r.3,
            action: r.4,
            target: r.5,
            origin: r.6,
            request_id: r.7,
            details: r.8,
        },
        prev_hash: r.9,
        hash: r.10,
    }
}

pub(crate) fn number_from(r: NumberRow) -> NumberRecord {
    NumberRecord {
        series: r.0,
        period: r.1,
        seq: r.2,
        key: r.3,
        case_id: r.4,
        at: r.5,
    }
}

/// The answer to `req` when its key already holds `existing`: that number again (not fresh) if
/// it is of the series and period asked for, else [`StoreError::NumberKeyReused`].
pub(crate) fn repeated_number(
    existing: NumberRecord,
    req: &NumberRequest,
) -> Result<NumberAllocation, StoreError> {
    if existing.series == req.series && existing.period == req.period {
        Ok(NumberAllocation {
            series: existing.series,
            period: existing.period,
            seq: existing.seq,
            fresh: false,
        })
    } else {
        Err(StoreError::NumberKeyReused(Box::new(NumberKeyReuse {
            held: existing,
            refused: req.clone(),
        })))
    }
}

/// The answer to `req` when it was just given number `seq`.
pub(crate) fn fresh_number(req: &NumberRequest, seq: i64) -> NumberAllocation {
    NumberAllocation {
        series: req.series.clone(),
        period: req.period.clone(),
        seq,
        fresh: true,
    }
}

/// Orders revoked keys as listings are: oldest first, ties by id. (`UPDATE ... RETURNING`
/// promises no order.)
pub(crate) fn sort_api_keys(keys: &mut [ApiKeyRecord]) {
    keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
}

/// The conflict error of an API key whose id or hash exists already. `case_id` carries the
/// key's id.
pub(crate) fn api_key_conflict(key: &ApiKeyRecord) -> crate::StoreError {
    crate::StoreError::Conflict {
        case_id: key.id.clone(),
        expected: None,
    }
}

/// The record that follows `last` (its `(seq, hash)`, `None` for an empty trail).
pub(crate) fn next_audit_record(last: Option<(i64, String)>, entry: &AuditEntry) -> AuditRecord {
    let (seq, prev_hash) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, AUDIT_GENESIS.to_string()),
    };
    AuditRecord {
        seq,
        hash: audit_hash(&prev_hash, seq, entry),
        prev_hash,
        entry: entry.clone(),
    }
}

/// The records that follow `last` for `entries`, in order: each is [`next_audit_record`] of the
/// one before, exactly as if each entry had been appended on its own.
pub(crate) fn next_audit_records<'a>(
    mut last: Option<(i64, String)>,
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Vec<AuditRecord> {
    entries
        .into_iter()
        .map(|entry| {
            let record = next_audit_record(last.take(), entry);
            last = Some((record.seq, record.hash.clone()));
            record
        })
        .collect()
}

/// The audit entries a batch appends: every write's, in batch order.
pub(crate) fn batch_audit(batch: &[CaseWrite]) -> Vec<&AuditEntry> {
    batch.iter().flat_map(|w| &w.audit).collect()
}

/// A read `limit` as SQL sees it: zero or negative means "no limit" (so that `Default` filters
/// return everything rather than nothing).
pub(crate) fn sql_limit(limit: i64) -> i64 {
    if limit <= 0 {
        i64::MAX
    } else {
        limit
    }
}

/// The same rule as [`sql_limit`], for the in-memory store.
pub(crate) fn take_limit(limit: i64) -> usize {
    if limit <= 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

/// The case a write is about, for error reports: the case row's id, else the case of its first
/// side row. A write with nothing at all (or only audit entries, which never conflict) has no
/// case, hence the empty string.
pub(crate) fn write_case_id(w: &CaseWrite) -> String {
    if let Some(c) = &w.case {
        return c.id.clone();
    }
    w.events
        .first()
        .map(|e| &e.case_id)
        .or_else(|| w.effects_new.first().map(|e| &e.case_id))
        .or_else(|| w.timers_new.first().map(|t| &t.case_id))
        .or_else(|| w.waits_new.first().map(|t| &t.case_id))
        .or_else(|| w.tasks_new.first().map(|t| &t.case_id))
        .or_else(|| w.inbox.first().map(|i| &i.case_id))
        .cloned()
        .unwrap_or_default()
}

/// The conflict error blaming one write of a batch.
pub(crate) fn conflict_of(w: &CaseWrite) -> crate::StoreError {
    crate::StoreError::Conflict {
        case_id: write_case_id(w),
        expected: w.expected_last_seq,
    }
}

/// Splits a batch into consecutive rounds in which no two writes touch the same key (case id,
/// effect key, timer id, wait id, task id or inbox `(scope, key)`).
///
/// The contract is that a batch means "apply the writes one after the other". Within a round the
/// writes are independent, so the PostgreSQL backend may apply them table by table with one
/// batched statement each (all case inserts, then all events, then all deletes...) and get exactly
/// the sequential result. (The SQLite writer applies writes one by one and needs no rounds.) A
/// write that touches a key an earlier write of the round touched (the same case twice, an effect
/// inserted by one write and removed by the next...) starts a new round. In practice a group
/// commit carries one transition per case and has a single round. The batch's audit entries
/// are no part of the rounds: they are numbered and inserted once, after the last round.
pub(crate) fn rounds(batch: &[CaseWrite]) -> Vec<&[CaseWrite]> {
    let mut out = Vec::new();
    let mut seen: HashSet<WriteKey<'_>> = HashSet::new();
    let mut start = 0;
    for (i, w) in batch.iter().enumerate() {
        let keys = write_keys(w);
        if keys.iter().any(|k| seen.contains(k)) {
            out.push(&batch[start..i]);
            start = i;
            seen.clear();
        }
        seen.extend(keys);
    }
    if start < batch.len() {
        out.push(&batch[start..]);
    }
    out
}

/// A key a write touches: its table's tag, then the key (the second part is empty but for the
/// inbox, whose key is `(scope, key)`).
type WriteKey<'a> = (u8, &'a str, &'a str);

/// Every key a write touches, tagged by table. Events are not included: they are only ever
/// inserted, and a duplicate is a conflict whatever the order. Inbox keys are (an inbox row is
/// only ever inserted too): a second write inserting the same `(scope, key)` then starts a new
/// round, where its insert fails as a conflict like any other duplicate. Audit entries have no
/// key of their own (they are numbered when the batch is committed, after its rounds): a write
/// with only audit entries touches no key and joins any round.
fn write_keys(w: &CaseWrite) -> Vec<WriteKey<'_>> {
    let mut keys = Vec::with_capacity(
        1 + w.effects_new.len()
            + w.effects_done.len()
            + w.timers_new.len()
            + w.timers_done.len()
            + w.waits_new.len()
            + w.waits_done.len()
            + w.tasks_new.len()
            + w.tasks_updated.len()
            + w.inbox.len(),
    );
    if let Some(c) = &w.case {
        keys.push((0, c.id.as_str(), ""));
    }
    keys.extend(w.effects_new.iter().map(|e| (1, e.key.as_str(), "")));
    keys.extend(w.effects_done.iter().map(|k| (1, k.as_str(), "")));
    keys.extend(w.timers_new.iter().map(|t| (2, t.id.as_str(), "")));
    keys.extend(w.timers_done.iter().map(|k| (2, k.as_str(), "")));
    keys.extend(w.waits_new.iter().map(|t| (3, t.id.as_str(), "")));
    keys.extend(w.waits_done.iter().map(|k| (3, k.as_str(), "")));
    keys.extend(w.tasks_new.iter().map(|t| (4, t.id.as_str(), "")));
    keys.extend(w.tasks_updated.iter().map(|t| (4, t.id.as_str(), "")));
    keys.extend(
        w.inbox
            .iter()
            .map(|i| (5, i.scope.as_str(), i.key.as_str())),
    );
    keys
}

/// The rows of one round, gathered per table so that each table gets one batched statement.
#[derive(Default)]
pub(crate) struct RoundRows<'a> {
    pub new_cases: Vec<&'a CaseRecord>,
    /// Case row and the `last_seq` it must replace.
    pub updated_cases: Vec<(&'a CaseRecord, i64)>,
    pub events: Vec<&'a EventRecord>,
    pub effects_done: Vec<&'a str>,
    pub timers_done: Vec<&'a str>,
    pub waits_done: Vec<&'a str>,
    pub effects_new: Vec<&'a EffectRecord>,
    pub timers_new: Vec<&'a TimerRecord>,
    pub waits_new: Vec<&'a WaitRecord>,
    pub tasks_new: Vec<&'a TaskRecord>,
    pub tasks_updated: Vec<&'a TaskUpdate>,
    pub inbox: Vec<&'a InboxRecord>,
}

impl<'a> RoundRows<'a> {
    pub(crate) fn gather(round: &'a [CaseWrite]) -> Self {
        let mut r = RoundRows::default();
        for w in round {
            if let Some(c) = &w.case {
                match w.expected_last_seq {
                    None => r.new_cases.push(c),
                    Some(n) => r.updated_cases.push((c, n)),
                }
            }
            r.events.extend(w.events.iter());
            r.effects_done
                .extend(w.effects_done.iter().map(String::as_str));
            r.timers_done
                .extend(w.timers_done.iter().map(String::as_str));
            r.waits_done.extend(w.waits_done.iter().map(String::as_str));
            r.effects_new.extend(w.effects_new.iter());
            r.timers_new.extend(w.timers_new.iter());
            r.waits_new.extend(w.waits_new.iter());
            r.tasks_new.extend(w.tasks_new.iter());
            r.tasks_updated.extend(w.tasks_updated.iter());
            r.inbox.extend(w.inbox.iter());
        }
        r
    }
}

/// Why applying a round failed.
pub(crate) enum RoundError {
    /// A write of the round conflicts (stale `last_seq`, duplicate key, missing task); which one
    /// is found by replaying the batch write by write.
    Conflict,
    Db(sqlx::Error),
}

impl From<sqlx::Error> for RoundError {
    /// Unique violations are conflicts (a duplicate case, event, effect, timer, wait or task
    /// means two transitions raced, a duplicate inbox key a request taken twice); anything else
    /// is a database failure.
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => RoundError::Conflict,
            _ => RoundError::Db(e),
        }
    }
}

/// Applies a ledger request's postings to the balances they start from (`balances`: every
/// account of the request, 0 for a new one), in order. Returns the postings made, numbered from
/// `counts` (each account's last `seq`), or the first posting refused by a bound. A posting of
/// zero reads the balance and checks no bound.
pub(crate) fn apply_postings(
    req: &crate::LedgerRequest,
    balances: &mut std::collections::BTreeMap<String, crate::Decimal>,
    counts: &mut std::collections::BTreeMap<String, i64>,
) -> Result<Result<Vec<crate::LedgerPosting>, crate::LedgerRefusal>, StoreError> {
    let mut made = Vec::with_capacity(req.postings.len());
    for (index, p) in req.postings.iter().enumerate() {
        let before = balances.get(&p.account).copied().unwrap_or_default();
        let after = before
            .checked_add(p.amount)
            .ok_or_else(|| StoreError::Ledger {
                account: p.account.clone(),
                message: format!("{before} + {} does not fit an exact decimal", p.amount),
            })?;
        if !p.amount.is_zero() {
            let refused = |bound: crate::Decimal, lower: bool| crate::LedgerRefusal {
                index,
                account: p.account.clone(),
                balance: before,
                amount: p.amount,
                bound,
                lower,
            };
            if let Some(min) = p.min.filter(|m| after < *m) {
                return Ok(Err(refused(min, true)));
            }
            if let Some(max) = p.max.filter(|m| after > *m) {
                return Ok(Err(refused(max, false)));
            }
        }
        let seq = counts.entry(p.account.clone()).or_insert(0);
        *seq += 1;
        balances.insert(p.account.clone(), after);
        made.push(crate::LedgerPosting {
            account: p.account.clone(),
            seq: *seq,
            amount: p.amount,
            balance: after,
            key: req.key.clone(),
            index: index as i64,
            case_id: req.case_id.clone(),
            at: req.at,
        });
    }
    Ok(Ok(made))
}

/// A decimal read back from the store.
pub(crate) fn stored_decimal(account: &str, text: &str) -> Result<crate::Decimal, StoreError> {
    text.parse().map_err(|_| StoreError::Ledger {
        account: account.to_string(),
        message: format!("the stored quantity {text:?} is not a decimal"),
    })
}

/// The distinct accounts of a request, sorted: the order locks are taken in, so two requests
/// never wait for each other in a circle.
pub(crate) fn request_accounts(req: &crate::LedgerRequest) -> Vec<String> {
    let set: std::collections::BTreeSet<&String> =
        req.postings.iter().map(|p| &p.account).collect();
    set.into_iter().cloned().collect()
}

/// The columns of `ledger_postings`, in the order of [`PostingRow`].
pub(crate) const POSTING_COLS: &str = "account, seq, amount, balance, key, idx, case_id, at";
/// A `ledger_postings` row (quantities as their exact decimal text).
pub(crate) type PostingRow = (String, i64, String, String, String, i64, String, i64);

pub(crate) fn posting_from(r: PostingRow) -> Result<crate::LedgerPosting, StoreError> {
    Ok(crate::LedgerPosting {
        amount: stored_decimal(&r.0, &r.2)?,
        balance: stored_decimal(&r.0, &r.3)?,
        account: r.0,
        seq: r.1,
        key: r.4,
        index: r.5,
        case_id: r.6,
        at: r.7,
    })
}

pub(crate) fn account_from(r: (String, String, i64)) -> Result<crate::LedgerAccount, StoreError> {
    Ok(crate::LedgerAccount {
        balance: stored_decimal(&r.0, &r.1)?,
        account: r.0,
        postings: r.2,
    })
}
