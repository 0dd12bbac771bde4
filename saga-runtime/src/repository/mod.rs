//! Repositories: where executions are stored between steps.
//!
//! The trait works on [`ExecutionRecord`]s, the context-independent stored form, so one repository
//! serves every saga. Every store is a compare-and-set on the record's version: a writer that lost a
//! race gets [`RepositoryError::Conflict`] instead of overwriting.
//!
//! Implementations: [`InMemoryRepository`] (tests, examples), `SqliteRepository` (feature `sqlite`,
//! on by default: a file in WAL mode) and `PostgresRepository` (feature `postgres`: a table in a
//! schema of a PostgreSQL database).

mod batching;
mod error;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use async_trait::async_trait;
use uuid::Uuid;

#[cfg(feature = "postgres")]
pub use self::postgres::PostgresRepository;
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteRepository;
pub use self::{
    batching::{BatchingRepository, BatchingRepositoryBuilder},
    error::RepositoryError,
    memory::InMemoryRepository,
};
#[cfg(feature = "postgres")]
pub use crate::sql::PostgresBuilder;
#[cfg(feature = "sqlite")]
pub use crate::sql::{Durability, SqliteBuilder};

use crate::execution::{ExecutionRecord, SagaStatus};

/// Stores, loads, lists and deletes saga executions.
///
/// The contract is checked by the conformance suite of `saga-testkit`
/// (`saga_testkit::conformance::repository::check`); every implementation in this crate passes it.
#[async_trait]
pub trait SagaExecutionRepository: Send + Sync + 'static {
    /// Stores `record` if the stored copy still has `record.version` (0: not stored yet) and returns
    /// the new version; otherwise fails with [`RepositoryError::Conflict`]. The whole record (its
    /// pending messages and lease included) is written at once, or not at all.
    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError>;

    /// Stores several records, in one commit where the backend can: one result per record, in
    /// order, each as [`store`](Self::store) would give it (a conflict on one record leaves the
    /// others stored). A result is returned only once its record is durable.
    async fn store_batch(&self, records: &[&ExecutionRecord]) -> Vec<Result<u64, RepositoryError>> {
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            results.push(self.store(record).await);
        }
        results
    }

    /// Loads the execution `id` ([`RepositoryError::NotFound`] if there is none).
    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError>;

    /// Deletes the execution `id` (deleting a missing one is not an error).
    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError>;

    /// Clears the pending messages of execution `id` if its stored version is still `version` (they
    /// were published); returns whether it did. Does not change the version. A newer version has
    /// its own pending messages, which stay.
    async fn mark_published(&self, id: Uuid, version: u64) -> Result<bool, RepositoryError>;

    /// Up to `limit` ids of executions that need start-up recovery
    /// ([`ExecutionRecord::needs_recovery`]), in id order, after `after` (for paging). Rows that do
    /// not decode are listed too, so that recovery can report them.
    async fn list_recoverable(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, RepositoryError>;

    /// The ids of the executions with `status`, oldest first.
    async fn list_by_status(&self, status: SagaStatus) -> Result<Vec<Uuid>, RepositoryError>;

    /// The ids of the executions of saga `saga` (its persisted name), oldest first.
    async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError>;

    /// Retention: deletes the `finished` executions last updated before `updated_before_ms`
    /// (milliseconds since the Unix epoch) that recovery has no work on (not held, not
    /// `committing`, nothing unpublished), and returns how many it deleted. Executions in any other
    /// status are kept, however old.
    async fn delete_finished_before(&self, updated_before_ms: u64) -> Result<u64, RepositoryError>;
}

crate::shared::shared_port!(SagaExecutionRepository);
