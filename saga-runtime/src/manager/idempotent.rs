//! Runs with a caller-chosen id (`RunOptions::id`): an execution stored under that id was started
//! already, here or elsewhere, so the run starts nothing and answers with that execution's outcome.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::{RunOptions, RunOutcome, SagaError, SagaManager};
use crate::context::Context;
use crate::definition::SagaDefinition;
use crate::error::{ExecutionError, RepositoryError};
use crate::execution::{SagaExecution, SagaStatus, TransactionState};

/// How often a run waiting for an execution started by someone else reads it again.
const POLL: Duration = Duration::from_millis(50);

impl SagaManager {
    /// Whether an execution `id` is stored.
    pub(super) async fn is_stored(&self, id: Uuid) -> Result<bool, SagaError> {
        match self.inner.repository.load(id).await {
            Ok(_) => Ok(true),
            Err(RepositoryError::NotFound { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// `error`, which stopped the run of execution `id`, told apart: as it is when nothing of the
    /// execution is stored (the saga did not start), as [`SagaError::MayStillFinish`] when it is
    /// stored or the repository cannot say.
    pub(super) async fn started_or_not(&self, id: Uuid, error: SagaError) -> SagaError {
        match self.is_stored(id).await {
            Ok(false) => error,
            Ok(true) | Err(_) => SagaError::MayStillFinish {
                id,
                cause: Box::new(error),
            },
        }
    }

    /// The outcome of the execution `id` of `definition`, started already: once it ended (its
    /// transaction decided), or at once with `pause_on_disk`. It may be advanced by a reply
    /// listener of this manager or of another instance, so it is read again until then.
    pub(super) async fn outcome_of_started<C: Context>(
        &self,
        definition: &Arc<SagaDefinition<C>>,
        id: Uuid,
        options: &RunOptions,
    ) -> Result<RunOutcome<C>, SagaError> {
        tracing::debug!(saga.id = %id, "a run with the id of a started execution waits for its outcome");
        loop {
            let execution: SagaExecution<C> = self.load(Arc::clone(definition), id).await?;
            if ended(&execution) || options.pause_on_disk {
                if options.raise_on_error && execution.status() == SagaStatus::Errored {
                    let status = execution.status();
                    return Err(ExecutionError::AlreadyExecuted { id, status }.into());
                }
                return Ok(if options.return_execution {
                    RunOutcome::Execution(execution)
                } else {
                    RunOutcome::Id(id)
                });
            }
            if self.inner.is_stopping() {
                return Err(SagaError::Shutdown { id });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether nothing more will happen to `execution`: it finished or errored, and its two-phase
/// commit is not under way.
fn ended<C>(execution: &SagaExecution<C>) -> bool {
    execution.status().is_terminal() && execution.transaction() != TransactionState::Committing
}
