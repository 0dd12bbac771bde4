//! Execution and step statuses, with the wire/storage strings of the behaviour reference.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The status of a saga execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SagaStatus {
    /// Made, not yet run.
    Created,
    /// A caller is advancing it (or a crash interrupted one).
    Running,
    /// Waiting for the reply to a remote step's command.
    Paused,
    /// Every step completed (and, with autocommit, the transaction committed).
    Finished,
    /// A step or the commit failed; the executed steps were compensated.
    Errored,
}

impl SagaStatus {
    /// The storage string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Finished => "finished",
            Self::Errored => "errored",
        }
    }

    /// Whether nothing more will happen to the execution.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Errored)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of one step execution (see the step state machines of the behaviour reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StepStatus {
    /// Not started.
    Created,
    /// `on_execute` (or a condition) is running.
    RunningOnExecute,
    /// A remote step's command was built and published.
    FinishedOnExecute,
    /// `on_execute`, the publish or a condition failed; nothing was sent.
    ErroredOnExecute,
    /// Waiting for the reply to the command.
    PausedByOnExecute,
    /// The reply was a failure nobody handles (SYSTEM_ERROR, unhandled ERROR, timeout), or a
    /// conditional step's sub-saga failed.
    ErroredByOnExecute,
    /// The compensation is running.
    RunningOnFailure,
    /// The compensation waits for its reply.
    PausedOnFailure,
    /// The compensation failed.
    ErroredOnFailure,
    /// `on_success` is running.
    RunningOnSuccess,
    /// `on_success` failed; the step compensated itself.
    ErroredOnSuccess,
    /// `on_error` is running.
    RunningOnError,
    /// `on_error` failed; the step compensated itself.
    ErroredOnError,
    /// Completed.
    Finished,
}

impl StepStatus {
    /// The storage string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::RunningOnExecute => "running-on-execute",
            Self::FinishedOnExecute => "finished-on-execute",
            Self::ErroredOnExecute => "errored-on-execute",
            Self::PausedByOnExecute => "paused-by-on-execute",
            Self::ErroredByOnExecute => "errored-by-on-execute",
            Self::RunningOnFailure => "running-on-failure",
            Self::PausedOnFailure => "paused-on-failure",
            Self::ErroredOnFailure => "errored-on-failure",
            Self::RunningOnSuccess => "running-on-success",
            Self::ErroredOnSuccess => "errored-on-success",
            Self::RunningOnError => "running-on-error",
            Self::ErroredOnError => "errored-on-error",
            Self::Finished => "finished",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
