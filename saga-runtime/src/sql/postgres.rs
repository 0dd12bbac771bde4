//! PostgreSQL (feature `postgres`): a pool on a schema of a shared database, connected by
//! [`PostgresOptions`], and what its SQL does differently ([`Backend`] for [`Postgres`]).

use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::{Pool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::backend::Backend;
use super::driver::Statement;

/// The schema, embedded in the binary and applied when a pool connects: the repository's table and
/// the transactional participant store's (`0100_participant_effects.sql`,
/// `0101_participant_outcomes.sql`, numbered apart), so one schema may hold both; connecting either
/// brings both up to date.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The first key of the advisory lock that serializes the reservations of one schema (the second
/// is the hash of the schema's name): "SAGA" in ASCII.
const RESERVE_LOCK_CLASS: i32 = 0x5341_4741;

/// Options for connecting a store `S` to a PostgreSQL database: a
/// [`PostgresRepository`](crate::repository::PostgresRepository) or a
/// `PostgresParticipantStore` (the transactional participant's), made by the store's
/// `builder(url)` and finished by its `connect()`. The repository and the participant store may
/// share one schema.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct PostgresBuilder<S> {
    pub(crate) options: PostgresOptions,
    store: PhantomData<fn() -> S>,
}

impl<S> PostgresBuilder<S> {
    /// The defaults for the database at `url` ([`PostgresOptions::new`]).
    pub(crate) fn new(url: String, max_connections: u32) -> Self {
        Self {
            options: PostgresOptions::new(url, max_connections),
            store: PhantomData,
        }
    }

    /// The most connections kept open to the server (default 8 for the repository, 4 for the
    /// participant store; at least 1).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.options.max_connections = max_connections.max(1);
        self
    }

    /// The schema that holds the tables (default: the connection's own `search_path`, usually
    /// `public`). It must be a plain lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes);
    /// it is created if it is missing, and every pooled connection gets it as its `search_path`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.options.schema = Some(schema.into());
        self
    }

    /// How long an operation waits for a free connection (or for a new one to be established)
    /// before failing with the store's storage error (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.options.acquire_timeout = timeout;
        self
    }
}

/// How a PostgreSQL store connects: what a [`PostgresBuilder`] sets.
#[derive(Debug, Clone)]
pub(crate) struct PostgresOptions {
    /// `postgres://user:password@host:port/database`.
    pub(crate) url: String,
    /// The schema that holds the tables (`None`: the connection's default).
    pub(crate) schema: Option<String>,
    /// The most connections kept open to the server (at least 1).
    pub(crate) max_connections: u32,
    /// How long an operation waits for a free connection, or for a new one.
    pub(crate) acquire_timeout: Duration,
}

impl PostgresOptions {
    /// The defaults for the database at `url`: its default schema, `max_connections`, a 30 s
    /// acquire timeout.
    pub(crate) fn new(url: String, max_connections: u32) -> Self {
        Self {
            url,
            schema: None,
            max_connections,
            acquire_timeout: Duration::from_secs(30),
        }
    }

    /// A pool on the database whose connections use the schema (created if it is missing), with
    /// the schema's tables brought up to date; and the name of the schema in use. Fails before
    /// connecting if the schema name is not a plain identifier.
    pub(crate) async fn connect(&self) -> Result<(Pool<Postgres>, String), sqlx::Error> {
        let mut options = PgConnectOptions::from_str(&self.url)?;
        if let Some(schema) = &self.schema {
            check_schema_name(schema)?;
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(options)
            .await?;
        if let Some(schema) = &self.schema {
            create_schema(&pool, schema).await?;
        }
        MIGRATOR.run(&pool).await?;
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        let schema = schema.ok_or_else(|| {
            sqlx::Error::Configuration("the connection's `search_path` names no schema".into())
        })?;
        Ok((pool, schema))
    }
}

/// Refuses a schema name that is not a plain lower-case identifier (nothing to quote or fold).
fn check_schema_name(schema: &str) -> Result<(), sqlx::Error> {
    let mut bytes = schema.bytes();
    let plain = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && schema.len() <= 63;
    if plain {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!(
                "schema name {schema:?} is not a plain lower-case identifier \
                 ([a-z_][a-z0-9_]*, at most 63 bytes)"
            )
            .into(),
        ))
    }
}

/// Creates `schema` if it is missing. Two pools may race to create it: the loser finds it there.
async fn create_schema(pool: &Pool<Postgres>, schema: &str) -> Result<(), sqlx::Error> {
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
        .await?;
        if !exists {
            return Err(error);
        }
    }
    Ok(())
}

impl Backend for Postgres {
    const RECOVERABLE: &'static str = "recoverable";

    /// Ids are stored as `uuid`.
    fn bind_id(statement: Statement<'_, Self>, id: Option<Uuid>) -> Statement<'_, Self> {
        statement.bind(id)
    }

    fn id(row: &PgRow, column: &str) -> Result<Option<Uuid>, sqlx::Error> {
        row.try_get(column)
    }

    fn flag(row: &PgRow, column: &str) -> Result<bool, sqlx::Error> {
        row.try_get(column)
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// A plain `BEGIN` (read committed): the statements that write take their row locks, and a
    /// check that must not go stale runs under [`lock_reservations`](Backend::lock_reservations).
    fn begin_write(
        pool: &Pool<Self>,
    ) -> BoxFuture<'_, Result<Transaction<'static, Self>, sqlx::Error>> {
        Box::pin(pool.begin())
    }

    /// A transaction-scoped advisory lock of the schema. Held from before the conflict check (so,
    /// at read committed, the check sees every reservation committed before it) until the commit.
    /// SERIALIZABLE would do too, but it aborts one of two overlapping reservations (possibly even
    /// on different keys, its predicate locks being coarse) and needs a retry loop; a reservation
    /// is a few short statements, so waiting for the lock is cheap and always answers at the
    /// first attempt.
    fn lock_reservations(connection: &mut PgConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(
                "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
            )
            .bind(RESERVE_LOCK_CLASS)
            .execute(connection)
            .await?;
            Ok(())
        })
    }
}
