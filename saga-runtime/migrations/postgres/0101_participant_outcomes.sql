-- How each transaction settled (`committed` or not: rejected), kept after its effects and its
-- reservation are removed, so that a message about it arriving late (a compensation command that
-- raced the reject, a redelivered reserve) is recognized instead of staging or reserving anew.
-- The participant's sweeper deletes the ones older than its answer retention.
CREATE TABLE participant_outcomes (
    transaction_id UUID    NOT NULL PRIMARY KEY,
    committed      BOOLEAN NOT NULL,
    at_ms          BIGINT  NOT NULL
);

CREATE INDEX participant_outcomes_by_age ON participant_outcomes (at_ms);
