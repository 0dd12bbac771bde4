//! The stored form of an execution: plain data, independent of the context type, so that
//! repositories and the manager handle executions of every saga alike.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{ExecutionSettings, SagaStatus, StepExecution, StepStatus, TransactionState};
use crate::definition::{SagaDefinition, StepDefinition, StepKind};
use crate::error::LoadError;
use crate::message::{BrokerMessage, Headers};

/// One stored execution: what a repository keeps (one row per execution in SQL backends).
///
/// The context is kept as the JSON text it was encoded to, so that storing it costs one encoding
/// and a SQL backend can put it in a JSON column as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The execution (and transaction) id.
    pub id: Uuid,
    /// The saga's persisted name.
    pub saga: String,
    /// The fingerprint of the definition the execution was made from.
    pub fingerprint: crate::definition::Fingerprint,
    /// The status.
    pub status: SagaStatus,
    /// The context, as JSON text.
    pub context: Box<RawValue>,
    /// The step executions, in definition order.
    pub steps: Vec<StepExecution>,
    /// The name of the top-level step waiting for a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_step: Option<String>,
    /// Whether the execution was compensated.
    #[serde(default)]
    pub already_rollback: bool,
    /// The acting user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Headers inherited from the message being handled when the saga started.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    #[serde(default)]
    pub(crate) settings: ExecutionSettings,
    /// When the paused step stops waiting (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Where the transaction stands.
    #[serde(default)]
    pub transaction: TransactionState,
    /// The version of the stored copy (optimistic concurrency; 0: never stored).
    #[serde(default)]
    pub version: u64,
    /// Creation time (milliseconds since the Unix epoch).
    #[serde(default)]
    pub created_at_ms: u64,
    /// Last change (milliseconds since the Unix epoch).
    #[serde(default)]
    pub updated_at_ms: u64,
    /// The messages the change to this state emitted, not yet known to be published (the
    /// execution's outbox). They are written with the state in one store, so that a crash between
    /// the store and the publish loses none of them; the manager clears them with
    /// `SagaExecutionRepository::mark_published` once they
    /// are out, and recovery publishes again whatever is still here (receivers deduplicate by
    /// message id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<BrokerMessage>,
    /// The manager instance advancing the execution now (`None` when it rests: paused or ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Until when `owner` holds the execution (milliseconds since the Unix epoch); after it, recovery
    /// on another instance may take the execution over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until_ms: Option<u64>,
}

impl ExecutionRecord {
    /// Decodes a record written as JSON.
    pub fn from_json(json: &str) -> Result<Self, LoadError> {
        serde_json::from_str(json).map_err(|error| LoadError::Corrupt {
            id: Uuid::nil(),
            reason: format!("not a saga execution record: {error}"),
        })
    }

    /// Encodes the record as JSON.
    pub fn to_json(&self) -> String {
        let mut buffer = Vec::with_capacity(1024 + self.context.get().len());
        serde_json::to_writer(&mut buffer, self).expect("records hold only JSON-encodable data");
        String::from_utf8(buffer).expect("serde_json writes UTF-8")
    }

    /// The context decoded as a `T`.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn context<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.context.get())
    }

    /// Whether start-up recovery has work to do on this execution: it was being advanced (`created`
    /// or `running`, or an instance holds it), its transaction was being committed, it waits with a
    /// deadline (the timer died with its process), or messages it emitted may not have been
    /// published.
    pub fn needs_recovery(&self) -> bool {
        matches!(self.status, SagaStatus::Created | SagaStatus::Running)
            || self.transaction == TransactionState::Committing
            || (self.status == SagaStatus::Paused && self.deadline_ms.is_some())
            || self.owner.is_some()
            || !self.pending.is_empty()
    }

    /// Whether start-up recovery still has work once the pending messages are published.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn needs_recovery_once_published(&self) -> bool {
        matches!(self.status, SagaStatus::Created | SagaStatus::Running)
            || self.transaction == TransactionState::Committing
            || (self.status == SagaStatus::Paused && self.deadline_ms.is_some())
            || self.owner.is_some()
    }

    /// Whether the execution commits on success and rejects on failure.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn autocommit(&self) -> bool {
        self.settings.autocommit
    }

    /// Checks that the record belongs to `definition`.
    pub(crate) fn check_against<C>(&self, definition: &SagaDefinition<C>) -> Result<(), LoadError> {
        if self.saga != definition.name() {
            return Err(LoadError::WrongSaga {
                id: self.id,
                stored: self.saga.clone(),
                expected: definition.name().to_owned(),
            });
        }
        if self.fingerprint != definition.fingerprint() {
            return Err(LoadError::FingerprintMismatch {
                id: self.id,
                saga: self.saga.clone(),
                stored: self.fingerprint,
                registered: definition.fingerprint(),
            });
        }
        check_steps(self.id, definition.steps(), &self.steps)
    }
}

