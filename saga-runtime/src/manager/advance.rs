//! The pipeline's second step, **advance**: refuse an input that does not fit, claim the execution,
//! and run the engine on it until it pauses or ends; then [`conclude`](Inner::conclude).

use std::sync::Arc;

use tracing::Instrument;
use uuid::Uuid;

use super::persist::{Hold, Saver};
use super::{Inner, SagaError};
use crate::error::ExecutionError;
use crate::execution::{
    ErasedExecution, Outbox, Progress, ReplyRejection, SagaStatus, TransactionState,
};
use crate::message::SagaResponse;

/// What advances an execution.
#[derive(Clone)]
pub(super) enum Input {
    Start,
    Reply(SagaResponse),
    Expire(Uuid),
    Rollback,
    Commit,
}

/// What one advance did.
#[derive(Debug, Default)]
pub(super) struct Advanced {
    /// The saga failed (raised to the caller with `raise_on_error`).
    pub(super) failure: Option<ExecutionError>,
    /// The input was a reply (or an expiry) that did not fit.
    pub(super) rejection: Option<ReplyRejection>,
}

impl Inner {
    /// Runs the engine on `execution` with `input`, stores the result, publishes what it emitted,
    /// and settles the transaction when the execution ended; in a `saga.run` span.
    pub(super) async fn advance(
        self: &Arc<Self>,
        execution: &mut dyn ErasedExecution,
        input: Input,
    ) -> Result<Advanced, SagaError> {
        let span = tracing::info_span!(
            "saga.run",
            saga.name = %execution.saga_name(),
            saga.id = %execution.id(),
        );
        self.advance_in_span(execution, input)
            .instrument(span)
            .await
    }

    async fn advance_in_span(
        self: &Arc<Self>,
        execution: &mut dyn ErasedExecution,
        input: Input,
    ) -> Result<Advanced, SagaError> {
        let env = &self.env;
        let mut advanced = Advanced::default();
        // An input that does not fit changes nothing, not even the owner.
        if let Some(reason) = refusal(execution, &input)? {
            tracing::debug!(%reason, "input ignored");
            advanced.rejection = Some(reason);
            return Ok(advanced);
        }
        // Messages stored with the loaded state and not marked published go out first, with the
        // next store: no store may overwrite them unpublished.
        let mut outbox = Outbox::new();
        outbox.restore(execution.take_unpublished());
        if let Input::Commit = input {
            advanced.failure = self.commit(execution, &mut outbox).await?;
            return Ok(advanced);
        }
        // A committed transaction is final: compensating a finished saga by hand undoes its steps
        // but rejects nothing.
        let autocommit = execution.settings().autocommit;
        let reject_on_failure = autocommit && execution.status() != SagaStatus::Finished;
        // The claim: stored with this instance as owner before any handler runs, so that another
        // instance leaves it alone and recovery knows it was being advanced.
        let claimed = self.store(execution, &mut outbox, Hold::Keep).await?;
        self.publish(claimed).await?;
        let mut saver = Saver { inner: self };
        let result = match input {
            Input::Start => execution.execute(None, env, &mut outbox, &mut saver).await,
            Input::Reply(reply) => {
                execution
                    .execute(Some(reply), env, &mut outbox, &mut saver)
                    .await
            }
            Input::Expire(request) => {
                execution
                    .expire(request, env, &mut outbox, &mut saver)
                    .await
            }
            Input::Rollback => match execution.rollback(env, &mut outbox, &mut saver).await {
                Ok(()) => {
                    advanced.failure = Some(ExecutionError::RolledBack { id: execution.id() });
                    Ok(Progress::Finished)
                }
                Err(error) => Err(error),
            },
            Input::Commit => unreachable!("handled above"),
        };
        self.conclude(
            execution,
            &mut outbox,
            result,
            reject_on_failure,
            &mut advanced,
        )
        .await?;
        Ok(advanced)
    }
}

