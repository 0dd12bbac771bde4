//! Failure paths: a manual rollback of an execution paused inside a conditional step, a failing
//! compensation inside a sub-saga that a later rollback retries, a failing self-compensation of a
//! remote step, a manual rollback while a run waits in memory, and a transient storage failure
//! while a reply is handled (the reply is redelivered and applied once).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use saga_runtime::broker::Broker;
use saga_runtime::broker::BrokerMessage;
use saga_runtime::definition::Branch;
use saga_runtime::execution::{ExecutionRecord, ReplyRejection, StepExecution};
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::faulty::{Faulty, Outage};
use saga_tests::{Harness, ReplyCounts, eventually, reply_to};
use serde_json::json;
use uuid::Uuid;

/// The context of the sagas below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Trip {
    /// What the handlers did, in order.
    log: Vec<String>,
    /// Written by `ticket_created`.
    ticket: Option<String>,
}

async fn always(_trip: &Trip) -> Result<bool, StepError> {
    Ok(true)
}

async fn prepare(trip: &mut Trip) -> Result<(), StepError> {
    trip.log.push("prepare".to_owned());
    Ok(())
}

async fn undo_prepare(trip: &mut Trip) -> Result<(), StepError> {
    trip.log.push("undo-prepare".to_owned());
    Ok(())
}

async fn hold(trip: &mut Trip) -> Result<(), StepError> {
    trip.log.push("hold".to_owned());
    Ok(())
}

async fn undo_hold(trip: &mut Trip) -> Result<(), StepError> {
    trip.log.push("undo-hold".to_owned());
    Ok(())
}

/// Counts its calls; fails the first one, succeeds (and logs) from the second on.
async fn undo_hold_flaky(trip: &mut Trip, calls: &Arc<AtomicUsize>) -> Result<(), StepError> {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(StepError::msg("the seat cannot be released yet"));
    }
    trip.log.push("undo-hold".to_owned());
    Ok(())
}

async fn charge_fails(_trip: &mut Trip) -> Result<(), StepError> {
    Err(StepError::msg("the card is declined"))
}

async fn create_ticket(_trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateTicket", &json!({"seat": "12A"}))
}

async fn ticket_created(trip: &mut Trip, reply: SagaResponse) -> Result<(), StepError> {
    let ticket: String = reply.content()?;
    trip.log.push(format!("ticket {ticket}"));
    trip.ticket = Some(ticket);
    Ok(())
}

async fn ticket_not_recorded(_trip: &mut Trip, _reply: SagaResponse) -> Result<(), StepError> {
    Err(StepError::msg("the ticket cannot be recorded"))
}

async fn cancel_ticket(trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CancelTicket", &trip.ticket)
}

/// Counts its calls and fails: the compensating command cannot be built.
async fn cancel_ticket_fails(
    _trip: &Trip,
    calls: &Arc<AtomicUsize>,
) -> Result<SagaRequest, StepError> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(StepError::msg("the cancellation cannot be built"))
}

async fn create_payment(_trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreatePayment", &json!({"amount": 10}))
}

async fn payment_created(trip: &mut Trip, reply: SagaResponse) -> Result<(), StepError> {
    let payment: String = reply.content()?;
    trip.log.push(format!("payment {payment}"));
    Ok(())
}

/// `prepare` (local, undone by `undo-prepare`), then `route`, a conditional whose branch runs `hold`
/// (local, undone by `undo-hold`) and `create` (remote CreateTicket, compensated by CancelTicket).
fn paused_conditional_saga() -> Arc<SagaDefinition<Trip>> {
    let ticketing = Saga::new("ticketing")
        .local_step("hold")
        .on_execute(hold)
        .on_failure(undo_hold)
        .remote_step("create")
        .on_execute(create_ticket)
        .on_success(ticket_created)
        .on_failure(cancel_ticket)
        .commit()
        .expect("a valid sub-saga");
    Arc::new(
        Saga::new("trip-rollback-paused")
            .local_step("prepare")
            .on_execute(prepare)
            .on_failure(undo_prepare)
            .conditional_step("route")
            .if_then(always, ticketing)
            .commit()
            .expect("a valid saga"),
    )
}

