//! The two-phase commit that closes a saga: reserve and commit on success (or nothing without
//! autocommit), reject and compensate when a reservation is refused or unanswered, the committer's
//! matching of answers to the (transaction, service) they answer, the transaction list of an
//! execution (conditional sub-sagas included) and the topic names.
//!
//! Every scenario that runs a saga runs twice, as `<scenario>::builder` and `<scenario>::macros`:
//! once with the sagas built with the builder API, once with the same sagas declared with the
//! attribute macros (same step code, same handlers, same persisted names).

use std::sync::Arc;
use std::time::Duration;

use saga_runtime::broker::BrokerMessage;
use saga_runtime::committer::{CommitError, Phase, PhaseReport, TransactionCommitter, title_case};
use saga_runtime::execution::{ExecutionEnv, Outbox, StepExecution, TransactionState};
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_testkit::{ParticipantEvent, ScriptedParticipant};
use saga_tests::{
    Harness, Sent, assert_same_definition, command, load, reply_to, summaries, summary,
    transaction, with_both_definitions,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// The saga's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Booking {
    item: String,
    order_id: Option<String>,
    ticket_id: Option<String>,
    payment_id: Option<String>,
    paid: bool,
}

// The step functions are the `on_execute` code of both definitions: the macro declares the step
// from the function, the builder names its code `create_order::call`.
#[remote_step(on_success = order_created, on_failure = delete_order)]
async fn create_order(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateOrder", &json!({ "item": booking.item }))
}

async fn order_created(booking: &mut Booking, reply: SagaResponse) -> Result<(), StepError> {
    booking.order_id = Some(reply.content()?);
    Ok(())
}

async fn delete_order(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("DeleteOrder", &json!({ "order": booking.order_id }))
}

#[remote_step(on_success = ticket_created, on_failure = delete_ticket)]
async fn create_ticket(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new(
        "CreateTicket",
        &json!({ "item": booking.item, "order": booking.order_id }),
    )
}

async fn ticket_created(booking: &mut Booking, reply: SagaResponse) -> Result<(), StepError> {
    booking.ticket_id = Some(reply.content()?);
    Ok(())
}

async fn delete_ticket(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new(
        "DeleteTicket",
        &json!({ "order": booking.order_id, "ticket": booking.ticket_id }),
    )
}

async fn needs_payment(booking: &Booking) -> Result<bool, StepError> {
    Ok(!booking.paid)
}

#[remote_step(name = "charge", on_success = payment_created)]
async fn create_payment(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreatePayment", &json!({ "order": booking.order_id }))
}

async fn payment_created(booking: &mut Booking, reply: SagaResponse) -> Result<(), StepError> {
    booking.payment_id = Some(reply.content()?);
    Ok(())
}

/// Step 1 `create_order`, step 2 `create_ticket`, both remote and compensable.
fn booking_saga() -> Arc<SagaDefinition<Booking>> {
    Arc::new(
        Saga::new("book-ticket")
            .remote_step("create_order")
            .on_execute(create_order::call)
            .on_success(order_created)
            .on_failure(delete_order)
            .remote_step("create_ticket")
            .on_execute(create_ticket::call)
            .on_success(ticket_created)
            .on_failure(delete_ticket)
            .commit()
            .expect("a valid saga"),
    )
}

/// The booking saga declared with the attribute macros.
#[saga(name = "book-ticket", steps = [create_order, create_ticket])]
struct BookTicket;

/// `create_order`, then a conditional `pay` whose sub-saga charges the payment service, then
/// `create_ticket`.
fn paying_saga() -> Arc<SagaDefinition<Booking>> {
    let payment = Saga::new("pay-booking")
        .remote_step("charge")
        .on_execute(create_payment::call)
        .on_success(payment_created)
        .commit()
        .expect("a valid sub-saga");
    Arc::new(
        Saga::new("book-paid-ticket")
            .remote_step("create_order")
            .on_execute(create_order::call)
            .on_success(order_created)
            .on_failure(delete_order)
            .conditional_step("pay")
            .if_then(needs_payment, payment)
            .remote_step("create_ticket")
            .on_execute(create_ticket::call)
            .on_success(ticket_created)
            .on_failure(delete_ticket)
            .commit()
            .expect("a valid saga"),
    )
}

