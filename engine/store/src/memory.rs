//! The in-memory store, for unit tests and virtual-time runs. Same contract as the SQL stores,
//! checked by the same test suite: a batch is applied write by write, and if any write conflicts
//! every change of the batch is undone before the error is returned. Its audit entries are
//! appended once every write has gone through.
//!
//! Strings order by bytes (Rust's `Ord` for `String`), like SQLite's BINARY collation and the
//! `COLLATE "C"` keys of the PostgreSQL schema.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::common::{
    api_key_conflict, batch_audit, conflict_of, fresh_number, next_audit_record,
    next_audit_records, repeated_number, sort_api_keys, take_limit,
};
use crate::common::{apply_postings, request_accounts};
use crate::{
    ApiKeyRecord, AuditEntry, AuditRecord, CaseFilter, CaseRecord, CaseWrite, Decimal,
    DefinitionRecord, EffectRecord, EventRecord, IdClaim, IdClaimOutcome, InboxRecord,
    LedgerAccount, LedgerOutcome, LedgerPosting, LedgerRequest, Millis, NumberAllocation,
    NumberRecord, NumberRequest, Result, Store, StoreError, TaskFilter, TaskRecord, TimerRecord,
    WaitRecord,
};

/// The in-memory implementation of [`Store`]. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    cases: BTreeMap<String, CaseRecord>,
    /// Keyed by (case id, seq): a case's history is one ordered range.
    events: BTreeMap<(String, i64), EventRecord>,
    effects: BTreeMap<String, EffectRecord>,
    timers: BTreeMap<String, TimerRecord>,
    /// (fire_at, id) of every timer, so that due timers are a range scan.
    timers_by_time: BTreeSet<(Millis, String)>,
    waits: BTreeMap<String, WaitRecord>,
    tasks: BTreeMap<String, TaskRecord>,
    definitions: BTreeMap<String, DefinitionRecord>,
    /// Keyed by (scope, key): a scope is one ordered range.
    inbox: BTreeMap<(String, String), InboxRecord>,
    /// Keyed by id.
    api_keys: BTreeMap<String, ApiKeyRecord>,
    /// In `seq` order: record `n` is at index `n - 1`.
    audit: Vec<AuditRecord>,
    /// The last number given per (series, period).
    number_series: BTreeMap<(String, String), i64>,
    /// Keyed by (series, period, seq): a series' period is one ordered range.
    numbers: BTreeMap<(String, String, i64), NumberRecord>,
    /// The (series, period, seq) each idempotency key holds.
    number_keys: BTreeMap<String, (String, String, i64)>,
    /// Keyed by account: (balance, postings in order).
    ledger: BTreeMap<String, (Decimal, Vec<LedgerPosting>)>,
    /// The (account, seq) of each posting an idempotency key made, in request order.
    ledger_keys: BTreeMap<String, Vec<(String, i64)>>,
    /// Identifier to the key holding it, and key to identifier.
    unique_ids: BTreeMap<String, String>,
    unique_id_keys: BTreeMap<String, String>,
}

