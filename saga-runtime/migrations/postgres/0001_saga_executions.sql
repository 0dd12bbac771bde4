-- One row per saga execution (see `PostgresRepository`). The JSON columns are TEXT, not JSONB, so
-- that they hold the serde encoding of the matching `ExecutionRecord` fields byte for byte (the
-- context round-trips exactly); `status` and `transaction_state` hold their storage names.
CREATE TABLE saga_executions (
    id                UUID    NOT NULL PRIMARY KEY,
    saga              TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    context           TEXT    NOT NULL,
    steps             TEXT    NOT NULL,
    paused_step       TEXT,
    already_rollback  BOOLEAN NOT NULL,
    "user"            TEXT,
    headers           TEXT    NOT NULL,
    settings          TEXT    NOT NULL,
    deadline_ms       BIGINT,
    transaction_state TEXT    NOT NULL,
    version           BIGINT  NOT NULL,
    created_at_ms     BIGINT  NOT NULL,
    updated_at_ms     BIGINT  NOT NULL,
    -- The execution's outbox (messages emitted with this state, not yet known to be published), the
    -- lease of the instance advancing it, and whether start-up recovery has work on it.
    pending           TEXT    NOT NULL DEFAULT '[]',
    owner             TEXT,
    lease_until_ms    BIGINT,
    recoverable       BOOLEAN NOT NULL DEFAULT FALSE
);

-- Listing by status, and retention (finished executions last updated before a cutoff).
CREATE INDEX saga_executions_status ON saga_executions (status, updated_at_ms);
-- Listing by saga.
CREATE INDEX saga_executions_saga ON saga_executions (saga);
-- Start-up recovery pages through the executions it has work on, by id.
CREATE INDEX saga_executions_recoverable ON saga_executions (id) WHERE recoverable;
