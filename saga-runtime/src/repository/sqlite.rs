//! The SQLite repository: the embedded durable default (feature `sqlite`, on by default).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use uuid::Uuid;

use super::SagaExecutionRepository;
use super::codec::{corrupt, decode, encode, fingerprint, from_name, name_of, storage, unsigned};
use crate::error::RepositoryError;
use crate::execution::{ExecutionRecord, SagaStatus};

/// The schema, embedded in the binary and applied when a repository opens a file. It includes the
/// tables of the transactional participant's SQLite store (`0100_participant_effects.sql`,
/// `0101_participant_commands.sql`, `0102_participant_outcomes.sql`), so a service may keep both in
/// one file.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The columns `load` reads, in order.
const SELECT_RECORD: &str = r#"SELECT saga, fingerprint, status, context, steps, paused_step,
    already_rollback, "user", headers, settings, deadline_ms, transaction_state, version,
    created_at_ms, updated_at_ms, pending, owner, lease_until_ms
    FROM saga_executions WHERE id = ?1"#;

const INSERT_RECORD: &str = r#"INSERT INTO saga_executions (id, saga, fingerprint, status,
    context, steps, paused_step, already_rollback, "user", headers, settings, deadline_ms,
    transaction_state, created_at_ms, updated_at_ms, version, pending, owner, lease_until_ms,
    recoverable)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 1, ?17, ?18, ?19,
    ?20)
    ON CONFLICT (id) DO NOTHING"#;

const UPDATE_RECORD: &str = r#"UPDATE saga_executions SET saga = ?2, fingerprint = ?3,
    status = ?4, context = ?5, steps = ?6, paused_step = ?7, already_rollback = ?8, "user" = ?9,
    headers = ?10, settings = ?11, deadline_ms = ?12, transaction_state = ?13,
    created_at_ms = ?14, updated_at_ms = ?15, version = ?16 + 1, pending = ?17, owner = ?18,
    lease_until_ms = ?19, recoverable = ?20
    WHERE id = ?1 AND version = ?16"#;

/// How hard SQLite works to keep a stored execution once `store` has returned (its `synchronous`
/// setting; the journal is always a write-ahead log). It is never `OFF`: a saga's state must not be
/// lost once the command it sends may have left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = FULL`: every commit is synced to the disk before `store` returns, so a stored
    /// execution survives a power loss or an operating-system crash. The default.
    #[default]
    Full,
    /// `synchronous = NORMAL`: commits reach the write-ahead log without a sync; the log is synced at
    /// checkpoints. A stored execution survives a crash of the process, but the last commits may be
    /// lost (never corrupted) on a power loss or an operating-system crash. Faster.
    Normal,
}

impl Durability {
    fn synchronous(self) -> SqliteSynchronous {
        match self {
            Self::Full => SqliteSynchronous::Full,
            Self::Normal => SqliteSynchronous::Normal,
        }
    }
}

/// Keeps executions in a SQLite file in write-ahead-log mode: one row per execution in the table
/// `saga_executions`, created by embedded migrations when the file is opened.
///
/// Every [`store`](SagaExecutionRepository::store) is a compare-and-set on the version done by a single
/// statement, so several repositories (or processes) may share one file. Finished executions are kept
/// (an audit trail) until [`delete_finished_before`](Self::delete_finished_before) removes them.
///
/// ```no_run
/// # async fn example() -> Result<(), saga_runtime::error::RepositoryError> {
/// use saga_runtime::repository::{Durability, SqliteRepository};
///
/// let repository = SqliteRepository::builder("sagas.db")
///     .durability(Durability::Normal)
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteRepository {
    pool: SqlitePool,
    path: PathBuf,
    durability: Durability,
}

/// Options for opening a [`SqliteRepository`]; made by [`SqliteRepository::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct SqliteRepositoryBuilder {
    path: PathBuf,
    durability: Durability,
    max_connections: u32,
    busy_timeout: Duration,
}

impl SqliteRepositoryBuilder {
    /// How hard to keep stored executions (default: [`Durability::Full`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The most connections kept open to the file (default 4, at least 1). Reads run in parallel;
    /// SQLite runs one write at a time.
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// How long a statement waits for another writer's lock before failing (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens the file (creating it if it is missing) and brings its schema up to date.
    pub async fn open(self) -> Result<SqliteRepository, RepositoryError> {
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(self.durability.synchronous())
            .busy_timeout(self.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(self.max_connections)
            .connect_with(options)
            .await
            .map_err(storage)?;
        MIGRATOR.run(&pool).await.map_err(storage)?;
        Ok(SqliteRepository {
            pool,
            path: self.path,
            durability: self.durability,
        })
    }
}

impl SqliteRepository {
    /// Opens the SQLite file at `path` with the default options ([`Durability::Full`]), creating it
    /// if it is missing.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, RepositoryError> {
        Self::builder(path).open().await
    }

