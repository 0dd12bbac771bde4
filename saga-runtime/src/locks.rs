//! Per-id locks: one caller at a time advances an execution (or settles a participant's
//! transaction) in this process.

use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use crate::shard::ShardedMap;

type Table = Arc<ShardedMap<Arc<tokio::sync::Mutex<()>>>>;

/// A table of async mutexes keyed by execution id; entries live only while someone holds or waits
/// for them.
#[derive(Debug, Default)]
pub(crate) struct ExecutionLocks {
    table: Table,
}

impl ExecutionLocks {
    /// Waits until no one else advances execution `id`.
    pub(crate) async fn lock(&self, id: Uuid) -> ExecutionGuard {
        let mutex = Arc::clone(self.table.shard(&id).entry(id).or_default());
        let guard = Arc::clone(&mutex).lock_owned().await;
        ExecutionGuard {
            table: Arc::clone(&self.table),
            id,
            mutex,
            guard: Some(guard),
        }
    }
}

/// Holds an execution's lock; dropping it releases the lock.
pub(crate) struct ExecutionGuard {
    table: Table,
    id: Uuid,
    mutex: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for ExecutionGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut shard = self.table.shard(&self.id);
        // Two references left (the table's and ours): nobody else holds or waits for it.
        if Arc::strong_count(&self.mutex) == 2 {
            shard.remove(&self.id);
        }
    }
}
