//! The child process of the crash matrix (`tests/integration/crash_matrix.rs`).
//!
//! Usage: `crash-child <target> <count> [local|2pc]`, the target being a SQLite file or a
//! PostgreSQL URL (`postgres://...`); with PostgreSQL, `SAGA_CRASH_SCHEMA` names the schema that
//! holds every table (created if missing; without it, the connection's own `search_path`).
//!
//! It runs `count` planned sagas, one at a time, on the target, and records every effect of their
//! handlers in its own tables of the same file or schema (written with plain sqlx, each effect
//! committed by itself, like a local side effect that knows nothing of the saga's storage):
//!
//! - `planned(id, n, fails)`: the sagas to run, written once by the first start. Execution ids are
//!   chosen by the manager, so a planned saga is known by its index `n`, which its context carries.
//! - `effects(seq, saga, step, kind)`: one row per handler run, `kind` being `do` or `undo`, `saga`
//!   the planned id.
//!
//! Each saga has the local steps `a`, `b`, `c`, each with a compensation; every third saga
//! (`n % 3 == 2`) fails in `c` (before recording anything), so `b` then `a` are compensated.
//!
//! Mode `local` (the default) runs without autocommit (`RunOptions::autocommit(false)`): local steps
//! need no two-phase commit, so the commit crash points are never reached. Mode `2pc` runs with
//! autocommit and an in-process participant answering the service's own transaction topics, so a
//! finished saga is committed (crash points `before-commit` and `after-commit`) and a failed one
//! rejected. No saga of this shape emits messages, so `after-publish` is reached in neither mode.
//!
//! Every start builds the manager with a fixed instance name and start-up recovery, so that it takes
//! over at once what a previous run left (the report goes to stderr through the log), then runs the
//! planned sagas that have no execution yet. It exits 0 once every planned saga has exactly one
//! execution and every execution is terminal and at rest; with the feature `fault-injection` and
//! `SAGA_CRASH_AT=<point>:<n>` set, it aborts at that crash point instead.
//!
//! The backend-specific parts (opening the repository and the bookkeeping pool, the SQL of the
//! bookkeeping tables) live in [`Book`] and [`open`].

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use saga_runtime::broker::Broker;
use saga_runtime::prelude::*;
use saga_runtime::repository::{PostgresRepository, SqliteRepository};
use saga_runtime::wiring::*;
use saga_testkit::ScriptedParticipant;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// The service the sagas run in (and the only participant of their transactions).
const SERVICE: &str = "crash";
/// The instance name, the same on every start, so that start-up recovery takes over at once.
const INSTANCE: &str = "crash-child";
/// The saga's persisted name.
const SAGA: &str = "crash-matrix";
/// The variable that names the PostgreSQL schema of every table.
const SCHEMA_VARIABLE: &str = "SAGA_CRASH_SCHEMA";

/// The context: which planned saga this execution is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: i64,
    fails: bool,
}

/// The planned id of saga `n`, as written in `planned.id` and `effects.saga`.
fn planned_id(n: i64) -> String {
    format!("saga-{n}")
}

