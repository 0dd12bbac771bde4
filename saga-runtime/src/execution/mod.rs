//! The execution engine: the state machine of one saga execution.
//!
//! An execution holds data only (id, status, context, step executions); its code is the definition it
//! was made from. The engine never talks to the broker directly: the messages a step emits (commands,
//! compensations) are appended to an [`Outbox`], which the caller publishes after storing the new
//! state. That keeps "state stored" and "message sent" in the caller's hands, where a durable outbox
//! can make them atomic, and it keeps the engine free of I/O besides the handlers' own.
//!
//! The files: [`SagaExecution`] and its accessors here; running it forward (`advance`), rolling it
//! back (`rollback`), the replies it waits for (`reply`), its transaction (`transaction`), its
//! stored form (`stored`, `record`), what recovery asks of it (`recovery`), the step-running core
//! (`engine`), the checkpoints of its compensations (`checkpoint`), and the object-safe view the
//! manager drives executions of every context type through (`erased`).

mod advance;
mod checkpoint;
mod engine;
mod env;
mod erased;
mod error;
mod failure;
mod outbox;
mod record;
mod recovery;
mod reply;
mod rollback;
mod status;
mod step;
mod stored;
#[cfg(test)]
pub(crate) mod testing;
mod transaction;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) use self::{advance::Progress, env::ExecutionEnv, outbox::Outbox, step::InnerExecution};
pub use self::{
    error::{ExecutionError, LoadError},
    failure::StepFailure,
    record::ExecutionRecord,
    reply::ReplyRejection,
    status::{SagaStatus, StepStatus},
    step::StepExecution,
    transaction::TransactionState,
};
#[cfg(test)]
pub(crate) use checkpoint::NoCheckpoint;
pub(crate) use checkpoint::{Checkpoint, CheckpointError};
pub(crate) use erased::ErasedExecution;

use crate::context::Context;
use crate::definition::{IntoDefinition, SagaDefinition};
use crate::message::{BrokerMessage, Headers, header};

/// Settings an execution keeps across pauses, so that whoever resumes it applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ExecutionSettings {
    pub(crate) autocommit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_ms: Option<u64>,
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        Self {
            autocommit: true,
            timeout_ms: None,
        }
    }
}

/// One execution of a saga definition with a typed context `C`.
pub struct SagaExecution<C> {
    definition: Arc<SagaDefinition<C>>,
    id: Uuid,
    status: SagaStatus,
    context: C,
    steps: Vec<StepExecution>,
    already_rollback: bool,
    user: Option<String>,
    headers: Headers,
    pub(crate) settings: ExecutionSettings,
    pub(crate) deadline_ms: Option<u64>,
    pub(crate) transaction: TransactionState,
    pub(crate) version: u64,
    created_at_ms: u64,
    updated_at_ms: u64,
    /// Messages stored with the loaded state but not marked published: the next advance publishes
    /// them (again) before anything else, so that no store overwrites them unpublished.
    pub(crate) unpublished: Vec<BrokerMessage>,
}

impl<C: Context> SagaExecution<C> {
    /// A new execution (status `created`) of `definition` with a fresh id.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn new(definition: impl IntoDefinition<C>, context: C) -> Self {
        let now = now_ms();
        Self {
            definition: definition.into_definition(),
            id: Uuid::new_v4(),
            status: SagaStatus::Created,
            context,
            steps: Vec::new(),
            already_rollback: false,
            user: None,
            headers: Headers::new(),
            settings: ExecutionSettings::default(),
            deadline_ms: None,
            transaction: TransactionState::Open,
            version: 0,
            created_at_ms: now,
            updated_at_ms: now,
            unpublished: Vec::new(),
        }
    }

    /// Sets the id (before the execution runs).
    #[must_use]
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the acting user, sent as the `user` header of every command.
    #[must_use]
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the headers of the message being handled when the saga started; commands inherit them
    /// (their `transactions` header nests this execution's id inside the inherited ones).
    #[must_use]
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn with_inherited_headers(mut self, mut headers: Headers) -> Self {
        headers.remove(header::RELATED_SERVICES);
        self.headers = headers;
        self
    }
}

impl<C> SagaExecution<C> {
    /// The execution id (also the transaction id).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The definition.
    pub fn definition(&self) -> &Arc<SagaDefinition<C>> {
        &self.definition
    }

    /// The status.
    pub fn status(&self) -> SagaStatus {
        self.status
    }

    /// The context.
    pub fn context(&self) -> &C {
        &self.context
    }

    /// The context, to change it before the execution runs.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn context_mut(&mut self) -> &mut C {
        &mut self.context
    }

    /// Takes the context out.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn into_context(self) -> C {
        self.context
    }

    /// The executions of the steps that started, in definition order.
    pub fn steps(&self) -> &[StepExecution] {
        &self.steps
    }

    /// The step execution named `name`, if it started.
    pub fn step(&self, name: &str) -> Option<&StepExecution> {
        self.steps.iter().find(|step| step.name == name)
    }

    /// The steps that completed (status `finished`).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn executed_steps(&self) -> impl Iterator<Item = &StepExecution> {
        self.steps
            .iter()
            .filter(|step| step.status == StepStatus::Finished)
    }

    /// The step that waits for a reply.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn paused_step(&self) -> Option<&StepExecution> {
        self.steps
            .last()
            .filter(|step| step.status == StepStatus::PausedByOnExecute)
    }

    /// Whether the execution was compensated.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn already_rollback(&self) -> bool {
        self.already_rollback
    }

    /// The acting user.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The inherited headers.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn inherited_headers(&self) -> &Headers {
        &self.headers
    }

    /// Where its transaction stands.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn transaction(&self) -> TransactionState {
        self.transaction
    }

    /// The version of the stored copy this execution was loaded from (0: never stored).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Records a change now (the stored `updated_at_ms`).
    pub(crate) fn touch(&mut self) {
        self.updated_at_ms = now_ms();
    }
}

impl<C: std::fmt::Debug> std::fmt::Debug for SagaExecution<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaExecution")
            .field("saga", &self.definition.name())
            .field("id", &self.id)
            .field("status", &self.status)
            .field("context", &self.context)
            .field("steps", &self.steps)
            .field("already_rollback", &self.already_rollback)
            .field("user", &self.user)
            .field("version", &self.version)
            .finish()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
