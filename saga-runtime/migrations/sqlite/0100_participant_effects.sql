-- The staged effects of a transactional participant (`saga_runtime::transactional`), numbered far
-- from the repository's migrations so that both sets can grow independently in one file.
CREATE TABLE IF NOT EXISTS participant_effects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    effect_key TEXT NOT NULL,
    effect TEXT NOT NULL,
    staged_at_ms INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS participant_effects_by_transaction
    ON participant_effects (transaction_id);
CREATE INDEX IF NOT EXISTS participant_effects_by_key ON participant_effects (effect_key);

-- One row per transaction that was asked to reserve: `reserved` 1 (held) or 0 (refused, with the
-- conflict that refused it, so that a repeated reserve answers as before).
CREATE TABLE IF NOT EXISTS participant_reservations (
    transaction_id TEXT PRIMARY KEY NOT NULL,
    reserved INTEGER NOT NULL,
    conflict_key TEXT,
    conflict_holder TEXT,
    at_ms INTEGER NOT NULL
);
