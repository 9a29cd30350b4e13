//! Durable storage for Dossier: cases, their hash-chained histories, the effect outbox, timers,
//! event waits, human tasks and the content-addressed definitions (workflows, rules, templates)
//! that cases are pinned to.
//!
//! This crate knows nothing about workflows or the state machine: it stores records whose JSON
//! payloads it never interprets. The runtime turns state-machine transitions into a [`CaseWrite`]
//! and hands many of them at once to [`Store::commit`], which applies them in one transaction
//! (group commit). A commit is all or nothing: either every event, outbox row, timer, wait, task,
//! inbox record and audit entry of the batch is durable, or none is.
//!
//! Three implementations share one contract and one test suite: [`sqlite::SqliteStore`] (the
//! embedded default: WAL, `synchronous=FULL`), [`postgres::PgStore`] and [`memory::MemoryStore`]
//! (virtual-time runs and unit tests).
//!
//! Times are UTC milliseconds since the Unix epoch ([`Millis`]); JSON columns hold text.

mod common;
pub mod memory;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
pub use rust_decimal::Decimal;

/// UTC milliseconds since the Unix epoch.
pub type Millis = i64;

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the case first (its `last_seq` is not the one the write expected,
    /// or the case already exists). Nothing of the batch was written.
    #[error("case {case_id} was changed concurrently (expected last event {expected:?})")]
    Conflict {
        case_id: String,
        expected: Option<i64>,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An error of the SQLite store's writer connection (which is not an sqlx connection).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The SQLite store's writer thread is gone (the store is closing, or the thread died).
    #[error("the SQLite writer has stopped")]
    WriterStopped,
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open the database at {location}: {message}")]
    Open { location: String, message: String },
    /// A method this backend does not implement.
    #[error("this store does not support `{0}`")]
    Unsupported(&'static str),
    /// [`Store::allocate_number`] was asked for a number of one series and period with an
    /// idempotency key that already holds a number of another series or period. Nothing was
    /// allocated: a key names one effect, which asks for one number. (Boxed: the details would
    /// double the size of every `Result` of the crate.)
    #[error(
        "the key {:?} already holds number {} of series {:?} in period {:?}: it cannot also \
         take a number of series {:?} in period {:?}",
        .0.held.key, .0.held.seq, .0.held.series, .0.held.period, .0.refused.series,
        .0.refused.period
    )]
    NumberKeyReused(Box<NumberKeyReuse>),
    /// A ledger balance or amount does not fit an exact decimal (28 significant digits), or a
    /// stored balance is not a decimal.
    #[error("the ledger account {account:?}: {message}")]
    Ledger { account: String, message: String },
    /// The counter of a numbering series reached the largest number the store can hold.
    #[error("the numbering series {series:?} in period {period:?} has no number left")]
    NumberSeriesExhausted { series: String, period: String },
}

