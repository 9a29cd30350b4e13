//! The embedded SQLite store: one database file in WAL mode with `synchronous=FULL`, so that a
//! commit that returned is on disk (the WAL is fsynced at every commit).
//!
//! SQLite allows one writer at a time. Rather than letting pooled connections fight over the
//! write lock (and spin in the busy handler), every write goes through ONE writer connection
//! owned by a dedicated thread; reads use a small sqlx pool of `query_only` connections on the
//! same file, which WAL lets run concurrently with the writer.
//!
//! The writer is a plain `rusqlite` connection rather than an sqlx one: sqlx runs each statement
//! of a SQLite connection on the connection's worker thread and hands every statement and its
//! result over a channel, so a commit of six statements cost a dozen thread hand-offs, several
//! times the fsync itself. Here [`Store::commit`] sends the whole batch to the writer thread
//! and awaits one reply; the thread runs `BEGIN IMMEDIATE` .. `COMMIT` with cached prepared
//! statements and no hand-off in between.
//!
//! The writer applies a batch write by write, in order, one cached single-row statement per
//! row: exactly the contract's "one write after the other", so the first write that fails a
//! check (a stale `last_seq`, a duplicate key, a missing task) is the one to blame, and the
//! whole transaction is rolled back. Single-row statements measured at least as fast as
//! multi-row ones here (SQLite's per-statement overhead is tiny once prepared), and they need
//! neither rounds nor a replay to name the culprit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{
    params, params_from_iter, CachedStatement, Connection, OpenFlags, OptionalExtension,
};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection as _, QueryBuilder};
use tokio::sync::oneshot;

use crate::common::{
    account_from, apply_postings, posting_from, request_accounts, stored_decimal, PostingRow,
    POSTING_COLS,
};
use crate::common::{
    api_key_cols, api_key_conflict, api_key_from, audit_cols, audit_from, batch_audit, case_cols,
    case_from, conflict_of, definition_cols, definition_from, effect_cols, effect_from, event_cols,
    event_from, fresh_number, inbox_cols, inbox_from, next_audit_records, number_cols, number_from,
    repeated_number, sort_api_keys, sql_limit, task_cols, task_from, timer_cols, timer_from,
    wait_cols, wait_from, ApiKeyRow, AuditRow, CaseRow, DefinitionRow, EffectRow, EventRow,
    InboxRow, NumberRow, TaskRow, TimerRow, WaitRow,
};
use crate::{
    ApiKeyRecord, AuditEntry, AuditRecord, CaseFilter, CaseRecord, CaseWrite, DefinitionRecord,
    EffectRecord, EventRecord, InboxRecord, LedgerAccount, LedgerOutcome, LedgerPosting,
    LedgerRequest, Millis, NumberAllocation, NumberRecord, NumberRequest, Result, Store,
    StoreError, TaskFilter, TaskRecord, TimerRecord, WaitRecord,
};
use crate::{IdClaim, IdClaimOutcome};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a connection waits for a lock held by another process (a CLI, a backup) before
/// giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections. Reads are short; a few are enough to overlap API queries with the workers.
const READERS: u32 = 4;
/// Prepared statements kept by the writer: about twenty-five distinct statements (the commit's,
/// the transaction's, the server's, the numbering's), and room to spare.
const WRITER_STATEMENT_CACHE: usize = 32;
/// A commit slower than this is logged (sqlx's default threshold for slow statements).
const SLOW_COMMIT: Duration = Duration::from_secs(1);

