//! The batching repository: it passes the conformance suite over the in-memory and the SQLite
//! repository, lets concurrent stores share commits while answering each caller with the result for
//! its own record, keeps a conflict or a failed commit to the records it concerns, and stops its
//! writer when the last handle is dropped.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use saga_runtime::error::RepositoryError;
use saga_runtime::execution::ExecutionRecord;
use saga_runtime::repository::{
    BatchingRepository, InMemoryRepository, SagaExecutionRepository, SqliteRepository,
};
use saga_testkit::conformance::repository::{self as conformance, sample_record};
use saga_testkit::{ForwardingRepository, RepositoryOverride};
use saga_tests::eventually;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// An in-memory repository that records the size of every `store_batch` call, and can be made
/// slow, held at a gate, or told to fail or panic on one batch.
#[derive(Default)]
struct Counting {
    inner: InMemoryRepository,
    batches: Mutex<Vec<usize>>,
    /// How long each batch takes before it is stored.
    delay: Option<Duration>,
    /// When set, each batch waits for one permit before it is stored.
    gate: Option<Arc<Semaphore>>,
    /// The index (from 1) of the batch that fails as a whole, like a failed commit (0: none).
    fail_batch: AtomicUsize,
    /// The index (from 1) of the batch that panics (0: none).
    panic_batch: AtomicUsize,
    /// Batches that started, the gated ones included.
    started: AtomicUsize,
}

impl Counting {
    fn slow(delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..Self::default()
        }
    }

    fn gated(gate: &Arc<Semaphore>) -> Self {
        Self {
            gate: Some(Arc::clone(gate)),
            ..Self::default()
        }
    }

    fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().expect("not poisoned").clone()
    }
}

#[async_trait]
impl RepositoryOverride for Counting {
    fn inner(&self) -> &dyn SagaExecutionRepository {
        &self.inner
    }

    async fn store_batch(&self, records: &[&ExecutionRecord]) -> Vec<Result<u64, RepositoryError>> {
        let index = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        self.batches
            .lock()
            .expect("not poisoned")
            .push(records.len());
        if self.panic_batch.load(Ordering::SeqCst) == index {
            panic!("batch {index} panics");
        }
        if self.fail_batch.load(Ordering::SeqCst) == index {
            return records
                .iter()
                .map(|_| Err(RepositoryError::Storage("the commit failed".into())))
                .collect();
        }
        let mut results = Vec::new();
        for record in records {
            results.push(self.inner.store(record).await);
        }
        results
    }
}

/// A fresh SQLite file in the temporary directory, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("saga-batching-test-{}.db", Uuid::new_v4())))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Spawns a store of `record` through `repository`.
fn spawn_store(
    repository: &BatchingRepository,
    record: ExecutionRecord,
) -> tokio::task::JoinHandle<Result<u64, RepositoryError>> {
    let repository = repository.clone();
    tokio::spawn(async move { repository.store(&record).await })
}

/// A pending store.
type Store<'a> = Pin<Box<dyn Future<Output = Result<u64, RepositoryError>> + Send + 'a>>;

/// Starts a store of each of `records` and polls each once, so that all of them are queued (the
/// writer is held at the gate) when this returns; they are awaited later.
async fn queued<'a>(
    repository: &'a BatchingRepository,
    records: &'a [ExecutionRecord],
) -> Vec<Store<'a>> {
    let mut stores: Vec<Store<'a>> = records
        .iter()
        .map(|record| repository.store(record))
        .collect();
    for store in &mut stores {
        std::future::poll_fn(|cx| {
            assert!(store.as_mut().poll(cx).is_pending(), "the writer is held");
            Poll::Ready(())
        })
        .await;
    }
    stores
}

/// Waits until `counting` has started `batches` batches.
async fn started(counting: &Counting, batches: usize) {
    eventually(|| counting.started.load(Ordering::SeqCst) >= batches).await;
}

