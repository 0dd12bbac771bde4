//! Durable storage throughput, printed beside the raw commit rate of the database it stands on.
//!
//! For each database setting, in the same run:
//! - raw: single-row upsert commits (`INSERT .. ON CONFLICT (id) DO UPDATE` of a row the size of a
//!   stored execution, one statement per autocommit transaction) with sqlx directly, on the same
//!   file and settings;
//! - durable executions of a three-local-step saga through `SagaManager` (autocommit, in-process
//!   broker), 1 in flight and 64 in flight, storing directly in the repository and through
//!   `BatchingRepository`;
//! - the store operations per execution, the store operations/s the engine achieved, the commits/s
//!   that took, and store operations/s ÷ raw commits/s (the target is at least 0.8 per store
//!   operation when every store is a commit of its own; group commit can go above 1).
//!
//! Settings: SQLite `synchronous = FULL` and `NORMAL` (WAL, a temporary file, 1 connection for
//! the raw rate). With the `postgres` feature, also PostgreSQL at `SAGA_TEST_POSTGRES_URL` (raw
//! rate on 1 and 8 connections; skipped with a note when the variable is unset).
//!
//! Knobs: `SAGA_BENCH_QUICK=1` (short rows), `SAGA_BENCH_SECONDS=<f64>` (seconds per row).
//!
//! Run with `cargo bench -p saga-runtime --bench storage`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use saga_runtime::error::RepositoryError;
use saga_runtime::execution::{ExecutionEnv, ExecutionRecord, Outbox};
use saga_runtime::prelude::*;
use saga_runtime::repository::{
    BatchingRepository, Durability, SagaExecutionRepository, SqliteRepository,
};
use saga_runtime::wiring::*;
use saga_testkit::conformance::repository::sample_record;
use saga_testkit::{ForwardingRepository, RepositoryOverride, ScriptedParticipant};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Order {
    id: u64,
    amount: u64,
    validated: bool,
    reserved: bool,
    confirmed: bool,
}

async fn validate(order: &mut Order) -> Result<(), StepError> {
    order.validated = order.amount > 0;
    Ok(())
}

async fn reserve(order: &mut Order) -> Result<(), StepError> {
    order.reserved = true;
    Ok(())
}

async fn confirm(order: &mut Order) -> Result<(), StepError> {
    order.confirmed = true;
    Ok(())
}

fn local_saga() -> Arc<SagaDefinition<Order>> {
    Arc::new(
        Saga::new("bench-storage")
            .local_step("validate")
            .on_execute(validate)
            .local_step("reserve")
            .on_execute(reserve)
            .local_step("confirm")
            .on_execute(confirm)
            .commit()
            .expect("valid saga"),
    )
}

fn order(id: u64) -> Order {
    Order {
        id,
        amount: 100 + id % 7,
        ..Order::default()
    }
}

/// The JSON of a finished execution of the bench saga: the raw rows are this size.
async fn stored_execution_json() -> String {
    let mut execution = SagaExecution::new(local_saga(), order(1));
    execution
        .execute(None, &ExecutionEnv::new("order"), &mut Outbox::new())
        .await
        .expect("runs");
    execution.to_record().expect("encodes").to_json()
}

/// Counts what passes through it to the repository it wraps.
struct Counting {
    inner: Arc<dyn SagaExecutionRepository>,
    /// `store` calls.
    stores: AtomicU64,
    /// `store_batch` calls.
    batches: AtomicU64,
}

impl Counting {
    fn new(inner: Arc<dyn SagaExecutionRepository>) -> Arc<ForwardingRepository<Self>> {
        ForwardingRepository::shared(Self {
            inner,
            stores: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        })
    }

    fn reset(&self) {
        self.stores.store(0, Ordering::Relaxed);
        self.batches.store(0, Ordering::Relaxed);
    }
}

