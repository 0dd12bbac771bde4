//! The PostgreSQL repository (feature `postgres`): executions in a table of a shared database.

use sqlx::Postgres;

use crate::error::RepositoryError;
use crate::sql::{Executions, PostgresBuilder, forward_repository};

/// Keeps executions in a PostgreSQL database: one row per execution in the table
/// `saga_executions`, created by embedded migrations when the repository connects.
///
/// Every [`store`](super::SagaExecutionRepository::store) is a compare-and-set on the version done
/// by a single statement, so any number of repositories (or processes) may share the table. A
/// [`store_batch`](super::SagaExecutionRepository::store_batch) is one transaction, writing its
/// rows in id order. Finished executions are kept (an audit trail) until
/// [`delete_finished_before`](super::SagaExecutionRepository::delete_finished_before) removes them.
///
/// With [`schema`](PostgresBuilder::schema), every table (the migrations' bookkeeping
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
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresRepository {
    executions: Executions<Postgres>,
    schema: String,
}

impl PostgresBuilder<PostgresRepository> {
    /// Connects to the server, creates the schema if it is missing and brings the tables up to
    /// date. Fails with [`RepositoryError::Storage`] if the URL or the schema name is invalid or
    /// the server cannot be reached.
    pub async fn connect(self) -> Result<PostgresRepository, RepositoryError> {
        let (pool, schema) = self
            .options
            .connect()
            .await
            .map_err(|error| RepositoryError::Storage(Box::new(error)))?;
        Ok(PostgresRepository {
            executions: Executions::new(pool),
            schema,
        })
    }
}

impl PostgresRepository {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`) with the
    /// default options, keeping the tables in the connection's default schema.
    pub async fn connect(url: impl Into<String>) -> Result<Self, RepositoryError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a repository on the database at `url`.
    pub fn builder(url: impl Into<String>) -> PostgresBuilder<PostgresRepository> {
        PostgresBuilder::new(url.into(), 8)
    }

    /// The schema that holds the tables.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes every connection, waiting for the ones in use. Later calls fail with
    /// [`RepositoryError::Storage`]; clones share the connections and are closed too.
    pub async fn close(&self) {
        self.executions.close().await;
    }
}

forward_repository!(PostgresRepository, executions);
