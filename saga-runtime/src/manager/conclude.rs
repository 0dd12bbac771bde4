//! The pipeline's third step, **conclude**: after the engine ran, store the execution with what it
//! emitted and publish that; when it ended, commit its transaction (finished, with autocommit) or
//! reject it (failed); when it paused with a timeout, arm the timer.

use std::sync::Arc;
use std::time::Duration;

use super::advance::Advanced;
use super::expiry::deadline_after;
use super::persist::Hold;
use super::{Inner, SagaError};
use crate::error::ExecutionError;
use crate::execution::{ErasedExecution, Outbox, Progress, SagaStatus, now_ms};

impl Inner {
    /// Stores, publishes and settles the transaction after the engine ran (`result`): the common
    /// tail of every advance, recovery's included.
    pub(super) async fn conclude(
        self: &Arc<Self>,
        execution: &mut dyn ErasedExecution,
        outbox: &mut Outbox,
        result: Result<Progress, ExecutionError>,
        reject_on_failure: bool,
        advanced: &mut Advanced,
    ) -> Result<(), SagaError> {
        let autocommit = execution.settings().autocommit;
        match result {
            Ok(Progress::Paused) => {
                let timeout = execution.settings().timeout_ms;
                execution.set_deadline_ms(timeout.map(|timeout| deadline_after(now_ms(), timeout)));
                let stored = self.store(execution, outbox, Hold::Release).await?;
                // Armed before publishing: if the publish fails, the timeout still ends the wait.
                if let (Some(timeout), Some(request)) = (timeout, execution.waiting_request()) {
                    self.schedule_expiry(execution.id(), request, Duration::from_millis(timeout));
                }
                self.publish_paused(execution, outbox, stored, reject_on_failure, advanced)
                    .await?;
            }
            Ok(Progress::Finished) if execution.status() == SagaStatus::Finished && autocommit => {
                advanced.failure = self.commit(execution, outbox).await?;
            }
            Ok(Progress::Finished) => {
                let rolled_back = execution.status() == SagaStatus::Errored;
                self.store_ended(execution, outbox, rolled_back && reject_on_failure)
                    .await?;
            }
            Err(
                error @ (ExecutionError::StepFailed { .. } | ExecutionError::RollbackFailed { .. }),
            ) => {
                self.store_ended(execution, outbox, reject_on_failure)
                    .await?;
                advanced.failure = Some(error);
            }
            Err(error) => {
                // Nothing ran (the input was refused after all): let the execution rest again.
                if let Err(release) = self.store(execution, outbox, Hold::Release).await {
                    tracing::warn!(%release, "releasing the execution failed");
                }
                match error {
                    ExecutionError::ReplyRejected { reason, .. } => {
                        advanced.rejection = Some(reason);
                    }
                    error => return Err(error.into()),
                }
            }
        }
        Ok(())
    }

    /// Stores an execution that ended without a commit and publishes what it emitted; with
    /// `reject`, decides to reject its transaction first (stored with the decision) and waits for
    /// the participants' answers last.
    async fn store_ended(
        &self,
        execution: &mut dyn ErasedExecution,
        outbox: &mut Outbox,
        reject: bool,
    ) -> Result<(), SagaError> {
        let rejecting = if reject {
            Some(self.decide_reject(execution, outbox).await?)
        } else {
            None
        };
        let stored = self.store(execution, outbox, Hold::Release).await?;
        self.publish(stored).await?;
        if let Some(rejecting) = rejecting {
            self.collect_answers(rejecting).await;
        }
        Ok(())
    }
}
