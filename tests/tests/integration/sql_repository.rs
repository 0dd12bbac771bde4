//! The SQL repositories, over one table of cases: each case below is written once, generic over
//! a [`Database`], and run on both (module `sqlite`: a fresh file; module `postgres`: a fresh
//! schema on the server named by `SAGA_TEST_POSTGRES_URL`, skipped without one outside CI). They
//! pass the conformance suite, keep executions across reopening, report corrupt rows as `Corrupt`
//! without harming the others, let exactly one of several concurrent writers win, list and prune
//! executions, let a second manager resume a saga the first one paused, and let start-up recovery
//! skip the rows it cannot use. The cases of one database follow: the SQLite file's journal and
//! durability, the PostgreSQL schemas.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use saga_runtime::error::RepositoryError;
use saga_runtime::execution::ExecutionRecord;
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::repository::{
    Durability, PostgresRepository, SagaExecutionRepository, SqliteRepository,
};
use saga_runtime::wiring::*;
use saga_testkit::conformance::repository::{self as conformance, sample_record};
use saga_tests::{TestDatabase, reply_to};
use serde_json::json;
use serde_json::value::RawValue;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tokio::sync::Barrier;
use uuid::Uuid;

/// A fresh database for one case, with a plain sqlx pool beside the repositories to inspect or
/// damage rows.
trait Database: Sized {
    /// The repository on this database.
    type Repository: SagaExecutionRepository + Clone;

    /// Damages to the row of an execution that only this database's column types can hold:
    /// the column named, and the SQL assignment that breaks it.
    const OWN_DAMAGES: &'static [(&'static str, &'static str)];

    /// A fresh database, or `None` when the case is skipped (no server to test against).
    async fn create() -> Option<Self>;

    /// A new repository on the database (the first one creates the tables).
    async fn repository(&self) -> Self::Repository;

    /// Closes `repository`'s connections.
    async fn close(repository: &Self::Repository);

    /// Runs `UPDATE saga_executions SET {assignment}` on the row of execution `id`, beside the
    /// repositories; returns how many rows it changed.
    async fn damage(&self, id: Uuid, assignment: &str) -> u64;

    /// The rows of the query `select`, which reads three texts and an integer.
    async fn rows(&self, select: &str) -> Vec<(String, String, String, i64)>;

    /// Removes the database; call it at the end of the case.
    async fn finish(self);
}

/// A fresh SQLite file in the temporary directory, removed (with its WAL files) on drop.
struct SqliteFile(PathBuf);

impl SqliteFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("saga-sqlite-test-{}.db", Uuid::new_v4())))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// A plain sqlx pool on the file, beside the repository.
    async fn raw_pool(&self) -> SqlitePool {
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(self.path()))
            .await
            .expect("the file opens")
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Database for SqliteFile {
    type Repository = SqliteRepository;

    /// SQLite stores what it is given, whatever the column's declared type.
    const OWN_DAMAGES: &'static [(&'static str, &'static str)] = &[("version", "version = 'one'")];

    async fn create() -> Option<Self> {
        Some(Self::new())
    }

    async fn repository(&self) -> SqliteRepository {
        SqliteRepository::open(self.path()).await.expect("opens")
    }

    async fn close(repository: &SqliteRepository) {
        repository.close().await;
    }

    async fn damage(&self, id: Uuid, assignment: &str) -> u64 {
        let raw = self.raw_pool().await;
        let changed = sqlx::query(&format!(
            "UPDATE saga_executions SET {assignment} WHERE id = ?1"
        ))
        .bind(id.to_string())
        .execute(&raw)
        .await
        .expect("the row is damaged")
        .rows_affected();
        raw.close().await;
        changed
    }

    async fn rows(&self, select: &str) -> Vec<(String, String, String, i64)> {
        let raw = self.raw_pool().await;
        let rows = sqlx::query_as(select).fetch_all(&raw).await.expect("reads");
        raw.close().await;
        rows
    }

    async fn finish(self) {}
}

