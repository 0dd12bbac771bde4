//! Stored executions (behaviour reference, sections 2 and 3): an execution survives a JSON round
//! trip in every state (created, paused at a remote step, paused inside a conditional, finished,
//! errored, compensated) with the reference status strings, and the decoded execution carries on;
//! decoding against the wrong definition or corrupt JSON is refused with a `LoadError`.

use std::collections::BTreeSet;
use std::sync::Arc;

use saga_runtime::broker::{BrokerMessage, Headers, header};
use saga_runtime::definition::Branch;
use saga_runtime::error::LoadError;
use saga_runtime::execution::{ExecutionEnv, ExecutionRecord, Outbox, Progress, ReplyRejection};
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::{SERVICE, reply_to};
use serde_json::{Value, json};

/// The context of the booking sagas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Booking {
    guest: String,
    vip: bool,
    fail_undo: bool,
    ticket: Option<String>,
    log: Vec<String>,
}

fn guest(name: &str) -> Booking {
    Booking {
        guest: name.to_owned(),
        ..Booking::default()
    }
}

async fn book(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("BookTicket", &json!({"guest": booking.guest}))
}

async fn book_vip(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("BookVipTicket", &json!({"guest": booking.guest}))
}

async fn booked(booking: &mut Booking, reply: SagaResponse) -> Result<(), StepError> {
    let ticket: String = reply.content()?;
    booking.log.push(format!("booked {ticket}"));
    booking.ticket = Some(ticket);
    Ok(())
}

async fn cancel(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CancelTicket", &json!({"ticket": booking.ticket}))
}

async fn prepare(booking: &mut Booking) -> Result<(), StepError> {
    booking.log.push("prepare".into());
    Ok(())
}

async fn unprepare(booking: &mut Booking) -> Result<(), StepError> {
    if booking.fail_undo {
        return Err(StepError::msg("cannot unprepare"));
    }
    booking.log.push("unprepare".into());
    Ok(())
}

async fn confirm(booking: &mut Booking) -> Result<(), StepError> {
    booking.log.push("confirm".into());
    Ok(())
}

async fn pay(_: &mut Booking) -> Result<(), StepError> {
    Err(StepError::msg("no funds"))
}

async fn regular(booking: &mut Booking) -> Result<(), StepError> {
    booking.log.push("regular".into());
    Ok(())
}

async fn is_vip(booking: &Booking) -> Result<bool, StepError> {
    Ok(booking.vip)
}

/// book (remote, undo: cancel) -> confirm (local).
fn remote_first() -> Arc<SagaDefinition<Booking>> {
    Arc::new(
        Saga::new("book-remote")
            .remote_step("book")
            .on_execute(book)
            .on_success(booked)
            .on_failure(cancel)
            .local_step("confirm")
            .on_execute(confirm)
            .commit()
            .expect("valid"),
    )
}

/// prepare (local) -> route (vip: a remote booking; else: a local step) -> confirm (local).
fn conditional() -> Arc<SagaDefinition<Booking>> {
    let vip = Saga::new("vip-booking")
        .remote_step("book_vip")
        .on_execute(book_vip)
        .on_success(booked)
        .on_failure(cancel)
        .commit()
        .expect("valid");
    let plain = Saga::new("regular-booking")
        .local_step("regular")
        .on_execute(regular)
        .commit()
        .expect("valid");
    Arc::new(
        Saga::new("book-conditional")
            .local_step("prepare")
            .on_execute(prepare)
            .conditional_step("route")
            .if_then(is_vip, vip)
            .else_then(plain)
            .local_step("confirm")
            .on_execute(confirm)
            .commit()
            .expect("valid"),
    )
}

/// prepare (local, undo: unprepare) -> book (remote, undo: cancel) -> pay (local, fails).
fn failing() -> Arc<SagaDefinition<Booking>> {
    Arc::new(
        Saga::new("book-failing")
            .local_step("prepare")
            .on_execute(prepare)
            .on_failure(unprepare)
            .remote_step("book")
            .on_execute(book)
            .on_success(booked)
            .on_failure(cancel)
            .local_step("pay")
            .on_execute(pay)
            .commit()
            .expect("valid"),
    )
}

fn env() -> ExecutionEnv {
    ExecutionEnv::new(SERVICE)
}

fn encode<C: Context>(execution: &SagaExecution<C>) -> (String, Value) {
    let json = execution.to_json().expect("the execution encodes");
    let value = serde_json::from_str(&json).expect("to_json writes JSON");
    (json, value)
}

