-- Ledger accounts and postings (postgres). Keep in step with ../sqlite: same tables, columns and
-- constraints.
--
-- An account holds a decimal quantity: credits of a wallet, parts in stock, free places, a
-- running total. A `ledger` step's postings are applied in one transaction, all or none
-- (`Store::post_ledger`): a posting that would take an account past a bound applies nothing.
-- Quantities are exact decimals written as text and computed by the engine (never floating
-- point). Each request comes from one effect, whose idempotency key finds the postings it made.

CREATE TABLE ledger_accounts (
    account  TEXT   NOT NULL PRIMARY KEY,
    -- The balance after the last posting.
    balance  TEXT   NOT NULL,
    -- How many postings the account has had (the seq of the last one).
    postings BIGINT NOT NULL CHECK (postings >= 0)
);

CREATE TABLE ledger_postings (
    account TEXT    NOT NULL,
    seq     BIGINT  NOT NULL CHECK (seq >= 1),
    amount  TEXT    NOT NULL,
    -- The account's balance after this posting.
    balance TEXT    NOT NULL,
    -- The idempotency key of the effect that made it, and its place in the request.
    key     TEXT    NOT NULL,
    idx     BIGINT  NOT NULL,
    case_id TEXT    NOT NULL,
    at      BIGINT  NOT NULL,
    PRIMARY KEY (account, seq),
    CONSTRAINT ledger_postings_key UNIQUE (key, idx)
);