/// The SQLite implementation of [`Store`]. Cheap to share behind an `Arc`; every method may be
/// called concurrently, commits are serialised on the writer thread.
pub struct SqliteStore {
    writer: Writer,
    readers: SqlitePool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the database file at `path` and brings its schema up to
    /// date.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::open_with(options, &path.display().to_string()).await
    }

    /// Opens a database from an sqlx SQLite URL (`sqlite://dossier.db`, `sqlite:///var/x.db`,
    /// `sqlite::memory:` for a throw-away shared in-memory database). The file is created if
    /// missing, whatever `mode` the URL gives, since the store must be able to migrate it.
    pub async fn open_url(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Open {
            location: url.to_string(),
            message: e.to_string(),
        })?;
        Self::open_with(options, url).await
    }

    async fn open_with(options: SqliteConnectOptions, location: &str) -> Result<Self> {
        let open_error = |message: String| StoreError::Open {
            location: location.to_string(),
            message,
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the WAL is fsynced at every commit, so a returned commit survives a power
            // loss. NORMAL would be faster and lose the last commits on power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            // No foreign keys in the schema; skip the per-statement checks.
            .foreign_keys(false)
            // 16 MiB page cache (negative = KiB): the hot indexes stay in memory.
            .pragma("cache_size", "-16384")
            .pragma("temp_store", "memory");

        // The schema is migrated by sqlx (its `_sqlx_migrations` bookkeeping is what existing
        // databases carry) on a setup connection, which stays open until the writer and the
        // readers are: that keeps a shared in-memory database alive in between.
        let mut setup = options
            .clone()
            .connect()
            .await
            .map_err(|e| open_error(e.to_string()))?;
        MIGRATOR.run(&mut setup).await?;
        // The file the URL or path resolved to (absolute), or "" for an in-memory database.
        let (file,): (String,) =
            sqlx::query_as("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&mut setup)
                .await?;
        let target = if file.is_empty() {
            WriterTarget::SharedMemory(options.get_filename().to_path_buf())
        } else {
            WriterTarget::File(PathBuf::from(file))
        };
        let writer = Writer::start(target).await.map_err(open_error)?;

        // The readers can never write: all writes must go through the writer thread, and
        // `query_only` turns a mistake into an error instead of a lock fight.
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(0)
            .connect_with(options.pragma("query_only", "ON"))
            .await
            .map_err(|e| open_error(e.to_string()))?;
        setup.close().await?;
        Ok(Self { writer, readers })
    }

    /// Closes the connections, checkpointing the WAL into the database file, and stops the
    /// writer thread. Dropping the store is also safe (every commit is already durable; the
    /// thread stops too); this just leaves a tidier file behind.
    pub async fn close(self) -> Result<()> {
        self.readers.close().await;
        // The writer closes last: the last connection to go checkpoints and removes the WAL.
        self.writer.call(|reply| Job::Close { reply }).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, batch: &[CaseWrite]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // The writer thread needs the batch by value: a borrow cannot outlive this future, which
        // may be dropped while the thread still works on it. (sqlx copied every bound value
        // over to its worker thread too.)
        let batch = batch.to_vec();
        self.writer.call(|reply| Job::Commit { batch, reply }).await
    }

    async fn case(&self, id: &str) -> Result<Option<CaseRecord>> {
        let row: Option<CaseRow> = sqlx::query_as(concat!(
            "SELECT ",
            case_cols!(),
            " FROM cases WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(case_from))
    }

    async fn list_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>> {
        let mut qb = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            case_cols!(),
            " FROM cases WHERE 1 = 1"
        ));
        if let Some(v) = &filter.workflow_id {
            qb.push(" AND workflow_id = ").push_bind(v.as_str());
        }
        if let Some(v) = &filter.status {
            qb.push(" AND status = ").push_bind(v.as_str());
        }
        if let Some(v) = &filter.business_key {
            qb.push(" AND business_key = ").push_bind(v.as_str());
        }
        if let Some(v) = filter.created_from {
            qb.push(" AND created_at >= ").push_bind(v);
        }
        if let Some(v) = filter.created_to {
            qb.push(" AND created_at < ").push_bind(v);
        }
        if let Some(v) = &filter.after_id {
            qb.push(" AND id > ").push_bind(v.as_str());
        }
        qb.push(" ORDER BY id LIMIT ")
            .push_bind(sql_limit(filter.limit));
        let rows: Vec<CaseRow> = qb.build_query_as().fetch_all(&self.readers).await?;
        Ok(rows.into_iter().map(case_from).collect())
    }

    async fn count_cases_by_status(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, COUNT(*) FROM cases GROUP BY status ORDER BY status")
                .fetch_all(&self.readers)
                .await?,
        )
    }

    async fn history(&self, case_id: &str) -> Result<Vec<EventRecord>> {
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_cols!(),
            " FROM events WHERE case_id = $1 ORDER BY seq"
        ))
        .bind(case_id)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(event_from).collect())
    }

    async fn due_timers(&self, now: Millis, limit: i64) -> Result<Vec<TimerRecord>> {
        let rows: Vec<TimerRow> = sqlx::query_as(concat!(
            "SELECT ",
            timer_cols!(),
            " FROM timers WHERE fire_at <= $1 ORDER BY fire_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(sql_limit(limit))
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(timer_from).collect())
    }

    async fn next_timer_at(&self) -> Result<Option<Millis>> {
        let (at,): (Option<i64>,) = sqlx::query_as("SELECT MIN(fire_at) FROM timers")
            .fetch_one(&self.readers)
            .await?;
        Ok(at)
    }

    async fn pending_effects(
        &self,
        after_key: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EffectRecord>> {
        // Two statements rather than `$1 IS NULL OR key > $1`, which the planner cannot turn
        // into an index seek: every page would rescan the outbox from its first key.
        let query = match after_key {
            Some(after) => sqlx::query_as(concat!(
                "SELECT ",
                effect_cols!(),
                " FROM effects WHERE key > $1 ORDER BY key LIMIT $2"
            ))
            .bind(after),
            None => sqlx::query_as(concat!(
                "SELECT ",
                effect_cols!(),
                " FROM effects ORDER BY key LIMIT $1"
            )),
        };
        let rows: Vec<EffectRow> = query
            .bind(sql_limit(limit))
            .fetch_all(&self.readers)
            .await?;
        Ok(rows.into_iter().map(effect_from).collect())
    }

    async fn waits_for(&self, event_name: &str, correlation: &str) -> Result<Vec<WaitRecord>> {
        let rows: Vec<WaitRow> = sqlx::query_as(concat!(
            "SELECT ",
            wait_cols!(),
            " FROM waits WHERE event_name = $1 AND correlation = $2 ORDER BY created_at, id"
        ))
        .bind(event_name)
        .bind(correlation)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(wait_from).collect())
    }

    async fn waits_of_case(&self, case_id: &str) -> Result<Vec<WaitRecord>> {
        let rows: Vec<WaitRow> = sqlx::query_as(concat!(
            "SELECT ",
            wait_cols!(),
            " FROM waits WHERE case_id = $1 ORDER BY created_at, id"
        ))
        .bind(case_id)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(wait_from).collect())
    }

    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>> {
        let mut qb = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE 1 = 1"
        ));
        if let Some(v) = &filter.role {
            qb.push(" AND role = ").push_bind(v.as_str());
        }
        if let Some(v) = &filter.assignee {
            qb.push(" AND assignee = ").push_bind(v.as_str());
        }
        if let Some(v) = &filter.status {
            qb.push(" AND status = ").push_bind(v.as_str());
        }
        if let Some(v) = &filter.case_id {
            qb.push(" AND case_id = ").push_bind(v.as_str());
        }
        if let Some(v) = filter.due_before {
            qb.push(" AND due_at < ").push_bind(v);
        }
        qb.push(" ORDER BY created_at, id LIMIT ")
            .push_bind(sql_limit(filter.limit));
        let rows: Vec<TaskRow> = qb.build_query_as().fetch_all(&self.readers).await?;
        Ok(rows.into_iter().map(task_from).collect())
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>> {
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(task_from))
    }

    async fn put_definitions(&self, defs: &[DefinitionRecord]) -> Result<()> {
        if defs.is_empty() {
            return Ok(());
        }
        let defs = defs.to_vec();
        self.writer
            .call(|reply| Job::PutDefinitions { defs, reply })
            .await
    }

    async fn definition(&self, hash: &str) -> Result<Option<DefinitionRecord>> {
        let row: Option<DefinitionRow> = sqlx::query_as(concat!(
            "SELECT ",
            definition_cols!(),
            " FROM definitions WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(definition_from))
    }

    async fn definitions(&self, kind: &str) -> Result<Vec<DefinitionRecord>> {
        let rows: Vec<DefinitionRow> = sqlx::query_as(concat!(
            "SELECT ",
            definition_cols!(),
            " FROM definitions WHERE kind = $1 ORDER BY loaded_at, hash"
        ))
        .bind(kind)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(definition_from).collect())
    }

    async fn inbox(&self, scope: &str, key: &str) -> Result<Option<InboxRecord>> {
        let row: Option<InboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            inbox_cols!(),
            " FROM inbox WHERE scope = $1 AND key = $2"
        ))
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(inbox_from))
    }

    async fn inbox_scope(&self, scope: &str) -> Result<Vec<InboxRecord>> {
        let rows: Vec<InboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            inbox_cols!(),
            " FROM inbox WHERE scope = $1 ORDER BY key"
        ))
        .bind(scope)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(inbox_from).collect())
    }

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
    ) -> Result<Option<(TaskRecord, bool)>> {
        let id = id.to_string();
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        let role = role.to_string();
        let holder = holder.map(str::to_string);
        let status = status.to_string();
        let assignee = assignee.map(str::to_string);
        let audit = audit.cloned();
        self.writer
            .run(move |conn| {
                in_transaction(conn, |conn| {
                    let result = assign_task(
                        conn,
                        &id,
                        &from,
                        &role,
                        holder.as_deref(),
                        &status,
                        assignee.as_deref(),
                    )?;
                    if let (Some((_, true)), Some(entry)) = (&result, &audit) {
                        append_audit(conn, [entry])?;
                    }
                    Ok(result)
                })
            })
            .await
    }

    async fn count_tasks_by_status(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status")
                .fetch_all(&self.readers)
                .await?,
        )
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let key = key.clone();
        self.writer
            .run(move |conn| {
                in_transaction(conn, |conn| {
                    let inserted = conn
                        .prepare_cached(concat!(
                            "INSERT INTO api_keys (",
                            api_key_cols!(),
                            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                        ))?
                        .execute(params![
                            key.id,
                            key.name,
                            key.role,
                            key.hash,
                            key.created_at,
                            key.revoked_at
                        ]);
                    match inserted {
                        Ok(_) => Ok(()),
                        // The id or the hash is taken.
                        Err(e) if is_unique_violation(&e) => Err(api_key_conflict(&key)),
                        Err(e) => Err(e.into()),
                    }
                })
            })
            .await
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row: Option<ApiKeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            api_key_cols!(),
            " FROM api_keys WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(api_key_from))
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            api_key_cols!(),
            " FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(api_key_from).collect())
    }

    async fn revoke_api_key(&self, id_or_name: &str, at: Millis) -> Result<Vec<ApiKeyRecord>> {
        let id_or_name = id_or_name.to_string();
        self.writer
            .run(move |conn| {
                in_transaction(conn, |conn| {
                    let mut update = conn.prepare_cached(concat!(
                        "UPDATE api_keys SET revoked_at = ?2 \
                         WHERE (id = ?1 OR name = ?1) AND revoked_at IS NULL RETURNING ",
                        api_key_cols!()
                    ))?;
                    let rows = update.query_map(params![id_or_name, at], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })?;
                    let mut keys = Vec::new();
                    for row in rows {
                        keys.push(api_key_from(row?));
                    }
                    sort_api_keys(&mut keys);
                    Ok(keys)
                })
            })
            .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord> {
        let entry = entry.clone();
        // The writer thread runs one job at a time (commits included): the read of the last
        // record and the insert of the next cannot interleave with another append (and BEGIN
        // IMMEDIATE keeps other processes out in between).
        self.writer
            .run(move |conn| {
                in_transaction(conn, |conn| {
                    let mut records = append_audit(conn, [&entry])?;
                    Ok(records.remove(0))
                })
            })
            .await
    }

    async fn audit(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(concat!(
            "SELECT ",
            audit_cols!(),
            " FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after_seq)
        .bind(sql_limit(limit))
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(audit_from).collect())
    }

    async fn allocate_number(&self, req: &NumberRequest) -> Result<NumberAllocation> {
        let req = req.clone();
        // The writer thread runs one job at a time and BEGIN IMMEDIATE keeps other processes
        // out: the lookup of the key, the counter and the record cannot interleave with another
        // allocation, so two requests with one key cannot both find it free.
        self.writer
            .run(move |conn| in_transaction(conn, |conn| allocate_number(conn, &req)))
            .await
    }

    async fn numbers(&self, series: &str, period: &str) -> Result<Vec<NumberRecord>> {
        let rows: Vec<NumberRow> = sqlx::query_as(concat!(
            "SELECT ",
            number_cols!(),
            " FROM numbers WHERE series = $1 AND period = $2 ORDER BY seq"
        ))
        .bind(series)
        .bind(period)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(number_from).collect())
    }

    async fn post_ledger(&self, req: &LedgerRequest) -> Result<LedgerOutcome> {
        let req = req.clone();
        // One writer thread and BEGIN IMMEDIATE: the balances read are the latest, and nothing
        // comes between reading them and writing the postings.
        self.writer
            .run(move |conn| in_transaction(conn, |conn| post_ledger(conn, &req)))
            .await
    }

    async fn claim_unique_id(&self, claim: &IdClaim) -> Result<IdClaimOutcome> {
        let claim = claim.clone();
        self.writer
            .run(move |conn| {
                in_transaction(conn, |conn| {
                    let held: Option<String> = conn
                        .prepare_cached("SELECT id FROM unique_ids WHERE key = ?1")?
                        .query_row([&claim.key], |r| r.get(0))
                        .optional()?;
                    if let Some(id) = held {
                        return Ok(IdClaimOutcome::Held(id));
                    }
                    let inserted = conn
                        .prepare_cached(
                            "INSERT INTO unique_ids (id, key, case_id, at) VALUES (?1, ?2, ?3, ?4) \
                             ON CONFLICT (id) DO NOTHING",
                        )?
                        .execute(params![claim.id, claim.key, claim.case_id, claim.at])?;
                    Ok(if inserted == 1 {
                        IdClaimOutcome::Claimed
                    } else {
                        IdClaimOutcome::Taken
                    })
                })
            })
            .await
    }

    async fn ledger_accounts(&self, prefix: &str) -> Result<Vec<LedgerAccount>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT account, balance, postings FROM ledger_accounts \
             WHERE substr(account, 1, length($1)) = $1 ORDER BY account",
        )
        .bind(prefix)
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(account_from).collect()
    }

    async fn ledger_postings(&self, account: &str) -> Result<Vec<LedgerPosting>> {
        let rows: Vec<PostingRow> = sqlx::query_as(&format!(
            "SELECT {POSTING_COLS} FROM ledger_postings WHERE account = $1 ORDER BY seq"
        ))
        .bind(account)
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(posting_from).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The writer thread

/// What the writer thread opens.
enum WriterTarget {
    /// A database file, by the absolute path SQLite resolved.
    File(PathBuf),
    /// A shared-cache in-memory database, by the name sqlx gave it (`sqlite::memory:`).
    SharedMemory(PathBuf),
}

/// Where the writer thread sends a job's outcome.
type Reply = oneshot::Sender<Result<()>>;

/// The writer thread's work, handled in the order received.
enum Job {
    Commit {
        batch: Vec<CaseWrite>,
        reply: Reply,
    },
    PutDefinitions {
        defs: Vec<DefinitionRecord>,
        reply: Reply,
    },
    /// Close the connection, reporting how that went, and stop.
    Close {
        reply: Reply,
    },
    /// The store is dropped: close the connection and stop.
    Stop,
    /// Runs a closure on the writer connection; the closure sends its own outcome (see
    /// [`Writer::run`]). The server's writes go this way: one boxed closure per call is nothing
    /// next to their statements, and it spares a job variant per method.
    Run(Box<dyn FnOnce(&Connection) + Send>),
}

/// The handle on the writer thread. Dropping it stops the thread (after the jobs already queued)
/// and waits for it to finish.
struct Writer {
    jobs: mpsc::Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread and waits until it has opened and configured its connection. The error
    /// is a message for [`StoreError::Open`].
    async fn start(target: WriterTarget) -> std::result::Result<Self, String> {
        let (jobs, queue) = mpsc::channel();
        let (ready, opened) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("dossier-sqlite-writer".to_string())
            .spawn(move || writer_thread(target, queue, ready))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        let writer = Writer {
            jobs,
            thread: Some(thread),
        };
        match opened.await {
            Ok(Ok(())) => Ok(writer),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the writer thread stopped while opening the database".to_string()),
        }
    }

    /// Sends a job and waits for its outcome: the one hand-off of a write each way.
    async fn call(&self, job: impl FnOnce(Reply) -> Job) -> Result<()> {
        let (reply, outcome) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .map_err(|_| StoreError::WriterStopped)?;
        // If this future is dropped now, the job still runs: a commit may or may not have
        // happened, as with any commit whose answer was lost.
        outcome.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Runs `f` on the writer thread, after the jobs already queued, and waits for its result.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, outcome) = oneshot::channel();
        self.jobs
            .send(Job::Run(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            })))
            .map_err(|_| StoreError::WriterStopped)?;
        outcome.await.map_err(|_| StoreError::WriterStopped)?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Fails if the thread is already gone (after `Close`), which is fine.
        let _ = self.jobs.send(Job::Stop);
        if let Some(thread) = self.thread.take() {
            // Only jobs queued by commits whose callers gave up can still be ahead of `Stop`:
            // nothing can be running on behalf of a live caller once the store is dropped.
            if thread.join().is_err() {
                tracing::error!("the SQLite writer thread panicked");
            }
        }
    }
}