/// Decodes `json` against `definition` and checks that nothing was lost.
fn round_trip<C: Context + PartialEq + std::fmt::Debug>(
    definition: &Arc<SagaDefinition<C>>,
    execution: &SagaExecution<C>,
) -> SagaExecution<C> {
    let (json, _) = encode(execution);
    let decoded = SagaExecution::from_json(Arc::clone(definition), &json).expect("it decodes");
    assert_eq!(decoded.id(), execution.id());
    assert_eq!(decoded.status(), execution.status());
    assert_eq!(decoded.steps(), execution.steps());
    assert_eq!(decoded.context(), execution.context());
    assert_eq!(
        decoded.paused_step().map(|step| step.name().to_owned()),
        execution.paused_step().map(|step| step.name().to_owned())
    );
    assert_eq!(decoded.waiting_request(), execution.waiting_request());
    assert_eq!(decoded.already_rollback(), execution.already_rollback());
    assert_eq!(decoded.user(), execution.user());
    assert_eq!(decoded.inherited_headers(), execution.inherited_headers());
    assert_eq!(decoded.definition().fingerprint(), definition.fingerprint());

    // The record form says the same, and survives its own round trip.
    let record = execution.to_record().expect("the record encodes");
    assert_eq!(
        ExecutionRecord::from_json(&record.to_json()).expect("the record decodes"),
        record
    );
    assert_eq!(
        serde_json::from_str::<ExecutionRecord>(&json).expect("to_json writes a record"),
        record
    );
    let from_record =
        SagaExecution::from_record(Arc::clone(definition), record).expect("the record loads");
    assert_eq!(from_record.status(), execution.status());
    assert_eq!(from_record.steps(), execution.steps());
    assert_eq!(from_record.context(), execution.context());
    decoded
}

/// The headers every command of `execution` carries (user `u`, no inherited headers).
fn command_headers(execution: &SagaExecution<Booking>) -> Headers {
    let id = execution.id().to_string();
    [
        (header::SAGA.to_owned(), id.clone()),
        (header::TRANSACTIONS.to_owned(), id),
        (header::USER.to_owned(), "u".to_owned()),
    ]
    .into_iter()
    .collect()
}

fn the_only_message(outbox: &mut Outbox) -> BrokerMessage {
    let mut messages = outbox.drain();
    assert_eq!(messages.len(), 1, "{messages:?}");
    messages.pop().expect("one message")
}

fn step_statuses(steps: &[saga_runtime::execution::StepExecution]) -> Vec<(&str, StepStatus)> {
    steps
        .iter()
        .map(|step| (step.name(), step.status()))
        .collect()
}

#[tokio::test]
async fn a_created_execution_round_trips_and_then_runs() {
    let definition = remote_first();
    let execution = SagaExecution::new(Arc::clone(&definition), guest("ada")).with_user("u");
    let (_, value) = encode(&execution);
    assert_eq!(value["status"], "created");
    assert_eq!(value["saga"], "book-remote");
    assert_eq!(value["id"], execution.id().to_string());
    assert_eq!(value["fingerprint"], definition.fingerprint().to_string());
    assert_eq!(value["user"], "u");
    assert_eq!(value["steps"], json!([]));
    assert_eq!(value["paused_step"], Value::Null);
    assert_eq!(value["already_rollback"], false);
    assert_eq!(
        value["context"],
        json!({"guest": "ada", "vip": false, "fail_undo": false, "ticket": null, "log": []})
    );

    let mut decoded = round_trip(&definition, &execution);
    assert_eq!(decoded.status(), SagaStatus::Created);
    assert!(decoded.steps().is_empty());
    assert_eq!(decoded.user(), Some("u"));

    let mut outbox = Outbox::new();
    assert_eq!(
        decoded
            .execute(None, &env(), &mut outbox)
            .await
            .expect("it runs"),
        Progress::Paused
    );
    let command = the_only_message(&mut outbox);
    assert_eq!(command.topic, "BookTicket");
    assert_eq!(command.headers, command_headers(&decoded));
    assert_eq!(command.payload, json!({"guest": "ada"}));
}

