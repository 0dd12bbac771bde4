//! Checkpoints: where the engine hands the whole execution to its caller in the middle of an
//! advance, so that the caller can store it before the engine goes on.
//!
//! The engine calls a checkpoint before each top-level compensation, with the step about to be
//! compensated marked `running-on-failure`: once that is stored, a crash can no longer make the
//! compensation run twice (recovery sees the mark and does not run it again). Forward steps need no
//! checkpoint: a forward step whose completion was not stored is simply run again (at least once).

use crate::definition::BoxFuture;

use super::{ErasedExecution, Outbox};

/// Why a checkpoint could not save the execution (the saver's own error, boxed).
pub(crate) type CheckpointError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Saves an execution in the middle of an advance. `outbox` holds what the advance emitted so far;
/// a saver that stores the execution publishes those messages after the store.
pub(crate) trait Checkpoint: Send {
    /// Saves `execution`; an error stops the compensation about to run (it is recorded as failed).
    fn save<'a>(
        &'a mut self,
        execution: &'a mut dyn ErasedExecution,
        outbox: &'a mut Outbox,
    ) -> BoxFuture<'a, Result<(), CheckpointError>>;
}

/// No checkpoints: the in-memory engine API (`execute`, `rollback`, ...), whose caller stores the
/// execution only when the call returns.
pub(crate) struct NoCheckpoint;

impl Checkpoint for NoCheckpoint {
    fn save<'a>(
        &'a mut self,
        _execution: &'a mut dyn ErasedExecution,
        _outbox: &'a mut Outbox,
    ) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(async { Ok(()) })
    }
}