/// The writer thread: opens the connection, reports on `ready`, then serves jobs until told to
/// stop or until the store is gone.
fn writer_thread(
    target: WriterTarget,
    queue: mpsc::Receiver<Job>,
    ready: oneshot::Sender<rusqlite::Result<()>>,
) {
    let conn = match open_writer(&target) {
        Ok(conn) => conn,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // If `open` was abandoned, the `Writer` is dropped too and `Stop` follows.
    let _ = ready.send(Ok(()));
    while let Ok(job) = queue.recv() {
        match job {
            Job::Commit { batch, reply } => {
                let started = Instant::now();
                let outcome = in_transaction(&conn, |conn| apply_batch(conn, &batch));
                let elapsed = started.elapsed();
                // Answer first; the batch is freed after, off the caller's path.
                let _ = reply.send(outcome);
                if elapsed >= SLOW_COMMIT {
                    tracing::warn!(writes = batch.len(), ?elapsed, "slow SQLite commit");
                }
            }
            Job::PutDefinitions { defs, reply } => {
                let _ = reply.send(in_transaction(&conn, |conn| {
                    insert_definitions(conn, &defs)
                }));
            }
            Job::Close { reply } => {
                let _ = reply.send(conn.close().map_err(|(_, e)| e.into()));
                return;
            }
            Job::Stop => break,
            Job::Run(f) => f(&conn),
        }
    }
    // Dropping the connection closes it.
}

/// Opens the writer connection with the store's settings (the same as the sqlx connections').
fn open_writer(target: &WriterTarget) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match target {
        WriterTarget::File(path) => {
            Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE)?
        }
        // As sqlx opens it, so that both name the same database.
        WriterTarget::SharedMemory(name) => Connection::open_with_flags(
            name,
            flags
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_MEMORY
                | OpenFlags::SQLITE_OPEN_SHARED_CACHE,
        )?,
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Answers with the mode in effect: `wal` for a file (already set by the setup connection:
    // it is a property of the file), `memory` for an in-memory database.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    // FULL: the WAL is fsynced at every commit. See `open_with` for the rest.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; \
         PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENT_CACHE);
    Ok(conn)
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction, committed if `f` succeeds and rolled back
/// otherwise. IMMEDIATE takes the write lock up front: the busy timeout then applies to waiting
/// for it, instead of a deferred transaction failing to upgrade its read lock half-way.
fn in_transaction<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    // A transaction left open by a failed rollback would make every later BEGIN fail.
    rollback(conn);
    execute_cached(conn, "BEGIN IMMEDIATE")?;
    let outcome = f(conn).and_then(|value| {
        execute_cached(conn, "COMMIT")?;
        Ok(value)
    });
    if outcome.is_err() {
        rollback(conn);
    }
    outcome
}

