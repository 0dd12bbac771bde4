//! Errors of the runtime, one enum per layer, each variant documented. Each lives beside its layer;
//! this module gathers them under one path.

pub use crate::broker::BrokerError;
pub use crate::definition::DefinitionError;
pub use crate::execution::{ExecutionError, LoadError};
pub use crate::message::MessageError;
pub use crate::repository::RepositoryError;
pub use crate::step_error::StepError;
