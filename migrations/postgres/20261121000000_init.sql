-- Dossier storage schema (PostgreSQL). Keep in step with ../sqlite: same tables, columns and
-- indexes; times are UTC milliseconds (BIGINT), JSON is TEXT.
-- Keys that results are ordered or paginated by are COLLATE "C" (byte order), so that ordering
-- matches SQLite and the in-memory store whatever the database locale, and the primary-key
-- indexes still serve the ORDER BY / keyset comparisons.

-- One row per case: a projection of its history, updated in the same transaction as the events.
CREATE TABLE cases (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    workflow_id      TEXT    NOT NULL,
    workflow_version BIGINT  NOT NULL,
    workflow_hash    TEXT    NOT NULL,
    business_key     TEXT,
    parent_id        TEXT,
    status           TEXT COLLATE "C" NOT NULL,
    current_step     TEXT,
    data             TEXT    NOT NULL,
    pins             TEXT    NOT NULL,
    last_seq         BIGINT  NOT NULL,
    last_hash        TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
-- Every transition rewrites its case's row: room left in each page lets PostgreSQL update the row
-- in place (a HOT update) instead of adding an entry to every index.
ALTER TABLE cases SET (fillfactor = 70);
CREATE INDEX cases_workflow_status ON cases (workflow_id, status);
CREATE INDEX cases_business_key ON cases (business_key);
CREATE INDEX cases_created_at ON cases (created_at);
-- A restarted engine looks up the `running` cases (effects in flight) by status.
CREATE INDEX cases_status ON cases (status);

-- The hash-chained history: append-only, seq starts at 1 per case.
CREATE TABLE events (
    case_id   TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    at        BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    payload   TEXT   NOT NULL,
    prev_hash TEXT   NOT NULL,
    hash      TEXT   NOT NULL,
    PRIMARY KEY (case_id, seq)
);

-- The effect outbox, keyed by idempotency key.
CREATE TABLE effects (
    key        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    case_id    TEXT   NOT NULL,
    step       TEXT   NOT NULL,
    connector  TEXT   NOT NULL,
    operation  TEXT   NOT NULL,
    request    TEXT   NOT NULL,
    attempt    BIGINT NOT NULL,
    timeout_ms BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE timers (
    id      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    case_id TEXT   NOT NULL,
    fire_at BIGINT NOT NULL,
    purpose TEXT   NOT NULL
);
-- (fire_at, id) so that due_timers reads in index order, ties included.
CREATE INDEX timers_fire_at ON timers (fire_at, id);

CREATE TABLE waits (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    case_id     TEXT   NOT NULL,
    event_name  TEXT   NOT NULL,
    correlation TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX waits_event ON waits (event_name, correlation);
CREATE INDEX waits_case ON waits (case_id);

CREATE TABLE tasks (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    case_id      TEXT   NOT NULL,
    workflow_id  TEXT   NOT NULL,
    step         TEXT   NOT NULL,
    role         TEXT   NOT NULL,
    title        TEXT   NOT NULL,
    form         TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    assignee     TEXT,
    due_at       BIGINT,
    created_at   BIGINT NOT NULL,
    completed_at BIGINT,
    completed_by TEXT,
    outcome      TEXT,
    data         TEXT
);
CREATE INDEX tasks_role_status ON tasks (role, status);
CREATE INDEX tasks_assignee_status ON tasks (assignee, status);
CREATE INDEX tasks_status_due ON tasks (status, due_at);
CREATE INDEX tasks_case ON tasks (case_id);

-- Content-addressed sources: written once per hash, never changed.
CREATE TABLE definitions (
    hash      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind      TEXT   NOT NULL,
    name      TEXT   NOT NULL,
    version   BIGINT,
    source    TEXT   NOT NULL,
    loaded_at BIGINT NOT NULL
);
CREATE INDEX definitions_kind ON definitions (kind, loaded_at);
