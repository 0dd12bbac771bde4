//! Group commit for any repository: [`BatchingRepository`].
//!
//! A durable repository pays for every commit. SQLite with [`Durability::Full`] syncs the
//! write-ahead log to the disk once per commit (one `fsync`), and a database server does the same
//! for its own log, so a process that stores each execution in a commit of its own can never store
//! more executions per second than the disk can sync, however many executions run at once: the
//! manager calls [`store`](SagaExecutionRepository::store) once per state change, from every
//! execution independently.
//!
//! [`BatchingRepository`] turns those independent stores into shared commits. Each `store` hands its
//! record to a writer task and waits; the writer takes every record queued so far (up to a limit)
//! and stores them with one [`store_batch`](SagaExecutionRepository::store_batch) call, which the
//! durable repositories commit in one transaction. While one batch commits, the next one
//! accumulates, so there is no timer and no artificial delay: a lone store is written at once, and
//! under load many concurrent executions share one sync.
//!
//! The contract does not change: a `store` returns only after the commit that holds its record
//! returned, with the result for its own record (a conflict on one record leaves the others of the
//! batch stored).
//!
//! [`Durability::Full`]: super::Durability::Full

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::SagaExecutionRepository;
use crate::error::RepositoryError;
use crate::execution::{ExecutionRecord, SagaStatus};

/// The default most records a writer stores in one commit.
const DEFAULT_MAX_BATCH: usize = 64;

/// One queued store: the record and where its result goes.
struct Job {
    record: ExecutionRecord,
    answer: oneshot::Sender<Result<u64, RepositoryError>>,
}

/// The queue the writers take their batches from, shared by all of them.
type Queue = Arc<Mutex<mpsc::UnboundedReceiver<Job>>>;

/// Wraps any repository so that concurrent [`store`](SagaExecutionRepository::store)s share
/// commits (group commit): see the [module documentation](self) for why.
///
/// Stores go through writer tasks that call the inner repository's
/// [`store_batch`](SagaExecutionRepository::store_batch); every other method is passed straight to
/// the inner repository. Clones share the writers; the writers end once the last clone is dropped
/// (after answering the stores already queued), releasing the inner repository.
///
/// It needs a [Tokio](tokio) runtime: the writers are spawned on the runtime current when it is
/// built, and stores fail with [`RepositoryError::Storage`] once that runtime has shut down.
///
/// ```no_run
/// # async fn example() -> Result<(), saga_runtime::error::RepositoryError> {
/// use std::sync::Arc;
/// use saga_runtime::repository::{BatchingRepository, SqliteRepository};
///
/// let sqlite = SqliteRepository::open("sagas.db").await?;
/// let repository = BatchingRepository::builder(Arc::new(sqlite)).max_batch(128).build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BatchingRepository {
    inner: Arc<dyn SagaExecutionRepository>,
    queue: mpsc::UnboundedSender<Job>,
    max_batch: usize,
    writers: usize,
}

/// Options for a [`BatchingRepository`]; made by [`BatchingRepository::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct BatchingRepositoryBuilder {
    inner: Arc<dyn SagaExecutionRepository>,
    max_batch: usize,
    writers: usize,
}

impl fmt::Debug for BatchingRepositoryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchingRepositoryBuilder")
            .field("max_batch", &self.max_batch)
            .field("writers", &self.writers)
            .finish_non_exhaustive()
    }
}

impl BatchingRepositoryBuilder {
    /// The most records stored in one commit (default 64, at least 1).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// The number of writer tasks, each committing its own batch (default 1, at least 1). One
    /// suits SQLite, which runs one write at a time; a database server that commits transactions in
    /// parallel (PostgreSQL) can take several.
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }

    /// Spawns the writers and returns the repository.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    pub fn build(self) -> BatchingRepository {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queue: Queue = Arc::new(Mutex::new(receiver));
        for _ in 0..self.writers {
            tokio::spawn(write(
                Arc::clone(&self.inner),
                Arc::clone(&queue),
                self.max_batch,
            ));
        }
        BatchingRepository {
            inner: self.inner,
            queue: sender,
            max_batch: self.max_batch,
            writers: self.writers,
        }
    }
}

impl BatchingRepository {
    /// Wraps `inner` with the default options (batches of up to 64 records, one writer).
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    pub fn new(inner: Arc<dyn SagaExecutionRepository>) -> Self {
        Self::builder(inner).build()
    }

