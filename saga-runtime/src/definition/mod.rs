//! The definition model: a saga is a named, ordered list of local, remote and conditional steps.
//!
//! [`Saga`] is the builder; [`Saga::commit`] validates it and returns the immutable
//! [`SagaDefinition`], the only thing an execution can be made from. The builder's consuming API
//! enforces two rules of the original library at compile time: nothing can be added to a committed
//! saga (`commit` consumes the builder), and an uncommitted saga cannot be executed (executions take a
//! `SagaDefinition`). Every other rule is a [`DefinitionError`] variant.

mod builder;
mod error;
mod fingerprint;
pub(crate) mod handler;
mod mermaid;
mod steps;

use std::fmt;
use std::sync::Arc;

pub use self::{
    builder::{ConditionalStepBuilder, LocalStepBuilder, RemoteStepBuilder, Saga},
    error::DefinitionError,
    fingerprint::Fingerprint,
    handler::{
        BoxFuture, ConditionFn, ConditionFnWith, ConditionHandler, LocalFn, LocalFnWith,
        LocalHandler, ReplyFn, ReplyFnWith, ReplyHandler, RequestFn, RequestFnWith, RequestHandler,
    },
    steps::{ConditionalStep, LocalStep, RemoteStep, StepDefinition, StepKind},
};
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) use steps::Branch;
pub(crate) use steps::IfThen;

/// A validated, immutable saga definition.
pub struct SagaDefinition<C> {
    name: String,
    steps: Vec<StepDefinition<C>>,
    fingerprint: Fingerprint,
}

impl<C> SagaDefinition<C> {
    /// The persisted name: stored executions find their definition by it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fingerprint of the step graph, stored with every execution.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[StepDefinition<C>] {
        &self.steps
    }
}

impl<C> fmt::Debug for SagaDefinition<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint)
            .field("steps", &self.steps)
            .finish()
    }
}

/// A committed saga definition, owned or shared: what executions, runs and conditional
/// alternatives take.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a committed saga definition",
    label = "expected a `SagaDefinition` (what `commit()` returns)",
    note = "call `.commit()` on the builder first: only committed sagas can be executed or nested"
)]
pub trait IntoDefinition<C> {
    /// The shared definition.
    fn into_definition(self) -> Arc<SagaDefinition<C>>;
}

impl<C> IntoDefinition<C> for SagaDefinition<C> {
    fn into_definition(self) -> Arc<SagaDefinition<C>> {
        Arc::new(self)
    }
}

impl<C> IntoDefinition<C> for Arc<SagaDefinition<C>> {
    fn into_definition(self) -> Arc<SagaDefinition<C>> {
        self
    }
}

impl<C> IntoDefinition<C> for &Arc<SagaDefinition<C>> {
    fn into_definition(self) -> Arc<SagaDefinition<C>> {
        Arc::clone(self)
    }
}