impl Database for TestDatabase {
    type Repository = PostgresRepository;

    const OWN_DAMAGES: &'static [(&'static str, &'static str)] = &[];

    async fn create() -> Option<Self> {
        TestDatabase::connect().await
    }

    async fn repository(&self) -> PostgresRepository {
        TestDatabase::repository(self).await
    }

    async fn close(repository: &PostgresRepository) {
        repository.close().await;
    }

    async fn damage(&self, id: Uuid, assignment: &str) -> u64 {
        sqlx::query(&format!(
            "UPDATE saga_executions SET {assignment} WHERE id = $1::uuid"
        ))
        .bind(id.to_string())
        .execute(self.pool())
        .await
        .expect("the row is damaged")
        .rows_affected()
    }

    async fn rows(&self, select: &str) -> Vec<(String, String, String, i64)> {
        sqlx::query_as(select)
            .fetch_all(self.pool())
            .await
            .expect("reads")
    }

    async fn finish(self) {
        self.drop().await;
    }
}

/// Runs each case on a SQLite file (module `sqlite`) and on a PostgreSQL schema (module
/// `postgres`), on a runtime of several threads (the concurrent writers need them).
macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case::<super::SqliteFile>().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case::<saga_tests::TestDatabase>().await;
                }
            )*
        }
    };
}

on_both_databases!(
    the_repository_conforms,
    executions_survive_reopening_the_repository,
    a_corrupt_row_loads_as_corrupt_naming_the_execution_and_the_column,
    of_eight_concurrent_writers_from_the_same_version_exactly_one_wins,
    executions_are_listed_by_status_and_saga_and_old_finished_ones_are_pruned,
    a_second_manager_on_the_same_database_resumes_a_saga_paused_on_disk,
    start_up_recovery_reports_corrupt_rows_recovers_the_others_and_does_not_loop,
);

async fn the_repository_conforms<D: Database>() {
    let Some(db) = D::create().await else {
        return;
    };
    let repository = db.repository().await;
    conformance::check(&repository).await;
    D::close(&repository).await;
    db.finish().await;
}

async fn executions_survive_reopening_the_repository<D: Database>() {
    let Some(db) = D::create().await else {
        return;
    };
    let mut record = sample_record(Uuid::new_v4());
    // Stored as text, the context comes back byte for byte: spacing, key order, number spelling.
    record.context =
        RawValue::from_string(r#"{ "b": 1.50,  "a": [2, 1e3], "c": "\u00e9" }"#.into())
            .expect("valid JSON");
    {
        let repository = db.repository().await;
        record.version = repository.store(&record).await.expect("stored");
        record.status = SagaStatus::Finished;
        record.paused_step = None;
        record.deadline_ms = None;
        record.user = None;
        record.version = repository.store(&record).await.expect("updated");
        D::close(&repository).await;
        assert!(
            matches!(
                repository.load(record.id).await,
                Err(RepositoryError::Storage(_))
            ),
            "a closed repository fails with Storage"
        );
    }
    // Opening again runs the migrations again: they are recorded and skipped.
    let reopened = db.repository().await;
    let loaded = reopened.load(record.id).await.expect("still stored");
    assert_eq!(loaded, record);
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.context.get(), record.context.get());

    D::close(&reopened).await;
    db.finish().await;
}

/// Damages every database's columns can hold: the column named, and the assignment that breaks it.
const DAMAGES: [(&str, &str); 13] = [
    ("steps", "steps = substr(steps, 1, length(steps) - 7)"),
    ("status", "status = 'exploded'"),
    ("transaction_state", "transaction_state = 'maybe'"),
    ("context", "context = '{\"amount\": 4'"),
    ("context", "context = 'not json at all'"),
    ("fingerprint", "fingerprint = 'not-hex'"),
    ("fingerprint", "fingerprint = '0123456789abcdef0'"),
    ("fingerprint", "fingerprint = '0123456789abcdeg'"),
    ("fingerprint", "fingerprint = '+123456789abcdef'"),
    ("version", "version = -1"),
    ("created_at_ms", "created_at_ms = -5"),
    ("headers", "headers = '[1, 2]'"),
    ("pending", "pending = '{}'"),
];

