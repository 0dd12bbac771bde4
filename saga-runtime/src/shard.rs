//! Maps keyed by execution id, split into independently locked shards so that concurrent
//! executions rarely wait on each other's bookkeeping.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

const SHARDS: usize = 16;

/// Hashes a UUID by its own (random) bits: v4 ids need no further mixing.
#[derive(Default)]
pub(crate) struct UuidHasher(u64);

impl Hasher for UuidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// A `HashMap` keyed by UUID with the [`UuidHasher`].
pub(crate) type UuidMap<V> = HashMap<Uuid, V, BuildHasherDefault<UuidHasher>>;

/// A UUID-keyed map in [`SHARDS`] separately locked parts.
pub(crate) struct ShardedMap<V> {
    shards: Box<[Mutex<UuidMap<V>>]>,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl<V> ShardedMap<V> {
    /// The locked shard holding `id`. A panic elsewhere while holding it cannot leave a map
    /// half-updated (every critical section is a single map operation), so poisoning is ignored.
    pub(crate) fn shard(&self, id: &Uuid) -> MutexGuard<'_, UuidMap<V>> {
        let index = (id.as_u128() as usize) % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What `pick` returns for each entry, shard by shard (each shard locked in turn).
    pub(crate) fn collect<T>(&self, mut pick: impl FnMut(&Uuid, &V) -> Option<T>) -> Vec<T> {
        let mut picked = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            picked.extend(shard.iter().filter_map(|(id, value)| pick(id, value)));
        }
        picked
    }

    /// Removes every entry and returns them.
    pub(crate) fn drain(&self) -> Vec<V> {
        let mut drained = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            drained.extend(shard.drain().map(|(_, value)| value));
        }
        drained
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl<V> std::fmt::Debug for ShardedMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedMap")
            .field("len", &self.len())
            .finish()
    }
}