/// Why a step execution's state cannot have been written by the engine, if it cannot: a status its
/// kind never takes, a waiting step without the command it waits for, kind-specific data on the
/// wrong kind, or an unfinished step before the last one.
fn impossible_state(step: &StepExecution, last: bool) -> Option<String> {
    use StepStatus as S;
    let allowed = match step.kind {
        StepKind::Local => matches!(
            step.status,
            S::Created
                | S::RunningOnExecute
                | S::ErroredOnExecute
                | S::RunningOnFailure
                | S::ErroredOnFailure
                | S::Finished
        ),
        StepKind::Remote => true,
        StepKind::Conditional => matches!(
            step.status,
            S::Created
                | S::RunningOnExecute
                | S::ErroredOnExecute
                | S::PausedByOnExecute
                | S::ErroredByOnExecute
                | S::RunningOnFailure
                | S::ErroredOnFailure
                | S::Finished
        ),
    };
    if !allowed {
        return Some(format!(
            "has status `{}`, which a {} step never takes",
            step.status, step.kind
        ));
    }
    if step.kind == StepKind::Remote
        && step.status == S::PausedByOnExecute
        && step.request_id.is_none()
    {
        return Some("waits for a reply but names no command".to_owned());
    }
    if step.kind != StepKind::Remote && step.request_id.is_some() {
        return Some(format!("is a {} step with a command id", step.kind));
    }
    if step.kind != StepKind::Conditional && (step.branch.is_some() || step.inner.is_some()) {
        return Some(format!("is a {} step with a sub-saga", step.kind));
    }
    // `running-on-failure` before later steps: the intent of a compensation, stored before it ran.
    let settled = matches!(
        step.status,
        S::Finished | S::ErroredOnFailure | S::RunningOnFailure
    ) || step.already_rollback;
    if !last && !settled {
        return Some(format!("is `{}` but later steps ran", step.status));
    }
    None
}

/// Checks step executions against step definitions, recursing into conditional sub-sagas.
fn check_steps<C>(
    id: Uuid,
    definitions: &[StepDefinition<C>],
    steps: &[StepExecution],
) -> Result<(), LoadError> {
    let corrupt = |reason: String| Err(LoadError::Corrupt { id, reason });
    if steps.len() > definitions.len() {
        return corrupt(format!(
            "{} step executions for {} steps",
            steps.len(),
            definitions.len()
        ));
    }
    for (index, (definition, step)) in definitions.iter().zip(steps).enumerate() {
        if definition.name() != step.name || definition.kind() != step.kind {
            return corrupt(format!(
                "step execution `{}` ({}) does not match step `{}` ({})",
                step.name,
                step.kind,
                definition.name(),
                definition.kind()
            ));
        }
        if let Some(reason) = impossible_state(step, index + 1 == steps.len()) {
            return corrupt(format!("step execution `{}` {reason}", step.name));
        }
        if let StepDefinition::Conditional(conditional) = definition {
            match (step.branch, &step.inner) {
                (Some(branch), inner) => match (conditional.branch_saga(branch), inner) {
                    (Some(saga), Some(inner)) if inner.saga == saga.name() => {
                        check_steps(id, saga.steps(), &inner.steps)?;
                    }
                    (None, None) => {}
                    _ => {
                        return corrupt(format!(
                            "conditional step `{}` records branch {branch:?} that does not match its sub-saga",
                            step.name
                        ));
                    }
                },
                (None, None) => {}
                (None, Some(_)) => {
                    return corrupt(format!(
                        "conditional step `{}` has a sub-saga execution but no branch",
                        step.name
                    ));
                }
            }
        }
    }
    Ok(())
}

impl PartialEq for ExecutionRecord {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.saga == other.saga
            && self.fingerprint == other.fingerprint
            && self.status == other.status
            && self.context.get() == other.context.get()
            && self.steps == other.steps
            && self.paused_step == other.paused_step
            && self.already_rollback == other.already_rollback
            && self.user == other.user
            && self.headers == other.headers
            && self.settings == other.settings
            && self.deadline_ms == other.deadline_ms
            && self.transaction == other.transaction
            && self.version == other.version
            && self.created_at_ms == other.created_at_ms
            && self.updated_at_ms == other.updated_at_ms
            && self.pending == other.pending
            && self.owner == other.owner
            && self.lease_until_ms == other.lease_until_ms
    }
}
