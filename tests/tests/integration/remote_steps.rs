//! Remote steps driven by hand: a saga paused on disk, resumed with replies built from the commands
//! it published, and its failures (failing handlers, refusals, failing `on_execute`, manual
//! rollback), checked through the statuses, the context and the exact messages published.
//!
//! Every scenario runs twice, as `<scenario>::builder` and `<scenario>::macros`: once with the saga
//! built with the builder API, once with the same saga declared with the attribute macros (same
//! step code, same handlers, same persisted names). The definition is the only difference. A
//! stored execution of the macro saga is also resumed by a second manager that finds the saga by
//! name in its registry.

use std::sync::Arc;

use saga_runtime::broker::BrokerMessage;
use saga_runtime::error::LoadError;
use saga_runtime::execution::{ExecutionEnv, Outbox, ReplyRejection, StepExecution};
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_testkit::ScriptedParticipant;
use saga_tests::{
    Harness, SERVICE, Sent, assert_same_definition, command, load, module_registry, reply_to,
    summaries, transaction, with_both_definitions,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// The saga's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Booking {
    item: String,
    order_id: Option<String>,
    ticket_id: Option<String>,
    refusal: Option<String>,
    fail_order_refused: bool,
    fail_create_ticket: bool,
    fail_ticket_created: bool,
}

// The step functions are the `on_execute` code of both definitions: the macro declares the step
// from the function, the builder names its code `create_order::call`.
#[remote_step(on_success = order_created, on_error = order_refused, on_failure = delete_order)]
async fn create_order(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateOrder", &json!({ "item": booking.item }))
}

async fn order_created(booking: &mut Booking, reply: SagaResponse) -> Result<(), StepError> {
    booking.order_id = Some(reply.content()?);
    Ok(())
}

async fn order_refused(booking: &mut Booking, reply: SagaResponse) -> Result<(), StepError> {
    if booking.fail_order_refused {
        return Err(StepError::msg("the refusal cannot be recorded"));
    }
    booking.refusal = Some(reply.content()?);
    Ok(())
}

async fn delete_order(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("DeleteOrder", &json!({ "order": booking.order_id }))
}

#[remote_step(on_success = ticket_created, on_failure = delete_ticket)]
async fn create_ticket(booking: &Booking) -> Result<SagaRequest, StepError> {
    if booking.fail_create_ticket {
        return Err(StepError::msg("no ticket can be built"));
    }
    SagaRequest::new(
        "CreateTicket",
        &json!({ "item": booking.item, "order": booking.order_id }),
    )
}

async fn ticket_created(booking: &mut Booking, reply: SagaResponse) -> Result<(), StepError> {
    if booking.fail_ticket_created {
        return Err(StepError::msg("the ticket cannot be recorded"));
    }
    booking.ticket_id = Some(reply.content()?);
    Ok(())
}

async fn delete_ticket(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new(
        "DeleteTicket",
        &json!({ "order": booking.order_id, "ticket": booking.ticket_id }),
    )
}

/// Step 1 `create_order` (with `on_error`), step 2 `create_ticket` (without `on_error`), built with
/// the builder API.
fn booking_saga() -> Arc<SagaDefinition<Booking>> {
    Arc::new(
        Saga::new("book-ticket")
            .remote_step("create_order")
            .on_execute(create_order::call)
            .on_success(order_created)
            .on_error(order_refused)
            .on_failure(delete_order)
            .remote_step("create_ticket")
            .on_execute(create_ticket::call)
            .on_success(ticket_created)
            .on_failure(delete_ticket)
            .commit()
            .expect("a valid saga"),
    )
}

/// The same saga declared with the attribute macros.
#[saga(name = "book-ticket", steps = [create_order, create_ticket])]
struct BookTicket;

