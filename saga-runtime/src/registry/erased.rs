//! A registered saga with its context type erased: what the manager needs of a saga it knows only
//! by the name stored with an execution (rebuild the execution from its stored form) and what the
//! registry shows of it.

use std::sync::Arc;

use crate::context::Context;
use crate::definition::{Fingerprint, SagaDefinition};
use crate::error::LoadError;
use crate::execution::{ErasedExecution, ExecutionRecord, SagaExecution};

/// A saga definition, whatever its context type.
pub(crate) trait ErasedSaga: Send + Sync {
    /// The persisted name.
    fn name(&self) -> &str;

    /// The fingerprint of its step graph.
    fn fingerprint(&self) -> Fingerprint;

    /// The step graph as a Mermaid flowchart.
    fn to_mermaid(&self) -> String;

    /// Rebuilds a stored execution of this saga, checked against the definition.
    fn load(&self, record: ExecutionRecord) -> Result<Box<dyn ErasedExecution>, LoadError>;

    /// Whether `execution` has this saga's context type (a run may have started an execution of
    /// another context type under the same name and fingerprint).
    fn owns(&self, execution: &dyn ErasedExecution) -> bool;
}

/// The [`ErasedSaga`] of a definition with context `C`.
pub(crate) struct Typed<C>(pub(crate) Arc<SagaDefinition<C>>);

impl<C: Context> ErasedSaga for Typed<C> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn fingerprint(&self) -> Fingerprint {
        self.0.fingerprint()
    }

    fn to_mermaid(&self) -> String {
        self.0.to_mermaid()
    }

    fn load(&self, record: ExecutionRecord) -> Result<Box<dyn ErasedExecution>, LoadError> {
        let execution = SagaExecution::from_record(Arc::clone(&self.0), record)?;
        Ok(Box::new(execution))
    }

    fn owns(&self, execution: &dyn ErasedExecution) -> bool {
        execution.as_any().is::<SagaExecution<C>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Saga;
    use crate::execution::testing::{Trail, local_saga};

    #[test]
    fn a_stored_execution_loads_through_its_saga() {
        let saga = Typed(local_saga());
        let execution = SagaExecution::new(local_saga(), Trail::default());
        let record = execution.to_record().expect("encodes");
        let loaded = saga.load(record).expect("loads");
        assert_eq!(loaded.id(), execution.id());
        assert!(saga.owns(&*loaded));
    }

    #[test]
    fn an_execution_of_another_context_type_is_not_the_saga_s() {
        let saga = Typed(local_saga());
        let other = Saga::<serde_json::Value>::new("reserve-only")
            .local_step("reserve")
            .on_execute(noop)
            .commit()
            .expect("a valid saga");
        let execution = SagaExecution::new(other, serde_json::Value::Null);
        assert!(!saga.owns(&execution));
    }

    #[test]
    fn a_record_of_another_saga_does_not_load() {
        let saga = Typed(local_saga());
        let mut record = SagaExecution::new(local_saga(), Trail::default())
            .to_record()
            .expect("encodes");
        record.saga = "other".to_owned();
        assert!(matches!(
            saga.load(record),
            Err(LoadError::WrongSaga { .. })
        ));
    }

    async fn noop(_: &mut serde_json::Value) -> Result<(), crate::StepError> {
        Ok(())
    }
}
