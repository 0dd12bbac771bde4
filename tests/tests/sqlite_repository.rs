//! The SQLite repository: it passes the conformance suite with either durability, keeps executions
//! across reopening the file, reports corrupt rows as `Corrupt` without harming the others, lists
//! and prunes executions, and lets a second manager resume a saga the first one paused on disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use saga_runtime::error::RepositoryError;
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::repository::{Durability, SagaExecutionRepository, SqliteRepository};
use saga_runtime::wiring::*;
use saga_testkit::conformance::repository::{self as conformance, sample_record};
use saga_tests::reply_to;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use uuid::Uuid;

/// A fresh database file in the temporary directory, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("saga-sqlite-test-{}.db", Uuid::new_v4())))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// A plain sqlx pool on the file, beside the repository, to inspect or damage rows.
    async fn raw_pool(&self) -> SqlitePool {
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(self.path()))
            .await
            .expect("the file opens")
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

#[tokio::test]
async fn the_sqlite_repository_conforms_with_full_durability() {
    let db = TempDb::new();
    let repository = SqliteRepository::open(db.path()).await.expect("opens");
    assert_eq!(repository.durability(), Durability::Full);
    conformance::check(&repository).await;

    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&db.raw_pool().await)
        .await
        .expect("reads the journal mode");
    assert_eq!(mode, "wal", "the file is in write-ahead-log mode");
}

#[tokio::test]
async fn the_sqlite_repository_conforms_with_normal_durability() {
    let db = TempDb::new();
    let repository = SqliteRepository::builder(db.path())
        .durability(Durability::Normal)
        .open()
        .await
        .expect("opens");
    assert_eq!(repository.durability(), Durability::Normal);
    conformance::check(&repository).await;
}

#[tokio::test]
async fn executions_survive_reopening_the_file() {
    let db = TempDb::new();
    let mut record = sample_record(Uuid::new_v4());
    {
        let repository = SqliteRepository::open(db.path()).await.expect("opens");
        record.version = repository.store(&record).await.expect("stored");
        record.status = SagaStatus::Finished;
        record.paused_step = None;
        record.deadline_ms = None;
        record.user = None;
        record.version = repository.store(&record).await.expect("updated");
        repository.close().await;
    }
    // Opening again runs the migrations again: they are recorded and skipped.
    let reopened = SqliteRepository::open(db.path()).await.expect("reopens");
    let loaded = reopened.load(record.id).await.expect("still stored");
    assert_eq!(loaded, record);
    assert_eq!(loaded.version, 2);
}

#[tokio::test]
async fn a_corrupt_row_loads_as_corrupt_naming_the_execution_and_the_column() {
    let db = TempDb::new();
    let repository = SqliteRepository::open(db.path()).await.expect("opens");
    let healthy = sample_record(Uuid::new_v4());
    repository.store(&healthy).await.expect("stored");
    let raw = db.raw_pool().await;

    let damages = [
        (
            "steps",
            "UPDATE saga_executions SET steps = substr(steps, 1, length(steps) - 7) WHERE id = ?1",
        ),
        (
            "status",
            "UPDATE saga_executions SET status = 'exploded' WHERE id = ?1",
        ),
        (
            "transaction_state",
            "UPDATE saga_executions SET transaction_state = 'maybe' WHERE id = ?1",
        ),
        (
            "context",
            "UPDATE saga_executions SET context = '{\"amount\": 4' WHERE id = ?1",
        ),
        (
            "fingerprint",
            "UPDATE saga_executions SET fingerprint = 'not-hex' WHERE id = ?1",
        ),
        (
            "version",
            "UPDATE saga_executions SET version = 'one' WHERE id = ?1",
        ),
        (
            "headers",
            "UPDATE saga_executions SET headers = '[1, 2]' WHERE id = ?1",
        ),
    ];
    for (column, damage) in damages {
        let victim = sample_record(Uuid::new_v4());
        repository.store(&victim).await.expect("stored");
        let changed = sqlx::query(damage)
            .bind(victim.id.to_string())
            .execute(&raw)
            .await
            .expect("the row is damaged")
            .rows_affected();
        assert_eq!(changed, 1, "{column}");

        match repository.load(victim.id).await {
            Err(RepositoryError::Corrupt { id, reason }) => {
                assert_eq!(id, victim.id, "{column}");
                assert!(
                    reason.contains(&format!("`{column}`")),
                    "the reason names column `{column}`: {reason}"
                );
            }
            other => panic!("a damaged `{column}` loads as Corrupt, got {other:?}"),
        }
        let loaded = repository
            .load(healthy.id)
            .await
            .expect("the other executions still load");
        assert_eq!(loaded.id, healthy.id);
        repository
            .delete(victim.id)
            .await
            .expect("a corrupt execution can be deleted");
    }
}

