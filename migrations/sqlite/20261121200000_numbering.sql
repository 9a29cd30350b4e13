-- Gapless numbering series (SQLite). Keep in step with ../postgres: same tables, columns and
-- constraints.
--
-- Legal numbers (invoices: `FAC` in `2026` is 1, 2, 3...) have no gaps and are never given
-- twice. A counter per (series, period) holds the last number given; `numbers` records who got
-- each one. Both move in the same transaction (`Store::allocate_number`), so a failed
-- allocation consumes nothing. Each number is asked for by one effect, whose idempotency key is
-- unique: asking again with the same key finds the number it already has.

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
    -- The idempotency key of the effect that got the number.
    key     TEXT   NOT NULL,
    case_id TEXT   NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (series, period, seq),
    CONSTRAINT numbers_key UNIQUE (key)
);
