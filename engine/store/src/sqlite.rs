//! The embedded SQLite store: one database file in WAL mode with `synchronous=FULL`, so that a
//! commit that returned is on disk (the WAL is fsynced at every commit).
//!
//! SQLite allows one writer at a time. Rather than letting pooled connections fight over the
//! write lock (and spin in the busy handler), every write goes through ONE dedicated writer
//! connection guarded by a tokio mutex; reads use a small pool of `query_only` connections on the
//! same file, which WAL lets run concurrently with the writer.
//!
//! A batch is applied in rounds (see [`crate::common::rounds`]); each round writes every table
//! with multi-row statements (`INSERT ... VALUES (..), (..)`, `DELETE ... IN (..)`, and a single
//! `UPDATE ... FROM (VALUES ..)` for the optimistic case updates), chunked under SQLite's limit of
//! 32766 bound variables. If anything conflicts, the transaction is rolled back and the batch is
//! replayed write by write in a throw-away transaction to name the culprit.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::query_builder::Separated;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder};
use tokio::sync::Mutex;

use crate::common::{
    case_cols, case_from, conflict_of, definition_cols, definition_from, effect_cols, effect_from,
    event_cols, event_from, rounds, sql_limit, task_cols, task_from, timer_cols, timer_from,
    wait_cols, wait_from, CaseRow, DefinitionRow, EffectRow, EventRow, RoundError, RoundRows,
    TaskRow, TimerRow, WaitRow, CASE_UPDATE_COLS,
};
use crate::{
    CaseFilter, CaseRecord, CaseWrite, DefinitionRecord, EffectRecord, EventRecord, Millis, Result,
    Store, StoreError, TaskFilter, TaskRecord, TimerRecord, WaitRecord,
};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` since 3.32 (the bundled library is newer).
const MAX_VARIABLES: usize = 32766;
/// Upper bound on rows per statement, whatever the column count. Each distinct row count is a
/// distinct prepared statement in the cache; capping keeps those statements small.
const MAX_ROWS_PER_STATEMENT: usize = 1024;
/// How long a connection waits for a lock held by another process (a CLI, a backup) before
/// giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections. Reads are short; a few are enough to overlap API queries with the workers.
const READERS: u32 = 4;
/// Prepared statements kept per connection. The writer prepares one statement per table and
/// distinct row count, so it gets a larger cache than the default 100.
const WRITER_STATEMENT_CACHE: usize = 512;

/// Rows per multi-row statement for a table of `columns` bound columns.
fn chunk_rows(columns: usize) -> usize {
    (MAX_VARIABLES / columns).clamp(1, MAX_ROWS_PER_STATEMENT)
}

/// The SQLite implementation of [`Store`]. Cheap to share behind an `Arc`; every method may be
/// called concurrently, commits are serialised on the writer connection.
pub struct SqliteStore {
    writer: Mutex<SqliteConnection>,
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
        let open_error = |e: sqlx::Error| StoreError::Open {
            location: location.to_string(),
            message: e.to_string(),
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

        let mut writer = options
            .clone()
            .statement_cache_capacity(WRITER_STATEMENT_CACHE)
            // The writer's statements are multi-row inserts of whole batches: logging each one
            // at DEBUG would flood any debug log. Still there at TRACE; slow ones still warn.
            .log_statements(log::LevelFilter::Trace)
            .connect()
            .await
            .map_err(open_error)?;
        MIGRATOR.run(&mut writer).await?;

        // The readers can never write: all writes must go through the writer's mutex, and
        // `query_only` turns a mistake into an error instead of a lock fight.
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(0)
            .connect_with(options.pragma("query_only", "ON"))
            .await
            .map_err(open_error)?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers,
        })
    }

    /// Closes the connections, checkpointing the WAL into the database file. Dropping the store
    /// is also safe (every commit is already durable); this just leaves a tidier file behind.
    pub async fn close(self) -> Result<()> {
        self.readers.close().await;
        let writer = self.writer.into_inner();
        writer.close().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, batch: &[CaseWrite]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer.lock().await;
        commit_on(&mut conn, batch).await
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
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in defs.chunks(chunk_rows(6)) {
            let mut qb = QueryBuilder::<Sqlite>::new(concat!(
                "INSERT INTO definitions (",
                definition_cols!(),
                ") "
            ));
            qb.push_values(chunk, |mut b, d| {
                b.push_bind(d.hash.as_str())
                    .push_bind(d.kind.as_str())
                    .push_bind(d.name.as_str())
                    .push_bind(d.version)
                    .push_bind(d.source.as_str())
                    .push_bind(d.loaded_at);
            });
            // A hash names its content: an existing row is the same definition.
            qb.push(" ON CONFLICT (hash) DO NOTHING");
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
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
}

/// The group commit on the writer connection (the caller holds the writer mutex).
async fn commit_on(conn: &mut SqliteConnection, batch: &[CaseWrite]) -> Result<()> {
    // IMMEDIATE takes the write lock up front: the busy timeout then applies to waiting for it,
    // instead of a deferred transaction failing to upgrade its read lock half-way.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    for round in rounds(batch) {
        match apply_round(&mut tx, &RoundRows::gather(round)).await {
            Ok(()) => {}
            Err(RoundError::Db(e)) => return Err(e.into()), // dropping `tx` rolls back
            Err(RoundError::Conflict) => {
                tx.rollback().await?;
                return Err(find_conflict(conn, batch, round).await);
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Names the write that made the batch fail: replays the batch one write at a time in a
/// transaction that is always rolled back. The writer mutex is held, so the database is exactly
/// as the failed attempt saw it. `failed_round` is blamed if the replay somehow succeeds.
async fn find_conflict(
    conn: &mut SqliteConnection,
    batch: &[CaseWrite],
    failed_round: &[CaseWrite],
) -> StoreError {
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return e.into(),
    };
    let mut culprit = None;
    for w in batch {
        match apply_round(&mut tx, &RoundRows::gather(std::slice::from_ref(w))).await {
            Ok(()) => {}
            Err(RoundError::Conflict) => {
                culprit = Some(w);
                break;
            }
            Err(RoundError::Db(e)) => return e.into(),
        }
    }
    if let Err(e) = tx.rollback().await {
        return e.into();
    }
    match culprit.or(failed_round.first()) {
        Some(w) => conflict_of(w),
        None => StoreError::Conflict {
            case_id: String::new(),
            expected: None,
        },
    }
}

/// Applies one round (writes touching disjoint keys) table by table, with one multi-row
/// statement per table and chunk. Order: case rows, events, deletes, then inserts (a write may
/// drop and re-create the same timer id), then task updates (a task created by the round may be
/// updated by it).
async fn apply_round(
    conn: &mut SqliteConnection,
    rows: &RoundRows<'_>,
) -> std::result::Result<(), RoundError> {
    insert_rows(
        conn,
        concat!("INSERT INTO cases (", case_cols!(), ") "),
        14,
        &rows.new_cases,
        |b, c| bind_case(b, c),
    )
    .await?;
    update_cases(conn, &rows.updated_cases).await?;
    insert_rows(
        conn,
        concat!("INSERT INTO events (", event_cols!(), ") "),
        7,
        &rows.events,
        |mut b, e| {
            b.push_bind(e.case_id.as_str())
                .push_bind(e.seq)
                .push_bind(e.at)
                .push_bind(e.kind.as_str())
                .push_bind(e.payload.as_str())
                .push_bind(e.prev_hash.as_str())
                .push_bind(e.hash.as_str());
        },
    )
    .await?;
    delete_keys(
        conn,
        "DELETE FROM effects WHERE key IN (",
        &rows.effects_done,
    )
    .await?;
    delete_keys(conn, "DELETE FROM timers WHERE id IN (", &rows.timers_done).await?;
    delete_keys(conn, "DELETE FROM waits WHERE id IN (", &rows.waits_done).await?;
    insert_rows(
        conn,
        concat!("INSERT INTO effects (", effect_cols!(), ") "),
        9,
        &rows.effects_new,
        |mut b, e| {
            b.push_bind(e.key.as_str())
                .push_bind(e.case_id.as_str())
                .push_bind(e.step.as_str())
                .push_bind(e.connector.as_str())
                .push_bind(e.operation.as_str())
                .push_bind(e.request.as_str())
                .push_bind(e.attempt)
                .push_bind(e.timeout_ms)
                .push_bind(e.created_at);
        },
    )
    .await?;
    insert_rows(
        conn,
        concat!("INSERT INTO timers (", timer_cols!(), ") "),
        4,
        &rows.timers_new,
        |mut b, t| {
            b.push_bind(t.id.as_str())
                .push_bind(t.case_id.as_str())
                .push_bind(t.fire_at)
                .push_bind(t.purpose.as_str());
        },
    )
    .await?;
    insert_rows(
        conn,
        concat!("INSERT INTO waits (", wait_cols!(), ") "),
        5,
        &rows.waits_new,
        |mut b, w| {
            b.push_bind(w.id.as_str())
                .push_bind(w.case_id.as_str())
                .push_bind(w.event_name.as_str())
                .push_bind(w.correlation.as_str())
                .push_bind(w.created_at);
        },
    )
    .await?;
    insert_rows(
        conn,
        concat!("INSERT INTO tasks (", task_cols!(), ") "),
        15,
        &rows.tasks_new,
        |mut b, t| {
            b.push_bind(t.id.as_str())
                .push_bind(t.case_id.as_str())
                .push_bind(t.workflow_id.as_str())
                .push_bind(t.step.as_str())
                .push_bind(t.role.as_str())
                .push_bind(t.title.as_str())
                .push_bind(t.form.as_str())
                .push_bind(t.status.as_str())
                .push_bind(t.assignee.as_deref())
                .push_bind(t.due_at)
                .push_bind(t.created_at)
                .push_bind(t.completed_at)
                .push_bind(t.completed_by.as_deref())
                .push_bind(t.outcome.as_deref())
                .push_bind(t.data.as_deref());
        },
    )
    .await?;
    update_tasks(conn, rows).await
}

/// Binds the 14 columns of a case row, in [`case_cols`] order.
fn bind_case<'a>(mut b: Separated<'_, 'a, Sqlite, &'static str>, c: &'a CaseRecord) {
    b.push_bind(c.id.as_str())
        .push_bind(c.workflow_id.as_str())
        .push_bind(c.workflow_version)
        .push_bind(c.workflow_hash.as_str())
        .push_bind(c.business_key.as_deref())
        .push_bind(c.parent_id.as_deref())
        .push_bind(c.status.as_str())
        .push_bind(c.current_step.as_deref())
        .push_bind(c.data.as_str())
        .push_bind(c.pins.as_str())
        .push_bind(c.last_seq)
        .push_bind(c.last_hash.as_str())
        .push_bind(c.created_at)
        .push_bind(c.updated_at);
}

/// `head` followed by `VALUES (..), (..)`, in chunks under the bound-variable limit. A unique
/// violation surfaces as [`RoundError::Conflict`].
async fn insert_rows<'a, T: 'a>(
    conn: &mut SqliteConnection,
    head: &str,
    columns: usize,
    rows: &'a [&'a T],
    mut bind: impl FnMut(Separated<'_, 'a, Sqlite, &'static str>, &'a T),
) -> std::result::Result<(), RoundError> {
    for chunk in rows.chunks(chunk_rows(columns)) {
        let mut qb = QueryBuilder::<Sqlite>::new(head);
        qb.push_values(chunk.iter().copied(), &mut bind);
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// `head` followed by `?, ?, ...)`: a multi-row delete. Missing keys are fine (a timer already
/// dropped, an effect already settled): deletes are idempotent.
async fn delete_keys(
    conn: &mut SqliteConnection,
    head: &str,
    keys: &[&str],
) -> std::result::Result<(), RoundError> {
    for chunk in keys.chunks(chunk_rows(1)) {
        let mut qb = QueryBuilder::<Sqlite>::new(head);
        let mut list = qb.separated(", ");
        for key in chunk {
            list.push_bind(*key);
        }
        qb.push(")");
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The optimistic case updates of a round in one statement per chunk:
/// `WITH v(id, expected, ...) AS (VALUES ..) UPDATE cases SET .. FROM v WHERE cases.id = v.id
/// AND cases.last_seq = v.expected`. Case ids are unique within a round, so the number of rows
/// changed must equal the number of updates; any shortfall is a stale `last_seq` (or a case that
/// does not exist), i.e. a conflict.
async fn update_cases(
    conn: &mut SqliteConnection,
    updates: &[(&CaseRecord, i64)],
) -> std::result::Result<(), RoundError> {
    if updates.is_empty() {
        return Ok(());
    }
    let set = CASE_UPDATE_COLS
        .iter()
        .map(|c| format!("{c} = v.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let head = concat!("WITH v (expected, ", case_cols!(), ") AS (");
    let tail = format!(
        ") UPDATE cases SET {set} FROM v WHERE cases.id = v.id AND cases.last_seq = v.expected"
    );
    let mut changed = 0;
    for chunk in updates.chunks(chunk_rows(15)) {
        let mut qb = QueryBuilder::<Sqlite>::new(head);
        qb.push_values(chunk.iter(), |mut b, (c, expected)| {
            b.push_bind(*expected);
            bind_case(b, c);
        });
        qb.push(&tail);
        changed += qb.build().execute(&mut *conn).await?.rows_affected();
    }
    if changed == updates.len() as u64 {
        Ok(())
    } else {
        Err(RoundError::Conflict)
    }
}

/// Task updates of a round, batched like [`update_cases`]. Updating a task that does not exist
/// is a conflict: the transition was computed from a state the store does not hold.
async fn update_tasks(
    conn: &mut SqliteConnection,
    rows: &RoundRows<'_>,
) -> std::result::Result<(), RoundError> {
    let updates = &rows.tasks_updated;
    if updates.is_empty() {
        return Ok(());
    }
    let mut changed = 0;
    for chunk in updates.chunks(chunk_rows(8)) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "WITH v (id, status, assignee, role, completed_at, completed_by, outcome, data) AS (",
        );
        qb.push_values(chunk.iter(), |mut b, t| {
            b.push_bind(t.id.as_str())
                .push_bind(t.status.as_str())
                .push_bind(t.assignee.as_deref())
                .push_bind(t.role.as_deref())
                .push_bind(t.completed_at)
                .push_bind(t.completed_by.as_deref())
                .push_bind(t.outcome.as_deref())
                .push_bind(t.data.as_deref());
        });
        // A NULL role means "keep the role"; a role is only ever replaced (escalation).
        qb.push(
            ") UPDATE tasks SET status = v.status, assignee = v.assignee, \
             role = COALESCE(v.role, tasks.role), completed_at = v.completed_at, \
             completed_by = v.completed_by, outcome = v.outcome, data = v.data \
             FROM v WHERE tasks.id = v.id",
        );
        changed += qb.build().execute(&mut *conn).await?.rows_affected();
    }
    if changed == updates.len() as u64 {
        Ok(())
    } else {
        Err(RoundError::Conflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The durability settings are per connection: check the writer really has them.
    #[tokio::test]
    async fn writer_is_wal_and_synchronous_full() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("d.db"))
            .await
            .expect("open");
        let mut writer = store.writer.lock().await;
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut *writer)
            .await
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut *writer)
            .await
            .expect("synchronous");
        assert_eq!(sync, 2, "synchronous=FULL");
        let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
            .fetch_one(&mut *writer)
            .await
            .expect("busy_timeout");
        assert_eq!(busy, 10_000);
        drop(writer);

        // Readers refuse to write.
        let err = sqlx::query("DELETE FROM cases")
            .execute(&store.readers)
            .await
            .expect_err("readers are query_only");
        assert!(err.to_string().contains("readonly") || err.to_string().contains("read"));
    }
}
