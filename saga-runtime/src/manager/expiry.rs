//! Timeouts of paused steps: a timer per paused execution with a deadline, which applies an expiry
//! to it when the deadline passes (the step then fails and the saga compensates, unless its reply
//! came first). Deadlines are stored, so recovery arms the timers again after a restart.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::advance::Input;
use super::{Inner, ReplyOutcome, clamp_ms};
use crate::shard::ShardedMap;

/// The command each armed timer waits for the reply to, by execution, so that recovery sweeps
/// that find a paused execution again arm its timer once.
#[derive(Debug, Default)]
pub(super) struct ExpiryTimers {
    armed: ShardedMap<Uuid>,
}

impl ExpiryTimers {
    /// Records a timer for command `request` of execution `id`; `false` when one is armed for that
    /// command already.
    fn arm(&self, id: Uuid, request: Uuid) -> bool {
        self.armed.shard(&id).insert(id, request) != Some(request)
    }

    /// Forgets the timer for `request` when it fires, unless a timer for a newer command of the
    /// execution replaced it.
    fn fired(&self, id: Uuid, request: Uuid) {
        let mut armed = self.armed.shard(&id);
        if armed.get(&id) == Some(&request) {
            armed.remove(&id);
        }
    }
}

impl Inner {
    /// Arms the timer of execution `id`'s paused step, which waits for the reply to `request`:
    /// after `after`, an expiry is applied to the execution (ignored if the reply came first).
    pub(super) fn schedule_expiry(self: &Arc<Self>, id: Uuid, request: Uuid, after: Duration) {
        if !self.expiries.arm(id, request) {
            return; // already armed (a recovery sweep found it again)
        }
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if inner.is_stopping() {
                // Shut down: the deadline is stored, and recovery elsewhere arms it again.
                return;
            }
            inner.expiries.fired(id, request);
            match inner.apply(id, Input::Expire(request)).await {
                Ok(ReplyOutcome::Applied { status, .. }) => {
                    tracing::info!(saga.id = %id, %status, "a paused step timed out");
                }
                Ok(ReplyOutcome::Ignored { .. }) => {}
                Err(error) => {
                    tracing::error!(saga.id = %id, %error, "expiring a paused step failed");
                }
            }
        });
    }
}

/// The deadline of a step paused at `now_ms` that waits `timeout_ms`, as every backend stores it.
pub(super) fn deadline_after(now_ms: u64, timeout_ms: u64) -> u64 {
    clamp_ms(now_ms.saturating_add(timeout_ms))
}

/// How long a timer armed at `now_ms` waits for `deadline_ms` (not at all once it passed).
pub(super) fn time_left(deadline_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_is_armed_once_per_command() {
        let timers = ExpiryTimers::default();
        let (id, request) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(timers.arm(id, request));
        assert!(!timers.arm(id, request), "a sweep finding it again");
        timers.fired(id, request);
        assert!(
            timers.arm(id, request),
            "a new pause waiting for the same command"
        );
    }

    #[test]
    fn a_stale_timer_firing_keeps_the_newer_one_armed() {
        let timers = ExpiryTimers::default();
        let (id, first, second) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(timers.arm(id, first));
        assert!(
            timers.arm(id, second),
            "the execution waits for another command now"
        );
        timers.fired(id, first);
        assert!(!timers.arm(id, second), "the newer timer is still armed");
    }

    #[test]
    fn deadlines_are_clamped_and_passed_ones_expire_at_once() {
        assert_eq!(deadline_after(1_000, 500), 1_500);
        assert_eq!(deadline_after(u64::MAX - 1, 500), i64::MAX as u64);
        assert_eq!(time_left(1_500, 1_000), Duration::from_millis(500));
        assert_eq!(time_left(1_000, 1_500), Duration::ZERO);
    }
}
