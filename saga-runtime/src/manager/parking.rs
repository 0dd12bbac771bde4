//! Runs waiting in memory: the execution of a run that waits for its saga to end is parked here,
//! decoded, so that its replies need no load; when an advance ends it, the run hears how, and when
//! the manager shuts down, the run hears that instead. The execution is stored at every pause
//! either way, so nothing waits only here.
//!
//! Every change in this process goes through `Inner::apply` under the execution's lock, so the
//! parked copy is the latest this process knows; a change by another process is caught by the
//! store's compare-and-set.

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Inner, ReplyOutcome, SagaError};
use crate::error::ExecutionError;
use crate::execution::ErasedExecution;
use crate::shard::ShardedMap;

/// How an execution ended, for the run waiting in memory.
pub(super) struct Completion {
    /// The `SagaExecution<C>` of the waiting run.
    pub(super) execution: Box<dyn ErasedExecution>,
    pub(super) failure: Option<ExecutionError>,
}

/// Where a waiting run hears how its execution ended; dropping it tells the run that the manager
/// shut down.
pub(super) type Waiter = oneshot::Sender<Result<Completion, SagaError>>;

/// An execution whose run waits in memory.
pub(super) struct Parked {
    pub(super) execution: Box<dyn ErasedExecution>,
    /// The stored version the parked copy is at.
    pub(super) version: u64,
    pub(super) waiter: Waiter,
}

/// The parked executions, by id.
#[derive(Default)]
pub(super) struct ParkedRuns {
    runs: ShardedMap<Parked>,
}

impl ParkedRuns {
    /// Parks `execution` (at its current version) for `waiter`.
    fn insert(&self, execution: Box<dyn ErasedExecution>, waiter: Waiter) {
        let id = execution.id();
        let version = execution.version();
        self.runs.shard(&id).insert(
            id,
            Parked {
                execution,
                version,
                waiter,
            },
        );
    }

    /// Takes the parked execution `id` out (the caller advances it).
    pub(super) fn take(&self, id: Uuid) -> Option<Parked> {
        self.runs.shard(&id).remove(&id)
    }

    /// Whether a run waits in memory for execution `id`.
    pub(super) fn contains(&self, id: Uuid) -> bool {
        self.runs.shard(&id).contains_key(&id)
    }

    /// Takes every parked execution out (their waiters are dropped by the caller).
    pub(super) fn drain(&self) -> Vec<Parked> {
        self.runs.drain()
    }
}

/// What becomes of a parked run after its execution advanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The execution ended: the run hears how.
    Complete,
    /// The manager is shutting down: no reply reaches the run here any more, so it hears that.
    Release,
    /// The execution waits again: parked for its next reply.
    Repark,
}

/// The fate of a parked run whose advance had `outcome`, when the manager is `stopping` or not.
fn fate(outcome: &ReplyOutcome, stopping: bool) -> Fate {
    let ended = match outcome {
        ReplyOutcome::Applied { status, .. } => status.is_terminal(),
        ReplyOutcome::Ignored { .. } => false,
    };
    if ended {
        Fate::Complete
    } else if stopping {
        Fate::Release
    } else {
        Fate::Repark
    }
}

impl Inner {
    /// Keeps the execution of a run that waits in memory (call under the execution's lock).
    pub(super) fn park(&self, execution: Box<dyn ErasedExecution>, waiter: Waiter) {
        let id = execution.id();
        self.parked.insert(execution, waiter);
        // Checked after parking: either this sees the shutdown, or the shutdown's drain sees the
        // parked run.
        if self.is_stopping() {
            // Dropping the waiter tells the run that the manager shut down.
            drop(self.parked.take(id));
        }
    }

    /// Tells the run of a parked execution what its advance (with `outcome`) did, or parks the
    /// execution again for its next reply.
    pub(super) fn after_parked_advance(
        &self,
        outcome: &ReplyOutcome,
        execution: Box<dyn ErasedExecution>,
        failure: Option<ExecutionError>,
        waiter: Waiter,
    ) {
        match fate(outcome, self.is_stopping()) {
            // The run may have given up waiting; the execution is stored either way.
            Fate::Complete => {
                let _ = waiter.send(Ok(Completion { execution, failure }));
            }
            // The waiter is dropped; the execution is stored.
            Fate::Release => drop((execution, waiter)),
            Fate::Repark => self.parked.insert(execution, waiter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::testing::{Trail, local_saga};
    use crate::execution::{ReplyRejection, SagaExecution, SagaStatus};

    fn parkable() -> (Box<dyn ErasedExecution>, Uuid) {
        let execution = SagaExecution::new(local_saga(), Trail::default());
        let id = execution.id();
        (Box::new(execution), id)
    }

    #[test]
    fn a_parked_run_is_taken_out_once() {
        let runs = ParkedRuns::default();
        let (execution, id) = parkable();
        let (waiter, _completion) = oneshot::channel();
        runs.insert(execution, waiter);
        assert!(runs.contains(id));
        let parked = runs.take(id).expect("parked");
        assert_eq!(parked.execution.id(), id);
        assert_eq!(parked.version, 0);
        assert!(!runs.contains(id));
        assert!(runs.take(id).is_none());
    }

    #[tokio::test]
    async fn draining_tells_every_waiting_run_that_the_manager_shut_down() {
        let runs = ParkedRuns::default();
        let mut completions = Vec::new();
        for _ in 0..3 {
            let (execution, _) = parkable();
            let (waiter, completion) = oneshot::channel();
            runs.insert(execution, waiter);
            completions.push(completion);
        }
        let drained = runs.drain();
        assert_eq!(drained.len(), 3);
        drop(drained);
        for completion in completions {
            assert!(completion.await.is_err(), "the waiter was dropped");
        }
    }

    #[test]
    fn an_ended_execution_completes_its_run_even_while_stopping() {
        let id = Uuid::new_v4();
        for status in [SagaStatus::Finished, SagaStatus::Errored] {
            let outcome = ReplyOutcome::Applied { id, status };
            assert_eq!(fate(&outcome, false), Fate::Complete);
            assert_eq!(fate(&outcome, true), Fate::Complete);
        }
    }

    #[test]
    fn a_waiting_execution_is_parked_again_unless_the_manager_stops() {
        let id = Uuid::new_v4();
        let paused = ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused,
        };
        let ignored = ReplyOutcome::Ignored {
            id,
            reason: ReplyRejection::Duplicate,
        };
        for outcome in [paused, ignored] {
            assert_eq!(fate(&outcome, false), Fate::Repark);
            assert_eq!(fate(&outcome, true), Fate::Release);
        }
    }
}
