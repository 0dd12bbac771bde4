//! The pipeline's first step, **apply**: find the execution an input is for, under its lock (the
//! copy a waiting run parked, or the stored one), [`advance`](Inner::advance) it, and report what
//! happened to the input.

use std::sync::Arc;

use uuid::Uuid;

use super::advance::{Advanced, Input};
use super::parking::Parked;
use super::{Inner, Interruption, SagaError};
use crate::error::{ExecutionError, LoadError, RepositoryError};
use crate::execution::{ErasedExecution, ReplyRejection, SagaStatus, TransactionState};

/// What happened to a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// The reply advanced the execution, which is now in `status`.
    Applied {
        /// The execution.
        id: Uuid,
        /// Its status after the reply.
        status: SagaStatus,
    },
    /// The reply changed nothing.
    Ignored {
        /// The execution it named.
        id: Uuid,
        /// Why.
        reason: ReplyRejection,
    },
}

impl Advanced {
    /// What the input did to execution `id`, now in `status`.
    fn outcome(&self, id: Uuid, status: SagaStatus) -> ReplyOutcome {
        match self.rejection {
            Some(reason) => ReplyOutcome::Ignored { id, reason },
            None => ReplyOutcome::Applied { id, status },
        }
    }
}

impl Inner {
    /// Applies `input` to execution `id` under its lock: to the copy a waiting run parked, or to
    /// the stored one.
    pub(super) async fn apply(
        self: &Arc<Self>,
        id: Uuid,
        input: Input,
    ) -> Result<ReplyOutcome, SagaError> {
        let _guard = self.locks.lock(id).await;
        let is_commit = matches!(input, Input::Commit);
        if is_commit && self.parked.contains(id) {
            // A run waits for it in memory, so it has not finished: leave it to that run.
            return Err(ExecutionError::CannotCommit {
                id,
                status: SagaStatus::Paused,
                transaction: TransactionState::Open,
            }
            .into());
        }
        match self.parked.take(id) {
            Some(parked) => self.apply_to_parked(id, parked, input, is_commit).await,
            None => self.apply_to_stored(id, input, is_commit).await,
        }
    }

    /// Applies `input` to a parked execution and tells its run what came of it (call under the
    /// execution's lock). A parked copy that turns out stale (another instance advanced the
    /// execution) is dropped, its run hears so, and the input goes to the stored copy.
    async fn apply_to_parked(
        self: &Arc<Self>,
        id: Uuid,
        parked: Parked,
        input: Input,
        is_commit: bool,
    ) -> Result<ReplyOutcome, SagaError> {
        let Parked {
            execution,
            version: parked_version,
            waiter,
        } = parked;
        let input_again = input.clone();
        let advanced = async {
            let mut execution = self.registered_copy(id, execution).await?;
            let advanced = self.advance(&mut *execution, input).await?;
            let outcome = advanced.outcome(id, execution.status());
            Ok::<_, SagaError>((execution, outcome, advanced.failure))
        }
        .await;
        if let Ok((_, ReplyOutcome::Ignored { .. }, _)) = &advanced {
            // A refusal stores nothing, so it cannot see that another instance advanced the
            // execution since it was parked: check. A stale copy is dropped (the waiting run hears
            // so) and the input is applied to the stored copy instead.
            if self.stored_version(id).await? != parked_version {
                drop(advanced);
                let _ = waiter.send(Err(SagaError::Interrupted {
                    id,
                    reason: Interruption::AdvancedElsewhere,
                }));
                return self.apply_to_stored(id, input_again, is_commit).await;
            }
        }
        match advanced {
            Ok((execution, outcome, failure)) => {
                self.after_parked_advance(&outcome, execution, failure, waiter);
                Ok(outcome)
            }
            Err(error @ SagaError::Repository(RepositoryError::Conflict { .. })) => {
                // Changed elsewhere since it was parked: apply the input to the stored copy (the
                // run hears of the conflict, which goes nowhere else).
                let _ = waiter.send(Err(SagaError::Interrupted {
                    id,
                    reason: Interruption::AdvanceFailed(Box::new(error)),
                }));
                self.apply_to_stored(id, input_again, is_commit).await
            }
            Err(error) => {
                let _ = waiter.send(Err(SagaError::Interrupted {
                    id,
                    reason: Interruption::reported(&error),
                }));
                Err(error)
            }
        }
    }