/// `prepare` (local), then `route`, a conditional whose branch runs `hold` (local, compensated by
/// `undo_hold_flaky` counting into `calls`) and `charge` (local, fails).
fn flaky_compensation_saga(name: &str, calls: Arc<AtomicUsize>) -> Arc<SagaDefinition<Trip>> {
    let branch = Saga::new("hold-and-charge")
        .local_step("hold")
        .on_execute(hold)
        .on_failure_with(undo_hold_flaky, calls)
        .local_step("charge")
        .on_execute(charge_fails)
        .commit()
        .expect("a valid sub-saga");
    Arc::new(
        Saga::new(name)
            .local_step("prepare")
            .on_execute(prepare)
            .on_failure(undo_prepare)
            .conditional_step("route")
            .if_then(always, branch)
            .commit()
            .expect("a valid saga"),
    )
}

/// `prepare` (local), then `create` (remote CreateTicket, never answered in the tests using it).
fn unanswered_saga() -> Arc<SagaDefinition<Trip>> {
    Arc::new(
        Saga::new("trip-unanswered")
            .local_step("prepare")
            .on_execute(prepare)
            .on_failure(undo_prepare)
            .remote_step("create")
            .on_execute(create_ticket)
            .on_success(ticket_created)
            .on_failure(cancel_ticket)
            .commit()
            .expect("a valid saga"),
    )
}

fn only_command(harness: &Harness, topic: &str) -> BrokerMessage {
    let mut found: Vec<BrokerMessage> = harness
        .sent()
        .into_iter()
        .filter(|message| message.topic == topic)
        .collect();
    assert_eq!(found.len(), 1, "exactly one `{topic}` command was sent");
    found.remove(0)
}

fn stored_record(raw: Option<String>) -> Option<ExecutionRecord> {
    raw.map(|json| ExecutionRecord::from_json(&json).expect("a stored record decodes"))
}

async fn load(
    harness: &Harness,
    saga: &Arc<SagaDefinition<Trip>>,
    id: Uuid,
) -> SagaExecution<Trip> {
    harness
        .manager
        .load(Arc::clone(saga), id)
        .await
        .expect("the execution is stored")
}

fn log(entries: &[&str]) -> Vec<String> {
    entries.iter().map(|entry| (*entry).to_owned()).collect()
}

#[tokio::test]
async fn manual_rollback_inside_a_paused_conditional_compensates_inner_then_outer_steps() {
    let harness = Harness::new().await;
    let _order = harness.accepting(&["order"]).await;
    let saga = paused_conditional_saga();

    let execution = harness
        .manager
        .run(
            Arc::clone(&saga),
            Trip::default(),
            RunOptions::new().pause_on_disk(true),
        )
        .await
        .expect("the saga pauses")
        .execution()
        .expect("the execution is returned");
    let id = execution.id();
    assert_eq!(execution.status(), SagaStatus::Paused);
    assert_eq!(execution.context().log, log(&["prepare", "hold"]));
    let create = only_command(&harness, "CreateTicket");
    assert_eq!(harness.sent_topics(), vec!["CreateTicket"]);

    let status = harness
        .manager
        .rollback(id)
        .await
        .expect("the execution is rolled back");
    assert_eq!(status, SagaStatus::Errored);

    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
    // The inner completed step first, then the outer one; `create` never completed.
    assert_eq!(
        stored.context(),
        &Trip {
            log: log(&["prepare", "hold", "undo-hold", "undo-prepare"]),
            ticket: None,
        }
    );
    let prepare = stored.step("prepare").expect("prepare ran");
    assert_eq!(prepare.status(), StepStatus::Finished);
    assert!(prepare.already_rollback());
    let route = stored.step("route").expect("route ran");
    assert_eq!(route.status(), StepStatus::ErroredByOnExecute);
    assert_eq!(route.status().as_str(), "errored-by-on-execute");
    assert!(route.already_rollback());
    assert_eq!(route.branch(), Some(Branch::If(0)));
    let inner = route.inner().expect("the branch ran");
    assert_eq!(inner.status(), SagaStatus::Errored);
    assert!(inner.already_rollback());
    assert_eq!(inner.steps().len(), 2);
    assert_eq!(inner.steps()[0].name(), "hold");
    assert_eq!(inner.steps()[0].status(), StepStatus::Finished);
    assert!(inner.steps()[0].already_rollback());
    assert_eq!(inner.steps()[1].name(), "create");
    assert!(
        !inner.steps()[1].already_rollback(),
        "the paused remote step never completed: it is not compensated"
    );
    assert_eq!(stored.waiting_request(), None);
    assert_eq!(
        stored
            .executed_steps()
            .map(StepExecution::name)
            .collect::<Vec<_>>(),
        ["prepare"]
    );
    // No CancelTicket: only the transaction is rejected, after the compensations.
    assert_eq!(
        harness.sent_topics(),
        vec!["CreateTicket", "_RejectOrderTransaction"]
    );

    // A late reply to `create` changes nothing and sends nothing.
    let before = harness.repository.raw(id);
    let outcome = harness
        .manager
        .resume(reply_to(
            &create,
            SagaResponseStatus::Success,
            json!("T-1"),
            &["ticket"],
        ))
        .await
        .expect("the reply is handled");
    assert_eq!(
        outcome,
        ReplyOutcome::Ignored {
            id,
            reason: ReplyRejection::ExecutionEnded(SagaStatus::Errored),
        }
    );
    assert_eq!(harness.repository.raw(id), before);
    assert_eq!(
        harness.sent_topics(),
        vec!["CreateTicket", "_RejectOrderTransaction"]
    );

    // A second rollback is refused and sends nothing.
    match harness.manager.rollback(id).await {
        Err(SagaError::Execution(ExecutionError::AlreadyRolledBack { id: refused, .. })) => {
            assert_eq!(refused, id);
        }
        other => panic!("expected AlreadyRolledBack, got {other:?}"),
    }
    assert_eq!(harness.repository.raw(id), before);
    assert_eq!(
        harness.sent_topics(),
        vec!["CreateTicket", "_RejectOrderTransaction"]
    );
}

