//! The two-phase commit of an execution that ended: reserve, then commit; or reject, when a
//! reservation fails or the saga failed.
//!
//! The decision is stored before anyone hears it: the execution is stored `committing` before the
//! reservations, and `committed` or `rejected` together with the commit or reject messages (its
//! outbox) before they are sent. A stop before the decision is stored makes recovery run the
//! reservation again (nobody was told anything final); a stop after it makes recovery send the
//! stored messages again.

use super::persist::{Hold, Saver};
use super::{Inner, SagaError};
use crate::committer::{CommitError, Phase, PreparedPhase};
use crate::error::ExecutionError;
use crate::execution::{ErasedExecution, Outbox, TransactionState};
use crate::faults;

impl Inner {
    /// Runs the two-phase commit of a finished execution; a failed commit rejects the transaction,
    /// compensates the steps and leaves the execution errored (the returned failure).
    pub(super) async fn commit(
        &self,
        execution: &mut dyn ErasedExecution,
        outbox: &mut Outbox,
    ) -> Result<Option<ExecutionError>, SagaError> {
        let env = &self.env;
        let mut failure = None;
        execution.set_transaction(TransactionState::Committing);
        execution.touch();
        let stored = self.store(execution, outbox, Hold::Keep).await?;
        self.publish(stored).await?;
        faults::reach("before-commit");
        let transactions = execution.transactions(env);
        let refusal = match self.committer.phase(Phase::Reserve, &transactions).await {
            Ok(reserved) if reserved.all_accepted() => None,
            Ok(reserved) => {
                let mut services = reserved.refused;
                services.extend(reserved.unanswered);
                tracing::warn!(?services, "reservation failed; rejecting the transaction");
                Some(CommitError::ReservationFailed { services })
            }
            // The outcome of the reservation is unknown: reject, so that nothing stays reserved.
            Err(error) => Some(CommitError::Broker(error)),
        };
        let phase = match refusal {
            None => {
                execution.set_transaction(TransactionState::Committed);
                Phase::Commit
            }
            Some(error) => {
                execution.mark_errored();
                let mut saver = Saver { inner: self };
                let rollback = execution
                    .rollback(env, outbox, &mut saver)
                    .await
                    .err()
                    .map(Box::new);
                failure = Some(ExecutionError::CommitFailed {
                    id: execution.id(),
                    reason: Box::new(error),
                    rollback,
                });
                execution.set_transaction(TransactionState::Rejected);
                Phase::Reject
            }
        };
        execution.touch();
        let mut decided = self.committer.prepare(phase, &transactions).await?;
        for message in decided.take_messages() {
            outbox.push(message);
        }
        let stored = self.store(execution, outbox, Hold::Release).await?;
        faults::reach("after-commit");
        self.publish(stored).await?;
        self.collect_answers(decided).await;
        Ok(failure)
    }

    /// Decides to reject the execution's transaction: marks it `rejected` and queues the reject
    /// messages in `outbox`, to be stored with that decision and then sent.
    pub(super) async fn decide_reject(
        &self,
        execution: &mut dyn ErasedExecution,
        outbox: &mut Outbox,
    ) -> Result<PreparedPhase, SagaError> {
        execution.set_transaction(TransactionState::Rejected);
        execution.touch();
        let transactions = execution.transactions(&self.env);
        let mut rejecting = self.committer.prepare(Phase::Reject, &transactions).await?;
        for message in rejecting.take_messages() {
            outbox.push(message);
        }
        Ok(rejecting)
    }

    /// Waits for the answers to a sent commit or reject phase and reports the missing ones.
    pub(super) async fn collect_answers(&self, phase: PreparedPhase) {
        let report = self.committer.collect(phase).await;
        if !report.all_accepted() {
            tracing::warn!(
                refused = ?report.refused,
                unanswered = ?report.unanswered,
                "a participant did not acknowledge the transaction's outcome"
            );
        }
    }
}
