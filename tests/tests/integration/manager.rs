//! The manager's run modes: waiting in memory with in-process participants, pausing on disk across
//! calls, returning only the id, reply-wait timeouts (with and without raise-on-error, in memory and
//! on disk), and sagas started inside a request scope (inherited headers, related services, user).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use saga_runtime::broker::{BrokerMessage, Headers, header};
use saga_runtime::committer::Phase;
use saga_runtime::execution::{ExecutionRecord, ReplyRejection};
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::wiring::RequestHeaders;
use saga_runtime::wiring::*;
use saga_testkit::{ParticipantEvent, ScriptedParticipant};
use saga_tests::{Harness, eventually, reply_to};
use serde_json::json;
use uuid::Uuid;

/// The context of the sagas below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Order {
    validated: bool,
    ticket: Option<String>,
    payment: Option<String>,
}

async fn validate(order: &mut Order) -> Result<(), StepError> {
    order.validated = true;
    Ok(())
}

async fn create_ticket(_order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateTicket", &json!({"seat": "1A"}))
}

async fn ticket_created(order: &mut Order, reply: SagaResponse) -> Result<(), StepError> {
    order.ticket = Some(reply.content()?);
    Ok(())
}

async fn cancel_ticket(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CancelTicket", &order.ticket)
}

async fn create_payment(_order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreatePayment", &json!({"amount": 42}))
}

async fn payment_created(order: &mut Order, reply: SagaResponse) -> Result<(), StepError> {
    order.payment = Some(reply.content()?);
    Ok(())
}

async fn cancel_payment(_order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CancelPayment", &json!({"amount": 42}))
}

/// `validate` (local), `ticket` (CreateTicket / CancelTicket), `payment` (CreatePayment /
/// CancelPayment).
fn order_saga() -> Arc<SagaDefinition<Order>> {
    Arc::new(
        Saga::new("create-order")
            .local_step("validate")
            .on_execute(validate)
            .remote_step("ticket")
            .on_execute(create_ticket)
            .on_success(ticket_created)
            .on_failure(cancel_ticket)
            .remote_step("payment")
            .on_execute(create_payment)
            .on_success(payment_created)
            .on_failure(cancel_payment)
            .commit()
            .expect("a valid saga"),
    )
}

/// A one-step saga: `ticket` (CreateTicket / CancelTicket).
fn ticket_saga() -> Arc<SagaDefinition<Order>> {
    Arc::new(
        Saga::new("ticket-only")
            .remote_step("ticket")
            .on_execute(create_ticket)
            .on_success(ticket_created)
            .on_failure(cancel_ticket)
            .commit()
            .expect("a valid saga"),
    )
}

fn finished_order() -> Order {
    Order {
        validated: true,
        ticket: Some("T-1".to_owned()),
        payment: Some("P-1".to_owned()),
    }
}

fn sent_on(harness: &Harness, topic: &str) -> Vec<BrokerMessage> {
    harness
        .sent()
        .into_iter()
        .filter(|message| message.topic == topic)
        .collect()
}

fn only_sent_on(harness: &Harness, topic: &str) -> BrokerMessage {
    let mut found = sent_on(harness, topic);
    assert_eq!(found.len(), 1, "exactly one `{topic}` message was sent");
    found.remove(0)
}

fn stored_status(harness: &Harness, id: Uuid) -> Option<SagaStatus> {
    harness
        .repository
        .raw(id)
        .map(|json| ExecutionRecord::from_json(&json).expect("a stored record decodes"))
        .map(|record| record.status)
}

/// Starts `ticket` (answers CreateTicket with "T-1") and `payment` (answers CreatePayment with
/// "P-1"), plus `order` taking part in its own transactions.
async fn answering_participants(harness: &Harness) -> Vec<ScriptedParticipant> {
    let ticket = harness
        .participant("ticket")
        .command("CreateTicket", |_| {
            (SagaResponseStatus::Success, json!("T-1"))
        })
        .spawn()
        .await
        .expect("the participant starts");
    let payment = harness
        .participant("payment")
        .command("CreatePayment", |_| {
            (SagaResponseStatus::Success, json!("P-1"))
        })
        .spawn()
        .await
        .expect("the participant starts");
    let mut participants = harness.accepting(&["order"]).await;
    participants.push(ticket);
    participants.push(payment);
    participants
}

