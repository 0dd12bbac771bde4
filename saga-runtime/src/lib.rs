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
//! Sagas are usually declared with the attribute macros [`saga`], [`local_step`] and
//! [`remote_step`] (see the README; how they behave is in the [`manual`]); the builder above makes the same definitions at run time.
//!
//! # Architecture
//!
//! Layers, lowest first. A module imports only from layers below its own (and from its own
//! submodules), so each can be read, tested and replaced without the ones above it:
//!
//! | layer | modules | owns |
//! | --- | --- | --- |
//! | vocabulary | `context`, `message`, `step_error`, `shared` | the context traits, the wire envelope and its headers, a step's error, what builders accept for a shared port |
//! | model | [`definition`] | the builder, the validated immutable definition, its fingerprint |
//! | engine | [`execution`] | the state machine: run, pause, resume, compensate; the stored form of an execution; nothing of I/O |
//! | ports | [`broker`], [`repository`], `participant_store`, `sql` | the transport and storage traits with their implementations (the participant store's trait is re-exported by [`transactional`]); `sql` is the one SQL core behind the SQLite and PostgreSQL stores of both the repository and the participant store |
//! | protocol | `committer`, `request_scope` | the two-phase commit's messages and decision; the headers a handled request carries |
//! | orchestration | `registry`, [`manager`], [`transactional`] | sagas by name; the manager that drives executions through the engine, stores, publishes, listens for replies and recovers; the participant side of the commit |
//! | service | `service` | one service's manager and participant on one repository and one broker |
//!
//! Errors live beside the layer that raises them; [`error`] gathers them under one path. What a saga
//! author writes is in [`prelude`] (and at the root); what start-up code wires together is in
//! [`wiring`]; the ports keep their modules ([`broker`], [`repository`], [`transactional`]) with
//! what an implementation of one needs. Test support (conformance suites, a scripted participant,
//! fault wrappers) is the `saga-testkit` crate; what only tests drive directly (the engine without
//! a manager, the committer, raw rows, protocol headers) is public only with the feature `testkit`.

// Without `testkit`, what only the test suites drive is crate-private and partly unused; the
// workspace builds with `testkit`, where these lints hold everywhere.
#![cfg_attr(
    not(feature = "testkit"),
    allow(dead_code, unreachable_pub, unused_imports)
)]

#[cfg(test)]
mod architecture_tests;
pub mod broker;
#[cfg(feature = "testkit")]
pub mod committer;
#[cfg(not(feature = "testkit"))]
mod committer;
mod context;
pub mod definition;
pub mod error;
pub mod execution;
mod faults;
mod locks;
pub mod manager;
mod message;
mod participant_store;
mod registry;
pub mod repository;
mod request_scope;
mod service;
mod shard;
mod shared;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod step_def;
mod step_error;
pub mod transactional;

// What a saga author names, at the root as well as in the prelude (generated code and hand-written
// expansions refer to these paths).
pub use crate::{
    context::{Context, SagaContext},
    definition::{DefinitionError, IntoDefinition, Saga, SagaDefinition},
    message::{SagaRequest, SagaResponse, SagaResponseStatus},
    registry::SagaType,
    step_error::StepError,
};

// The attribute macros; their documentation lives with them in `saga-macros`.
#[cfg(feature = "macros")]
pub use saga_macros::{local_step, remote_step, saga, transactional_command};

pub mod manual {
    #![doc = include_str!("../docs/manual.md")]
}

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// What generated code refers to. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use {
        inventory,
        std::sync::{Arc, OnceLock},
    };

    pub use crate::{
        context::Context,
        definition::{
            ConditionHandler, LocalHandler, ReplyHandler, RequestHandler, Saga, SagaDefinition,
        },
        // The crash points of a `fault-injection` build (re-exported by `saga-testkit`).
        faults::POINTS as CRASH_POINTS,
        message::{SagaRequest, SagaResponse},
        registry::{SagaRegistration, SagaType},
        step_def::*,
        step_error::StepError,
        transactional::{CommandRegistration, TransactionalParticipantBuilder},
    };
}

/// What a saga author writes: the macros, the context traits, the builder, steps' requests and
/// responses and their errors, and what a `#[transactional_command]` handler takes and returns.
/// Wiring a service together (brokers, repositories, the manager) is [`wiring`].
pub mod prelude {
    #[cfg(feature = "macros")]
    pub use crate::{local_step, remote_step, saga, transactional_command};
    pub use serde::{Deserialize, Serialize};

    pub use crate::{
        Context, DefinitionError, IntoDefinition, Saga, SagaContext, SagaDefinition, SagaRequest,
        SagaResponse, SagaResponseStatus, SagaType, StepError,
        transactional::{CommandContext, CommandError, Settled},
    };
}

/// What a service's start-up code wires together: a broker, a repository, the registry, the
/// manager or the whole service, the participants and their stores, and what runs return.
pub mod wiring {
    #[cfg(feature = "nats")]
    pub use crate::broker::NatsBroker;
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) use crate::service::SERVICE_NAME_VARIABLE;
    pub use crate::{
        broker::{Broker, InProcessBroker},
        error::ExecutionError,
        execution::{SagaExecution, SagaStatus, StepStatus},
        manager::{RunOptions, RunOutcome, SagaError, SagaManager},
        registry::Registry,
        repository::{BatchingRepository, InMemoryRepository, SagaExecutionRepository},
        request_scope::RequestHeaders,
        service::{SagaService, SagaServiceBuilder, ServiceError},
        shared::Shared,
        transactional::{InMemoryParticipantStore, TransactionalParticipant},
    };
    #[cfg(feature = "postgres")]
    pub use crate::{repository::PostgresRepository, transactional::PostgresParticipantStore};
    #[cfg(feature = "sqlite")]
    pub use crate::{repository::SqliteRepository, transactional::SqliteParticipantStore};
}
