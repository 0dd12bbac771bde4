//! Local steps (behaviour reference, sections 2 to 4): a saga of local steps finishes with this
//! service as its only participant; a failing or panicking `on_execute` fails its step without
//! running that step's own `on_failure` and compensates the earlier steps; step-level and
//! execution-level rollbacks compensate each step at most once.

use std::collections::BTreeSet;
use std::sync::Arc;

use saga_runtime::broker::header;
use saga_runtime::committer::Phase;
use saga_runtime::execution::{ExecutionEnv, Outbox, Progress};
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_testkit::ParticipantEvent;
use saga_tests::{Harness, SERVICE, reply_to};
use serde_json::json;

/// The context: which handlers ran, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Trail {
    log: Vec<String>,
}

impl Trail {
    fn of(entries: &[&str]) -> Self {
        Self {
            log: entries.iter().map(|entry| (*entry).to_owned()).collect(),
        }
    }
}

async fn reserve(trail: &mut Trail) -> Result<(), StepError> {
    trail.log.push("reserve".into());
    Ok(())
}

async fn release(trail: &mut Trail) -> Result<(), StepError> {
    trail.log.push("release".into());
    Ok(())
}

async fn charge(trail: &mut Trail) -> Result<(), StepError> {
    trail.log.push("charge".into());
    Ok(())
}

async fn refund(trail: &mut Trail) -> Result<(), StepError> {
    trail.log.push("refund".into());
    Ok(())
}

async fn ship(trail: &mut Trail) -> Result<(), StepError> {
    trail.log.push("ship".into());
    Ok(())
}

async fn unship(trail: &mut Trail) -> Result<(), StepError> {
    trail.log.push("unship".into());
    Ok(())
}

async fn decline(_: &mut Trail) -> Result<(), StepError> {
    Err(StepError::msg("card declined"))
}

async fn explode(_: &mut Trail) -> Result<(), StepError> {
    panic!("boom")
}

async fn explode_formatted(_: &mut Trail) -> Result<(), StepError> {
    let code = 42;
    panic!("boom {code}")
}

/// reserve (undo: release) -> charge (undo: refund) -> ship (undo: unship).
fn three_steps(name: &str) -> Arc<SagaDefinition<Trail>> {
    Arc::new(
        Saga::new(name)
            .local_step("reserve")
            .on_execute(reserve)
            .on_failure(release)
            .local_step("charge")
            .on_execute(charge)
            .on_failure(refund)
            .local_step("ship")
            .on_execute(ship)
            .on_failure(unship)
            .commit()
            .expect("a valid saga"),
    )
}

/// reserve (undo: release) -> charge, which fails (`failing`) (undo: refund) -> ship.
fn failing_second_step<F>(name: &str, failing: F) -> Arc<SagaDefinition<Trail>>
where
    F: for<'a> saga_runtime::definition::LocalFn<'a, Trail>,
{
    Arc::new(
        Saga::new(name)
            .local_step("reserve")
            .on_execute(reserve)
            .on_failure(release)
            .local_step("charge")
            .on_execute(failing)
            .on_failure(refund)
            .local_step("ship")
            .on_execute(ship)
            .on_failure(unship)
            .commit()
            .expect("a valid saga"),
    )
}

fn order_only() -> BTreeSet<String> {
    BTreeSet::from([SERVICE.to_owned()])
}

fn statuses<C>(execution: &SagaExecution<C>) -> Vec<(String, StepStatus, bool)> {
    execution
        .steps()
        .iter()
        .map(|step| {
            (
                step.name().to_owned(),
                step.status(),
                step.already_rollback(),
            )
        })
        .collect()
}

fn row(name: &str, status: StepStatus, rolled_back: bool) -> (String, StepStatus, bool) {
    (name.to_owned(), status, rolled_back)
}