/// What to restore to undo one change of a failed batch.
enum Undo {
    Case(String, Option<CaseRecord>),
    Event((String, i64)),
    Effect(String, Option<EffectRecord>),
    Timer(String, Option<TimerRecord>),
    Wait(String, Option<WaitRecord>),
    Task(String, Option<TaskRecord>),
    Inbox((String, String)),
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, even if a panicking thread poisoned the lock: every mutation is completed or
    /// undone before the guard is released, so the data is consistent either way.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn put_timer(&mut self, t: TimerRecord) -> Option<TimerRecord> {
        self.timers_by_time.insert((t.fire_at, t.id.clone()));
        let old = self.timers.insert(t.id.clone(), t);
        if let Some(o) = &old {
            self.timers_by_time.remove(&(o.fire_at, o.id.clone()));
        }
        old
    }

    fn take_timer(&mut self, id: &str) -> Option<TimerRecord> {
        let old = self.timers.remove(id);
        if let Some(o) = &old {
            self.timers_by_time.remove(&(o.fire_at, o.id.clone()));
        }
        old
    }

    /// Applies one write, logging how to undo each change. Order as in the SQL stores: case row,
    /// events, deletes, inserts (the inbox rows last), task updates.
    fn apply(&mut self, w: &CaseWrite, undo: &mut Vec<Undo>) -> std::result::Result<(), ()> {
        if let Some(c) = &w.case {
            let stored = self.cases.get(&c.id).map(|s| s.last_seq);
            match (w.expected_last_seq, stored) {
                (None, None) => {}
                (Some(n), Some(s)) if n == s => {}
                _ => return Err(()),
            }
            let old = self.cases.insert(c.id.clone(), c.clone());
            undo.push(Undo::Case(c.id.clone(), old));
        }
        for e in &w.events {
            let key = (e.case_id.clone(), e.seq);
            if self.events.contains_key(&key) {
                return Err(());
            }
            self.events.insert(key.clone(), e.clone());
            undo.push(Undo::Event(key));
        }
        for k in &w.effects_done {
            if let Some(old) = self.effects.remove(k) {
                undo.push(Undo::Effect(k.clone(), Some(old)));
            }
        }
        for k in &w.timers_done {
            if let Some(old) = self.take_timer(k) {
                undo.push(Undo::Timer(k.clone(), Some(old)));
            }
        }
        for k in &w.waits_done {
            if let Some(old) = self.waits.remove(k) {
                undo.push(Undo::Wait(k.clone(), Some(old)));
            }
        }
        for e in &w.effects_new {
            if self.effects.contains_key(&e.key) {
                return Err(());
            }
            self.effects.insert(e.key.clone(), e.clone());
            undo.push(Undo::Effect(e.key.clone(), None));
        }
        for t in &w.timers_new {
            if self.timers.contains_key(&t.id) {
                return Err(());
            }
            self.put_timer(t.clone());
            undo.push(Undo::Timer(t.id.clone(), None));
        }
        for v in &w.waits_new {
            if self.waits.contains_key(&v.id) {
                return Err(());
            }
            self.waits.insert(v.id.clone(), v.clone());
            undo.push(Undo::Wait(v.id.clone(), None));
        }
        for t in &w.tasks_new {
            if self.tasks.contains_key(&t.id) {
                return Err(());
            }
            self.tasks.insert(t.id.clone(), t.clone());
            undo.push(Undo::Task(t.id.clone(), None));
        }
        for i in &w.inbox {
            let key = (i.scope.clone(), i.key.clone());
            if self.inbox.contains_key(&key) {
                return Err(());
            }
            self.inbox.insert(key.clone(), i.clone());
            undo.push(Undo::Inbox(key));
        }
        for u in &w.tasks_updated {
            // Updating a task that does not exist is a conflict, as in the SQL stores.
            let Some(task) = self.tasks.get_mut(&u.id) else {
                return Err(());
            };
            let old = task.clone();
            task.status = u.status.clone();
            task.assignee = u.assignee.clone();
            if let Some(role) = &u.role {
                task.role = role.clone();
            }
            task.completed_at = u.completed_at;
            task.completed_by = u.completed_by.clone();
            task.outcome = u.outcome.clone();
            task.data = u.data.clone();
            undo.push(Undo::Task(u.id.clone(), Some(old)));
        }
        Ok(())
    }

    /// Reverts the logged changes, newest first.
    fn rollback(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Case(id, old) => restore(&mut self.cases, id, old),
                Undo::Event(key) => {
                    self.events.remove(&key);
                }
                Undo::Effect(k, old) => restore(&mut self.effects, k, old),
                Undo::Timer(k, old) => {
                    self.take_timer(&k);
                    if let Some(t) = old {
                        self.put_timer(t);
                    }
                }
                Undo::Wait(k, old) => restore(&mut self.waits, k, old),
                Undo::Task(k, old) => restore(&mut self.tasks, k, old),
                Undo::Inbox(key) => {
                    self.inbox.remove(&key);
                }
            }
        }
    }
}

