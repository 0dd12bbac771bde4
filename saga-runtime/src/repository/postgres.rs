//! The PostgreSQL repository (feature `postgres`): executions in a table of a shared database.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::SagaExecutionRepository;
use super::codec::{corrupt, decode, encode, fingerprint, from_name, name_of, storage, unsigned};
use crate::error::RepositoryError;
use crate::execution::{ExecutionRecord, SagaStatus};

/// The schema, embedded in the binary and applied when a repository connects. It includes the
/// tables of the transactional participant's PostgreSQL store (`0100_participant_effects.sql`,
/// `0101_participant_outcomes.sql`), so one schema may hold both; connecting either brings both up
/// to date.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The columns `load` reads, in order. Ids travel as text and are cast to `uuid` in SQL.
const SELECT_RECORD: &str = r#"SELECT saga, fingerprint, status, context, steps, paused_step,
    already_rollback, "user", headers, settings, deadline_ms, transaction_state, version,
    created_at_ms, updated_at_ms, pending, owner, lease_until_ms
    FROM saga_executions WHERE id = $1::uuid"#;

const INSERT_RECORD: &str = r#"INSERT INTO saga_executions (id, saga, fingerprint, status,
    context, steps, paused_step, already_rollback, "user", headers, settings, deadline_ms,
    transaction_state, created_at_ms, updated_at_ms, version, pending, owner, lease_until_ms,
    recoverable)
    VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 + 1, $17,
    $18, $19, $20)
    ON CONFLICT (id) DO NOTHING"#;

const UPDATE_RECORD: &str = r#"UPDATE saga_executions SET saga = $2, fingerprint = $3,
    status = $4, context = $5, steps = $6, paused_step = $7, already_rollback = $8, "user" = $9,
    headers = $10, settings = $11, deadline_ms = $12, transaction_state = $13,
    created_at_ms = $14, updated_at_ms = $15, version = $16 + 1, pending = $17, owner = $18,
    lease_until_ms = $19, recoverable = $20
    WHERE id = $1::uuid AND version = $16"#;

const SELECT_VERSION: &str = "SELECT version FROM saga_executions WHERE id = $1::uuid";

/// Keeps executions in a PostgreSQL database: one row per execution in the table
/// `saga_executions`, created by embedded migrations when the repository connects.
///
/// Every [`store`](SagaExecutionRepository::store) is a compare-and-set on the version done by a
/// single statement, so any number of repositories (or processes) may share the table. Finished
/// executions are kept (an audit trail) until
/// [`delete_finished_before`](SagaExecutionRepository::delete_finished_before) removes them.
///
/// With [`schema`](PostgresRepositoryBuilder::schema), every table (the migrations' bookkeeping
/// table `_sqlx_migrations` included) lives in that schema, created if it is missing, so several
/// services or test runs can share one database without seeing each other's executions.
///
/// ```no_run
/// # async fn example() -> Result<(), saga_runtime::error::RepositoryError> {
/// use saga_runtime::repository::PostgresRepository;
///
/// let repository = PostgresRepository::builder("postgres://saga@localhost/orders")
///     .schema("sagas")
///     .max_connections(16)
///     .connect()
///     .await?;
/// assert_eq!(repository.schema(), "sagas");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresRepository {
    pool: PgPool,
    schema: String,
}

/// Options for connecting a [`PostgresRepository`]; made by [`PostgresRepository::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct PostgresRepositoryBuilder {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl PostgresRepositoryBuilder {
    /// The most connections kept open to the server (default 8, at least 1).
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
    /// before failing with [`RepositoryError::Storage`] (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Connects to the server, creates the schema if it is missing and brings the tables up to
    /// date. Fails with [`RepositoryError::Storage`] if the URL or the schema name is invalid or
    /// the server cannot be reached.
    pub async fn connect(self) -> Result<PostgresRepository, RepositoryError> {
        let (pool, schema) = connect_pool(
            &self.url,
            self.schema.as_deref(),
            self.max_connections,
            self.acquire_timeout,
        )
        .await?;
        Ok(PostgresRepository { pool, schema })
    }
}

