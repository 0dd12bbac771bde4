//! The PostgreSQL repository, against the server named by `SAGA_TEST_POSTGRES_URL` (each test in a
//! schema of its own; without a server the tests print a skip, in CI they fail): it passes the
//! conformance suite, keeps executions across reconnecting, reports corrupt rows as `Corrupt`
//! without harming the others, lets exactly one of several concurrent writers win, lists and prunes
//! executions, keeps schemas apart, and lets a second manager resume a saga the first one paused.

use std::sync::{Arc, OnceLock};

use saga_runtime::error::RepositoryError;
use saga_runtime::execution::ExecutionRecord;
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::repository::{PostgresRepository, SagaExecutionRepository};
use saga_runtime::wiring::*;
use saga_testkit::conformance::repository::{self as conformance, sample_record};
use saga_tests::{TestDatabase, reply_to};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::Barrier;
use uuid::Uuid;

#[tokio::test]
async fn the_postgres_repository_conforms() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let repository = db.repository().await;
    assert_eq!(repository.schema(), db.schema());
    conformance::check(&repository).await;

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
async fn executions_survive_reconnecting() {
    let Some(db) = TestDatabase::connect().await else {
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
        repository.close().await;
        assert!(
            matches!(
                repository.load(record.id).await,
                Err(RepositoryError::Storage(_))
            ),
            "a closed repository fails with Storage"
        );
    }
    // Connecting again runs the migrations again: they are recorded and skipped.
    let reconnected = db.repository().await;
    let loaded = reconnected.load(record.id).await.expect("still stored");
    assert_eq!(loaded, record);
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.context.get(), record.context.get());

    reconnected.close().await;
    db.drop().await;
}

#[tokio::test]
async fn a_corrupt_row_loads_as_corrupt_naming_the_execution_and_the_column() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let repository = db.repository().await;
    let healthy = sample_record(Uuid::new_v4());
    repository.store(&healthy).await.expect("stored");

    let damages = [
        (
            "steps",
            "UPDATE saga_executions SET steps = left(steps, length(steps) - 7) WHERE id = $1::uuid",
        ),
        (
            "status",
            "UPDATE saga_executions SET status = 'exploded' WHERE id = $1::uuid",
        ),
        (
            "transaction_state",
            "UPDATE saga_executions SET transaction_state = 'maybe' WHERE id = $1::uuid",
        ),
        (
            "context",
            "UPDATE saga_executions SET context = '{\"amount\": 4' WHERE id = $1::uuid",
        ),
        (
            "context",
            "UPDATE saga_executions SET context = 'not json at all' WHERE id = $1::uuid",
        ),
        (
            "fingerprint",
            "UPDATE saga_executions SET fingerprint = '0123456789abcdef0' WHERE id = $1::uuid",
        ),
        (
            "fingerprint",
            "UPDATE saga_executions SET fingerprint = '0123456789abcdeg' WHERE id = $1::uuid",
        ),
        (
            "fingerprint",
            "UPDATE saga_executions SET fingerprint = '+123456789abcdef' WHERE id = $1::uuid",
        ),
        (
            "version",
            "UPDATE saga_executions SET version = -1 WHERE id = $1::uuid",
        ),
        (
            "created_at_ms",
            "UPDATE saga_executions SET created_at_ms = -5 WHERE id = $1::uuid",
        ),
        (
            "headers",
            "UPDATE saga_executions SET headers = '[1, 2]' WHERE id = $1::uuid",
        ),
        (
            "pending",
            "UPDATE saga_executions SET pending = '{}' WHERE id = $1::uuid",
        ),
    ];
    for (column, damage) in damages {
        let victim = sample_record(Uuid::new_v4());
        repository.store(&victim).await.expect("stored");
        let changed = sqlx::query(damage)
            .bind(victim.id.to_string())
            .execute(db.pool())
            .await
            .expect("the row is damaged")
            .rows_affected();
        assert_eq!(changed, 1, "{damage}");

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

    repository.close().await;
    db.drop().await;
}

/// A copy of `record` at `version`.
fn at_version(record: &ExecutionRecord, version: u64) -> ExecutionRecord {
    let mut record = record.clone();
    record.version = version;
    record
}

/// Eight tasks store `record` at once (all from its version): returns the results.
async fn race(
    repository: &PostgresRepository,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_eight_concurrent_writers_from_the_same_version_exactly_one_wins() {
    let Some(db) = TestDatabase::connect().await else {
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

    repository.close().await;
    db.drop().await;
}

#[tokio::test]
async fn executions_are_listed_by_status_and_saga_and_old_finished_ones_are_pruned() {
    let Some(db) = TestDatabase::connect().await else {
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

    repository.close().await;
    db.drop().await;
}

#[tokio::test]
async fn repositories_on_different_schemas_do_not_see_each_other() {
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
async fn a_schema_name_that_is_not_a_plain_identifier_is_refused() {
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
async fn a_second_manager_on_the_same_schema_resumes_a_saga_paused_on_disk() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let registry = || Registry::empty().with::<ReserveStock>().expect("registry");

    // The first manager starts the saga, pauses it on disk and goes away.
    let broker = InProcessBroker::with_history();
    let first_repository = db.repository().await;
    let first = SagaManager::builder("order")
        .repository(first_repository.clone())
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
    first_repository.close().await;

    let inspector = db.repository().await;
    assert_eq!(
        inspector
            .list_by_status(SagaStatus::Paused)
            .await
            .expect("lists"),
        [id],
        "the paused execution is in the table"
    );

    // Another manager, on a new repository over the same schema, applies the reply.
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
    second_repository.close().await;
    inspector.close().await;
    db.drop().await;
}

#[tokio::test]
async fn start_up_recovery_reports_corrupt_rows_recovers_the_others_and_does_not_loop() {
    use saga_tests::faulty::DyingRepository;
    use saga_tests::jobs::{effects, job, local_saga};
    use std::time::Duration;

    let Some(db) = TestDatabase::connect().await else {
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
    let mut bad = Vec::new();
    for damage in [
        Some("UPDATE saga_executions SET status = 'exploded' WHERE id = $1::uuid"),
        Some("UPDATE saga_executions SET steps = substr(steps, 1, 9) WHERE id = $1::uuid"),
        None, // `sample_record` belongs to saga `conformance`, which is not registered
    ] {
        let record = sample_record(Uuid::new_v4());
        repository.store(&record).await.expect("stored");
        if let Some(damage) = damage {
            sqlx::query(damage)
                .bind(record.id.to_string())
                .execute(db.pool())
                .await
                .expect("damaged");
        }
        bad.push(record.id);
    }
    let snapshot = || async {
        sqlx::query_as::<_, (String, String, String, i64)>(
            "SELECT id::text, status, steps, version FROM saga_executions \
             WHERE saga = 'conformance' ORDER BY id",
        )
        .fetch_all(db.pool())
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
    db.drop().await;
}