#[tokio::test]
async fn conforms_over_the_in_memory_repository() {
    let repository = BatchingRepository::new(Arc::new(InMemoryRepository::new()));
    conformance::check(&repository).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_over_the_sqlite_repository() {
    let db = TempDb::new();
    let sqlite = SqliteRepository::open(&db.0).await.expect("opens");
    let repository = BatchingRepository::builder(Arc::new(sqlite.clone()))
        .max_batch(8)
        .build();
    conformance::check(&repository).await;
    sqlite.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stores_share_commits_and_each_caller_gets_its_own_version() {
    let counting = ForwardingRepository::shared(Counting::slow(Duration::from_millis(5)));
    // Each record is already stored 0 to 4 times, so each caller expects a different version.
    let mut records = Vec::new();
    for i in 0..200 {
        let mut record = sample_record(Uuid::new_v4());
        for _ in 0..i % 5 {
            record.version = counting.inner.store(&record).await.expect("stored");
        }
        records.push(record);
    }
    let repository = BatchingRepository::new(Arc::clone(&counting) as _);
    let tasks: Vec<_> = records
        .iter()
        .map(|record| spawn_store(&repository, record.clone()))
        .collect();
    for (record, task) in records.iter().zip(tasks) {
        let version = task.await.expect("the task ends").expect("stored");
        assert_eq!(version, record.version + 1, "the result for its own record");
        assert_eq!(
            counting
                .inner
                .load(record.id)
                .await
                .expect("stored")
                .version,
            version
        );
    }

    let sizes = counting.batch_sizes();
    assert_eq!(sizes.iter().sum::<usize>(), 200, "every store in one batch");
    assert!(
        sizes.len() <= 20,
        "200 concurrent stores took {} commits: {sizes:?}",
        sizes.len()
    );
    assert!(sizes.iter().all(|size| *size <= 64), "at most max_batch");
}

#[tokio::test]
async fn a_lone_store_is_written_at_once() {
    let counting = ForwardingRepository::shared(Counting::default());
    let repository = BatchingRepository::new(Arc::clone(&counting) as _);
    let record = sample_record(Uuid::new_v4());
    let stored = tokio::time::timeout(Duration::from_secs(1), repository.store(&record)).await;
    assert_eq!(stored.expect("no waiting for company").expect("stored"), 1);
    assert_eq!(counting.batch_sizes(), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_fails_only_its_own_record_of_the_batch() {
    let gate = Arc::new(Semaphore::new(0));
    let counting = ForwardingRepository::shared(Counting::gated(&gate));
    let repository = BatchingRepository::new(Arc::clone(&counting) as _);
    let taken = sample_record(Uuid::new_v4());
    counting.inner.store(&taken).await.expect("stored");

    // The first batch holds the writer at the gate while the next three queue up.
    let first = spawn_store(&repository, sample_record(Uuid::new_v4()));
    started(&counting, 1).await;
    // Stored once already, so that its result differs from the third record's.
    let mut before = sample_record(Uuid::new_v4());
    before.version = counting.inner.store(&before).await.expect("stored");
    let after = sample_record(Uuid::new_v4());
    let records = [before.clone(), taken.clone(), after.clone()];
    let mut stores = queued(&repository, &records).await.into_iter();
    gate.add_permits(2);

    assert_eq!(first.await.expect("ends").expect("stored"), 1);
    let mut next = || stores.next().expect("three stores");
    assert_eq!(next().await.expect("stored"), 2);
    match next().await {
        Err(RepositoryError::Conflict {
            id,
            expected,
            found,
        }) => assert_eq!((id, expected, found), (taken.id, 0, 1)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(next().await.expect("stored"), 1);
    assert_eq!(counting.batch_sizes(), [1, 3], "the three shared one batch");
    assert_eq!(
        counting
            .inner
            .load(before.id)
            .await
            .expect("stored")
            .version,
        2
    );
    assert_eq!(
        counting.inner.load(after.id).await.expect("stored").version,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_reaches_each_of_its_callers_and_the_next_batch_works() {
    let gate = Arc::new(Semaphore::new(0));
    let counting = ForwardingRepository::shared(Counting::gated(&gate));
    counting.fail_batch.store(2, Ordering::SeqCst);
    let repository = BatchingRepository::new(Arc::clone(&counting) as _);

    let first = spawn_store(&repository, sample_record(Uuid::new_v4()));
    started(&counting, 1).await;
    let doomed: Vec<_> = (0..3).map(|_| sample_record(Uuid::new_v4())).collect();
    let stores = queued(&repository, &doomed).await;
    gate.add_permits(3);

    assert_eq!(first.await.expect("ends").expect("stored"), 1);
    for (record, store) in doomed.iter().zip(stores) {
        match store.await {
            Err(RepositoryError::Storage(error)) => {
                assert!(error.to_string().contains("commit failed"), "{error}");
            }
            other => panic!("expected the batch's storage error, got {other:?}"),
        }
        assert!(matches!(
            counting.inner.load(record.id).await,
            Err(RepositoryError::NotFound { .. })
        ));
    }
    assert_eq!(counting.batch_sizes(), [1, 3]);

    let next = sample_record(Uuid::new_v4());
    assert_eq!(repository.store(&next).await.expect("stored"), 1);
    assert_eq!(counting.batch_sizes(), [1, 3, 1]);
}

#[tokio::test]
async fn a_panicking_batch_is_an_error_for_its_callers_and_the_writer_goes_on() {
    let counting = ForwardingRepository::shared(Counting::default());
    counting.panic_batch.store(1, Ordering::SeqCst);
    let repository = BatchingRepository::new(Arc::clone(&counting) as _);

    let record = sample_record(Uuid::new_v4());
    match repository.store(&record).await {
        Err(RepositoryError::Storage(error)) => {
            assert!(error.to_string().contains("panicked"), "{error}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert_eq!(repository.store(&record).await.expect("stored"), 1);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_writer() {
    let counting = ForwardingRepository::shared(Counting::default());
    let repository = BatchingRepository::new(Arc::clone(&counting) as _);
    let clone = repository.clone();
    repository
        .store(&sample_record(Uuid::new_v4()))
        .await
        .expect("stored");
    assert!(Arc::strong_count(&counting) > 1, "held by the repository");

    drop(repository);
    // The clone still has a writer.
    clone
        .store(&sample_record(Uuid::new_v4()))
        .await
        .expect("stored");

    drop(clone);
    eventually(|| Arc::strong_count(&counting) == 1).await;
}

#[test]
fn a_store_without_its_writer_fails_with_a_storage_error() {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let repository =
        first.block_on(async { BatchingRepository::new(Arc::new(InMemoryRepository::new())) });
    // The writer lived on the first runtime.
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stored = second.block_on(repository.store(&sample_record(Uuid::new_v4())));
    match stored {
        Err(RepositoryError::Storage(error)) => {
            assert!(error.to_string().contains("writer"), "{error}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
}