async fn a_corrupt_row_loads_as_corrupt_naming_the_execution_and_the_column<D: Database>() {
    let Some(db) = D::create().await else {
        return;
    };
    let repository = db.repository().await;
    let healthy = sample_record(Uuid::new_v4());
    repository.store(&healthy).await.expect("stored");

    for &(column, damage) in DAMAGES.iter().chain(D::OWN_DAMAGES) {
        let victim = sample_record(Uuid::new_v4());
        repository.store(&victim).await.expect("stored");
        assert_eq!(db.damage(victim.id, damage).await, 1, "{damage}");

        match repository.load(victim.id).await {
            Err(RepositoryError::Corrupt { id, reason }) => {
                assert_eq!(id, victim.id, "{damage}");
                assert!(
                    reason.contains(&format!("`{column}`")),
                    "the reason names column `{column}`: {reason}"
                );
            }
            other => panic!("{damage}: loads as Corrupt, got {other:?}"),
        }
        let loaded = repository
            .load(healthy.id)
            .await
            .expect("the other executions still load");
        assert_eq!(loaded, at_version(&healthy, 1));
        repository
            .delete(victim.id)
            .await
            .expect("a corrupt execution can be deleted");
        assert!(matches!(
            repository.load(victim.id).await,
            Err(RepositoryError::NotFound { .. })
        ));
    }

    D::close(&repository).await;
    db.finish().await;
}

/// A copy of `record` at `version`.
fn at_version(record: &ExecutionRecord, version: u64) -> ExecutionRecord {
    let mut record = record.clone();
    record.version = version;
    record
}

/// Eight tasks store `record` at once (all from its version): returns the results.
async fn race<R: SagaExecutionRepository + Clone>(
    repository: &R,
    record: &ExecutionRecord,
) -> Vec<Result<u64, RepositoryError>> {
    const WRITERS: usize = 8;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let repository = repository.clone();
        let barrier = Arc::clone(&barrier);
        let mut record = record.clone();
        record.owner = Some(format!("writer-{writer}"));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            repository.store(&record).await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("the writer does not panic"));
    }
    results
}

async fn of_eight_concurrent_writers_from_the_same_version_exactly_one_wins<D: Database>() {
    let Some(db) = D::create().await else {
        return;
    };
    let repository = db.repository().await;
    let record = sample_record(Uuid::new_v4());

    // Eight first stores (version 0) of one execution, then eight updates from version 1.
    for (from, round) in [(0, "insert"), (1, "update")] {
        let results = race(&repository, &at_version(&record, from)).await;
        let won: Vec<u64> = results
            .iter()
            .filter_map(|result| result.as_ref().ok().copied())
            .collect();
        assert_eq!(won, [from + 1], "{round}: exactly one writer wins");
        for result in &results {
            match result {
                Ok(_) => {}
                Err(RepositoryError::Conflict {
                    id,
                    expected,
                    found,
                }) => {
                    assert_eq!(*id, record.id, "{round}");
                    assert_eq!(*expected, from, "{round}");
                    assert_eq!(*found, from + 1, "{round}: the winner's version");
                }
                Err(other) => panic!("{round}: the losers get Conflict, got {other:?}"),
            }
        }
        let stored = repository.load(record.id).await.expect("stored");
        assert_eq!(stored.version, from + 1, "{round}");
        assert!(
            stored
                .owner
                .as_deref()
                .is_some_and(|owner| owner.starts_with("writer-")),
            "{round}: the winner's record is stored"
        );
    }

    D::close(&repository).await;
    db.finish().await;
}

