//! The tables of a transactional participant's store (`participant_effects`,
//! `participant_reservations`, `participant_commands`, `participant_outcomes`), on either database:
//! the core of `SqliteParticipantStore` and `PostgresParticipantStore`, every statement written
//! once.

use std::time::SystemTime;

use sqlx::Pool;
use uuid::Uuid;

use super::backend::{Backend, Values};
use crate::participant_store::{
    CommandAnswer, Outcome, ParticipantStoreError, StagedEffect, Staging,
};

const SELECT_EFFECTS: &str = "SELECT topic, effect_key, effect FROM participant_effects \
    WHERE transaction_id = $1 ORDER BY seq";

/// The first `$2` effects of the transaction, in staging order: those its callbacks were handed.
const DELETE_SETTLED_EFFECTS: &str = "DELETE FROM participant_effects WHERE seq IN \
    (SELECT seq FROM participant_effects WHERE transaction_id = $1 ORDER BY seq LIMIT $2)";

const COUNT_EFFECTS: &str =
    "SELECT COUNT(*) AS remaining FROM participant_effects WHERE transaction_id = $1";

const DELETE_RESERVATION: &str = "DELETE FROM participant_reservations WHERE transaction_id = $1";

/// The decided transactions whose effects or reservation remain.
const SELECT_UNFINISHED: &str = "SELECT transaction_id, committed FROM participant_outcomes AS decided \
    WHERE decided.at_ms < $1 AND (\
      EXISTS (SELECT 1 FROM participant_effects AS effect \
              WHERE effect.transaction_id = decided.transaction_id) \
      OR EXISTS (SELECT 1 FROM participant_reservations AS held \
                 WHERE held.transaction_id = decided.transaction_id)) \
    ORDER BY decided.at_ms, decided.transaction_id";

/// The first decision stands.
const INSERT_OUTCOME: &str = "INSERT INTO participant_outcomes (transaction_id, committed, at_ms) \
    VALUES ($1, $2, $3) ON CONFLICT (transaction_id) DO NOTHING";

const SELECT_OUTCOME: &str = "SELECT committed FROM participant_outcomes WHERE transaction_id = $1";

const INSERT_ANSWER: &str = "INSERT INTO participant_commands (command_id, transaction_id, \
    content, related_services, answered_at_ms) VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (command_id) DO NOTHING";

const SELECT_ANSWER: &str =
    "SELECT content, related_services FROM participant_commands WHERE command_id = $1";

const INSERT_EFFECT: &str = "INSERT INTO participant_effects (transaction_id, topic, effect_key, \
    effect, staged_at_ms) VALUES ($1, $2, $3, $4, $5)";

const FORGET_ANSWERS: &str = "DELETE FROM participant_commands WHERE answered_at_ms < $1";

const FORGET_OUTCOMES: &str = "DELETE FROM participant_outcomes WHERE at_ms < $1";

const SELECT_RESERVATION: &str = "SELECT reserved, conflict_key, conflict_holder \
    FROM participant_reservations WHERE transaction_id = $1";

/// The first of the transaction's keys (in staging order) that another reserved transaction holds.
const SELECT_CONFLICT: &str = "SELECT mine.effect_key AS effect_key, other.transaction_id AS holder \
    FROM participant_effects AS mine \
    JOIN participant_effects AS other \
      ON other.effect_key = mine.effect_key AND other.transaction_id <> mine.transaction_id \
    JOIN participant_reservations AS held \
      ON held.transaction_id = other.transaction_id AND held.reserved \
    WHERE mine.transaction_id = $1 ORDER BY mine.seq, other.seq LIMIT 1";

const INSERT_RESERVATION: &str = "INSERT INTO participant_reservations (transaction_id, reserved, \
    conflict_key, conflict_holder, at_ms) VALUES ($1, $2, $3, $4, $5)";

const SELECT_EXPIRED: &str = "SELECT transaction_id FROM participant_reservations \
    WHERE at_ms < $1 ORDER BY at_ms, transaction_id";

/// A participant's tables, reached through a pool of `B`.
///
/// Several instances of a service may share the tables: staging a command is one transaction
/// that records its answer first (a redelivery staged by two instances at once is staged once), and
/// reserving checks the conflicts and records the reservation under the backend's reservation
/// lock, so two conflicting transactions reserved at once are never both granted.
#[derive(Debug)]
pub(crate) struct ParticipantTables<B: Backend> {
    pool: Pool<B>,
}

impl<B: Backend> Clone for ParticipantTables<B> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<B: Backend> ParticipantTables<B> {
    /// The tables `pool` reaches (their schema already brought up to date).
    pub(crate) fn new(pool: Pool<B>) -> Self {
        Self { pool }
    }