#[tokio::test]
async fn an_execution_paused_at_its_first_step_round_trips_and_resumes() {
    let definition = remote_first();
    let env = env();
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(Arc::clone(&definition), guest("ada")).with_user("u");
    assert_eq!(
        execution
            .execute(None, &env, &mut outbox)
            .await
            .expect("pauses"),
        Progress::Paused
    );
    let command = the_only_message(&mut outbox);
    assert_eq!(command.topic, "BookTicket");
    assert_eq!(command.reply_to.as_deref(), Some("orderReply"));
    assert_eq!(command.headers, command_headers(&execution));

    let (_, value) = encode(&execution);
    assert_eq!(value["status"], "paused");
    assert_eq!(value["paused_step"], "book");
    assert_eq!(value["steps"][0]["name"], "book");
    assert_eq!(value["steps"][0]["kind"], "remote");
    assert_eq!(value["steps"][0]["status"], "paused-by-on-execute");
    assert_eq!(value["steps"][0]["request_id"], command.id.to_string());
    assert_eq!(value["steps"].as_array().map(Vec::len), Some(1));

    let mut decoded = round_trip(&definition, &execution);
    assert_eq!(decoded.status(), SagaStatus::Paused);
    assert_eq!(decoded.paused_step().map(|step| step.name()), Some("book"));
    assert_eq!(decoded.waiting_request(), Some(command.id));
    assert_eq!(
        step_statuses(decoded.steps()),
        [("book", StepStatus::PausedByOnExecute)]
    );

    // Without a reply it stays paused and sends nothing again.
    assert_eq!(
        decoded
            .execute(None, &env, &mut outbox)
            .await
            .expect("still paused"),
        Progress::Paused
    );
    assert!(outbox.is_empty());

    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-1"),
        &["ticket"],
    );
    assert_eq!(
        decoded
            .execute(Some(reply.clone()), &env, &mut outbox)
            .await
            .expect("the decoded execution resumes"),
        Progress::Finished
    );
    assert!(outbox.is_empty());
    assert_eq!(decoded.status(), SagaStatus::Finished);
    assert_eq!(
        step_statuses(decoded.steps()),
        [
            ("book", StepStatus::Finished),
            ("confirm", StepStatus::Finished)
        ]
    );
    assert_eq!(
        decoded.context(),
        &Booking {
            ticket: Some("T-1".into()),
            log: vec!["booked T-1".into(), "confirm".into()],
            ..guest("ada")
        }
    );
    assert_eq!(
        decoded
            .step("book")
            .map(|step| step.related_services().clone()),
        Some(BTreeSet::from(["order".to_owned(), "ticket".to_owned()]))
    );
    // The same reply again is a duplicate.
    let error = decoded
        .execute(Some(reply), &env, &mut outbox)
        .await
        .expect_err("the execution ended");
    assert!(
        matches!(
            error,
            ExecutionError::ReplyRejected {
                reason: ReplyRejection::ExecutionEnded(SagaStatus::Finished),
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_execution_paused_inside_a_conditional_round_trips_and_resumes() {
    let definition = conditional();
    let env = env();
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(
        Arc::clone(&definition),
        Booking {
            vip: true,
            ..guest("grace")
        },
    )
    .with_user("u");
    assert_eq!(
        execution
            .execute(None, &env, &mut outbox)
            .await
            .expect("pauses"),
        Progress::Paused
    );
    let command = the_only_message(&mut outbox);
    assert_eq!(command.topic, "BookVipTicket");
    assert_eq!(command.headers, command_headers(&execution));

    let (_, value) = encode(&execution);
    assert_eq!(value["status"], "paused");
    assert_eq!(value["paused_step"], "route");
    assert_eq!(value["steps"][0]["status"], "finished");
    let route = &value["steps"][1];
    assert_eq!(route["name"], "route");
    assert_eq!(route["kind"], "conditional");
    assert_eq!(route["status"], "paused-by-on-execute");
    assert_eq!(route["branch"], json!({"if": 0}));
    assert_eq!(route["inner"]["saga"], "vip-booking");
    assert_eq!(route["inner"]["status"], "paused");
    assert_eq!(route["inner"]["id"], execution.id().to_string());
    assert_eq!(route["inner"]["user"], "u");
    assert_eq!(route["inner"]["steps"][0]["name"], "book_vip");
    assert_eq!(route["inner"]["steps"][0]["status"], "paused-by-on-execute");
    assert_eq!(
        route["inner"]["steps"][0]["request_id"],
        command.id.to_string()
    );

    let mut decoded = round_trip(&definition, &execution);
    assert_eq!(decoded.status(), SagaStatus::Paused);
    assert_eq!(decoded.paused_step().map(|step| step.name()), Some("route"));
    assert_eq!(decoded.waiting_request(), Some(command.id));
    let route = decoded.step("route").expect("the conditional step started");
    assert_eq!(route.branch(), Some(Branch::If(0)));
    let inner = route.inner().expect("the sub-saga runs");
    assert_eq!(inner.saga(), "vip-booking");
    assert_eq!(inner.status(), SagaStatus::Paused);
    assert_eq!(inner.id(), execution.id());
    assert_eq!(
        step_statuses(inner.steps()),
        [("book_vip", StepStatus::PausedByOnExecute)]
    );

    // The choice is never re-evaluated: the condition would now pick the else branch.
    decoded.context_mut().vip = false;
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("VIP-7"),
        &["ticket"],
    );
    assert_eq!(
        decoded
            .execute(Some(reply), &env, &mut outbox)
            .await
            .expect("the decoded execution resumes"),
        Progress::Finished
    );
    assert!(outbox.is_empty());
    assert_eq!(decoded.status(), SagaStatus::Finished);
    assert_eq!(
        step_statuses(decoded.steps()),
        [
            ("prepare", StepStatus::Finished),
            ("route", StepStatus::Finished),
            ("confirm", StepStatus::Finished),
        ]
    );
    let inner = decoded
        .step("route")
        .and_then(|step| step.inner())
        .expect("the sub-saga ran");
    assert_eq!(inner.status(), SagaStatus::Finished);
    assert_eq!(
        step_statuses(inner.steps()),
        [("book_vip", StepStatus::Finished)]
    );
    assert_eq!(
        decoded.context(),
        &Booking {
            ticket: Some("VIP-7".into()),
            log: vec!["prepare".into(), "booked VIP-7".into(), "confirm".into()],
            ..guest("grace")
        }
    );
    assert_eq!(
        decoded.transactions(&env),
        vec![
            (decoded.id(), "order".to_owned()),
            (decoded.id(), "ticket".to_owned()),
        ]
    );
    // The finished state round-trips too.
    let again = round_trip(&definition, &decoded);
    assert_eq!(again.status(), SagaStatus::Finished);
}

#[tokio::test]
async fn a_finished_execution_round_trips_and_can_still_be_compensated() {
    let definition = remote_first();
    let env = env();
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(Arc::clone(&definition), guest("ada")).with_user("u");
    execution
        .execute(None, &env, &mut outbox)
        .await
        .expect("pauses");
    let command = the_only_message(&mut outbox);
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-2"),
        &["ticket"],
    );
    execution
        .execute(Some(reply), &env, &mut outbox)
        .await
        .expect("finishes");

    let (_, value) = encode(&execution);
    assert_eq!(value["status"], "finished");
    assert_eq!(value["paused_step"], Value::Null);
    assert_eq!(value["steps"][0]["status"], "finished");
    assert_eq!(
        value["steps"][0]["related_services"],
        json!(["order", "ticket"])
    );
    assert_eq!(value["steps"][1]["status"], "finished");
    assert_eq!(value["steps"][1]["kind"], "local");

    let mut decoded = round_trip(&definition, &execution);
    assert_eq!(decoded.status(), SagaStatus::Finished);
    let error = decoded
        .execute(None, &env, &mut outbox)
        .await
        .expect_err("a finished execution does not run again");
    assert!(
        matches!(
            error,
            ExecutionError::AlreadyExecuted {
                status: SagaStatus::Finished,
                ..
            }
        ),
        "{error:?}"
    );
    decoded
        .rollback(&env, &mut outbox)
        .await
        .expect("the decoded execution compensates");
    let compensation = the_only_message(&mut outbox);
    assert_eq!(compensation.topic, "CancelTicket");
    assert_eq!(compensation.payload, json!({"ticket": "T-2"}));
    assert_eq!(compensation.headers, command_headers(&decoded));
    assert!(decoded.already_rollback());
}

#[tokio::test]
async fn an_errored_execution_round_trips_and_retries_only_the_failed_compensation() {
    let definition = failing();
    let env = env();
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(
        Arc::clone(&definition),
        Booking {
            fail_undo: true,
            ..guest("ada")
        },
    )
    .with_user("u");
    execution
        .execute(None, &env, &mut outbox)
        .await
        .expect("pauses");
    let command = the_only_message(&mut outbox);
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-3"),
        &["ticket"],
    );
    let error = execution
        .execute(Some(reply.clone()), &env, &mut outbox)
        .await
        .expect_err("pay fails");
    assert!(
        matches!(
            &error,
            ExecutionError::StepFailed {
                step, status: StepStatus::ErroredOnExecute, cause, compensation_failures, ..
            } if step == "pay"
                && cause.to_string() == "no funds"
                && compensation_failures == &["prepare"]
        ),
        "{error:?}"
    );
    // The booking was cancelled; `prepare`'s compensation failed.
    let compensation = the_only_message(&mut outbox);
    assert_eq!(compensation.topic, "CancelTicket");

    let (_, value) = encode(&execution);
    assert_eq!(value["status"], "errored");
    assert_eq!(value["already_rollback"], false);
    assert_eq!(value["steps"][0]["status"], "errored-on-failure");
    assert_eq!(value["steps"][0]["error"], "cannot unprepare");
    assert_eq!(value["steps"][1]["status"], "finished");
    assert_eq!(value["steps"][1]["already_rollback"], true);
    assert_eq!(value["steps"][2]["status"], "errored-on-execute");
    assert_eq!(value["steps"][2]["error"], "no funds");

    let mut decoded = round_trip(&definition, &execution);
    assert_eq!(decoded.status(), SagaStatus::Errored);
    assert!(!decoded.already_rollback());
    assert_eq!(
        step_statuses(decoded.steps()),
        [
            ("prepare", StepStatus::ErroredOnFailure),
            ("book", StepStatus::Finished),
            ("pay", StepStatus::ErroredOnExecute),
        ]
    );
    let error = decoded
        .execute(None, &env, &mut outbox)
        .await
        .expect_err("an errored execution does not run again");
    assert!(
        matches!(
            error,
            ExecutionError::AlreadyExecuted {
                status: SagaStatus::Errored,
                ..
            }
        ),
        "{error:?}"
    );
    let error = decoded
        .execute(Some(reply), &env, &mut outbox)
        .await
        .expect_err("a late reply is ignored");
    assert!(
        matches!(
            error,
            ExecutionError::ReplyRejected {
                reason: ReplyRejection::ExecutionEnded(SagaStatus::Errored),
                ..
            }
        ),
        "{error:?}"
    );

    // Retried after the cause is fixed: only `prepare` is compensated; the booking is not
    // cancelled twice.
    decoded.context_mut().fail_undo = false;
    decoded
        .rollback(&env, &mut outbox)
        .await
        .expect("the retry succeeds");
    assert!(outbox.is_empty(), "{:?}", outbox.messages());
    assert!(decoded.already_rollback());
    assert_eq!(
        decoded.context().log,
        ["prepare", "booked T-3", "unprepare"]
    );
    assert_eq!(
        decoded
            .steps()
            .iter()
            .map(|step| (step.name(), step.status(), step.already_rollback()))
            .collect::<Vec<_>>(),
        [
            ("prepare", StepStatus::Finished, true),
            ("book", StepStatus::Finished, true),
            ("pay", StepStatus::ErroredOnExecute, false),
        ]
    );
}