#[async_trait]
impl RepositoryOverride for Counting {
    fn inner(&self) -> &dyn SagaExecutionRepository {
        &*self.inner
    }

    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        self.stores.fetch_add(1, Ordering::Relaxed);
        self.inner.store(record).await
    }

    async fn store_batch(&self, records: &[&ExecutionRecord]) -> Vec<Result<u64, RepositoryError>> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.inner.store_batch(records).await
    }
}

/// One line of the table.
struct Row {
    setting: String,
    path: &'static str,
    in_flight: usize,
    /// Executions per second (none for a raw row).
    executions: Option<f64>,
    /// Store operations per execution (none for a raw row).
    stores_per_execution: Option<f64>,
    /// Store operations per second (for a raw row: its commits).
    store_ops: f64,
    /// Commits per second.
    commits: f64,
    /// The raw single-row commit rate of the same database and settings, on 1 connection.
    raw: f64,
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<16} {:<24} {:>5} {:>10} {:>7} {:>11} {:>10} {:>10} {:>8}",
        "setting",
        "path",
        "in fl",
        "exec/s",
        "st/exec",
        "store op/s",
        "commit/s",
        "raw c/s",
        "op/raw"
    );
    let dash = || "-".to_owned();
    for row in rows {
        println!(
            "{:<16} {:<24} {:>5} {:>10} {:>7} {:>11.0} {:>10.0} {:>10.0} {:>8}",
            row.setting,
            row.path,
            row.in_flight,
            row.executions.map_or_else(dash, |e| format!("{e:.0}")),
            row.stores_per_execution
                .map_or_else(dash, |s| format!("{s:.2}")),
            row.store_ops,
            row.commits,
            row.raw,
            if row.path != "raw upsert" {
                format!("{:.2}", row.store_ops / row.raw)
            } else {
                dash()
            },
        );
    }
}

/// How long each row runs (SAGA_BENCH_SECONDS, or 2 s; SAGA_BENCH_QUICK=1: 0.5 s).
fn row_duration() -> Duration {
    if let Some(seconds) = std::env::var("SAGA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        return Duration::from_secs_f64(seconds);
    }
    if std::env::var_os("SAGA_BENCH_QUICK").is_some() {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    }
}

/// Runs `run(worker, i)` in `workers` loops (`i` counting each worker's calls) for a short warm-up,
/// calls `reset`, then again for `duration`; returns the calls made after the reset and the time
/// they took.
async fn measure<F, Fut>(
    workers: usize,
    duration: Duration,
    reset: impl FnOnce(),
    run: F,
) -> (u64, Duration)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let run = Arc::new(run);
    let warm_up = (duration / 10).min(Duration::from_millis(200));
    let _ = run_loops(workers, warm_up, Arc::clone(&run), 0).await;
    reset();
    run_loops(workers, duration, run, 1 << 32).await
}

async fn run_loops<F, Fut>(
    workers: usize,
    duration: Duration,
    run: Arc<F>,
    first: u64,
) -> (u64, Duration)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let run = Arc::clone(&run);
            tokio::spawn(async move {
                let mut i = first;
                while Instant::now() < deadline {
                    run(worker, i).await;
                    i += 1;
                }
                i - first
            })
        })
        .collect();
    let mut count = 0;
    for task in tasks {
        count += task.await.expect("bench task");
    }
    (count, start.elapsed())
}

/// A temporary SQLite file, removed with its WAL files on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("saga-bench-{name}-{}.db", Uuid::new_v4())))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The raw upsert, the same text for SQLite and PostgreSQL.
const RAW_UPSERT: &str = "INSERT INTO saga_bench_raw (id, body, version) VALUES ($1, $2, 1) \
     ON CONFLICT (id) DO UPDATE SET body = excluded.body, version = saga_bench_raw.version + 1";