    /// Closes every connection, waiting for the ones in use.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// See `ParticipantStore::stage`.
    pub(crate) async fn stage(
        &self,
        transaction: Uuid,
        command: Uuid,
        effects: &[StagedEffect],
        answer: &CommandAnswer,
    ) -> Result<Staging, ParticipantStoreError> {
        let now = unix_ms(SystemTime::now());
        let content = serde_json::to_string(&answer.content).map_err(storage)?;
        let mut tx = B::begin_write(&self.pool).await.map_err(storage)?;
        // The answer first: a concurrent staging of the same command waits for this transaction
        // to end (on the write lock, or on the answer's key), and then inserts nothing.
        let record_answer = sqlx::query::<B>(INSERT_ANSWER)
            .id(command)
            .id(transaction)
            .value(content)
            .value(answer.related_services.as_deref())
            .value(now);
        let recorded = B::execute(record_answer, &mut tx).await.map_err(storage)?;
        if B::rows_affected(&recorded) == 0 {
            // This statement sees the answer that won (its transaction has committed).
            let earlier = answer_in::<B>(&mut tx, command).await?;
            return earlier.map(Staging::Answered).ok_or_else(|| {
                ParticipantStoreError::Storage(
                    format!("the answer of command {command} was forgotten while staging").into(),
                )
            });
        }
        // One statement per effect, so that `seq` follows the order they were staged in.
        for effect in effects {
            let encoded = serde_json::to_string(&effect.effect).map_err(storage)?;
            let stage_effect = sqlx::query::<B>(INSERT_EFFECT)
                .id(transaction)
                .value(effect.topic.as_str())
                .value(effect.key.as_str())
                .value(encoded)
                .value(now);
            B::execute(stage_effect, &mut tx).await.map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(Staging::Staged)
    }

    /// See `ParticipantStore::answered`.
    pub(crate) async fn answered(
        &self,
        command: Uuid,
    ) -> Result<Option<CommandAnswer>, ParticipantStoreError> {
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        answer_in::<B>(&mut connection, command).await
    }

    /// See `ParticipantStore::forget_answers`.
    pub(crate) async fn forget_answers(
        &self,
        before: SystemTime,
    ) -> Result<u64, ParticipantStoreError> {
        let before = unix_ms(before);
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        let answers = sqlx::query::<B>(FORGET_ANSWERS).value(before);
        let forgotten = B::execute(answers, &mut connection)
            .await
            .map_err(storage)?;
        let outcomes = sqlx::query::<B>(FORGET_OUTCOMES).value(before);
        B::execute(outcomes, &mut connection)
            .await
            .map_err(storage)?;
        Ok(B::rows_affected(&forgotten))
    }

    /// See `ParticipantStore::reserve`.
    pub(crate) async fn reserve(&self, transaction: Uuid) -> Result<(), ParticipantStoreError> {
        let mut tx = B::begin_write(&self.pool).await.map_err(storage)?;
        // The conflict check and the insert of the reservation must be one atomic step across
        // every store sharing the tables, or two conflicting transactions reserved at once would
        // both see no holder and both be granted: the lock is held from before the check until
        // the commit.
        B::lock_reservations(&mut tx).await.map_err(storage)?;
        let refused = reserve_locked::<B>(&mut tx, transaction).await?;
        tx.commit().await.map_err(storage)?;
        match refused {
            None => Ok(()),
            Some((key, holder)) => Err(ParticipantStoreError::Conflict { key, holder }),
        }
    }

    /// See `ParticipantStore::staged`.
    pub(crate) async fn staged(
        &self,
        transaction: Uuid,
    ) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        effects_in::<B>(&mut connection, transaction).await
    }

    /// See `ParticipantStore::decide`.
    pub(crate) async fn decide(
        &self,
        transaction: Uuid,
        outcome: Outcome,
    ) -> Result<Outcome, ParticipantStoreError> {
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        let record = sqlx::query::<B>(INSERT_OUTCOME)
            .id(transaction)
            .value(outcome == Outcome::Committed)
            .value(unix_ms(SystemTime::now()));
        B::execute(record, &mut connection).await.map_err(storage)?;
        // The insert, or the earlier decision it yielded to, is committed: this reads the one that
        // stands.
        outcome_in::<B>(&mut connection, transaction)
            .await?
            .ok_or_else(|| {
                ParticipantStoreError::Storage(
                    format!(
                        "the decision for transaction {transaction} was forgotten while deciding"
                    )
                    .into(),
                )
            })
    }

