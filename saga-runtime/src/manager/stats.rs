//! What the reply listener did with what it received, counted.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of what the reply listener did with what it received (see
/// [`SagaManager::reply_stats`](super::SagaManager::reply_stats)).
///
/// Every delivery counts once among `applied`, `ignored`, `unknown`, `malformed` and `failed`;
/// `dead_lettered` counts again those of them that were set aside. Built by the manager only, so
/// that new counts can be added; read its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplyStats {
    /// Replies that advanced an execution (acknowledged).
    pub applied: u64,
    /// Replies to a stored execution that changed nothing: it ended, does not wait for that reply,
    /// or already applied it (acknowledged).
    pub ignored: u64,
    /// Replies naming an execution that is not stored (acknowledged).
    pub unknown: u64,
    /// Messages that were not saga replies (dead-lettered).
    pub malformed: u64,
    /// Replies whose handling failed: for a reason that may pass (storage, broker, an instance
    /// holding the execution, a saga not registered yet), nacked to be delivered again; otherwise
    /// dead-lettered.
    pub failed: u64,
    /// Messages set aside as dead letters: the malformed ones and the replies whose handling
    /// failed for good.
    pub dead_lettered: u64,
}

/// One thing the listener counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tally {
    Applied,
    Ignored,
    Unknown,
    Malformed,
    Failed,
    DeadLettered,
}

/// The listener's counts, updated by its concurrent reply tasks.
#[derive(Debug, Default)]
pub(super) struct Counters {
    applied: AtomicU64,
    ignored: AtomicU64,
    unknown: AtomicU64,
    malformed: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
}

impl Counters {
    /// Counts one `tally`.
    pub(super) fn add(&self, tally: Tally) {
        let counter = match tally {
            Tally::Applied => &self.applied,
            Tally::Ignored => &self.ignored,
            Tally::Unknown => &self.unknown,
            Tally::Malformed => &self.malformed,
            Tally::Failed => &self.failed,
            Tally::DeadLettered => &self.dead_lettered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub(super) fn snapshot(&self) -> ReplyStats {
        ReplyStats {
            applied: self.applied.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tally_counts_in_its_own_field() {
        let counters = Counters::default();
        for (tally, times) in [
            (Tally::Applied, 1),
            (Tally::Ignored, 2),
            (Tally::Unknown, 3),
            (Tally::Malformed, 4),
            (Tally::Failed, 5),
            (Tally::DeadLettered, 6),
        ] {
            for _ in 0..times {
                counters.add(tally);
            }
        }
        assert_eq!(
            counters.snapshot(),
            ReplyStats {
                applied: 1,
                ignored: 2,
                unknown: 3,
                malformed: 4,
                failed: 5,
                dead_lettered: 6,
            }
        );
    }

    #[test]
    fn nothing_counted_is_the_default() {
        assert_eq!(Counters::default().snapshot(), ReplyStats::default());
    }
}
