//! PostgreSQL going away in the middle of a run: every connection of the database cut, and (with
//! `SAGA_TEST_POSTGRES_RESTART=1`, which CI sets) the server itself restarted. The manager backs off
//! and goes on; every run that returned is stored as finished, and no step ran twice.
//!
//! One test in its own binary: cutting connections or restarting the server must not hit other
//! tests' connections.

use std::sync::Arc;
use std::time::Duration;

use saga_runtime::wiring::*;
use saga_tests::TestDatabase;
use saga_tests::jobs::{count, job, local_saga};

const SAGAS: usize = 240;
const IN_FLIGHT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_rides_out_cut_connections_and_a_server_restart() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let repository: Arc<dyn SagaExecutionRepository> = Arc::new(db.repository().await);
    let manager = SagaManager::builder("order")
        .repository(Arc::clone(&repository))
        .registry(
            Registry::empty()
                .with_definition(local_saga())
                .expect("one saga"),
        )
        .storage_retry(Duration::from_secs(60))
        .build()
        .await
        .expect("the manager starts");
    let restart = std::env::var("SAGA_TEST_POSTGRES_RESTART").is_ok_and(|value| value == "1");
    if !restart {
        eprintln!("skipped the server restart: set SAGA_TEST_POSTGRES_RESTART=1 to include it");
    }

    let jobs: Vec<_> = (0..SAGAS).map(|_| job(false)).collect();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..IN_FLIGHT {
        let (manager, done) = (manager.clone(), Arc::clone(&done));
        let mine: Vec<_> = jobs
            .iter()
            .skip(worker)
            .step_by(IN_FLIGHT)
            .cloned()
            .collect();
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for job in mine {
                let outcome = manager
                    .run(local_saga(), job, RunOptions::new().autocommit(false))
                    .await
                    .expect("every run succeeds, however long the database is away");
                ids.push(outcome.id());
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Spread the runs over the outages.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ids
        }));
    }

    let wait_for = |count: usize| {
        let done = Arc::clone(&done);
        async move {
            while done.load(std::sync::atomic::Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    wait_for(SAGAS / 4).await;
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) AS cut",
    )
    .fetch_one(db.pool())
    .await
    .expect("cuts the connections");
    assert!(cut > 0, "the manager's connections were cut");
    if restart {
        wait_for(SAGAS / 2).await;
        let version = std::fs::read_dir("/etc/postgresql")
            .expect("a Debian PostgreSQL cluster")
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .next()
            .expect("one version");
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &version, "main", "restart"])
                .status()
        })
        .await
        .expect("no panic")
        .expect("pg_ctlcluster runs");
        assert!(status.success(), "the server restarted: {status}");
    }

    let mut ids = Vec::new();
    for worker in workers {
        ids.extend(worker.await.expect("no panic"));
    }
    assert_eq!(ids.len(), SAGAS);
    // The test's own pool lost its connections too; it reconnects.
    for id in &ids {
        let record = repository.load(*id).await.expect("stored");
        assert_eq!(
            record.status,
            SagaStatus::Finished,
            "acknowledged means stored"
        );
        assert!(!record.needs_recovery());
    }
    for job in &jobs {
        for step in ["do a", "do b", "do c"] {
            assert_eq!(count(&job.tag, step), 1, "{step} of {}", job.tag);
        }
    }
    drop(manager);
    db.drop().await;
}
