//! A repository wrapper that forwards every method to an inner repository unless told otherwise, so
//! that a fault wrapper (a repository that dies, one that is briefly down, one that counts calls)
//! writes only the methods it changes.

use std::sync::Arc;

use async_trait::async_trait;
use saga_runtime::error::RepositoryError;
use saga_runtime::execution::{ExecutionRecord, SagaStatus};
use saga_runtime::repository::SagaExecutionRepository;
use uuid::Uuid;

/// The methods of [`SagaExecutionRepository`], each forwarding to [`inner`](Self::inner) by
/// default: implement `inner` and override only what your wrapper changes, then wrap it in a
/// [`ForwardingRepository`] to get a repository.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// use saga_runtime::error::RepositoryError;
/// use saga_runtime::execution::ExecutionRecord;
/// use saga_runtime::repository::{InMemoryRepository, SagaExecutionRepository};
/// use saga_testkit::{ForwardingRepository, RepositoryOverride};
///
/// /// Counts stores; everything else goes straight through.
/// struct CountingStores {
///     inner: InMemoryRepository,
///     stores: AtomicUsize,
/// }
///
/// #[async_trait::async_trait]
/// impl RepositoryOverride for CountingStores {
///     fn inner(&self) -> &dyn SagaExecutionRepository {
///         &self.inner
///     }
///     async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
///         self.stores.fetch_add(1, Ordering::Relaxed);
///         self.inner.store(record).await
///     }
/// }
///
/// let repository: Arc<dyn SagaExecutionRepository> = ForwardingRepository::shared(CountingStores {
///     inner: InMemoryRepository::new(),
///     stores: AtomicUsize::new(0),
/// });
/// # drop(repository);
/// ```
#[async_trait]
pub trait RepositoryOverride: Send + Sync + 'static {
    /// The repository every method not overridden goes to.
    fn inner(&self) -> &dyn SagaExecutionRepository;

    /// [`SagaExecutionRepository::store`].
    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        self.inner().store(record).await
    }

    /// [`SagaExecutionRepository::store_batch`]. Forwarded as a batch, so a wrapper that overrides
    /// only [`store`](Self::store) must override this too if batches should see its change.
    async fn store_batch(&self, records: &[&ExecutionRecord]) -> Vec<Result<u64, RepositoryError>> {
        self.inner().store_batch(records).await
    }

    /// [`SagaExecutionRepository::load`].
    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
        self.inner().load(id).await
    }

    /// [`SagaExecutionRepository::delete`].
    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
        self.inner().delete(id).await
    }

    /// [`SagaExecutionRepository::mark_published`].
    async fn mark_published(&self, id: Uuid, version: u64) -> Result<bool, RepositoryError> {
        self.inner().mark_published(id, version).await
    }

    /// [`SagaExecutionRepository::list_recoverable`].
    async fn list_recoverable(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, RepositoryError> {
        self.inner().list_recoverable(after, limit).await
    }

    /// [`SagaExecutionRepository::list_by_status`].
    async fn list_by_status(&self, status: SagaStatus) -> Result<Vec<Uuid>, RepositoryError> {
        self.inner().list_by_status(status).await
    }

    /// [`SagaExecutionRepository::list_by_saga`].
    async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError> {
        self.inner().list_by_saga(saga).await
    }

    /// [`SagaExecutionRepository::delete_finished_before`].
    async fn delete_finished_before(&self, updated_before_ms: u64) -> Result<u64, RepositoryError> {
        self.inner().delete_finished_before(updated_before_ms).await
    }
}

/// A [`SagaExecutionRepository`] made of a [`RepositoryOverride`]. It dereferences to the
/// override, so the wrapper's own methods (counters, switches) stay reachable.
#[derive(Debug, Default)]
pub struct ForwardingRepository<O>(pub O);

impl<O: RepositoryOverride> ForwardingRepository<O> {
    /// `wrapper` as a shared repository.
    pub fn shared(wrapper: O) -> Arc<Self> {
        Arc::new(Self(wrapper))
    }
}

impl<O> std::ops::Deref for ForwardingRepository<O> {
    type Target = O;

    fn deref(&self) -> &O {
        &self.0
    }
}

#[async_trait]
impl<O: RepositoryOverride> SagaExecutionRepository for ForwardingRepository<O> {
    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        self.0.store(record).await
    }
    async fn store_batch(&self, records: &[&ExecutionRecord]) -> Vec<Result<u64, RepositoryError>> {
        self.0.store_batch(records).await
    }
    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
        self.0.load(id).await
    }
    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
        self.0.delete(id).await
    }
    async fn mark_published(&self, id: Uuid, version: u64) -> Result<bool, RepositoryError> {
        self.0.mark_published(id, version).await
    }
    async fn list_recoverable(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, RepositoryError> {
        self.0.list_recoverable(after, limit).await
    }
    async fn list_by_status(&self, status: SagaStatus) -> Result<Vec<Uuid>, RepositoryError> {
        self.0.list_by_status(status).await
    }
    async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError> {
        self.0.list_by_saga(saga).await
    }
    async fn delete_finished_before(&self, updated_before_ms: u64) -> Result<u64, RepositoryError> {
        self.0.delete_finished_before(updated_before_ms).await
    }
}
