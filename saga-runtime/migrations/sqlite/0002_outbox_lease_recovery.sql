-- The execution's outbox (messages emitted with this state, not yet known to be published), the
-- lease of the instance advancing it, and whether start-up recovery has work on it.
ALTER TABLE saga_executions ADD COLUMN pending TEXT NOT NULL DEFAULT '[]';
ALTER TABLE saga_executions ADD COLUMN owner TEXT;
ALTER TABLE saga_executions ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE saga_executions ADD COLUMN recoverable INTEGER NOT NULL DEFAULT 0;

-- Start-up recovery pages through the executions it has work on, by id.
CREATE INDEX saga_executions_recoverable ON saga_executions (id) WHERE recoverable = 1;
