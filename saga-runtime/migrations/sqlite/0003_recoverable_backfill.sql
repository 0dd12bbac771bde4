-- Rows written before `recoverable` existed: mark the ones start-up recovery has work on, with the
-- rule of `ExecutionRecord::needs_recovery` (they have no pending messages and no owner yet).
UPDATE saga_executions SET recoverable = 1
    WHERE status IN ('created', 'running')
       OR transaction_state = 'committing'
       OR (status = 'paused' AND deadline_ms IS NOT NULL);