/// Rolls back the open transaction, if any (a failed COMMIT may already have rolled back).
fn rollback(conn: &Connection) {
    if conn.is_autocommit() {
        return;
    }
    if let Err(e) = execute_cached(conn, "ROLLBACK") {
        tracing::error!(error = %e, "SQLite rollback failed");
    }
}

fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

fn insert_definitions(conn: &Connection, defs: &[DefinitionRecord]) -> Result<()> {
    // A hash names its content: an existing row is the same definition.
    let mut insert = conn.prepare_cached(concat!(
        "INSERT INTO definitions (",
        definition_cols!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (hash) DO NOTHING"
    ))?;
    for d in defs {
        insert.execute(params![
            d.hash,
            d.kind,
            d.name,
            d.version,
            d.source,
            d.loaded_at
        ])?;
    }
    Ok(())
}

/// The compare-and-set of [`Store::assign_task`], inside the caller's transaction: one UPDATE
/// whose WHERE is the compare, then, if it changed nothing, the task as it is.
fn assign_task(
    conn: &Connection,
    id: &str,
    from: &[String],
    role: &str,
    holder: Option<&str>,
    status: &str,
    assignee: Option<&str>,
) -> Result<Option<(TaskRecord, bool)>> {
    // One placeholder per accepted status (?6, ?7...). An empty list is `IN ()`, which SQLite
    // accepts and which matches nothing. The statement is cached per list length.
    let mut sql = String::from(
        "UPDATE tasks SET status = ?1, assignee = ?2 \
         WHERE id = ?3 AND assignee IS ?4 AND role = ?5 AND status IN (",
    );
    for i in 0..from.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("?{}", i + 6));
    }
    sql.push_str(concat!(") RETURNING ", task_cols!()));
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&status, &assignee, &id, &holder, &role];
    values.extend(from.iter().map(|s| s as &dyn rusqlite::ToSql));
    let updated = conn
        .prepare_cached(&sql)?
        .query_row(params_from_iter(values), task_row)
        .optional()?;
    if let Some(row) = updated {
        return Ok(Some((task_from(row), true)));
    }
    let current = conn
        .prepare_cached(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE id = ?1"
        ))?
        .query_row([id], task_row)
        .optional()?;
    Ok(current.map(|row| (task_from(row), false)))
}

