//! The error a step handler returns.

use std::fmt;

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
