//! The object-safe view of an execution, over every context type: what the manager needs to drive
//! executions of all its sagas through one non-generic pipeline (run the engine, read and set the
//! state it keeps across advances, lend the stored form to a store), and a way back to the typed
//! execution for the run that started it.
//!
//! Every method takes only execution-layer inputs (the environment, the outbox, a checkpoint), so
//! that this layer knows nothing of who drives it.

use std::any::Any;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    Checkpoint, ExecutionEnv, ExecutionRecord, ExecutionSettings, Outbox, Progress, SagaExecution,
    SagaStatus, StepFailure, TransactionState,
};
use crate::context::Context;
use crate::error::ExecutionError;
use crate::message::{BrokerMessage, SagaResponse};

/// A [`SagaExecution`] with its context type erased.
#[async_trait]
pub(crate) trait ErasedExecution: Send + Sync + 'static {
    /// The execution id.
    fn id(&self) -> Uuid;
    /// The saga's persisted name.
    fn saga_name(&self) -> &str;
    /// The status.
    fn status(&self) -> SagaStatus;
    /// Whether the execution was compensated.
    fn already_rollback(&self) -> bool;
    /// The settings it keeps across pauses.
    fn settings(&self) -> ExecutionSettings;
    /// The version of the stored copy.
    fn version(&self) -> u64;
    /// Records the version a store wrote.
    fn set_version(&mut self, version: u64);
    /// Where its transaction stands.
    fn transaction(&self) -> TransactionState;
    /// Moves its transaction on (the two-phase commit's decisions).
    fn set_transaction(&mut self, transaction: TransactionState);
    /// When the paused step stops waiting.
    fn deadline_ms(&self) -> Option<u64>;
    /// Sets when the paused step stops waiting.
    fn set_deadline_ms(&mut self, deadline_ms: Option<u64>);
    /// The command the waiting step sent.
    fn waiting_request(&self) -> Option<Uuid>;
    /// Whether it waits for the reply to command `request`.
    fn is_waiting_for(&self, request: Uuid) -> bool;
    /// Whether `reply` fits; if not, why not.
    fn check_reply(&self, reply: &SagaResponse) -> Result<(), ExecutionError>;
    /// The transactions to reserve and commit.
    fn transactions(&self, env: &ExecutionEnv) -> Vec<(Uuid, String)>;
    /// Takes the messages stored with the loaded state but not known to be published.
    fn take_unpublished(&mut self) -> Vec<BrokerMessage>;
    /// Records a change now.
    fn touch(&mut self);
    /// Marks a finished execution whose commit failed as `errored`.
    fn mark_errored(&mut self);
    /// Whether it was stored in the middle of a rollback.
    fn rollback_interrupted(&self) -> bool;
    /// Settles the compensations a stop interrupted; returns their steps.
    fn settle_interrupted_compensations(&mut self) -> Vec<String>;

    /// The stored form, lent (see [`SagaExecution::lend_record`]).
    fn lend_record(&mut self) -> Result<ExecutionRecord, serde_json::Error>;
    /// Takes back what `lend_record` lent.
    fn restore_lent(&mut self, record: ExecutionRecord);

    /// Runs the execution forward (with the reply to its paused step, if any).
    async fn execute(
        &mut self,
        reply: Option<SagaResponse>,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError>;
    /// Fails the paused step that waits for `request`: its reply did not come in time.
    async fn expire(
        &mut self,
        request: Uuid,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError>;
    /// Fails the paused step that waits for `request`: that command can never be published.
    async fn fail_unpublishable(
        &mut self,
        request: Uuid,
        reason: String,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError>;
    /// Compensates the executed steps.
    async fn rollback(
        &mut self,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<(), ExecutionError>;
    /// Queues again the command the waiting step sent; returns whether there was one.
    async fn resend_waiting(
        &self,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<bool, StepFailure>;

    /// The typed execution, to downcast to `SagaExecution<C>`.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
    /// The typed execution, to check its type.
    fn as_any(&self) -> &dyn Any;
}

#[async_trait]
impl<C: Context> ErasedExecution for SagaExecution<C> {
    fn id(&self) -> Uuid {
        self.id
    }

    fn saga_name(&self) -> &str {
        self.definition.name()
    }

    fn status(&self) -> SagaStatus {
        self.status
    }

    fn already_rollback(&self) -> bool {
        self.already_rollback
    }

    fn settings(&self) -> ExecutionSettings {
        self.settings
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn transaction(&self) -> TransactionState {
        self.transaction
    }

    fn set_transaction(&mut self, transaction: TransactionState) {
        self.transaction = transaction;
    }

    fn deadline_ms(&self) -> Option<u64> {
        self.deadline_ms
    }

    fn set_deadline_ms(&mut self, deadline_ms: Option<u64>) {
        self.deadline_ms = deadline_ms;
    }

    fn waiting_request(&self) -> Option<Uuid> {
        SagaExecution::waiting_request(self)
    }

    fn is_waiting_for(&self, request: Uuid) -> bool {
        SagaExecution::is_waiting_for(self, request)
    }

    fn check_reply(&self, reply: &SagaResponse) -> Result<(), ExecutionError> {
        SagaExecution::check_reply(self, reply)
    }

    fn transactions(&self, env: &ExecutionEnv) -> Vec<(Uuid, String)> {
        SagaExecution::transactions(self, env)
    }

    fn take_unpublished(&mut self) -> Vec<BrokerMessage> {
        std::mem::take(&mut self.unpublished)
    }

    fn touch(&mut self) {
        SagaExecution::touch(self);
    }

    fn mark_errored(&mut self) {
        SagaExecution::mark_errored(self);
    }

    fn rollback_interrupted(&self) -> bool {
        SagaExecution::rollback_interrupted(self)
    }

    fn settle_interrupted_compensations(&mut self) -> Vec<String> {
        SagaExecution::settle_interrupted_compensations(self)
    }

    fn lend_record(&mut self) -> Result<ExecutionRecord, serde_json::Error> {
        SagaExecution::lend_record(self)
    }

    fn restore_lent(&mut self, record: ExecutionRecord) {
        SagaExecution::restore_lent(self, record);
    }

    async fn execute(
        &mut self,
        reply: Option<SagaResponse>,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError> {
        self.execute_checkpointed(reply, env, outbox, checkpoint)
            .await
    }

    async fn expire(
        &mut self,
        request: Uuid,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError> {
        self.expire_checkpointed(request, env, outbox, checkpoint)
            .await
    }

    async fn fail_unpublishable(
        &mut self,
        request: Uuid,
        reason: String,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<Progress, ExecutionError> {
        SagaExecution::fail_unpublishable(self, request, reason, env, outbox, checkpoint).await
    }

    async fn rollback(
        &mut self,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
    ) -> Result<(), ExecutionError> {
        self.rollback_checkpointed(env, outbox, checkpoint).await
    }

    async fn resend_waiting(
        &self,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<bool, StepFailure> {
        SagaExecution::resend_waiting(self, env, outbox).await
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::testing::{Trail, env, remote_saga};

    #[test]
    fn a_lent_record_carries_the_steps_and_gives_them_back() {
        let mut execution = SagaExecution::new(remote_saga(), Trail::default());
        execution
            .headers
            .insert("traceparent".to_owned(), "00-1".to_owned());
        execution.steps.push(crate::execution::StepExecution::new(
            "reserve",
            crate::definition::StepKind::Local,
        ));
        let erased: &mut dyn ErasedExecution = &mut execution;
        let record = erased.lend_record().expect("encodes");
        assert_eq!(record.steps.len(), 1);
        assert_eq!(record.headers["traceparent"], "00-1");
        assert_eq!(record.saga, erased.saga_name());
        erased.restore_lent(record);
        assert_eq!(execution.steps.len(), 1);
        assert_eq!(execution.headers["traceparent"], "00-1");
    }

    #[tokio::test]
    async fn an_erased_execution_runs_and_downcasts_back_to_its_type() {
        let mut execution: Box<dyn ErasedExecution> =
            Box::new(SagaExecution::new(remote_saga(), Trail::default()));
        let mut outbox = Outbox::new();
        let progress = execution
            .execute(
                None,
                &env(),
                &mut outbox,
                &mut crate::execution::NoCheckpoint,
            )
            .await
            .expect("runs");
        assert_eq!(progress, Progress::Paused);
        assert!(execution.waiting_request().is_some());
        assert_eq!(outbox.messages().len(), 1);
        assert!(execution.as_any().is::<SagaExecution<Trail>>());
        let typed = execution
            .into_any()
            .downcast::<SagaExecution<Trail>>()
            .expect("the typed execution");
        assert_eq!(typed.context().log, ["reserve"]);
    }
}
