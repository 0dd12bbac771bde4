//! What recovery asks of an execution a stopped process left behind: whether it was stored in the
//! middle of a rollback, the command its waiting step sent, and the compensations that were under
//! way when the process stopped.

use super::{ExecutionEnv, Outbox, SagaExecution, SagaStatus, StepFailure, StepStatus, engine};
use crate::context::Context;

impl<C: Context> SagaExecution<C> {
    /// Whether the execution was stored in the middle of a rollback: a top-level compensation under
    /// way (a step marked `running-on-failure`), or a running execution with a failed or compensated
    /// step (its rollback had started).
    pub(crate) fn rollback_interrupted(&self) -> bool {
        use StepStatus as S;
        self.steps.iter().any(|step| {
            step.status == S::RunningOnFailure
                || (self.status == SagaStatus::Running
                    && (step.already_rollback
                        || matches!(
                            step.status,
                            S::ErroredOnExecute
                                | S::ErroredByOnExecute
                                | S::ErroredOnFailure
                                | S::ErroredOnSuccess
                                | S::ErroredOnError
                        )))
        })
    }

    /// Recovery: queues again the command the waiting remote step sent (its request built again
    /// from the context, with the original message id, so that receivers see a duplicate). Returns
    /// whether there was one.
    pub(crate) async fn resend_waiting(
        &self,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<bool, StepFailure> {
        let mut run = engine::Run::new(self.id, self.user.as_deref(), env, &self.headers, outbox);
        engine::resend_level(
            self.definition.steps(),
            &self.steps,
            &self.context,
            &mut run,
        )
        .await
    }

    /// Recovery: the compensations that were under way when the process stopped may or may not have
    /// run. Compensations run at most once, so they are not run again: each such step is recorded as
    /// compensated with an `errored-on-failure` status and an error saying so. Returns their names.
    pub(crate) fn settle_interrupted_compensations(&mut self) -> Vec<String> {
        let mut settled = Vec::new();
        for step in &mut self.steps {
            if step.status == StepStatus::RunningOnFailure {
                step.status = StepStatus::ErroredOnFailure;
                step.already_rollback = true;
                step.error = Some(
                    "its compensation was interrupted by a stop of the process; it may have run, \
                     and compensations run at most once, so it was not run again"
                        .to_owned(),
                );
                settled.push(step.name.clone());
            }
        }
        if !settled.is_empty() {
            self.touch();
        }
        settled
    }
}
