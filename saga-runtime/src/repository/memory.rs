//! The in-memory repository.

use async_trait::async_trait;
use uuid::Uuid;

use super::SagaExecutionRepository;
use crate::error::RepositoryError;
use crate::execution::{ExecutionRecord, SagaStatus};
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
    /// The pending messages in `json` were published (`mark_published`): they are dropped on load,
    /// which spares re-encoding the row.
    published: bool,
    /// What the listings need, kept beside the JSON so that listing decodes nothing.
    meta: Meta,
}

#[derive(Debug, Clone)]
struct Meta {
    saga: String,
    status: SagaStatus,
    created_at_ms: u64,
    updated_at_ms: u64,
    recoverable: bool,
    recoverable_once_published: bool,
}

impl Meta {
    fn of(record: &ExecutionRecord) -> Self {
        Self {
            saga: record.saga.clone(),
            status: record.status,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            recoverable: record.needs_recovery(),
            recoverable_once_published: record.needs_recovery_once_published(),
        }
    }
}

impl InMemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of stored executions.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing is stored.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw stored JSON of execution `id`.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn raw(&self, id: Uuid) -> Option<String> {
        self.rows.shard(&id).get(&id).map(|row| row.json.clone())
    }

    /// Replaces the raw stored JSON of execution `id` (to simulate corruption in tests).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn put_raw(&self, id: Uuid, json: impl Into<String>) {
        let json = json.into();
        let mut rows = self.rows.shard(&id);
        let version = rows.get(&id).map_or(1, |row| row.version);
        // A row that does not decode is listed for recovery, which reports it.
        let meta = match serde_json::from_str::<ExecutionRecord>(&json) {
            Ok(record) => Meta::of(&record),
            Err(_) => Meta {
                saga: String::new(),
                status: SagaStatus::Running,
                created_at_ms: 0,
                updated_at_ms: 0,
                recoverable: true,
                recoverable_once_published: true,
            },
        };
        rows.insert(
            id,
            Row {
                version,
                json,
                published: false,
                meta,
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
        let meta = Meta::of(record);
        rows.insert(
            record.id,
            Row {
                version,
                json,
                published: false,
                meta,
            },
        );
        Ok(version)
    }

    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
        let (version, json, published) = {
            let rows = self.rows.shard(&id);
            let row = rows.get(&id).ok_or(RepositoryError::NotFound { id })?;
            (row.version, row.json.clone(), row.published)
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
        if published {
            record.pending.clear();
        }
        Ok(record)
    }

    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
        self.rows.shard(&id).remove(&id);
        Ok(())
    }

    async fn mark_published(&self, id: Uuid, version: u64) -> Result<bool, RepositoryError> {
        let mut rows = self.rows.shard(&id);
        let Some(row) = rows.get_mut(&id).filter(|row| row.version == version) else {
            return Ok(false);
        };
        row.published = true;
        row.meta.recoverable = row.meta.recoverable_once_published;
        Ok(true)
    }

    async fn list_recoverable(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, RepositoryError> {
        let mut ids = self.select(|meta| meta.recoverable);
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .filter(|id| after.is_none_or(|after| *id > after))
            .take(limit)
            .collect())
    }

    async fn list_by_status(&self, status: SagaStatus) -> Result<Vec<Uuid>, RepositoryError> {
        Ok(self.oldest_first(|meta| meta.status == status))
    }

    async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError> {
        Ok(self.oldest_first(|meta| meta.saga == saga))
    }

    async fn delete_finished_before(&self, updated_before_ms: u64) -> Result<u64, RepositoryError> {
        let old = self.select(|meta| {
            meta.status == SagaStatus::Finished
                && meta.updated_at_ms < updated_before_ms
                && !meta.recoverable
        });
        for id in &old {
            self.rows.shard(id).remove(id);
        }
        Ok(old.len() as u64)
    }
}

impl InMemoryRepository {
    /// The ids of the rows whose metadata passes `keep`.
    fn select(&self, keep: impl Fn(&Meta) -> bool) -> Vec<Uuid> {
        self.rows.collect(|id, row| keep(&row.meta).then_some(*id))
    }

    /// The ids of the rows whose metadata passes `keep`, oldest first.
    fn oldest_first(&self, keep: impl Fn(&Meta) -> bool) -> Vec<Uuid> {
        let mut rows = self
            .rows
            .collect(|id, row| keep(&row.meta).then_some((row.meta.created_at_ms, *id)));
        rows.sort_unstable();
        rows.into_iter().map(|(_, id)| id).collect()
    }
}