    /// Starts configuring a repository on the SQLite file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteRepositoryBuilder {
        SqliteRepositoryBuilder {
            path: path.as_ref().to_owned(),
            durability: Durability::default(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability it was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Closes every connection, waiting for the ones in use. Later calls fail with
    /// [`RepositoryError::Storage`]; clones share the connections and are closed too.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores `records` in one transaction; a record that conflicts is reported and left out.
    async fn store_in_one_transaction(
        &self,
        records: &[&ExecutionRecord],
    ) -> Result<Vec<Result<u64, RepositoryError>>, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            let statement = match store_statement(record) {
                Ok(statement) => statement,
                Err(error) => {
                    results.push(Err(error));
                    continue;
                }
            };
            let affected = statement.execute(&mut *transaction).await?.rows_affected();
            results.push(if affected == 1 {
                Ok(record.version + 1)
            } else {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM saga_executions WHERE id = ?1")
                        .bind(record.id.to_string())
                        .fetch_optional(&mut *transaction)
                        .await?;
                Err(RepositoryError::Conflict {
                    id: record.id,
                    expected: record.version,
                    found: found.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
                })
            });
        }
        transaction.commit().await?;
        Ok(results)
    }

    /// The version stored now for `id` (0: none), read after a refused store.
    async fn current_version(&self, id: Uuid) -> Result<u64, RepositoryError> {
        let row = sqlx::query("SELECT version FROM saga_executions WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(storage)?;
        match row {
            None => Ok(0),
            Some(row) => {
                column::<i64>(&row, id, "version").and_then(|v| unsigned(id, "version", v))
            }
        }
    }
}

/// The statement that stores `record` (an insert for version 0, a compare-and-set update
/// otherwise), with its values bound.
fn store_statement(
    record: &ExecutionRecord,
) -> Result<sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>>, RepositoryError>
{
    let statement = if record.version == 0 {
        INSERT_RECORD
    } else {
        UPDATE_RECORD
    };
    Ok(sqlx::query(statement)
        .bind(record.id.to_string())
        .bind(&record.saga)
        .bind(record.fingerprint.to_string())
        .bind(record.status.as_str())
        .bind(record.context.get())
        .bind(encode(&record.steps))
        .bind(record.paused_step.as_deref())
        .bind(record.already_rollback)
        .bind(record.user.as_deref())
        .bind(encode(&record.headers))
        .bind(encode(&record.settings))
        .bind(
            record
                .deadline_ms
                .map(|ms| signed(ms, "deadline_ms"))
                .transpose()?,
        )
        .bind(name_of(&record.transaction))
        .bind(signed(record.created_at_ms, "created_at_ms")?)
        .bind(signed(record.updated_at_ms, "updated_at_ms")?)
        .bind(signed(record.version, "version")?)
        .bind(encode(&record.pending))
        .bind(record.owner.as_deref())
        .bind(
            record
                .lease_until_ms
                .map(|ms| signed(ms, "lease_until_ms"))
                .transpose()?,
        )
        .bind(record.needs_recovery()))
}

#[async_trait]
impl SagaExecutionRepository for SqliteRepository {
    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        let result = store_statement(record)?
            .execute(&self.pool)
            .await
            .map_err(storage)?;
        if result.rows_affected() == 1 {
            return Ok(record.version + 1);
        }
        // Only on the failure path: tell the writer which version it raced with.
        Err(RepositoryError::Conflict {
            id: record.id,
            expected: record.version,
            found: self.current_version(record.id).await?,
        })
    }