#[tokio::test]
async fn a_saga_of_local_steps_finishes_with_this_service_only() {
    let harness = Harness::new().await;
    let definition = three_steps("local-ok");
    let execution = harness
        .manager
        .run(
            Arc::clone(&definition),
            Trail::default(),
            RunOptions::new().autocommit(false),
        )
        .await
        .expect("the saga runs")
        .execution()
        .expect("the execution is returned");

    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(
        statuses(&execution),
        vec![
            row("reserve", StepStatus::Finished, false),
            row("charge", StepStatus::Finished, false),
            row("ship", StepStatus::Finished, false),
        ]
    );
    for step in execution.steps() {
        assert_eq!(step.related_services(), &order_only(), "{}", step.name());
        assert_eq!(step.request_id(), None);
        assert_eq!(step.error(), None);
    }
    assert_eq!(
        execution.related_services(harness.manager.env()),
        order_only()
    );
    assert_eq!(
        execution.transactions(harness.manager.env()),
        vec![(execution.id(), SERVICE.to_owned())]
    );
    assert_eq!(execution.paused_step(), None);
    assert!(!execution.already_rollback());
    assert_eq!(
        execution.context(),
        &Trail::of(&["reserve", "charge", "ship"])
    );
    // Without autocommit nothing is published.
    assert_eq!(harness.sent_topics(), Vec::<String>::new());

    // The end state is stored.
    let stored = harness
        .manager
        .load(Arc::clone(&definition), execution.id())
        .await
        .expect("the execution is stored");
    assert_eq!(stored.status(), SagaStatus::Finished);
    assert_eq!(stored.steps(), execution.steps());
    assert_eq!(stored.context(), execution.context());
}

