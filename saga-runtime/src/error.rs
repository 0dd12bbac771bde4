//! Errors of the runtime, one enum per layer, each variant documented.

use std::fmt;

use uuid::Uuid;

use crate::definition::Fingerprint;
use crate::execution::{ReplyRejection, SagaStatus, StepFailure, StepStatus, TransactionState};

/// The error a step handler returns: a message, optionally with the error that caused it.
///
/// Any `std::error::Error` converts into it with `?`, so handlers can use the errors of the libraries
/// they call. It deliberately does not implement `std::error::Error` itself (that would make the
/// blanket conversion overlap with the reflexive `From`), like `anyhow::Error`.
pub struct StepError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StepError {
    /// An error with a message and no underlying cause.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            source: None,
        }
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The underlying error, if the step error was converted from one.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// The message and the cause, moved out.
    pub(crate) fn into_parts(
        self,
    ) -> (
        String,
        Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) {
        (self.message, self.source)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for StepError {
    fn from(error: E) -> Self {
        Self {
            message: error.to_string(),
            source: Some(Box::new(error)),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepError")
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

/// A saga definition that breaks one of the definition rules.
///
/// The builder collects the first mistake and reports it from `commit()`, so a chain of builder calls
/// does not need a `?` after every call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// A saga needs at least one step.
    #[error("saga `{saga}` has no steps: a saga needs at least one step")]
    EmptySaga {
        /// The saga's name.
        saga: String,
    },
    /// A step was added without any handler.
    #[error("step `{step}` of saga `{saga}` has no handler: a step needs at least one")]
    EmptyStep {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// A local or remote step has handlers but no `on_execute`.
    #[error("step `{step}` of saga `{saga}` has no `on_execute` handler")]
    UndefinedOnExecute {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// `on_execute` was set twice on one step.
    #[error("step `{step}` of saga `{saga}` sets `on_execute` twice")]
    MultipleOnExecute {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// `on_failure` was set twice on one step.
    #[error("step `{step}` of saga `{saga}` sets `on_failure` twice")]
    MultipleOnFailure {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// `on_success` was set twice on one step.
    #[error("step `{step}` of saga `{saga}` sets `on_success` twice")]
    MultipleOnSuccess {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// `on_error` was set twice on one step.
    #[error("step `{step}` of saga `{saga}` sets `on_error` twice")]
    MultipleOnError {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// A conditional step has two `else_then` alternatives.
    #[error("conditional step `{step}` of saga `{saga}` has more than one `else_then`")]
    MultipleElseThen {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// A conditional step has neither `if_then` nor `else_then`.
    #[error(
        "conditional step `{step}` of saga `{saga}` has no alternative: add `if_then` or `else_then`"
    )]
    NoAlternative {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// Two steps of one saga have the same name; executions identify steps by name.
    #[error(
        "saga `{saga}` has two steps named `{step}`: step names identify steps in stored executions"
    )]
    DuplicateStepName {
        /// The saga's name.
        saga: String,
        /// The repeated step name.
        step: String,
    },
    /// A saga or step name is empty or uses characters outside `[A-Za-z0-9_.:-]`.
    #[error(
        "`{name}` is not a valid persisted name: use 1 to 128 characters of `A-Z a-z 0-9 _ - . :`"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
}

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
    /// A message could not be handed to the broker.
    #[error("saga execution {id}: {source}")]
    Broker {
        /// The execution.
        id: Uuid,
        /// The broker's error.
        #[source]
        source: BrokerError,
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

/// The broker could not publish or subscribe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker was closed.
    #[error("the broker is closed")]
    Closed,
    /// The message exceeds the broker's size limit.
    #[error("message for `{topic}` is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Its topic.
        topic: String,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Any other failure of the transport.
    #[error("broker error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The repository could not store, load or delete an execution.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// No execution with this id is stored.
    #[error("no saga execution {id} is stored")]
    NotFound {
        /// The missing id.
        id: Uuid,
    },
    /// Another writer stored the execution since it was loaded (optimistic concurrency).
    #[error("saga execution {id} changed concurrently: expected version {expected}, found {found}")]
    Conflict {
        /// The execution.
        id: Uuid,
        /// The version the writer had loaded.
        expected: u64,
        /// The version stored now.
        found: u64,
    },
    /// A stored execution could not be decoded.
    #[error("saga execution {id} is corrupt: {reason}")]
    Corrupt {
        /// The execution.
        id: Uuid,
        /// What is wrong with it.
        reason: String,
    },
    /// The storage itself failed.
    #[error("storage error: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// A message that cannot be read as a saga reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A required header is absent.
    #[error("message on `{topic}` lacks the `{header}` header")]
    MissingHeader {
        /// The message's topic.
        topic: String,
        /// The missing header.
        header: &'static str,
    },
    /// A header holds a value of the wrong form.
    #[error("message on `{topic}` has an invalid `{header}` header: {value:?}")]
    InvalidHeader {
        /// The message's topic.
        topic: String,
        /// The header.
        header: &'static str,
        /// Its value.
        value: String,
    },
    /// A reply without a status, or with one outside 200/400/500.
    #[error("message on `{topic}` has no valid reply status")]
    MissingStatus {
        /// The message's topic.
        topic: String,
    },
    /// A reply that does not name the request it answers.
    #[error("message on `{topic}` has no correlation id")]
    MissingCorrelation {
        /// The message's topic.
        topic: String,
    },
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
