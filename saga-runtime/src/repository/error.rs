//! What a repository reports when it cannot store, load or delete an execution.

use uuid::Uuid;

/// The repository could not store, load or delete an execution.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// No execution with this id is stored.
    #[error("no saga execution {id} is stored")]
    NotFound {
        /// The missing id.
        id: Uuid,
    },
    /// Another writer stored the execution since it was loaded (optimistic concurrency).
    #[error("saga execution {id} changed concurrently: expected version {expected}, found {found}")]
    Conflict {
        /// The execution.
        id: Uuid,
        /// The version the writer had loaded.
        expected: u64,
        /// The version stored now.
        found: u64,
    },
    /// A stored execution could not be decoded.
    #[error("saga execution {id} is corrupt: {reason}")]
    Corrupt {
        /// The execution.
        id: Uuid,
        /// What is wrong with it.
        reason: String,
    },
    /// The storage itself failed.
    #[error("storage error: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync + 'static>),
}