/// One case ("dossier"): the current summary row. The history is the truth; this row is a
/// projection of it kept in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRecord {
    pub id: String,
    pub workflow_id: String,
    pub workflow_version: i64,
    /// Content hash of the workflow file the case is pinned to.
    pub workflow_hash: String,
    pub business_key: Option<String>,
    pub parent_id: Option<String>,
    /// `running`, `waiting`, `completed`, `failed`, `cancelled`.
    pub status: String,
    pub current_step: Option<String>,
    /// The case variables, JSON object text.
    pub data: String,
    /// Content hashes of every rule module, template and sub-workflow the case is pinned to,
    /// JSON object text.
    pub pins: String,
    pub last_seq: i64,
    pub last_hash: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One history event. `seq` starts at 1 per case and has no gaps; `hash` chains to `prev_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub case_id: String,
    pub seq: i64,
    pub at: Millis,
    pub kind: String,
    /// JSON object text.
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// An effect waiting in the outbox to be performed by a worker, keyed by its idempotency key.
/// The engine uses it for the messages between cases (a child's end to its parent, a parent's
/// cancellation to its child); connector effects are found again from the histories of running
/// cases instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectRecord {
    pub key: String,
    pub case_id: String,
    pub step: String,
    pub connector: String,
    pub operation: String,
    /// JSON object text.
    pub request: String,
    pub attempt: i64,
    pub timeout_ms: Option<i64>,
    pub created_at: Millis,
}

/// A durable timer: a wait, a retry backoff, an event timeout, a task reminder...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRecord {
    pub id: String,
    pub case_id: String,
    pub fire_at: Millis,
    /// Free text for operators ("wait", "retry", "event-timeout", "task-reminder", ...).
    pub purpose: String,
}

/// A case waiting for a named event whose correlation keys match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitRecord {
    pub id: String,
    pub case_id: String,
    pub event_name: String,
    /// Canonical JSON object text of the correlation key values (sorted keys), compared as text.
    pub correlation: String,
    pub created_at: Millis,
}

/// A human task in a role's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: String,
    pub case_id: String,
    pub workflow_id: String,
    pub step: String,
    pub role: String,
    pub title: String,
    /// JSON text: the form fields, outcomes, four-eyes flag, escalation target.
    pub form: String,
    /// `open`, `claimed`, `completed`, `cancelled`.
    pub status: String,
    pub assignee: Option<String>,
    pub due_at: Option<Millis>,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
    pub completed_by: Option<String>,
    pub outcome: Option<String>,
    /// JSON text of the submitted form data.
    pub data: Option<String>,
}

/// A change to an existing task, applied in the same transaction as the case's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUpdate {
    pub id: String,
    pub status: String,
    pub assignee: Option<String>,
    pub role: Option<String>,
    pub completed_at: Option<Millis>,
    pub completed_by: Option<String>,
    pub outcome: Option<String>,
    pub data: Option<String>,
}

/// A content-addressed source file (workflow, rule module, template). Insert-or-ignore: a hash
/// is written once and never changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionRecord {
    pub hash: String,
    /// `workflow`, `rule`, `template`.
    pub kind: String,
    /// Workflow id, rule module name or template path.
    pub name: String,
    pub version: Option<i64>,
    pub source: String,
    pub loaded_at: Millis,
}

/// Everything one case transition writes. Applied atomically with the rest of its batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseWrite {
    /// The case row after the transition (inserted or updated).
    pub case: Option<CaseRecord>,
    /// `None`: the case is new and must not exist yet. `Some(n)`: the stored `last_seq` must be
    /// `n`, else the batch fails with [`StoreError::Conflict`].
    pub expected_last_seq: Option<i64>,
    pub events: Vec<EventRecord>,
    pub effects_new: Vec<EffectRecord>,
    /// Idempotency keys of effects whose result is now in the history: removed from the outbox.
    pub effects_done: Vec<String>,
    pub timers_new: Vec<TimerRecord>,
    /// Timer ids fired or cancelled: removed.
    pub timers_done: Vec<String>,
    pub waits_new: Vec<WaitRecord>,
    /// Wait ids satisfied or timed out: removed.
    pub waits_done: Vec<String>,
    pub tasks_new: Vec<TaskRecord>,
    pub tasks_updated: Vec<TaskUpdate>,
    /// Deduplication records of the request this write answers (an `Idempotency-Key`, a
    /// webhook id): inserted in the same transaction, so the request's effect on the case and
    /// the record that it happened are durable together. An existing `(scope, key)` fails the
    /// batch with [`StoreError::Conflict`] naming this write's case.
    pub inbox: Vec<InboxRecord>,
    /// Entries appended to the audit trail in the same transaction as the write, numbered and
    /// hashed there (as [`Store::append_audit`] does), in batch order: the record of an API call
    /// is durable together with the change it records, or not at all. They carry no key of
    /// their own and never conflict; a write may hold nothing else
    /// (`CaseWrite { audit, ..Default::default() }`).
    pub audit: Vec<AuditEntry>,
}

/// A request already taken: the deduplication record of an idempotent API call or a webhook
/// delivery, written atomically with what the request did to its case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRecord {
    /// What the key is unique within (`api:instances:<caller>`, `hook:<name>:<webhook-id>`...).
    pub scope: String,
    pub key: String,
    /// SHA-256 (hex) of the request body: the same key with another body is refused.
    pub request_hash: String,
    /// The case the request started or reached.
    pub case_id: String,
    /// The case status the first answer reported.
    pub status: String,
    pub created_at: Millis,
}

/// An API key. Only a hash of the secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public identifier (the key's prefix), shown in listings and audit entries.
    pub id: String,
    pub name: String,
    pub role: String,
    /// SHA-256 (hex) of the whole secret key.
    pub hash: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// One entry to append to the audit trail, alone ([`Store::append_audit`]) or with the change it
/// records ([`CaseWrite::audit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: Millis,
    /// Who: API key id (`key:<id>`), OIDC subject (`oidc:<sub>`), `webhook:<name>`, `cli`.
    pub actor: String,
    pub role: String,
    /// What: `POST /api/v1/instances`, `keys.create`...
    pub action: String,
    /// On what: a case id, a task id, a key id (empty when none).
    pub target: String,
    /// From where: the peer address, or `cli`.
    pub origin: String,
    /// The request's correlation id.
    pub request_id: String,
    /// JSON object text: the details of the call (status answered, outcome...).
    pub details: String,
}

