//! Running an execution forward: from its start or its paused step, until it pauses for a reply,
//! finishes, or fails (and compensates).

use std::sync::Arc;

use uuid::Uuid;

use super::checkpoint::{Checkpoint, NoCheckpoint};
use super::{ExecutionEnv, Outbox, ReplyRejection, SagaExecution, SagaStatus, engine};
use crate::context::Context;
use crate::error::ExecutionError;
use crate::message::SagaResponse;

/// Where an [`execute`](SagaExecution::execute) call left the execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) enum Progress {
    /// A remote step sent its command and waits for the reply.
    Paused,
    /// Every step completed.
    Finished,
}

impl<C: Context> SagaExecution<C> {
    /// Runs the execution: hands `reply` to the paused step, then runs every step not yet run.
    ///
    /// A step failure compensates the executed steps (their messages go to `outbox`) and returns
    /// [`ExecutionError::StepFailed`] with the execution `errored`. A reply that does not fit (late,
    /// duplicate, for another command) returns [`ExecutionError::ReplyRejected`] and changes nothing.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn execute(
        &mut self,
        reply: Option<SagaResponse>,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<Progress, ExecutionError> {
        self.execute_checkpointed(reply, env, outbox, &mut NoCheckpoint)
            .await
    }

    /// [`execute`](Self::execute) with `checkpoint` called before each top-level compensation.
    pub(crate) async fn execute_checkpointed(
        &mut self,
        reply: Option<SagaResponse>,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError> {
        if let Some(reply) = &reply {
            self.check_reply(reply)?;
        } else if self.status.is_terminal() {
            return Err(ExecutionError::AlreadyExecuted {
                id: self.id,
                status: self.status,
            });
        } else if self.status == SagaStatus::Paused {
            return Ok(Progress::Paused);
        }
        let resume = reply.map(engine::Resume::Reply);
        self.advance(resume, env, outbox, checkpoint).await
    }

    /// Fails the paused step because its reply did not come in time (only if it still waits for
    /// command `request`): the step compensates itself (the participant may have acted), then the
    /// saga compensates the earlier steps. Returns [`ExecutionError::StepFailed`] when it did.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn expire(
        &mut self,
        request: Uuid,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<Progress, ExecutionError> {
        self.expire_checkpointed(request, env, outbox, &mut NoCheckpoint)
            .await
    }

    /// [`expire`](Self::expire) with `checkpoint` called before each top-level compensation.
    pub(crate) async fn expire_checkpointed(
        &mut self,
        request: Uuid,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError> {
        if !self.is_waiting_for(request) {
            return Err(ExecutionError::ReplyRejected {
                id: self.id,
                reason: ReplyRejection::NotWaiting,
            });
        }
        self.advance(Some(engine::Resume::Timeout), env, outbox, checkpoint)
            .await
    }

    /// Fails the paused step because the command it waits for (`request`) can never be published
    /// (`reason`): nobody received it, so the step has nothing to compensate, and the saga
    /// compensates the earlier steps. `checkpoint` is called before each top-level compensation.
    pub(crate) async fn fail_unpublishable(
        &mut self,
        request: Uuid,
        reason: String,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError> {
        if !self.is_waiting_for(request) {
            return Err(ExecutionError::ReplyRejected {
                id: self.id,
                reason: ReplyRejection::NotWaiting,
            });
        }
        let resume = engine::Resume::Unpublishable(reason);
        self.advance(Some(resume), env, outbox, checkpoint).await
    }

    async fn advance(
        &mut self,
        resume: Option<engine::Resume>,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError> {
        self.status = SagaStatus::Running;
        self.deadline_ms = None;
        let definition = Arc::clone(&self.definition);
        let mut run = engine::Run::new(self.id, self.user.as_deref(), env, &self.headers, outbox);
        let outcome = engine::run_level(
            definition.steps(),
            &mut self.steps,
            &mut self.context,
            resume,
            &mut run,
        )
        .await;
        let result = match outcome {
            engine::LevelOutcome::Done => {
                self.status = SagaStatus::Finished;
                Ok(Progress::Finished)
            }
            engine::LevelOutcome::Paused => {
                self.status = SagaStatus::Paused;
                Ok(Progress::Paused)
            }
            engine::LevelOutcome::Failed(failure) => {
                let mut failed = failure.compensation_failures;
                let count = engine::steps_to_compensate_after_failure(&self.steps);
                failed.extend(
                    self.compensate_top_level(count, env, outbox, checkpoint)
                        .await,
                );
                self.already_rollback = failed.is_empty();
                self.status = SagaStatus::Errored;
                Err(ExecutionError::StepFailed {
                    id: self.id,
                    step: failure.step,
                    status: failure.status,
                    cause: Box::new(failure.cause),
                    compensation_failures: failed,
                })
            }
        };
        self.touch();
        result
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::execution::testing::{Declined, Trail, env, failing_saga, remote_saga};
    use crate::execution::{NoCheckpoint, StepFailure, StepStatus};

    #[tokio::test]
    async fn a_failed_step_carries_its_handler_s_error_as_the_cause() {
        let mut execution = SagaExecution::new(failing_saga(), Trail::default());
        let error = execution
            .execute(None, &env(), &mut Outbox::new())
            .await
            .expect_err("charge fails");
        let ExecutionError::StepFailed {
            step,
            status,
            cause,
            compensation_failures,
            ..
        } = &error
        else {
            panic!("expected StepFailed, got {error:?}");
        };
        assert_eq!(step, "charge");
        assert_eq!(*status, StepStatus::ErroredOnExecute);
        assert!(matches!(**cause, StepFailure::Handler { .. }), "{cause:?}");
        assert!(compensation_failures.is_empty());
        let handler = error.source().expect("the step's failure");
        let declined = handler.source().expect("the handler's error");
        assert!(declined.is::<Declined>());
        assert_eq!(execution.status(), SagaStatus::Errored);
        assert_eq!(execution.context().log, ["reserve", "release"]);
    }

    #[tokio::test]
    async fn a_timed_out_step_fails_and_undoes_what_its_participant_may_have_done() {
        let mut execution = SagaExecution::new(remote_saga(), Trail::default());
        let mut outbox = Outbox::new();
        execution
            .execute(None, &env(), &mut outbox)
            .await
            .expect("pauses");
        let request = execution.waiting_request().expect("waits");
        outbox.drain();
        let error = execution
            .expire_checkpointed(request, &env(), &mut outbox, &mut NoCheckpoint)
            .await
            .expect_err("the step times out");
        assert!(
            matches!(
                &error,
                ExecutionError::StepFailed { step, cause, .. }
                    if step == "pay" && matches!(**cause, StepFailure::TimedOut)
            ),
            "{error:?}"
        );
        let topics: Vec<_> = outbox.messages().iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["Refund"]);
        assert_eq!(execution.context().log, ["reserve", "release"]);
    }

    #[tokio::test]
    async fn an_expiry_for_another_command_changes_nothing() {
        let mut execution = SagaExecution::new(remote_saga(), Trail::default());
        execution
            .execute(None, &env(), &mut Outbox::new())
            .await
            .expect("pauses");
        let error = execution
            .expire(Uuid::new_v4(), &env(), &mut Outbox::new())
            .await
            .expect_err("not awaited");
        assert!(matches!(
            error,
            ExecutionError::ReplyRejected {
                reason: ReplyRejection::NotWaiting,
                ..
            }
        ));
        assert_eq!(execution.status(), SagaStatus::Paused);
    }
}
