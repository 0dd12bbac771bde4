//! Errors of the runtime, one enum per layer, each variant documented. Each lives beside its layer;
//! this module gathers them under one path.

pub use crate::{
    broker::BrokerError,
    context::ContextError,
    definition::DefinitionError,
    execution::{ExecutionError, LoadError},
    message::MessageError,
    registry::RegistryError,
    repository::RepositoryError,
    step_error::StepError,
};
