//! The step-running core: forward execution of one level of steps (a saga or a conditional's
//! sub-saga), the remote step's reply handling, and compensation.
//!
//! Levels recurse through conditional steps, so the functions return boxed futures.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tracing::Instrument;
use uuid::Uuid;

use super::{InnerExecution, Outbox, SagaStatus, StepExecution, StepStatus};
use crate::context::Context;
use crate::definition::{
    BoxFuture, Branch, ConditionalStep, LocalStep, RemoteStep, StepDefinition,
};
use crate::error::StepError;
use crate::message::{
    BrokerMessage, Headers, SagaRequest, SagaResponse, SagaResponseStatus, header,
};

use super::ExecutionEnv;

/// What resumes a paused step.
pub(super) enum Resume {
    /// The reply to its command.
    Reply(SagaResponse),
    /// No reply came in time.
    Timeout,
}

/// How a level (or a step) ended this time.
pub(super) enum LevelOutcome {
    Done,
    Paused,
    Failed(Failure),
}

/// The step that failed and why.
pub(super) struct Failure {
    pub(super) step: String,
    pub(super) status: StepStatus,
    pub(super) message: String,
    /// Compensations that already ran for this failure (a step undoing itself, a sub-saga
    /// compensating its steps) and failed.
    pub(super) compensation_failures: Vec<String>,
}

/// What every step of one `execute` call shares.
pub(super) struct Run<'r> {
    id: Uuid,
    user: Option<&'r str>,
    env: &'r ExecutionEnv,
    headers: &'r Headers,
    outbox: &'r mut Outbox,
}

impl<'r> Run<'r> {
    pub(super) fn new(
        id: Uuid,
        user: Option<&'r str>,
        env: &'r ExecutionEnv,
        headers: &'r Headers,
        outbox: &'r mut Outbox,
    ) -> Self {
        Self {
            id,
            user,
            env,
            headers,
            outbox,
        }
    }

    /// Queues `request` as a command with the execution's headers; returns the message id.
    fn send(&mut self, request: SagaRequest) -> Uuid {
        let (target, content) = request.into_parts();
        let mut message = BrokerMessage::new(target, content).with_reply_to(self.env.reply_topic());
        message.headers = self.command_headers();
        let id = message.id;
        self.outbox.push(message);
        id
    }

    /// Queues `request` again as the command with message id `id` (sent before).
    fn resend(&mut self, request: SagaRequest, id: Uuid) {
        let (target, content) = request.into_parts();
        let mut message = BrokerMessage::new(target, content).with_reply_to(self.env.reply_topic());
        message.id = id;
        message.headers = self.command_headers();
        self.outbox.push(message);
    }

    /// The headers of a command: the inherited ones, with the execution's id as `saga`, nested in
    /// the inherited `transactions`, and the acting user. Built per message, so that an advance
    /// that sends nothing builds nothing.
    fn command_headers(&self) -> Headers {
        let mut headers = self.headers.clone();
        let id = self.id.to_string();
        let transactions = match self.headers.get(header::TRANSACTIONS) {
            Some(outer) if !outer.is_empty() => format!("{outer},{id}"),
            _ => id.clone(),
        };
        headers.insert(header::TRANSACTIONS.to_owned(), transactions);
        headers.insert(header::SAGA.to_owned(), id);
        if let Some(user) = self.user {
            headers.insert(header::USER.to_owned(), user.to_owned());
        }
        headers
    }
}

/// Awaits a handler, turning its error or its panic into the failure message.
async fn guarded<T>(future: BoxFuture<'_, Result<T, StepError>>) -> Result<T, String> {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(panic) => Err(format!("handler panicked: {}", panic_message(&*panic))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Queues again the command the level's waiting remote step (possibly inside a conditional's
/// sub-saga) sent, with its original message id: its request is built again from the context.
/// Returns whether there was one.
pub(super) fn resend_level<'a, C: Context>(
    definitions: &'a [StepDefinition<C>],
    steps: &'a [StepExecution],
    context: &'a C,
    run: &'a mut Run<'_>,
) -> BoxFuture<'a, Result<bool, String>> {
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
pub(super) fn run_level<'a, C: Context>(
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

fn fail(step: &mut StepExecution, status: StepStatus, message: String) -> LevelOutcome {
    tracing::warn!(saga.step = %step.name, %status, %message, "saga step failed");
    step.status = status;
    step.error = Some(message.clone());
    LevelOutcome::Failed(Failure {
        step: step.name.clone(),
        status,
        message,
        compensation_failures: Vec::new(),
    })
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
        Err(message) => fail(step, StepStatus::ErroredOnExecute, message),
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
        Err(message) => fail(step, StepStatus::ErroredOnExecute, message),
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
            let outcome = fail(
                step,
                StepStatus::ErroredByOnExecute,
                "no reply arrived before the timeout".to_owned(),
            );
            return self_compensate(remote, step, context, run, outcome).await;
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
                return fail(
                    step,
                    StepStatus::ErroredByOnExecute,
                    format!("the participant refused: {}", reply.raw_content()),
                );
            }
        },
        SagaResponseStatus::SystemError => {
            return fail(
                step,
                StepStatus::ErroredByOnExecute,
                format!("the participant failed: {}", reply.raw_content()),
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
        Err(message) => {
            // The participant did act: undo it before the saga compensates the earlier steps.
            let outcome = fail(step, errored, message);
            self_compensate(remote, step, context, run, outcome).await
        }
    }
}

/// Runs a failed remote step's own compensation. The step keeps its failed status either way (it
/// did not complete, so the saga's rollback never picks it up again); a failing compensation is
/// added to its error and to the failure.
async fn self_compensate<C: Context>(
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
                Err(message) => {
                    return fail(
                        step,
                        StepStatus::ErroredOnExecute,
                        format!("condition {} failed: {message}", index + 1),
                    );
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
            let message = format!(
                "sub-saga `{}` failed at step `{}` ({}): {}",
                saga.name(),
                failure.step,
                failure.status,
                failure.message
            );
            let outcome = fail(step, StepStatus::ErroredByOnExecute, message);
            let LevelOutcome::Failed(mut outer) = outcome else {
                return outcome;
            };
            outer.compensation_failures = failure
                .compensation_failures
                .into_iter()
                .map(|name| format!("{}/{name}", step.name))
                .collect();
            LevelOutcome::Failed(outer)
        }
    }
}

/// How many of a failed level's steps its rollback covers: the steps before the failed one (it
/// compensated itself as far as it had to), and the failed one too when it is a conditional step
/// whose sub-saga still has completed steps to compensate.
pub(super) fn steps_to_compensate_after_failure(steps: &[StepExecution]) -> usize {
    match steps.last() {
        Some(last)
            if last.kind == crate::definition::StepKind::Conditional
                && !last.already_rollback
                && has_effect(last) =>
        {
            steps.len()
        }
        _ => steps.len().saturating_sub(1),
    }
}

/// Compensates the completed steps of one level in reverse order, each at most once; a failing
/// compensation is recorded and the others still run. Returns the names of those that failed.
pub(super) fn rollback_level<'a, C: Context>(
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
pub(super) fn has_effect(step: &StepExecution) -> bool {
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
pub(super) async fn compensate_step<C: Context>(
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
                    if let Err(message) = guarded(handler.call.call(context)).await {
                        compensation_failed(step, status, message);
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
pub(super) fn compensation_failed(step: &mut StepExecution, before: StepStatus, message: String) {
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
            Err(message) => {
                compensation_failed(step, before, message);
                return Err(());
            }
        }
    }
    step.already_rollback = true;
    Ok(())
}
