//! What a participant counts: the counters it bumps as it works, read together as
//! [`ParticipantStats`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what a participant handled since it started, as
/// [`TransactionalParticipant::stats`](super::TransactionalParticipant::stats) reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParticipantStats {
    /// Commands answered (any status, an undecodable command included), duplicates included.
    pub commands: u64,
    /// Commands answered again with the remembered answer, without running the handler: deliveries
    /// of a command whose message id was answered successfully before.
    pub duplicates: u64,
    /// Messages that could not be understood (acknowledged, changed nothing): commands without a
    /// valid `transactions` header or whose payload does not decode, transaction messages without
    /// a transaction id.
    pub undecodable: u64,
    /// Reservations granted, a transaction with nothing staged included (it holds no key); not a
    /// reserve of a transaction that settled already.
    pub reserved: u64,
    /// Reservations refused: another reserved transaction holds one of the keys.
    pub refused: u64,
    /// Transactions committed that had staged effects.
    pub committed: u64,
    /// Transactions rejected that had staged effects (expired ones, and the late effects of a
    /// command that came after its transaction's reject, included).
    pub rejected: u64,
    /// Reservations rejected by the sweeper because nobody settled them in time.
    pub expired: u64,
}

/// The live counters behind [`ParticipantStats`], bumped concurrently by every task.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) commands: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) undecodable: AtomicU64,
    pub(super) reserved: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) committed: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) expired: AtomicU64,
}

impl Counters {
    /// The counts now (each read on its own: they need not agree with each other to the message).
    pub(super) fn snapshot(&self) -> ParticipantStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ParticipantStats {
            commands: read(&self.commands),
            duplicates: read(&self.duplicates),
            undecodable: read(&self.undecodable),
            reserved: read(&self.reserved),
            refused: read(&self.refused),
            committed: read(&self.committed),
            rejected: read(&self.rejected),
            expired: read(&self.expired),
        }
    }
}

/// Counts one more.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_each_counter_into_its_own_field() {
        let counters = Counters::default();
        let bumps: [(&AtomicU64, u64); 8] = [
            (&counters.commands, 1),
            (&counters.duplicates, 2),
            (&counters.undecodable, 3),
            (&counters.reserved, 4),
            (&counters.refused, 5),
            (&counters.committed, 6),
            (&counters.rejected, 7),
            (&counters.expired, 8),
        ];
        for (counter, times) in bumps {
            for _ in 0..times {
                bump(counter);
            }
        }
        let expected = ParticipantStats {
            commands: 1,
            duplicates: 2,
            undecodable: 3,
            reserved: 4,
            refused: 5,
            committed: 6,
            rejected: 7,
            expired: 8,
        };
        assert_eq!(counters.snapshot(), expected);
    }
}
