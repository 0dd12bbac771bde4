//! The in-memory repository.

use async_trait::async_trait;
use uuid::Uuid;

use super::SagaExecutionRepository;
use crate::error::RepositoryError;
use crate::execution::ExecutionRecord;
use crate::shard::ShardedMap;

/// Keeps executions in memory, serialized as JSON (so that it pays, and tests exercise, the same
/// encoding as a durable repository). Lost when the process ends.
#[derive(Debug, Default)]
pub struct InMemoryRepository {
    rows: ShardedMap<Row>,
}

#[derive(Debug)]
struct Row {
    version: u64,
    json: String,
}

impl InMemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of stored executions.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw stored JSON of execution `id`.
    pub fn raw(&self, id: Uuid) -> Option<String> {
        self.rows.shard(&id).get(&id).map(|row| row.json.clone())
    }

    /// Replaces the raw stored JSON of execution `id` (to simulate corruption in tests).
    pub fn put_raw(&self, id: Uuid, json: impl Into<String>) {
        let mut rows = self.rows.shard(&id);
        let version = rows.get(&id).map_or(1, |row| row.version);
        rows.insert(
            id,
            Row {
                version,
                json: json.into(),
            },
        );
    }
}

#[async_trait]
impl SagaExecutionRepository for InMemoryRepository {
    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        // Encode outside the lock.
        let json = record.to_json();
        let mut rows = self.rows.shard(&record.id);
        let found = rows.get(&record.id).map_or(0, |row| row.version);
        if found != record.version {
            return Err(RepositoryError::Conflict {
                id: record.id,
                expected: record.version,
                found,
            });
        }
        let version = found + 1;
        rows.insert(record.id, Row { version, json });
        Ok(version)
    }

    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
        let (version, json) = {
            let rows = self.rows.shard(&id);
            let row = rows.get(&id).ok_or(RepositoryError::NotFound { id })?;
            (row.version, row.json.clone())
        };
        let mut record: ExecutionRecord =
            serde_json::from_str(&json).map_err(|error| RepositoryError::Corrupt {
                id,
                reason: error.to_string(),
            })?;
        if record.id != id {
            return Err(RepositoryError::Corrupt {
                id,
                reason: format!("the stored record names execution {}", record.id),
            });
        }
        record.version = version;
        Ok(record)
    }

    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
        self.rows.shard(&id).remove(&id);
        Ok(())
    }
}