fn restore<V>(map: &mut BTreeMap<String, V>, key: String, old: Option<V>) {
    match old {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn commit(&self, batch: &[CaseWrite]) -> Result<()> {
        let mut state = self.lock();
        let mut undo = Vec::new();
        for w in batch {
            if state.apply(w, &mut undo).is_err() {
                state.rollback(undo);
                return Err(conflict_of(w));
            }
        }
        // Every write went through, and nothing can fail from here on: the audit entries are
        // appended under the same lock, so a failed batch (undone above) appends none and no
        // other append can come in between.
        let last = state.audit.last().map(|l| (l.seq, l.hash.clone()));
        let records = next_audit_records(last, batch_audit(batch));
        state.audit.extend(records);
        Ok(())
    }

    async fn case(&self, id: &str) -> Result<Option<CaseRecord>> {
        Ok(self.lock().cases.get(id).cloned())
    }

    async fn list_cases(&self, f: &CaseFilter) -> Result<Vec<CaseRecord>> {
        let state = self.lock();
        let range = match &f.after_id {
            Some(after) => state
                .cases
                .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .map(|(_, c)| c)
                .collect::<Vec<_>>(),
            None => state.cases.values().collect(),
        };
        Ok(range
            .into_iter()
            .filter(|c| f.workflow_id.as_ref().is_none_or(|v| &c.workflow_id == v))
            .filter(|c| f.status.as_ref().is_none_or(|v| &c.status == v))
            .filter(|c| f.business_key.is_none() || c.business_key == f.business_key)
            .filter(|c| f.created_from.is_none_or(|v| c.created_at >= v))
            .filter(|c| f.created_to.is_none_or(|v| c.created_at < v))
            .take(take_limit(f.limit))
            .cloned()
            .collect())
    }

    async fn count_cases_by_status(&self) -> Result<Vec<(String, i64)>> {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for c in self.lock().cases.values() {
            *counts.entry(c.status.clone()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    async fn history(&self, case_id: &str) -> Result<Vec<EventRecord>> {
        let state = self.lock();
        let from = (case_id.to_string(), i64::MIN);
        Ok(state
            .events
            .range(from..)
            .take_while(|((c, _), _)| c == case_id)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn due_timers(&self, now: Millis, limit: i64) -> Result<Vec<TimerRecord>> {
        let state = self.lock();
        Ok(state
            .timers_by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(take_limit(limit))
            .filter_map(|(_, id)| state.timers.get(id).cloned())
            .collect())
    }

    async fn next_timer_at(&self) -> Result<Option<Millis>> {
        Ok(self.lock().timers_by_time.first().map(|(at, _)| *at))
    }

    async fn pending_effects(
        &self,
        after_key: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EffectRecord>> {
        let state = self.lock();
        let iter: Box<dyn Iterator<Item = &EffectRecord>> = match after_key {
            Some(after) => Box::new(
                state
                    .effects
                    .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                    .map(|(_, e)| e),
            ),
            None => Box::new(state.effects.values()),
        };
        Ok(iter.take(take_limit(limit)).cloned().collect())
    }

    async fn waits_for(&self, event_name: &str, correlation: &str) -> Result<Vec<WaitRecord>> {
        let mut out: Vec<WaitRecord> = self
            .lock()
            .waits
            .values()
            .filter(|w| w.event_name == event_name && w.correlation == correlation)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn waits_of_case(&self, case_id: &str) -> Result<Vec<WaitRecord>> {
        let mut out: Vec<WaitRecord> = self
            .lock()
            .waits
            .values()
            .filter(|w| w.case_id == case_id)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn tasks(&self, f: &TaskFilter) -> Result<Vec<TaskRecord>> {
        let state = self.lock();
        let mut out: Vec<&TaskRecord> = state
            .tasks
            .values()
            .filter(|t| f.role.as_ref().is_none_or(|v| &t.role == v))
            .filter(|t| f.assignee.is_none() || t.assignee == f.assignee)
            .filter(|t| f.status.as_ref().is_none_or(|v| &t.status == v))
            .filter(|t| f.case_id.as_ref().is_none_or(|v| &t.case_id == v))
            // As in SQL, a task without a due date is never "due before" anything.
            .filter(|t| f.due_before.is_none_or(|v| t.due_at.is_some_and(|d| d < v)))
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out.into_iter().take(take_limit(f.limit)).cloned().collect())
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>> {
        Ok(self.lock().tasks.get(id).cloned())
    }

    async fn put_definitions(&self, defs: &[DefinitionRecord]) -> Result<()> {
        let mut state = self.lock();
        for d in defs {
            // Insert-or-ignore: the first write of a hash wins, as with ON CONFLICT DO NOTHING.
            state
                .definitions
                .entry(d.hash.clone())
                .or_insert_with(|| d.clone());
        }
        Ok(())
    }

    async fn definition(&self, hash: &str) -> Result<Option<DefinitionRecord>> {
        Ok(self.lock().definitions.get(hash).cloned())
    }

    async fn definitions(&self, kind: &str) -> Result<Vec<DefinitionRecord>> {
        let mut out: Vec<DefinitionRecord> = self
            .lock()
            .definitions
            .values()
            .filter(|d| d.kind == kind)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.loaded_at, &a.hash).cmp(&(b.loaded_at, &b.hash)));
        Ok(out)
    }

    async fn inbox(&self, scope: &str, key: &str) -> Result<Option<InboxRecord>> {
        Ok(self
            .lock()
            .inbox
            .get(&(scope.to_string(), key.to_string()))
            .cloned())
    }

    async fn inbox_scope(&self, scope: &str) -> Result<Vec<InboxRecord>> {
        let state = self.lock();
        let from = (scope.to_string(), String::new());
        Ok(state
            .inbox
            .range(from..)
            .take_while(|((s, _), _)| s == scope)
            .map(|(_, i)| i.clone())
            .collect())
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
        let mut state = self.lock();
        let Some(task) = state.tasks.get_mut(id) else {
            return Ok(None);
        };
        let matches = from.contains(&task.status.as_str())
            && task.role == role
            && task.assignee.as_deref() == holder;
        if matches {
            task.status = status.to_string();
            task.assignee = assignee.map(str::to_string);
        }
        let after = task.clone();
        if let (true, Some(entry)) = (matches, audit) {
            let last = state.audit.last().map(|l| (l.seq, l.hash.clone()));
            let record = next_audit_record(last, entry);
            state.audit.push(record);
        }
        Ok(Some((after, matches)))
    }

    async fn count_tasks_by_status(&self) -> Result<Vec<(String, i64)>> {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for t in self.lock().tasks.values() {
            *counts.entry(t.status.clone()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut state = self.lock();
        if state.api_keys.contains_key(&key.id)
            || state.api_keys.values().any(|k| k.hash == key.hash)
        {
            return Err(api_key_conflict(key));
        }
        state.api_keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        Ok(self
            .lock()
            .api_keys
            .values()
            .find(|k| k.hash == hash)
            .cloned())
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let mut out: Vec<ApiKeyRecord> = self.lock().api_keys.values().cloned().collect();
        sort_api_keys(&mut out);
        Ok(out)
    }

    async fn revoke_api_key(&self, id_or_name: &str, at: Millis) -> Result<Vec<ApiKeyRecord>> {
        let mut state = self.lock();
        let mut out = Vec::new();
        for k in state.api_keys.values_mut() {
            if (k.id == id_or_name || k.name == id_or_name) && k.revoked_at.is_none() {
                k.revoked_at = Some(at);
                out.push(k.clone());
            }
        }
        sort_api_keys(&mut out);
        Ok(out)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord> {
        let mut state = self.lock();
        let last = state.audit.last().map(|l| (l.seq, l.hash.clone()));
        let record = next_audit_record(last, entry);
        state.audit.push(record.clone());
        Ok(record)
    }

    async fn allocate_number(&self, req: &NumberRequest) -> Result<NumberAllocation> {
        // One lock for the lookup, the counter and the record: nothing comes in between.
        let mut state = self.lock();
        if let Some(existing) = state
            .number_keys
            .get(&req.key)
            .and_then(|at| state.numbers.get(at))
        {
            return repeated_number(existing.clone(), req);
        }
        let series = (req.series.clone(), req.period.clone());
        let last = state.number_series.get(&series).copied().unwrap_or(0);
        // Checked before anything changes: an exhausted series consumes nothing.
        let Some(seq) = last.checked_add(1) else {
            return Err(StoreError::NumberSeriesExhausted {
                series: req.series.clone(),
                period: req.period.clone(),
            });
        };
        let at = (req.series.clone(), req.period.clone(), seq);
        state.number_series.insert(series, seq);
        state.number_keys.insert(req.key.clone(), at.clone());
        state.numbers.insert(
            at,
            NumberRecord {
                series: req.series.clone(),
                period: req.period.clone(),
                seq,
                key: req.key.clone(),
                case_id: req.case_id.clone(),
                at: req.at,
            },
        );
        Ok(fresh_number(req, seq))
    }

    async fn numbers(&self, series: &str, period: &str) -> Result<Vec<NumberRecord>> {
        let state = self.lock();
        let from = (series.to_string(), period.to_string(), i64::MIN);
        Ok(state
            .numbers
            .range(from..)
            .take_while(|((s, p, _), _)| s == series && p == period)
            .map(|(_, n)| n.clone())
            .collect())
    }

    async fn post_ledger(&self, req: &LedgerRequest) -> Result<LedgerOutcome> {
        // One lock for the lookup, the balances and the postings: nothing comes in between.
        let mut state = self.lock();
        if let Some(made) = state.ledger_keys.get(&req.key) {
            let postings = made
                .iter()
                .filter_map(|(a, seq)| {
                    let list = &state.ledger.get(a)?.1;
                    usize::try_from(*seq - 1)
                        .ok()
                        .and_then(|i| list.get(i))
                        .cloned()
                })
                .collect();
            return Ok(LedgerOutcome::Posted {
                postings,
                fresh: false,
            });
        }
        let mut balances = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for account in request_accounts(req) {
            if let Some((balance, list)) = state.ledger.get(&account) {
                balances.insert(account.clone(), *balance);
                counts.insert(account, list.len() as i64);
            }
        }
        let postings = match apply_postings(req, &mut balances, &mut counts)? {
            Ok(p) => p,
            Err(refusal) => return Ok(LedgerOutcome::Refused(refusal)),
        };
        for p in &postings {
            let entry = state
                .ledger
                .entry(p.account.clone())
                .or_insert_with(|| (Decimal::ZERO, Vec::new()));
            entry.0 = p.balance;
            entry.1.push(p.clone());
        }
        state.ledger_keys.insert(
            req.key.clone(),
            postings
                .iter()
                .map(|p| (p.account.clone(), p.seq))
                .collect(),
        );
        Ok(LedgerOutcome::Posted {
            postings,
            fresh: true,
        })
    }

    async fn claim_unique_id(&self, claim: &IdClaim) -> Result<IdClaimOutcome> {
        let mut state = self.lock();
        if let Some(id) = state.unique_id_keys.get(&claim.key) {
            return Ok(IdClaimOutcome::Held(id.clone()));
        }
        if state.unique_ids.contains_key(&claim.id) {
            return Ok(IdClaimOutcome::Taken);
        }
        state.unique_ids.insert(claim.id.clone(), claim.key.clone());
        state
            .unique_id_keys
            .insert(claim.key.clone(), claim.id.clone());
        Ok(IdClaimOutcome::Claimed)
    }

    async fn ledger_accounts(&self, prefix: &str) -> Result<Vec<LedgerAccount>> {
        let state = self.lock();
        Ok(state
            .ledger
            .range(prefix.to_string()..)
            .take_while(|(a, _)| a.starts_with(prefix))
            .map(|(a, (balance, list))| LedgerAccount {
                account: a.clone(),
                balance: *balance,
                postings: list.len() as i64,
            })
            .collect())
    }

    async fn ledger_postings(&self, account: &str) -> Result<Vec<LedgerPosting>> {
        let state = self.lock();
        Ok(state
            .ledger
            .get(account)
            .map(|(_, list)| list.clone())
            .unwrap_or_default())
    }

    async fn audit(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let state = self.lock();
        // Records are numbered 1, 2, ... in order: those after `after_seq` start at its index.
        let start = usize::try_from(after_seq.max(0))
            .unwrap_or(usize::MAX)
            .min(state.audit.len());
        Ok(state.audit[start..]
            .iter()
            .take(take_limit(limit))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str) -> NumberRequest {
        NumberRequest {
            series: "FAC".to_string(),
            period: "2026".to_string(),
            key: key.to_string(),
            case_id: "c".to_string(),
            at: 1,
        }
    }

    /// A counter at `i64::MAX` gives no number (no overflow), and consumes nothing.
    #[tokio::test]
    async fn exhausted_number_series_is_an_error() {
        let store = MemoryStore::new();
        assert_eq!(
            store.allocate_number(&req("a")).await.expect("first").seq,
            1
        );
        store
            .lock()
            .number_series
            .insert(("FAC".to_string(), "2026".to_string()), i64::MAX);
        match store.allocate_number(&req("b")).await {
            Err(StoreError::NumberSeriesExhausted { series, period }) => {
                assert_eq!((series.as_str(), period.as_str()), ("FAC", "2026"));
            }
            other => panic!("expected NumberSeriesExhausted, got {other:?}"),
        }
        {
            let state = store.lock();
            assert_eq!(state.numbers.len(), 1);
            assert!(!state.number_keys.contains_key("b"));
        }
        let again = store.allocate_number(&req("a")).await.expect("repeat");
        assert_eq!((again.seq, again.fresh), (1, false));
    }
}