with_both_definitions!(
    booking_saga, BookTicket:
    running_pauses_on_disk_after_publishing_the_first_command,
    a_success_reply_finishes_the_step_and_sends_the_next_command,
    a_failing_on_success_of_the_last_step_compensates_it_then_the_earlier_steps,
    an_error_reply_with_on_error_runs_the_handler_and_continues,
    an_error_reply_without_on_error_fails_the_step_without_self_compensation,
    a_system_error_reply_fails_the_step_without_self_compensation,
    a_failing_remote_on_execute_sends_nothing_and_compensates_the_earlier_steps,
    a_manual_rollback_compensates_the_finished_steps_once,
    a_failing_on_error_compensates_its_own_step,
    replies_that_fit_no_waiting_command_change_nothing,
    rolling_back_a_finished_execution_compensates_without_touching_its_committed_transaction,
    the_engine_rollback_of_a_finished_execution_leaves_it_errored,
);

#[test]
fn the_macro_saga_is_the_builder_saga() {
    let built = booking_saga();
    let declared = BookTicket::definition();
    assert_same_definition(&declared, &built);
}

fn booking() -> Booking {
    Booking {
        item: "concert".to_owned(),
        ..Booking::default()
    }
}

fn rejects(id: Uuid) -> [Sent; 2] {
    [
        transaction("_RejectOrderTransaction", id),
        transaction("_RejectTicketTransaction", id),
    ]
}

/// Starts the saga, paused on disk, for user `U`.
async fn start(
    harness: &Harness,
    saga: &Arc<SagaDefinition<Booking>>,
    context: Booking,
) -> SagaExecution<Booking> {
    harness
        .manager
        .run(
            Arc::clone(saga),
            context,
            RunOptions::new().pause_on_disk(true).user("U"),
        )
        .await
        .expect("the saga starts")
        .execution()
        .expect("the execution is returned")
}

fn last_sent(harness: &Harness) -> BrokerMessage {
    harness.sent().pop().expect("a message was published")
}

/// Answers the last published command with `status` and `content`, from a participant that reports
/// `ticket` as related.
async fn answer(harness: &Harness, status: SagaResponseStatus, content: Value) -> ReplyOutcome {
    let command = last_sent(harness);
    harness
        .manager
        .resume(reply_to(&command, status, content, &["ticket"]))
        .await
        .expect("the reply is handled")
}

fn step_status(execution: &SagaExecution<Booking>, name: &str) -> StepStatus {
    execution.step(name).expect("the step started").status()
}

fn services(names: &[&str]) -> std::collections::BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// Participants `order` and `ticket` that accept (and so answer) every transaction message.
async fn accepting(harness: &Harness) -> Vec<ScriptedParticipant> {
    harness.accepting(&["order", "ticket"]).await
}

/// Brings a fresh execution to "step 1 finished, step 2 paused", forgets the messages so far and
/// returns the execution id and the `CreateTicket` command.
async fn at_second_step(
    harness: &Harness,
    saga: &Arc<SagaDefinition<Booking>>,
    context: Booking,
) -> (Uuid, BrokerMessage) {
    let execution = start(harness, saga, context).await;
    let id = execution.id();
    let outcome = answer(harness, SagaResponseStatus::Success, json!("order-1")).await;
    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused
        }
    );
    let create_ticket_command = last_sent(harness);
    assert_eq!(create_ticket_command.topic, "CreateTicket");
    harness.clear();
    (id, create_ticket_command)
}

async fn running_pauses_on_disk_after_publishing_the_first_command(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;

    let execution = start(&harness, &saga, booking()).await;
    let id = execution.id();

    assert_eq!(execution.status(), SagaStatus::Paused);
    assert_eq!(execution.status().as_str(), "paused");
    let paused = execution.paused_step().expect("a step is paused");
    assert_eq!(paused.name(), "create_order");
    assert_eq!(paused.status(), StepStatus::PausedByOnExecute);
    assert_eq!(paused.status().as_str(), "paused-by-on-execute");
    assert_eq!(execution.executed_steps().count(), 0);
    assert_eq!(execution.steps().len(), 1);
    assert_eq!(execution.user(), Some("U"));
    assert_eq!(execution.context(), &booking());

    let sent = harness.sent();
    assert_eq!(
        summaries(&sent),
        vec![command("CreateOrder", id, json!({ "item": "concert" }))]
    );
    assert_eq!(paused.request_id(), Some(sent[0].id));

    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Paused);
    assert_eq!(
        stored
            .paused_step()
            .map(|step| (step.name(), step.status())),
        Some(("create_order", StepStatus::PausedByOnExecute))
    );
    assert_eq!(stored.executed_steps().count(), 0);
    assert_eq!(stored.context(), &booking());
}

