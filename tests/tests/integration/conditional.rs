//! Conditional steps run through the manager: an inner remote step pauses and resumes the outer
//! saga, the branch is chosen once, a failing sub-saga rolls back its own steps before the outer
//! ones, a step without a matching branch does nothing, and a failing condition fails the step.
//!
//! Every scenario runs twice, as `<scenario>::builder` and `<scenario>::macros`: once with the sagas
//! built with the builder API, once with the same sagas declared with the attribute macros (same
//! step code, same handlers, same persisted names, sub-sagas as `#[saga]` types).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use saga_runtime::broker::{BrokerMessage, header};
use saga_runtime::definition::Branch;
use saga_runtime::execution::StepExecution;
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::{Harness, assert_same_definition, reply_to};
use serde_json::json;

/// The context of the sagas below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Trip {
    /// What the local handlers did, in order.
    log: Vec<String>,
    /// Written by the inner remote step's `on_success`.
    ticket: Option<String>,
    /// Written by the outer step after the conditional, from `ticket`.
    confirmed: Option<String>,
    /// Whether the trip needs a ticket (read by the conditions).
    needs_ticket: bool,
}

/// Counts its calls and answers whether the trip needs a ticket.
async fn needs_ticket(trip: &Trip, calls: &Arc<AtomicUsize>) -> Result<bool, StepError> {
    calls.fetch_add(1, Ordering::SeqCst);
    Ok(trip.needs_ticket)
}

async fn condition_fails(_trip: &Trip) -> Result<bool, StepError> {
    Err(StepError::msg("the condition cannot be evaluated"))
}

// The step functions are the `on_execute` code of both definitions: the macro declares the step
// from the function, the builder names its code `prepare::call`.
#[local_step(on_failure = undo_prepare)]
async fn prepare(trip: &mut Trip) -> Result<(), StepError> {
    trip.log.push("prepare".to_owned());
    Ok(())
}

async fn undo_prepare(trip: &mut Trip) -> Result<(), StepError> {
    trip.log.push("undo-prepare".to_owned());
    Ok(())
}

#[remote_step(name = "pay", on_success = payment_created, on_failure = refund_payment)]
async fn create_payment(_trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreatePayment", &json!({"amount": 10}))
}

async fn payment_created(trip: &mut Trip, _reply: SagaResponse) -> Result<(), StepError> {
    trip.log.push("paid".to_owned());
    Ok(())
}

async fn refund_payment(_trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("RefundPayment", &json!({"amount": 10}))
}

#[remote_step(on_success = ticket_created, on_failure = cancel_ticket)]
async fn create_ticket(_trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateTicket", &json!({"seat": "12A"}))
}

async fn ticket_created(trip: &mut Trip, reply: SagaResponse) -> Result<(), StepError> {
    let ticket: String = reply.content()?;
    trip.log.push(format!("ticket {ticket}"));
    trip.ticket = Some(ticket);
    Ok(())
}

async fn cancel_ticket(trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CancelTicket", &trip.ticket)
}

#[local_step]
async fn fail(_trip: &mut Trip) -> Result<(), StepError> {
    Err(StepError::msg("the second inner step fails"))
}

#[local_step(on_failure = undo_hold)]
async fn hold(trip: &mut Trip) -> Result<(), StepError> {
    trip.log.push("hold".to_owned());
    Ok(())
}

async fn undo_hold(trip: &mut Trip) -> Result<(), StepError> {
    trip.log.push("undo-hold".to_owned());
    Ok(())
}

#[local_step]
async fn confirm(trip: &mut Trip) -> Result<(), StepError> {
    let ticket = trip
        .ticket
        .clone()
        .ok_or_else(|| StepError::msg("the inner step wrote no ticket"))?;
    trip.confirmed = Some(ticket);
    trip.log.push("confirm".to_owned());
    Ok(())
}

/// `prepare` (local), `route` (if the trip needs a ticket: `ticketing`, a remote CreateTicket step),
/// `confirm` (local, reads what the inner step wrote).
fn ticketing_saga(calls: Arc<AtomicUsize>) -> SagaDefinition<Trip> {
    let ticketing = Saga::new("ticketing")
        .remote_step("create_ticket")
        .on_execute(create_ticket::call)
        .on_success(ticket_created)
        .on_failure(cancel_ticket)
        .commit()
        .expect("a valid sub-saga");
    Saga::new("trip")
        .local_step("prepare")
        .on_execute(prepare::call)
        .on_failure(undo_prepare)
        .conditional_step("route")
        .if_then_with(needs_ticket, calls, ticketing)
        .local_step("confirm")
        .on_execute(confirm::call)
        .commit()
        .expect("a valid saga")
}