#[tokio::test]
async fn manual_rollback_inside_a_paused_conditional_without_autocommit_rejects_nothing() {
    let harness = Harness::new().await;
    let saga = paused_conditional_saga();
    let id = harness
        .manager
        .run(
            Arc::clone(&saga),
            Trip::default(),
            RunOptions::new().pause_on_disk(true).autocommit(false),
        )
        .await
        .expect("the saga pauses")
        .id();

    let status = harness
        .manager
        .rollback(id)
        .await
        .expect("the execution is rolled back");

    assert_eq!(status, SagaStatus::Errored);
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
    assert_eq!(
        stored.context().log,
        log(&["prepare", "hold", "undo-hold", "undo-prepare"])
    );
    assert_eq!(harness.sent_topics(), vec!["CreateTicket"]);
}

#[tokio::test]
async fn a_failed_compensation_inside_a_sub_saga_is_kept_and_retried_by_a_later_rollback() {
    let harness = Harness::new().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let saga = flaky_compensation_saga("trip-flaky-undo", Arc::clone(&calls));

    let execution = harness
        .manager
        .run(
            Arc::clone(&saga),
            Trip::default(),
            RunOptions::new()
                .raise_on_error(false)
                .pause_on_disk(false)
                .autocommit(false),
        )
        .await
        .expect("a failed saga is returned without raise-on-error")
        .execution()
        .expect("the execution is returned");
    let id = execution.id();

    assert_eq!(execution.status(), SagaStatus::Errored);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the failing compensation ran once"
    );
    assert!(
        !execution.already_rollback(),
        "a compensation failed: the execution is not fully rolled back"
    );
    // The failed compensation logged nothing; the outer step was still compensated.
    assert_eq!(
        execution.context().log,
        log(&["prepare", "hold", "undo-prepare"])
    );
    let route = execution.step("route").expect("route ran");
    assert_eq!(route.status(), StepStatus::ErroredByOnExecute);
    let inner = route.inner().expect("the branch ran");
    assert_eq!(inner.status(), SagaStatus::Errored);
    assert!(!inner.already_rollback());
    let hold = &inner.steps()[0];
    assert_eq!(hold.name(), "hold");
    assert_eq!(hold.status(), StepStatus::ErroredOnFailure);
    assert_eq!(hold.status().as_str(), "errored-on-failure");
    assert!(!hold.already_rollback());
    assert!(
        hold.error()
            .is_some_and(|error| error.contains("the seat cannot be released yet")),
        "the step records why its compensation failed: {:?}",
        hold.error()
    );
    assert_eq!(inner.steps()[1].status(), StepStatus::ErroredOnExecute);
    let prepare = execution.step("prepare").expect("prepare ran");
    assert!(prepare.already_rollback());
    // The stored copy says the same.
    let stored = load(&harness, &saga, id).await;
    assert!(!stored.already_rollback());
    assert_eq!(stored.context(), execution.context());

    // A later rollback retries the failed compensation only, and succeeds.
    let status = harness
        .manager
        .rollback(id)
        .await
        .expect("the retry succeeds");
    assert_eq!(status, SagaStatus::Errored);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry, once");
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
    assert_eq!(
        stored.context().log,
        log(&["prepare", "hold", "undo-prepare", "undo-hold"])
    );
    let route = stored.step("route").expect("route ran");
    assert!(route.already_rollback());
    let inner = route.inner().expect("the branch ran");
    assert!(inner.already_rollback());
    assert!(inner.steps()[0].already_rollback());
    assert_eq!(inner.steps()[0].status(), StepStatus::Finished);

    // A third rollback is refused and runs nothing.
    match harness.manager.rollback(id).await {
        Err(SagaError::Execution(ExecutionError::AlreadyRolledBack { id: refused, .. })) => {
            assert_eq!(refused, id);
        }
        other => panic!("expected AlreadyRolledBack, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        harness.sent_topics().is_empty(),
        "{:?}",
        harness.sent_topics()
    );
}

