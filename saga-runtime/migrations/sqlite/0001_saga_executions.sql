-- One row per saga execution (see `SqliteRepository`). The JSON columns hold the serde encoding of
-- the matching `ExecutionRecord` fields; `status` and `transaction_state` hold their storage names.
CREATE TABLE saga_executions (
    id                TEXT    NOT NULL PRIMARY KEY,
    saga              TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    context           TEXT    NOT NULL,
    steps             TEXT    NOT NULL,
    paused_step       TEXT,
    already_rollback  INTEGER NOT NULL,
    "user"            TEXT,
    headers           TEXT    NOT NULL,
    settings          TEXT    NOT NULL,
    deadline_ms       INTEGER,
    transaction_state TEXT    NOT NULL,
    version           INTEGER NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL
);

-- Listing by status, and retention (finished executions last updated before a cutoff).
CREATE INDEX saga_executions_status ON saga_executions (status, updated_at_ms);
-- Listing by saga.
CREATE INDEX saga_executions_saga ON saga_executions (saga);