/// The raw commit rate of SQLite on `file` with `durability`, 1 connection: every other upsert
/// inserts a new row, the next one updates it (as an execution is inserted, then updated).
async fn sqlite_raw(file: &Path, durability: Durability, body: &str, duration: Duration) -> f64 {
    let synchronous = match durability {
        Durability::Full => SqliteSynchronous::Full,
        Durability::Normal => SqliteSynchronous::Normal,
        other => panic!("no raw setting for {other:?}"),
    };
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("the file opens");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS saga_bench_raw \
         (id TEXT PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("creates the table");
    let (pool_, body) = (pool.clone(), Arc::new(body.to_owned()));
    let (count, elapsed) = measure(
        1,
        duration,
        || {},
        move |_, i| {
            let (pool, body) = (pool_.clone(), Arc::clone(&body));
            async move {
                sqlx::query(RAW_UPSERT)
                    .bind(format!("row-{}", i / 2))
                    .bind(body.as_str())
                    .execute(&pool)
                    .await
                    .expect("upserts");
            }
        },
    )
    .await;
    sqlx::query("DROP TABLE saga_bench_raw")
        .execute(&pool)
        .await
        .expect("drops the table");
    pool.close().await;
    count as f64 / elapsed.as_secs_f64()
}

/// Durable executions through the manager on `repository`: 1 and 64 in flight, storing directly
/// and through a `BatchingRepository` with `writers` writers. `raw` is the database's raw
/// single-row commit rate.
async fn engine_rows(
    setting: &str,
    repository: Arc<dyn SagaExecutionRepository>,
    writers: usize,
    in_flights: &[usize],
    raw: impl Fn(usize) -> f64,
    duration: Duration,
) -> Vec<Row> {
    let mut rows = Vec::new();
    // Without the two-phase commit (`autocommit(false)`): the claim and the end, two stores.
    {
        let counting = Counting::new(Arc::clone(&repository));
        let (executions, elapsed) = run_executions(&counting, &counting, 1, false, duration).await;
        let seconds = elapsed.as_secs_f64();
        let store_ops = counting.stores.load(Ordering::Relaxed) as f64;
        rows.push(Row {
            setting: setting.to_owned(),
            path: "engine, direct, no 2PC",
            in_flight: 1,
            executions: Some(executions as f64 / seconds),
            stores_per_execution: Some(store_ops / executions as f64),
            store_ops: store_ops / seconds,
            commits: store_ops / seconds,
            raw: raw(1),
        });
    }
    for batched in [false, true] {
        // The outer counter sees the manager's stores; the inner one sees the commits.
        let commits = Counting::new(Arc::clone(&repository));
        let stores = if batched {
            let batching = BatchingRepository::builder(Arc::clone(&commits) as _)
                .writers(writers)
                .build();
            Counting::new(Arc::new(batching))
        } else {
            Arc::clone(&commits)
        };
        for &in_flight in in_flights {
            let (executions, elapsed) =
                run_executions(&stores, &commits, in_flight, true, duration).await;
            let seconds = elapsed.as_secs_f64();
            let store_ops = stores.stores.load(Ordering::Relaxed) as f64;
            let commit_count = if batched {
                commits.batches.load(Ordering::Relaxed)
            } else {
                commits.stores.load(Ordering::Relaxed)
            } as f64;
            rows.push(Row {
                setting: setting.to_owned(),
                path: if batched {
                    "engine, batching"
                } else {
                    "engine, direct"
                },
                in_flight,
                executions: Some(executions as f64 / seconds),
                stores_per_execution: Some(store_ops / executions as f64),
                store_ops: store_ops / seconds,
                commits: commit_count / seconds,
                raw: raw(in_flight),
            });
        }
    }
    rows
}

/// Runs the saga through a manager storing in `stores`, `in_flight` at a time, for `duration`,
/// with or without the two-phase commit.
async fn run_executions(
    stores: &Arc<ForwardingRepository<Counting>>,
    commits: &Arc<ForwardingRepository<Counting>>,
    in_flight: usize,
    two_phase: bool,
    duration: Duration,
) -> (u64, Duration) {
    let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new());
    // Answers the two-phase commit of service `order` itself.
    let _participant = ScriptedParticipant::builder("order", Arc::clone(&broker))
        .spawn()
        .await
        .expect("participant");
    let manager = SagaManager::builder("order")
        .broker(broker)
        .repository(Arc::clone(stores))
        .build()
        .await
        .expect("manager");
    let saga = local_saga();
    let (stores, commits) = (Arc::clone(stores), Arc::clone(commits));
    measure(
        in_flight,
        duration,
        move || {
            stores.reset();
            commits.reset();
        },
        move |_, i| {
            let (manager, saga) = (manager.clone(), Arc::clone(&saga));
            async move {
                let outcome = manager
                    .run(
                        saga,
                        order(i),
                        RunOptions::new()
                            .autocommit(two_phase)
                            .return_execution(false),
                    )
                    .await
                    .expect("runs");
                let _ = outcome.id();
            }
        },
    )
    .await
}