#[tokio::test]
async fn a_failed_compensation_inside_a_sub_saga_is_named_in_the_raised_error() {
    let harness = Harness::new().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let saga = flaky_compensation_saga("trip-flaky-undo-raise", Arc::clone(&calls));

    let error = harness
        .manager
        .run(
            Arc::clone(&saga),
            Trip::default(),
            RunOptions::new().autocommit(false),
        )
        .await
        .expect_err("the saga fails");

    let message = error.to_string();
    let id = match error {
        SagaError::Execution(ExecutionError::StepFailed {
            id, step, status, ..
        }) => {
            assert_eq!(step, "route");
            assert_eq!(status, StepStatus::ErroredByOnExecute);
            assert!(
                message.contains("the card is declined"),
                "the error says why the step failed: {message}"
            );
            assert!(
                message.contains("compensation") && message.contains("hold"),
                "the error names the failed compensation: {message}"
            );
            id
        }
        other => panic!("expected StepFailed, got {other:?}"),
    };
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(!stored.already_rollback());
}

#[tokio::test]
async fn a_failing_self_compensation_keeps_the_step_failed_and_the_rollback_incomplete() {
    let harness = Harness::new().await;
    let _participants = harness.accepting(&["order", "ticket"]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let saga = Arc::new(
        Saga::new("trip-self-compensation-fails")
            .local_step("prepare")
            .on_execute(prepare)
            .on_failure(undo_prepare)
            .remote_step("create")
            .on_execute(create_ticket)
            .on_success(ticket_not_recorded)
            .on_failure_with(cancel_ticket_fails, Arc::clone(&calls))
            .commit()
            .expect("a valid saga"),
    );
    let id = harness
        .manager
        .run(
            Arc::clone(&saga),
            Trip::default(),
            RunOptions::new().pause_on_disk(true),
        )
        .await
        .expect("the saga pauses")
        .id();
    let create = only_command(&harness, "CreateTicket");

    let outcome = harness
        .manager
        .resume(reply_to(
            &create,
            SagaResponseStatus::Success,
            json!("T-1"),
            &["ticket"],
        ))
        .await
        .expect("the reply is handled");

    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Errored
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "on_failure ran once");
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(!stored.already_rollback());
    let step = stored.step("create").expect("create ran");
    assert_eq!(step.status(), StepStatus::ErroredOnSuccess);
    assert_eq!(step.status().as_str(), "errored-on-success");
    assert!(!step.already_rollback());
    let error = step.error().expect("the step records why it failed");
    assert!(
        error.contains("the ticket cannot be recorded"),
        "the step's own failure: {error}"
    );
    assert!(
        error.contains("the cancellation cannot be built"),
        "the failed compensation: {error}"
    );
    assert_eq!(
        stored
            .executed_steps()
            .map(StepExecution::name)
            .collect::<Vec<_>>(),
        ["prepare"]
    );
    // The earlier step is still compensated; no CancelTicket could be sent; both services that
    // joined are rejected.
    assert_eq!(stored.context().log, log(&["prepare", "undo-prepare"]));
    assert!(
        stored
            .step("prepare")
            .is_some_and(StepExecution::already_rollback)
    );
    assert_eq!(
        harness.sent_topics(),
        vec![
            "CreateTicket",
            "_RejectOrderTransaction",
            "_RejectTicketTransaction"
        ]
    );
}