#[tokio::test]
async fn waits_in_memory_until_the_participants_answered_and_commits() {
    let harness = Harness::new().await;
    let participants = answering_participants(&harness).await;
    let saga = order_saga();

    let execution = harness
        .manager
        .run(Arc::clone(&saga), Order::default(), RunOptions::new())
        .await
        .expect("the saga finishes")
        .execution()
        .expect("the execution is returned by default");

    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(execution.context(), &finished_order());
    for step in execution.steps() {
        assert_eq!(step.status(), StepStatus::Finished, "step {}", step.name());
        assert!(!step.already_rollback());
    }
    assert_eq!(execution.steps().len(), 3);
    assert_eq!(
        harness.sent_topics(),
        vec![
            "CreateTicket",
            "CreatePayment",
            "_ReserveOrderTransaction",
            "_ReservePaymentTransaction",
            "_ReserveTicketTransaction",
            "_CommitOrderTransaction",
            "_CommitPaymentTransaction",
            "_CommitTicketTransaction",
        ]
    );
    // Every transaction message names this execution.
    let id = execution.id().to_string();
    for message in harness.sent() {
        assert_eq!(
            message.headers.get(header::SAGA),
            Some(&id),
            "{}",
            message.topic
        );
    }
    // The participants saw the commands and both phases of the commit.
    let ticket_log = participants[1].log();
    assert_eq!(
        ticket_log,
        vec![
            ParticipantEvent::Command {
                topic: "CreateTicket".to_owned(),
                status: SagaResponseStatus::Success,
            },
            ParticipantEvent::Transaction {
                phase: Phase::Reserve,
                transaction: execution.id(),
                accepted: true,
            },
            ParticipantEvent::Transaction {
                phase: Phase::Commit,
                transaction: execution.id(),
                accepted: true,
            },
        ]
    );
    // Stored at its end.
    assert_eq!(
        stored_status(&harness, execution.id()),
        Some(SagaStatus::Finished)
    );
}

#[tokio::test]
async fn pauses_on_disk_across_three_calls() {
    let harness = Harness::new().await;
    let _participants = harness.accepting(&["order", "ticket", "payment"]).await;
    let saga = order_saga();

    let first = harness
        .manager
        .run(
            Arc::clone(&saga),
            Order::default(),
            RunOptions::new().pause_on_disk(true),
        )
        .await
        .expect("the saga pauses")
        .execution()
        .expect("the execution is returned");
    let id = first.id();
    assert_eq!(first.status(), SagaStatus::Paused);
    assert_eq!(
        first.paused_step().map(|step| step.name().to_owned()),
        Some("ticket".to_owned())
    );
    assert_eq!(stored_status(&harness, id), Some(SagaStatus::Paused));
    assert_eq!(harness.sent_topics(), vec!["CreateTicket"]);

    let ticket = only_sent_on(&harness, "CreateTicket");
    let outcome = harness
        .manager
        .resume(reply_to(
            &ticket,
            SagaResponseStatus::Success,
            json!("T-1"),
            &["ticket"],
        ))
        .await
        .expect("the first reply is handled");
    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused
        }
    );
    let second = harness
        .manager
        .load(Arc::clone(&saga), id)
        .await
        .expect("the execution is stored");
    assert_eq!(second.status(), SagaStatus::Paused);
    assert_eq!(
        second.paused_step().map(|step| step.name().to_owned()),
        Some("payment".to_owned())
    );
    assert_eq!(second.context().ticket.as_deref(), Some("T-1"));
    assert_eq!(harness.sent_topics(), vec!["CreateTicket", "CreatePayment"]);

    let payment = only_sent_on(&harness, "CreatePayment");
    let outcome = harness
        .manager
        .resume(reply_to(
            &payment,
            SagaResponseStatus::Success,
            json!("P-1"),
            &["payment"],
        ))
        .await
        .expect("the second reply is handled");
    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
    let finished = harness
        .manager
        .load(saga, id)
        .await
        .expect("the execution is stored");
    assert_eq!(finished.status(), SagaStatus::Finished);
    assert_eq!(finished.context(), &finished_order());
    assert_eq!(
        harness.sent_topics(),
        vec![
            "CreateTicket",
            "CreatePayment",
            "_ReserveOrderTransaction",
            "_ReservePaymentTransaction",
            "_ReserveTicketTransaction",
            "_CommitOrderTransaction",
            "_CommitPaymentTransaction",
            "_CommitTicketTransaction",
        ]
    );
}