#[tokio::test]
async fn an_execution_errored_by_a_system_error_reply_round_trips() {
    let definition = remote_first();
    let env = env();
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(Arc::clone(&definition), guest("ada")).with_user("u");
    execution
        .execute(None, &env, &mut outbox)
        .await
        .expect("pauses");
    let command = the_only_message(&mut outbox);
    let reply = reply_to(
        &command,
        SagaResponseStatus::SystemError,
        json!("crashed"),
        &["ticket"],
    );
    let error = execution
        .execute(Some(reply), &env, &mut outbox)
        .await
        .expect_err("the step fails");
    assert!(
        matches!(
            &error,
            ExecutionError::StepFailed { step, status: StepStatus::ErroredByOnExecute, .. }
                if step == "book"
        ),
        "{error:?}"
    );
    // No self-compensation after a SYSTEM_ERROR reply.
    assert!(outbox.is_empty(), "{:?}", outbox.messages());

    let (_, value) = encode(&execution);
    assert_eq!(value["status"], "errored");
    assert_eq!(value["paused_step"], Value::Null);
    assert_eq!(value["steps"][0]["status"], "errored-by-on-execute");
    assert_eq!(
        value["steps"][0]["related_services"],
        json!(["order", "ticket"])
    );

    let decoded = round_trip(&definition, &execution);
    assert_eq!(decoded.status(), SagaStatus::Errored);
    assert_eq!(
        step_statuses(decoded.steps()),
        [("book", StepStatus::ErroredByOnExecute)]
    );
}