/// A `tasks` row in the order of `task_cols!`.
fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
        r.get(14)?,
    ))
}

/// Numbers, hashes and inserts the next audit records, in order, inside the caller's
/// transaction (by [`Store::append_audit`] and by a commit whose writes carry audit entries).
/// The writer thread runs one job at a time and `BEGIN IMMEDIATE` keeps other processes out, so
/// nothing can append between the read of the last record and the inserts.
fn append_audit<'a>(
    conn: &Connection,
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> rusqlite::Result<Vec<AuditRecord>> {
    let last: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let records = next_audit_records(last, entries);
    let mut insert = conn.prepare_cached(concat!(
        "INSERT INTO audit (",
        audit_cols!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?;
    for record in &records {
        let e = &record.entry;
        insert.execute(params![
            record.seq,
            e.at,
            e.actor,
            e.role,
            e.action,
            e.target,
            e.origin,
            e.request_id,
            e.details,
            record.prev_hash,
            record.hash
        ])?;
    }
    Ok(records)
}

/// [`Store::allocate_number`] inside the caller's transaction: the number the key holds, or the
/// counter moved on by one and the record of who got the number.
fn allocate_number(conn: &Connection, req: &NumberRequest) -> Result<NumberAllocation> {
    let existing = conn
        .prepare_cached(concat!(
            "SELECT ",
            number_cols!(),
            " FROM numbers WHERE key = ?1"
        ))?
        .query_row([&req.key], number_row)
        .optional()?;
    if let Some(row) = existing {
        return repeated_number(number_from(row), req);
    }
    // No row back: the counter is at the largest BIGINT (SQLite would turn `last + 1` into a
    // REAL); it is left as it is.
    let seq: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO number_series (series, period, last) VALUES (?1, ?2, 1) \
             ON CONFLICT (series, period) DO UPDATE SET last = number_series.last + 1 \
             WHERE number_series.last < ?3 RETURNING last",
        )?
        .query_row(params![req.series, req.period, i64::MAX], |r| r.get(0))
        .optional()?;
    let Some(seq) = seq else {
        return Err(StoreError::NumberSeriesExhausted {
            series: req.series.clone(),
            period: req.period.clone(),
        });
    };
    conn.prepare_cached(concat!(
        "INSERT INTO numbers (",
        number_cols!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?
    .execute(params![
        req.series,
        req.period,
        seq,
        req.key,
        req.case_id,
        req.at
    ])?;
    Ok(fresh_number(req, seq))
}

/// [`Store::post_ledger`] inside the caller's transaction.
fn post_ledger(conn: &Connection, req: &LedgerRequest) -> Result<LedgerOutcome> {
    let made: Vec<PostingRow> = conn
        .prepare_cached(&format!(
            "SELECT {POSTING_COLS} FROM ledger_postings WHERE key = ?1 ORDER BY idx"
        ))?
        .query_map([&req.key], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if !made.is_empty() {
        return Ok(LedgerOutcome::Posted {
            postings: made.into_iter().map(posting_from).collect::<Result<_>>()?,
            fresh: false,
        });
    }
    let mut balances = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for account in request_accounts(req) {
        let row: Option<(String, i64)> = conn
            .prepare_cached("SELECT balance, postings FROM ledger_accounts WHERE account = ?1")?
            .query_row([&account], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((balance, n)) = row {
            balances.insert(account.clone(), stored_decimal(&account, &balance)?);
            counts.insert(account, n);
        }
    }
    let postings = match apply_postings(req, &mut balances, &mut counts)? {
        Ok(p) => p,
        Err(refusal) => return Ok(LedgerOutcome::Refused(refusal)),
    };
    for p in &postings {
        conn.prepare_cached(&format!(
            "INSERT INTO ledger_postings ({POSTING_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))?
        .execute(params![
            p.account,
            p.seq,
            p.amount.to_string(),
            p.balance.to_string(),
            p.key,
            p.index,
            p.case_id,
            p.at
        ])?;
    }
    for (account, balance) in &balances {
        conn.prepare_cached(
            "INSERT INTO ledger_accounts (account, balance, postings) VALUES (?1, ?2, ?3) \
             ON CONFLICT (account) DO UPDATE SET balance = excluded.balance, \
             postings = excluded.postings",
        )?
        .execute(params![account, balance.to_string(), counts[account]])?;
    }
    Ok(LedgerOutcome::Posted {
        postings,
        fresh: true,
    })
}

/// A `numbers` row in the order of `number_cols!`.
fn number_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NumberRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

/// A primary-key or unique constraint refused the row.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

// ---------------------------------------------------------------------------------------------
// Applying a batch

/// The statements of a commit, one row each. `?1` is always the key.
#[derive(Clone, Copy)]
enum Sql {
    InsertCase,
    UpdateCase,
    InsertEvent,
    DeleteEffect,
    DeleteTimer,
    DeleteWait,
    InsertEffect,
    InsertTimer,
    InsertWait,
    InsertTask,
    InsertInbox,
    UpdateTask,
}

const SQL_STATEMENTS: usize = 12;

impl Sql {
    fn text(self) -> &'static str {
        match self {
            Sql::InsertCase => concat!(
                "INSERT INTO cases (",
                case_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            // Optimistic concurrency: the row is only updated if its `last_seq` is the one
            // the write expects. The whole row is rewritten: it is a projection the runtime
            // recomputes.
            Sql::UpdateCase => {
                "UPDATE cases SET workflow_id = ?2, workflow_version = ?3, workflow_hash = ?4, \
                 business_key = ?5, parent_id = ?6, status = ?7, current_step = ?8, data = ?9, \
                 pins = ?10, last_seq = ?11, last_hash = ?12, created_at = ?13, \
                 updated_at = ?14 WHERE id = ?1 AND last_seq = ?15"
            }
            Sql::InsertEvent => concat!(
                "INSERT INTO events (",
                event_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ),
            Sql::DeleteEffect => "DELETE FROM effects WHERE key = ?1",
            Sql::DeleteTimer => "DELETE FROM timers WHERE id = ?1",
            Sql::DeleteWait => "DELETE FROM waits WHERE id = ?1",
            Sql::InsertEffect => concat!(
                "INSERT INTO effects (",
                effect_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            Sql::InsertTimer => concat!(
                "INSERT INTO timers (",
                timer_cols!(),
                ") VALUES (?1, ?2, ?3, ?4)"
            ),
            Sql::InsertWait => concat!(
                "INSERT INTO waits (",
                wait_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5)"
            ),
            Sql::InsertTask => concat!(
                "INSERT INTO tasks (",
                task_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            ),
            Sql::InsertInbox => concat!(
                "INSERT INTO inbox (",
                inbox_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            // A NULL role means "keep the role"; a role is only ever replaced (escalation).
            Sql::UpdateTask => {
                "UPDATE tasks SET status = ?2, assignee = ?3, role = COALESCE(?4, role), \
                 completed_at = ?5, completed_by = ?6, outcome = ?7, data = ?8 WHERE id = ?1"
            }
        }
    }
}

/// The statements a commit uses, taken from the connection's cache on first use and given back
/// when the commit is done: one cache lookup per statement and commit, not per row.
struct Statements<'c> {
    conn: &'c Connection,
    taken: [Option<CachedStatement<'c>>; SQL_STATEMENTS],
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            taken: Default::default(),
        }
    }

    fn get(&mut self, sql: Sql) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let slot = &mut self.taken[sql as usize];
        let statement = match slot.take() {
            Some(s) => s,
            None => self.conn.prepare_cached(sql.text())?,
        };
        Ok(slot.insert(statement))
    }
}

/// Why a write failed.
enum Failure {
    /// A check failed (stale `last_seq`, duplicate key, missing task): a conflict.
    Conflict,
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    /// Unique violations are conflicts (a duplicate case, event, effect, timer, wait or task
    /// means two transitions raced, a duplicate inbox key a request taken twice); anything else
    /// is a database failure.
    fn from(e: rusqlite::Error) -> Self {
        if is_unique_violation(&e) {
            Failure::Conflict
        } else {
            Failure::Db(e)
        }
    }
}

/// Applies the writes one after the other (inside the caller's transaction), then appends the
/// batch's audit entries. The first write that fails a check is the one the conflict names;
/// the caller rolls everything back, audit records included.
fn apply_batch(conn: &Connection, batch: &[CaseWrite]) -> Result<()> {
    let mut statements = Statements::new(conn);
    for w in batch {
        match apply_write(&mut statements, w) {
            Ok(()) => {}
            Err(Failure::Conflict) => return Err(conflict_of(w)),
            Err(Failure::Db(e)) => return Err(e.into()),
        }
    }
    let entries = batch_audit(batch);
    if !entries.is_empty() {
        append_audit(conn, entries)?;
    }
    Ok(())
}

/// One write, in the contract's order: case row, events, deletes, inserts (the inbox rows last),
/// task updates.
fn apply_write(st: &mut Statements<'_>, w: &CaseWrite) -> std::result::Result<(), Failure> {
    if let Some(c) = &w.case {
        let row = params![
            c.id,
            c.workflow_id,
            c.workflow_version,
            c.workflow_hash,
            c.business_key,
            c.parent_id,
            c.status,
            c.current_step,
            c.data,
            c.pins,
            c.last_seq,
            c.last_hash,
            c.created_at,
            c.updated_at,
        ];
        match w.expected_last_seq {
            // A duplicate id is a unique violation, hence a conflict.
            None => {
                st.get(Sql::InsertCase)?.execute(row)?;
            }
            // No row changed: the case moved on (or never existed).
            Some(expected) => {
                let mut update = row.to_vec();
                update.push(&expected);
                if st.get(Sql::UpdateCase)?.execute(update.as_slice())? != 1 {
                    return Err(Failure::Conflict);
                }
            }
        }
    }
    for e in &w.events {
        st.get(Sql::InsertEvent)?.execute(params![
            e.case_id,
            e.seq,
            e.at,
            e.kind,
            e.payload,
            e.prev_hash,
            e.hash
        ])?;
    }
    // Deleting a missing key is fine (a timer already dropped, an effect already settled).
    for k in &w.effects_done {
        st.get(Sql::DeleteEffect)?.execute([k])?;
    }
    for k in &w.timers_done {
        st.get(Sql::DeleteTimer)?.execute([k])?;
    }
    for k in &w.waits_done {
        st.get(Sql::DeleteWait)?.execute([k])?;
    }
    for e in &w.effects_new {
        st.get(Sql::InsertEffect)?.execute(params![
            e.key,
            e.case_id,
            e.step,
            e.connector,
            e.operation,
            e.request,
            e.attempt,
            e.timeout_ms,
            e.created_at
        ])?;
    }
    for t in &w.timers_new {
        st.get(Sql::InsertTimer)?
            .execute(params![t.id, t.case_id, t.fire_at, t.purpose])?;
    }
    for v in &w.waits_new {
        st.get(Sql::InsertWait)?.execute(params![
            v.id,
            v.case_id,
            v.event_name,
            v.correlation,
            v.created_at
        ])?;
    }
    for t in &w.tasks_new {
        st.get(Sql::InsertTask)?.execute(params![
            t.id,
            t.case_id,
            t.workflow_id,
            t.step,
            t.role,
            t.title,
            t.form,
            t.status,
            t.assignee,
            t.due_at,
            t.created_at,
            t.completed_at,
            t.completed_by,
            t.outcome,
            t.data
        ])?;
    }
    // A `(scope, key)` already taken (by an earlier commit or an earlier write of this batch) is
    // a unique violation: a conflict.
    for i in &w.inbox {
        st.get(Sql::InsertInbox)?.execute(params![
            i.scope,
            i.key,
            i.request_hash,
            i.case_id,
            i.status,
            i.created_at
        ])?;
    }
    // Updating a task that does not exist is a conflict: the transition was computed from a
    // state the store does not hold.
    for t in &w.tasks_updated {
        let changed = st.get(Sql::UpdateTask)?.execute(params![
            t.id,
            t.status,
            t.assignee,
            t.role,
            t.completed_at,
            t.completed_by,
            t.outcome,
            t.data
        ])?;
        if changed != 1 {
            return Err(Failure::Conflict);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SqliteStore {
        /// Runs `f` on the writer thread's connection.
        async fn on_writer<T: Send + 'static>(
            &self,
            f: impl FnOnce(&Connection) -> T + Send + 'static,
        ) -> T {
            let (tx, rx) = oneshot::channel();
            self.writer
                .jobs
                .send(Job::Run(Box::new(move |conn| {
                    let _ = tx.send(f(conn));
                })))
                .expect("writer thread running");
            rx.await.expect("writer thread answered")
        }
    }

    async fn open_temp(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("d.db"))
            .await
            .expect("open")
    }

    /// The durability settings are per connection: check the writer really has them.
    #[tokio::test]
    async fn writer_is_wal_and_synchronous_full() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_temp(&dir).await;
        let (mode, sync, busy) = store
            .on_writer(|conn| {
                let get =
                    |sql: &str| conn.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0));
                (
                    get("PRAGMA journal_mode").expect("journal_mode"),
                    get("PRAGMA synchronous").expect("synchronous"),
                    get("PRAGMA busy_timeout").expect("busy_timeout"),
                )
            })
            .await;
        assert_eq!(mode, rusqlite::types::Value::Text("wal".to_string()));
        assert_eq!(sync, rusqlite::types::Value::Integer(2), "synchronous=FULL");
        assert_eq!(busy, rusqlite::types::Value::Integer(10_000));

        // Readers refuse to write.
        let err = sqlx::query("DELETE FROM cases")
            .execute(&store.readers)
            .await
            .expect_err("readers are query_only");
        assert!(err.to_string().contains("readonly") || err.to_string().contains("read"));
    }

    /// Waits (a little) for a thread to finish.
    fn finishes(thread: &JoinHandle<()>) -> bool {
        for _ in 0..500 {
            if thread.is_finished() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// No thread outlives its store, closed or just dropped.
    #[tokio::test]
    async fn writer_thread_stops_with_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");

        let mut store = open_temp(&dir).await;
        // Taken out, so that `Drop` does not join it: the test watches it stop by itself.
        let thread = store.writer.thread.take().expect("writer thread");
        assert!(!thread.is_finished());
        drop(store);
        assert!(finishes(&thread), "the writer thread survived the store");

        let mut store = open_temp(&dir).await;
        let thread = store.writer.thread.take().expect("writer thread");
        store.close().await.expect("close");
        assert!(finishes(&thread), "the writer thread survived close");
        assert!(
            !dir.path().join("d.db-wal").exists(),
            "close checkpoints and removes the WAL"
        );
    }

    /// A counter at the largest BIGINT gives no number: SQLite would otherwise turn `last + 1`
    /// into a REAL. Nothing is written; repeats are still answered.
    #[tokio::test]
    async fn exhausted_number_series_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_temp(&dir).await;
        let req = |key: &str| NumberRequest {
            series: "FAC".to_string(),
            period: "2026".to_string(),
            key: key.to_string(),
            case_id: "c".to_string(),
            at: 1,
        };
        assert_eq!(
            store.allocate_number(&req("a")).await.expect("first").seq,
            1
        );
        store
            .on_writer(|conn| conn.execute("UPDATE number_series SET last = ?1", [i64::MAX]))
            .await
            .expect("counter at the end");
        match store.allocate_number(&req("b")).await {
            Err(StoreError::NumberSeriesExhausted { series, period }) => {
                assert_eq!((series.as_str(), period.as_str()), ("FAC", "2026"));
            }
            other => panic!("expected NumberSeriesExhausted, got {other:?}"),
        }
        let (last, kind) = store
            .on_writer(|conn| {
                conn.query_row("SELECT last, typeof(last) FROM number_series", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
            })
            .await
            .expect("counter");
        assert_eq!((last, kind.as_str()), (i64::MAX, "integer"));
        assert_eq!(
            store.numbers("FAC", "2026").await.expect("numbers").len(),
            1
        );
        let again = store.allocate_number(&req("a")).await.expect("repeat");
        assert_eq!((again.seq, again.fresh), (1, false));
        assert!(store.on_writer(|conn| conn.is_autocommit()).await);
    }

    /// A transaction somehow left open on the writer does not wedge later commits.
    #[tokio::test]
    async fn commit_recovers_from_a_dangling_transaction() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_temp(&dir).await;
        store
            .on_writer(|conn| conn.execute_batch("BEGIN IMMEDIATE"))
            .await
            .expect("begin");
        let case = CaseRecord {
            id: "c".to_string(),
            workflow_id: "w".to_string(),
            workflow_version: 1,
            workflow_hash: "h".to_string(),
            business_key: None,
            parent_id: None,
            status: "running".to_string(),
            current_step: None,
            data: "{}".to_string(),
            pins: "{}".to_string(),
            last_seq: 0,
            last_hash: String::new(),
            created_at: 1,
            updated_at: 1,
        };
        store
            .commit(&[CaseWrite {
                case: Some(case.clone()),
                ..Default::default()
            }])
            .await
            .expect("commit after a dangling transaction");
        assert_eq!(store.case("c").await.expect("read"), Some(case));
        assert!(store.on_writer(|conn| conn.is_autocommit()).await);
    }
}
