-- The server's tables (PostgreSQL). Keep in step with ../sqlite: same tables, columns and
-- indexes; times are UTC milliseconds (BIGINT), JSON is TEXT.
-- Keys that results are ordered by are COLLATE "C" (byte order), as in the init migration.

-- Requests already taken: the deduplication record of an idempotent API call (`Idempotency-Key`)
-- or a webhook delivery, inserted in the same transaction as what the request did to its case.
-- A second request with the same (scope, key) finds it here instead of acting twice.
CREATE TABLE inbox (
    scope        TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    request_hash TEXT   NOT NULL,
    case_id      TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

-- API keys: only the SHA-256 of the secret is stored; a revoked key keeps its row (audit
-- entries name it).
CREATE TABLE api_keys (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    hash       TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
-- Keys are revoked by id or by name.
CREATE INDEX api_keys_name ON api_keys (name);

-- The audit trail: append-only, seq starts at 1 with no gaps, each hash chains to the previous
-- one (see `dossier_store::audit_hash`). Appends are serialised by an advisory lock.
CREATE TABLE audit (
    seq        BIGINT NOT NULL PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    target     TEXT   NOT NULL,
    origin     TEXT   NOT NULL,
    request_id TEXT   NOT NULL,
    details    TEXT   NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL
);
