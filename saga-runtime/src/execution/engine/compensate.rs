//! Compensation: undoing what a step did (a local step's `on_failure`, a remote step's
//! compensating command, a conditional step's sub-saga), each step at most once, and the status a
//! step is left in afterwards.

use tracing::Instrument;

use super::run::guarded;
use super::{LevelOutcome, Run};
use crate::context::Context;
use crate::definition::{BoxFuture, RemoteStep, StepDefinition, StepKind};
use crate::execution::{SagaStatus, StepExecution, StepStatus};

/// How many of a failed level's steps its rollback covers: the steps before the failed one (it
/// compensated itself as far as it had to), and the failed one too when it is a conditional step
/// whose sub-saga still has completed steps to compensate.
pub(in crate::execution) fn steps_to_compensate_after_failure(steps: &[StepExecution]) -> usize {
    match steps.last() {
        Some(last)
            if last.kind == StepKind::Conditional && !last.already_rollback && has_effect(last) =>
        {
            steps.len()
        }
        _ => steps.len().saturating_sub(1),
    }
}

/// Compensates the completed steps of one level in reverse order, each at most once; a failing
/// compensation is recorded and the others still run. Returns the names of those that failed.
fn rollback_level<'a, C: Context>(
    definitions: &'a [StepDefinition<C>],
    steps: &'a mut [StepExecution],
    context: &'a mut C,
    run: &'a mut Run<'_>,
) -> BoxFuture<'a, Vec<String>> {
    Box::pin(async move {
        let mut failed = Vec::new();
        for index in (0..steps.len()).rev() {
            let step = &mut steps[index];
            if step.already_rollback || !has_effect(step) {
                continue;
            }
            if compensate_step(&definitions[index], step, context, run)
                .await
                .is_err()
            {
                failed.push(step.name.clone());
            }
        }
        failed
    })
}

/// Whether a step has work to undo: it completed, its compensation failed before (retry), it failed
/// after its participant acted and undoing that failed (retry), or it is a sub-saga (paused, or
/// failed with a compensation that did not complete) whose completed steps are compensated. A
/// remote step still waiting for its reply is not compensated: it never completed, and its
/// participant's tentative work is settled by the transaction.
pub(in crate::execution) fn has_effect(step: &StepExecution) -> bool {
    match step.status {
        StepStatus::Finished
        | StepStatus::ErroredOnFailure
        | StepStatus::ErroredOnSuccess
        | StepStatus::ErroredOnError => true,
        StepStatus::PausedByOnExecute | StepStatus::ErroredByOnExecute => step
            .inner
            .as_ref()
            .is_some_and(|inner| !inner.already_rollback),
        _ => false,
    }
}

/// Compensates one step: a local step's `on_failure`, a remote step's compensating command, a
/// conditional step's sub-saga.
pub(in crate::execution) async fn compensate_step<C: Context>(
    definition: &StepDefinition<C>,
    step: &mut StepExecution,
    context: &mut C,
    run: &mut Run<'_>,
) -> Result<(), ()> {
    let span = tracing::info_span!(
        "saga.step",
        saga.step = %step.name,
        saga.kind = %step.kind,
        saga.phase = "compensate"
    );
    async move {
        match definition {
            StepDefinition::Local(local) => {
                let status = step.status;
                if let Some(handler) = &local.on_failure {
                    step.status = StepStatus::RunningOnFailure;
                    if let Err(cause) = guarded(handler.call.call(context)).await {
                        compensation_failed(step, status, cause.to_string());
                        return Err(());
                    }
                }
                step.status = restore(status);
                step.already_rollback = true;
                Ok(())
            }
            StepDefinition::Remote(remote) => {
                let status = step.status;
                compensate_remote(remote, step, context, run).await?;
                settle(step, status);
                Ok(())
            }
            StepDefinition::Conditional(conditional) => {
                if let (Some(branch), Some(inner)) = (step.branch, step.inner.as_mut()) {
                    if let Some(saga) = conditional.branch_saga(branch) {
                        if !inner.already_rollback {
                            let failed =
                                rollback_level(saga.steps(), &mut inner.steps, context, run).await;
                            if !failed.is_empty() {
                                let message = format!(
                                    "compensation failed in sub-saga `{}` for {}",
                                    saga.name(),
                                    failed.join(", ")
                                );
                                compensation_failed(step, step.status, message);
                                return Err(());
                            }
                            inner.already_rollback = true;
                        }
                    }
                }
                if let Some(inner) = step.inner.as_mut() {
                    inner.status = SagaStatus::Errored;
                }
                let status = step.status;
                settle(step, status);
                step.already_rollback = true;
                Ok(())
            }
        }
    }
    .instrument(span)
    .await
}

/// Runs a failed remote step's own compensation. The step keeps its failed status either way (it
/// did not complete, so the saga's rollback never picks it up again); a failing compensation is
/// added to its error and to the failure.
pub(super) async fn self_compensate<C: Context>(
    remote: &RemoteStep<C>,
    step: &mut StepExecution,
    context: &mut C,
    run: &mut Run<'_>,
    outcome: LevelOutcome,
) -> LevelOutcome {
    let status = step.status;
    let error = step.error.take();
    let result = compensate_remote(remote, step, context, run).await;
    let compensation_error = step.error.take();
    step.status = status;
    step.error = error;
    match (result, outcome) {
        (Err(()), LevelOutcome::Failed(mut failure)) => {
            step.error = Some(format!(
                "{}; its compensation failed: {}",
                step.error.as_deref().unwrap_or_default(),
                compensation_error.unwrap_or_default()
            ));
            failure.compensation_failures.push(step.name.clone());
            LevelOutcome::Failed(failure)
        }
        (_, outcome) => outcome,
    }
}

