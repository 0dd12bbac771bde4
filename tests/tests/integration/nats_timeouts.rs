//! Remote-step timeouts across services over NATS JetStream and PostgreSQL: a participant that never
//! answers makes the step fail and the saga compensate, its late reply changes nothing there (and
//! has the participant's tentative work rejected), and the deadline, kept with the execution, is
//! enforced by whichever instance holds it.
//!
//! Against the servers named by `SAGA_TEST_NATS_URL` and `SAGA_TEST_POSTGRES_URL` (skipped without
//! them outside CI).

use std::sync::Arc;
use std::time::Duration;

use saga_runtime::transactional::{CommandContext, CommandError, InMemoryParticipantStore};
use saga_runtime::wiring::*;
use saga_tests::jobs::{self, Job};
use saga_tests::{TestDatabase, TestNats, wait_until};
use serde_json::{Value, json};
use uuid::Uuid;

/// The `order` service: the `recovery-remote` saga (`a`, remote `ticket`, `b`) on the test's
/// database and NATS prefix.
async fn order(db: &TestDatabase, nats: &TestNats, instance: &str) -> SagaService {
    SagaService::builder("order")
        .repository(db.repository().await)
        .broker(nats.broker().await)
        .registry(
            Registry::empty()
                .with_definition(jobs::remote_saga())
                .expect("one saga"),
        )
        .commands(|_| false)
        .manager({
            let instance = instance.to_owned();
            move |manager| manager.instance(instance).lease(Duration::from_millis(500))
        })
        .start()
        .await
        .expect("the order service starts")
}

/// The `ticket` service: answers `CreateTicket` (staging a seat of the saga's own) and
/// `CancelTicket`.
async fn ticket(nats: &TestNats) -> SagaService {
    SagaService::builder("ticket")
        .broker(nats.broker().await)
        .participant_store(InMemoryParticipantStore::new())
        .registry(Registry::empty())
        .commands(|_| false)
        .participant(|participant| {
            participant
                .command(
                    "CreateTicket",
                    |context: CommandContext, request: Value| async move {
                        // One seat per saga: sagas running at once do not contend.
                        let seat = format!("seat:{}", context.transaction());
                        context.stage(seat, request);
                        Ok::<_, CommandError>("T-1")
                    },
                )
                .command(
                    "CancelTicket",
                    |_context: CommandContext, _request: Value| async move {
                        Ok::<_, CommandError>(())
                    },
                )
        })
        .start()
        .await
        .expect("the ticket service starts")
}

async fn status(db: &TestDatabase, id: Uuid) -> SagaStatus {
    db.repository()
        .await
        .load(id)
        .await
        .expect("the execution is stored")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_never_answers_fails_the_step_and_its_late_reply_changes_nothing() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let order = order(&db, &nats, "order-1").await;
    let job = jobs::job(false);

    // Nobody serves `CreateTicket` yet: the command waits in the stream.
    let options = RunOptions::new()
        .timeout(Duration::from_millis(500))
        .raise_on_error(false);
    let execution = order
        .manager()
        .run(jobs::remote_saga(), job.clone(), options)
        .await
        .expect("the run returns")
        .execution()
        .expect("the execution is returned");
    assert_eq!(execution.status(), SagaStatus::Errored);
    assert_eq!(jobs::effects(&job.tag), ["do a", "undo a"]);

    // The ticket service comes up, handles the command and answers: too late.
    let ignored_before = order.manager().reply_stats().ignored;
    let ticket = ticket(&nats).await;
    wait_until(Duration::from_secs(20), "the late reply", || async {
        order.manager().reply_stats().ignored > ignored_before
    })
    .await;
    assert_eq!(status(&db, execution.id()).await, SagaStatus::Errored);
    assert_eq!(
        jobs::effects(&job.tag),
        ["do a", "undo a"],
        "the late reply ran no handler"
    );
    // The ticket service did the work without taking part in the decision: the late reply gets
    // its transaction rejected there, so nothing stays staged.
    wait_until(
        Duration::from_secs(20),
        "the late work's reject",
        || async { ticket.participant().stats().rejected == 1 },
    )
    .await;
    let staged = ticket
        .participant()
        .store()
        .staged(execution.id())
        .await
        .expect("readable");
    assert!(staged.is_empty(), "{staged:?}");

    ticket.shutdown().await;
    order.shutdown().await;
    nats.drop().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_is_kept_with_the_execution_and_enforced_by_another_instance() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let first = order(&db, &nats, "order-1").await;
    let job: Job = jobs::job(false);
    let options = RunOptions::new()
        .pause_on_disk(true)
        .timeout(Duration::from_secs(2));
    let id = first
        .manager()
        .run(jobs::remote_saga(), job.clone(), options)
        .await
        .expect("the run pauses")
        .id();
    assert_eq!(status(&db, id).await, SagaStatus::Paused);
    // The instance that started it stops; another one takes its executions over once its lease
    // has run out, and enforces the deadline stored with the execution.
    first.shutdown().await;
    drop(first);

    let second = order(&db, &nats, "order-2").await;
    wait_until(Duration::from_secs(30), "the deadline", || async {
        status(&db, id).await == SagaStatus::Errored
    })
    .await;
    assert_eq!(jobs::effects(&job.tag), ["do a", "undo a"]);
    let stored = db.repository().await.load(id).await.expect("stored");
    assert!(
        stored.owner.is_none() && stored.pending.is_empty(),
        "released and nothing left to publish: {stored:?}"
    );

    second.shutdown().await;
    nats.drop().await;
    db.drop().await;
}

/// The reply of a participant that answers at once is not lost, even when the command goes out
/// before the run returns: the ticket service is up before the saga starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_answering_at_once_finishes_the_saga_across_services() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let ticket = ticket(&nats).await;
    let order = order(&db, &nats, "order-1").await;
    let jobs = (0..20).map(|_| jobs::job(false)).collect::<Vec<_>>();
    let manager = Arc::new(order.manager().clone());
    let mut ids = Vec::new();
    for job in &jobs {
        let options = RunOptions::new().pause_on_disk(true);
        ids.push(
            manager
                .run(jobs::remote_saga(), job.clone(), options)
                .await
                .expect("the run pauses")
                .id(),
        );
    }
    for id in ids {
        wait_until(Duration::from_secs(30), "the saga's end", || async {
            status(&db, id).await == SagaStatus::Finished
        })
        .await;
    }
    for job in &jobs {
        assert_eq!(
            jobs::effects(&job.tag),
            ["do a", "ticket created", "do b"],
            "{}",
            json!(job.tag)
        );
    }
    wait_until(Duration::from_secs(30), "the commits", || async {
        ticket.participant().stats().committed == 20
    })
    .await;

    order.shutdown().await;
    ticket.shutdown().await;
    nats.drop().await;
    db.drop().await;
}
