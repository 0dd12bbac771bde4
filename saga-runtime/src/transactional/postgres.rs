//! The PostgreSQL [`ParticipantStore`] (feature `postgres`).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::store::{
    CommandAnswer, Outcome, ParticipantStore, ParticipantStoreError, StagedEffect, Staging, unix_ms,
};
use crate::repository::connect_postgres;

fn storage(error: impl std::error::Error + Send + Sync + 'static) -> ParticipantStoreError {
    ParticipantStoreError::Storage(Box::new(error))
}

/// The first key of the advisory lock that serializes the reservations of one schema (the second
/// is the hash of the schema's name): "SAGA" in ASCII.
const RESERVE_LOCK_CLASS: i32 = 0x5341_4741;

/// Keeps staged effects in a PostgreSQL database: the tables `participant_effects`,
/// `participant_reservations`, `participant_commands` (the answers) and `participant_outcomes` (how
/// each transaction settled), created by embedded migrations when the store connects.
///
/// The migrations are the repository's (the store's files are
/// `migrations/postgres/0100_participant_effects.sql` and `0101_participant_outcomes.sql`, numbered
/// apart from the repository's own),
/// so the store and a `PostgresRepository` may share one schema; connecting either brings both up
/// to date. With [`schema`](PostgresParticipantStoreBuilder::schema), every table lives in that
/// schema, created if it is missing. One schema serves one service (see [`ParticipantStore`]).
///
/// Several instances of the service may share the schema: staging a command is one transaction
/// that records its answer first (a redelivery staged by two instances at once is staged once), and
/// reserving checks the conflicts and records the reservation under a lock of the schema, so two
/// conflicting transactions reserved at once on two instances are never both granted.
///
/// ```no_run
/// # async fn example() -> Result<(), saga_runtime::transactional::ParticipantStoreError> {
/// use saga_runtime::transactional::PostgresParticipantStore;
///
/// let store = PostgresParticipantStore::builder("postgres://flight@localhost/flight")
///     .schema("participant")
///     .max_connections(4)
///     .connect()
///     .await?;
/// assert_eq!(store.schema(), "participant");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresParticipantStore {
    pool: PgPool,
    schema: String,
}

/// Options for connecting a [`PostgresParticipantStore`]; made by
/// [`PostgresParticipantStore::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct PostgresParticipantStoreBuilder {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl PostgresParticipantStoreBuilder {
    /// The most connections kept open to the server (default 4, at least 1).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// The schema that holds the tables (default: the connection's own `search_path`, usually
    /// `public`). It must be a plain lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes);
    /// it is created if it is missing, and every pooled connection gets it as its `search_path`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// How long an operation waits for a free connection (or for a new one to be established)
    /// before failing with [`ParticipantStoreError::Storage`] (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Connects to the server, creates the schema if it is missing and brings the tables up to
    /// date. Fails with [`ParticipantStoreError::Storage`] if the URL or the schema name is invalid
    /// or the server cannot be reached.
    pub async fn connect(self) -> Result<PostgresParticipantStore, ParticipantStoreError> {
        let (pool, schema) = connect_postgres(
            &self.url,
            self.schema.as_deref(),
            self.max_connections,
            self.acquire_timeout,
        )
        .await
        .map_err(storage)?;
        Ok(PostgresParticipantStore { pool, schema })
    }
}