    /// Starts configuring a batching repository over `inner`.
    pub fn builder(inner: Arc<dyn SagaExecutionRepository>) -> BatchingRepositoryBuilder {
        BatchingRepositoryBuilder {
            inner,
            max_batch: DEFAULT_MAX_BATCH,
            writers: 1,
        }
    }

    /// The wrapped repository.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn inner(&self) -> &Arc<dyn SagaExecutionRepository> {
        &self.inner
    }

    /// The most records stored in one commit.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The number of writer tasks.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn writers(&self) -> usize {
        self.writers
    }
}

impl fmt::Debug for BatchingRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchingRepository")
            .field("max_batch", &self.max_batch)
            .field("writers", &self.writers)
            .finish_non_exhaustive()
    }
}

/// A writer: takes what is queued (at least one record, at most `max_batch`), stores it with one
/// `store_batch`, answers each caller, and again, until every handle is dropped and the queue is
/// empty.
async fn write(inner: Arc<dyn SagaExecutionRepository>, queue: Queue, max_batch: usize) {
    let mut jobs = Vec::with_capacity(max_batch);
    loop {
        {
            // Held only while taking a batch: another writer gathers the next one meanwhile.
            let mut receiver = queue.lock().await;
            if receiver.recv_many(&mut jobs, max_batch).await == 0 {
                // Every sender is gone and nothing is queued.
                return;
            }
        }
        let records: Vec<&ExecutionRecord> = jobs.iter().map(|job| &job.record).collect();
        let stored = AssertUnwindSafe(inner.store_batch(&records))
            .catch_unwind()
            .await;
        drop(records);
        let count = jobs.len();
        let mut results = match stored {
            Ok(results) if results.len() == count => results.into_iter(),
            Ok(results) => {
                let message = format!(
                    "the repository answered {} results for a batch of {count} records",
                    results.len()
                );
                failures(count, &message).into_iter()
            }
            Err(_) => failures(count, "the repository panicked while storing a batch").into_iter(),
        };
        for job in jobs.drain(..) {
            let result = results.next().expect("one result per record");
            // A caller that stopped waiting does not need its answer; the record is stored anyway.
            let _ = job.answer.send(result);
        }
    }
}

/// `count` copies of a storage error saying `message`.
fn failures(count: usize, message: &str) -> Vec<Result<u64, RepositoryError>> {
    (0..count)
        .map(|_| Err(RepositoryError::Storage(message.to_owned().into())))
        .collect()
}

/// The error of a store whose writer is gone.
fn writer_gone() -> RepositoryError {
    RepositoryError::Storage(
        "the batching repository's writer has stopped (its Tokio runtime shut down?); \
         the record was not stored"
            .into(),
    )
}

#[async_trait]
impl SagaExecutionRepository for BatchingRepository {
    /// Queues a copy of `record` for the next batch and waits until the commit holding it returned.
    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        let (answer, result) = oneshot::channel();
        self.queue
            .send(Job {
                record: record.clone(),
                answer,
            })
            .map_err(|_| writer_gone())?;
        result.await.unwrap_or_else(|_| {
            Err(RepositoryError::Storage(
                "the batching repository's writer stopped before the commit holding the record \
                 returned; it may or may not be stored"
                    .into(),
            ))
        })
    }

    /// Passed to the inner repository as it is: the caller has already made a batch.
    async fn store_batch(&self, records: &[&ExecutionRecord]) -> Vec<Result<u64, RepositoryError>> {
        self.inner.store_batch(records).await
    }

    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
        self.inner.load(id).await
    }

    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
        self.inner.delete(id).await
    }

    async fn mark_published(&self, id: Uuid, version: u64) -> Result<bool, RepositoryError> {
        self.inner.mark_published(id, version).await
    }

    async fn list_recoverable(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, RepositoryError> {
        self.inner.list_recoverable(after, limit).await
    }

    async fn list_by_status(&self, status: SagaStatus) -> Result<Vec<Uuid>, RepositoryError> {
        self.inner.list_by_status(status).await
    }

    async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError> {
        self.inner.list_by_saga(saga).await
    }

    async fn delete_finished_before(&self, updated_before_ms: u64) -> Result<u64, RepositoryError> {
        self.inner.delete_finished_before(updated_before_ms).await
    }
}