/// The repository's own store rate, without the engine, in the engine's pattern: each of
/// `in_flight` workers stores a new execution (the claim: an insert, held, `created`), then updates
/// it to its end (`finished`, released, a later `updated_at_ms`). Between "raw upsert" and "engine":
/// what the schema, its indexes and the compare-and-set cost.
async fn repository_row(
    setting: &str,
    repository: Arc<dyn SagaExecutionRepository>,
    in_flight: usize,
    raw: f64,
    duration: Duration,
) -> Row {
    let (count, elapsed) = measure(
        in_flight,
        duration,
        || {},
        move |_, i| {
            let repository = Arc::clone(&repository);
            async move {
                let mut record = sample_record(Uuid::new_v4());
                record.status = SagaStatus::Created;
                record.pending.clear();
                record.version = repository.store(&record).await.expect("stores");
                record.status = SagaStatus::Finished;
                record.paused_step = None;
                record.deadline_ms = None;
                record.owner = None;
                record.lease_until_ms = None;
                record.updated_at_ms += 1 + i % 1000;
                repository.store(&record).await.expect("stores");
            }
        },
    )
    .await;
    let rate = 2.0 * count as f64 / elapsed.as_secs_f64();
    Row {
        setting: setting.to_owned(),
        path: "repository store",
        in_flight,
        executions: None,
        stores_per_execution: None,
        store_ops: rate,
        commits: rate,
        raw,
    }
}

async fn sqlite_rows(durability: Durability, body: &str, duration: Duration) -> Vec<Row> {
    let name = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
        other => panic!("no name for {other:?}"),
    };
    let file = TempFile::new(&name.to_lowercase());
    let raw = sqlite_raw(file.path(), durability, body, duration).await;
    let setting = format!("sqlite {name}");
    let mut rows = vec![Row {
        setting: setting.clone(),
        path: "raw upsert",
        in_flight: 1,
        executions: None,
        stores_per_execution: None,
        store_ops: raw,
        commits: raw,
        raw,
    }];
    let repository = SqliteRepository::builder(file.path())
        .durability(durability)
        .open()
        .await
        .expect("opens");
    rows.push(repository_row(&setting, Arc::new(repository.clone()), 1, raw, duration).await);
    rows.extend(
        engine_rows(
            &setting,
            Arc::new(repository.clone()),
            1,
            &[1, 64],
            |_| raw,
            duration,
        )
        .await,
    );
    repository.close().await;
    rows
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let duration = row_duration();
    let body = stored_execution_json().await;
    println!(
        "saga-runtime storage bench: {} cores, {:?} per row, raw rows of {} bytes (a stored \
         execution's JSON), SQLite files in {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        duration,
        body.len(),
        std::env::temp_dir().display(),
    );
    let mut rows = Vec::new();
    for durability in [Durability::Full, Durability::Normal] {
        rows.extend(sqlite_rows(durability, &body, duration).await);
    }
    #[cfg(feature = "postgres")]
    rows.extend(postgres::rows(&body, duration).await);
    #[cfg(not(feature = "postgres"))]
    println!("PostgreSQL: not built (the `postgres` feature is off)");
    println!();
    print_table(&rows);
}

#[cfg(feature = "postgres")]
mod postgres {
    //! PostgreSQL at `SAGA_TEST_POSTGRES_URL`.