/// The sub-saga that never runs (its condition never holds in these tests).
fn never_saga() -> SagaDefinition<Trip> {
    Saga::new("never")
        .local_step("never")
        .on_execute(confirm::call)
        .commit()
        .expect("a valid sub-saga")
}

/// `prepare`, `pay` (remote), `route` (if the trip needs a ticket: `never`, else `fallback`: a
/// remote `ticket` step then a failing local step), `confirm`.
fn trip_else_saga(calls: Arc<AtomicUsize>) -> SagaDefinition<Trip> {
    let fallback = Saga::new("fallback")
        .remote_step("ticket")
        .on_execute(create_ticket::call)
        .on_success(ticket_created)
        .on_failure(cancel_ticket)
        .local_step("fail")
        .on_execute(fail::call)
        .commit()
        .expect("a valid sub-saga");
    Saga::new("trip-else")
        .local_step("prepare")
        .on_execute(prepare::call)
        .on_failure(undo_prepare)
        .remote_step("pay")
        .on_execute(create_payment::call)
        .on_success(payment_created)
        .on_failure(refund_payment)
        .conditional_step("route")
        .if_then_with(needs_ticket, calls, never_saga())
        .else_then(fallback)
        .local_step("confirm")
        .on_execute(confirm::call)
        .commit()
        .expect("a valid saga")
}

/// `prepare`, `route` (if the trip needs a ticket: `never`, else `fallback-local`: a compensable
/// local `hold` then a failing local step), `confirm`.
fn trip_else_local_saga(calls: Arc<AtomicUsize>) -> SagaDefinition<Trip> {
    let fallback = Saga::new("fallback-local")
        .local_step("hold")
        .on_execute(hold::call)
        .on_failure(undo_hold)
        .local_step("fail")
        .on_execute(fail::call)
        .commit()
        .expect("a valid sub-saga");
    Saga::new("trip-else-local")
        .local_step("prepare")
        .on_execute(prepare::call)
        .on_failure(undo_prepare)
        .conditional_step("route")
        .if_then_with(needs_ticket, calls, never_saga())
        .else_then(fallback)
        .local_step("confirm")
        .on_execute(confirm::call)
        .commit()
        .expect("a valid saga")
}

/// Only `route`: if the trip needs a ticket, `ticketing` (without compensation); no else.
fn trip_no_match_saga(calls: Arc<AtomicUsize>) -> SagaDefinition<Trip> {
    let ticketing = Saga::new("ticketing")
        .remote_step("create_ticket")
        .on_execute(create_ticket::call)
        .on_success(ticket_created)
        .commit()
        .expect("a valid sub-saga");
    Saga::new("trip-no-match")
        .conditional_step("route")
        .if_then_with(needs_ticket, calls, ticketing)
        .commit()
        .expect("a valid saga")
}

/// `prepare`, `route` (whose condition fails), `confirm`.
fn trip_bad_condition_saga() -> SagaDefinition<Trip> {
    let ticketing = Saga::new("ticketing")
        .remote_step("create_ticket")
        .on_execute(create_ticket::call)
        .commit()
        .expect("a valid sub-saga");
    Saga::new("trip-bad-condition")
        .local_step("prepare")
        .on_execute(prepare::call)
        .on_failure(undo_prepare)
        .conditional_step("route")
        .if_then(condition_fails, ticketing)
        .local_step("confirm")
        .on_execute(confirm::call)
        .commit()
        .expect("a valid saga")
}

// The same sagas declared with the attribute macros. A condition of the attribute grammar takes no
// fixed parameters, so each macro saga counts its condition calls in its own counter of
// `MACRO_CALLS` (each macro saga runs in one test only). Three sub-sagas are named `ticketing`
// like their builder twins; this binary never gathers its sagas into a registry.

/// The condition calls of the macro sagas, one counter per saga.
static MACRO_CALLS: LazyLock<[Arc<AtomicUsize>; 4]> = LazyLock::new(Default::default);

