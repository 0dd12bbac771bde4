//! Repositories that fail on purpose, wrapped around a real one: a process that stops storing, and a
//! database that is down for a while. Each overrides only the methods it changes; the rest go to the
//! repository it wraps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use saga_runtime::error::RepositoryError;
use saga_runtime::execution::ExecutionRecord;
use saga_runtime::repository::SagaExecutionRepository;
use saga_testkit::{ForwardingRepository, RepositoryOverride};
use uuid::Uuid;

/// A fault wrapper as a repository: dereferences to the wrapper, for its switches and counters.
pub type Faulty<W> = ForwardingRepository<W>;

/// Delegates to a shared repository until `stores` stores have been made; after that every store
/// and every mark fails, as if the process had stopped: the manager stores nothing more, exactly as
/// if the process had stopped just before that store (no compensation runs without its intent
/// stored first).
pub struct DyingRepository {
    inner: Arc<dyn SagaExecutionRepository>,
    stores_left: AtomicUsize,
}

impl DyingRepository {
    /// Dies after `stores` stores into `inner`.
    pub fn new(inner: Arc<dyn SagaExecutionRepository>, stores: usize) -> Arc<Faulty<Self>> {
        ForwardingRepository::shared(Self {
            inner,
            stores_left: AtomicUsize::new(stores),
        })
    }

    fn dead() -> RepositoryError {
        RepositoryError::Storage(Box::new(std::io::Error::other("the process stopped")))
    }
}

/// Fails every store while it is down, and the next stores it is told to fail.
pub struct Outage {
    inner: Arc<dyn SagaExecutionRepository>,
    down: AtomicBool,
    fail_next: AtomicUsize,
    attempts: AtomicUsize,
    refused: AtomicUsize,
}

impl Outage {
    /// Up, over `inner`.
    pub fn new(inner: Arc<dyn SagaExecutionRepository>) -> Arc<Faulty<Self>> {
        ForwardingRepository::shared(Self {
            inner,
            down: AtomicBool::new(false),
            fail_next: AtomicUsize::new(0),
            attempts: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        })
    }

    /// Fails the next `count` stores (a database that is briefly busy).
    pub fn fail_next_stores(&self, count: usize) {
        self.fail_next.store(count, Ordering::SeqCst);
    }

    /// How many stores were attempted, refused ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Takes the database down (every store fails) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many stores it refused.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl RepositoryOverride for DyingRepository {
    fn inner(&self) -> &dyn SagaExecutionRepository {
        &*self.inner
    }

    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        let alive = self
            .stores_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if !alive {
            return Err(Self::dead());
        }
        self.inner.store(record).await
    }

    async fn mark_published(&self, id: Uuid, version: u64) -> Result<bool, RepositoryError> {
        if self.stores_left.load(Ordering::SeqCst) == 0 {
            return Err(Self::dead());
        }
        self.inner.mark_published(id, version).await
    }
}

#[async_trait]
impl RepositoryOverride for Outage {
    fn inner(&self) -> &dyn SagaExecutionRepository {
        &*self.inner
    }

    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let failing_next = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if failing_next || self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(RepositoryError::Storage(Box::new(std::io::Error::other(
                "connection refused",
            ))));
        }
        self.inner.store(record).await
    }
}
