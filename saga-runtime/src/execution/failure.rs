//! Why a step failed: the typed cause an [`ExecutionError::StepFailed`](crate::ExecutionError)
//! carries. Its text is also what the step's stored `error` says.

use std::error::Error;

use serde_json::Value;

use super::StepStatus;
use crate::error::StepError;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepFailure {
    /// A handler returned an error.
    #[error("{message}")]
    Handler {
        /// The handler's message.
        message: String,
        /// The error the handler's [`StepError`] was converted from, if any.
        #[source]
        source: Option<Box<dyn Error + Send + Sync + 'static>>,
    },
    /// A handler panicked.
    #[error("handler panicked: {message}")]
    Panicked {
        /// The panic's message (or a note that its payload was not a string).
        message: String,
    },
    /// A remote step's reply did not arrive before the run's timeout.
    #[error("no reply arrived before the timeout")]
    TimedOut,
    /// A remote step's command can never be published (the broker refuses it for good, for
    /// instance as too large), so no participant received it.
    #[error("the command cannot be published: {reason}")]
    Unpublishable {
        /// Why the broker refuses it.
        reason: String,
    },
    /// The participant answered ERROR and the step has no `on_error` handler to take it.
    #[error("the participant refused: {content}")]
    Refused {
        /// The reply's content.
        content: Value,
    },
    /// The participant answered with a system error.
    #[error("the participant failed: {content}")]
    ParticipantFailed {
        /// The reply's content.
        content: Value,
    },
    /// A conditional step's condition failed.
    #[error("condition {number} failed: {cause}")]
    Condition {
        /// Which condition, counted from 1 in definition order.
        number: usize,
        /// Why it failed.
        #[source]
        cause: Box<StepFailure>,
    },
    /// A step of a conditional step's sub-saga failed.
    #[error("sub-saga `{saga}` failed at step `{step}` ({status}): {cause}")]
    SubSaga {
        /// The sub-saga.
        saga: String,
        /// Its failed step.
        step: String,
        /// That step's status.
        status: StepStatus,
        /// Why that step failed.
        #[source]
        cause: Box<StepFailure>,
    },
}

impl From<StepError> for StepFailure {
    fn from(error: StepError) -> Self {
        let (message, source) = error.into_parts();
        Self::Handler { message, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection reset")]
    struct Reset;

    #[test]
    fn a_handler_failure_keeps_the_error_it_was_converted_from() {
        let failure = StepFailure::from(StepError::from(Reset));
        assert_eq!(failure.to_string(), "connection reset");
        let source = failure.source().expect("the cause is kept");
        assert!(source.is::<Reset>());
    }

    #[test]
    fn a_sub_saga_failure_names_the_inner_step_and_chains_its_cause() {
        let failure = StepFailure::SubSaga {
            saga: "big-order".to_owned(),
            step: "approve".to_owned(),
            status: StepStatus::ErroredOnExecute,
            cause: Box::new(StepFailure::Condition {
                number: 2,
                cause: Box::new(StepFailure::from(StepError::msg("no manager"))),
            }),
        };
        assert_eq!(
            failure.to_string(),
            "sub-saga `big-order` failed at step `approve` (errored-on-execute): \
             condition 2 failed: no manager"
        );
        let condition = failure.source().expect("the sub-saga's cause");
        let handler = condition.source().expect("the condition's cause");
        assert_eq!(handler.to_string(), "no manager");
    }
}