impl PostgresParticipantStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`) with the
    /// default options, keeping the tables in the connection's default schema.
    pub async fn connect(url: impl Into<String>) -> Result<Self, ParticipantStoreError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a store on the database at `url`.
    pub fn builder(url: impl Into<String>) -> PostgresParticipantStoreBuilder {
        PostgresParticipantStoreBuilder {
            url: url.into(),
            schema: None,
            max_connections: 4,
            acquire_timeout: Duration::from_secs(30),
        }
    }

    /// The schema that holds the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes every connection, waiting for the ones in use; later calls fail. Clones share the
    /// connections and are closed too.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Removes `transaction`'s staged effects and reservation, returning the effects; with an
    /// outcome, remembers it in the same transaction.
    async fn remove(
        &self,
        transaction: Uuid,
        outcome: Option<Outcome>,
    ) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        let id = transaction.to_string();
        let mut tx = self.pool.begin().await.map_err(storage)?;
        let rows = sqlx::query(SELECT_EFFECTS)
            .bind(&id)
            .fetch_all(&mut *tx)
            .await
            .map_err(storage)?;
        let effects = rows.iter().map(effect_of).collect::<Result<Vec<_>, _>>()?;
        for table in ["participant_effects", "participant_reservations"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE transaction_id = $1::uuid"
            ))
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        }
        if let Some(outcome) = outcome {
            sqlx::query(
                "INSERT INTO participant_outcomes (transaction_id, committed, at_ms) \
                 VALUES ($1::uuid, $2, $3) ON CONFLICT (transaction_id) DO NOTHING",
            )
            .bind(&id)
            .bind(outcome == Outcome::Committed)
            .bind(unix_ms(SystemTime::now()))
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(effects)
    }

    /// The reservation of `transaction` (decided in `tx`, which holds the schema's reservation
    /// lock): the remembered answer, else a new one, recorded. `Some` is the conflict that refused
    /// it.
    async fn reserve_locked(
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
    ) -> Result<Option<(String, String)>, ParticipantStoreError> {
        let earlier = sqlx::query(
            "SELECT reserved, conflict_key, conflict_holder::text AS conflict_holder \
             FROM participant_reservations WHERE transaction_id = $1::uuid",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(storage)?;
        if let Some(row) = earlier {
            let reserved: bool = row.try_get("reserved").map_err(storage)?;
            if reserved {
                return Ok(None);
            }
            let key: Option<String> = row.try_get("conflict_key").map_err(storage)?;
            let holder: Option<String> = row.try_get("conflict_holder").map_err(storage)?;
            return Ok(Some((key.unwrap_or_default(), holder.unwrap_or_default())));
        }
        let conflict = sqlx::query(
            "SELECT mine.effect_key AS effect_key, other.transaction_id::text AS holder \
             FROM participant_effects AS mine \
             JOIN participant_effects AS other \
               ON other.effect_key = mine.effect_key AND other.transaction_id <> mine.transaction_id \
             JOIN participant_reservations AS held \
               ON held.transaction_id = other.transaction_id AND held.reserved \
             WHERE mine.transaction_id = $1::uuid ORDER BY mine.seq, other.seq LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(storage)?;
        let refused = match conflict {
            Some(row) => Some((
                row.try_get::<String, _>("effect_key").map_err(storage)?,
                row.try_get::<String, _>("holder").map_err(storage)?,
            )),
            None => None,
        };
        sqlx::query(
            "INSERT INTO participant_reservations (transaction_id, reserved, conflict_key, \
             conflict_holder, at_ms) VALUES ($1::uuid, $2, $3, $4::uuid, $5)",
        )
        .bind(id)
        .bind(refused.is_none())
        .bind(refused.as_ref().map(|(key, _)| key.as_str()))
        .bind(refused.as_ref().map(|(_, holder)| holder.as_str()))
        .bind(unix_ms(SystemTime::now()))
        .execute(&mut **tx)
        .await
        .map_err(storage)?;
        Ok(refused)
    }
}

fn effect_of(row: &PgRow) -> Result<StagedEffect, ParticipantStoreError> {
    let effect: String = row.try_get("effect").map_err(storage)?;
    Ok(StagedEffect {
        topic: row.try_get("topic").map_err(storage)?,
        key: row.try_get("effect_key").map_err(storage)?,
        effect: serde_json::from_str(&effect).map_err(storage)?,
    })
}

fn uuid_of(text: &str) -> Result<Uuid, ParticipantStoreError> {
    Uuid::from_str(text).map_err(storage)
}

/// The answer recorded for `command`, read on `connection`.
async fn answer_in(
    connection: &mut PgConnection,
    command: Uuid,
) -> Result<Option<CommandAnswer>, ParticipantStoreError> {
    let row = sqlx::query(
        "SELECT content, related_services FROM participant_commands WHERE command_id = $1::uuid",
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

const SELECT_EFFECTS: &str = "SELECT topic, effect_key, effect FROM participant_effects \
     WHERE transaction_id = $1::uuid ORDER BY seq";

#[async_trait]
impl ParticipantStore for PostgresParticipantStore {
    async fn stage(
        &self,
        transaction: Uuid,
        command: Uuid,
        effects: &[StagedEffect],
        answer: &CommandAnswer,
    ) -> Result<Staging, ParticipantStoreError> {
        let now = unix_ms(SystemTime::now());
        let id = transaction.to_string();
        let content = serde_json::to_string(&answer.content).map_err(storage)?;
        let mut tx = self.pool.begin().await.map_err(storage)?;
        // The answer first: a concurrent staging of the same command waits on its key until this
        // transaction ends, and then inserts nothing.
        let recorded = sqlx::query(
            "INSERT INTO participant_commands (command_id, transaction_id, content, \
             related_services, answered_at_ms) VALUES ($1::uuid, $2::uuid, $3, $4, $5) \
             ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command.to_string())
        .bind(&id)
        .bind(content)
        .bind(answer.related_services.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        if recorded.rows_affected() == 0 {
            // Read committed: this statement sees the answer that won.
            let earlier = answer_in(&mut tx, command).await?;
            return earlier.map(Staging::Answered).ok_or_else(|| {
                ParticipantStoreError::Storage(
                    format!("the answer of command {command} was forgotten while staging").into(),
                )
            });
        }
        // One statement per effect, so that `seq` follows the order they were staged in.
        for effect in effects {
            let encoded = serde_json::to_string(&effect.effect).map_err(storage)?;
            sqlx::query(
                "INSERT INTO participant_effects (transaction_id, topic, effect_key, effect, \
                 staged_at_ms) VALUES ($1::uuid, $2, $3, $4, $5)",
            )
            .bind(&id)
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
        let result = sqlx::query("DELETE FROM participant_commands WHERE answered_at_ms < $1")
            .bind(unix_ms(before))
            .execute(&self.pool)
            .await
            .map_err(storage)?;
        sqlx::query("DELETE FROM participant_outcomes WHERE at_ms < $1")
            .bind(unix_ms(before))
            .execute(&self.pool)
            .await
            .map_err(storage)?;
        Ok(result.rows_affected())
    }

    async fn reserve(&self, transaction: Uuid) -> Result<(), ParticipantStoreError> {
        let id = transaction.to_string();
        let mut tx = self.pool.begin().await.map_err(storage)?;
        // The conflict check and the insert of the reservation must be one atomic step across every
        // instance sharing the schema, or two conflicting transactions reserved at once would both
        // see no holder and both be granted. A transaction-scoped advisory lock of the schema
        // serializes reservations: held from before the check (so, at read committed, the check
        // sees every reservation committed before it) until the commit. SERIALIZABLE would do too,
        // but it aborts one of two overlapping reservations (possibly even on different keys, its
        // predicate locks being coarse) and needs a retry loop; a reservation is a few short
        // statements, so waiting for the lock is cheap and always answers at the first attempt.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))")
            .bind(RESERVE_LOCK_CLASS)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        let refused = Self::reserve_locked(&mut tx, &id).await?;
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
        let rows = sqlx::query(SELECT_EFFECTS)
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
        let committed: Option<bool> = sqlx::query_scalar(
            "SELECT committed FROM participant_outcomes WHERE transaction_id = $1::uuid",
        )
        .bind(transaction.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        Ok(committed.map(|committed| {
            if committed {
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
            "SELECT transaction_id::text FROM participant_reservations WHERE at_ms < $1 \
             ORDER BY at_ms, transaction_id",
        )
        .bind(unix_ms(before))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(|id| uuid_of(id)).collect()
    }
}
