//! The step-running core: forward execution of one level of steps (a saga or a conditional's
//! sub-saga), the remote step's reply handling, and compensation.
//!
//! Levels recurse through conditional steps, so the functions return boxed futures.

mod compensate;
mod forward;
mod run;

pub(super) use compensate::{
    compensate_step, compensation_failed, has_effect, steps_to_compensate_after_failure,
};
pub(super) use forward::{resend_level, run_level};
pub(super) use run::Run;

use super::{StepExecution, StepFailure, StepStatus};
use crate::message::SagaResponse;

/// What resumes a paused step.
pub(super) enum Resume {
    /// The reply to its command.
    Reply(SagaResponse),
    /// No reply came in time.
    Timeout,
    /// The command can never be published (why), so no reply will come.
    Unpublishable(String),
}

/// How a level (or a step) ended this time.
pub(super) enum LevelOutcome {
    Done,
    Paused,
    Failed(Failure),
}

/// The step that failed and why.
pub(super) struct Failure {
    pub(super) step: String,
    pub(super) status: StepStatus,
    pub(super) cause: StepFailure,
    /// Compensations that already ran for this failure (a step undoing itself, a sub-saga
    /// compensating its steps) and failed.
    pub(super) compensation_failures: Vec<String>,
}

/// Fails `step` with `status`: its stored error is the cause's text.
fn fail(step: &mut StepExecution, status: StepStatus, cause: StepFailure) -> LevelOutcome {
    let message = cause.to_string();
    tracing::warn!(saga.step = %step.name, %status, %message, "saga step failed");
    step.status = status;
    step.error = Some(message);
    LevelOutcome::Failed(Failure {
        step: step.name.clone(),
        status,
        cause,
        compensation_failures: Vec::new(),
    })
}