/// The payment sub-saga declared with the attribute macros.
#[saga(name = "pay-booking", steps = [create_payment])]
struct PayBooking;

/// The paying saga declared with the attribute macros.
#[saga(
    name = "book-paid-ticket",
    steps = [
        create_order,
        pay = conditional(if_then(needs_payment, PayBooking)),
        create_ticket,
    ]
)]
struct BookPaidTicket;

with_both_definitions!(
    booking_saga, BookTicket:
    the_last_success_reply_reserves_then_commits_every_participant,
    without_autocommit_nothing_is_reserved_committed_or_rejected,
    a_refused_reservation_compensates_then_rejects_everyone,
    a_refused_reservation_without_raise_on_error_returns_the_errored_execution,
    an_unanswered_reservation_fails_the_commit_after_the_timeout,
    committing_by_hand_needs_a_finished_execution_with_an_open_transaction,
    a_refused_commit_by_hand_compensates_then_rejects,
);

with_both_definitions!(
    paying_saga, BookPaidTicket:
    the_transactions_cover_every_step_and_conditional_sub_sagas,
    a_failed_sub_saga_rejects_the_participants_it_reached,
);

#[test]
fn the_macro_sagas_are_the_builder_sagas() {
    for (built, declared) in [
        (booking_saga(), BookTicket::definition()),
        (paying_saga(), BookPaidTicket::definition()),
    ] {
        assert_same_definition(&declared, &built);
    }
}

fn booking() -> Booking {
    Booking {
        item: "concert".to_owned(),
        ..Booking::default()
    }
}

fn booked() -> Booking {
    Booking {
        order_id: Some("order-1".to_owned()),
        ticket_id: Some("ticket-1".to_owned()),
        ..booking()
    }
}

/// The messages of one phase for transaction `id` and `services`, in order.
fn phase(phase: Phase, id: Uuid, services: &[&str]) -> Vec<Sent> {
    services
        .iter()
        .map(|service| transaction(&phase.topic(service), id))
        .collect()
}

/// Starts `saga`, paused on disk, for user `U`.
async fn start(
    harness: &Harness,
    saga: &Arc<SagaDefinition<Booking>>,
    options: RunOptions,
) -> SagaExecution<Booking> {
    harness
        .manager
        .run(
            Arc::clone(saga),
            booking(),
            options.pause_on_disk(true).user("U"),
        )
        .await
        .expect("the saga starts")
        .execution()
        .expect("the execution is returned")
}

/// Answers the last published command with SUCCESS, `content` and the `related` services.
async fn succeed(harness: &Harness, content: &str, related: &[&str]) -> ReplyOutcome {
    let command = harness.sent().pop().expect("a command was published");
    harness
        .manager
        .resume(reply_to(
            &command,
            SagaResponseStatus::Success,
            json!(content),
            related,
        ))
        .await
        .expect("the reply is handled")
}

fn transaction_event(phase: Phase, transaction: Uuid, accepted: bool) -> ParticipantEvent {
    ParticipantEvent::Transaction {
        phase,
        transaction,
        accepted,
    }
}

fn pairs(id: Uuid, services: &[&str]) -> Vec<(Uuid, String)> {
    services
        .iter()
        .map(|service| (id, (*service).to_owned()))
        .collect()
}

