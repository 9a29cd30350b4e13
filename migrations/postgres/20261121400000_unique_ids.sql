-- Unique identifiers with a random part (postgres). Keep in step with ../sqlite: same tables,
-- columns and constraints.
--
-- A `unique_id` step draws a random part (CSPRNG) into its pattern (`CI261121-3F9A-PT`) and
-- claims the identifier here: the primary key refuses one already given, and the runtime draws
-- again. Each identifier is asked for by one effect, whose idempotency key finds it again.

CREATE TABLE unique_ids (
    id      TEXT   NOT NULL PRIMARY KEY,
    key     TEXT   NOT NULL,
    case_id TEXT   NOT NULL,
    at      BIGINT NOT NULL,
    CONSTRAINT unique_ids_key UNIQUE (key)
);