#[tokio::test]
async fn a_finished_local_saga_commits_with_this_service() {
    let harness = Harness::new().await;
    let participants = harness.accepting(&[SERVICE]).await;
    let execution = harness
        .manager
        .run(
            three_steps("local-commit"),
            Trail::default(),
            RunOptions::new(),
        )
        .await
        .expect("the saga runs and commits")
        .execution()
        .expect("the execution is returned");
    assert_eq!(execution.status(), SagaStatus::Finished);

    let id = execution.id().to_string();
    let sent: Vec<_> = harness
        .sent()
        .into_iter()
        .map(|message| {
            (
                message.topic,
                message.headers.get(header::TRANSACTION).cloned(),
                message.payload,
            )
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            (
                "_ReserveOrderTransaction".to_owned(),
                Some(id.clone()),
                json!(id)
            ),
            (
                "_CommitOrderTransaction".to_owned(),
                Some(id.clone()),
                json!(id)
            ),
        ]
    );
    let phases: Vec<_> = participants[0]
        .log()
        .into_iter()
        .map(|event| match event {
            ParticipantEvent::Transaction {
                phase,
                transaction,
                accepted,
            } => (phase, transaction, accepted),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(
        phases,
        vec![
            (Phase::Reserve, execution.id(), true),
            (Phase::Commit, execution.id(), true),
        ]
    );
}

#[tokio::test]
async fn a_failing_on_execute_compensates_only_the_earlier_steps() {
    let harness = Harness::new().await;
    let definition = failing_second_step("local-fail", decline);
    let execution = harness
        .manager
        .run(
            Arc::clone(&definition),
            Trail::default(),
            RunOptions::new().autocommit(false).raise_on_error(false),
        )
        .await
        .expect("with raise_on_error(false) the errored execution is returned")
        .execution()
        .expect("the execution is returned");

    assert_eq!(execution.status(), SagaStatus::Errored);
    // `ship` never started; `charge` failed and its own `refund` did not run; `reserve` was
    // compensated.
    assert_eq!(
        statuses(&execution),
        vec![
            row("reserve", StepStatus::Finished, true),
            row("charge", StepStatus::ErroredOnExecute, false),
        ]
    );
    assert!(execution.step("ship").is_none());
    assert_eq!(
        execution.step("charge").and_then(|step| step.error()),
        Some("card declined")
    );
    assert_eq!(execution.context(), &Trail::of(&["reserve", "release"]));
    assert!(execution.already_rollback());
    assert_eq!(execution.paused_step(), None);
    assert_eq!(harness.sent_topics(), Vec::<String>::new());

    let stored = harness
        .manager
        .load(Arc::clone(&definition), execution.id())
        .await
        .expect("the execution is stored");
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert_eq!(stored.steps(), execution.steps());
    assert_eq!(stored.context(), &Trail::of(&["reserve", "release"]));
}

#[tokio::test]
async fn a_failing_on_execute_raises_step_failed_by_default() {
    let harness = Harness::new().await;
    let definition = failing_second_step("local-fail-raise", decline);
    let error = harness
        .manager
        .run(
            Arc::clone(&definition),
            Trail::default(),
            RunOptions::new().autocommit(false),
        )
        .await
        .expect_err("a failed saga is an error by default");
    let id = match error {
        SagaError::Execution(ExecutionError::StepFailed {
            id,
            step,
            status,
            cause,
            compensation_failures,
        }) => {
            assert_eq!(step, "charge");
            assert_eq!(status, StepStatus::ErroredOnExecute);
            assert_eq!(cause.to_string(), "card declined");
            assert!(compensation_failures.is_empty());
            id
        }
        other => panic!("expected StepFailed, got {other:?}"),
    };

    // The errored execution was stored, compensated.
    let stored = harness
        .manager
        .load(Arc::clone(&definition), id)
        .await
        .expect("the execution is stored");
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
    assert_eq!(
        statuses(&stored),
        vec![
            row("reserve", StepStatus::Finished, true),
            row("charge", StepStatus::ErroredOnExecute, false),
        ]
    );
    assert_eq!(stored.context(), &Trail::of(&["reserve", "release"]));
    assert_eq!(harness.sent_topics(), Vec::<String>::new());
}

#[tokio::test]
async fn a_failed_local_saga_rejects_its_transaction_with_autocommit() {
    let harness = Harness::new().await;
    let participants = harness.accepting(&[SERVICE]).await;
    let error = harness
        .manager
        .run(
            failing_second_step("local-fail-reject", decline),
            Trail::default(),
            RunOptions::new(),
        )
        .await
        .expect_err("the saga fails");
    let SagaError::Execution(ExecutionError::StepFailed { id, .. }) = error else {
        panic!("expected StepFailed, got {error:?}");
    };
    let sent: Vec<_> = harness
        .sent()
        .into_iter()
        .map(|message| {
            (
                message.topic,
                message.headers.get(header::TRANSACTION).cloned(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        vec![("_RejectOrderTransaction".to_owned(), Some(id.to_string()))]
    );
    assert_eq!(
        participants[0].log(),
        vec![ParticipantEvent::Transaction {
            phase: Phase::Reject,
            transaction: id,
            accepted: true,
        }]
    );
}

#[tokio::test]
async fn a_failing_first_step_compensates_nothing() {
    let harness = Harness::new().await;
    let definition = Arc::new(
        Saga::new("local-fail-first")
            .local_step("charge")
            .on_execute(decline)
            .on_failure(refund)
            .local_step("ship")
            .on_execute(ship)
            .commit()
            .expect("valid"),
    );
    let execution = harness
        .manager
        .run(
            definition,
            Trail::default(),
            RunOptions::new().autocommit(false).raise_on_error(false),
        )
        .await
        .expect("the errored execution is returned")
        .execution()
        .expect("the execution is returned");
    assert_eq!(execution.status(), SagaStatus::Errored);
    assert_eq!(
        statuses(&execution),
        vec![row("charge", StepStatus::ErroredOnExecute, false)]
    );
    assert_eq!(execution.context(), &Trail::default());
    assert!(execution.already_rollback());
}

#[tokio::test]
async fn a_panicking_handler_is_a_step_failure() {
    let harness = Harness::new().await;
    for (name, handler_panics, expected) in [
        (
            "local-panic-str",
            failing_second_step("local-panic-str", explode),
            "handler panicked: boom",
        ),
        (
            "local-panic-string",
            failing_second_step("local-panic-string", explode_formatted),
            "handler panicked: boom 42",
        ),
    ] {
        let execution = harness
            .manager
            .run(
                handler_panics,
                Trail::default(),
                RunOptions::new().autocommit(false).raise_on_error(false),
            )
            .await
            .expect("a panic is a step failure, not an escaped panic")
            .execution()
            .expect("the execution is returned");
        assert_eq!(execution.status(), SagaStatus::Errored, "{name}");
        assert_eq!(
            statuses(&execution),
            vec![
                row("reserve", StepStatus::Finished, true),
                row("charge", StepStatus::ErroredOnExecute, false),
            ],
            "{name}"
        );
        assert_eq!(
            execution.step("charge").and_then(|step| step.error()),
            Some(expected),
            "{name}"
        );
        assert_eq!(
            execution.context(),
            &Trail::of(&["reserve", "release"]),
            "{name}"
        );
    }

    // Raised: the panic message is the failure's message.
    let error = harness
        .manager
        .run(
            failing_second_step("local-panic-raise", explode),
            Trail::default(),
            RunOptions::new().autocommit(false),
        )
        .await
        .expect_err("the saga fails");
    assert!(
        matches!(
            &error,
            SagaError::Execution(ExecutionError::StepFailed { step, status, cause, compensation_failures, .. })
                if step == "charge"
                    && *status == StepStatus::ErroredOnExecute
                    && cause.to_string() == "handler panicked: boom"
                    && compensation_failures.is_empty()
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_failing_compensation_is_recorded_and_the_others_still_run() {
    let harness = Harness::new().await;
    let definition = Arc::new(
        Saga::new("local-undo-fails")
            .local_step("reserve")
            .on_execute(reserve)
            .on_failure(release)
            .local_step("charge")
            .on_execute(charge)
            .on_failure(explode)
            .local_step("ship")
            .on_execute(decline)
            .commit()
            .expect("valid"),
    );
    let execution = harness
        .manager
        .run(
            Arc::clone(&definition),
            Trail::default(),
            RunOptions::new().autocommit(false).raise_on_error(false),
        )
        .await
        .expect("the errored execution is returned")
        .execution()
        .expect("the execution is returned");
    assert_eq!(execution.status(), SagaStatus::Errored);
    assert_eq!(
        statuses(&execution),
        vec![
            row("reserve", StepStatus::Finished, true),
            row("charge", StepStatus::ErroredOnFailure, false),
            row("ship", StepStatus::ErroredOnExecute, false),
        ]
    );
    assert_eq!(
        execution.step("charge").and_then(|step| step.error()),
        Some("handler panicked: boom")
    );
    // `release` ran although `charge`'s compensation failed before it.
    assert_eq!(
        execution.context(),
        &Trail::of(&["reserve", "charge", "release"])
    );
    // The saga reports the rollback failure: it is not fully compensated.
    assert!(!execution.already_rollback());

    let error = harness
        .manager
        .run(
            definition,
            Trail::default(),
            RunOptions::new().autocommit(false),
        )
        .await
        .expect_err("the saga fails");
    match error {
        SagaError::Execution(ExecutionError::StepFailed {
            step,
            status,
            cause,
            compensation_failures,
            ..
        }) => {
            assert_eq!(step, "ship");
            assert_eq!(status, StepStatus::ErroredOnExecute);
            assert_eq!(cause.to_string(), "card declined");
            assert_eq!(compensation_failures, ["charge"]);
        }
        other => panic!("expected StepFailed, got {other:?}"),
    }
}

// --- step-level rollback, without a manager -----------------------------------------------------

#[tokio::test]
async fn rolling_back_a_step_that_never_ran_is_not_executed() {
    let env = ExecutionEnv::new(SERVICE);
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(three_steps("never-ran"), Trail::default());
    let id = execution.id();

    let error = execution
        .rollback_step("reserve", &env, &mut outbox)
        .await
        .expect_err("nothing ran yet");
    assert!(
        matches!(&error, ExecutionError::NotExecuted { id: got, step } if *got == id && step == "reserve"),
        "{error:?}"
    );
    assert!(error.to_string().contains("`reserve`"), "{error}");

    // After a failure at `charge`, `ship` never ran.
    let mut execution = SagaExecution::new(
        failing_second_step("never-ran-2", decline),
        Trail::default(),
    );
    let id = execution.id();
    let failed = execution
        .execute(None, &env, &mut outbox)
        .await
        .expect_err("charge fails");
    assert!(
        matches!(&failed, ExecutionError::StepFailed { step, .. } if step == "charge"),
        "{failed:?}"
    );
    let error = execution
        .rollback_step("ship", &env, &mut outbox)
        .await
        .expect_err("ship never ran");
    assert!(
        matches!(&error, ExecutionError::NotExecuted { id: got, step } if *got == id && step == "ship"),
        "{error:?}"
    );
    // A name the saga does not have is not an executed step either.
    let error = execution
        .rollback_step("nonexistent", &env, &mut outbox)
        .await
        .expect_err("no such step");
    assert!(
        matches!(&error, ExecutionError::NotExecuted { step, .. } if step == "nonexistent"),
        "{error:?}"
    );
    // And `reserve`, compensated by the failure, cannot be compensated again.
    let error = execution
        .rollback_step("reserve", &env, &mut outbox)
        .await
        .expect_err("already compensated");
    assert!(
        matches!(&error, ExecutionError::AlreadyRolledBack { what, .. } if what == "reserve"),
        "{error:?}"
    );
    assert_eq!(execution.context(), &Trail::of(&["reserve", "release"]));
    assert!(outbox.is_empty());
}

#[tokio::test]
async fn a_step_is_rolled_back_at_most_once() {
    let env = ExecutionEnv::new(SERVICE);
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(three_steps("step-rollback"), Trail::default());
    let id = execution.id();
    assert_eq!(
        execution
            .execute(None, &env, &mut outbox)
            .await
            .expect("runs"),
        Progress::Finished
    );

    execution
        .rollback_step("charge", &env, &mut outbox)
        .await
        .expect("the first rollback of a finished step works");
    assert_eq!(
        execution.context(),
        &Trail::of(&["reserve", "charge", "ship", "refund"])
    );
    assert_eq!(
        statuses(&execution),
        vec![
            row("reserve", StepStatus::Finished, false),
            row("charge", StepStatus::Finished, true),
            row("ship", StepStatus::Finished, false),
        ]
    );

    let error = execution
        .rollback_step("charge", &env, &mut outbox)
        .await
        .expect_err("the second rollback of a step is an error");
    assert!(
        matches!(&error, ExecutionError::AlreadyRolledBack { id: got, what } if *got == id && what == "charge"),
        "{error:?}"
    );
    assert!(error.to_string().contains("`charge`"), "{error}");
    // The second attempt ran nothing.
    assert_eq!(
        execution.context(),
        &Trail::of(&["reserve", "charge", "ship", "refund"])
    );

    // Rolling back the whole execution skips the step already compensated.
    execution
        .rollback(&env, &mut outbox)
        .await
        .expect("the execution rolls back");
    assert_eq!(
        execution.context(),
        &Trail::of(&["reserve", "charge", "ship", "refund", "unship", "release"])
    );
    assert_eq!(
        statuses(&execution),
        vec![
            row("reserve", StepStatus::Finished, true),
            row("charge", StepStatus::Finished, true),
            row("ship", StepStatus::Finished, true),
        ]
    );
    assert!(execution.already_rollback());
    // Local compensations send nothing.
    assert!(outbox.is_empty());
}

// --- execution-level execute / rollback, without a manager ---------------------------------------

#[tokio::test]
async fn a_second_execution_rollback_is_an_error_and_sends_nothing() {
    async fn charge_card(_: &Trail) -> Result<SagaRequest, StepError> {
        SagaRequest::new("CreatePayment", &json!({"amount": 10}))
    }
    async fn charged(trail: &mut Trail, reply: SagaResponse) -> Result<(), StepError> {
        let payment: String = reply.content()?;
        trail.log.push(format!("charged {payment}"));
        Ok(())
    }
    async fn refund_card(trail: &Trail) -> Result<SagaRequest, StepError> {
        SagaRequest::new("RefundPayment", &json!({"log": trail.log.len()}))
    }

    let definition = Arc::new(
        Saga::new("rollback-twice")
            .local_step("reserve")
            .on_execute(reserve)
            .on_failure(release)
            .remote_step("charge")
            .on_execute(charge_card)
            .on_success(charged)
            .on_failure(refund_card)
            .local_step("ship")
            .on_execute(ship)
            .commit()
            .expect("valid"),
    );
    let env = ExecutionEnv::new(SERVICE);
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(definition, Trail::default()).with_user("alice");
    let id = execution.id();

    assert_eq!(
        execution
            .execute(None, &env, &mut outbox)
            .await
            .expect("pauses"),
        Progress::Paused
    );
    let command = outbox.drain().pop().expect("the command");
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("pay-1"),
        &["payment"],
    );
    assert_eq!(
        execution
            .execute(Some(reply), &env, &mut outbox)
            .await
            .expect("finishes"),
        Progress::Finished
    );
    assert_eq!(execution.status(), SagaStatus::Finished);
    assert!(outbox.is_empty());
    let error = execution
        .execute(None, &env, &mut outbox)
        .await
        .expect_err("a finished execution cannot run again");
    assert!(
        matches!(&error, ExecutionError::AlreadyExecuted { id: got, status: SagaStatus::Finished } if *got == id),
        "{error:?}"
    );

    execution
        .rollback(&env, &mut outbox)
        .await
        .expect("the first rollback works");
    // Reverse order: ship has no compensation, charge sends its refund, reserve is released.
    assert_eq!(
        execution.context(),
        &Trail::of(&["reserve", "charged pay-1", "ship", "release"])
    );
    assert!(execution.already_rollback());
    assert_eq!(
        statuses(&execution),
        vec![
            row("reserve", StepStatus::Finished, true),
            row("charge", StepStatus::Finished, true),
            row("ship", StepStatus::Finished, true),
        ]
    );
    let compensations = outbox.drain();
    assert_eq!(compensations.len(), 1, "{compensations:?}");
    let refund_message = &compensations[0];
    assert_eq!(refund_message.topic, "RefundPayment");
    assert_eq!(refund_message.payload, json!({"log": 3}));
    assert_eq!(refund_message.reply_to.as_deref(), Some("orderReply"));
    assert_eq!(
        refund_message.headers,
        [
            (header::SAGA.to_owned(), id.to_string()),
            (header::TRANSACTIONS.to_owned(), id.to_string()),
            (header::USER.to_owned(), "alice".to_owned()),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(
        execution.related_services(&env),
        BTreeSet::from(["order".to_owned(), "payment".to_owned()])
    );

    let error = execution
        .rollback(&env, &mut outbox)
        .await
        .expect_err("the second rollback is an error");
    assert!(
        matches!(&error, ExecutionError::AlreadyRolledBack { id: got, what } if *got == id && what == "rollback-twice"),
        "{error:?}"
    );
    assert!(outbox.is_empty(), "{:?}", outbox.messages());
    assert_eq!(
        execution.context(),
        &Trail::of(&["reserve", "charged pay-1", "ship", "release"])
    );
}

#[tokio::test]
async fn rolling_back_a_finished_execution_leaves_it_errored() {
    // `SagaExecution::rollback` documents that it "leaves the execution `errored`"; a compensated
    // execution must not still claim that every step completed (the manager would otherwise commit
    // a compensated saga on `Progress::Finished`).
    let env = ExecutionEnv::new(SERVICE);
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(three_steps("rollback-finished"), Trail::default());
    execution
        .execute(None, &env, &mut outbox)
        .await
        .expect("runs");
    assert_eq!(execution.status(), SagaStatus::Finished);
    execution
        .rollback(&env, &mut outbox)
        .await
        .expect("rolls back");
    assert_eq!(
        execution.context(),
        &Trail::of(&["reserve", "charge", "ship", "unship", "refund", "release"])
    );
    assert!(execution.already_rollback());
    assert_eq!(execution.status(), SagaStatus::Errored);
}

#[tokio::test]
async fn rolling_back_a_created_execution_compensates_nothing() {
    let env = ExecutionEnv::new(SERVICE);
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(three_steps("rollback-created"), Trail::default());
    execution
        .rollback(&env, &mut outbox)
        .await
        .expect("nothing to compensate");
    assert!(execution.steps().is_empty());
    assert_eq!(execution.context(), &Trail::default());
    assert!(execution.already_rollback());
    assert!(outbox.is_empty());
    let error = execution
        .rollback(&env, &mut outbox)
        .await
        .expect_err("the second rollback is an error");
    assert!(
        matches!(error, ExecutionError::AlreadyRolledBack { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_manual_rollback_of_a_finished_saga_compensates_without_rejecting() {
    // Section 4: compensate the executed steps in reverse order. The finished saga's transaction
    // was committed, which is final: nothing is reserved, committed or rejected again.
    let harness = Harness::new().await;
    let _participants = harness.accepting(&[SERVICE]).await;
    let definition = three_steps("manual-rollback");
    let execution = harness
        .manager
        .run(Arc::clone(&definition), Trail::default(), RunOptions::new())
        .await
        .expect("the saga runs and commits")
        .execution()
        .expect("the execution is returned");
    let id = execution.id();
    assert_eq!(
        harness.sent_topics(),
        ["_ReserveOrderTransaction", "_CommitOrderTransaction"]
    );
    harness.clear();

    let status = harness.manager.rollback(id).await.expect("rolls back");
    // Checked first: a compensated saga must not be reserved, committed or rejected again.
    assert!(
        harness.sent_topics().is_empty(),
        "{:?}",
        harness.sent_topics()
    );
    assert_eq!(status, SagaStatus::Errored);
    let stored = harness
        .manager
        .load(Arc::clone(&definition), id)
        .await
        .expect("stored");
    assert_eq!(stored.status(), SagaStatus::Errored);
    assert!(stored.already_rollback());
    assert_eq!(
        stored.context(),
        &Trail::of(&["reserve", "charge", "ship", "unship", "refund", "release"])
    );

    // A second rollback is an error and sends nothing.
    harness.clear();
    let error = harness
        .manager
        .rollback(id)
        .await
        .expect_err("the second rollback is an error");
    assert!(
        matches!(
            &error,
            SagaError::Execution(ExecutionError::AlreadyRolledBack { id: got, .. }) if *got == id
        ),
        "{error:?}"
    );
    assert_eq!(harness.sent_topics(), Vec::<String>::new());
}

#[tokio::test]
async fn the_step_that_failed_cannot_be_rolled_back_by_hand() {
    // Section 3: when `on_execute` fails the step did not complete and its own `on_failure` is NOT
    // run; section 4: compensation is over the executed (completed) steps. A step-level rollback
    // of the failed step must not run that `on_failure` either.
    let env = ExecutionEnv::new(SERVICE);
    let mut outbox = Outbox::new();
    let mut execution = SagaExecution::new(
        failing_second_step("rollback-failed-step", decline),
        Trail::default(),
    );
    let id = execution.id();
    execution
        .execute(None, &env, &mut outbox)
        .await
        .expect_err("charge fails");
    assert_eq!(execution.context(), &Trail::of(&["reserve", "release"]));

    let error = execution
        .rollback_step("charge", &env, &mut outbox)
        .await
        .expect_err("charge never completed");
    assert!(
        matches!(&error, ExecutionError::NotExecuted { id: got, step } if *got == id && step == "charge"),
        "{error:?}"
    );
    assert_eq!(execution.context(), &Trail::of(&["reserve", "release"]));
    assert_eq!(
        statuses(&execution),
        vec![
            row("reserve", StepStatus::Finished, true),
            row("charge", StepStatus::ErroredOnExecute, false),
        ]
    );
    assert!(outbox.is_empty());
}