async fn the_last_success_reply_reserves_then_commits_every_participant(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let participants = harness.accepting(&["order", "ticket"]).await;
    let id = start(&harness, &saga, RunOptions::new()).await.id();
    assert_eq!(
        succeed(&harness, "order-1", &["ticket"]).await,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused
        }
    );

    let outcome = succeed(&harness, "ticket-1", &["ticket"]).await;

    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
    let mut expected = vec![
        command("CreateOrder", id, json!({ "item": "concert" })),
        command(
            "CreateTicket",
            id,
            json!({ "item": "concert", "order": "order-1" }),
        ),
    ];
    expected.extend(phase(Phase::Reserve, id, &["order", "ticket"]));
    expected.extend(phase(Phase::Commit, id, &["order", "ticket"]));
    assert_eq!(summaries(&harness.sent()), expected);
    assert_eq!(
        harness.sent_topics()[2..],
        [
            "_ReserveOrderTransaction",
            "_ReserveTicketTransaction",
            "_CommitOrderTransaction",
            "_CommitTicketTransaction",
        ]
    );
    for participant in &participants {
        assert_eq!(
            participant.log(),
            [
                transaction_event(Phase::Reserve, id, true),
                transaction_event(Phase::Commit, id, true),
            ],
            "{}",
            participant.service()
        );
    }

    let mut stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Finished);
    assert_eq!(stored.context(), &booked());
    assert_eq!(
        stored
            .executed_steps()
            .map(StepExecution::name)
            .collect::<Vec<_>>(),
        ["create_order", "create_ticket"]
    );
    assert_eq!(
        stored.transactions(&ExecutionEnv::new("order")),
        pairs(id, &["order", "ticket"])
    );

    let mut outbox = Outbox::new();
    let again = stored
        .execute(None, &ExecutionEnv::new("order"), &mut outbox)
        .await;
    assert!(
        matches!(
            again,
            Err(ExecutionError::AlreadyExecuted {
                id: executed,
                status: SagaStatus::Finished
            }) if executed == id
        ),
        "{again:?}"
    );
    assert!(outbox.is_empty());
    assert_eq!(stored.status(), SagaStatus::Finished);
}