async fn a_success_reply_finishes_the_step_and_sends_the_next_command(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let id = start(&harness, &saga, booking()).await.id();
    let create_order_command = last_sent(&harness);
    harness.clear();

    let reply = reply_to(
        &create_order_command,
        SagaResponseStatus::Success,
        json!("order-1"),
        &["ticket"],
    );
    let outcome = harness
        .manager
        .resume(reply.clone())
        .await
        .expect("handled");

    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused
        }
    );
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Paused);
    let first = stored.step("create_order").expect("step 1 ran");
    assert_eq!(first.status(), StepStatus::Finished);
    assert_eq!(first.related_services(), &services(&["order", "ticket"]));
    assert_eq!(
        stored
            .executed_steps()
            .map(StepExecution::name)
            .collect::<Vec<_>>(),
        ["create_order"]
    );
    assert_eq!(
        stored
            .paused_step()
            .map(|step| (step.name(), step.status())),
        Some(("create_ticket", StepStatus::PausedByOnExecute))
    );
    assert_eq!(
        stored.context(),
        &Booking {
            order_id: Some("order-1".to_owned()),
            ..booking()
        }
    );
    let sent = harness.sent();
    assert_eq!(
        summaries(&sent),
        vec![command(
            "CreateTicket",
            id,
            json!({ "item": "concert", "order": "order-1" })
        )]
    );
    assert_eq!(
        stored.paused_step().and_then(StepExecution::request_id),
        Some(sent[0].id)
    );

    // The same reply again is a duplicate: nothing changes, nothing is sent.
    let before = harness.repository.raw(id);
    let again = harness.manager.resume(reply).await.expect("handled");
    assert_eq!(
        again,
        ReplyOutcome::Ignored {
            id,
            reason: ReplyRejection::Duplicate
        }
    );
    assert_eq!(harness.repository.raw(id), before);
    assert_eq!(harness.sent_topics(), ["CreateTicket"]);
}

async fn a_failing_on_success_of_the_last_step_compensates_it_then_the_earlier_steps(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let _participants = accepting(&harness).await;
    let context = Booking {
        fail_ticket_created: true,
        ..booking()
    };
    let (id, create_ticket_command) = at_second_step(&harness, &saga, context.clone()).await;

    let reply = reply_to(
        &create_ticket_command,
        SagaResponseStatus::Success,
        json!("ticket-1"),
        &["ticket"],
    );
    let outcome = harness
        .manager
        .resume(reply.clone())
        .await
        .expect("handled");

    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Errored
        }
    );
    let mut expected = vec![
        command(
            "DeleteTicket",
            id,
            json!({ "order": "order-1", "ticket": null }),
        ),
        command("DeleteOrder", id, json!({ "order": "order-1" })),
    ];
    expected.extend(rejects(id));
    assert_eq!(summaries(&harness.sent()), expected);

    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
    assert_eq!(
        step_status(&stored, "create_ticket"),
        StepStatus::ErroredOnSuccess
    );
    assert_eq!(
        step_status(&stored, "create_ticket").as_str(),
        "errored-on-success"
    );
    assert!(
        stored
            .step("create_ticket")
            .is_some_and(StepExecution::already_rollback)
    );
    assert_eq!(
        stored.step("create_ticket").and_then(StepExecution::error),
        Some("the ticket cannot be recorded")
    );
    assert_eq!(step_status(&stored, "create_order"), StepStatus::Finished);
    assert!(
        stored
            .step("create_order")
            .is_some_and(StepExecution::already_rollback)
    );
    assert_eq!(
        stored.context(),
        &Booking {
            order_id: Some("order-1".to_owned()),
            ..context
        }
    );

    // Any later reply changes nothing and sends nothing.
    harness.clear();
    let before = harness.repository.raw(id);
    let duplicate = harness.manager.resume(reply).await.expect("handled");
    assert!(
        matches!(
            duplicate,
            ReplyOutcome::Ignored {
                id: ignored,
                reason: ReplyRejection::ExecutionEnded(SagaStatus::Errored) | ReplyRejection::Duplicate,
            } if ignored == id
        ),
        "{duplicate:?}"
    );
    let other = reply_to(
        &create_ticket_command,
        SagaResponseStatus::Error,
        json!("late"),
        &[],
    );
    let late = harness.manager.resume(other).await.expect("handled");
    assert!(
        matches!(
            late,
            ReplyOutcome::Ignored {
                id: ignored,
                reason: ReplyRejection::ExecutionEnded(SagaStatus::Errored) | ReplyRejection::Duplicate,
            } if ignored == id
        ),
        "{late:?}"
    );
    assert_eq!(harness.sent_topics(), Vec::<String>::new());
    assert_eq!(harness.repository.raw(id), before);
}