/// The status of a step after its compensation succeeded, given its status before.
fn settle(step: &mut StepExecution, before: StepStatus) {
    if before == StepStatus::PausedByOnExecute {
        // Compensated while waiting: it will never complete, and its reply changes nothing.
        step.status = StepStatus::ErroredByOnExecute;
        step.error = Some("rolled back while waiting for its reply".to_owned());
    } else {
        step.status = restore(before);
    }
}

/// After a successful retry of a failed compensation the step is a completed, compensated step.
fn restore(status: StepStatus) -> StepStatus {
    if status == StepStatus::ErroredOnFailure {
        StepStatus::Finished
    } else {
        status
    }
}

/// Records a failed compensation. A completed step becomes `errored-on-failure`; a step that had
/// failed already keeps its status (a retry must not turn it into a completed step).
pub(in crate::execution) fn compensation_failed(
    step: &mut StepExecution,
    before: StepStatus,
    message: String,
) {
    tracing::warn!(saga.step = %step.name, %message, "saga compensation failed");
    step.status = match before {
        StepStatus::Finished | StepStatus::ErroredOnFailure => StepStatus::ErroredOnFailure,
        other => other,
    };
    step.error = Some(message);
}

/// Builds and queues a remote step's compensating command.
async fn compensate_remote<C: Context>(
    remote: &RemoteStep<C>,
    step: &mut StepExecution,
    context: &mut C,
    run: &mut Run<'_>,
) -> Result<(), ()> {
    if let Some(handler) = &remote.on_failure {
        let before = step.status;
        step.status = StepStatus::RunningOnFailure;
        match guarded(handler.call.call(context)).await {
            Ok(request) => {
                run.send(request);
            }
            Err(cause) => {
                compensation_failed(step, before, cause.to_string());
                return Err(());
            }
        }
    }
    step.already_rollback = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::InnerExecution;

    fn step(status: StepStatus, kind: StepKind) -> StepExecution {
        let mut step = StepExecution::new("step", kind);
        step.status = status;
        step
    }

    fn with_sub_saga(mut step: StepExecution, already_rollback: bool) -> StepExecution {
        step.inner = Some(InnerExecution {
            id: uuid::Uuid::new_v4(),
            saga: "sub".to_owned(),
            user: None,
            status: SagaStatus::Errored,
            steps: Vec::new(),
            already_rollback,
        });
        step
    }

    #[test]
    fn only_steps_that_acted_have_an_effect_to_undo() {
        for status in [
            StepStatus::Finished,
            StepStatus::ErroredOnFailure,
            StepStatus::ErroredOnSuccess,
            StepStatus::ErroredOnError,
        ] {
            assert!(has_effect(&step(status, StepKind::Local)), "{status}");
        }
        for status in [
            StepStatus::ErroredOnExecute,
            StepStatus::RunningOnExecute,
            StepStatus::PausedByOnExecute,
            StepStatus::ErroredByOnExecute,
        ] {
            assert!(!has_effect(&step(status, StepKind::Remote)), "{status}");
        }
    }

    #[test]
    fn a_sub_saga_has_an_effect_until_it_is_rolled_back() {
        let failed = step(StepStatus::ErroredByOnExecute, StepKind::Conditional);
        assert!(has_effect(&with_sub_saga(failed.clone(), false)));
        assert!(!has_effect(&with_sub_saga(failed, true)));
    }

    #[test]
    fn a_failed_level_compensates_the_steps_before_the_failed_one() {
        let steps = [
            step(StepStatus::Finished, StepKind::Local),
            step(StepStatus::ErroredOnExecute, StepKind::Local),
        ];
        assert_eq!(steps_to_compensate_after_failure(&steps), 1);
        assert_eq!(steps_to_compensate_after_failure(&[]), 0);
    }

    #[test]
    fn a_failed_conditional_step_with_completed_sub_steps_is_compensated_too() {
        let conditional = step(StepStatus::ErroredByOnExecute, StepKind::Conditional);
        let steps = [
            step(StepStatus::Finished, StepKind::Local),
            with_sub_saga(conditional, false),
        ];
        assert_eq!(steps_to_compensate_after_failure(&steps), 2);
    }

    #[test]
    fn a_failed_compensation_keeps_a_failed_step_failed() {
        let mut finished = step(StepStatus::Finished, StepKind::Local);
        compensation_failed(&mut finished, StepStatus::Finished, "no".to_owned());
        assert_eq!(finished.status, StepStatus::ErroredOnFailure);
        assert_eq!(finished.error.as_deref(), Some("no"));

        let mut failed = step(StepStatus::ErroredOnSuccess, StepKind::Remote);
        compensation_failed(&mut failed, StepStatus::ErroredOnSuccess, "no".to_owned());
        assert_eq!(failed.status, StepStatus::ErroredOnSuccess);
    }

    #[test]
    fn a_step_compensated_while_waiting_can_never_complete() {
        let mut waiting = step(StepStatus::RunningOnFailure, StepKind::Remote);
        settle(&mut waiting, StepStatus::PausedByOnExecute);
        assert_eq!(waiting.status, StepStatus::ErroredByOnExecute);
        let mut retried = step(StepStatus::RunningOnFailure, StepKind::Local);
        settle(&mut retried, StepStatus::ErroredOnFailure);
        assert_eq!(retried.status, StepStatus::Finished);
    }
}
