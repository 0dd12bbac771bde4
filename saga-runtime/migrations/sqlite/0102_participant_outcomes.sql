-- How each transaction settled (`committed` 1, or 0: rejected), kept after its effects and its
-- reservation are removed, so that a message about it arriving late (a compensation command that
-- raced the reject, a redelivered reserve) is recognized instead of staging or reserving anew.
-- The participant's sweeper deletes the ones older than its answer retention.
CREATE TABLE IF NOT EXISTS participant_outcomes (
    transaction_id TEXT PRIMARY KEY NOT NULL,
    committed INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS participant_outcomes_by_age ON participant_outcomes (at_ms);
