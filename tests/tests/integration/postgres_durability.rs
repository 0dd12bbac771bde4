//! Several instances on one PostgreSQL database: each saga is advanced by one instance at a time and
//! finishes once, and an instance that stops releases its executions to the others once its lease
//! runs out. Skipped (with a printed note) without `SAGA_TEST_POSTGRES_URL` outside CI.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use saga_runtime::broker::Broker;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_testkit::ScriptedParticipant;
use saga_tests::TestDatabase;
use saga_tests::faulty::DyingRepository;
use saga_tests::jobs::{count, job, local_saga, remote_saga};
use saga_tests::reply_to;
use serde_json::json;

fn registry() -> Registry {
    Registry::empty()
        .with_definition(local_saga())
        .and_then(|registry| registry.with_definition(remote_saga()))
        .expect("distinct names")
}

async fn manager(
    broker: &InProcessBroker,
    repository: Arc<dyn SagaExecutionRepository>,
    instance: &str,
    lease: Duration,
) -> SagaManager {
    SagaManager::builder("order")
        .broker(Arc::new(broker.clone()))
        .repository(repository)
        .registry(registry())
        .instance(instance)
        .lease(lease)
        // A store that fails is the stop of `DyingRepository`: no retrying it.
        .storage_retry(Duration::ZERO)
        .build()
        .await
        .expect("the manager starts")
}

/// A participant `ticket` that accepts every `CreateTicket` at once.
async fn ticket_service(broker: &InProcessBroker) -> ScriptedParticipant {
    let shared: Arc<dyn Broker> = Arc::new(broker.clone());
    ScriptedParticipant::builder("ticket", shared)
        .command("CreateTicket", |_| {
            (SagaResponseStatus::Success, json!("T-1"))
        })
        .spawn()
        .await
        .expect("the participant starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_a_database_and_a_reply_topic_finish_each_saga_once() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let repository: Arc<dyn SagaExecutionRepository> = Arc::new(db.repository().await);
    let broker = InProcessBroker::new();
    let _ticket = ticket_service(&broker).await;
    // Both subscribe `orderReply`: each reply goes to one of them, whichever started the saga.
    let instances = [
        manager(
            &broker,
            Arc::clone(&repository),
            "order-a",
            Duration::from_secs(120),
        )
        .await,
        manager(
            &broker,
            Arc::clone(&repository),
            "order-b",
            Duration::from_secs(120),
        )
        .await,
    ];
    const SAGAS: usize = 200;
    let jobs: Vec<_> = (0..SAGAS).map(|_| job(false)).collect();
    for chunk in jobs.chunks(20).enumerate() {
        let (index, chunk) = chunk;
        let runs = chunk.iter().enumerate().map(|(offset, job)| {
            let manager = &instances[(index + offset) % 2];
            manager.run(
                remote_saga(),
                job.clone(),
                RunOptions::new().autocommit(false).pause_on_disk(true),
            )
        });
        for outcome in join_all(runs).await {
            outcome.expect("the saga starts and pauses");
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let finished = repository
            .list_by_status(SagaStatus::Finished)
            .await
            .expect("lists")
            .len();
        if finished == SAGAS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{finished} of {SAGAS} sagas finished within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for job in &jobs {
        assert_eq!(count(&job.tag, "do a"), 1);
        assert_eq!(
            count(&job.tag, "ticket created"),
            1,
            "one reply applied once"
        );
        assert_eq!(count(&job.tag, "do b"), 1);
    }
    for id in repository
        .list_by_saga("recovery-remote")
        .await
        .expect("lists")
    {
        let record = repository.load(id).await.expect("loads");
        assert_eq!(record.owner, None);
        assert!(!record.needs_recovery(), "{record:?}");
    }
    let stats = [instances[0].reply_stats(), instances[1].reply_stats()];
    assert_eq!(
        stats[0].applied + stats[1].applied,
        SAGAS as u64,
        "{stats:?}"
    );
    assert!(
        stats[0].applied > 0 && stats[1].applied > 0,
        "both worked: {stats:?}"
    );
    drop(instances);
    db.drop().await;
}

#[tokio::test]
async fn an_instance_that_stops_releases_its_executions_once_its_lease_runs_out() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let repository: Arc<dyn SagaExecutionRepository> = Arc::new(db.repository().await);
    let broker = InProcessBroker::with_history();
    let lease = Duration::from_millis(300);
    // Instance a stores the claim and the pause of the run, then the claim of the reply, then
    // stops.
    let dying = DyingRepository::new(Arc::clone(&repository), 3);
    let a = manager(&broker, dying, "order-a", lease).await;
    let job = job(false);
    let id = a
        .run(
            remote_saga(),
            job.clone(),
            RunOptions::new().autocommit(false).pause_on_disk(true),
        )
        .await
        .expect("pauses")
        .id();
    let command = broker
        .history()
        .into_iter()
        .find(|message| message.topic == "CreateTicket")
        .expect("sent");
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-1"),
        &["ticket"],
    );
    a.resume(reply.clone()).await.expect_err("the stop");
    assert_eq!(
        repository.load(id).await.expect("loads").owner.as_deref(),
        Some("order-a")
    );

    // Instance b, while the lease runs: it leaves the execution alone.
    let b = manager(&broker, Arc::clone(&repository), "order-b", lease).await;
    match b.resume(reply.clone()).await {
        Err(SagaError::Busy { owner, .. }) => assert_eq!(owner, "order-a"),
        other => panic!("expected Busy, got {other:?}"),
    }
    // Once it ran out, b's periodic recovery sweep (one per lease period) takes it over and asks
    // for the reply again.
    let sent = || {
        broker
            .history()
            .into_iter()
            .filter(|message| message.topic == "CreateTicket")
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sent().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody took it over"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resent = sent();
    assert_eq!(resent.len(), 2);
    assert_eq!(resent[1].id, command.id);
    b.resume(reply).await.expect("applies");
    let record = repository.load(id).await.expect("loads");
    assert_eq!(record.status, SagaStatus::Finished);
    assert_eq!(record.owner, None);
    assert_eq!(
        count(&job.tag, "do a"),
        1,
        "a's completion was stored before the stop"
    );
    drop((a, b));
    db.drop().await;
}