/// A stored audit entry. `seq` starts at 1 and has no gaps; `hash` chains to `prev_hash`
/// (see [`audit_hash`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of the audit chain's first `prev_hash`.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an audit record: SHA-256 (hex) over the previous hash, the sequence number and
/// every field of the entry, each length-prefixed so that no two records hash alike by moving
/// text from one field to the next.
pub fn audit_hash(prev_hash: &str, seq: i64, e: &AuditEntry) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let seq = seq.to_string();
    let at = e.at.to_string();
    for part in [
        prev_hash,
        seq.as_str(),
        at.as_str(),
        e.actor.as_str(),
        e.role.as_str(),
        e.action.as_str(),
        e.target.as_str(),
        e.origin.as_str(),
        e.request_id.as_str(),
        e.details.as_str(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Checks an audit chain read from the start (or from a known record): numbers follow each
/// other, each record links to the previous one and its hash is right. Returns the first
/// broken record's `seq`.
pub fn verify_audit(
    records: &[AuditRecord],
    mut prev_hash: String,
) -> std::result::Result<(), i64> {
    let mut expected_seq = records.first().map(|r| r.seq).unwrap_or(1);
    for r in records {
        if r.seq != expected_seq
            || r.prev_hash != prev_hash
            || r.hash != audit_hash(&r.prev_hash, r.seq, &r.entry)
        {
            return Err(r.seq);
        }
        prev_hash = r.hash.clone();
        // Saturating: a tampered `seq` of i64::MAX must not overflow.
        expected_seq = expected_seq.saturating_add(1);
    }
    Ok(())
}

/// A request for the next number of a series in a period, made by one effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberRequest {
    /// The series (`FAC`).
    pub series: String,
    /// The period the series restarts at 1 in (`2026`).
    pub period: String,
    /// The idempotency key of the effect asking: the same key always gets the same number.
    pub key: String,
    pub case_id: String,
    pub at: Millis,
}

/// The details of [`StoreError::NumberKeyReused`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberKeyReuse {
    /// The number the key holds.
    pub held: NumberRecord,
    /// The request refused: the same key, another series or period.
    pub refused: NumberRequest,
}

/// The answer to a [`NumberRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberAllocation {
    pub series: String,
    pub period: String,
    /// 1-based, gapless per (series, period).
    pub seq: i64,
    /// False when this key had already been given this number (a repeated request).
    pub fresh: bool,
}

/// A number given: who got it, for whom and when (the first request's case and time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberRecord {
    pub series: String,
    pub period: String,
    pub seq: i64,
    /// The idempotency key of the effect that got the number.
    pub key: String,
    pub case_id: String,
    pub at: Millis,
}

/// Postings asked for by one effect (a `ledger` step), applied all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRequest {
    /// The idempotency key of the effect: a repeated request finds the postings it made.
    pub key: String,
    pub case_id: String,
    pub at: Millis,
    pub postings: Vec<PostingRequest>,
}

/// One posting of a [`LedgerRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostingRequest {
    pub account: String,
    /// Added to the balance (negative: taken). Zero reads the balance.
    pub amount: Decimal,
    /// The lowest balance allowed after the posting (`None`: no lower bound).
    pub min: Option<Decimal>,
    /// The highest balance allowed after the posting (`None`: no upper bound).
    pub max: Option<Decimal>,
}

/// A posting made: the account's balance after it, and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerPosting {
    pub account: String,
    /// 1-based, gapless per account.
    pub seq: i64,
    pub amount: Decimal,
    /// The account's balance after this posting.
    pub balance: Decimal,
    /// The idempotency key of the effect that made it, and its place in that effect's request.
    pub key: String,
    pub index: i64,
    pub case_id: String,
    pub at: Millis,
}

/// A request refused because a posting would take its account past a bound; nothing was
/// applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRefusal {
    /// The refused posting's place in the request (0-based).
    pub index: usize,
    pub account: String,
    /// The balance before that posting (earlier postings of the request included).
    pub balance: Decimal,
    pub amount: Decimal,
    /// The bound it would break, and whether it is the lower one.
    pub bound: Decimal,
    pub lower: bool,
}