    use super::*;
    use saga_runtime::repository::PostgresRepository;
    use sqlx::postgres::PgPoolOptions;

    /// The raw rows (1 and 8 connections) and, once wired, the engine rows.
    pub(super) async fn rows(body: &str, duration: Duration) -> Vec<Row> {
        let Ok(url) = std::env::var("SAGA_TEST_POSTGRES_URL") else {
            println!("PostgreSQL: skipped (set SAGA_TEST_POSTGRES_URL to include it)");
            return Vec::new();
        };
        let single = raw(&url, 1, body, duration).await;
        let parallel = raw(&url, 8, body, duration).await;
        let raw_row = |in_flight, rate| Row {
            setting: "postgres".to_owned(),
            path: "raw upsert",
            in_flight,
            executions: None,
            stores_per_execution: None,
            store_ops: rate,
            commits: rate,
            raw: single,
        };
        let mut rows = vec![raw_row(1, single), raw_row(8, parallel)];
        let schema = format!("saga_bench_{}", Uuid::new_v4().simple());
        let schema_ = schema.clone();
        rows.extend(
            postgres_engine_rows(&url, single, parallel, duration, |url| async move {
                let repository = PostgresRepository::builder(&url)
                    .schema(&schema_)
                    .max_connections(8)
                    .connect()
                    .await
                    .expect("connects to PostgreSQL");
                Arc::new(repository) as Arc<dyn SagaExecutionRepository>
            })
            .await,
        );
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("connects to PostgreSQL");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await
            .expect("drops the bench schema");
        rows
    }

    /// The raw single-row upsert commit rate on `connections` connections, each upserting its own
    /// rows, on a table made and dropped here.
    async fn raw(url: &str, connections: usize, body: &str, duration: Duration) -> f64 {
        let pool = PgPoolOptions::new()
            .max_connections(connections as u32)
            .connect(url)
            .await
            .expect("connects to PostgreSQL");
        sqlx::query("DROP TABLE IF EXISTS saga_bench_raw")
            .execute(&pool)
            .await
            .expect("drops the old table");
        sqlx::query(
            "CREATE TABLE saga_bench_raw \
             (id TEXT PRIMARY KEY, body TEXT NOT NULL, version BIGINT NOT NULL)",
        )
        .execute(&pool)
        .await
        .expect("creates the table");
        let (pool_, body) = (pool.clone(), Arc::new(body.to_owned()));
        let (count, elapsed) = measure(
            connections,
            duration,
            || {},
            move |worker, i| {
                let (pool, body) = (pool_.clone(), Arc::clone(&body));
                async move {
                    sqlx::query(RAW_UPSERT)
                        .bind(format!("row-{worker}-{}", i / 2))
                        .bind(body.as_str())
                        .execute(&pool)
                        .await
                        .expect("upserts");
                }
            },
        )
        .await;
        sqlx::query("DROP TABLE saga_bench_raw")
            .execute(&pool)
            .await
            .expect("drops the table");
        pool.close().await;
        count as f64 / elapsed.as_secs_f64()
    }

    /// The engine rows on PostgreSQL: the repository `open(url)` returns, directly and through a
    /// `BatchingRepository` with 8 writers (the server commits in parallel), 1, 8 and 64 sagas in
    /// flight, beside the raw rate of one connection (1 in flight) or eight (more).
    pub(super) async fn postgres_engine_rows<F, Fut>(
        url: &str,
        single: f64,
        parallel: f64,
        duration: Duration,
        open: F,
    ) -> Vec<Row>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Arc<dyn SagaExecutionRepository>>,
    {
        let repository = open(url.to_owned()).await;
        let mut rows = vec![
            repository_row("postgres", Arc::clone(&repository), 1, single, duration).await,
            repository_row("postgres", Arc::clone(&repository), 8, parallel, duration).await,
        ];
        let raw = |in_flight: usize| if in_flight == 1 { single } else { parallel };
        rows.extend(engine_rows("postgres", repository, 8, &[1, 8, 64], raw, duration).await);
        rows
    }
}