    /// All records in one transaction: one commit (one sync with [`Durability::Full`]) for the
    /// batch. A record that conflicts is left out; the others are committed.
    async fn store_batch(&self, records: &[&ExecutionRecord]) -> Vec<Result<u64, RepositoryError>> {
        if let [record] = records {
            // One statement is its own transaction: no BEGIN/COMMIT round trips.
            return vec![self.store(record).await];
        }
        match self.store_in_one_transaction(records).await {
            Ok(results) => results,
            Err(error) => {
                // The commit failed: nothing of the batch is stored; every caller hears why.
                let message = error.to_string();
                records
                    .iter()
                    .map(|_| Err(RepositoryError::Storage(message.clone().into())))
                    .collect()
            }
        }
    }

    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
        let row = sqlx::query(SELECT_RECORD)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(storage)?
            .ok_or(RepositoryError::NotFound { id })?;
        decode_record(id, &row)
    }

    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
        sqlx::query("DELETE FROM saga_executions WHERE id = ?1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(storage)?;
        Ok(())
    }

    async fn mark_published(&self, id: Uuid, version: u64) -> Result<bool, RepositoryError> {
        // `recoverable` is recomputed without the pending messages (see
        // `ExecutionRecord::needs_recovery_once_published`).
        let result = sqlx::query(
            "UPDATE saga_executions SET pending = '[]', recoverable = \
             (status IN ('created', 'running') OR transaction_state = 'committing' \
              OR (status = 'paused' AND deadline_ms IS NOT NULL) OR owner IS NOT NULL) \
             WHERE id = ?1 AND version = ?2",
        )
        .bind(id.to_string())
        .bind(signed(version, "version")?)
        .execute(&self.pool)
        .await
        .map_err(storage)?;
        Ok(result.rows_affected() == 1)
    }

    async fn list_recoverable(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, RepositoryError> {
        let rows = sqlx::query(
            "SELECT id FROM saga_executions WHERE recoverable = 1 AND id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(after.map(|id| id.to_string()).unwrap_or_default())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(row_id).collect()
    }

    async fn list_by_status(&self, status: SagaStatus) -> Result<Vec<Uuid>, RepositoryError> {
        let rows = sqlx::query(
            "SELECT id FROM saga_executions WHERE status = ?1 ORDER BY created_at_ms, id",
        )
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(row_id).collect()
    }

    async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError> {
        let rows = sqlx::query(
            "SELECT id FROM saga_executions WHERE saga = ?1 ORDER BY created_at_ms, id",
        )
        .bind(saga)
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(row_id).collect()
    }

    async fn delete_finished_before(&self, updated_before_ms: u64) -> Result<u64, RepositoryError> {
        let cutoff = i64::try_from(updated_before_ms).unwrap_or(i64::MAX);
        let result =
            sqlx::query("DELETE FROM saga_executions WHERE status = ?1 AND updated_at_ms < ?2 AND recoverable = 0")
                .bind(SagaStatus::Finished.as_str())
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(storage)?;
        Ok(result.rows_affected())
    }
}

/// Rebuilds a record from its row; whatever does not decode is `Corrupt`, naming the column.
fn decode_record(id: Uuid, row: &SqliteRow) -> Result<ExecutionRecord, RepositoryError> {
    let text = |name: &'static str| column::<String>(row, id, name);
    let optional_text = |name: &'static str| column::<Option<String>>(row, id, name);
    let integer = |name: &'static str| {
        column::<i64>(row, id, name).and_then(|value| unsigned(id, name, value))
    };

    let fingerprint = fingerprint(id, text("fingerprint")?)?;
    let context =
        RawValue::from_string(text("context")?).map_err(|error| corrupt(id, "context", error))?;
    let already_rollback = match column::<i64>(row, id, "already_rollback")? {
        0 => false,
        1 => true,
        other => {
            return Err(corrupt(
                id,
                "already_rollback",
                format!("{other} is not 0 or 1"),
            ));
        }
    };
    let deadline_ms = column::<Option<i64>>(row, id, "deadline_ms")?
        .map(|value| unsigned(id, "deadline_ms", value))
        .transpose()?;

    Ok(ExecutionRecord {
        id,
        saga: text("saga")?,
        fingerprint,
        status: from_name(id, "status", text("status")?)?,
        context,
        steps: decode(id, "steps", &text("steps")?)?,
        paused_step: optional_text("paused_step")?,
        already_rollback,
        user: optional_text("user")?,
        headers: decode(id, "headers", &text("headers")?)?,
        settings: decode(id, "settings", &text("settings")?)?,
        deadline_ms,
        transaction: from_name(id, "transaction_state", text("transaction_state")?)?,
        version: integer("version")?,
        created_at_ms: integer("created_at_ms")?,
        updated_at_ms: integer("updated_at_ms")?,
        pending: decode(id, "pending", &text("pending")?)?,
        owner: optional_text("owner")?,
        lease_until_ms: column::<Option<i64>>(row, id, "lease_until_ms")?
            .map(|value| unsigned(id, "lease_until_ms", value))
            .transpose()?,
    })
}

/// Column `name` of `row` as a `T`; a value of another type is `Corrupt`.
fn column<'r, T>(row: &'r SqliteRow, id: Uuid, name: &'static str) -> Result<T, RepositoryError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get::<T, _>(name).map_err(|error| match error {
        sqlx::Error::ColumnDecode { source, .. } => corrupt(id, name, source),
        other => storage(other),
    })
}

/// The id in column `id` of a listing row.
fn row_id(row: &SqliteRow) -> Result<Uuid, RepositoryError> {
    let text = column::<String>(row, Uuid::nil(), "id")?;
    Uuid::parse_str(&text).map_err(|error| RepositoryError::Corrupt {
        id: Uuid::nil(),
        reason: format!("a row's `id` column holds {text:?}, not a UUID: {error}"),
    })
}

/// A record's `u64` as SQLite's signed integer.
fn signed(value: u64, field: &str) -> Result<i64, RepositoryError> {
    i64::try_from(value).map_err(|_| {
        RepositoryError::Storage(
            format!("`{field}` = {value} does not fit SQLite's 64-bit signed integers").into(),
        )
    })
}