/// The bookkeeping tables, beside the repository's.
#[derive(Debug, Clone)]
enum Book {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Book {
    async fn create_tables(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(pool) => {
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                     saga TEXT NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL)",
                )
                .execute(pool)
                .await?;
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS planned (id TEXT PRIMARY KEY, n INTEGER NOT NULL, \
                     fails INTEGER NOT NULL)",
                )
                .execute(pool)
                .await?;
            }
            Self::Postgres(pool) => {
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS effects (seq BIGSERIAL PRIMARY KEY, \
                     saga TEXT NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL)",
                )
                .execute(pool)
                .await?;
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS planned (id TEXT PRIMARY KEY, n BIGINT NOT NULL, \
                     fails BOOLEAN NOT NULL)",
                )
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Plans `count` sagas unless a previous start did (in one transaction: all or nothing).
    async fn plan(&self, count: i64) -> Result<Vec<Job>, sqlx::Error> {
        match self {
            Self::Sqlite(pool) => {
                let mut transaction = pool.begin().await?;
                let planned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM planned")
                    .fetch_one(&mut *transaction)
                    .await?;
                if planned == 0 {
                    for n in 0..count {
                        sqlx::query("INSERT INTO planned (id, n, fails) VALUES (?1, ?2, ?3)")
                            .bind(planned_id(n))
                            .bind(n)
                            .bind(n % 3 == 2)
                            .execute(&mut *transaction)
                            .await?;
                    }
                }
                transaction.commit().await?;
                let rows: Vec<(i64, bool)> =
                    sqlx::query_as("SELECT n, fails FROM planned ORDER BY n")
                        .fetch_all(pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(n, fails)| Job { n, fails })
                    .collect())
            }
            Self::Postgres(pool) => {
                let mut transaction = pool.begin().await?;
                let planned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM planned")
                    .fetch_one(&mut *transaction)
                    .await?;
                if planned == 0 {
                    for n in 0..count {
                        sqlx::query("INSERT INTO planned (id, n, fails) VALUES ($1, $2, $3)")
                            .bind(planned_id(n))
                            .bind(n)
                            .bind(n % 3 == 2)
                            .execute(&mut *transaction)
                            .await?;
                    }
                }
                transaction.commit().await?;
                let rows: Vec<(i64, bool)> =
                    sqlx::query_as("SELECT n, fails FROM planned ORDER BY n")
                        .fetch_all(pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(n, fails)| Job { n, fails })
                    .collect())
            }
        }
    }

    /// Records one run of a handler (committed on its own).
    async fn effect(&self, n: i64, step: &str, kind: &str) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(pool) => {
                sqlx::query("INSERT INTO effects (saga, step, kind) VALUES (?1, ?2, ?3)")
                    .bind(planned_id(n))
                    .bind(step)
                    .bind(kind)
                    .execute(pool)
                    .await?;
            }
            Self::Postgres(pool) => {
                sqlx::query("INSERT INTO effects (saga, step, kind) VALUES ($1, $2, $3)")
                    .bind(planned_id(n))
                    .bind(step)
                    .bind(kind)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The book the handlers write to (set once, before the manager is built).
static BOOK: OnceLock<Book> = OnceLock::new();

async fn record(job: &Job, step: &str, kind: &str) -> Result<(), StepError> {
    let book = BOOK.get().ok_or_else(|| StepError::msg("no book"))?;
    book.effect(job.n, step, kind)
        .await
        .map_err(|error| StepError::msg(format!("recording `{kind} {step}` failed: {error}")))
}

async fn do_a(job: &mut Job) -> Result<(), StepError> {
    record(job, "a", "do").await
}
async fn undo_a(job: &mut Job) -> Result<(), StepError> {
    record(job, "a", "undo").await
}
async fn do_b(job: &mut Job) -> Result<(), StepError> {
    record(job, "b", "do").await
}
async fn undo_b(job: &mut Job) -> Result<(), StepError> {
    record(job, "b", "undo").await
}
async fn do_c(job: &mut Job) -> Result<(), StepError> {
    if job.fails {
        return Err(StepError::msg("step c fails as planned"));
    }
    record(job, "c", "do").await
}
async fn undo_c(job: &mut Job) -> Result<(), StepError> {
    record(job, "c", "undo").await
}

/// `a` -> `b` -> `c`, each local with a compensation.
fn definition() -> Result<Arc<SagaDefinition<Job>>, DefinitionError> {
    Ok(Arc::new(
        Saga::new(SAGA)
            .local_step("a")
            .on_execute(do_a)
            .on_failure(undo_a)
            .local_step("b")
            .on_execute(do_b)
            .on_failure(undo_b)
            .local_step("c")
            .on_execute(do_c)
            .on_failure(undo_c)
            .commit()?,
    ))
}

/// Opens the repository and the bookkeeping pool on `target`: a PostgreSQL URL (in the schema
/// named by `SAGA_CRASH_SCHEMA`, if set) or a SQLite file.
async fn open(target: &str) -> Result<(Arc<dyn SagaExecutionRepository>, Book), Failure> {
    if target.starts_with("postgres://") || target.starts_with("postgresql://") {
        let schema = std::env::var(SCHEMA_VARIABLE)
            .ok()
            .filter(|schema| !schema.is_empty());
        // The repository first: it creates the schema (checking its name) and its tables.
        let mut builder = PostgresRepository::builder(target).max_connections(2);
        if let Some(schema) = &schema {
            builder = builder.schema(schema);
        }
        let repository = builder.connect().await?;
        let mut options = PgConnectOptions::from_str(target)?;
        if let Some(schema) = &schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        return Ok((Arc::new(repository), Book::Postgres(pool)));
    }
    // The repository first: it creates the file and puts it in write-ahead-log mode.
    let repository = SqliteRepository::open(target).await?;
    let options = SqliteConnectOptions::new()
        .filename(target)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    Ok((Arc::new(repository), Book::Sqlite(pool)))
}

/// Why the child stopped early.
type Failure = Box<dyn std::error::Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Local,
    TwoPhase,
}

