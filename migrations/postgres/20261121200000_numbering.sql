-- Gapless numbering series (PostgreSQL). Keep in step with ../sqlite: same tables, columns and
-- constraints.
--
-- Legal numbers (invoices: `FAC` in `2026` is 1, 2, 3...) have no gaps and are never given
-- twice. A counter per (series, period) holds the last number given; `numbers` records who got
-- each one. Both move in the same transaction (`Store::allocate_number`), so a failed
-- allocation consumes nothing (unlike a SEQUENCE, whose values are not rolled back). The
-- counter's row lock, taken by `INSERT ... ON CONFLICT DO UPDATE`, serialises the allocations of
-- one series and period across nodes until commit. Each number is asked for by one effect,
-- whose idempotency key is unique: two nodes racing on one key cannot both record it, and the
-- loser (whose transaction, counter included, rolls back) finds the winner's number.

CREATE TABLE number_series (
    series TEXT   NOT NULL,
    period TEXT   NOT NULL,
    -- The last number given (the first allocation creates the row at 1).
    last   BIGINT NOT NULL CHECK (last >= 1),
    PRIMARY KEY (series, period)
);

CREATE TABLE numbers (
    series  TEXT   NOT NULL,
    period  TEXT   NOT NULL,
    seq     BIGINT NOT NULL CHECK (seq >= 1),
    -- The idempotency key of the effect that got the number. The constraint's name is what
    -- `PgStore::allocate_number` recognises a lost race by.
    key     TEXT   NOT NULL,
    case_id TEXT   NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (series, period, seq),
    CONSTRAINT numbers_key UNIQUE (key)
);