async fn without_autocommit_nothing_is_reserved_committed_or_rejected(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let participants = harness.accepting(&["order", "ticket"]).await;

    // Success: finished, no reserve or commit.
    let id = start(&harness, &saga, RunOptions::new().autocommit(false))
        .await
        .id();
    succeed(&harness, "order-1", &["ticket"]).await;
    let outcome = succeed(&harness, "ticket-1", &["ticket"]).await;
    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
    assert_eq!(
        summaries(&harness.sent()),
        vec![
            command("CreateOrder", id, json!({ "item": "concert" })),
            command(
                "CreateTicket",
                id,
                json!({ "item": "concert", "order": "order-1" })
            ),
        ]
    );
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Finished);
    assert_eq!(stored.context(), &booked());

    // Failure: compensated, no reject.
    harness.clear();
    let id = start(&harness, &saga, RunOptions::new().autocommit(false))
        .await
        .id();
    succeed(&harness, "order-2", &["ticket"]).await;
    let command_message = harness.sent().pop().expect("CreateTicket was published");
    let outcome = harness
        .manager
        .resume(reply_to(
            &command_message,
            SagaResponseStatus::SystemError,
            json!("down"),
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
    assert_eq!(
        summaries(&harness.sent()),
        vec![
            command("CreateOrder", id, json!({ "item": "concert" })),
            command(
                "CreateTicket",
                id,
                json!({ "item": "concert", "order": "order-2" })
            ),
            command("DeleteOrder", id, json!({ "order": "order-2" })),
        ]
    );
    for participant in &participants {
        assert_eq!(participant.log(), [], "{}", participant.service());
    }
}

/// Starts participants for a full in-memory run: `ticket` answers both commands with SUCCESS (its
/// transaction policy set by `ticket`); `order` accepts every transaction.
async fn run_with_ticket(
    harness: &Harness,
    ticket: impl FnOnce(
        saga_testkit::ScriptedParticipantBuilder,
    ) -> saga_testkit::ScriptedParticipantBuilder,
) -> (ScriptedParticipant, ScriptedParticipant) {
    let ticket = ticket(
        harness
            .participant("ticket")
            .command("CreateOrder", |_: &BrokerMessage| {
                (SagaResponseStatus::Success, json!("order-1"))
            })
            .command("CreateTicket", |_: &BrokerMessage| {
                (SagaResponseStatus::Success, json!("ticket-1"))
            }),
    )
    .spawn()
    .await
    .expect("the participant starts");
    let order = harness
        .participant("order")
        .spawn()
        .await
        .expect("the participant starts");
    (order, ticket)
}

/// Runs the booking saga in memory and checks that its commit failed the way a failed reservation
/// must: reserves, the compensations in reverse order, then rejects, and the execution `errored`.
async fn assert_failed_commit(harness: &Harness, saga: Arc<SagaDefinition<Booking>>) -> Uuid {
    let result = harness
        .manager
        .run(Arc::clone(&saga), booking(), RunOptions::new().user("U"))
        .await;
    let (id, reason, rollback) = match result {
        Err(SagaError::Execution(ExecutionError::CommitFailed {
            id,
            reason,
            rollback,
        })) => (id, reason, rollback),
        other => panic!("expected a failed commit, got {other:?}"),
    };
    assert_eq!(reason.to_string(), "the reservation failed for ticket");
    assert!(rollback.is_none(), "{rollback:?}");

    let mut expected = vec![
        command("CreateOrder", id, json!({ "item": "concert" })),
        command(
            "CreateTicket",
            id,
            json!({ "item": "concert", "order": "order-1" }),
        ),
    ];
    expected.extend(phase(Phase::Reserve, id, &["order", "ticket"]));
    // Compensated first, then rejected (SEMANTICS: rejected after compensating); the reject
    // decision is stored with its messages before they are sent.
    expected.push(command(
        "DeleteTicket",
        id,
        json!({ "order": "order-1", "ticket": "ticket-1" }),
    ));
    expected.push(command("DeleteOrder", id, json!({ "order": "order-1" })));
    expected.extend(phase(Phase::Reject, id, &["order", "ticket"]));
    assert_eq!(summaries(&harness.sent()), expected);
    assert_eq!(
        harness.sent_topics()[2..],
        [
            "_ReserveOrderTransaction",
            "_ReserveTicketTransaction",
            "DeleteTicket",
            "DeleteOrder",
            "_RejectOrderTransaction",
            "_RejectTicketTransaction",
        ]
    );

    let stored = load(harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
    for name in ["create_order", "create_ticket"] {
        let step = stored.step(name).expect("the step ran");
        assert_eq!(step.status(), StepStatus::Finished, "{name}");
        assert!(step.already_rollback(), "{name}");
    }
    assert_eq!(stored.context(), &booked());

    // Executing it again is refused.
    let mut stored = stored;
    let mut outbox = Outbox::new();
    let again = stored
        .execute(None, &ExecutionEnv::new("order"), &mut outbox)
        .await;
    assert!(
        matches!(
            again,
            Err(ExecutionError::AlreadyExecuted {
                status: SagaStatus::Errored,
                ..
            })
        ),
        "{again:?}"
    );
    assert!(outbox.is_empty());
    id
}

async fn a_refused_reservation_compensates_then_rejects_everyone(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let (order, ticket) = run_with_ticket(&harness, |ticket| ticket.reserve(|_| false)).await;

    let id = assert_failed_commit(&harness, saga).await;

    assert_eq!(
        order.log(),
        [
            transaction_event(Phase::Reserve, id, true),
            transaction_event(Phase::Reject, id, true),
        ]
    );
    assert_eq!(
        ticket.log(),
        [
            ParticipantEvent::Command {
                topic: "CreateOrder".to_owned(),
                status: SagaResponseStatus::Success,
            },
            ParticipantEvent::Command {
                topic: "CreateTicket".to_owned(),
                status: SagaResponseStatus::Success,
            },
            transaction_event(Phase::Reserve, id, false),
            transaction_event(Phase::Reject, id, true),
        ]
    );
}

async fn a_refused_reservation_without_raise_on_error_returns_the_errored_execution(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let (_order, _ticket) = run_with_ticket(&harness, |ticket| ticket.reserve(|_| false)).await;

    let execution = harness
        .manager
        .run(
            Arc::clone(&saga),
            booking(),
            RunOptions::new().user("U").raise_on_error(false),
        )
        .await
        .expect("a failed saga is returned, not raised")
        .execution()
        .expect("the execution is returned");

    assert_eq!(execution.status(), SagaStatus::Errored);
    assert!(execution.already_rollback());
    assert_eq!(
        harness.sent_topics(),
        [
            "CreateOrder",
            "CreateTicket",
            "_ReserveOrderTransaction",
            "_ReserveTicketTransaction",
            "DeleteTicket",
            "DeleteOrder",
            "_RejectOrderTransaction",
            "_RejectTicketTransaction",
        ]
    );
}

async fn an_unanswered_reservation_fails_the_commit_after_the_timeout(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::with_commit_timeout(Duration::from_millis(100)).await;
    let (order, ticket) =
        run_with_ticket(&harness, |ticket| ticket.answer_transactions(false)).await;

    let id = assert_failed_commit(&harness, saga).await;

    assert_eq!(
        order.log(),
        [
            transaction_event(Phase::Reserve, id, true),
            transaction_event(Phase::Reject, id, true),
        ]
    );
    // It received both messages but answered neither.
    assert_eq!(
        ticket.log()[2..],
        [
            transaction_event(Phase::Reserve, id, true),
            transaction_event(Phase::Reject, id, true),
        ]
    );
    let answers_from_ticket = harness
        .broker
        .history()
        .into_iter()
        .filter(|message| {
            message.correlation_id.is_some()
                && message.headers.get("service").map(String::as_str) == Some("ticket")
                && message.headers.contains_key("transaction")
        })
        .count();
    assert_eq!(answers_from_ticket, 0);
}

fn committer(harness: &Harness, timeout: Duration) -> TransactionCommitter {
    TransactionCommitter::new(harness.broker(), "order", timeout)
}

#[tokio::test]
async fn the_committer_commits_when_everyone_accepts() {
    let harness = Harness::new().await;
    let participants = harness.accepting(&["order", "ticket"]).await;
    let id = Uuid::new_v4();

    let report = committer(&harness, Duration::from_secs(2))
        .commit(&pairs(id, &["order", "ticket"]))
        .await
        .expect("everyone accepted");

    assert_eq!(
        report,
        PhaseReport {
            accepted: vec!["order".to_owned(), "ticket".to_owned()],
            refused: vec![],
            unanswered: vec![],
        }
    );
    let mut expected = phase(Phase::Reserve, id, &["order", "ticket"]);
    expected.extend(phase(Phase::Commit, id, &["order", "ticket"]));
    let sent = harness.sent();
    assert_eq!(summaries(&sent), expected);
    // One private reply topic per phase.
    assert_eq!(sent[0].reply_to, sent[1].reply_to);
    assert_eq!(sent[2].reply_to, sent[3].reply_to);
    assert_ne!(sent[0].reply_to, sent[2].reply_to);
    for participant in &participants {
        assert_eq!(
            participant.log(),
            [
                transaction_event(Phase::Reserve, id, true),
                transaction_event(Phase::Commit, id, true),
            ]
        );
    }

    // Nothing to commit: nothing sent.
    harness.clear();
    let empty = committer(&harness, Duration::from_secs(2))
        .commit(&[])
        .await
        .expect("nothing to refuse");
    assert_eq!(empty, PhaseReport::default());
    assert_eq!(harness.sent_topics(), Vec::<String>::new());
}

#[tokio::test]
async fn the_committer_matches_answers_to_their_transaction_not_their_count() {
    let harness = Harness::new().await;
    let accepted = Uuid::new_v4();
    let refused = Uuid::new_v4();
    let order = harness
        .participant("order")
        .reserve(move |transaction| transaction == accepted)
        .spawn()
        .await
        .expect("the participant starts");
    let transactions = vec![
        (accepted, "order".to_owned()),
        (refused, "order".to_owned()),
    ];

    let result = committer(&harness, Duration::from_secs(2))
        .commit(&transactions)
        .await;

    match result {
        Err(CommitError::ReservationFailed { services }) => assert_eq!(services, ["order"]),
        other => panic!("expected a failed reservation, got {other:?}"),
    }
    let expected = vec![
        transaction("_ReserveOrderTransaction", accepted),
        transaction("_ReserveOrderTransaction", refused),
        transaction("_RejectOrderTransaction", accepted),
        transaction("_RejectOrderTransaction", refused),
    ];
    assert_eq!(summaries(&harness.sent()), expected);
    assert_eq!(
        order.log(),
        [
            transaction_event(Phase::Reserve, accepted, true),
            transaction_event(Phase::Reserve, refused, false),
            transaction_event(Phase::Reject, accepted, true),
            transaction_event(Phase::Reject, refused, true),
        ]
    );
}

#[tokio::test]
async fn stray_answers_on_the_reply_topic_do_not_count() {
    let harness = Harness::new().await;
    let id = Uuid::new_v4();
    let elsewhere = Uuid::new_v4();
    // `order` answers its reservation twice; `ticket` never answers its own, but sends an answer
    // about another transaction that correlates with no request.
    let mut order_reserves = harness
        .broker
        .subscribe("_ReserveOrderTransaction")
        .await
        .expect("subscribed");
    let mut ticket_reserves = harness
        .broker
        .subscribe("_ReserveTicketTransaction")
        .await
        .expect("subscribed");
    let broker = harness.broker();
    let order_broker = Arc::clone(&broker);
    let order_task = tokio::spawn(async move {
        while let Some(delivery) = order_reserves.next().await {
            let message = delivery.message().clone();
            for _ in 0..2 {
                let answer = message
                    .reply("order", SagaResponseStatus::Success, Value::Null)
                    .expect("the reserve names its reply topic");
                order_broker.publish(answer).await.expect("published");
            }
        }
    });
    let ticket_task = tokio::spawn(async move {
        while let Some(delivery) = ticket_reserves.next().await {
            let mut stray = delivery
                .message()
                .reply("ticket", SagaResponseStatus::Success, Value::Null)
                .expect("the reserve names its reply topic");
            stray.correlation_id = Some(Uuid::new_v4());
            stray
                .headers
                .insert("transaction".to_owned(), elsewhere.to_string());
            stray
                .headers
                .insert("saga".to_owned(), elsewhere.to_string());
            broker.publish(stray).await.expect("published");
        }
    });

    let result = committer(&harness, Duration::from_millis(200))
        .commit(&pairs(id, &["order", "ticket"]))
        .await;

    match result {
        Err(CommitError::ReservationFailed { services }) => assert_eq!(services, ["ticket"]),
        other => panic!("expected a failed reservation, got {other:?}"),
    }
    let mut expected = phase(Phase::Reserve, id, &["order", "ticket"]);
    expected.extend(phase(Phase::Reject, id, &["order", "ticket"]));
    assert_eq!(summaries(&harness.sent()), expected);
    // The three answers were really sent, on the reservation's reply topic, before the rejects.
    let history = harness.broker.history();
    let reserve_topic = history[0].reply_to.clone().expect("a private reply topic");
    let answers: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, message)| message.correlation_id.is_some())
        .map(|(index, message)| {
            assert_eq!(Some(&message.topic), Some(&reserve_topic));
            index
        })
        .collect();
    let first_reject = history
        .iter()
        .position(|message| message.topic == "_RejectOrderTransaction")
        .expect("rejects were sent");
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(|&index| index < first_reject));
    order_task.abort();
    ticket_task.abort();
}