/// The answer to a [`LedgerRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerOutcome {
    /// Applied now (`fresh`), or found applied by an earlier request with the same key.
    Posted {
        postings: Vec<LedgerPosting>,
        fresh: bool,
    },
    Refused(LedgerRefusal),
}

/// An identifier asked for by one effect (a `unique_id` step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdClaim {
    pub id: String,
    /// The idempotency key of the effect: it holds one identifier.
    pub key: String,
    pub case_id: String,
    pub at: Millis,
}

/// The answer to an [`IdClaim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdClaimOutcome {
    /// The identifier is now this key's.
    Claimed,
    /// The key already holds this identifier (a repeated request): nothing was claimed.
    Held(String),
    /// Another key holds the identifier: draw another.
    Taken,
}

/// An account and its balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerAccount {
    pub account: String,
    pub balance: Decimal,
    /// How many postings it has had (the `seq` of the last one).
    pub postings: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFilter {
    pub workflow_id: Option<String>,
    pub status: Option<String>,
    pub business_key: Option<String>,
    pub created_from: Option<Millis>,
    pub created_to: Option<Millis>,
    /// Keyset pagination: only cases whose id sorts after this one (ordered by id, byte order).
    pub after_id: Option<String>,
    /// Maximum number of rows; zero or negative means no limit.
    pub limit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub role: Option<String>,
    pub assignee: Option<String>,
    pub status: Option<String>,
    pub case_id: Option<String>,
    /// Only tasks whose due date is before this instant (strictly; tasks without a due date
    /// never match).
    pub due_before: Option<Millis>,
    /// Maximum number of rows; zero or negative means no limit. Results are ordered by
    /// `created_at`, then id.
    pub limit: i64,
}

/// The storage contract. Every method is safe to call concurrently. Concurrent `commit`s are
/// isolated transactions: the engine keeps the batches it has in flight on disjoint cases, and
/// a batch that loses a race on a case (another node) fails whole with a conflict or a database
/// error. SQLite applies commits one after another; PostgreSQL runs them side by side.
#[async_trait]
pub trait Store: Send + Sync {
    /// Applies every write of the batch in one transaction (group commit), or none of them.
    ///
    /// The result is that of applying the writes one after the other, each as: case row
    /// (insert if `expected_last_seq` is `None`, else compare-and-set on `last_seq`), events,
    /// deletes (`effects_done`, `timers_done`, `waits_done`; deleting a missing key is not an
    /// error), inserts (`effects_new`, `timers_new`, `waits_new`, `tasks_new`, `inbox`), task
    /// updates. A write may therefore drop and re-create the same timer id, and a later write of
    /// the batch may touch what an earlier one created. The batch fails with
    /// [`StoreError::Conflict`], naming the first offending write's case, when a case row check
    /// fails, or an event, effect, timer, wait, task or inbox key already exists (in the
    /// database or earlier in the batch), or a task to update does not exist.
    ///
    /// The `audit` entries of every write, in batch order, are appended to the audit trail in
    /// the same transaction, numbered and hashed exactly as [`Store::append_audit`] does (under
    /// the same lock on PostgreSQL, taken only by batches with at least one entry): they follow
    /// the last record committed before them, with no gap. A batch that fails appends none.
    async fn commit(&self, batch: &[CaseWrite]) -> Result<()>;

    async fn case(&self, id: &str) -> Result<Option<CaseRecord>>;
    async fn list_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>>;
    /// Number of cases per status.
    async fn count_cases_by_status(&self) -> Result<Vec<(String, i64)>>;
    /// The whole history of a case, ordered by `seq`.
    async fn history(&self, case_id: &str) -> Result<Vec<EventRecord>>;

