//! The SQLite [`ParticipantStore`] (feature `sqlite`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

use super::store::{
    CommandAnswer, Outcome, ParticipantStore, ParticipantStoreError, StagedEffect, Staging, unix_ms,
};
use crate::repository::SQLITE_MIGRATOR;

fn storage(error: impl std::error::Error + Send + Sync + 'static) -> ParticipantStoreError {
    ParticipantStoreError::Storage(Box::new(error))
}

/// Keeps staged effects in a SQLite file (write-ahead log, `synchronous = FULL`): the tables
/// `participant_effects`, `participant_reservations`, `participant_commands` (the answers) and
/// `participant_outcomes` (how each transaction settled).
///
/// The schema comes with the repository's embedded migrations (its files are
/// `migrations/sqlite/0100_participant_effects.sql`, `0101_participant_commands.sql` and
/// `0102_participant_outcomes.sql`, numbered apart from the repository's own), so the store and a `SqliteRepository` may share one file;
/// opening either brings both up to date.
#[derive(Debug, Clone)]
pub struct SqliteParticipantStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteParticipantStore {
    /// Opens the SQLite file at `path`, creating it if it is missing, and brings its schema up to
    /// date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, ParticipantStoreError> {
        let path = path.as_ref().to_owned();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(storage)?;
        SQLITE_MIGRATOR.run(&pool).await.map_err(storage)?;
        Ok(Self { pool, path })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqliteParticipantStore {
    /// Removes `transaction`'s staged effects and reservation, returning the effects; with an
    /// outcome, remembers it in the same transaction.
    async fn remove(
        &self,
        transaction: Uuid,
        outcome: Option<Outcome>,
    ) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        let id = transaction.to_string();
        let mut tx = write_transaction(&self.pool).await?;
        let rows = sqlx::query(
            "SELECT topic, effect_key, effect FROM participant_effects \
             WHERE transaction_id = ?1 ORDER BY seq",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await
        .map_err(storage)?;
        let effects = rows.iter().map(effect_of).collect::<Result<Vec<_>, _>>()?;
        for table in ["participant_effects", "participant_reservations"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE transaction_id = ?1"))
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
        }
        if let Some(outcome) = outcome {
            sqlx::query(
                "INSERT INTO participant_outcomes (transaction_id, committed, at_ms) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (transaction_id) DO NOTHING",
            )
            .bind(&id)
            .bind(i64::from(outcome == Outcome::Committed))
            .bind(unix_ms(SystemTime::now()))
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(effects)
    }
}

fn effect_of(row: &sqlx::sqlite::SqliteRow) -> Result<StagedEffect, ParticipantStoreError> {
    let effect: String = row.try_get("effect").map_err(storage)?;
    Ok(StagedEffect {
        topic: row.try_get("topic").map_err(storage)?,
        key: row.try_get("effect_key").map_err(storage)?,
        effect: serde_json::from_str(&effect).map_err(storage)?,
    })
}

/// A transaction that holds the file's write lock from its start (`BEGIN IMMEDIATE`, waiting up to
/// the busy timeout for it). A deferred transaction that reads before it writes could not upgrade
/// its read to a write once another connection wrote in between (`SQLITE_BUSY`, which the busy
/// timeout does not wait out), and the check it read would be stale anyway.
async fn write_transaction(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, ParticipantStoreError> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(storage)
}

/// The answer recorded for `command`, read on `connection`.
async fn answer_in(
    connection: &mut sqlx::SqliteConnection,
    command: Uuid,
) -> Result<Option<CommandAnswer>, ParticipantStoreError> {
    let row = sqlx::query(
        "SELECT content, related_services FROM participant_commands WHERE command_id = ?1",
    )
    .bind(command.to_string())
    .fetch_optional(connection)
    .await
    .map_err(storage)?;
    row.map(|row| {
        let content: String = row.try_get("content").map_err(storage)?;
        Ok(CommandAnswer {
            content: serde_json::from_str(&content).map_err(storage)?,
            related_services: row.try_get("related_services").map_err(storage)?,
        })
    })
    .transpose()
}

fn uuid_of(text: &str) -> Result<Uuid, ParticipantStoreError> {
    Uuid::from_str(text).map_err(storage)
}

#[async_trait]
impl ParticipantStore for SqliteParticipantStore {
    async fn stage(
        &self,
        transaction: Uuid,
        command: Uuid,
        effects: &[StagedEffect],
        answer: &CommandAnswer,
    ) -> Result<Staging, ParticipantStoreError> {
        let now = unix_ms(SystemTime::now());
        let content = serde_json::to_string(&answer.content).map_err(storage)?;
        // A second staging of the same command waits for the write lock, then finds the answer.
        let mut tx = write_transaction(&self.pool).await?;
        let recorded = sqlx::query(
            "INSERT INTO participant_commands (command_id, transaction_id, content, \
             related_services, answered_at_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command.to_string())
        .bind(transaction.to_string())
        .bind(content)
        .bind(answer.related_services.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        if recorded.rows_affected() == 0 {
            let earlier = answer_in(&mut tx, command).await?;
            return earlier.map(Staging::Answered).ok_or_else(|| {
                ParticipantStoreError::Storage(
                    format!("the answer of command {command} vanished while staging").into(),
                )
            });
        }
        for effect in effects {
            let encoded = serde_json::to_string(&effect.effect).map_err(storage)?;
            sqlx::query(
                "INSERT INTO participant_effects (transaction_id, topic, effect_key, effect, \
                 staged_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(transaction.to_string())
            .bind(&effect.topic)
            .bind(&effect.key)
            .bind(encoded)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(Staging::Staged)
    }

    async fn answered(
        &self,
        command: Uuid,
    ) -> Result<Option<CommandAnswer>, ParticipantStoreError> {
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        answer_in(&mut connection, command).await
    }

    async fn forget_answers(&self, before: SystemTime) -> Result<u64, ParticipantStoreError> {
        let result = sqlx::query("DELETE FROM participant_commands WHERE answered_at_ms < ?1")
            .bind(unix_ms(before))
            .execute(&self.pool)
            .await
            .map_err(storage)?;
        sqlx::query("DELETE FROM participant_outcomes WHERE at_ms < ?1")
            .bind(unix_ms(before))
            .execute(&self.pool)
            .await
            .map_err(storage)?;
        Ok(result.rows_affected())
    }

    async fn reserve(&self, transaction: Uuid) -> Result<(), ParticipantStoreError> {
        let id = transaction.to_string();
        let mut tx = write_transaction(&self.pool).await?;
        let earlier = sqlx::query(
            "SELECT reserved, conflict_key, conflict_holder FROM participant_reservations \
             WHERE transaction_id = ?1",
        )
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage)?;
        if let Some(row) = earlier {
            let reserved: i64 = row.try_get("reserved").map_err(storage)?;
            if reserved == 1 {
                return Ok(());
            }
            let key: Option<String> = row.try_get("conflict_key").map_err(storage)?;
            let holder: Option<String> = row.try_get("conflict_holder").map_err(storage)?;
            return Err(ParticipantStoreError::Conflict {
                key: key.unwrap_or_default(),
                holder: uuid_of(holder.as_deref().unwrap_or_default())?,
            });
        }
        let conflict = sqlx::query(
            "SELECT mine.effect_key AS effect_key, other.transaction_id AS holder \
             FROM participant_effects AS mine \
             JOIN participant_effects AS other \
               ON other.effect_key = mine.effect_key AND other.transaction_id <> mine.transaction_id \
             JOIN participant_reservations AS held \
               ON held.transaction_id = other.transaction_id AND held.reserved = 1 \
             WHERE mine.transaction_id = ?1 ORDER BY mine.seq LIMIT 1",
        )
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage)?;
        let refused = match conflict {
            Some(row) => {
                let key: String = row.try_get("effect_key").map_err(storage)?;
                let holder: String = row.try_get("holder").map_err(storage)?;
                Some((key, holder))
            }
            None => None,
        };
        sqlx::query(
            "INSERT INTO participant_reservations (transaction_id, reserved, conflict_key, \
             conflict_holder, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&id)
        .bind(i64::from(refused.is_none()))
        .bind(refused.as_ref().map(|(key, _)| key.clone()))
        .bind(refused.as_ref().map(|(_, holder)| holder.clone()))
        .bind(unix_ms(SystemTime::now()))
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        match refused {
            None => Ok(()),
            Some((key, holder)) => Err(ParticipantStoreError::Conflict {
                key,
                holder: uuid_of(&holder)?,
            }),
        }
    }

    async fn staged(&self, transaction: Uuid) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        let rows = sqlx::query(
            "SELECT topic, effect_key, effect FROM participant_effects \
             WHERE transaction_id = ?1 ORDER BY seq",
        )
        .bind(transaction.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(effect_of).collect()
    }

    async fn take(&self, transaction: Uuid) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        self.remove(transaction, None).await
    }

    async fn settle(
        &self,
        transaction: Uuid,
        outcome: Outcome,
    ) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        self.remove(transaction, Some(outcome)).await
    }

    async fn outcome(&self, transaction: Uuid) -> Result<Option<Outcome>, ParticipantStoreError> {
        let committed: Option<i64> = sqlx::query_scalar(
            "SELECT committed FROM participant_outcomes WHERE transaction_id = ?1",
        )
        .bind(transaction.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        Ok(committed.map(|committed| {
            if committed == 1 {
                Outcome::Committed
            } else {
                Outcome::Rejected
            }
        }))
    }

    async fn expired_reservations(
        &self,
        before: SystemTime,
    ) -> Result<Vec<Uuid>, ParticipantStoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT transaction_id FROM participant_reservations WHERE at_ms < ?1 \
             ORDER BY at_ms",
        )
        .bind(unix_ms(before))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(|id| uuid_of(id)).collect()
    }
}
