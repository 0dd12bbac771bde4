//! The SQLite [`ParticipantStore`](super::ParticipantStore) (feature `sqlite`).

use std::path::{Path, PathBuf};

use sqlx::Sqlite;

use crate::participant_store::ParticipantStoreError;
use crate::sql::{Durability, ParticipantTables, SqliteBuilder, forward_participant_store};

/// Keeps staged effects in a SQLite file in write-ahead-log mode: the tables
/// `participant_effects`, `participant_reservations`, `participant_commands` (the answers) and
/// `participant_outcomes` (how each transaction settled).
///
/// The schema comes with the repository's embedded migrations (the store's files are
/// `migrations/sqlite/0100_participant_effects.sql`, `0101_participant_commands.sql` and
/// `0102_participant_outcomes.sql`, numbered apart from the repository's own), so the store and a
/// `SqliteRepository` may share one file; opening either brings both up to date. Every step that
/// writes holds the file's write lock from its start, so several stores (or processes) may share
/// the file.
///
/// ```no_run
/// # async fn example() -> Result<(), saga_runtime::transactional::ParticipantStoreError> {
/// use saga_runtime::repository::Durability;
/// use saga_runtime::transactional::SqliteParticipantStore;
///
/// let store = SqliteParticipantStore::builder("flight.db")
///     .durability(Durability::Normal)
///     .max_connections(2)
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteParticipantStore {
    tables: ParticipantTables<Sqlite>,
    path: PathBuf,
    durability: Durability,
}

impl SqliteBuilder<SqliteParticipantStore> {
    /// Opens the file (creating it if it is missing) and brings its schema up to date.
    pub async fn open(self) -> Result<SqliteParticipantStore, ParticipantStoreError> {
        let pool = self
            .options
            .open()
            .await
            .map_err(|error| ParticipantStoreError::Storage(Box::new(error)))?;
        Ok(SqliteParticipantStore {
            tables: ParticipantTables::new(pool),
            path: self.options.path,
            durability: self.options.durability,
        })
    }
}

impl SqliteParticipantStore {
    /// Opens the SQLite file at `path` with the default options ([`Durability::Full`]), creating it
    /// if it is missing, and brings its schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, ParticipantStoreError> {
        Self::builder(path).open().await
    }

    /// Starts configuring a store on the SQLite file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteBuilder<SqliteParticipantStore> {
        SqliteBuilder::new(path.as_ref().to_owned())
    }

    /// The file.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The durability it was opened with.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    /// Closes every connection, waiting for the ones in use; later calls fail. Clones share the
    /// connections and are closed too.
    pub async fn close(&self) {
        self.tables.close().await;
    }
}

forward_participant_store!(SqliteParticipantStore, tables);