#[tokio::test]
async fn a_compensated_execution_round_trips_and_is_not_compensated_again() {
    let definition = failing();
    let env = env();
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(Arc::clone(&definition), guest("ada")).with_user("u");
    execution
        .execute(None, &env, &mut outbox)
        .await
        .expect("pauses");
    let command = the_only_message(&mut outbox);
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-4"),
        &["ticket"],
    );
    execution
        .execute(Some(reply), &env, &mut outbox)
        .await
        .expect_err("pay fails");
    let compensation = the_only_message(&mut outbox);
    assert_eq!(compensation.topic, "CancelTicket");
    assert_eq!(compensation.payload, json!({"ticket": "T-4"}));
    assert!(execution.already_rollback());

    let (_, value) = encode(&execution);
    assert_eq!(value["status"], "errored");
    assert_eq!(value["already_rollback"], true);
    assert_eq!(value["steps"][0]["status"], "finished");
    assert_eq!(value["steps"][0]["already_rollback"], true);
    assert_eq!(value["steps"][1]["status"], "finished");
    assert_eq!(value["steps"][1]["already_rollback"], true);
    assert_eq!(value["steps"][2]["status"], "errored-on-execute");
    assert_eq!(value["steps"][2]["already_rollback"], false);

    let mut decoded = round_trip(&definition, &execution);
    assert!(decoded.already_rollback());
    assert_eq!(
        decoded.context().log,
        ["prepare", "booked T-4", "unprepare"]
    );
    let error = decoded
        .rollback(&env, &mut outbox)
        .await
        .expect_err("compensated already");
    assert!(
        matches!(&error, ExecutionError::AlreadyRolledBack { id, what } if *id == execution.id() && what == "book-failing"),
        "{error:?}"
    );
    assert!(outbox.is_empty(), "{:?}", outbox.messages());
    assert_eq!(
        decoded.context().log,
        ["prepare", "booked T-4", "unprepare"]
    );
}