#[tokio::test]
async fn return_id_mode_returns_the_id_of_the_stored_execution() {
    let harness = Harness::new().await;
    let _participants = answering_participants(&harness).await;
    let saga = order_saga();

    let outcome = harness
        .manager
        .run(
            Arc::clone(&saga),
            Order::default(),
            RunOptions::new().return_execution(false),
        )
        .await
        .expect("the saga finishes");
    let RunOutcome::Id(id) = outcome else {
        panic!("expected RunOutcome::Id, got {outcome:?}");
    };
    let stored = harness
        .manager
        .load(saga, id)
        .await
        .expect("the execution is stored under the returned id");
    assert_eq!(stored.id(), id);
    assert_eq!(stored.status(), SagaStatus::Finished);
    assert_eq!(stored.context(), &finished_order());

    // Paused on disk too.
    let outcome = harness
        .manager
        .run(
            ticket_saga(),
            Order::default(),
            RunOptions::new()
                .return_execution(false)
                .pause_on_disk(true),
        )
        .await
        .expect("the saga runs");
    let RunOutcome::Id(id) = outcome else {
        panic!("expected RunOutcome::Id, got {outcome:?}");
    };
    // The ticket participant answers through the broker; the reply listener finishes it.
    eventually(|| stored_status(&harness, id) == Some(SagaStatus::Finished)).await;
}

/// The participants of the timeout tests: `ticket` answers CreateTicket, nobody answers
/// CreatePayment; `order` and `ticket` answer their transactions.
async fn timeout_participants(harness: &Harness) -> Vec<ScriptedParticipant> {
    let ticket = harness
        .participant("ticket")
        .command("CreateTicket", |_| {
            (SagaResponseStatus::Success, json!("T-1"))
        })
        .spawn()
        .await
        .expect("the participant starts");
    let mut participants = harness.accepting(&["order"]).await;
    participants.push(ticket);
    participants
}

/// What a saga whose payment step timed out published: the commands, the timed-out step's own
/// compensation (its participant may have acted), the earlier step's, then the rejects.
const TIMED_OUT_TOPICS: [&str; 6] = [
    "CreateTicket",
    "CreatePayment",
    "CancelPayment",
    "CancelTicket",
    "_RejectOrderTransaction",
    "_RejectTicketTransaction",
];

fn assert_timed_out(execution: &SagaExecution<Order>) {
    assert_eq!(execution.status(), SagaStatus::Errored);
    let ticket = execution.step("ticket").expect("the ticket step ran");
    assert_eq!(ticket.status(), StepStatus::Finished);
    assert!(ticket.already_rollback(), "the earlier step is compensated");
    let payment = execution.step("payment").expect("the payment step ran");
    assert_eq!(payment.status(), StepStatus::ErroredByOnExecute);
    assert_eq!(execution.context().ticket.as_deref(), Some("T-1"));
    assert_eq!(execution.context().payment, None);
}

#[tokio::test]
async fn reply_wait_timeout_fails_the_step_and_compensates_raising_an_error() {
    let harness = Harness::new().await;
    let _participants = timeout_participants(&harness).await;
    let saga = order_saga();

    let error = harness
        .manager
        .run(
            Arc::clone(&saga),
            Order::default(),
            RunOptions::new().timeout(Duration::from_millis(200)),
        )
        .await
        .expect_err("the timed-out saga raises");
    match error {
        SagaError::Execution(ExecutionError::StepFailed {
            id, step, status, ..
        }) => {
            assert_eq!(step, "payment");
            assert_eq!(status, StepStatus::ErroredByOnExecute);
            let stored = harness
                .manager
                .load(Arc::clone(&saga), id)
                .await
                .expect("the execution is stored");
            assert_timed_out(&stored);
        }
        other => panic!("expected StepFailed, got {other:?}"),
    }
    assert_eq!(harness.sent_topics(), TIMED_OUT_TOPICS);
}

#[tokio::test]
async fn reply_wait_timeout_without_raise_returns_the_errored_execution() {
    let harness = Harness::new().await;
    let _participants = timeout_participants(&harness).await;
    let saga = order_saga();

    let execution = harness
        .manager
        .run(
            Arc::clone(&saga),
            Order::default(),
            RunOptions::new()
                .timeout(Duration::from_millis(200))
                .raise_on_error(false),
        )
        .await
        .expect("no error without raise-on-error")
        .execution()
        .expect("the execution is returned");
    assert_timed_out(&execution);
    assert_eq!(harness.sent_topics(), TIMED_OUT_TOPICS);
    assert_eq!(
        stored_status(&harness, execution.id()),
        Some(SagaStatus::Errored)
    );

    // The reply that finally arrives changes nothing.
    let payment = only_sent_on(&harness, "CreatePayment");
    let late = reply_to(
        &payment,
        SagaResponseStatus::Success,
        json!("P-1"),
        &["payment"],
    );
    let before = harness.repository.raw(execution.id());
    let outcome = harness
        .manager
        .resume(late)
        .await
        .expect("the late reply is handled");
    assert_eq!(
        outcome,
        ReplyOutcome::Ignored {
            id: execution.id(),
            reason: ReplyRejection::ExecutionEnded(SagaStatus::Errored),
        }
    );
    assert_eq!(harness.repository.raw(execution.id()), before);
    assert_eq!(harness.sent_topics(), TIMED_OUT_TOPICS);
}

