//! Step executions: the stored state of one step of one execution.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{SagaStatus, StepStatus};
use crate::definition::{Branch, StepKind};

/// The state of one step of an execution. Holds data only: the step's code is found through the
/// definition by the step's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepExecution {
    pub(crate) name: String,
    pub(crate) kind: StepKind,
    pub(crate) status: StepStatus,
    #[serde(default)]
    pub(crate) already_rollback: bool,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(crate) related_services: BTreeSet<String>,
    /// Remote steps: the id of the command sent; its reply must name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<Uuid>,
    /// Conditional steps: the alternative chosen on the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) branch: Option<Branch>,
    /// Conditional steps: the chosen sub-saga's execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inner: Option<InnerExecution>,
    /// Why the step (or its compensation) failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl StepExecution {
    pub(crate) fn new(name: &str, kind: StepKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            status: StepStatus::Created,
            already_rollback: false,
            related_services: BTreeSet::new(),
            request_id: None,
            branch: None,
            inner: None,
            error: None,
        }
    }

    /// The step's persisted name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step's kind.
    pub fn kind(&self) -> StepKind {
        self.kind
    }

    /// The step's status.
    pub fn status(&self) -> StepStatus {
        self.status
    }

    /// Whether the step was compensated.
    pub fn already_rollback(&self) -> bool {
        self.already_rollback
    }

    /// The services that joined the transaction through this step.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn related_services(&self) -> &BTreeSet<String> {
        &self.related_services
    }

    /// The id of the command a remote step sent.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn request_id(&self) -> Option<Uuid> {
        self.request_id
    }

    /// The alternative a conditional step chose.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn branch(&self) -> Option<Branch> {
        self.branch
    }

    /// The sub-saga execution of a conditional step.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn inner(&self) -> Option<&InnerExecution> {
        self.inner.as_ref()
    }

    /// Why the step failed, if it did.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// The execution of a conditional step's sub-saga. It shares the outer execution's id, user and
/// context; it has its own status and steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) struct InnerExecution {
    pub(crate) id: Uuid,
    pub(crate) saga: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    pub(crate) status: SagaStatus,
    pub(crate) steps: Vec<StepExecution>,
    #[serde(default)]
    pub(crate) already_rollback: bool,
}

impl InnerExecution {
    /// The id (the outer execution's).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn id(&self) -> Uuid {
        self.id
    }

    /// The sub-saga's name.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn saga(&self) -> &str {
        &self.saga
    }

    /// The acting user (the outer execution's).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The sub-saga's status.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn status(&self) -> SagaStatus {
        self.status
    }

    /// The sub-saga's step executions.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn steps(&self) -> &[StepExecution] {
        &self.steps
    }

    /// Whether the sub-saga was compensated.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn already_rollback(&self) -> bool {
        self.already_rollback
    }
}
