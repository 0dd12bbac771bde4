//! The manager: starts executions, resumes them with replies, enforces timeouts, and runs the
//! two-phase commit when they end.
//!
//! # The pipeline
//!
//! Every path that changes an execution (a run's start, a reply, an expiry, a commit or rollback by
//! hand, recovery) goes through three steps, each in a file of its own:
//!
//! 1. **apply** (`apply.rs`): find the execution an input is for, under the execution's lock: the
//!    copy a run waiting in memory parked, or the stored one. A lost race with another instance
//!    reloads it and applies the input again; the state machine then refuses what no longer fits.
//! 2. **advance** (`advance.rs`): refuse an input that does not fit (nothing changes, not even the
//!    owner), claim the execution (store it with this instance as its owner, before any handler
//!    runs), and run the engine until it pauses or ends.
//! 3. **conclude** (`conclude.rs`): store the new state together with the messages the engine
//!    emitted, then publish them, and commit or reject the transaction when the execution ended
//!    (`commit.rs`, the two-phase commit).
//!
//! Storing before publishing (`persist.rs`) means that no message is ever sent for a state that was
//! not stored, and none is lost by a crash between the two: recovery publishes again what was stored
//! but not marked published. Waiting "in memory" is the same path: the execution is stored at its
//! pause, parked (`parking.rs`), and the caller waits for the reply listener to report that it
//! ended, so a crash while waiting loses nothing. A paused step with a timeout gets a timer
//! (`expiry.rs`) that applies an expiry as its input. See `recovery.rs` for what happens after a
//! crash.
//!
//! The reply listener (`listener.rs`) settles every delivery: a reply that advanced an execution or
//! changed nothing (unknown execution, not awaited, duplicate) is acknowledged; a failure that may
//! pass (storage, transport, an instance holding the execution) is nacked to be delivered again; a
//! message that is not a saga reply, or whose handling can never succeed, is dead-lettered with the
//! reason. `SagaManager::shutdown` stops it gracefully.
//!
//! Around the pipeline: the public handle (`handle.rs`) and its builder (`builder.rs`), the sagas
//! this manager knows (`sagas.rs`), the leases that tell instances apart (`lease.rs`), the
//! listener's counts (`stats.rs`), the errors (`error.rs`) and the run options (`options.rs`).

mod advance;
mod apply;
mod builder;
mod commit;
mod conclude;
mod error;
mod expiry;
mod handle;
mod idempotent;
mod lease;
mod listener;
mod options;
mod parking;
mod persist;
mod recent;
mod recovery;
mod sagas;
mod stats;
mod unpublishable;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use self::{
    apply::ReplyOutcome,
    builder::SagaManagerBuilder,
    error::{Interruption, SagaError},
    handle::SagaManager,
    options::{RunOptions, RunOutcome},
    recovery::RecoveryReport,
    stats::ReplyStats,
};

use crate::broker::Broker;
use crate::committer::TransactionCommitter;
use crate::execution::ExecutionEnv;
use crate::locks::ExecutionLocks;
use crate::repository::SagaExecutionRepository;

/// What every part of the manager shares; each part's `impl Inner` block lives in its file.
struct Inner {
    env: ExecutionEnv,
    repository: Arc<dyn SagaExecutionRepository>,
    broker: Arc<dyn Broker>,
    committer: TransactionCommitter,
    sagas: sagas::KnownSagas,
    locks: ExecutionLocks,
    parked: parking::ParkedRuns,
    expiries: expiry::ExpiryTimers,
    counters: stats::Counters,
    recent_replies: recent::RecentReplies,
    instance: String,
    lease: Duration,
    storage_retry: Duration,
    retention: Option<Duration>,
    /// Set by `SagaManager::shutdown`.
    stopping: watch::Sender<bool>,
}

impl Inner {
    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

/// A timestamp every backend can store (SQL integers are signed 64-bit).
fn clamp_ms(ms: u64) -> u64 {
    ms.min(i64::MAX as u64)
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_stay_within_a_signed_64_bit_column() {
        assert_eq!(clamp_ms(u64::MAX), i64::MAX as u64);
        assert_eq!(clamp_ms(1_000), 1_000);
    }

    #[test]
    fn durations_in_milliseconds_saturate() {
        assert_eq!(duration_ms(Duration::from_millis(1_500)), 1_500);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
    }
}
