//! Forward execution: a level's steps run in order, a remote step sends its command and pauses
//! until its reply (or its timeout) resumes it, a conditional step runs the sub-saga of the branch
//! its conditions chose; and recovery's resend of a waiting step's command.

use tracing::Instrument;

use super::compensate::self_compensate;
use super::run::guarded;
use super::{Failure, LevelOutcome, Resume, Run, fail};
use crate::context::Context;
use crate::definition::{
    BoxFuture, Branch, ConditionalStep, LocalStep, RemoteStep, StepDefinition,
};
use crate::execution::{InnerExecution, SagaStatus, StepExecution, StepFailure, StepStatus};
use crate::message::SagaResponseStatus;

/// Queues again the command the level's waiting remote step (possibly inside a conditional's
/// sub-saga) sent, with its original message id: its request is built again from the context.
/// Returns whether there was one.
pub(in crate::execution) fn resend_level<'a, C: Context>(
    definitions: &'a [StepDefinition<C>],
    steps: &'a [StepExecution],
    context: &'a C,
    run: &'a mut Run<'_>,
) -> BoxFuture<'a, Result<bool, StepFailure>> {
    Box::pin(async move {
        let Some(step) = steps.last() else {
            return Ok(false);
        };
        if step.status != StepStatus::PausedByOnExecute {
            return Ok(false);
        }
        match &definitions[steps.len() - 1] {
            StepDefinition::Remote(remote) => {
                let Some(id) = step.request_id else {
                    return Ok(false);
                };
                let request = guarded(remote.on_execute.call.call(context)).await?;
                run.resend(request, id);
                Ok(true)
            }
            StepDefinition::Conditional(conditional) => {
                let (Some(branch), Some(inner)) = (step.branch, step.inner.as_ref()) else {
                    return Ok(false);
                };
                let Some(saga) = conditional.branch_saga(branch) else {
                    return Ok(false);
                };
                resend_level(saga.steps(), &inner.steps, context, run).await
            }
            StepDefinition::Local(_) => Ok(false),
        }
    })
}

/// Runs one level: resumes its paused step with `resume`, then runs its remaining steps in order.
pub(in crate::execution) fn run_level<'a, C: Context>(
    definitions: &'a [StepDefinition<C>],
    steps: &'a mut Vec<StepExecution>,
    context: &'a mut C,
    mut resume: Option<Resume>,
    run: &'a mut Run<'_>,
) -> BoxFuture<'a, LevelOutcome> {
    Box::pin(async move {
        if let Some(last) = steps.len().checked_sub(1) {
            if steps[last].status == StepStatus::PausedByOnExecute {
                let Some(input) = resume.take() else {
                    return LevelOutcome::Paused;
                };
                match run_step(
                    &definitions[last],
                    &mut steps[last],
                    context,
                    Some(input),
                    run,
                )
                .await
                {
                    LevelOutcome::Done => {}
                    other => return other,
                }
            }
        }
        while steps.len() < definitions.len() {
            let definition = &definitions[steps.len()];
            steps.push(StepExecution::new(definition.name(), definition.kind()));
            let step = steps.last_mut().expect("a step was just pushed");
            match run_step(definition, step, context, None, run).await {
                LevelOutcome::Done => {}
                other => return other,
            }
        }
        LevelOutcome::Done
    })
}

/// Runs (or resumes) one step.
async fn run_step<C: Context>(
    definition: &StepDefinition<C>,
    step: &mut StepExecution,
    context: &mut C,
    resume: Option<Resume>,
    run: &mut Run<'_>,
) -> LevelOutcome {
    let span = tracing::info_span!(
        "saga.step",
        saga.step = %step.name,
        saga.kind = %step.kind,
        saga.phase = "forward"
    );
    async move {
        match definition {
            StepDefinition::Local(local) => run_local(local, step, context, run).await,
            StepDefinition::Remote(remote) => match resume {
                None => send_remote(remote, step, context, run).await,
                Some(input) => receive_remote(remote, step, context, input, run).await,
            },
            StepDefinition::Conditional(conditional) => {
                run_conditional(conditional, step, context, resume, run).await
            }
        }
    }
    .instrument(span)
    .await
}

async fn run_local<C: Context>(
    local: &LocalStep<C>,
    step: &mut StepExecution,
    context: &mut C,
    run: &mut Run<'_>,
) -> LevelOutcome {
    step.status = StepStatus::RunningOnExecute;
    step.related_services.insert(run.env.service().to_owned());
    match guarded(local.on_execute.call.call(context)).await {
        Ok(()) => {
            step.status = StepStatus::Finished;
            LevelOutcome::Done
        }
        // The step did not complete, so its own compensation does not run.
        Err(cause) => fail(step, StepStatus::ErroredOnExecute, cause),
    }
}

async fn send_remote<C: Context>(
    remote: &RemoteStep<C>,
    step: &mut StepExecution,
    context: &mut C,
    run: &mut Run<'_>,
) -> LevelOutcome {
    step.status = StepStatus::RunningOnExecute;
    step.related_services.insert(run.env.service().to_owned());
    match guarded(remote.on_execute.call.call(context)).await {
        Ok(request) => {
            step.request_id = Some(run.send(request));
            step.status = StepStatus::FinishedOnExecute;
            step.status = StepStatus::PausedByOnExecute;
            LevelOutcome::Paused
        }
        // Nothing was sent, so there is nothing of this step to compensate.
        Err(cause) => fail(step, StepStatus::ErroredOnExecute, cause),
    }
}