// --- load errors -------------------------------------------------------------------------------

async fn paused_json() -> (SagaExecution<Booking>, String) {
    let mut execution = SagaExecution::new(remote_first(), guest("ada")).with_user("u");
    execution
        .execute(None, &env(), &mut Outbox::new())
        .await
        .expect("pauses");
    let json = execution.to_json().expect("encodes");
    (execution, json)
}

#[tokio::test]
async fn decoding_against_a_changed_definition_is_a_fingerprint_mismatch() {
    let (execution, json) = paused_json().await;
    let stored = execution.definition().fingerprint();
    // Same name, one more handler slot.
    let changed = Arc::new(
        Saga::new("book-remote")
            .remote_step("book")
            .on_execute(book)
            .on_success(booked)
            .on_error(booked)
            .on_failure(cancel)
            .local_step("confirm")
            .on_execute(confirm)
            .commit()
            .expect("valid"),
    );
    let registered = changed.fingerprint();
    assert_ne!(stored, registered);

    let error =
        SagaExecution::from_json(Arc::clone(&changed), &json).expect_err("the definition changed");
    assert_eq!(
        error,
        LoadError::FingerprintMismatch {
            id: execution.id(),
            saga: "book-remote".into(),
            stored,
            registered,
        }
    );
    let message = error.to_string();
    assert!(message.contains(&stored.to_string()), "{message}");
    assert!(message.contains(&registered.to_string()), "{message}");
    assert!(message.contains("`book-remote`"), "{message}");

    let record = execution.to_record().expect("encodes");
    assert_eq!(
        SagaExecution::from_record(changed, record).expect_err("the definition changed"),
        error
    );
    // The original definition, rebuilt, still loads it.
    SagaExecution::from_json(remote_first(), &json).expect("same fingerprint");
}

#[tokio::test]
async fn decoding_against_another_saga_is_wrong_saga() {
    let (execution, json) = paused_json().await;
    let error = SagaExecution::from_json(failing(), &json).expect_err("another saga");
    assert_eq!(
        error,
        LoadError::WrongSaga {
            id: execution.id(),
            stored: "book-remote".into(),
            expected: "book-failing".into(),
        }
    );
    let message = error.to_string();
    assert!(message.contains("`book-remote`"), "{message}");
    assert!(message.contains("`book-failing`"), "{message}");
}