    /// The parked `execution`, unless the saga registered under its name has another context type
    /// (a run of another type used the name): then the stored copy, loaded with the registered saga.
    async fn registered_copy(
        &self,
        id: Uuid,
        execution: Box<dyn ErasedExecution>,
    ) -> Result<Box<dyn ErasedExecution>, SagaError> {
        match self.sagas.get(execution.saga_name()) {
            Some(saga) if !saga.owns(&*execution) => {
                let record = self.repository.load(id).await?;
                Ok(saga.load(record)?)
            }
            _ => Ok(execution),
        }
    }

    /// Loads execution `id` and advances it with `input` (call under the execution's lock). A lost
    /// race (the stored copy changed between load and store) reloads and applies the input again:
    /// the state machine then refuses what no longer fits (a reply already applied is a duplicate),
    /// so nothing is overwritten and nothing is applied twice.
    async fn apply_to_stored(
        self: &Arc<Self>,
        id: Uuid,
        input: Input,
        is_commit: bool,
    ) -> Result<ReplyOutcome, SagaError> {
        const ATTEMPTS: usize = 4;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let record = match self.repository.load(id).await {
                Ok(record) => record,
                Err(RepositoryError::NotFound { .. }) => {
                    return Ok(ReplyOutcome::Ignored {
                        id,
                        reason: ReplyRejection::UnknownExecution,
                    });
                }
                Err(error) => return Err(error.into()),
            };
            if let Some(owner) = self.held_elsewhere(&record) {
                return Err(SagaError::Busy { id, owner });
            }
            let saga = self
                .sagas
                .get(&record.saga)
                .ok_or_else(|| LoadError::UnknownSaga {
                    id,
                    saga: record.saga.clone(),
                })?;
            let mut execution = saga.load(record)?;
            let advanced = match self.advance(&mut *execution, input.clone()).await {
                Err(SagaError::Repository(RepositoryError::Conflict { .. }))
                    if attempt < ATTEMPTS =>
                {
                    tracing::debug!(saga.id = %id, "lost a race for the execution: reloading");
                    continue;
                }
                other => other?,
            };
            let outcome = advanced.outcome(id, execution.status());
            // A commit asked for by hand reports its failure to the caller; a saga failing on a
            // reply is an outcome of the saga, reported to whoever waits for it.
            if let (true, Some(failure)) = (is_commit, advanced.failure) {
                return Err(failure.into());
            }
            return Ok(outcome);
        }
    }

    /// The version stored now for execution `id` (0: none).
    async fn stored_version(&self, id: Uuid) -> Result<u64, SagaError> {
        match self.repository.load(id).await {
            Ok(record) => Ok(record.version),
            Err(RepositoryError::NotFound { .. }) => Ok(0),
            Err(RepositoryError::Corrupt { .. }) => Ok(u64::MAX),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advance_without_a_rejection_applied_the_input() {
        let id = Uuid::new_v4();
        let advanced = Advanced::default();
        assert_eq!(
            advanced.outcome(id, SagaStatus::Paused),
            ReplyOutcome::Applied {
                id,
                status: SagaStatus::Paused
            }
        );
    }

    #[test]
    fn a_rejected_input_is_ignored_whatever_the_status() {
        let id = Uuid::new_v4();
        let advanced = Advanced {
            failure: None,
            rejection: Some(ReplyRejection::Duplicate),
        };
        assert_eq!(
            advanced.outcome(id, SagaStatus::Finished),
            ReplyOutcome::Ignored {
                id,
                reason: ReplyRejection::Duplicate
            }
        );
    }

    #[test]
    fn a_failed_saga_is_still_an_applied_input() {
        let id = Uuid::new_v4();
        let advanced = Advanced {
            failure: Some(ExecutionError::RolledBack { id }),
            rejection: None,
        };
        assert_eq!(
            advanced.outcome(id, SagaStatus::Errored),
            ReplyOutcome::Applied {
                id,
                status: SagaStatus::Errored
            }
        );
    }
}