/// Starts a run that waits in memory for a reply that never comes, and returns its task and the
/// execution id once the execution is stored paused.
async fn waiting_run(
    harness: &Harness,
    saga: &Arc<SagaDefinition<Trip>>,
    options: RunOptions,
) -> (
    tokio::task::JoinHandle<Result<RunOutcome<Trip>, SagaError>>,
    Uuid,
) {
    let manager = harness.manager.clone();
    let definition = Arc::clone(saga);
    let run = tokio::spawn(async move { manager.run(definition, Trip::default(), options).await });
    eventually(|| {
        harness
            .sent()
            .iter()
            .any(|message| message.topic == "CreateTicket")
    })
    .await;
    let id = only_command(harness, "CreateTicket")
        .saga_id()
        .expect("the command names its saga");
    eventually(|| {
        stored_record(harness.repository.raw(id))
            .is_some_and(|record| record.status == SagaStatus::Paused)
    })
    .await;
    assert!(!run.is_finished(), "the run waits for the reply");
    (run, id)
}

#[tokio::test]
async fn a_manual_rollback_ends_a_run_waiting_in_memory_with_rolled_back() {
    let harness = Harness::new().await;
    let _order = harness.accepting(&["order"]).await;
    let saga = unanswered_saga();
    let (run, id) = waiting_run(&harness, &saga, RunOptions::new()).await;

    let status = harness
        .manager
        .rollback(id)
        .await
        .expect("the execution is rolled back");
    assert_eq!(status, SagaStatus::Errored);

    match run.await.expect("the run does not panic") {
        Err(SagaError::Execution(ExecutionError::RolledBack { id: rolled_back })) => {
            assert_eq!(rolled_back, id);
        }
        other => panic!("expected RolledBack, got {other:?}"),
    }
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
    assert_eq!(stored.context().log, log(&["prepare", "undo-prepare"]));
    assert_eq!(
        harness.sent_topics(),
        vec!["CreateTicket", "_RejectOrderTransaction"]
    );
}

#[tokio::test]
async fn a_manual_rollback_hands_the_errored_execution_to_a_waiting_run_without_raise_on_error() {
    let harness = Harness::new().await;
    let _order = harness.accepting(&["order"]).await;
    let saga = unanswered_saga();
    let (run, id) = waiting_run(&harness, &saga, RunOptions::new().raise_on_error(false)).await;

    harness
        .manager
        .rollback(id)
        .await
        .expect("the execution is rolled back");

    let execution = run
        .await
        .expect("the run does not panic")
        .expect("without raise-on-error the run returns the execution")
        .execution()
        .expect("the execution is returned");
    assert_eq!(execution.id(), id);
    assert_eq!(execution.status(), SagaStatus::Errored);
    assert!(execution.already_rollback());
    assert_eq!(execution.context().log, log(&["prepare", "undo-prepare"]));
    let create = execution.step("create").expect("create ran");
    assert!(!create.already_rollback());
    assert_eq!(
        harness.sent_topics(),
        vec!["CreateTicket", "_RejectOrderTransaction"]
    );
}

/// A manager of service `order` on `broker` with an [`Outage`] over an in-memory repository, that
/// does not retry failed stores itself (so that a failure reaches the reply listener, which asks
/// for a redelivery).
async fn flaky_manager(broker: &InProcessBroker) -> (SagaManager, Arc<Faulty<Outage>>) {
    let repository = Outage::new(Arc::new(InMemoryRepository::new()));
    let manager = SagaManager::builder("order")
        .broker(Arc::new(broker.clone()))
        .repository(repository.clone())
        .storage_retry(std::time::Duration::ZERO)
        .build()
        .await
        .expect("the manager starts");
    (manager, repository)
}

fn commands(broker: &InProcessBroker) -> Vec<String> {
    broker
        .history()
        .into_iter()
        .filter(|message| message.correlation_id.is_none())
        .map(|message| message.topic)
        .collect()
}

fn last_command(broker: &InProcessBroker, topic: &str) -> BrokerMessage {
    broker
        .history()
        .into_iter()
        .rfind(|message| message.topic == topic)
        .expect("the command was published")
}