async fn an_error_reply_with_on_error_runs_the_handler_and_continues(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let id = start(&harness, &saga, booking()).await.id();
    let create_order_command = last_sent(&harness);
    harness.clear();

    let outcome = harness
        .manager
        .resume(reply_to(
            &create_order_command,
            SagaResponseStatus::Error,
            json!("sold out"),
            &["ticket"],
        ))
        .await
        .expect("handled");

    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused
        }
    );
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Paused);
    assert_eq!(step_status(&stored, "create_order"), StepStatus::Finished);
    assert_eq!(
        stored
            .step("create_order")
            .map(StepExecution::related_services),
        Some(&services(&["order", "ticket"]))
    );
    assert_eq!(
        stored.context(),
        &Booking {
            refusal: Some("sold out".to_owned()),
            ..booking()
        }
    );
    assert_eq!(
        summaries(&harness.sent()),
        vec![command(
            "CreateTicket",
            id,
            json!({ "item": "concert", "order": null })
        )]
    );
}

/// Answers step 2 with `status` and checks the step failed without compensating itself.
async fn unhandled_failure_of_the_second_step(
    saga: Arc<SagaDefinition<Booking>>,
    status: SagaResponseStatus,
) {
    let harness = Harness::new().await;
    let _participants = accepting(&harness).await;
    let (id, create_ticket_command) = at_second_step(&harness, &saga, booking()).await;

    let outcome = harness
        .manager
        .resume(reply_to(
            &create_ticket_command,
            status,
            json!("no seats"),
            &["ticket"],
        ))
        .await
        .expect("handled");

    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Errored
        }
    );
    let mut expected = vec![command("DeleteOrder", id, json!({ "order": "order-1" }))];
    expected.extend(rejects(id));
    assert_eq!(summaries(&harness.sent()), expected, "reply {status:?}");

    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert_eq!(
        step_status(&stored, "create_ticket"),
        StepStatus::ErroredByOnExecute,
        "reply {status:?}"
    );
    assert_eq!(
        step_status(&stored, "create_ticket").as_str(),
        "errored-by-on-execute"
    );
    assert!(
        !stored
            .step("create_ticket")
            .is_some_and(StepExecution::already_rollback)
    );
    assert_eq!(step_status(&stored, "create_order"), StepStatus::Finished);
    assert!(
        stored
            .step("create_order")
            .is_some_and(StepExecution::already_rollback)
    );
    assert_eq!(
        stored.context(),
        &Booking {
            order_id: Some("order-1".to_owned()),
            ..booking()
        }
    );
}

async fn an_error_reply_without_on_error_fails_the_step_without_self_compensation(
    saga: Arc<SagaDefinition<Booking>>,
) {
    unhandled_failure_of_the_second_step(saga, SagaResponseStatus::Error).await;
}