#[tokio::test]
async fn reply_wait_timeout_with_pause_on_disk_errors_the_stored_execution() {
    let harness = Harness::new().await;
    let _participants = timeout_participants(&harness).await;
    let saga = order_saga();

    let execution = harness
        .manager
        .run(
            Arc::clone(&saga),
            Order::default(),
            RunOptions::new()
                .pause_on_disk(true)
                .timeout(Duration::from_millis(200)),
        )
        .await
        .expect("the saga pauses")
        .execution()
        .expect("the execution is returned");
    let id = execution.id();
    assert_eq!(execution.status(), SagaStatus::Paused);

    eventually(|| stored_status(&harness, id) == Some(SagaStatus::Errored)).await;
    eventually(|| harness.sent_topics().len() == TIMED_OUT_TOPICS.len()).await;
    assert_eq!(harness.sent_topics(), TIMED_OUT_TOPICS);
    let stored = harness
        .manager
        .load(Arc::clone(&saga), id)
        .await
        .expect("the execution is stored");
    assert_timed_out(&stored);

    let payment = only_sent_on(&harness, "CreatePayment");
    let outcome = harness
        .manager
        .resume(reply_to(
            &payment,
            SagaResponseStatus::Success,
            json!("P-1"),
            &["payment"],
        ))
        .await
        .expect("the late reply is handled");
    assert_eq!(
        outcome,
        ReplyOutcome::Ignored {
            id,
            reason: ReplyRejection::ExecutionEnded(SagaStatus::Errored),
        }
    );
    let after = harness
        .manager
        .load(saga, id)
        .await
        .expect("the execution is stored");
    assert_eq!(after.version(), stored.version());
    assert_timed_out(&after);
    assert_eq!(harness.sent_topics(), TIMED_OUT_TOPICS);
}

fn request_headers(entries: &[(&str, &str)]) -> Headers {
    entries
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

#[tokio::test]
async fn request_scope_gains_related_services_and_commands_inherit_headers() {
    let harness = Harness::new().await;
    let _participants = answering_participants(&harness).await;
    let request = RequestHeaders::new(request_headers(&[
        ("hello", "world"),
        ("related_services", "order,one"),
    ]));

    let execution = request
        .clone()
        .scope(harness.manager.run(
            ticket_saga(),
            Order::default(),
            RunOptions::new().user("alice"),
        ))
        .await
        .expect("the saga finishes")
        .execution()
        .expect("the execution is returned");
    assert_eq!(execution.status(), SagaStatus::Finished);
    let id = execution.id().to_string();

    let headers = request.snapshot();
    assert_eq!(
        headers.get("related_services").map(String::as_str),
        Some("one,order,ticket")
    );
    assert_eq!(headers.get("hello").map(String::as_str), Some("world"));
    assert_eq!(headers.len(), 2, "nothing else is added: {headers:?}");

    let command = only_sent_on(&harness, "CreateTicket");
    let expected: BTreeMap<String, String> = request_headers(&[
        ("hello", "world"),
        ("saga", &id),
        ("transactions", &id),
        ("user", "alice"),
    ]);
    assert_eq!(command.headers, expected);
    assert_eq!(execution.user(), Some("alice"));
}

#[tokio::test]
async fn request_scope_nests_transactions_and_its_user_wins() {
    let harness = Harness::new().await;
    let _participants = answering_participants(&harness).await;
    let request = RequestHeaders::new(request_headers(&[
        ("hello", "world"),
        ("related_services", "order,one"),
        ("transactions", "outer-1,outer-2"),
        ("user", "carol"),
    ]));

    let execution = request
        .clone()
        .scope(harness.manager.run(
            order_saga(),
            Order::default(),
            RunOptions::new().user("alice"),
        ))
        .await
        .expect("the saga finishes")
        .execution()
        .expect("the execution is returned");
    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(execution.user(), Some("carol"));
    let id = execution.id().to_string();

    let headers = request.snapshot();
    assert_eq!(
        headers.get("related_services").map(String::as_str),
        Some("one,order,payment,ticket")
    );
    assert_eq!(headers.get("hello").map(String::as_str), Some("world"));
    assert_eq!(
        headers.get("transactions").map(String::as_str),
        Some("outer-1,outer-2")
    );
    assert_eq!(headers.get("user").map(String::as_str), Some("carol"));

    let nested = format!("outer-1,outer-2,{id}");
    let expected: BTreeMap<String, String> = request_headers(&[
        ("hello", "world"),
        ("saga", &id),
        ("transactions", &nested),
        ("user", "carol"),
    ]);
    for topic in ["CreateTicket", "CreatePayment"] {
        assert_eq!(only_sent_on(&harness, topic).headers, expected, "{topic}");
    }
}