/// Why `input` does not fit `execution` now, if it does not: a reply or an expiry that is not
/// awaited is ignored (`Some`); a commit or rollback that cannot be done is an error.
fn refusal(
    execution: &dyn ErasedExecution,
    input: &Input,
) -> Result<Option<ReplyRejection>, SagaError> {
    match input {
        Input::Start => Ok(None),
        Input::Reply(reply) => match execution.check_reply(reply) {
            Ok(()) => Ok(None),
            Err(ExecutionError::ReplyRejected { reason, .. }) => Ok(Some(reason)),
            Err(error) => Err(error.into()),
        },
        Input::Expire(request) => {
            Ok((!execution.is_waiting_for(*request)).then_some(ReplyRejection::NotWaiting))
        }
        Input::Commit => {
            if execution.status() != SagaStatus::Finished
                || execution.transaction() != TransactionState::Open
            {
                return Err(ExecutionError::CannotCommit {
                    id: execution.id(),
                    status: execution.status(),
                    transaction: execution.transaction(),
                }
                .into());
            }
            Ok(None)
        }
        Input::Rollback => {
            if execution.already_rollback() {
                return Err(ExecutionError::AlreadyRolledBack {
                    id: execution.id(),
                    what: execution.saga_name().to_owned(),
                }
                .into());
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::testing::{Trail, env, local_saga, remote_saga, reply_to};
    use crate::execution::{NoCheckpoint, SagaExecution};
    use crate::message::SagaResponseStatus;

    /// An execution of `remote_saga` paused at `pay`.
    async fn paused() -> SagaExecution<Trail> {
        let mut execution = SagaExecution::new(remote_saga(), Trail::default());
        let progress = execution
            .execute_checkpointed(None, &env(), &mut Outbox::new(), &mut NoCheckpoint)
            .await
            .expect("runs");
        assert_eq!(progress, Progress::Paused);
        execution
    }

    #[tokio::test]
    async fn the_awaited_reply_and_its_timeout_fit() {
        let execution = paused().await;
        let reply = reply_to(&execution, SagaResponseStatus::Success);
        let request = execution.waiting_request().expect("waits");
        assert_eq!(refusal(&execution, &Input::Reply(reply)).ok(), Some(None));
        assert_eq!(
            refusal(&execution, &Input::Expire(request)).ok(),
            Some(None)
        );
        assert_eq!(refusal(&execution, &Input::Start).ok(), Some(None));
        assert_eq!(refusal(&execution, &Input::Rollback).ok(), Some(None));
    }

    #[tokio::test]
    async fn a_reply_or_a_timeout_not_awaited_is_ignored() {
        let execution = paused().await;
        let stray = SagaResponse::new(
            execution.id(),
            Uuid::new_v4(),
            SagaResponseStatus::Success,
            &(),
        )
        .expect("encodes");
        assert_eq!(
            refusal(&execution, &Input::Reply(stray)).ok(),
            Some(Some(ReplyRejection::UnknownRequest))
        );
        assert_eq!(
            refusal(&execution, &Input::Expire(Uuid::new_v4())).ok(),
            Some(Some(ReplyRejection::NotWaiting))
        );
    }

    #[tokio::test]
    async fn only_a_finished_execution_with_an_open_transaction_commits() {
        let execution = paused().await;
        let error = refusal(&execution, &Input::Commit).expect_err("paused");
        assert!(
            matches!(
                error,
                SagaError::Execution(ExecutionError::CannotCommit {
                    status: SagaStatus::Paused,
                    transaction: TransactionState::Open,
                    ..
                })
            ),
            "{error:?}"
        );
        let mut finished = SagaExecution::new(local_saga(), Trail::default());
        finished
            .execute_checkpointed(None, &env(), &mut Outbox::new(), &mut NoCheckpoint)
            .await
            .expect("finishes");
        assert_eq!(refusal(&finished, &Input::Commit).ok(), Some(None));
        finished.transaction = TransactionState::Committed;
        assert!(refusal(&finished, &Input::Commit).is_err());
    }

    #[tokio::test]
    async fn a_second_rollback_is_an_error() {
        let mut execution = paused().await;
        execution
            .rollback_checkpointed(&env(), &mut Outbox::new(), &mut NoCheckpoint)
            .await
            .expect("compensates");
        let error = refusal(&execution, &Input::Rollback).expect_err("rolled back");
        assert!(
            matches!(
                error,
                SagaError::Execution(ExecutionError::AlreadyRolledBack { .. })
            ),
            "{error:?}"
        );
    }
}