async fn a_system_error_reply_fails_the_step_without_self_compensation(
    saga: Arc<SagaDefinition<Booking>>,
) {
    unhandled_failure_of_the_second_step(saga, SagaResponseStatus::SystemError).await;
}

async fn a_failing_remote_on_execute_sends_nothing_and_compensates_the_earlier_steps(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let _participants = accepting(&harness).await;
    let context = Booking {
        fail_create_ticket: true,
        ..booking()
    };
    let id = start(&harness, &saga, context.clone()).await.id();
    let create_order_command = last_sent(&harness);
    harness.clear();

    let outcome = harness
        .manager
        .resume(reply_to(
            &create_order_command,
            SagaResponseStatus::Success,
            json!("order-1"),
            &["ticket"],
        ))
        .await
        .expect("handled");

    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Errored
        }
    );
    let mut expected = vec![command("DeleteOrder", id, json!({ "order": "order-1" }))];
    expected.extend(rejects(id));
    assert_eq!(summaries(&harness.sent()), expected);

    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    let second = stored.step("create_ticket").expect("step 2 started");
    assert_eq!(second.status(), StepStatus::ErroredOnExecute);
    assert_eq!(second.status().as_str(), "errored-on-execute");
    assert_eq!(second.request_id(), None);
    assert!(!second.already_rollback());
    assert_eq!(second.error(), Some("no ticket can be built"));
    assert_eq!(step_status(&stored, "create_order"), StepStatus::Finished);
    assert!(stored.already_rollback());
    assert_eq!(
        stored.context(),
        &Booking {
            order_id: Some("order-1".to_owned()),
            ..context
        }
    );
}

async fn a_manual_rollback_compensates_the_finished_steps_once(saga: Arc<SagaDefinition<Booking>>) {
    let harness = Harness::new().await;
    let _participants = accepting(&harness).await;
    let (id, _) = at_second_step(&harness, &saga, booking()).await;

    let status = harness.manager.rollback(id).await.expect("rolled back");

    assert_eq!(status, SagaStatus::Errored);
    let mut expected = vec![command("DeleteOrder", id, json!({ "order": "order-1" }))];
    expected.extend(rejects(id));
    assert_eq!(summaries(&harness.sent()), expected);
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
    assert!(
        stored
            .step("create_order")
            .is_some_and(StepExecution::already_rollback)
    );
    assert_eq!(step_status(&stored, "create_order"), StepStatus::Finished);
    assert_eq!(
        step_status(&stored, "create_ticket"),
        StepStatus::PausedByOnExecute
    );
    assert!(
        !stored
            .step("create_ticket")
            .is_some_and(StepExecution::already_rollback)
    );

    harness.clear();
    let before = harness.repository.raw(id);
    let again = harness.manager.rollback(id).await;
    assert!(
        matches!(
            &again,
            Err(SagaError::Execution(ExecutionError::AlreadyRolledBack { id: rolled, .. })) if *rolled == id
        ),
        "{again:?}"
    );
    assert_eq!(harness.sent_topics(), Vec::<String>::new());
    assert_eq!(harness.repository.raw(id), before);
}

async fn a_failing_on_error_compensates_its_own_step(saga: Arc<SagaDefinition<Booking>>) {
    let harness = Harness::new().await;
    let _participants = accepting(&harness).await;
    let context = Booking {
        fail_order_refused: true,
        ..booking()
    };
    let id = start(&harness, &saga, context.clone()).await.id();
    let create_order_command = last_sent(&harness);
    harness.clear();

    let outcome = harness
        .manager
        .resume(reply_to(
            &create_order_command,
            SagaResponseStatus::Error,
            json!("sold out"),
            &["ticket"],
        ))
        .await
        .expect("handled");

    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Errored
        }
    );
    // The participant answered, so the step undoes itself; the participants are rejected too.
    let mut expected = vec![command("DeleteOrder", id, json!({ "order": null }))];
    expected.extend(rejects(id));
    assert_eq!(summaries(&harness.sent()), expected);
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert_eq!(stored.steps().len(), 1);
    let first = stored.step("create_order").expect("step 1 ran");
    assert_eq!(first.status(), StepStatus::ErroredOnError);
    assert_eq!(first.status().as_str(), "errored-on-error");
    assert!(first.already_rollback());
    assert_eq!(first.related_services(), &services(&["order", "ticket"]));
    assert_eq!(first.error(), Some("the refusal cannot be recorded"));
    assert_eq!(stored.context(), &context);
}

