//! The PostgreSQL store, for deployments that share one database between engine nodes.
//!
//! Batches are written with one statement per table whose rows arrive as arrays:
//! `INSERT ... SELECT * FROM UNNEST($1::text[], $2::int8[], ...)`. Unlike a multi-row
//! `VALUES` list, the SQL text does not depend on the row count, so each statement is prepared
//! once per connection and reused, and there is no bind-parameter limit to chunk around. The
//! optimistic case updates are one `UPDATE ... FROM UNNEST(...)` whose row count must match.
//!
//! Under READ COMMITTED an `UPDATE ... WHERE last_seq = $expected` that waited for a concurrent
//! writer re-checks the condition against the committed row, so two nodes racing on one case
//! cannot both succeed: the loser changes no row and reports a conflict.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};
use sqlx::{ConnectOptions, QueryBuilder};

use crate::common::{
    account_from, apply_postings, posting_from, request_accounts, stored_decimal, PostingRow,
    POSTING_COLS,
};
use crate::common::{
    api_key_cols, api_key_conflict, api_key_from, audit_cols, audit_from, batch_audit, case_cols,
    case_from, conflict_of, definition_cols, definition_from, effect_cols, effect_from, event_cols,
    event_from, fresh_number, inbox_cols, inbox_from, next_audit_records, number_cols, number_from,
    repeated_number, rounds, sort_api_keys, sql_limit, task_cols, task_from, timer_cols,
    timer_from, wait_cols, wait_from, ApiKeyRow, AuditRow, CaseRow, DefinitionRow, EffectRow,
    EventRow, InboxRow, NumberRow, RoundError, RoundRows, TaskRow, TimerRow, WaitRow,
};
use crate::{
    ApiKeyRecord, AuditEntry, AuditRecord, CaseFilter, CaseRecord, CaseWrite, DefinitionRecord,
    EffectRecord, EventRecord, InboxRecord, LedgerAccount, LedgerOutcome, LedgerPosting,
    LedgerRequest, Millis, NumberAllocation, NumberRecord, NumberRequest, Result, Store,
    StoreError, TaskFilter, TaskRecord, TimerRecord, WaitRecord,
};
use crate::{IdClaim, IdClaimOutcome};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Pool size: commits use one connection at a time, the rest serve reads.
const MAX_CONNECTIONS: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// The transaction-level advisory lock that serialises audit appends across nodes ("dossaudi"
/// in ASCII). sqlx's migration lock is derived from the database name, so they do not collide.
const AUDIT_LOCK: i64 = 0x646f_7373_6175_6469;
/// The unique constraint on `numbers.key` (see the numbering migration): a record refused by it
/// lost a race on its idempotency key.
const NUMBERS_KEY: &str = "numbers_key";
/// The unique constraint on a ledger posting's (key, index): a race lost on an effect's key.
const LEDGER_POSTINGS_KEY: &str = "ledger_postings_key";
/// Rounds of [`Store::allocate_number`]: a lost race costs one more; a third is only needed if
/// the winner's record vanished in between.
const NUMBER_ROUNDS: usize = 3;

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: PgPool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:5432/db`) and brings the schema up to date.
    /// Migrations take PostgreSQL's advisory lock, so several nodes may start at once.
    pub async fn connect(url: &str) -> Result<Self> {
        let open_error = |e: sqlx::Error| StoreError::Open {
            location: redact(url),
            message: e.to_string(),
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(open_error)?
            // Batch statements carry thousands of array elements: keep them out of DEBUG logs
            // (still at TRACE; slow statements still warn).
            .log_statements(log::LevelFilter::Trace)
            // The batch statements join on UNNEST arrays: a plan cached while the tables were
            // small (a sequential scan of `cases`) would stay as they grow. Planning each run
            // with the real sizes keeps the primary-key lookups.
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool (the caller chose its size and options) after migrating.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The URL without its user information, so that a password never lands in an error message.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl Store for PgStore {
    async fn commit(&self, batch: &[CaseWrite]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for round in rounds(batch) {
            match apply_round(&mut tx, &RoundRows::gather(round)).await {
                Ok(()) => {}
                Err(RoundError::Db(e)) => return Err(e.into()), // dropping `tx` rolls back
                Err(RoundError::Conflict) => {
                    // PostgreSQL aborts the transaction on error anyway; roll back and find out
                    // which write it was.
                    tx.rollback().await?;
                    return Err(self.find_conflict(batch, round).await);
                }
            }
        }
        // The audit entries go in once, after the rounds: a batch that failed never gets here.
        // Only a batch with entries takes the audit lock (others are not serialised), and it
        // takes it last: a holder of the lock then waits for no row lock of another commit, so
        // commits and appends cannot deadlock on it.
        let entries = batch_audit(batch);
        if !entries.is_empty() {
            append_audit(&mut tx, &entries).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn case(&self, id: &str) -> Result<Option<CaseRecord>> {
        let row: Option<CaseRow> = sqlx::query_as(concat!(
            "SELECT ",
            case_cols!(),
            " FROM cases WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(case_from))
    }

    async fn list_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>> {
        let mut qb = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            case_cols!(),
            " FROM cases WHERE TRUE"
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
        // `id` is COLLATE "C" in the schema: byte order, as in SQLite and the memory store.
        qb.push(" ORDER BY id LIMIT ")
            .push_bind(sql_limit(filter.limit));
        let rows: Vec<CaseRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(case_from).collect())
    }

    async fn count_cases_by_status(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, COUNT(*) FROM cases GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(timer_from).collect())
    }

    async fn next_timer_at(&self) -> Result<Option<Millis>> {
        let (at,): (Option<i64>,) = sqlx::query_as("SELECT MIN(fire_at) FROM timers")
            .fetch_one(&self.pool)
            .await?;
        Ok(at)
    }

    async fn pending_effects(
        &self,
        after_key: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EffectRecord>> {
        // Two statements rather than `$1 IS NULL OR key > $1`, which a generic plan cannot turn
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
        let rows: Vec<EffectRow> = query.bind(sql_limit(limit)).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(effect_from).collect())
    }

    async fn waits_for(&self, event_name: &str, correlation: &str) -> Result<Vec<WaitRecord>> {
        let rows: Vec<WaitRow> = sqlx::query_as(concat!(
            "SELECT ",
            wait_cols!(),
            " FROM waits WHERE event_name = $1 AND correlation = $2 \
             ORDER BY created_at, id"
        ))
        .bind(event_name)
        .bind(correlation)
        .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(wait_from).collect())
    }

    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>> {
        let mut qb = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE TRUE"
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
        let rows: Vec<TaskRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(task_from).collect())
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>> {
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(task_from))
    }

    async fn put_definitions(&self, defs: &[DefinitionRecord]) -> Result<()> {
        if defs.is_empty() {
            return Ok(());
        }
        // A hash names its content: an existing row is the same definition.
        sqlx::query(concat!(
            "INSERT INTO definitions (",
            definition_cols!(),
            ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
             $6::int8[]) ON CONFLICT (hash) DO NOTHING"
        ))
        .bind(col(defs, |d| d.hash.as_str()))
        .bind(col(defs, |d| d.kind.as_str()))
        .bind(col(defs, |d| d.name.as_str()))
        .bind(col(defs, |d| d.version))
        .bind(col(defs, |d| d.source.as_str()))
        .bind(col(defs, |d| d.loaded_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn definition(&self, hash: &str) -> Result<Option<DefinitionRecord>> {
        let row: Option<DefinitionRow> = sqlx::query_as(concat!(
            "SELECT ",
            definition_cols!(),
            " FROM definitions WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
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
        .fetch_all(&self.pool)
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
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(inbox_from))
    }

    async fn inbox_scope(&self, scope: &str) -> Result<Vec<InboxRecord>> {
        // `key` is COLLATE "C" in the schema: byte order, as in SQLite and the memory store.
        let rows: Vec<InboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            inbox_cols!(),
            " FROM inbox WHERE scope = $1 ORDER BY key"
        ))
        .bind(scope)
        .fetch_all(&self.pool)
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
        // The compare and the set are one statement: under READ COMMITTED an UPDATE that waited
        // for a concurrent one re-checks its WHERE against the committed row, so two claims of
        // the same open task cannot both succeed. Its audit entry goes in the same transaction.
        let mut tx = self.pool.begin().await?;
        let updated: Option<TaskRow> = sqlx::query_as(concat!(
            "UPDATE tasks SET status = $2, assignee = $3 WHERE id = $1 AND status = ANY($4) \
             AND assignee IS NOT DISTINCT FROM $5::text AND role = $6 RETURNING ",
            task_cols!()
        ))
        .bind(id)
        .bind(status)
        .bind(assignee)
        .bind(from)
        .bind(holder)
        .bind(role)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = updated {
            if let Some(entry) = audit {
                append_audit(&mut tx, &[entry]).await?;
            }
            tx.commit().await?;
            return Ok(Some((task_from(row), true)));
        }
        tx.rollback().await?;
        // Unchanged (or unknown): report the task as it is.
        Ok(self.task(id).await?.map(|t| (t, false)))
    }

    async fn count_tasks_by_status(&self) -> Result<Vec<(String, i64)>> {
        // `tasks.status` has the database's collation: order by bytes, as the other stores do.
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let result = sqlx::query(concat!(
            "INSERT INTO api_keys (",
            api_key_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.role)
        .bind(&key.hash)
        .bind(key.created_at)
        .bind(key.revoked_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(api_key_conflict(key)),
            Err(e) => Err(e.into()),
        }
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row: Option<ApiKeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            api_key_cols!(),
            " FROM api_keys WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(api_key_from))
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            api_key_cols!(),
            " FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(api_key_from).collect())
    }

    async fn revoke_api_key(&self, id_or_name: &str, at: Millis) -> Result<Vec<ApiKeyRecord>> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(concat!(
            "UPDATE api_keys SET revoked_at = $2 \
             WHERE (id = $1 OR name = $1) AND revoked_at IS NULL RETURNING ",
            api_key_cols!()
        ))
        .bind(id_or_name)
        .bind(at)
        .fetch_all(&self.pool)
        .await?;
        let mut keys: Vec<ApiKeyRecord> = rows.into_iter().map(api_key_from).collect();
        sort_api_keys(&mut keys);
        Ok(keys)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord> {
        let mut tx = self.pool.begin().await?;
        // Dropping `tx` on an error rolls back and unlocks.
        let mut records = append_audit(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(records.remove(0))
    }

    async fn audit(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(concat!(
            "SELECT ",
            audit_cols!(),
            " FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after_seq)
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(audit_from).collect())
    }

    async fn allocate_number(&self, req: &NumberRequest) -> Result<NumberAllocation> {
        // Each round: the number the key already holds (a repeat, the common case after a
        // crash: answered without touching the counter), else a transaction that moves the
        // counter and records the number. The counter's row lock serialises the transactions of
        // one series and period until they end, so each reads the last one's commit. A
        // transaction whose record hits the unique key lost a race on that key to another node
        // (which committed it, or the insert would have waited): it rolls back, counter
        // included, and the next round finds the winner's number. Only a number deleted in
        // between could make a round fail again.
        for _ in 0..NUMBER_ROUNDS {
            if let Some(existing) = self.number_of_key(&req.key).await? {
                return repeated_number(existing, req);
            }
            let mut tx = self.pool.begin().await?;
            // No row back: the counter is at the largest BIGINT; it is left as it is. (Dropping
            // `tx` on an error rolls back.)
            let seq: Option<i64> = sqlx::query_scalar(
                "INSERT INTO number_series (series, period, last) VALUES ($1, $2, 1) \
                 ON CONFLICT (series, period) DO UPDATE SET last = number_series.last + 1 \
                 WHERE number_series.last < $3 RETURNING last",
            )
            .bind(&req.series)
            .bind(&req.period)
            .bind(i64::MAX)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(seq) = seq else {
                return Err(StoreError::NumberSeriesExhausted {
                    series: req.series.clone(),
                    period: req.period.clone(),
                });
            };
            let inserted = sqlx::query(concat!(
                "INSERT INTO numbers (",
                number_cols!(),
                ") VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .bind(&req.series)
            .bind(&req.period)
            .bind(seq)
            .bind(&req.key)
            .bind(&req.case_id)
            .bind(req.at)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(fresh_number(req, seq));
                }
                Err(sqlx::Error::Database(d)) if d.constraint() == Some(NUMBERS_KEY) => {
                    tx.rollback().await?;
                }
                // Anything else, a duplicate (series, period, seq) included (a counter behind
                // its numbers: never reuse a number), is a database error.
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict {
            case_id: req.case_id.clone(),
            expected: None,
        })
    }

    async fn numbers(&self, series: &str, period: &str) -> Result<Vec<NumberRecord>> {
        let rows: Vec<NumberRow> = sqlx::query_as(concat!(
            "SELECT ",
            number_cols!(),
            " FROM numbers WHERE series = $1 AND period = $2 ORDER BY seq"
        ))
        .bind(series)
        .bind(period)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(number_from).collect())
    }

    async fn post_ledger(&self, req: &LedgerRequest) -> Result<LedgerOutcome> {
        // Each round: the postings the key already made (a repeat), else one transaction that
        // creates the missing accounts, locks every account of the request in name order (so
        // two requests never wait on each other in a circle), computes the balances from the
        // locked rows and writes the postings. A transaction whose postings hit the unique key
        // lost a race on that key to another node: it rolls back and the next round finds the
        // winner's postings.
        for _ in 0..NUMBER_ROUNDS {
            let made = self.postings_of_key(&req.key).await?;
            if !made.is_empty() {
                return Ok(LedgerOutcome::Posted {
                    postings: made,
                    fresh: false,
                });
            }
            let accounts = request_accounts(req);
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO ledger_accounts (account, balance, postings) \
                 SELECT a, '0', 0 FROM unnest($1::text[]) AS a ON CONFLICT (account) DO NOTHING",
            )
            .bind(&accounts)
            .execute(&mut *tx)
            .await?;
            let rows: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT account, balance, postings FROM ledger_accounts \
                 WHERE account = ANY($1) ORDER BY account FOR UPDATE",
            )
            .bind(&accounts)
            .fetch_all(&mut *tx)
            .await?;
            let mut balances = BTreeMap::new();
            let mut counts = BTreeMap::new();
            for (account, balance, n) in rows {
                balances.insert(account.clone(), stored_decimal(&account, &balance)?);
                counts.insert(account, n);
            }
            let postings = match apply_postings(req, &mut balances, &mut counts)? {
                Ok(p) => p,
                Err(refusal) => {
                    // The accounts created above are not kept: a refused request writes nothing.
                    tx.rollback().await?;
                    return Ok(LedgerOutcome::Refused(refusal));
                }
            };
            let mut lost = false;
            for p in &postings {
                let inserted = sqlx::query(&format!(
                    "INSERT INTO ledger_postings ({POSTING_COLS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(&p.account)
                .bind(p.seq)
                .bind(p.amount.to_string())
                .bind(p.balance.to_string())
                .bind(&p.key)
                .bind(p.index)
                .bind(&p.case_id)
                .bind(p.at)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(sqlx::Error::Database(d))
                        if d.constraint() == Some(LEDGER_POSTINGS_KEY) =>
                    {
                        lost = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if lost {
                tx.rollback().await?;
                continue;
            }
            for (account, balance) in &balances {
                sqlx::query(
                    "UPDATE ledger_accounts SET balance = $2, postings = $3 WHERE account = $1",
                )
                .bind(account)
                .bind(balance.to_string())
                .bind(counts[account])
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(LedgerOutcome::Posted {
                postings,
                fresh: true,
            });
        }
        Err(StoreError::Conflict {
            case_id: req.case_id.clone(),
            expected: None,
        })
    }

    async fn claim_unique_id(&self, claim: &IdClaim) -> Result<IdClaimOutcome> {
        // The identifier is inserted only if neither it nor the key is taken; when nothing was
        // inserted, the key's row (a repeat, or a copy that won a race on the key) says which.
        for _ in 0..NUMBER_ROUNDS {
            let held: Option<String> =
                sqlx::query_scalar("SELECT id FROM unique_ids WHERE key = $1")
                    .bind(&claim.key)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(id) = held {
                return Ok(IdClaimOutcome::Held(id));
            }
            let inserted = sqlx::query(
                "INSERT INTO unique_ids (id, key, case_id, at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&claim.id)
            .bind(&claim.key)
            .bind(&claim.case_id)
            .bind(claim.at)
            .execute(&self.pool)
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(IdClaimOutcome::Claimed);
            }
            let holder: Option<String> =
                sqlx::query_scalar("SELECT key FROM unique_ids WHERE id = $1")
                    .bind(&claim.id)
                    .fetch_optional(&self.pool)
                    .await?;
            match holder {
                Some(k) if k != claim.key => return Ok(IdClaimOutcome::Taken),
                // The key won elsewhere (or the identifier is the key's): the next round finds it.
                _ => continue,
            }
        }
        Err(StoreError::Conflict {
            case_id: claim.case_id.clone(),
            expected: None,
        })
    }

    async fn ledger_accounts(&self, prefix: &str) -> Result<Vec<LedgerAccount>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT account, balance, postings FROM ledger_accounts \
             WHERE starts_with(account, $1) ORDER BY account COLLATE \"C\"",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(account_from).collect()
    }

    async fn ledger_postings(&self, account: &str) -> Result<Vec<LedgerPosting>> {
        let rows: Vec<PostingRow> = sqlx::query_as(&format!(
            "SELECT {POSTING_COLS} FROM ledger_postings WHERE account = $1 ORDER BY seq"
        ))
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(posting_from).collect()
    }
}

impl PgStore {
    /// The postings an idempotency key made, in request order.
    async fn postings_of_key(&self, key: &str) -> Result<Vec<LedgerPosting>> {
        let rows: Vec<PostingRow> = sqlx::query_as(&format!(
            "SELECT {POSTING_COLS} FROM ledger_postings WHERE key = $1 ORDER BY idx"
        ))
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(posting_from).collect()
    }

    /// The number an idempotency key holds, if any.
    async fn number_of_key(&self, key: &str) -> Result<Option<NumberRecord>> {
        let row: Option<NumberRow> = sqlx::query_as(concat!(
            "SELECT ",
            number_cols!(),
            " FROM numbers WHERE key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(number_from))
    }

    /// Names the write that made the batch fail: replays the batch one write at a time in a
    /// transaction that is always rolled back. Another node may have committed in between; if
    /// the replay no longer fails, the first write of the failed round is blamed.
    async fn find_conflict(&self, batch: &[CaseWrite], failed_round: &[CaseWrite]) -> StoreError {
        let mut tx = match self.pool.begin().await {
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
}

/// Numbers, hashes and inserts the next audit records, in order, inside the caller's
/// transaction (by [`Store::append_audit`] and by a commit whose writes carry audit entries).
///
/// Every node appends under the same advisory lock, held until the transaction ends: the read
/// of the last record (a fresh snapshot under READ COMMITTED, taken once the lock is ours) sees
/// the previous append, so the chain never forks.
async fn append_audit(
    conn: &mut PgConnection,
    entries: &[&AuditEntry],
) -> sqlx::Result<Vec<AuditRecord>> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_LOCK)
        .execute(&mut *conn)
        .await?;
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let records = next_audit_records(last, entries.iter().copied());
    let r = &records;
    sqlx::query(concat!(
        "INSERT INTO audit (",
        audit_cols!(),
        ") SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])"
    ))
    .bind(col(r, |r: &AuditRecord| r.seq))
    .bind(col(r, |r: &AuditRecord| r.entry.at))
    .bind(col(r, |r: &AuditRecord| r.entry.actor.as_str()))
    .bind(col(r, |r: &AuditRecord| r.entry.role.as_str()))
    .bind(col(r, |r: &AuditRecord| r.entry.action.as_str()))
    .bind(col(r, |r: &AuditRecord| r.entry.target.as_str()))
    .bind(col(r, |r: &AuditRecord| r.entry.origin.as_str()))
    .bind(col(r, |r: &AuditRecord| r.entry.request_id.as_str()))
    .bind(col(r, |r: &AuditRecord| r.entry.details.as_str()))
    .bind(col(r, |r: &AuditRecord| r.prev_hash.as_str()))
    .bind(col(r, |r: &AuditRecord| r.hash.as_str()))
    .execute(&mut *conn)
    .await?;
    Ok(records)
}

/// One column of a batch, as the array bound to an `UNNEST` argument.
fn col<'a, T: 'a, R: std::borrow::Borrow<T> + 'a, V>(
    rows: &'a [R],
    f: impl Fn(&'a T) -> V,
) -> Vec<V> {
    rows.iter().map(|r| f(r.borrow())).collect()
}

/// Applies one round (writes touching disjoint keys) with one statement per table. Order: case
/// rows, events, deletes, then inserts (a write may drop and re-create the same timer id; the
/// inbox rows last), then task updates (a task created by the round may be updated by it).
async fn apply_round(
    conn: &mut PgConnection,
    rows: &RoundRows<'_>,
) -> std::result::Result<(), RoundError> {
    let cases = &rows.new_cases;
    if !cases.is_empty() {
        sqlx::query(concat!(
            "INSERT INTO cases (",
            case_cols!(),
            ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::int8[], \
             $12::text[], $13::int8[], $14::int8[])"
        ))
        .bind(col(cases, |c: &CaseRecord| c.id.as_str()))
        .bind(col(cases, |c: &CaseRecord| c.workflow_id.as_str()))
        .bind(col(cases, |c: &CaseRecord| c.workflow_version))
        .bind(col(cases, |c: &CaseRecord| c.workflow_hash.as_str()))
        .bind(col(cases, |c: &CaseRecord| c.business_key.as_deref()))
        .bind(col(cases, |c: &CaseRecord| c.parent_id.as_deref()))
        .bind(col(cases, |c: &CaseRecord| c.status.as_str()))
        .bind(col(cases, |c: &CaseRecord| c.current_step.as_deref()))
        .bind(col(cases, |c: &CaseRecord| c.data.as_str()))
        .bind(col(cases, |c: &CaseRecord| c.pins.as_str()))
        .bind(col(cases, |c: &CaseRecord| c.last_seq))
        .bind(col(cases, |c: &CaseRecord| c.last_hash.as_str()))
        .bind(col(cases, |c: &CaseRecord| c.created_at))
        .bind(col(cases, |c: &CaseRecord| c.updated_at))
        .execute(&mut *conn)
        .await?;
    }

    let updates = &rows.updated_cases;
    if !updates.is_empty() {
        // Case ids are unique within a round, so every update must change exactly one row; a
        // shortfall is a stale `last_seq` (or a missing case): a conflict.
        let changed = sqlx::query(
            "UPDATE cases AS c SET workflow_id = v.workflow_id, \
             workflow_version = v.workflow_version, workflow_hash = v.workflow_hash, \
             business_key = v.business_key, parent_id = v.parent_id, status = v.status, \
             current_step = v.current_step, data = v.data, pins = v.pins, \
             last_seq = v.last_seq, last_hash = v.last_hash, created_at = v.created_at, \
             updated_at = v.updated_at \
             FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int8[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::int8[], $13::text[], $14::int8[], $15::int8[]) \
             AS v (expected, id, workflow_id, workflow_version, workflow_hash, business_key, \
             parent_id, status, current_step, data, pins, last_seq, last_hash, created_at, \
             updated_at) \
             WHERE c.id = v.id AND c.last_seq = v.expected",
        )
        .bind(updates.iter().map(|(_, n)| *n).collect::<Vec<i64>>())
        .bind(col(updates, |u: &(&CaseRecord, i64)| u.0.id.as_str()))
        .bind(col(updates, |u: &(&CaseRecord, i64)| {
            u.0.workflow_id.as_str()
        }))
        .bind(col(updates, |u: &(&CaseRecord, i64)| u.0.workflow_version))
        .bind(col(updates, |u: &(&CaseRecord, i64)| {
            u.0.workflow_hash.as_str()
        }))
        .bind(col(updates, |u: &(&CaseRecord, i64)| {
            u.0.business_key.as_deref()
        }))
        .bind(col(updates, |u: &(&CaseRecord, i64)| {
            u.0.parent_id.as_deref()
        }))
        .bind(col(updates, |u: &(&CaseRecord, i64)| u.0.status.as_str()))
        .bind(col(updates, |u: &(&CaseRecord, i64)| {
            u.0.current_step.as_deref()
        }))
        .bind(col(updates, |u: &(&CaseRecord, i64)| u.0.data.as_str()))
        .bind(col(updates, |u: &(&CaseRecord, i64)| u.0.pins.as_str()))
        .bind(col(updates, |u: &(&CaseRecord, i64)| u.0.last_seq))
        .bind(col(updates, |u: &(&CaseRecord, i64)| {
            u.0.last_hash.as_str()
        }))
        .bind(col(updates, |u: &(&CaseRecord, i64)| u.0.created_at))
        .bind(col(updates, |u: &(&CaseRecord, i64)| u.0.updated_at))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if changed != updates.len() as u64 {
            return Err(RoundError::Conflict);
        }
    }

    let events = &rows.events;
    if !events.is_empty() {
        sqlx::query(concat!(
            "INSERT INTO events (",
            event_cols!(),
            ") SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], \
             $6::text[], $7::text[])"
        ))
        .bind(col(events, |e: &EventRecord| e.case_id.as_str()))
        .bind(col(events, |e: &EventRecord| e.seq))
        .bind(col(events, |e: &EventRecord| e.at))
        .bind(col(events, |e: &EventRecord| e.kind.as_str()))
        .bind(col(events, |e: &EventRecord| e.payload.as_str()))
        .bind(col(events, |e: &EventRecord| e.prev_hash.as_str()))
        .bind(col(events, |e: &EventRecord| e.hash.as_str()))
        .execute(&mut *conn)
        .await?;
    }

    // Deletes are idempotent: a key already gone (a timer dropped earlier) is not an error.
    for (sql, keys) in [
        (
            "DELETE FROM effects WHERE key = ANY($1)",
            &rows.effects_done,
        ),
        ("DELETE FROM timers WHERE id = ANY($1)", &rows.timers_done),
        ("DELETE FROM waits WHERE id = ANY($1)", &rows.waits_done),
    ] {
        if !keys.is_empty() {
            sqlx::query(sql)
                .bind(keys.as_slice())
                .execute(&mut *conn)
                .await?;
        }
    }

    let effects = &rows.effects_new;
    if !effects.is_empty() {
        sqlx::query(concat!(
            "INSERT INTO effects (",
            effect_cols!(),
            ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::int8[], $8::int8[], $9::int8[])"
        ))
        .bind(col(effects, |e: &EffectRecord| e.key.as_str()))
        .bind(col(effects, |e: &EffectRecord| e.case_id.as_str()))
        .bind(col(effects, |e: &EffectRecord| e.step.as_str()))
        .bind(col(effects, |e: &EffectRecord| e.connector.as_str()))
        .bind(col(effects, |e: &EffectRecord| e.operation.as_str()))
        .bind(col(effects, |e: &EffectRecord| e.request.as_str()))
        .bind(col(effects, |e: &EffectRecord| e.attempt))
        .bind(col(effects, |e: &EffectRecord| e.timeout_ms))
        .bind(col(effects, |e: &EffectRecord| e.created_at))
        .execute(&mut *conn)
        .await?;
    }

    let timers = &rows.timers_new;
    if !timers.is_empty() {
        sqlx::query(concat!(
            "INSERT INTO timers (",
            timer_cols!(),
            ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[])"
        ))
        .bind(col(timers, |t: &TimerRecord| t.id.as_str()))
        .bind(col(timers, |t: &TimerRecord| t.case_id.as_str()))
        .bind(col(timers, |t: &TimerRecord| t.fire_at))
        .bind(col(timers, |t: &TimerRecord| t.purpose.as_str()))
        .execute(&mut *conn)
        .await?;
    }

    let waits = &rows.waits_new;
    if !waits.is_empty() {
        sqlx::query(concat!(
            "INSERT INTO waits (",
            wait_cols!(),
            ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[])"
        ))
        .bind(col(waits, |w: &WaitRecord| w.id.as_str()))
        .bind(col(waits, |w: &WaitRecord| w.case_id.as_str()))
        .bind(col(waits, |w: &WaitRecord| w.event_name.as_str()))
        .bind(col(waits, |w: &WaitRecord| w.correlation.as_str()))
        .bind(col(waits, |w: &WaitRecord| w.created_at))
        .execute(&mut *conn)
        .await?;
    }

    let tasks = &rows.tasks_new;
    if !tasks.is_empty() {
        sqlx::query(concat!(
            "INSERT INTO tasks (",
            task_cols!(),
            ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::int8[], $11::int8[], \
             $12::int8[], $13::text[], $14::text[], $15::text[])"
        ))
        .bind(col(tasks, |t: &TaskRecord| t.id.as_str()))
        .bind(col(tasks, |t: &TaskRecord| t.case_id.as_str()))
        .bind(col(tasks, |t: &TaskRecord| t.workflow_id.as_str()))
        .bind(col(tasks, |t: &TaskRecord| t.step.as_str()))
        .bind(col(tasks, |t: &TaskRecord| t.role.as_str()))
        .bind(col(tasks, |t: &TaskRecord| t.title.as_str()))
        .bind(col(tasks, |t: &TaskRecord| t.form.as_str()))
        .bind(col(tasks, |t: &TaskRecord| t.status.as_str()))
        .bind(col(tasks, |t: &TaskRecord| t.assignee.as_deref()))
        .bind(col(tasks, |t: &TaskRecord| t.due_at))
        .bind(col(tasks, |t: &TaskRecord| t.created_at))
        .bind(col(tasks, |t: &TaskRecord| t.completed_at))
        .bind(col(tasks, |t: &TaskRecord| t.completed_by.as_deref()))
        .bind(col(tasks, |t: &TaskRecord| t.outcome.as_deref()))
        .bind(col(tasks, |t: &TaskRecord| t.data.as_deref()))
        .execute(&mut *conn)
        .await?;
    }

    let inbox = &rows.inbox;
    if !inbox.is_empty() {
        // A `(scope, key)` already taken is a unique violation, hence a conflict; two writes of
        // the batch with the same key are in different rounds (see `rounds`).
        sqlx::query(concat!(
            "INSERT INTO inbox (",
            inbox_cols!(),
            ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::int8[])"
        ))
        .bind(col(inbox, |i: &InboxRecord| i.scope.as_str()))
        .bind(col(inbox, |i: &InboxRecord| i.key.as_str()))
        .bind(col(inbox, |i: &InboxRecord| i.request_hash.as_str()))
        .bind(col(inbox, |i: &InboxRecord| i.case_id.as_str()))
        .bind(col(inbox, |i: &InboxRecord| i.status.as_str()))
        .bind(col(inbox, |i: &InboxRecord| i.created_at))
        .execute(&mut *conn)
        .await?;
    }

    let updates = &rows.tasks_updated;
    if !updates.is_empty() {
        // A NULL role keeps the role (only escalation replaces it). Updating a task that does
        // not exist is a conflict: the transition was computed from a state we do not hold.
        let changed = sqlx::query(
            "UPDATE tasks AS t SET status = v.status, assignee = v.assignee, \
             role = COALESCE(v.role, t.role), completed_at = v.completed_at, \
             completed_by = v.completed_by, outcome = v.outcome, data = v.data \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], \
             $6::text[], $7::text[], $8::text[]) \
             AS v (id, status, assignee, role, completed_at, completed_by, outcome, data) \
             WHERE t.id = v.id",
        )
        .bind(col(updates, |t: &crate::TaskUpdate| t.id.as_str()))
        .bind(col(updates, |t: &crate::TaskUpdate| t.status.as_str()))
        .bind(col(updates, |t: &crate::TaskUpdate| t.assignee.as_deref()))
        .bind(col(updates, |t: &crate::TaskUpdate| t.role.as_deref()))
        .bind(col(updates, |t: &crate::TaskUpdate| t.completed_at))
        .bind(col(updates, |t: &crate::TaskUpdate| {
            t.completed_by.as_deref()
        }))
        .bind(col(updates, |t: &crate::TaskUpdate| t.outcome.as_deref()))
        .bind(col(updates, |t: &crate::TaskUpdate| t.data.as_deref()))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if changed != updates.len() as u64 {
            return Err(RoundError::Conflict);
        }
    }
    Ok(())
}
