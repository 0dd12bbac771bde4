//! The SQLite repository: the embedded durable default (feature `sqlite`, on by default).

use std::path::{Path, PathBuf};

use sqlx::Sqlite;

use crate::error::RepositoryError;
use crate::sql::{Durability, Executions, SqliteBuilder, forward_repository};

/// Keeps executions in a SQLite file in write-ahead-log mode: one row per execution in the table
/// `saga_executions`, created by embedded migrations when the file is opened.
///
/// Every [`store`](super::SagaExecutionRepository::store) is a compare-and-set on the version done
/// by a single statement, so several repositories (or processes) may share one file. A
/// [`store_batch`](super::SagaExecutionRepository::store_batch) is one transaction: one commit
/// (one sync with [`Durability::Full`]) for the batch. Finished executions are kept (an audit
/// trail) until [`delete_finished_before`](super::SagaExecutionRepository::delete_finished_before)
/// removes them.
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
    executions: Executions<Sqlite>,
    path: PathBuf,
    durability: Durability,
}

impl SqliteBuilder<SqliteRepository> {
    /// Opens the file (creating it if it is missing) and brings its schema up to date.
    pub async fn open(self) -> Result<SqliteRepository, RepositoryError> {
        let pool = self.options.open().await.map_err(storage)?;
        Ok(SqliteRepository {
            executions: Executions::new(pool),
            path: self.options.path,
            durability: self.options.durability,
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
    pub fn builder(path: impl AsRef<Path>) -> SqliteBuilder<SqliteRepository> {
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

    /// Closes every connection, waiting for the ones in use. Later calls fail with
    /// [`RepositoryError::Storage`]; clones share the connections and are closed too.
    pub async fn close(&self) {
        self.executions.close().await;
    }
}

forward_repository!(SqliteRepository, executions);

fn storage(error: sqlx::Error) -> RepositoryError {
    RepositoryError::Storage(Box::new(error))
}