async fn replies_that_fit_no_waiting_command_change_nothing(saga: Arc<SagaDefinition<Booking>>) {
    let harness = Harness::new().await;
    let id = start(&harness, &saga, booking()).await.id();
    let create_order_command = last_sent(&harness);
    let before = harness.repository.raw(id);

    // A reply to a command this execution never sent.
    let mut unknown_command = create_order_command.clone();
    unknown_command.id = Uuid::new_v4();
    let unknown_request = harness
        .manager
        .resume(reply_to(
            &unknown_command,
            SagaResponseStatus::Success,
            json!("order-9"),
            &["ticket"],
        ))
        .await
        .expect("handled");
    assert_eq!(
        unknown_request,
        ReplyOutcome::Ignored {
            id,
            reason: ReplyRejection::UnknownRequest
        }
    );

    // A reply naming an execution nobody stored.
    let stranger = Uuid::new_v4();
    let unknown_execution = harness
        .manager
        .resume(
            SagaResponse::new(
                stranger,
                create_order_command.id,
                SagaResponseStatus::Success,
                &json!("order-9"),
            )
            .expect("encodes"),
        )
        .await
        .expect("handled");
    assert_eq!(
        unknown_execution,
        ReplyOutcome::Ignored {
            id: stranger,
            reason: ReplyRejection::UnknownExecution
        }
    );

    assert_eq!(harness.repository.raw(id), before);
    assert_eq!(harness.sent_topics(), ["CreateOrder"]);
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Paused);
    assert_eq!(stored.context(), &booking());
}

/// Runs the booking saga to its end, committed by accepting participants.
async fn finished(harness: &Harness, saga: &Arc<SagaDefinition<Booking>>) -> Uuid {
    let (id, create_ticket_command) = at_second_step(harness, saga, booking()).await;
    let outcome = harness
        .manager
        .resume(reply_to(
            &create_ticket_command,
            SagaResponseStatus::Success,
            json!("ticket-1"),
            &["ticket"],
        ))
        .await
        .expect("handled");
    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
    assert_eq!(
        harness.sent_topics(),
        [
            "_ReserveOrderTransaction",
            "_ReserveTicketTransaction",
            "_CommitOrderTransaction",
            "_CommitTicketTransaction",
        ]
    );
    harness.clear();
    id
}

async fn rolling_back_a_finished_execution_compensates_without_touching_its_committed_transaction(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let _participants = accepting(&harness).await;
    let id = finished(&harness, &saga).await;

    let status = harness.manager.rollback(id).await.expect("rolled back");

    // Per `SagaManager::rollback`: compensate in reverse order and leave the execution errored. Its
    // transaction was committed, which is final: nothing is reserved, committed or rejected again.
    let expected = vec![
        command(
            "DeleteTicket",
            id,
            json!({ "order": "order-1", "ticket": "ticket-1" }),
        ),
        command("DeleteOrder", id, json!({ "order": "order-1" })),
    ];
    assert_eq!(summaries(&harness.sent()), expected);
    assert_eq!(status, SagaStatus::Errored);
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
}

async fn the_engine_rollback_of_a_finished_execution_leaves_it_errored(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let _participants = accepting(&harness).await;
    let id = finished(&harness, &saga).await;
    let mut execution = load(&harness, &saga, id).await;
    let mut outbox = Outbox::new();

    execution
        .rollback(&ExecutionEnv::new("order"), &mut outbox)
        .await
        .expect("rolled back");

    assert_eq!(
        summaries(outbox.messages()),
        vec![
            command(
                "DeleteTicket",
                id,
                json!({ "order": "order-1", "ticket": "ticket-1" }),
            ),
            command("DeleteOrder", id, json!({ "order": "order-1" })),
        ]
    );
    assert!(execution.already_rollback());
    assert_eq!(execution.status(), SagaStatus::Errored);
}