#[tokio::test]
async fn a_reply_whose_store_fails_transiently_is_redelivered_and_applied_once() {
    let broker = InProcessBroker::with_history();
    let (manager, repository) = flaky_manager(&broker).await;
    let saga = Arc::new(
        Saga::new("trip-flaky-store")
            .remote_step("ticket")
            .on_execute(create_ticket)
            .on_success(ticket_created)
            .remote_step("payment")
            .on_execute(create_payment)
            .on_success(payment_created)
            .commit()
            .expect("a valid saga"),
    );
    let id = manager
        .run(
            Arc::clone(&saga),
            Trip::default(),
            RunOptions::new().pause_on_disk(true),
        )
        .await
        .expect("the saga pauses")
        .id();
    // The claim (before any handler runs) and the pause.
    assert_eq!(repository.attempts(), 2);
    let ticket = last_command(&broker, "CreateTicket");

    repository.fail_next_stores(1);
    broker
        .publish(
            ticket
                .reply("ticket", SagaResponseStatus::Success, json!("T-1"))
                .expect("the command names its reply topic"),
        )
        .await
        .expect("published");

    eventually(|| manager.reply_stats().failed == 1).await;
    eventually(|| manager.reply_stats().applied == 1).await;
    assert_eq!(
        ReplyCounts::from(manager.reply_stats()),
        ReplyCounts {
            applied: 1,
            ignored: 0,
            unknown: 0,
            malformed: 0,
            failed: 1,
            dead_lettered: 0,
        }
    );
    assert_eq!(repository.refused(), 1);
    // The failed claim, then the claim and the pause of the redelivered reply.
    assert_eq!(repository.attempts(), 5);
    let execution = manager
        .load(Arc::clone(&saga), id)
        .await
        .expect("the execution is stored");
    assert_eq!(execution.status(), SagaStatus::Paused);
    assert_eq!(
        execution.paused_step().map(StepExecution::name),
        Some("payment")
    );
    assert_eq!(
        execution.step("ticket").map(StepExecution::status),
        Some(StepStatus::Finished)
    );
    // The reply was applied once: its handler's effect is stored once, and the next command was
    // published once (nothing was published for the attempt whose store failed).
    assert_eq!(
        execution.context(),
        &Trip {
            log: log(&["ticket T-1"]),
            ticket: Some("T-1".to_owned()),
        }
    );
    assert_eq!(commands(&broker), vec!["CreateTicket", "CreatePayment"]);
}

#[tokio::test]
async fn a_final_reply_whose_store_fails_transiently_commits_the_transaction_once() {
    let broker = InProcessBroker::with_history();
    let (manager, repository) = flaky_manager(&broker).await;
    let shared: Arc<dyn Broker> = Arc::new(broker.clone());
    let mut participants = Vec::new();
    for service in ["order", "ticket"] {
        participants.push(
            saga_testkit::ScriptedParticipant::builder(service, Arc::clone(&shared))
                .spawn()
                .await
                .expect("the participant starts"),
        );
    }
    let saga = Arc::new(
        Saga::new("trip-flaky-final-store")
            .remote_step("ticket")
            .on_execute(create_ticket)
            .on_success(ticket_created)
            .commit()
            .expect("a valid saga"),
    );
    let id = manager
        .run(
            Arc::clone(&saga),
            Trip::default(),
            RunOptions::new().pause_on_disk(true),
        )
        .await
        .expect("the saga pauses")
        .id();
    let ticket = last_command(&broker, "CreateTicket");

    repository.fail_next_stores(1);
    broker
        .publish(
            ticket
                .reply("ticket", SagaResponseStatus::Success, json!("T-1"))
                .expect("the command names its reply topic"),
        )
        .await
        .expect("published");

    eventually(|| manager.reply_stats().applied == 1).await;
    assert_eq!(
        ReplyCounts::from(manager.reply_stats()),
        ReplyCounts {
            applied: 1,
            ignored: 0,
            unknown: 0,
            malformed: 0,
            failed: 1,
            dead_lettered: 0,
        }
    );
    let execution = manager
        .load(Arc::clone(&saga), id)
        .await
        .expect("the execution is stored");
    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(execution.context().log, log(&["ticket T-1"]));
    // Nothing is published for a state that was not stored: the transaction is reserved and
    // committed once, by the attempt that stored the finished execution.
    assert_eq!(
        commands(&broker),
        vec![
            "CreateTicket",
            "_ReserveOrderTransaction",
            "_ReserveTicketTransaction",
            "_CommitOrderTransaction",
            "_CommitTicketTransaction",
        ]
    );
    drop(participants);
}