async fn executions_are_listed_by_status_and_saga_and_old_finished_ones_are_pruned<D: Database>() {
    let Some(db) = D::create().await else {
        return;
    };
    let repository = db.repository().await;

    let record = |status: SagaStatus, saga: &str, created: u64, updated: u64| {
        let mut record = sample_record(Uuid::new_v4());
        record.status = status;
        record.saga = saga.to_owned();
        record.created_at_ms = created;
        record.updated_at_ms = updated;
        // At rest (nothing pending, no owner), so that retention may delete it once finished.
        record.pending.clear();
        record.owner = None;
        record.lease_until_ms = None;
        record
    };
    let old_finished = record(SagaStatus::Finished, "order", 1_000, 1_500);
    let new_finished = record(SagaStatus::Finished, "order", 2_000, 3_000);
    let old_errored = record(SagaStatus::Errored, "order", 900, 1_000);
    let paused = record(SagaStatus::Paused, "payment", 1_100, 1_200);
    // Stored out of order: the listings sort.
    for record in [&new_finished, &paused, &old_finished, &old_errored] {
        repository.store(record).await.expect("stored");
    }

    assert_eq!(
        repository
            .list_by_status(SagaStatus::Finished)
            .await
            .expect("lists"),
        [old_finished.id, new_finished.id],
        "oldest first"
    );
    assert_eq!(
        repository
            .list_by_status(SagaStatus::Paused)
            .await
            .expect("lists"),
        [paused.id]
    );
    assert!(
        repository
            .list_by_status(SagaStatus::Running)
            .await
            .expect("lists")
            .is_empty()
    );
    assert_eq!(
        repository.list_by_saga("order").await.expect("lists"),
        [old_errored.id, old_finished.id, new_finished.id]
    );
    assert_eq!(
        repository.list_by_saga("payment").await.expect("lists"),
        [paused.id]
    );
    assert!(
        repository
            .list_by_saga("missing")
            .await
            .expect("lists")
            .is_empty()
    );

    // Only finished executions last updated before the cutoff go.
    assert_eq!(
        repository
            .delete_finished_before(2_000)
            .await
            .expect("prunes"),
        1
    );
    assert!(matches!(
        repository.load(old_finished.id).await,
        Err(RepositoryError::NotFound { .. })
    ));
    for kept in [&new_finished, &old_errored, &paused] {
        repository.load(kept.id).await.expect("kept");
    }
    assert_eq!(
        repository
            .delete_finished_before(2_000)
            .await
            .expect("prunes"),
        0
    );
    assert_eq!(
        repository
            .delete_finished_before(u64::MAX)
            .await
            .expect("prunes"),
        1
    );

    D::close(&repository).await;
    db.finish().await;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stock {
    reserved: bool,
    reservation: Option<String>,
}

async fn reserve(_: &Stock) -> Result<SagaRequest, StepError> {
    Ok(SagaRequest::empty("ReserveStock"))
}

async fn reserved(stock: &mut Stock, reply: SagaResponse) -> Result<(), StepError> {
    stock.reservation = Some(reply.content()?);
    stock.reserved = true;
    Ok(())
}

struct ReserveStock;

impl SagaType for ReserveStock {
    type Context = Stock;

    fn definition() -> Arc<SagaDefinition<Stock>> {
        static DEFINITION: OnceLock<Arc<SagaDefinition<Stock>>> = OnceLock::new();
        Arc::clone(DEFINITION.get_or_init(|| {
            Arc::new(
                Saga::new("reserve-stock")
                    .remote_step("reserve")
                    .on_execute(reserve)
                    .on_success(reserved)
                    .commit()
                    .expect("a valid saga"),
            )
        }))
    }
}

async fn a_second_manager_on_the_same_database_resumes_a_saga_paused_on_disk<D: Database>() {
    let Some(db) = D::create().await else {
        return;
    };
    let registry = || Registry::empty().with::<ReserveStock>().expect("registry");

    // The first manager starts the saga, pauses it on disk and goes away.
    let broker = InProcessBroker::with_history();
    let first_repository = db.repository().await;
    let first = SagaManager::builder("order")
        .repository(first_repository.clone())
        .broker(Arc::new(broker.clone()))
        .registry(registry())
        .build()
        .await
        .expect("starts");
    let outcome = first
        .run_saga::<ReserveStock>(
            Stock::default(),
            RunOptions::new().pause_on_disk(true).autocommit(false),
        )
        .await
        .expect("starts");
    let id = outcome.id();
    let command = broker
        .history()
        .into_iter()
        .rfind(|message| message.topic == "ReserveStock")
        .expect("ReserveStock was sent");
    drop(outcome);
    drop(first);
    D::close(&first_repository).await;

    let inspector = db.repository().await;
    assert_eq!(
        inspector
            .list_by_status(SagaStatus::Paused)
            .await
            .expect("lists"),
        [id],
        "the paused execution is stored"
    );

    // Another manager, on a new repository over the same database, applies the reply.
    let second_repository = db.repository().await;
    let second = SagaManager::builder("order")
        .repository(second_repository.clone())
        .registry(registry())
        .build()
        .await
        .expect("starts");
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("R-7"),
        &["stock"],
    );
    assert_eq!(
        second.resume(reply).await.expect("resumes"),
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
    let stored = second
        .load(ReserveStock::definition(), id)
        .await
        .expect("stored");
    assert_eq!(stored.context().reservation.as_deref(), Some("R-7"));
    assert!(stored.context().reserved);
    assert_eq!(
        inspector
            .list_by_status(SagaStatus::Finished)
            .await
            .expect("lists"),
        [id]
    );

    drop(second);
    D::close(&second_repository).await;
    D::close(&inspector).await;
    db.finish().await;
}

async fn start_up_recovery_reports_corrupt_rows_recovers_the_others_and_does_not_loop<
    D: Database,
>() {
    use saga_tests::faulty::DyingRepository;
    use saga_tests::jobs::{effects, job, local_saga};
    use std::time::Duration;

    let Some(db) = D::create().await else {
        return;
    };
    let repository: Arc<dyn SagaExecutionRepository> = Arc::new(db.repository().await);
    let registry = || {
        Registry::empty()
            .with_definition(local_saga())
            .expect("one saga")
    };
    // A process stops after claiming an execution.
    let stopped = SagaManager::builder("order")
        .repository(DyingRepository::new(Arc::clone(&repository), 1))
        .registry(registry())
        .instance("order-1")
        .recover_on_start(false)
        .storage_retry(Duration::ZERO)
        .build()
        .await
        .expect("starts");
    let job = job(false);
    stopped
        .run(
            local_saga(),
            job.clone(),
            RunOptions::new().autocommit(false),
        )
        .await
        .expect_err("the process stops");
    drop(stopped);
    let good = repository
        .list_by_saga("recovery-local")
        .await
        .expect("lists")[0];

    // Three rows recovery cannot use: a status nobody knows, truncated steps, an unknown saga.
    let mut bad = Vec::new();
    for damage in [
        Some("status = 'exploded'"),
        Some("steps = substr(steps, 1, 9)"),
        None, // `sample_record` belongs to saga `conformance`, which is not registered
    ] {
        let record = sample_record(Uuid::new_v4());
        repository.store(&record).await.expect("stored");
        if let Some(damage) = damage {
            assert_eq!(db.damage(record.id, damage).await, 1, "damaged");
        }
        bad.push(record.id);
    }
    let snapshot = || {
        db.rows(
            "SELECT CAST(id AS TEXT), status, steps, version FROM saga_executions \
             WHERE saga = 'conformance' ORDER BY id",
        )
    };
    let before = snapshot().await;

    // Restarted, twice: each start recovers what it can and reports the rest.
    for start in 0..2 {
        let manager = SagaManager::builder("order")
            .repository(Arc::clone(&repository))
            .registry(registry())
            .instance("order-1")
            .build()
            .await
            .expect("a corrupt row does not stop the start");
        let record = repository.load(good).await.expect("loads");
        assert_eq!(record.status, SagaStatus::Finished, "start {start}");
        let report = manager.recover().await;
        let failed: Vec<Uuid> = report.failures.iter().map(|(id, _)| *id).collect();
        for id in &bad {
            assert!(
                failed.contains(id),
                "start {start}: {id} reported in {report:?}"
            );
        }
        assert_eq!(
            snapshot().await,
            before,
            "the bad rows are left as they are"
        );
    }
    assert_eq!(
        effects(&job.tag),
        ["do a", "do b", "do c", "do a", "do b", "do c"]
    );
    db.finish().await;
}

#[tokio::test]
async fn the_sqlite_file_is_a_write_ahead_log_kept_with_full_durability_by_default() {
    let db = SqliteFile::new();
    let repository = SqliteRepository::open(db.path()).await.expect("opens");
    assert_eq!(repository.durability(), Durability::Full);
    assert_eq!(repository.path(), db.path());

    let raw = db.raw_pool().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&raw)
        .await
        .expect("reads the journal mode");
    assert_eq!(mode, "wal", "the file is in write-ahead-log mode");
}