/// A pool on the database at `url` whose connections use `schema` (created if it is missing; the
/// connection's default when `None`), with the schema's tables brought up to date; and the name of
/// the schema in use. Shared by the repository and the participant store.
pub(crate) async fn connect_pool(
    url: &str,
    schema: Option<&str>,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<(PgPool, String), RepositoryError> {
    let mut options = PgConnectOptions::from_str(url).map_err(storage)?;
    if let Some(schema) = schema {
        check_schema_name(schema)?;
        options = options.options([("search_path", schema)]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await
        .map_err(storage)?;
    if let Some(schema) = schema {
        create_schema(&pool, schema).await?;
    }
    MIGRATOR.run(&pool).await.map_err(storage)?;
    let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&pool)
        .await
        .map_err(storage)?;
    let schema = schema.ok_or_else(|| {
        RepositoryError::Storage("the connection's `search_path` names no schema".into())
    })?;
    Ok((pool, schema))
}

/// Refuses a schema name that is not a plain lower-case identifier (nothing to quote or fold).
fn check_schema_name(schema: &str) -> Result<(), RepositoryError> {
    let mut bytes = schema.bytes();
    let plain = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && schema.len() <= 63;
    if plain {
        Ok(())
    } else {
        Err(RepositoryError::Storage(
            format!(
                "schema name {schema:?} is not a plain lower-case identifier \
                 ([a-z_][a-z0-9_]*, at most 63 bytes)"
            )
            .into(),
        ))
    }
}

/// Creates `schema` if it is missing. Two repositories may race to create it: the loser finds it
/// there.
async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), RepositoryError> {
    // The name was checked to be a plain identifier: it needs no quoting.
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(pool)
        .await;
    if let Err(error) = created {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
        )
        .bind(schema)
        .fetch_one(pool)
        .await
        .map_err(storage)?;
        if !exists {
            return Err(storage(error));
        }
    }
    Ok(())
}

