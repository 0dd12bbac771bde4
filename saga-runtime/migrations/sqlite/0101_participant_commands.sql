-- The answers of the commands a transactional participant handled successfully, by message id, so
-- that a redelivered command is answered again without staging its effects twice. Kept after the
-- transaction settles; the participant's sweeper deletes the ones older than its answer retention.
CREATE TABLE IF NOT EXISTS participant_commands (
    command_id TEXT PRIMARY KEY NOT NULL,
    transaction_id TEXT NOT NULL,
    content TEXT NOT NULL,
    related_services TEXT,
    answered_at_ms INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS participant_commands_by_age ON participant_commands (answered_at_ms);