async fn run(target: &str, count: i64, mode: Mode) -> Result<(), Failure> {
    let (repository, book) = open(target).await?;
    book.create_tables().await?;
    let plan = book.plan(count).await?;
    BOOK.set(book).map_err(|_| "the book is set once")?;
    let saga = definition()?;

    let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new());
    // Answers the service's own reserve/commit/reject messages (mode `2pc`); started before the
    // manager, whose start-up recovery may commit again.
    let _participant = ScriptedParticipant::builder(SERVICE, Arc::clone(&broker))
        .spawn()
        .await?;
    let manager = SagaManager::builder(SERVICE)
        .instance(INSTANCE)
        .repository(Arc::clone(&repository))
        .broker(broker)
        .registry(Registry::empty().with_definition(Arc::clone(&saga))?)
        .commit_timeout(Duration::from_secs(5))
        .storage_retry(Duration::from_secs(5))
        .recover_on_start(true)
        .build()
        .await?;

    // The planned sagas that already have an execution (from a previous start).
    let mut existing = BTreeMap::<i64, usize>::new();
    for id in repository.list_by_saga(SAGA).await? {
        let record = repository.load(id).await?;
        *existing.entry(record.context::<Job>()?.n).or_default() += 1;
    }
    eprintln!(
        "crash-child: {} planned, {} already started",
        plan.len(),
        existing.len()
    );

    let options = RunOptions::new()
        .autocommit(mode == Mode::TwoPhase)
        .raise_on_error(false)
        .return_execution(false);
    for job in plan.iter().filter(|job| !existing.contains_key(&job.n)) {
        let n = job.n;
        let outcome = manager
            .run(Arc::clone(&saga), job.clone(), options.clone())
            .await?;
        let record = repository.load(outcome.id()).await?;
        eprintln!(
            "crash-child: saga {n} ran as {}: {}",
            outcome.id(),
            record.status
        );
    }

    // Nothing is left for recovery, and every planned saga ended once.
    let report = manager.recover().await;
    if !report.is_empty() {
        return Err(format!("a recovery sweep after the runs still found work: {report}").into());
    }
    let mut ended = BTreeMap::<i64, usize>::new();
    for id in repository.list_by_saga(SAGA).await? {
        let record = repository.load(id).await?;
        let n = record.context::<Job>()?.n;
        if !record.status.is_terminal() || record.owner.is_some() || !record.pending.is_empty() {
            return Err(format!(
                "saga {n} ({id}) is {} with owner {:?} and {} pending messages",
                record.status,
                record.owner,
                record.pending.len()
            )
            .into());
        }
        *ended.entry(n).or_default() += 1;
    }
    for job in &plan {
        match ended.get(&job.n) {
            Some(1) => {}
            other => {
                return Err(
                    format!("saga {} has {} executions", job.n, other.unwrap_or(&0)).into(),
                );
            }
        }
    }
    eprintln!("crash-child: every planned saga ended");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "saga_runtime::manager=info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let parsed = match args.as_slice() {
        [_, target, count] => count
            .parse::<i64>()
            .ok()
            .map(|count| (target, count, "local")),
        [_, target, count, mode] => count
            .parse::<i64>()
            .ok()
            .map(|count| (target, count, mode.as_str())),
        _ => None,
    };
    let (target, count, mode) = match parsed {
        Some((target, count, "local")) => (target, count, Mode::Local),
        Some((target, count, "2pc")) => (target, count, Mode::TwoPhase),
        _ => {
            eprintln!("usage: crash-child <sqlite-file|postgres-url> <count> [local|2pc]");
            return ExitCode::from(64);
        }
    };
    match run(target, count, mode).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crash-child: {error}");
            ExitCode::FAILURE
        }
    }
}