#[tokio::test]
async fn a_stored_execution_of_the_macro_saga_is_resumed_by_name_through_the_registry()
-> Result<(), Box<dyn std::error::Error>> {
    // One instance starts the macro saga and pauses on disk ...
    let harness = Harness::new().await;
    let _participants = accepting(&harness).await;
    let started = harness
        .manager
        .run_saga::<BookTicket>(booking(), RunOptions::new().pause_on_disk(true).user("U"))
        .await?
        .execution()
        .expect("the execution is returned");
    let id = started.id();
    assert_eq!(started.status(), SagaStatus::Paused);
    let create_order_command = last_sent(&harness);
    assert_eq!(create_order_command.topic, "CreateOrder");
    let first_reply = reply_to(
        &create_order_command,
        SagaResponseStatus::Success,
        json!("order-1"),
        &["ticket"],
    );

    // ... an instance sharing its storage that knows no saga cannot resume it ...
    let stranger = SagaManager::builder(SERVICE)
        .repository(harness.repository.clone())
        .build()
        .await?;
    let before = harness.repository.raw(id);
    let error = stranger
        .resume(first_reply.clone())
        .await
        .expect_err("the stored execution names a saga the stranger does not know");
    assert!(
        matches!(
            &error,
            SagaError::Load(LoadError::UnknownSaga { id: unknown, saga })
                if *unknown == id && saga == "book-ticket"
        ),
        "{error:?}"
    );
    assert_eq!(harness.repository.raw(id), before);
    assert_eq!(harness.sent_topics(), ["CreateOrder"]);

    // ... one that never ran it, with the sagas of this module in its registry, resumes and
    // finishes it.
    let registry = module_registry(module_path!())?;
    assert_eq!(registry.names().collect::<Vec<_>>(), ["book-ticket"]);
    assert_eq!(
        registry.fingerprint("book-ticket"),
        Some(booking_saga().fingerprint())
    );
    let resumer = SagaManager::builder(SERVICE)
        .broker(harness.broker())
        .repository(harness.repository.clone())
        .registry(registry)
        .build()
        .await?;
    assert_eq!(
        resumer.resume(first_reply).await?,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused
        }
    );
    let create_ticket_command = last_sent(&harness);
    assert_eq!(
        summaries(std::slice::from_ref(&create_ticket_command)),
        vec![command(
            "CreateTicket",
            id,
            json!({ "item": "concert", "order": "order-1" })
        )]
    );
    assert_eq!(
        resumer
            .resume(reply_to(
                &create_ticket_command,
                SagaResponseStatus::Success,
                json!("ticket-1"),
                &["ticket"],
            ))
            .await?,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
    assert_eq!(
        harness.sent_topics(),
        [
            "CreateOrder",
            "CreateTicket",
            "_ReserveOrderTransaction",
            "_ReserveTicketTransaction",
            "_CommitOrderTransaction",
            "_CommitTicketTransaction",
        ]
    );

    let finished = Booking {
        order_id: Some("order-1".to_owned()),
        ticket_id: Some("ticket-1".to_owned()),
        ..booking()
    };
    for manager in [&resumer, &harness.manager] {
        let stored = manager.load(BookTicket::definition(), id).await?;
        assert_eq!(stored.status(), SagaStatus::Finished);
        assert_eq!(stored.context(), &finished);
        assert_eq!(stored.user(), Some("U"));
        assert_eq!(
            stored
                .executed_steps()
                .map(|step| (step.name(), step.status()))
                .collect::<Vec<_>>(),
            [
                ("create_order", StepStatus::Finished),
                ("create_ticket", StepStatus::Finished)
            ]
        );
    }
    Ok(())
}