    /// See `ParticipantStore::remove_settled`.
    pub(crate) async fn remove_settled(
        &self,
        transaction: Uuid,
        count: usize,
    ) -> Result<usize, ParticipantStoreError> {
        let mut tx = B::begin_write(&self.pool).await.map_err(storage)?;
        if count > 0 {
            let limit = i64::try_from(count).unwrap_or(i64::MAX);
            let delete = sqlx::query::<B>(DELETE_SETTLED_EFFECTS)
                .id(transaction)
                .value(limit);
            B::execute(delete, &mut tx).await.map_err(storage)?;
        }
        let count_left = sqlx::query::<B>(COUNT_EFFECTS).id(transaction);
        let row = B::fetch_optional(count_left, &mut tx)
            .await
            .map_err(storage)?;
        let remaining: i64 = match row {
            Some(row) => B::get(&row, "remaining").map_err(storage)?,
            None => 0,
        };
        if remaining == 0 {
            let delete = sqlx::query::<B>(DELETE_RESERVATION).id(transaction);
            B::execute(delete, &mut tx).await.map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(usize::try_from(remaining).unwrap_or(usize::MAX))
    }

    /// See `ParticipantStore::unfinished`.
    pub(crate) async fn unfinished(
        &self,
        before: SystemTime,
    ) -> Result<Vec<(Uuid, Outcome)>, ParticipantStoreError> {
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        let statement = sqlx::query::<B>(SELECT_UNFINISHED).value(unix_ms(before));
        let rows = B::fetch_all(statement, &mut connection)
            .await
            .map_err(storage)?;
        rows.iter()
            .map(|row| {
                let transaction = required_id::<B>(row, "transaction_id")?;
                Ok((transaction, decision_of::<B>(row)?))
            })
            .collect()
    }

    /// See `ParticipantStore::outcome`.
    pub(crate) async fn outcome(
        &self,
        transaction: Uuid,
    ) -> Result<Option<Outcome>, ParticipantStoreError> {
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        outcome_in::<B>(&mut connection, transaction).await
    }

    /// See `ParticipantStore::expired_reservations`.
    pub(crate) async fn expired_reservations(
        &self,
        before: SystemTime,
    ) -> Result<Vec<Uuid>, ParticipantStoreError> {
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        let statement = sqlx::query::<B>(SELECT_EXPIRED).value(unix_ms(before));
        let rows = B::fetch_all(statement, &mut connection)
            .await
            .map_err(storage)?;
        rows.iter()
            .map(|row| required_id::<B>(row, "transaction_id"))
            .collect()
    }
}

/// The reservation of `transaction`, decided on `connection` (in a transaction that holds the
/// reservation lock): the remembered answer, else a new one, recorded. `Some` is the conflict
/// that refused it: the contested key and the transaction that holds it.
async fn reserve_locked<B: Backend>(
    connection: &mut B::Connection,
    transaction: Uuid,
) -> Result<Option<(String, Uuid)>, ParticipantStoreError> {
    let earlier = sqlx::query::<B>(SELECT_RESERVATION).id(transaction);
    if let Some(row) = B::fetch_optional(earlier, connection)
        .await
        .map_err(storage)?
    {
        if B::flag(&row, "reserved").map_err(storage)? {
            return Ok(None);
        }
        let key: Option<String> = B::get(&row, "conflict_key").map_err(storage)?;
        let holder = required_id::<B>(&row, "conflict_holder")?;
        return Ok(Some((key.unwrap_or_default(), holder)));
    }
    let conflict = sqlx::query::<B>(SELECT_CONFLICT).id(transaction);
    let refused = match B::fetch_optional(conflict, connection)
        .await
        .map_err(storage)?
    {
        Some(row) => Some((
            B::get(&row, "effect_key").map_err(storage)?,
            required_id::<B>(&row, "holder")?,
        )),
        None => None,
    };
    let record = sqlx::query::<B>(INSERT_RESERVATION)
        .id(transaction)
        .value(refused.is_none())
        .value(
            refused
                .as_ref()
                .map(|(key, _): &(String, Uuid)| key.as_str()),
        )
        .optional_id(refused.as_ref().map(|(_, holder)| *holder))
        .value(unix_ms(SystemTime::now()));
    B::execute(record, connection).await.map_err(storage)?;
    Ok(refused)
}

/// The decision recorded for `transaction`, read on `connection`.
async fn outcome_in<B: Backend>(
    connection: &mut B::Connection,
    transaction: Uuid,
) -> Result<Option<Outcome>, ParticipantStoreError> {
    let statement = sqlx::query::<B>(SELECT_OUTCOME).id(transaction);
    let row = B::fetch_optional(statement, connection)
        .await
        .map_err(storage)?;
    row.map(|row| decision_of::<B>(&row)).transpose()
}

/// The decision in column `committed` of `row`.
fn decision_of<B: Backend>(row: &B::Row) -> Result<Outcome, ParticipantStoreError> {
    Ok(if B::flag(row, "committed").map_err(storage)? {
        Outcome::Committed
    } else {
        Outcome::Rejected
    })
}

/// `transaction`'s staged effects, in staging order, read on `connection`.
async fn effects_in<B: Backend>(
    connection: &mut B::Connection,
    transaction: Uuid,
) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
    let statement = sqlx::query::<B>(SELECT_EFFECTS).id(transaction);
    let rows = B::fetch_all(statement, connection).await.map_err(storage)?;
    rows.iter()
        .map(|row| {
            let effect: String = B::get(row, "effect").map_err(storage)?;
            Ok(StagedEffect {
                topic: B::get(row, "topic").map_err(storage)?,
                key: B::get(row, "effect_key").map_err(storage)?,
                effect: serde_json::from_str(&effect).map_err(storage)?,
            })
        })
        .collect()
}

