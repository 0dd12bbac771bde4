//! An execution's conversion to and from its stored form ([`ExecutionRecord`]).

use super::{ExecutionRecord, SagaExecution};
use crate::context::Context;
use crate::definition::IntoDefinition;
use crate::error::LoadError;
use crate::message::Headers;

impl<C: Context> SagaExecution<C> {
    /// The stored form.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn to_record(&self) -> Result<ExecutionRecord, serde_json::Error> {
        let mut record = self.record_without_steps()?;
        record.steps = self.steps.clone();
        record.headers = self.headers.clone();
        Ok(record)
    }

    /// The stored form, with the step executions and headers moved into it instead of copied (the
    /// store path of the manager, which fills in the outbox and the lease). Until
    /// [`restore_lent`](Self::restore_lent) gives them back, the execution has no steps.
    pub(crate) fn lend_record(&mut self) -> Result<ExecutionRecord, serde_json::Error> {
        let mut record = self.record_without_steps()?;
        record.steps = std::mem::take(&mut self.steps);
        record.headers = std::mem::take(&mut self.headers);
        Ok(record)
    }

    /// Takes back what [`lend_record`](Self::lend_record) moved into `record`.
    pub(crate) fn restore_lent(&mut self, record: ExecutionRecord) {
        self.steps = record.steps;
        self.headers = record.headers;
    }

    /// The stored form without the step executions and headers, so that the callers decide whether
    /// those are copied or lent.
    fn record_without_steps(&self) -> Result<ExecutionRecord, serde_json::Error> {
        Ok(ExecutionRecord {
            id: self.id,
            saga: self.definition.name().to_owned(),
            fingerprint: self.definition.fingerprint(),
            status: self.status,
            context: serde_json::value::to_raw_value(&self.context)?,
            steps: Vec::new(),
            paused_step: self.paused_step().map(|step| step.name.clone()),
            already_rollback: self.already_rollback,
            user: self.user.clone(),
            headers: Headers::new(),
            settings: self.settings,
            deadline_ms: self.deadline_ms,
            transaction: self.transaction,
            version: self.version,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            pending: Vec::new(),
            owner: None,
            lease_until_ms: None,
        })
    }

    /// Rebuilds an execution from its stored form, checking that it belongs to `definition`: same
    /// saga name, same fingerprint, and step executions that match the definition's steps.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn from_record(
        definition: impl IntoDefinition<C>,
        record: ExecutionRecord,
    ) -> Result<Self, LoadError> {
        let definition = definition.into_definition();
        record.check_against(&definition)?;
        let context = record.context::<C>().map_err(|error| LoadError::Corrupt {
            id: record.id,
            reason: format!("the context does not decode: {error}"),
        })?;
        Ok(Self {
            definition,
            id: record.id,
            status: record.status,
            context,
            steps: record.steps,
            already_rollback: record.already_rollback,
            user: record.user,
            headers: record.headers,
            settings: record.settings,
            deadline_ms: record.deadline_ms,
            transaction: record.transaction,
            version: record.version,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            unpublished: record.pending,
        })
    }

    /// The stored form as JSON.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn to_json(&self) -> Result<String, serde_json::Error> {
        Ok(self.to_record()?.to_json())
    }

    /// Rebuilds an execution from JSON written by [`to_json`](Self::to_json).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn from_json(
        definition: impl IntoDefinition<C>,
        json: &str,
    ) -> Result<Self, LoadError> {
        let record = ExecutionRecord::from_json(json)?;
        Self::from_record(definition, record)
    }
}
