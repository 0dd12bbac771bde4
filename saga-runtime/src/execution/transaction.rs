//! The execution's transaction: where it stands in the two-phase commit, and which services
//! joined it.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::{ExecutionEnv, SagaExecution, StepExecution};

/// Where the execution's transaction stands in the two-phase commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransactionState {
    /// Nothing decided yet.
    #[default]
    Open,
    /// The steps finished and the commit started: reservations may have been sent.
    Committing,
    /// Every participant was told to commit.
    Committed,
    /// The participants are (being) told to reject.
    Rejected,
}

impl<C> SagaExecution<C> {
    /// The transactions to reserve and commit: `(transaction id, service)` for this service and every
    /// service related to a step, recursing into conditional sub-sagas; sorted and deduplicated.
    ///
    /// A step that failed after its participant acted is included (its participants must be rejected).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn transactions(&self, env: &ExecutionEnv) -> Vec<(Uuid, String)> {
        fn collect(id: Uuid, steps: &[StepExecution], out: &mut BTreeSet<(Uuid, String)>) {
            for step in steps {
                if let Some(inner) = &step.inner {
                    collect(inner.id, &inner.steps, out);
                }
                for service in &step.related_services {
                    out.insert((id, service.clone()));
                }
            }
        }
        let mut out = BTreeSet::new();
        out.insert((self.id, env.service().to_owned()));
        collect(self.id, &self.steps, &mut out);
        out.into_iter().collect()
    }

    /// The services that joined the transaction (the service names of [`transactions`](Self::transactions)).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn related_services(&self, env: &ExecutionEnv) -> BTreeSet<String> {
        self.transactions(env)
            .into_iter()
            .map(|(_, service)| service)
            .collect()
    }
}