/// The answer recorded for `command`, read on `connection`.
async fn answer_in<B: Backend>(
    connection: &mut B::Connection,
    command: Uuid,
) -> Result<Option<CommandAnswer>, ParticipantStoreError> {
    let statement = sqlx::query::<B>(SELECT_ANSWER).id(command);
    let row = B::fetch_optional(statement, connection)
        .await
        .map_err(storage)?;
    row.map(|row| {
        let content: String = B::get(&row, "content").map_err(storage)?;
        Ok(CommandAnswer {
            content: serde_json::from_str(&content).map_err(storage)?,
            related_services: B::get(&row, "related_services").map_err(storage)?,
        })
    })
    .transpose()
}

/// The id in column `column` of `row`, which must not be NULL.
fn required_id<B: Backend>(row: &B::Row, column: &str) -> Result<Uuid, ParticipantStoreError> {
    B::id(row, column).map_err(storage)?.ok_or_else(|| {
        ParticipantStoreError::Storage(format!("column `{column}` holds no id").into())
    })
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn storage(error: impl std::error::Error + Send + Sync + 'static) -> ParticipantStoreError {
    ParticipantStoreError::Storage(Box::new(error))
}

/// Implements `ParticipantStore` for `$store` by handing every call to its
/// [`ParticipantTables`] in field `$tables`.
macro_rules! forward_participant_store {
    ($store:ty, $tables:ident) => {
        const _: () = {
            use std::time::SystemTime;

            use uuid::Uuid;

            use $crate::participant_store::{
                CommandAnswer, Outcome, ParticipantStore, ParticipantStoreError, StagedEffect,
                Staging,
            };

            #[async_trait::async_trait]
            impl ParticipantStore for $store {
                async fn stage(
                    &self,
                    transaction: Uuid,
                    command: Uuid,
                    effects: &[StagedEffect],
                    answer: &CommandAnswer,
                ) -> Result<Staging, ParticipantStoreError> {
                    self.$tables
                        .stage(transaction, command, effects, answer)
                        .await
                }

                async fn answered(
                    &self,
                    command: Uuid,
                ) -> Result<Option<CommandAnswer>, ParticipantStoreError> {
                    self.$tables.answered(command).await
                }

                async fn forget_answers(
                    &self,
                    before: SystemTime,
                ) -> Result<u64, ParticipantStoreError> {
                    self.$tables.forget_answers(before).await
                }

                async fn reserve(&self, transaction: Uuid) -> Result<(), ParticipantStoreError> {
                    self.$tables.reserve(transaction).await
                }

                async fn staged(
                    &self,
                    transaction: Uuid,
                ) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
                    self.$tables.staged(transaction).await
                }

                async fn expired_reservations(
                    &self,
                    before: SystemTime,
                ) -> Result<Vec<Uuid>, ParticipantStoreError> {
                    self.$tables.expired_reservations(before).await
                }

                async fn decide(
                    &self,
                    transaction: Uuid,
                    outcome: Outcome,
                ) -> Result<Outcome, ParticipantStoreError> {
                    self.$tables.decide(transaction, outcome).await
                }

                async fn remove_settled(
                    &self,
                    transaction: Uuid,
                    count: usize,
                ) -> Result<usize, ParticipantStoreError> {
                    self.$tables.remove_settled(transaction, count).await
                }

                async fn unfinished(
                    &self,
                    before: SystemTime,
                ) -> Result<Vec<(Uuid, Outcome)>, ParticipantStoreError> {
                    self.$tables.unfinished(before).await
                }

                async fn outcome(
                    &self,
                    transaction: Uuid,
                ) -> Result<Option<Outcome>, ParticipantStoreError> {
                    self.$tables.outcome(transaction).await
                }
            }
        };
    };
}

pub(crate) use forward_participant_store;
