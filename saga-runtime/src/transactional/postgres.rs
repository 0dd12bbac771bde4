//! The PostgreSQL [`ParticipantStore`](super::ParticipantStore) (feature `postgres`).

use sqlx::Postgres;

use crate::participant_store::ParticipantStoreError;
use crate::sql::{ParticipantTables, PostgresBuilder, forward_participant_store};

/// Keeps staged effects in a PostgreSQL database: the tables `participant_effects`,
/// `participant_reservations`, `participant_commands` (the answers) and `participant_outcomes` (how
/// each transaction settled), created by embedded migrations when the store connects.
///
/// The migrations are the repository's (the store's files are
/// `migrations/postgres/0100_participant_effects.sql` and `0101_participant_outcomes.sql`, numbered
/// apart from the repository's own), so the store and a `PostgresRepository` may share one schema;
/// connecting either brings both up to date. With
/// [`schema`](PostgresBuilder::schema), every table lives in that schema, created if
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
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresParticipantStore {
    tables: ParticipantTables<Postgres>,
    schema: String,
}

impl PostgresBuilder<PostgresParticipantStore> {
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
    pub fn builder(url: impl Into<String>) -> PostgresBuilder<PostgresParticipantStore> {
        PostgresBuilder::new(url.into(), 4)
    }

    /// The schema that holds the tables.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes every connection, waiting for the ones in use; later calls fail. Clones share the
    /// connections and are closed too.
    pub async fn close(&self) {
        self.tables.close().await;
    }
}

forward_participant_store!(PostgresParticipantStore, tables);
