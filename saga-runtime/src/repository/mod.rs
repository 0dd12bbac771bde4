//! Repositories: where executions are stored between steps.
//!
//! The trait works on [`ExecutionRecord`]s, the context-independent stored form, so one repository
//! serves every saga. Every store is a compare-and-set on the record's version: a writer that lost a
//! race gets [`RepositoryError::Conflict`] instead of overwriting.

pub mod conformance;
mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;

use async_trait::async_trait;
use uuid::Uuid;

pub use memory::InMemoryRepository;
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteRepository, SqliteRepositoryBuilder};

use crate::error::RepositoryError;
use crate::execution::ExecutionRecord;

/// Stores, loads and deletes saga executions.
#[async_trait]
pub trait SagaExecutionRepository: Send + Sync + 'static {
    /// Stores `record` if the stored copy still has `record.version` (0: not stored yet) and returns
    /// the new version; otherwise fails with [`RepositoryError::Conflict`].
    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError>;

    /// Loads the execution `id` ([`RepositoryError::NotFound`] if there is none).
    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError>;

    /// Deletes the execution `id` (deleting a missing one is not an error).
    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError>;
}
