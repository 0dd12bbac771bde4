//! Runs with a caller-chosen id (`RunOptions::id`): a second run with the id of a started
//! execution, one after the other, at the same time, or through another manager on the same
//! repository, starts no second saga and returns the first one's outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use saga_runtime::error::ExecutionError;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_testkit::{ParticipantEvent, ScriptedParticipant};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Order {
    ticket: Option<String>,
}

async fn create_ticket(_order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateTicket", &json!({ "seat": "1A" }))
}

async fn ticket_created(order: &mut Order, reply: SagaResponse) -> Result<(), StepError> {
    order.ticket = Some(reply.content()?);
    Ok(())
}

/// `count` (local: counts its runs in `runs`, fails when `fail` is set), then `ticket`
/// (CreateTicket).
fn saga(runs: &Arc<AtomicU32>, fail: bool) -> Arc<SagaDefinition<Order>> {
    let runs = Arc::clone(runs);
    let count = move |_: &mut Order| {
        runs.fetch_add(1, Ordering::SeqCst);
        async move {
            if fail {
                Err(StepError::msg("refused"))
            } else {
                Ok(())
            }
        }
    };
    Arc::new(
        Saga::new("idempotent-order")
            .local_step("count")
            .on_execute(count)
            .remote_step("ticket")
            .on_execute(create_ticket)
            .on_success(ticket_created)
            .commit()
            .expect("a valid saga"),
    )
}

/// The ticket service (answering after `delay`) and the order service's own transaction messages,
/// on `broker`.
async fn participants(broker: &Arc<dyn Broker>, delay: Duration) -> Vec<ScriptedParticipant> {
    let ticket = ScriptedParticipant::builder("ticket", Arc::clone(broker))
        .command("CreateTicket", move |_| {
            std::thread::sleep(delay);
            (SagaResponseStatus::Success, json!("T-1"))
        })
        .spawn()
        .await
        .expect("the participant starts");
    let order = ScriptedParticipant::builder("order", Arc::clone(broker))
        .spawn()
        .await
        .expect("the participant starts");
    vec![ticket, order]
}

fn commands(participant: &ScriptedParticipant) -> usize {
    participant
        .log()
        .iter()
        .filter(|event| matches!(event, ParticipantEvent::Command { .. }))
        .count()
}

async fn manager(broker: &Arc<dyn Broker>, repository: &Arc<InMemoryRepository>) -> SagaManager {
    SagaManager::builder("order")
        .broker(Arc::clone(broker))
        .repository(Arc::clone(repository))
        .build()
        .await
        .expect("the manager starts")
}

#[tokio::test]
async fn a_second_run_with_the_same_id_returns_the_first_execution() {
    let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new());
    let repository = Arc::new(InMemoryRepository::new());
    let participants = participants(&broker, Duration::ZERO).await;
    let manager = manager(&broker, &repository).await;
    let (runs, id) = (Arc::new(AtomicU32::new(0)), Uuid::new_v4());

    let first = manager
        .run(
            saga(&runs, false),
            Order::default(),
            RunOptions::new().id(id),
        )
        .await
        .expect("runs")
        .execution()
        .expect("returned");
    let second = manager
        .run(
            saga(&runs, false),
            Order::default(),
            RunOptions::new().id(id),
        )
        .await
        .expect("answers")
        .execution()
        .expect("returned");

    assert_eq!(first.id(), id);
    assert_eq!(second.id(), id);
    assert_eq!(second.status(), SagaStatus::Finished);
    assert_eq!(second.context(), first.context());
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the saga ran once");
    assert_eq!(commands(&participants[0]), 1);
    manager.shutdown().await;
}

#[tokio::test]
async fn runs_with_one_id_at_the_same_time_start_one_saga() {
    let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new());
    let repository = Arc::new(InMemoryRepository::new());
    let participants = participants(&broker, Duration::from_millis(100)).await;
    let first_manager = manager(&broker, &repository).await;
    // Another instance of the service on the same repository (it shares the reply topic).
    let second_manager = manager(&broker, &repository).await;
    let (runs, id) = (Arc::new(AtomicU32::new(0)), Uuid::new_v4());

    let options = || RunOptions::new().id(id);
    let (a, b, c) = tokio::join!(
        first_manager.run(saga(&runs, false), Order::default(), options()),
        first_manager.run(saga(&runs, false), Order::default(), options()),
        second_manager.run(saga(&runs, false), Order::default(), options()),
    );
    for outcome in [a, b, c] {
        let execution = outcome.expect("answers").execution().expect("returned");
        assert_eq!(execution.id(), id);
        assert_eq!(execution.status(), SagaStatus::Finished);
        assert_eq!(execution.context().ticket.as_deref(), Some("T-1"));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the saga ran once");
    assert_eq!(commands(&participants[0]), 1, "one command was sent");
    first_manager.shutdown().await;
    second_manager.shutdown().await;
}

#[tokio::test]
async fn a_second_run_of_a_failed_execution_reports_it_and_runs_nothing() {
    let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new());
    let repository = Arc::new(InMemoryRepository::new());
    let _participants = participants(&broker, Duration::ZERO).await;
    let manager = manager(&broker, &repository).await;
    let (runs, id) = (Arc::new(AtomicU32::new(0)), Uuid::new_v4());

    let first = manager
        .run(
            saga(&runs, true),
            Order::default(),
            RunOptions::new().id(id),
        )
        .await;
    assert!(matches!(
        first,
        Err(SagaError::Execution(ExecutionError::StepFailed { .. }))
    ));
    let raised = manager
        .run(
            saga(&runs, true),
            Order::default(),
            RunOptions::new().id(id),
        )
        .await;
    match raised {
        Err(SagaError::Execution(ExecutionError::AlreadyExecuted { id: found, status })) => {
            assert_eq!((found, status), (id, SagaStatus::Errored));
        }
        other => panic!("expected AlreadyExecuted, got {other:?}"),
    }
    let returned = manager
        .run(
            saga(&runs, true),
            Order::default(),
            RunOptions::new().id(id).raise_on_error(false),
        )
        .await
        .expect("returns the errored execution")
        .execution()
        .expect("returned");
    assert_eq!(returned.status(), SagaStatus::Errored);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the saga ran once");
    manager.shutdown().await;
}

#[tokio::test]
async fn a_run_paused_on_disk_is_answered_as_it_stands_and_another_saga_s_id_is_refused() {
    let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new());
    let repository = Arc::new(InMemoryRepository::new());
    let manager = manager(&broker, &repository).await;
    let (runs, id) = (Arc::new(AtomicU32::new(0)), Uuid::new_v4());
    // Nobody answers the ticket: the first run pauses and stays paused.
    let paused = RunOptions::new().id(id).pause_on_disk(true);
    let first = manager
        .run(saga(&runs, false), Order::default(), paused.clone())
        .await
        .expect("runs")
        .execution()
        .expect("returned");
    assert_eq!(first.status(), SagaStatus::Paused);
    let second = manager
        .run(saga(&runs, false), Order::default(), paused)
        .await
        .expect("answers")
        .execution()
        .expect("returned");
    assert_eq!((second.id(), second.status()), (id, SagaStatus::Paused));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let other = Arc::new(
        Saga::<Order>::new("another-saga")
            .local_step("noop")
            .on_execute(|_: &mut Order| async { Ok(()) })
            .commit()
            .expect("a valid saga"),
    );
    let refused = manager
        .run(other, Order::default(), RunOptions::new().id(id))
        .await;
    assert!(
        matches!(refused, Err(SagaError::Load(_))),
        "the id belongs to another saga: {refused:?}"
    );
    manager.shutdown().await;
}