async fn the_transactions_cover_every_step_and_conditional_sub_sagas(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let participants = harness.accepting(&["order", "payment", "ticket"]).await;
    let env = ExecutionEnv::new("order");

    let started = start(&harness, &saga, RunOptions::new()).await;
    let id = started.id();
    assert_eq!(started.transactions(&env), pairs(id, &["order"]));

    assert_eq!(
        succeed(&harness, "order-1", &["ticket"]).await,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused
        }
    );
    let paused = load(&harness, &saga, id).await;
    assert_eq!(paused.transactions(&env), pairs(id, &["order", "ticket"]));
    let pay = paused.step("pay").expect("the conditional step started");
    assert_eq!(pay.status(), StepStatus::PausedByOnExecute);
    let inner = pay.inner().expect("the sub-saga runs");
    assert_eq!(inner.id(), id);
    assert_eq!(inner.saga(), "pay-booking");
    assert_eq!(inner.user(), Some("U"));
    assert_eq!(inner.status(), SagaStatus::Paused);
    assert_eq!(
        harness.sent().pop().map(|message| summary(&message)),
        Some(command("CreatePayment", id, json!({ "order": "order-1" })))
    );

    assert_eq!(
        succeed(&harness, "payment-1", &["payment"]).await,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused
        }
    );
    let paused = load(&harness, &saga, id).await;
    assert_eq!(
        paused.transactions(&env),
        pairs(id, &["order", "payment", "ticket"])
    );
    let inner = paused
        .step("pay")
        .and_then(StepExecution::inner)
        .expect("the sub-saga ran");
    assert_eq!(inner.status(), SagaStatus::Finished);
    assert_eq!(
        inner.steps()[0].related_services(),
        &["order".to_owned(), "payment".to_owned()].into()
    );

    let sent_before = harness.sent().len();
    assert_eq!(
        succeed(&harness, "ticket-1", &["ticket"]).await,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
    let finished = load(&harness, &saga, id).await;
    assert_eq!(
        finished.transactions(&env),
        pairs(id, &["order", "payment", "ticket"])
    );
    assert_eq!(
        finished.related_services(&env),
        [
            "order".to_owned(),
            "payment".to_owned(),
            "ticket".to_owned()
        ]
        .into()
    );
    assert_eq!(
        finished.context(),
        &Booking {
            payment_id: Some("payment-1".to_owned()),
            ..booked()
        }
    );
    let mut expected = phase(Phase::Reserve, id, &["order", "payment", "ticket"]);
    expected.extend(phase(Phase::Commit, id, &["order", "payment", "ticket"]));
    assert_eq!(summaries(&harness.sent()[sent_before..]), expected);
    for participant in &participants {
        assert_eq!(
            participant.log(),
            [
                transaction_event(Phase::Reserve, id, true),
                transaction_event(Phase::Commit, id, true),
            ],
            "{}",
            participant.service()
        );
    }
}