#[tokio::test]
async fn the_sqlite_repository_conforms_with_normal_durability() {
    let db = SqliteFile::new();
    let repository = SqliteRepository::builder(db.path())
        .durability(Durability::Normal)
        .open()
        .await
        .expect("opens");
    assert_eq!(repository.durability(), Durability::Normal);
    conformance::check(&repository).await;
}

#[tokio::test]
async fn the_postgres_repository_keeps_every_table_in_its_schema() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let repository = db.repository().await;
    assert_eq!(repository.schema(), db.schema());

    // Every table, the migrations' bookkeeping included, is in the test's schema; the migrations
    // create the participant store's tables too, so that one schema may hold both.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
         ORDER BY table_name",
    )
    .bind(db.schema())
    .fetch_all(db.pool())
    .await
    .expect("lists the tables");
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "participant_commands",
            "participant_effects",
            "participant_outcomes",
            "participant_reservations",
            "saga_executions",
        ]
    );

    repository.close().await;
    db.drop().await;
}

#[tokio::test]
async fn postgres_repositories_on_different_schemas_do_not_see_each_other() {
    let Some(first) = TestDatabase::connect().await else {
        return;
    };
    let Some(second) = TestDatabase::connect().await else {
        return;
    };
    let one = first.repository().await;
    let other = second.repository().await;

    let record = sample_record(Uuid::new_v4());
    assert_eq!(one.store(&record).await.expect("stored"), 1);
    assert!(matches!(
        other.load(record.id).await,
        Err(RepositoryError::NotFound { .. })
    ));
    // The same id is a first store in the other schema.
    assert_eq!(other.store(&record).await.expect("stored"), 1);
    assert_eq!(
        one.list_by_saga("conformance").await.expect("lists"),
        [record.id]
    );
    other.delete(record.id).await.expect("deleted");
    one.load(record.id)
        .await
        .expect("still stored in the first");

    one.close().await;
    other.close().await;
    first.drop().await;
    second.drop().await;
}

#[tokio::test]
async fn a_postgres_schema_name_that_is_not_a_plain_identifier_is_refused() {
    // Checked before connecting: no server is needed.
    for schema in [
        "",
        "Sagas",
        "1sagas",
        "sagas; DROP TABLE x",
        "sa-gas",
        &"s".repeat(64),
    ] {
        match PostgresRepository::builder("postgres://postgres@127.0.0.1:1/none")
            .schema(schema)
            .connect()
            .await
        {
            Err(RepositoryError::Storage(error)) => assert!(
                error.to_string().contains("plain lower-case identifier"),
                "{schema:?}: {error}"
            ),
            other => panic!("{schema:?} is refused, got {other:?}"),
        }
    }
}
