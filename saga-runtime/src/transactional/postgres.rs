//! The PostgreSQL [`ParticipantStore`](super::ParticipantStore) (feature `postgres`).

use std::time::Duration;

use sqlx::Postgres;

use crate::participant_store::ParticipantStoreError;
use crate::sql::{ParticipantTables, PostgresOptions, forward_participant_store};

/// Keeps staged effects in a PostgreSQL database: the tables `participant_effects`,
/// `participant_reservations`, `participant_commands` (the answers) and `participant_outcomes` (how
/// each transaction settled), created by embedded migrations when the store connects.
///
/// The migrations are the repository's (the store's files are
/// `migrations/postgres/0100_participant_effects.sql` and `0101_participant_outcomes.sql`, numbered
/// apart from the repository's own), so the store and a `PostgresRepository` may share one schema;
/// connecting either brings both up to date. With
/// [`schema`](PostgresParticipantStoreBuilder::schema), every table lives in that schema, created if
/// it is missing. One schema serves one service (see [`ParticipantStore`](super::ParticipantStore)).
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
    tables: ParticipantTables<Postgres>,
    schema: String,
}

/// Options for connecting a [`PostgresParticipantStore`]; made by
/// [`PostgresParticipantStore::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct PostgresParticipantStoreBuilder {
    options: PostgresOptions,
}

impl PostgresParticipantStoreBuilder {
    /// The most connections kept open to the server (default 4, at least 1).
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
    /// before failing with [`ParticipantStoreError::Storage`] (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.options.acquire_timeout = timeout;
        self
    }

    /// Connects to the server, creates the schema if it is missing and brings the tables up to
    /// date. Fails with [`ParticipantStoreError::Storage`] if the URL or the schema name is invalid
    /// or the server cannot be reached.
    pub async fn connect(self) -> Result<PostgresParticipantStore, ParticipantStoreError> {
        let (pool, schema) = self
            .options
            .connect()
            .await
            .map_err(|error| ParticipantStoreError::Storage(Box::new(error)))?;
        Ok(PostgresParticipantStore {
            tables: ParticipantTables::new(pool),
            schema,
        })
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
            options: PostgresOptions::new(url.into(), 4),
        }
    }

    /// The schema that holds the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes every connection, waiting for the ones in use; later calls fail. Clones share the
    /// connections and are closed too.
    pub async fn close(&self) {
        self.tables.close().await;
    }
}

forward_participant_store!(PostgresParticipantStore, tables);