#[tokio::test]
async fn service_names_are_title_cased_like_python() {
    assert_eq!(title_case("order"), "Order");
    assert_eq!(title_case("myService"), "Myservice");
    assert_eq!(title_case("order-service"), "Order-Service");
    assert_eq!(title_case("order2ship"), "Order2Ship");
    assert_eq!(
        Phase::Reserve.topic("order-service"),
        "_ReserveOrder-ServiceTransaction"
    );
    assert_eq!(
        Phase::Commit.topic("myService"),
        "_CommitMyserviceTransaction"
    );
    assert_eq!(
        Phase::Reject.topic("order2ship"),
        "_RejectOrder2ShipTransaction"
    );
}

async fn a_failed_sub_saga_rejects_the_participants_it_reached(saga: Arc<SagaDefinition<Booking>>) {
    let harness = Harness::new().await;
    let participants = harness.accepting(&["order", "payment", "ticket"]).await;
    let id = start(&harness, &saga, RunOptions::new()).await.id();
    succeed(&harness, "order-1", &["ticket"]).await;
    let create_payment_command = harness.sent().pop().expect("CreatePayment was published");
    assert_eq!(create_payment_command.topic, "CreatePayment");
    harness.clear();

    let outcome = harness
        .manager
        .resume(reply_to(
            &create_payment_command,
            SagaResponseStatus::SystemError,
            json!("card declined"),
            &["payment"],
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
    expected.extend(phase(Phase::Reject, id, &["order", "payment", "ticket"]));
    assert_eq!(summaries(&harness.sent()), expected);
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert_eq!(
        stored.transactions(&ExecutionEnv::new("order")),
        pairs(id, &["order", "payment", "ticket"])
    );
    let pay = stored.step("pay").expect("the conditional step ran");
    assert_eq!(pay.status(), StepStatus::ErroredByOnExecute);
    let inner = pay.inner().expect("the sub-saga ran");
    assert_eq!(inner.status(), SagaStatus::Errored);
    assert_eq!(inner.steps()[0].status(), StepStatus::ErroredByOnExecute);
    assert!(stored.step("create_ticket").is_none());
    for participant in &participants {
        assert_eq!(
            participant.log(),
            [transaction_event(Phase::Reject, id, true)],
            "{}",
            participant.service()
        );
    }
}

async fn committing_by_hand_needs_a_finished_execution_with_an_open_transaction(
    saga: Arc<SagaDefinition<Booking>>,
) {
    let harness = Harness::new().await;
    let _participants = harness.accepting(&["order", "ticket"]).await;
    let id = start(&harness, &saga, RunOptions::new().autocommit(false))
        .await
        .id();

    // Paused: not finished, so nothing can be committed and nothing is sent.
    let sent = harness.sent().len();
    let error = harness.manager.commit(id).await.expect_err("paused");
    assert!(
        matches!(
            error,
            SagaError::Execution(ExecutionError::CannotCommit {
                status: SagaStatus::Paused,
                transaction: TransactionState::Open,
                ..
            })
        ),
        "{error:?}"
    );
    assert_eq!(harness.sent().len(), sent);

    succeed(&harness, "order-1", &["ticket"]).await;
    succeed(&harness, "ticket-1", &["ticket"]).await;
    let finished = load(&harness, &saga, id).await;
    assert_eq!(finished.status(), SagaStatus::Finished);
    assert_eq!(finished.transaction(), TransactionState::Open);
    harness.clear();

    // Finished without autocommit: the commit reserves then commits every participant.
    assert_eq!(
        harness.manager.commit(id).await.expect("commits"),
        SagaStatus::Finished
    );
    let mut expected = phase(Phase::Reserve, id, &["order", "ticket"]);
    expected.extend(phase(Phase::Commit, id, &["order", "ticket"]));
    assert_eq!(summaries(&harness.sent()), expected);
    assert_eq!(
        load(&harness, &saga, id).await.transaction(),
        TransactionState::Committed
    );

    // Committed once: a second commit is refused and sends nothing.
    harness.clear();
    let error = harness.manager.commit(id).await.expect_err("committed");
    assert!(
        matches!(
            error,
            SagaError::Execution(ExecutionError::CannotCommit {
                status: SagaStatus::Finished,
                transaction: TransactionState::Committed,
                ..
            })
        ),
        "{error:?}"
    );
    assert!(harness.sent().is_empty());
}

async fn a_refused_commit_by_hand_compensates_then_rejects(saga: Arc<SagaDefinition<Booking>>) {
    let harness = Harness::new().await;
    let _order = harness.accepting(&["order"]).await;
    let _ticket = harness
        .participant("ticket")
        .reserve(|_| false)
        .spawn()
        .await
        .expect("starts");
    let id = start(&harness, &saga, RunOptions::new().autocommit(false))
        .await
        .id();
    succeed(&harness, "order-1", &["ticket"]).await;
    succeed(&harness, "ticket-1", &["ticket"]).await;
    harness.clear();

    let error = harness.manager.commit(id).await.expect_err("refused");
    assert!(
        matches!(
            error,
            SagaError::Execution(ExecutionError::CommitFailed { .. })
        ),
        "{error:?}"
    );
    assert_eq!(
        harness.sent_topics(),
        [
            "_ReserveOrderTransaction",
            "_ReserveTicketTransaction",
            "DeleteTicket",
            "DeleteOrder",
            "_RejectOrderTransaction",
            "_RejectTicketTransaction",
        ]
    );
    let stored = load(&harness, &saga, id).await;
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert_eq!(stored.transaction(), TransactionState::Rejected);
    assert!(stored.already_rollback());
}