/// `needs_ticket`, counted in `MACRO_CALLS[N]`.
async fn needs_ticket_counted<const N: usize>(trip: &Trip) -> Result<bool, StepError> {
    needs_ticket(trip, &MACRO_CALLS[N]).await
}

/// A builder saga made with a fresh condition counter, and that counter.
fn counted(
    build: impl FnOnce(Arc<AtomicUsize>) -> SagaDefinition<Trip>,
) -> (Arc<SagaDefinition<Trip>>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    (Arc::new(build(Arc::clone(&calls))), calls)
}

/// Macro saga `T`, whose condition counts in `MACRO_CALLS[counter]`, and that counter.
fn counted_macro<T: SagaType<Context = Trip>>(
    counter: usize,
) -> (Arc<SagaDefinition<Trip>>, Arc<AtomicUsize>) {
    (T::definition(), Arc::clone(&MACRO_CALLS[counter]))
}

#[saga(name = "ticketing", steps = [create_ticket])]
struct Ticketing;

#[saga(
    name = "trip",
    steps = [
        prepare,
        route = conditional(if_then(needs_ticket_counted::<0>, Ticketing)),
        confirm,
    ]
)]
struct TicketedTrip;

#[local_step(name = "never")]
async fn never(trip: &mut Trip) -> Result<(), StepError> {
    confirm::call(trip).await
}

#[saga(name = "never", steps = [never])]
struct Never;

#[remote_step(name = "ticket", on_success = ticket_created, on_failure = cancel_ticket)]
async fn fallback_ticket(trip: &Trip) -> Result<SagaRequest, StepError> {
    create_ticket::call(trip).await
}

#[saga(name = "fallback", steps = [fallback_ticket, fail])]
struct Fallback;

#[saga(
    name = "trip-else",
    steps = [
        prepare,
        create_payment,
        route = conditional(if_then(needs_ticket_counted::<1>, Never), else_then(Fallback)),
        confirm,
    ]
)]
struct TripElse;

#[saga(name = "fallback-local", steps = [hold, fail])]
struct FallbackLocal;

#[saga(
    name = "trip-else-local",
    steps = [
        prepare,
        route = conditional(if_then(needs_ticket_counted::<2>, Never), else_then(FallbackLocal)),
        confirm,
    ]
)]
struct TripElseLocal;

#[remote_step(name = "create_ticket", on_success = ticket_created)]
async fn create_ticket_without_compensation(trip: &Trip) -> Result<SagaRequest, StepError> {
    create_ticket::call(trip).await
}

#[saga(name = "ticketing", steps = [create_ticket_without_compensation])]
struct TicketingWithoutCompensation;

#[saga(
    name = "trip-no-match",
    context = Trip,
    steps = [route = conditional(if_then(needs_ticket_counted::<3>, TicketingWithoutCompensation))]
)]
struct TripNoMatch;

#[remote_step(name = "create_ticket")]
async fn create_ticket_without_handlers(trip: &Trip) -> Result<SagaRequest, StepError> {
    create_ticket::call(trip).await
}

#[saga(name = "ticketing", steps = [create_ticket_without_handlers])]
struct TicketingWithoutHandlers;

#[saga(
    name = "trip-bad-condition",
    steps = [
        prepare,
        route = conditional(if_then(condition_fails, TicketingWithoutHandlers)),
        confirm,
    ]
)]
struct TripBadCondition;

/// Declares each scenario as two tests, `<scenario>::builder` and `<scenario>::macros`, that differ
/// only by the definition of the saga (and of its condition counter).
macro_rules! with_both_definitions {
    ($($scenario:ident: builder = $builder:expr, macros = $declared:expr;)+) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test]
            async fn builder() {
                let (saga, calls) = $builder;
                super::$scenario(saga, calls).await;
            }

            #[tokio::test]
            async fn macros() {
                let (saga, calls) = $declared;
                super::$scenario(saga, calls).await;
            }
        }
    )+};
}

with_both_definitions! {
    inner_remote_step_pauses_the_outer_saga_and_the_reply_finishes_it:
        builder = counted(ticketing_saga), macros = counted_macro::<TicketedTrip>(0);
    failing_else_branch_rolls_back_inner_steps_once_then_outer_steps:
        builder = counted(trip_else_saga), macros = counted_macro::<TripElse>(1);
    failing_local_else_branch_compensates_inner_then_outer_in_the_context_log:
        builder = counted(trip_else_local_saga), macros = counted_macro::<TripElseLocal>(2);
    no_matching_branch_and_no_else_does_nothing:
        builder = counted(trip_no_match_saga), macros = counted_macro::<TripNoMatch>(3);
}