    /// Timers due at or before `now`, earliest first (ties by id); `limit <= 0`: no limit.
    async fn due_timers(&self, now: Millis, limit: i64) -> Result<Vec<TimerRecord>>;
    async fn next_timer_at(&self) -> Result<Option<Millis>>;
    /// Effects still in the outbox ordered by key, after the given key (keyset pagination: pass
    /// the last key of the previous page). `limit <= 0`: no limit.
    async fn pending_effects(
        &self,
        after_key: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EffectRecord>>;
    /// Waits for this event name whose correlation text equals `correlation`.
    async fn waits_for(&self, event_name: &str, correlation: &str) -> Result<Vec<WaitRecord>>;
    /// Every wait of one case.
    async fn waits_of_case(&self, case_id: &str) -> Result<Vec<WaitRecord>>;

    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>>;
    async fn task(&self, id: &str) -> Result<Option<TaskRecord>>;

    async fn put_definitions(&self, defs: &[DefinitionRecord]) -> Result<()>;
    async fn definition(&self, hash: &str) -> Result<Option<DefinitionRecord>>;
    /// Every stored definition of a kind (sources included), oldest first.
    async fn definitions(&self, kind: &str) -> Result<Vec<DefinitionRecord>>;

    // ---- server ----

    /// The deduplication record of `(scope, key)`, if the request was already taken.
    async fn inbox(&self, scope: &str, key: &str) -> Result<Option<InboxRecord>>;
    /// Every deduplication record of a scope, ordered by key (byte order).
    async fn inbox_scope(&self, scope: &str) -> Result<Vec<InboxRecord>>;

    /// Claims or releases a task: sets `status` and `assignee` only if the task's current
    /// status is one of `from`, its role is `role` (an escalation moves it elsewhere) and its
    /// assignee is `holder` (`None`: nobody holds it) — a compare-and-set, in one statement.
    /// Returns `None` for an unknown task, else the task as it is after the call and whether
    /// the compare succeeded (and the task was written). `audit`, when the task is written,
    /// is appended to the audit trail in the same transaction.
    // One compare-and-set: what it expects and what it sets, side by side.
    #[allow(clippy::too_many_arguments)]
    async fn assign_task(
        &self,
        id: &str,
        from: &[&str],
        role: &str,
        holder: Option<&str>,
        status: &str,
        assignee: Option<&str>,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<(TaskRecord, bool)>>;
    /// Number of tasks per status, ordered by status.
    async fn count_tasks_by_status(&self) -> Result<Vec<(String, i64)>>;

    /// Adds an API key; a key id or hash that exists already is a [`StoreError::Conflict`]
    /// (whose `case_id` is the key's id).
    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    /// The key whose secret hashes to `hash` (revoked keys included: the caller checks).
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;
    /// Every key, oldest first (ties by id).
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes the keys whose id or name is `id_or_name` at `at`. Returns the keys revoked now,
    /// oldest first (already revoked keys are left as they are and not returned).
    async fn revoke_api_key(&self, id_or_name: &str, at: Millis) -> Result<Vec<ApiKeyRecord>>;

    /// Appends an entry to the audit trail, numbering and hashing it in the same transaction
    /// so that concurrent writers (other nodes on PostgreSQL) never fork the chain. An entry
    /// recording a change to cases belongs in [`CaseWrite::audit`] instead, which commits with
    /// the change.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord>;
    /// Audit records with `seq > after_seq`, in order; `limit <= 0`: no limit.
    async fn audit(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>>;

    // ---- numbering ----

    /// Gives the next number of `series` in `period` to `key`, or the number `key` already has.
    /// One transaction: the counter and the record of who got the number move together.
    ///
    /// Numbers are 1-based and gapless per (series, period): a failed or repeated request
    /// consumes none, and concurrent requests (other nodes on PostgreSQL) never get the same
    /// number. A repeated key gets its number again with `fresh: false`, whatever the
    /// `case_id` and `at` of the repeat (the record keeps the first request's). A key that
    /// holds a number of another series or period is refused with
    /// [`StoreError::NumberKeyReused`], and nothing is allocated.
    async fn allocate_number(&self, req: &NumberRequest) -> Result<NumberAllocation>;
    /// The numbers given in a series and period, in order (for audits: no gap, who got each).
    async fn numbers(&self, series: &str, period: &str) -> Result<Vec<NumberRecord>>;
    /// Applies a ledger request in one transaction: every posting, or none when one would take
    /// its account past a bound ([`LedgerOutcome::Refused`]). The same key finds the postings
    /// it made (a repeated request after a restart posts nothing more). Concurrent requests on
    /// one account are serialised: no balance is computed from a stale one.
    async fn post_ledger(&self, req: &LedgerRequest) -> Result<LedgerOutcome>;
    /// The accounts whose name starts with `prefix`, by name.
    async fn ledger_accounts(&self, prefix: &str) -> Result<Vec<LedgerAccount>>;
    /// An account's postings, in order.
    async fn ledger_postings(&self, account: &str) -> Result<Vec<LedgerPosting>>;
    /// Claims an identifier for an effect's key, in one transaction: the identifier the key
    /// already holds, else this one if nobody has it, else [`IdClaimOutcome::Taken`].
    async fn claim_unique_id(&self, claim: &IdClaim) -> Result<IdClaimOutcome>;
}
