//! What goes wrong in a manager call, and why a run waiting in memory stopped waiting.

use std::error::Error;
use std::fmt;

use uuid::Uuid;

use crate::definition::Fingerprint;
use crate::error::{BrokerError, ExecutionError, LoadError, MessageError, RepositoryError};
use crate::execution::StepFailure;

/// What went wrong in a manager call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The execution failed (a step, the commit) or refused the request; see the inner error.
    #[error(transparent)]
    Execution(#[from] ExecutionError),
    /// A stored execution could not be resumed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The repository failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A message that is not a saga reply.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The context could not be encoded for storage.
    #[error("the saga context cannot be encoded: {0}")]
    Encode(#[source] serde_json::Error),
    /// Another definition with the same name and a different fingerprint is registered.
    #[error(
        "saga `{name}` is registered with fingerprint {registered}; a definition with fingerprint {offered} cannot share its name"
    )]
    ConflictingDefinition {
        /// The saga name.
        name: String,
        /// The registered fingerprint.
        registered: Fingerprint,
        /// The other definition's fingerprint.
        offered: Fingerprint,
    },
    /// The execution stopped advancing while its run waited in memory (storage or transport
    /// failure, or another instance advanced it); the stored execution may lag behind what was
    /// attempted.
    #[error("saga execution {id} stopped advancing: {reason}")]
    Interrupted {
        /// The execution.
        id: Uuid,
        /// What stopped it.
        #[source]
        reason: Interruption,
    },
    /// Another manager instance holds the execution (its lease has not run out): it is being
    /// advanced there. Try again later; a reply is redelivered.
    #[error("saga execution {id} is being advanced by instance `{owner}`")]
    Busy {
        /// The execution.
        id: Uuid,
        /// The instance holding it.
        owner: String,
    },
    /// The manager shut down while the run waited for its execution to end.
    #[error("the saga manager shut down while execution {id} was waiting")]
    Shutdown {
        /// The execution, which stays stored and resumable.
        id: Uuid,
    },
    /// A run failed after its execution was stored (or it cannot be told whether it was): the
    /// saga may still finish, through recovery or another instance. Its outcome is learnt with
    /// [`SagaManager::load`](super::SagaManager::load), or by running it again with
    /// [`RunOptions::id`](super::RunOptions::id) of this id, which starts nothing twice.
    #[error("saga execution {id} was stored and may still finish: {cause}")]
    MayStillFinish {
        /// The execution.
        id: Uuid,
        /// What stopped the run.
        #[source]
        cause: Box<SagaError>,
    },
}

impl SagaError {
    /// The execution a failed run leaves behind to finish, if it may: [`MayStillFinish`],
    /// [`Interrupted`] and [`Shutdown`] (their execution is stored). Any other error of
    /// [`SagaManager::run`](super::SagaManager::run) says the saga did not start (nothing was
    /// stored), or, [`Execution`](Self::Execution), how it ended.
    ///
    /// [`MayStillFinish`]: Self::MayStillFinish
    /// [`Interrupted`]: Self::Interrupted
    /// [`Shutdown`]: Self::Shutdown
    pub fn may_still_finish(&self) -> Option<Uuid> {
        match self {
            Self::MayStillFinish { id, .. }
            | Self::Interrupted { id, .. }
            | Self::Shutdown { id } => Some(*id),
            _ => None,
        }
    }
}

/// Why an execution stopped advancing ([`SagaError::Interrupted`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Interruption {
    /// Another instance advanced the execution since its run parked it here: the stored copy is
    /// the newer one, and the input went to it.
    #[error("another instance advanced the execution")]
    AdvancedElsewhere,
    /// Advancing the execution failed. When the same error also went to whoever applied the input
    /// (the reply listener, a manual resume), this is a copy of its message and causes.
    #[error(transparent)]
    AdvanceFailed(Box<dyn Error + Send + Sync + 'static>),
    /// Recovery let the execution rest again, but could not build the command its waiting step
    /// sent (to send it again).
    #[error("released, but building the waiting command again failed: {0}")]
    ResendFailed(#[source] StepFailure),
}

impl Interruption {
    /// The interruption of a run whose advance failed with `error`, which goes on to the caller:
    /// the run hears its message and causes.
    pub(super) fn reported(error: &SagaError) -> Self {
        Self::AdvanceFailed(Box::new(Report::of(error)))
    }
}

/// An error as its message and its causes' messages, for a second party that must hear of an
/// error the first one keeps.
#[derive(Debug)]
struct Report {
    message: String,
    source: Option<Box<Report>>,
}

impl Report {
    fn of(error: &(dyn Error + 'static)) -> Self {
        Self {
            message: error.to_string(),
            source: error.source().map(|source| Box::new(Self::of(source))),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Report {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_failure_reads_like_the_error_and_keeps_its_causes() {
        let cause = serde_json::from_str::<u8>("x").expect_err("not a number");
        let cause_text = cause.to_string();
        let error = SagaError::Encode(cause);
        let interrupted = SagaError::Interrupted {
            id: Uuid::nil(),
            reason: Interruption::reported(&error),
        };
        assert_eq!(
            interrupted.to_string(),
            format!("saga execution {} stopped advancing: {error}", Uuid::nil())
        );
        let reason = interrupted.source().expect("the reason");
        assert_eq!(reason.to_string(), error.to_string());
        let encoding = reason.source().expect("the encoding error under it");
        assert_eq!(encoding.to_string(), cause_text);
    }

    #[test]
    fn an_interruption_by_another_instance_says_so() {
        let reason = Interruption::AdvancedElsewhere;
        assert!(reason.to_string().contains("another instance"));
    }
}
