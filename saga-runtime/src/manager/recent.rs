//! The replies applied lately, by execution and command: a copy of one of them (a redelivery, a
//! participant answering twice, a flood of duplicates) is acknowledged without loading its
//! execution, so duplicates cost no database round trip and do not hold up the replies behind
//! them.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use uuid::Uuid;

/// How many replies are remembered: the oldest is forgotten first. A duplicate of a forgotten
/// one is recognized the slow way, by its execution.
const REMEMBERED: usize = 16_384;

/// A bounded set of `(execution, command)` pairs whose reply was applied, or can never be.
#[derive(Debug, Default)]
pub(super) struct RecentReplies {
    state: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    known: HashSet<(Uuid, Uuid)>,
    order: VecDeque<(Uuid, Uuid)>,
}

impl RecentReplies {
    /// Remembers that the reply of execution `saga` to command `request` was handled for good.
    pub(super) fn remember(&self, saga: Uuid, request: Uuid) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.known.insert((saga, request)) {
            return;
        }
        state.order.push_back((saga, request));
        if state.order.len() > REMEMBERED {
            if let Some(oldest) = state.order.pop_front() {
                state.known.remove(&oldest);
            }
        }
    }

    /// Whether a reply of execution `saga` to command `request` was handled for good lately.
    pub(super) fn seen(&self, saga: Uuid, request: Uuid) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.known.contains(&(saga, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_reply_is_seen_and_the_oldest_is_forgotten_first() {
        let recent = RecentReplies::default();
        let first = (Uuid::new_v4(), Uuid::new_v4());
        recent.remember(first.0, first.1);
        recent.remember(first.0, first.1);
        assert!(recent.seen(first.0, first.1));
        assert!(!recent.seen(first.0, Uuid::new_v4()), "another command");
        for _ in 0..REMEMBERED {
            recent.remember(Uuid::new_v4(), Uuid::new_v4());
        }
        assert!(
            !recent.seen(first.0, first.1),
            "forgotten after {REMEMBERED} others"
        );
        let state = recent.state.lock().unwrap();
        assert_eq!(
            (state.known.len(), state.order.len()),
            (REMEMBERED, REMEMBERED)
        );
    }
}