async fn receive_remote<C: Context>(
    remote: &RemoteStep<C>,
    step: &mut StepExecution,
    context: &mut C,
    input: Resume,
    run: &mut Run<'_>,
) -> LevelOutcome {
    let reply = match input {
        Resume::Reply(reply) => reply,
        Resume::Timeout => {
            // The participant may have acted without its reply reaching us: compensate this step
            // too, before the saga compensates the earlier ones.
            let outcome = fail(step, StepStatus::ErroredByOnExecute, StepFailure::TimedOut);
            return self_compensate(remote, step, context, run, outcome).await;
        }
        // Nobody received the command, so there is nothing of this step to compensate.
        Resume::Unpublishable(reason) => {
            let cause = StepFailure::Unpublishable { reason };
            return fail(step, StepStatus::ErroredOnExecute, cause);
        }
    };
    step.related_services
        .extend(reply.related_services().iter().cloned());
    let (handler, running, errored) = match reply.status() {
        SagaResponseStatus::Success => (
            remote.on_success.as_ref(),
            StepStatus::RunningOnSuccess,
            StepStatus::ErroredOnSuccess,
        ),
        SagaResponseStatus::Error => match &remote.on_error {
            Some(handler) => (
                Some(handler),
                StepStatus::RunningOnError,
                StepStatus::ErroredOnError,
            ),
            // A refusal nobody handles must not be taken as a yes.
            None => {
                let content = reply.raw_content().clone();
                return fail(
                    step,
                    StepStatus::ErroredByOnExecute,
                    StepFailure::Refused { content },
                );
            }
        },
        SagaResponseStatus::SystemError => {
            let content = reply.raw_content().clone();
            return fail(
                step,
                StepStatus::ErroredByOnExecute,
                StepFailure::ParticipantFailed { content },
            );
        }
    };
    step.status = running;
    let Some(handler) = handler else {
        step.status = StepStatus::Finished;
        return LevelOutcome::Done;
    };
    match guarded(handler.call.call(context, reply)).await {
        Ok(()) => {
            step.status = StepStatus::Finished;
            LevelOutcome::Done
        }
        Err(cause) => {
            // The participant did act: undo it before the saga compensates the earlier steps.
            let outcome = fail(step, errored, cause);
            self_compensate(remote, step, context, run, outcome).await
        }
    }
}

async fn run_conditional<C: Context>(
    conditional: &ConditionalStep<C>,
    step: &mut StepExecution,
    context: &mut C,
    resume: Option<Resume>,
    run: &mut Run<'_>,
) -> LevelOutcome {
    if step.branch.is_none() {
        step.status = StepStatus::RunningOnExecute;
        let mut chosen = None;
        for (index, alternative) in conditional.alternatives.iter().enumerate() {
            match guarded(alternative.condition.call.call(context)).await {
                Ok(true) => {
                    chosen = Some(Branch::If(index));
                    break;
                }
                Ok(false) => {}
                Err(cause) => {
                    let cause = StepFailure::Condition {
                        number: index + 1,
                        cause: Box::new(cause),
                    };
                    return fail(step, StepStatus::ErroredOnExecute, cause);
                }
            }
        }
        let branch = chosen.unwrap_or(if conditional.else_then.is_some() {
            Branch::Else
        } else {
            Branch::NoMatch
        });
        // Remembered so that the conditions are never evaluated again, whatever happens next.
        step.branch = Some(branch);
        if let Some(saga) = conditional.branch_saga(branch) {
            step.inner = Some(InnerExecution {
                id: run.id,
                saga: saga.name().to_owned(),
                user: run.user.map(str::to_owned),
                status: SagaStatus::Running,
                steps: Vec::new(),
                already_rollback: false,
            });
        }
    }
    let branch = step.branch.unwrap_or(Branch::NoMatch);
    let (Some(saga), Some(inner)) = (conditional.branch_saga(branch), step.inner.as_mut()) else {
        step.status = StepStatus::Finished;
        return LevelOutcome::Done;
    };
    inner.status = SagaStatus::Running;
    match run_level(saga.steps(), &mut inner.steps, context, resume, run).await {
        LevelOutcome::Done => {
            inner.status = SagaStatus::Finished;
            step.status = StepStatus::Finished;
            LevelOutcome::Done
        }
        LevelOutcome::Paused => {
            inner.status = SagaStatus::Paused;
            step.status = StepStatus::PausedByOnExecute;
            LevelOutcome::Paused
        }
        LevelOutcome::Failed(failure) => {
            // The sub-saga's completed steps are not compensated here but with the rollback that
            // follows, as this step's compensation (the step has an effect while its sub-saga is
            // not rolled back): first of all, as one unit behind one stored intent, so that a stop
            // can never run them twice.
            inner.already_rollback = false;
            inner.status = SagaStatus::Errored;
            let Failure {
                step: inner_step,
                status: inner_status,
                cause: inner_cause,
                compensation_failures,
            } = failure;
            let cause = StepFailure::SubSaga {
                saga: saga.name().to_owned(),
                step: inner_step,
                status: inner_status,
                cause: Box::new(inner_cause),
            };
            let outcome = fail(step, StepStatus::ErroredByOnExecute, cause);
            let LevelOutcome::Failed(mut outer) = outcome else {
                return outcome;
            };
            outer.compensation_failures = compensation_failures
                .into_iter()
                .map(|name| format!("{}/{name}", step.name))
                .collect();
            LevelOutcome::Failed(outer)
        }
    }
}