mod a_failing_condition_fails_the_step_and_the_saga {
    use super::*;

    #[tokio::test]
    async fn builder() {
        super::a_failing_condition_fails_the_step_and_the_saga(Arc::new(trip_bad_condition_saga()))
            .await;
    }

    #[tokio::test]
    async fn macros() {
        super::a_failing_condition_fails_the_step_and_the_saga(TripBadCondition::definition())
            .await;
    }
}

#[test]
fn the_macro_sagas_are_the_builder_sagas() {
    let calls = Arc::new(AtomicUsize::new(0));
    for (built, declared) in [
        (
            ticketing_saga(Arc::clone(&calls)),
            TicketedTrip::definition(),
        ),
        (trip_else_saga(Arc::clone(&calls)), TripElse::definition()),
        (
            trip_else_local_saga(Arc::clone(&calls)),
            TripElseLocal::definition(),
        ),
        (
            trip_no_match_saga(Arc::clone(&calls)),
            TripNoMatch::definition(),
        ),
        (trip_bad_condition_saga(), TripBadCondition::definition()),
    ] {
        assert_same_definition(&declared, &built);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

fn command(harness: &Harness, topic: &str) -> BrokerMessage {
    let mut found: Vec<BrokerMessage> = harness
        .sent()
        .into_iter()
        .filter(|message| message.topic == topic)
        .collect();
    assert_eq!(found.len(), 1, "exactly one `{topic}` command was sent");
    found.remove(0)
}

async fn inner_remote_step_pauses_the_outer_saga_and_the_reply_finishes_it(
    saga: Arc<SagaDefinition<Trip>>,
    calls: Arc<AtomicUsize>,
) {
    let harness = Harness::new().await;
    let _participants = harness.accepting(&["order", "ticket"]).await;
    let trip = Trip {
        needs_ticket: true,
        ..Trip::default()
    };

    let execution = harness
        .manager
        .run(
            Arc::clone(&saga),
            trip,
            RunOptions::new().pause_on_disk(true).user("alice"),
        )
        .await
        .expect("the saga pauses")
        .execution()
        .expect("the execution is returned");
    let id = execution.id();
    assert_eq!(execution.status(), SagaStatus::Paused);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        execution.step("prepare").map(StepExecution::status),
        Some(StepStatus::Finished)
    );
    let route = execution.step("route").expect("the conditional step ran");
    assert_eq!(route.status(), StepStatus::PausedByOnExecute);
    assert_eq!(route.branch(), Some(Branch::If(0)));
    let inner = route
        .inner()
        .expect("the branch runs as an inner execution");
    assert_eq!(inner.status(), SagaStatus::Paused);
    assert_eq!(inner.saga(), "ticketing");
    assert_eq!(inner.id(), id);
    assert_eq!(inner.user(), Some("alice"));
    assert_eq!(inner.steps().len(), 1);
    assert_eq!(inner.steps()[0].status(), StepStatus::PausedByOnExecute);
    assert!(execution.step("confirm").is_none());
    assert_eq!(execution.context().log, vec!["prepare"]);

    // The stored copy says the same.
    let stored = harness
        .manager
        .load(Arc::clone(&saga), id)
        .await
        .expect("the paused execution is stored");
    assert_eq!(stored.status(), SagaStatus::Paused);
    assert_eq!(
        stored.step("route").map(StepExecution::status),
        Some(StepStatus::PausedByOnExecute)
    );
    assert_eq!(stored.waiting_request(), inner.steps()[0].request_id());

    let ticket_command = command(&harness, "CreateTicket");
    assert_eq!(harness.sent_topics(), vec!["CreateTicket"]);
    assert_eq!(
        ticket_command.headers.get(header::SAGA),
        Some(&id.to_string())
    );
    assert_eq!(
        ticket_command.headers.get(header::USER),
        Some(&"alice".to_owned())
    );
    assert_eq!(ticket_command.reply_to.as_deref(), Some("orderReply"));

    let outcome = harness
        .manager
        .resume(reply_to(
            &ticket_command,
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
            status: SagaStatus::Finished
        }
    );
    // The condition was evaluated once, across pause and resume.
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let finished = harness
        .manager
        .load(saga, id)
        .await
        .expect("the finished execution is stored");
    assert_eq!(finished.status(), SagaStatus::Finished);
    assert_eq!(
        finished.context(),
        &Trip {
            log: vec![
                "prepare".to_owned(),
                "ticket T-1".to_owned(),
                "confirm".to_owned()
            ],
            ticket: Some("T-1".to_owned()),
            confirmed: Some("T-1".to_owned()),
            needs_ticket: true,
        }
    );
    let route = finished.step("route").expect("the conditional step ran");
    assert_eq!(route.status(), StepStatus::Finished);
    assert_eq!(route.branch(), Some(Branch::If(0)));
    let inner = route.inner().expect("the inner execution is kept");
    assert_eq!(inner.status(), SagaStatus::Finished);
    assert_eq!(inner.id(), id);
    assert_eq!(inner.user(), Some("alice"));
    assert_eq!(inner.steps()[0].status(), StepStatus::Finished);
    assert!(inner.steps()[0].related_services().contains("ticket"));
    assert_eq!(
        finished.step("confirm").map(StepExecution::status),
        Some(StepStatus::Finished)
    );
    // The inner step's participant joined the transaction.
    assert_eq!(
        harness.sent_topics(),
        vec![
            "CreateTicket",
            "_ReserveOrderTransaction",
            "_ReserveTicketTransaction",
            "_CommitOrderTransaction",
            "_CommitTicketTransaction",
        ]
    );
}

async fn failing_else_branch_rolls_back_inner_steps_once_then_outer_steps(
    saga: Arc<SagaDefinition<Trip>>,
    calls: Arc<AtomicUsize>,
) {
    let harness = Harness::new().await;
    let _order = harness.accepting(&["order"]).await;
    let _payment = harness
        .participant("payment")
        .command("CreatePayment", |_| {
            (SagaResponseStatus::Success, json!("P-1"))
        })
        .spawn()
        .await
        .expect("the participant starts");
    let _ticket = harness
        .participant("ticket")
        .command("CreateTicket", |_| {
            (SagaResponseStatus::Success, json!("T-9"))
        })
        .spawn()
        .await
        .expect("the participant starts");

    let execution = harness
        .manager
        .run(
            Arc::clone(&saga),
            Trip::default(),
            RunOptions::new().raise_on_error(false),
        )
        .await
        .expect("a failed saga is returned without raise-on-error")
        .execution()
        .expect("the execution is returned");

    assert_eq!(execution.status(), SagaStatus::Errored);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The only local compensation is the outer `prepare`'s (the inner one is a command, below).
    assert_eq!(
        execution.context().log,
        vec!["prepare", "paid", "ticket T-9", "undo-prepare"]
    );
    assert_eq!(execution.context().ticket.as_deref(), Some("T-9"));
    assert_eq!(execution.context().confirmed, None);

    let route = execution.step("route").expect("the conditional step ran");
    assert_eq!(route.status(), StepStatus::ErroredByOnExecute);
    assert_eq!(route.branch(), Some(Branch::Else));
    let inner = route.inner().expect("the else branch ran");
    assert_eq!(inner.saga(), "fallback");
    assert_eq!(inner.status(), SagaStatus::Errored);
    assert!(inner.already_rollback());
    assert_eq!(inner.steps().len(), 2);
    assert_eq!(inner.steps()[0].status(), StepStatus::Finished);
    assert!(inner.steps()[0].already_rollback());
    assert_eq!(inner.steps()[1].status(), StepStatus::ErroredOnExecute);
    assert!(!inner.steps()[1].already_rollback());
    for name in ["prepare", "pay"] {
        let step = execution.step(name).expect("the outer step ran");
        assert_eq!(step.status(), StepStatus::Finished, "step {name}");
        assert!(step.already_rollback(), "step {name} was compensated");
    }
    assert!(execution.step("confirm").is_none());
    assert!(execution.already_rollback());

    // The inner compensation (CancelTicket) once, then the outer one (RefundPayment) once, then the
    // transactions of every service that joined (the inner step's included) are rejected.
    assert_eq!(
        harness.sent_topics(),
        vec![
            "CreatePayment",
            "CreateTicket",
            "CancelTicket",
            "RefundPayment",
            "_RejectOrderTransaction",
            "_RejectPaymentTransaction",
            "_RejectTicketTransaction",
        ]
    );
    let cancel = command(&harness, "CancelTicket");
    assert_eq!(cancel.payload, json!("T-9"));

    // The same with raise-on-error: the error names the conditional step.
    let error = harness
        .manager
        .run(Arc::clone(&saga), Trip::default(), RunOptions::new())
        .await
        .expect_err("the saga fails");
    match error {
        SagaError::Execution(ExecutionError::StepFailed { step, status, .. }) => {
            assert_eq!(step, "route");
            assert_eq!(status, StepStatus::ErroredByOnExecute);
        }
        other => panic!("expected StepFailed, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

async fn failing_local_else_branch_compensates_inner_then_outer_in_the_context_log(
    saga: Arc<SagaDefinition<Trip>>,
    calls: Arc<AtomicUsize>,
) {
    let harness = Harness::new().await;
    let _order = harness.accepting(&["order"]).await;

    let execution = harness
        .manager
        .run(
            saga,
            Trip::default(),
            RunOptions::new().raise_on_error(false),
        )
        .await
        .expect("a failed saga is returned without raise-on-error")
        .execution()
        .expect("the execution is returned");

    assert_eq!(execution.status(), SagaStatus::Errored);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        execution.context().log,
        vec!["prepare", "hold", "undo-hold", "undo-prepare"]
    );
    let route = execution.step("route").expect("the conditional step ran");
    assert_eq!(route.status(), StepStatus::ErroredByOnExecute);
    assert_eq!(route.branch(), Some(Branch::Else));
    let inner = route.inner().expect("the else branch ran");
    assert_eq!(inner.status(), SagaStatus::Errored);
    assert!(inner.already_rollback());
    assert!(inner.steps()[0].already_rollback());
    assert_eq!(harness.sent_topics(), vec!["_RejectOrderTransaction"]);
}

async fn no_matching_branch_and_no_else_does_nothing(
    saga: Arc<SagaDefinition<Trip>>,
    calls: Arc<AtomicUsize>,
) {
    let harness = Harness::new().await;
    let _participants = harness.accepting(&["order"]).await;
    let trip = Trip {
        log: vec!["before".to_owned()],
        ticket: Some("old".to_owned()),
        confirmed: None,
        needs_ticket: false,
    };

    let execution = harness
        .manager
        .run(saga, trip.clone(), RunOptions::new())
        .await
        .expect("the saga finishes")
        .execution()
        .expect("the execution is returned");

    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(execution.context(), &trip);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let route = execution.step("route").expect("the conditional step ran");
    assert_eq!(route.status(), StepStatus::Finished);
    assert_eq!(route.branch(), Some(Branch::NoMatch));
    assert!(route.inner().is_none());
    // No command; only this service's transaction is committed.
    assert_eq!(
        harness.sent_topics(),
        vec!["_ReserveOrderTransaction", "_CommitOrderTransaction"]
    );
}

async fn a_failing_condition_fails_the_step_and_the_saga(saga: Arc<SagaDefinition<Trip>>) {
    let harness = Harness::new().await;
    let _participants = harness.accepting(&["order"]).await;

    let execution = harness
        .manager
        .run(
            Arc::clone(&saga),
            Trip::default(),
            RunOptions::new().raise_on_error(false),
        )
        .await
        .expect("a failed saga is returned without raise-on-error")
        .execution()
        .expect("the execution is returned");

    assert_eq!(execution.status(), SagaStatus::Errored);
    let route = execution.step("route").expect("the conditional step ran");
    assert_eq!(route.status(), StepStatus::ErroredOnExecute);
    assert_eq!(route.branch(), None);
    assert!(route.inner().is_none());
    assert!(
        route
            .error()
            .is_some_and(|error| error.contains("the condition cannot be evaluated")),
        "the step records why: {:?}",
        route.error()
    );
    assert!(execution.step("confirm").is_none());
    // The earlier step is compensated.
    assert_eq!(execution.context().log, vec!["prepare", "undo-prepare"]);
    assert_eq!(harness.sent_topics(), vec!["_RejectOrderTransaction"]);

    let error = harness
        .manager
        .run(saga, Trip::default(), RunOptions::new())
        .await
        .expect_err("the saga fails");
    match error {
        SagaError::Execution(ExecutionError::StepFailed { step, status, .. }) => {
            assert_eq!(step, "route");
            assert_eq!(status, StepStatus::ErroredOnExecute);
        }
        other => panic!("expected StepFailed, got {other:?}"),
    }
}
