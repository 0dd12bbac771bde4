//! [`ReplyCounts`]: the reply listener's counts in a form tests can write down whole.

use saga_runtime::manager::ReplyStats;

/// The counts of a [`ReplyStats`] (which only the manager builds), to compare with expected ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyCounts {
    /// [`ReplyStats::applied`].
    pub applied: u64,
    /// [`ReplyStats::ignored`].
    pub ignored: u64,
    /// [`ReplyStats::unknown`].
    pub unknown: u64,
    /// [`ReplyStats::malformed`].
    pub malformed: u64,
    /// [`ReplyStats::failed`].
    pub failed: u64,
    /// [`ReplyStats::dead_lettered`].
    pub dead_lettered: u64,
}

impl From<ReplyStats> for ReplyCounts {
    fn from(stats: ReplyStats) -> Self {
        Self {
            applied: stats.applied,
            ignored: stats.ignored,
            unknown: stats.unknown,
            malformed: stats.malformed,
            failed: stats.failed,
            dead_lettered: stats.dead_lettered,
        }
    }
}
