//! Which reply an execution waits for, and why it refuses one that does not fit.

use uuid::Uuid;

use super::{SagaExecution, SagaStatus, StepExecution, StepStatus};
use crate::error::ExecutionError;
use crate::message::SagaResponse;

/// Why a reply was not applied. The execution is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyRejection {
    /// No execution with the reply's id is known.
    UnknownExecution,
    /// The reply names another execution.
    WrongExecution,
    /// The execution already finished or errored; late replies change nothing.
    ExecutionEnded(SagaStatus),
    /// The execution is not waiting for any reply.
    NotWaiting,
    /// The reply answers a command that was already answered.
    Duplicate,
    /// The reply answers a command this execution never sent (or not the one it waits for).
    UnknownRequest,
}

impl std::fmt::Display for ReplyRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownExecution => f.write_str("no such execution"),
            Self::WrongExecution => f.write_str("the reply names another execution"),
            Self::ExecutionEnded(status) => write!(f, "the execution is already {status}"),
            Self::NotWaiting => f.write_str("the execution is not waiting for a reply"),
            Self::Duplicate => f.write_str("the command was already answered"),
            Self::UnknownRequest => {
                f.write_str("the reply answers no command the execution waits for")
            }
        }
    }
}

impl<C> SagaExecution<C> {
    /// The command a remote step (possibly inside a conditional) waits for the reply to.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn waiting_request(&self) -> Option<Uuid> {
        fn find(steps: &[StepExecution]) -> Option<Uuid> {
            let last = steps.last()?;
            if last.status != StepStatus::PausedByOnExecute {
                return None;
            }
            match &last.inner {
                Some(inner) => find(&inner.steps),
                None => last.request_id,
            }
        }
        find(&self.steps)
    }

    /// Whether the execution is paused waiting for the reply to command `request`.
    pub(crate) fn is_waiting_for(&self, request: Uuid) -> bool {
        self.status == SagaStatus::Paused && self.waiting_request() == Some(request)
    }

    /// Whether `reply` is the one the execution waits for; if not, why it is refused.
    pub(crate) fn check_reply(&self, reply: &SagaResponse) -> Result<(), ExecutionError> {
        let reject = |reason| {
            Err(ExecutionError::ReplyRejected {
                id: self.id,
                reason,
            })
        };
        if reply.saga() != self.id {
            return reject(ReplyRejection::WrongExecution);
        }
        if self.status.is_terminal() {
            return reject(ReplyRejection::ExecutionEnded(self.status));
        }
        if self.waiting_request() == Some(reply.request()) {
            return Ok(());
        }
        if answered(&self.steps, reply.request()) {
            return reject(ReplyRejection::Duplicate);
        }
        if self.status != SagaStatus::Paused {
            return reject(ReplyRejection::NotWaiting);
        }
        reject(ReplyRejection::UnknownRequest)
    }
}

/// Whether some step (recursively) already received the reply to command `request`.
fn answered(steps: &[StepExecution], request: Uuid) -> bool {
    steps.iter().any(|step| {
        (step.request_id == Some(request) && step.status != StepStatus::PausedByOnExecute)
            || step
                .inner
                .as_ref()
                .is_some_and(|inner| answered(&inner.steps, request))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::testing::{Trail, env, local_saga, remote_saga, reply_to};
    use crate::execution::{NoCheckpoint, Outbox};
    use crate::message::SagaResponseStatus;

    fn rejection(execution: &SagaExecution<Trail>, reply: &SagaResponse) -> Option<ReplyRejection> {
        match execution.check_reply(reply) {
            Ok(()) => None,
            Err(ExecutionError::ReplyRejected { reason, .. }) => Some(reason),
            Err(other) => panic!("a reply is accepted or rejected, got {other:?}"),
        }
    }

    fn stray(id: Uuid) -> SagaResponse {
        SagaResponse::new(id, Uuid::new_v4(), SagaResponseStatus::Success, &()).expect("encodes")
    }

    async fn run(execution: &mut SagaExecution<Trail>, reply: Option<SagaResponse>) {
        execution
            .execute_checkpointed(reply, &env(), &mut Outbox::new(), &mut NoCheckpoint)
            .await
            .expect("runs");
    }

    #[tokio::test]
    async fn a_paused_execution_takes_only_the_reply_to_its_command() {
        let mut execution = SagaExecution::new(remote_saga(), Trail::default());
        run(&mut execution, None).await;
        let awaited = reply_to(&execution, SagaResponseStatus::Success);
        assert_eq!(rejection(&execution, &awaited), None);
        assert_eq!(
            rejection(&execution, &stray(execution.id())),
            Some(ReplyRejection::UnknownRequest)
        );
        assert_eq!(
            rejection(&execution, &stray(Uuid::new_v4())),
            Some(ReplyRejection::WrongExecution)
        );
    }

    #[tokio::test]
    async fn a_reply_applied_once_is_a_duplicate_and_late_replies_change_nothing() {
        let mut execution = SagaExecution::new(remote_saga(), Trail::default());
        run(&mut execution, None).await;
        let reply = reply_to(&execution, SagaResponseStatus::Success);
        run(&mut execution, Some(reply.clone())).await;
        assert_eq!(execution.status(), SagaStatus::Finished);
        assert_eq!(
            rejection(&execution, &reply),
            Some(ReplyRejection::ExecutionEnded(SagaStatus::Finished))
        );
        // Not ended, not paused, and already answered: a duplicate.
        execution.status = SagaStatus::Running;
        assert_eq!(
            rejection(&execution, &reply),
            Some(ReplyRejection::Duplicate)
        );
    }

    #[test]
    fn an_execution_that_sent_nothing_waits_for_no_reply() {
        let execution = SagaExecution::new(local_saga(), Trail::default());
        assert_eq!(execution.waiting_request(), None);
        assert_eq!(
            rejection(&execution, &stray(execution.id())),
            Some(ReplyRejection::NotWaiting)
        );
    }
}