#[tokio::test]
async fn corrupt_json_is_refused() {
    let (execution, json) = paused_json().await;

    for cut in [0, 1, json.len() / 2, json.len() - 1] {
        let truncated = &json[..cut];
        let error =
            SagaExecution::from_json(remote_first(), truncated).expect_err("truncated JSON");
        assert!(
            matches!(&error, LoadError::Corrupt { .. }),
            "cut at {cut}: {error:?}"
        );
        assert!(
            matches!(
                ExecutionRecord::from_json(truncated),
                Err(LoadError::Corrupt { .. })
            ),
            "cut at {cut}"
        );
    }

    // A context that does not decode as the saga's context type.
    let mut value: Value = serde_json::from_str(&json).expect("JSON");
    value["context"] = json!({"guest": 42});
    let error = SagaExecution::from_json(remote_first(), &value.to_string())
        .expect_err("the context does not decode");
    assert!(
        matches!(&error, LoadError::Corrupt { id, .. } if *id == execution.id()),
        "{error:?}"
    );

    // Step executions that do not match the definition's steps.
    let mut value: Value = serde_json::from_str(&json).expect("JSON");
    value["steps"][0]["name"] = json!("confirm");
    let error = SagaExecution::from_json(remote_first(), &value.to_string())
        .expect_err("the steps do not match");
    assert!(
        matches!(&error, LoadError::Corrupt { id, .. } if *id == execution.id()),
        "{error:?}"
    );

    // An unknown status string.
    let mut value: Value = serde_json::from_str(&json).expect("JSON");
    value["status"] = json!("sleeping");
    let error =
        SagaExecution::from_json(remote_first(), &value.to_string()).expect_err("no such status");
    assert!(matches!(&error, LoadError::Corrupt { .. }), "{error:?}");
}

/// A change to a stored step execution.
type Edit = Box<dyn FnOnce(&mut Value)>;

/// Edits the first step of a stored execution and decodes it against `definition`.
fn decode_with_first_step(
    definition: &Arc<SagaDefinition<Booking>>,
    json: &str,
    edit: impl FnOnce(&mut Value),
) -> Result<SagaExecution<Booking>, LoadError> {
    let mut value: Value = serde_json::from_str(json).expect("JSON");
    edit(&mut value["steps"][0]);
    SagaExecution::from_json(Arc::clone(definition), &value.to_string())
}

#[tokio::test]
async fn step_states_the_engine_never_writes_are_refused() {
    // A finished execution of prepare -> route (regular) -> confirm, to tamper with.
    let mut execution = SagaExecution::new(conditional(), guest("bob"));
    execution
        .execute(None, &env(), &mut Outbox::new())
        .await
        .expect("finishes");
    let json = execution.to_json().expect("encodes");
    let definition = conditional();
    assert!(decode_with_first_step(&definition, &json, |_| {}).is_ok());

    let cases: [(&str, Edit, &str); 4] = [
        (
            "a local step waiting for a reply",
            Box::new(|step| step["status"] = json!("paused-by-on-execute")),
            "which a local step never takes",
        ),
        (
            "a local step with a command id",
            Box::new(|step| step["request_id"] = json!(uuid::Uuid::new_v4())),
            "with a command id",
        ),
        (
            "a local step with a sub-saga",
            Box::new(|step| step["branch"] = json!("else")),
            "with a sub-saga",
        ),
        (
            "an unfinished step before later ones",
            Box::new(|step| step["status"] = json!("running-on-execute")),
            "but later steps ran",
        ),
    ];
    for (case, edit, expected) in cases {
        match decode_with_first_step(&definition, &json, edit) {
            Err(LoadError::Corrupt { id, reason }) => {
                assert_eq!(id, execution.id(), "{case}");
                assert!(reason.contains(expected), "{case}: {reason}");
            }
            other => panic!("{case}: expected a corrupt record, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_remote_step_waiting_without_its_command_is_refused() {
    let (execution, json) = paused_json().await;
    match decode_with_first_step(&remote_first(), &json, |step| {
        step.as_object_mut()
            .expect("an object")
            .remove("request_id");
    }) {
        Err(LoadError::Corrupt { id, reason }) => {
            assert_eq!(id, execution.id());
            assert!(reason.contains("names no command"), "{reason}");
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}
