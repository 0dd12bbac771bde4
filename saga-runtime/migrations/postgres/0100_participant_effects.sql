-- The tables of a transactional participant's store (`saga_runtime::transactional`,
-- `PostgresParticipantStore`), numbered far from the repository's migrations so that both sets can
-- grow independently in one schema. Effects and answers are TEXT holding their JSON encoding, as in
-- the SQLite store.

-- The staged effects, in staging order (`seq`), until their transaction settles.
CREATE TABLE participant_effects (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id UUID   NOT NULL,
    topic          TEXT   NOT NULL,
    effect_key     TEXT   NOT NULL,
    effect         TEXT   NOT NULL,
    staged_at_ms   BIGINT NOT NULL
);

CREATE INDEX participant_effects_by_transaction ON participant_effects (transaction_id, seq);
CREATE INDEX participant_effects_by_key ON participant_effects (effect_key);

-- One row per transaction that was asked to reserve: `reserved` (held) or not (refused, with the
-- conflict that refused it, so that a repeated reserve answers as before).
CREATE TABLE participant_reservations (
    transaction_id  UUID    NOT NULL PRIMARY KEY,
    reserved        BOOLEAN NOT NULL,
    conflict_key    TEXT,
    conflict_holder UUID,
    at_ms           BIGINT  NOT NULL
);

CREATE INDEX participant_reservations_by_age ON participant_reservations (at_ms);

-- The answers of the commands handled successfully, by message id, so that a redelivered command is
-- answered again without staging its effects twice. Kept after the transaction settles; the
-- participant's sweeper deletes the ones older than its answer retention.
CREATE TABLE participant_commands (
    command_id       UUID   NOT NULL PRIMARY KEY,
    transaction_id   UUID   NOT NULL,
    content          TEXT   NOT NULL,
    related_services TEXT,
    answered_at_ms   BIGINT NOT NULL
);

CREATE INDEX participant_commands_by_age ON participant_commands (answered_at_ms);