#[tokio::test]
async fn executions_are_listed_by_status_and_saga_and_old_finished_ones_are_pruned() {
    let db = TempDb::new();
    let repository = SqliteRepository::open(db.path()).await.expect("opens");

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
    for record in [&old_finished, &new_finished, &old_errored, &paused] {
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

#[tokio::test]
async fn a_second_manager_on_the_same_file_resumes_a_saga_paused_on_disk() {
    let db = TempDb::new();
    let registry = || Registry::empty().with::<ReserveStock>().expect("registry");

    // The first manager starts the saga, pauses it on disk and goes away.
    let broker = InProcessBroker::with_history();
    let first = SagaManager::builder("order")
        .repository(SqliteRepository::open(db.path()).await.expect("opens"))
        .shared_broker(Arc::new(broker.clone()))
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

    let inspector = SqliteRepository::open(db.path()).await.expect("opens");
    assert_eq!(
        inspector
            .list_by_status(SagaStatus::Paused)
            .await
            .expect("lists"),
        [id],
        "the paused execution is on disk"
    );

    // Another manager, on a new repository over the same file, applies the reply.
    let second = SagaManager::builder("order")
        .repository(SqliteRepository::open(db.path()).await.expect("reopens"))
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
}

#[tokio::test]
async fn start_up_recovery_reports_corrupt_rows_recovers_the_others_and_does_not_loop() {
    use saga_tests::faulty::DyingRepository;
    use saga_tests::jobs::{effects, job, local_saga};
    use std::time::Duration;

    let db = TempDb::new();
    let repository: Arc<dyn SagaExecutionRepository> =
        Arc::new(SqliteRepository::open(db.path()).await.expect("opens"));
    let registry = || {
        Registry::empty()
            .with_definition(local_saga())
            .expect("one saga")
    };
    // A process stops after claiming an execution.
    let stopped = SagaManager::builder("order")
        .shared_repository(DyingRepository::new(Arc::clone(&repository), 1))
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
    let raw = db.raw_pool().await;
    let mut bad = Vec::new();
    for damage in [
        Some("UPDATE saga_executions SET status = 'exploded' WHERE id = ?1"),
        Some("UPDATE saga_executions SET steps = substr(steps, 1, 9) WHERE id = ?1"),
        None, // `sample_record` belongs to saga `conformance`, which is not registered
    ] {
        let record = sample_record(Uuid::new_v4());
        repository.store(&record).await.expect("stored");
        if let Some(damage) = damage {
            sqlx::query(damage)
                .bind(record.id.to_string())
                .execute(&raw)
                .await
                .expect("damaged");
        }
        bad.push(record.id);
    }
    let snapshot = || async {
        sqlx::query_as::<_, (String, String, String, i64)>(
            "SELECT id, status, steps, version FROM saga_executions WHERE saga = 'conformance' \
             ORDER BY id",
        )
        .fetch_all(&raw)
        .await
        .expect("reads")
    };
    let before = snapshot().await;

    // Restarted, twice: each start recovers what it can and reports the rest.
    for start in 0..2 {
        let manager = SagaManager::builder("order")
            .shared_repository(Arc::clone(&repository))
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
}
