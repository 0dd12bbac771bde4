//! The options of [`SagaManager::run`](super::SagaManager::run).

use std::time::Duration;

use uuid::Uuid;

use crate::execution::SagaExecution;

/// How a run behaves (the original library's `run` options, plus a timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    pub(crate) id: Option<Uuid>,
    pub(crate) user: Option<String>,
    pub(crate) autocommit: bool,
    pub(crate) pause_on_disk: bool,
    pub(crate) raise_on_error: bool,
    pub(crate) return_execution: bool,
    pub(crate) timeout: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            id: None,
            user: None,
            autocommit: true,
            pause_on_disk: false,
            raise_on_error: true,
            return_execution: true,
            timeout: None,
        }
    }
}

impl RunOptions {
    /// The defaults: wait in memory, autocommit, raise on error, return the execution, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// The execution's id, chosen by the caller as an idempotency key (default: a new random one).
    /// A run with the id of an execution that was started already, here or by another instance
    /// sharing the repository, starts nothing: it returns that execution's outcome, waiting for it
    /// to end unless [`pause_on_disk`](Self::pause_on_disk) is set (then it returns it as it is).
    /// A stored execution that errored is, with [`raise_on_error`](Self::raise_on_error),
    /// [`ExecutionError::AlreadyExecuted`](crate::error::ExecutionError::AlreadyExecuted).
    #[must_use]
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// The acting user, sent as the `user` header (a `user` header of the message being handled
    /// wins).
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Commit on success and reject on failure (default `true`).
    #[must_use]
    pub fn autocommit(mut self, autocommit: bool) -> Self {
        self.autocommit = autocommit;
        self
    }

    /// Return as soon as the saga pauses, with the execution stored (default `false`: wait for the
    /// replies and return the finished or errored execution).
    #[must_use]
    pub fn pause_on_disk(mut self, pause_on_disk: bool) -> Self {
        self.pause_on_disk = pause_on_disk;
        self
    }

    /// Return an error for a failed saga (default `true`), or return the errored execution.
    #[must_use]
    pub fn raise_on_error(mut self, raise_on_error: bool) -> Self {
        self.raise_on_error = raise_on_error;
        self
    }

    /// Return the execution (default `true`), or only its id.
    #[must_use]
    pub fn return_execution(mut self, return_execution: bool) -> Self {
        self.return_execution = return_execution;
        self
    }

    /// How long each paused step waits for its reply; on expiry the step fails and the saga
    /// compensates. Kept with the execution, so it applies whoever resumes it. Default: no limit.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What [`SagaManager::run`](super::SagaManager::run) returns.
#[derive(Debug)]
pub enum RunOutcome<C> {
    /// The execution (the default).
    Execution(SagaExecution<C>),
    /// Only its id (`return_execution(false)`).
    Id(Uuid),
}

impl<C> RunOutcome<C> {
    /// The execution id.
    pub fn id(&self) -> Uuid {
        match self {
            Self::Execution(execution) => execution.id(),
            Self::Id(id) => *id,
        }
    }

    /// The execution, if it was returned.
    pub fn execution(self) -> Option<SagaExecution<C>> {
        match self {
            Self::Execution(execution) => Some(execution),
            Self::Id(_) => None,
        }
    }
}
