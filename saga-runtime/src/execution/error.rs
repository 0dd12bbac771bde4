//! Why an execution could not do what was asked, and why a stored one could not be resumed.

use uuid::Uuid;

use super::{ReplyRejection, SagaStatus, StepFailure, StepStatus, TransactionState};
use crate::definition::Fingerprint;

/// Why an execution could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutionError {
    /// The execution already finished (or errored and no reply was given).
    #[error("saga execution {id} was already executed (status `{status}`)")]
    AlreadyExecuted {
        /// The execution.
        id: Uuid,
        /// Its status.
        status: SagaStatus,
    },
    /// A step failed; the executed steps were compensated and the execution is `errored`.
    #[error(
        "saga execution {id} failed at step `{step}` ({status}): {cause}{}",
        compensation_note(.compensation_failures)
    )]
    StepFailed {
        /// The execution.
        id: Uuid,
        /// The failed step.
        step: String,
        /// The failed step's status.
        status: StepStatus,
        /// Why the step failed.
        #[source]
        cause: Box<StepFailure>,
        /// The steps whose compensation failed too (`step/inner` for a sub-saga's step); the
        /// others were compensated.
        compensation_failures: Vec<String>,
    },
    /// The two-phase commit failed; the transactions were rejected and the steps compensated.
    #[error("saga execution {id} could not commit: {reason}{}", rollback_note(.rollback))]
    CommitFailed {
        /// The execution.
        id: Uuid,
        /// Why the commit failed (a reservation refused or unanswered, the broker).
        #[source]
        reason: Box<dyn std::error::Error + Send + Sync + 'static>,
        /// The compensation that followed, when it failed too.
        rollback: Option<Box<ExecutionError>>,
    },
    /// Only a finished execution whose transaction is still open can be committed.
    #[error(
        "saga execution {id} cannot be committed: it is {status} and its transaction is {transaction:?}"
    )]
    CannotCommit {
        /// The execution.
        id: Uuid,
        /// Its status.
        status: SagaStatus,
        /// Where its transaction stands.
        transaction: TransactionState,
    },
    /// The execution was compensated by hand.
    #[error("saga execution {id} was rolled back")]
    RolledBack {
        /// The execution.
        id: Uuid,
    },
    /// The execution (or the step) was already rolled back.
    #[error("saga execution {id}: `{what}` was already rolled back")]
    AlreadyRolledBack {
        /// The execution.
        id: Uuid,
        /// The saga or step name.
        what: String,
    },
    /// A step that never ran cannot be rolled back.
    #[error("saga execution {id}: step `{step}` cannot be rolled back: it has not been executed")]
    NotExecuted {
        /// The execution.
        id: Uuid,
        /// The step.
        step: String,
    },
    /// One or more compensations failed; the others still ran.
    #[error("saga execution {id}: compensation failed for {}", .steps.join(", "))]
    RollbackFailed {
        /// The execution.
        id: Uuid,
        /// The steps whose compensation failed.
        steps: Vec<String>,
    },
    /// A reply that does not fit the execution; nothing changed.
    #[error("saga execution {id} ignored a reply: {reason}")]
    ReplyRejected {
        /// The execution.
        id: Uuid,
        /// Why the reply was not applied.
        reason: ReplyRejection,
    },
}

/// The tail of a failed step's message naming the compensations that failed too.
fn compensation_note(failed: &[String]) -> String {
    if failed.is_empty() {
        String::new()
    } else {
        format!("; compensation also failed for {}", failed.join(", "))
    }
}

/// The tail of a failed commit's message describing a failed compensation.
fn rollback_note(rollback: &Option<Box<ExecutionError>>) -> String {
    rollback
        .as_ref()
        .map(|rollback| format!("; {rollback}"))
        .unwrap_or_default()
}

/// A stored execution that cannot be resumed with the definition at hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The execution belongs to another saga.
    #[error("saga execution {id} belongs to saga `{stored}`, not `{expected}`")]
    WrongSaga {
        /// The execution.
        id: Uuid,
        /// The saga named in the stored execution.
        stored: String,
        /// The saga it was loaded with.
        expected: String,
    },
    /// The definition changed since the execution was stored; resuming it could run other code.
    #[error(
        "saga execution {id} of saga `{saga}` was stored with definition fingerprint {stored}, \
         but the registered definition has fingerprint {registered}; the execution is left untouched"
    )]
    FingerprintMismatch {
        /// The execution.
        id: Uuid,
        /// The saga.
        saga: String,
        /// The fingerprint stored with the execution.
        stored: Fingerprint,
        /// The fingerprint of the registered definition.
        registered: Fingerprint,
    },
    /// No definition with the stored saga name is registered.
    #[error("saga execution {id} names saga `{saga}`, which is not registered")]
    UnknownSaga {
        /// The execution.
        id: Uuid,
        /// The saga name.
        saga: String,
    },
    /// The stored data does not decode or does not match the definition's steps.
    #[error("saga execution {id} is corrupt: {reason}")]
    Corrupt {
        /// The execution (nil when the id itself could not be read).
        id: Uuid,
        /// What is wrong.
        reason: String,
    },
}