impl PostgresRepository {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`) with the
    /// default options, keeping the tables in the connection's default schema.
    pub async fn connect(url: impl Into<String>) -> Result<Self, RepositoryError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a repository on the database at `url`.
    pub fn builder(url: impl Into<String>) -> PostgresRepositoryBuilder {
        PostgresRepositoryBuilder {
            url: url.into(),
            schema: None,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
        }
    }

    /// The schema that holds the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes every connection, waiting for the ones in use. Later calls fail with
    /// [`RepositoryError::Storage`]; clones share the connections and are closed too.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores `records` in one transaction; a record that conflicts is reported and left out.
    /// Rows are written in id order, so concurrent batches lock them in the same order.
    async fn store_in_one_transaction(
        &self,
        records: &[&ExecutionRecord],
    ) -> Result<Vec<Result<u64, RepositoryError>>, sqlx::Error> {
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by_key(|&index| records[index].id);
        let mut results: Vec<Option<Result<u64, RepositoryError>>> =
            std::iter::repeat_with(|| None)
                .take(records.len())
                .collect();
        let mut transaction = self.pool.begin().await?;
        for index in order {
            let record = records[index];
            let statement = match store_statement(record) {
                Ok(statement) => statement,
                Err(error) => {
                    results[index] = Some(Err(error));
                    continue;
                }
            };
            let affected = statement.execute(&mut *transaction).await?.rows_affected();
            results[index] = Some(if affected == 1 {
                Ok(record.version + 1)
            } else {
                let found: Option<i64> = sqlx::query_scalar(SELECT_VERSION)
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
        Ok(results
            .into_iter()
            .map(|result| result.expect("every record has a result"))
            .collect())
    }

    /// The version stored now for `id` (0: none), read after a refused store.
    async fn current_version(&self, id: Uuid) -> Result<u64, RepositoryError> {
        let row = sqlx::query(SELECT_VERSION)
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
) -> Result<sqlx::query::Query<'_, sqlx::Postgres, PgArguments>, RepositoryError> {
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
impl SagaExecutionRepository for PostgresRepository {
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

    /// All records in one transaction: one commit for the batch. A record that conflicts is left
    /// out; the others are committed. If the transaction fails, nothing of the batch is stored and
    /// every record fails with [`RepositoryError::Storage`].
    async fn store_batch(&self, records: &[&ExecutionRecord]) -> Vec<Result<u64, RepositoryError>> {
        if let [record] = records {
            // One statement is its own transaction: no BEGIN/COMMIT round trips.
            return vec![self.store(record).await];
        }
        match self.store_in_one_transaction(records).await {
            Ok(results) => results,
            Err(error) => {
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
        sqlx::query("DELETE FROM saga_executions WHERE id = $1::uuid")
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
             WHERE id = $1::uuid AND version = $2",
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query = match after {
            None => sqlx::query(
                "SELECT id::text AS id FROM saga_executions WHERE recoverable \
                 ORDER BY id LIMIT $1",
            )
            .bind(limit),
            Some(after) => sqlx::query(
                "SELECT id::text AS id FROM saga_executions WHERE recoverable AND id > $2::uuid \
                 ORDER BY id LIMIT $1",
            )
            .bind(limit)
            .bind(after.to_string()),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(storage)?;
        rows.iter().map(row_id).collect()
    }

    async fn list_by_status(&self, status: SagaStatus) -> Result<Vec<Uuid>, RepositoryError> {
        let rows = sqlx::query(
            "SELECT id::text AS id FROM saga_executions WHERE status = $1 \
             ORDER BY created_at_ms, id",
        )
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(row_id).collect()
    }

    async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError> {
        let rows = sqlx::query(
            "SELECT id::text AS id FROM saga_executions WHERE saga = $1 \
             ORDER BY created_at_ms, id",
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
            sqlx::query("DELETE FROM saga_executions WHERE status = $1 AND updated_at_ms < $2 AND NOT recoverable")
                .bind(SagaStatus::Finished.as_str())
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(storage)?;
        Ok(result.rows_affected())
    }
}

/// Rebuilds a record from its row; whatever does not decode is `Corrupt`, naming the column.
fn decode_record(id: Uuid, row: &PgRow) -> Result<ExecutionRecord, RepositoryError> {
    let text = |name: &'static str| column::<String>(row, id, name);
    let optional_text = |name: &'static str| column::<Option<String>>(row, id, name);
    let integer = |name: &'static str| {
        column::<i64>(row, id, name).and_then(|value| unsigned(id, name, value))
    };
    let optional_integer = |name: &'static str| {
        column::<Option<i64>>(row, id, name)?
            .map(|value| unsigned(id, name, value))
            .transpose()
    };

    let fingerprint = fingerprint(id, text("fingerprint")?)?;
    let context =
        RawValue::from_string(text("context")?).map_err(|error| corrupt(id, "context", error))?;

    Ok(ExecutionRecord {
        id,
        saga: text("saga")?,
        fingerprint,
        status: from_name(id, "status", text("status")?)?,
        context,
        steps: decode(id, "steps", &text("steps")?)?,
        paused_step: optional_text("paused_step")?,
        already_rollback: column::<bool>(row, id, "already_rollback")?,
        user: optional_text("user")?,
        headers: decode(id, "headers", &text("headers")?)?,
        settings: decode(id, "settings", &text("settings")?)?,
        deadline_ms: optional_integer("deadline_ms")?,
        transaction: from_name(id, "transaction_state", text("transaction_state")?)?,
        version: integer("version")?,
        created_at_ms: integer("created_at_ms")?,
        updated_at_ms: integer("updated_at_ms")?,
        pending: decode(id, "pending", &text("pending")?)?,
        owner: optional_text("owner")?,
        lease_until_ms: optional_integer("lease_until_ms")?,
    })
}

/// Column `name` of `row` as a `T`; a value of another type is `Corrupt`.
fn column<'r, T>(row: &'r PgRow, id: Uuid, name: &'static str) -> Result<T, RepositoryError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get::<T, _>(name).map_err(|error| match error {
        sqlx::Error::ColumnDecode { source, .. } => corrupt(id, name, source),
        other => storage(other),
    })
}

/// The id in column `id` (as text) of a listing row.
fn row_id(row: &PgRow) -> Result<Uuid, RepositoryError> {
    let text = column::<String>(row, Uuid::nil(), "id")?;
    Uuid::parse_str(&text).map_err(|error| RepositoryError::Corrupt {
        id: Uuid::nil(),
        reason: format!("a row's `id` column holds {text:?}, not a UUID: {error}"),
    })
}

/// A record's `u64` as PostgreSQL's `bigint`.
fn signed(value: u64, field: &str) -> Result<i64, RepositoryError> {
    i64::try_from(value).map_err(|_| {
        RepositoryError::Storage(
            format!("`{field}` = {value} does not fit PostgreSQL's bigint").into(),
        )
    })
}
