//! Durable sagas for Rust services.
//!
//! A saga is a business transaction across services, kept consistent by compensation: an ordered
//! list of steps, where a *local* step runs code here, a *remote* step sends a command and pauses
//! until the reply arrives, and a *conditional* step chooses a sub-saga. When a step fails, the
//! completed steps are compensated in reverse order; when all succeed, a two-phase commit closes the
//! tentative work of every service that took part.
//!
//! ```
//! use saga_runtime::prelude::*;
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Order {
//!     amount: u64,
//!     validated: bool,
//! }
//!
//! async fn validate(order: &mut Order) -> Result<(), StepError> {
//!     if order.amount == 0 {
//!         return Err(StepError::msg("empty order"));
//!     }
//!     order.validated = true;
//!     Ok(())
//! }
//!
//! async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
//!     SagaRequest::new("CreatePayment", &order.amount)
//! }
//!
//! async fn refund(order: &Order) -> Result<SagaRequest, StepError> {
//!     SagaRequest::new("RefundPayment", &order.amount)
//! }
//!
//! let saga = Saga::<Order>::new("create-order")
//!     .local_step("validate")
//!     .on_execute(validate)
//!     .remote_step("charge")
//!     .on_execute(charge)
//!     .on_failure(refund)
//!     .commit()
//!     .expect("a valid saga");
//! assert_eq!(saga.steps().len(), 2);
//! ```
//!
//! The pieces, one module each: [`definition`] (builder, validation, fingerprint), [`execution`]
//! (the state machine), [`context`], [`message`], [`committer`] (two-phase commit), [`broker`],
//! [`repository`], [`manager`] (runs and resumes executions).

pub mod broker;
pub mod committer;
pub mod context;
pub mod definition;
pub mod error;
pub mod execution;
mod locks;
pub mod manager;
pub mod message;
pub mod participant;
pub mod registry;
pub mod repository;
pub mod request_scope;
mod shard;
mod step_def;

pub use broker::{Broker, InProcessBroker};
pub use committer::TransactionCommitter;
pub use context::{Context, SagaContext};
pub use definition::{IntoDefinition, Saga, SagaDefinition};
pub use error::{DefinitionError, ExecutionError, StepError};
pub use execution::{SagaExecution, SagaStatus, StepStatus};
pub use manager::{RunOptions, RunOutcome, SagaError, SagaManager};
pub use message::{SagaRequest, SagaResponse, SagaResponseStatus};
pub use registry::{Registry, SagaType};
pub use repository::{InMemoryRepository, SagaExecutionRepository};

/// What generated code refers to. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use std::sync::{Arc, OnceLock};

    pub use inventory;

    pub use crate::context::Context;
    pub use crate::definition::{Saga, SagaDefinition};
    pub use crate::error::StepError;
    pub use crate::message::{SagaRequest, SagaResponse};
    pub use crate::registry::{SagaRegistration, SagaType};
    pub use crate::step_def::*;
}

/// The names a saga author needs, in one import.
pub mod prelude {
    pub use serde::{Deserialize, Serialize};

    pub use crate::{
        Broker, Context, DefinitionError, ExecutionError, InMemoryRepository, InProcessBroker,
        Registry, RunOptions, RunOutcome, Saga, SagaContext, SagaDefinition, SagaError,
        SagaExecution, SagaExecutionRepository, SagaManager, SagaRequest, SagaResponse,
        SagaResponseStatus, SagaStatus, SagaType, StepError, StepStatus,
    };
}
