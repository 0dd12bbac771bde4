//! The sweeper: a task that finishes the settlements cut short (with their recorded decision),
//! rejects the reservations nobody decided within the reservation timeout, and forgets the command
//! answers older than the answer retention.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::participant::Inner;
use super::stats::bump;
use crate::participant_store::Outcome;

/// Starts the sweeper of `inner`, sweeping a few times per `reservation_timeout` until `stopped`
/// turns true (a sweep under way is finished first).
pub(super) fn spawn_sweeper(
    inner: Arc<Inner>,
    mut stopped: watch::Receiver<bool>,
    reservation_timeout: Duration,
    answer_retention: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = sweep_period(reservation_timeout);
        loop {
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stopped| *stopped) => return,
                () = tokio::time::sleep(period) => {}
            }
            inner.sweep(reservation_timeout).await;
            inner.forget_answers(answer_retention).await;
        }
    })
}

/// How often to sweep: a quarter of the reservation timeout, so a reservation is rejected soon
/// after it expires, but neither busier than every 10 ms nor lazier than every 5 s.
fn sweep_period(reservation_timeout: Duration) -> Duration {
    (reservation_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5))
}

/// The time `age` before `now` (the Unix epoch for an age longer than that).
fn older_than(now: SystemTime, age: Duration) -> SystemTime {
    now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Inner {
    /// Forgets the answers of commands older than `retention`.
    async fn forget_answers(&self, retention: Duration) {
        let before = older_than(SystemTime::now(), retention);
        match self.store.forget_answers(before).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::debug!(forgotten, ?retention, "forgot old command answers"),
            Err(error) => tracing::warn!(%error, "could not forget the old command answers"),
        }
    }

    /// Finishes the settlements decided more than `timeout` ago and cut short, with their decision;
    /// then rejects the reservations older than `timeout` that no decision reached.
    async fn sweep(&self, timeout: Duration) {
        let before = older_than(SystemTime::now(), timeout);
        match self.store.unfinished(before).await {
            Ok(unfinished) => {
                for (transaction, decided) in unfinished {
                    let _settling = self.lock_settlement(transaction).await;
                    tracing::warn!(%transaction, ?decided, "finishing a settlement that was cut short");
                    // A failure is logged by `settle`; the next sweep tries again.
                    let _ = self.settle(decided, transaction).await;
                }
            }
            Err(error) => tracing::warn!(%error, "could not list the unfinished settlements"),
        }
        let expired = match self.store.expired_reservations(before).await {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(%error, "could not list the expired reservations");
                return;
            }
        };
        for transaction in expired {
            let _settling = self.lock_settlement(transaction).await;
            // Decided between the listing and the lock (or decided and finished above): a
            // decision is never overturned.
            if !matches!(self.store.outcome(transaction).await, Ok(None)) {
                continue;
            }
            tracing::warn!(%transaction, ?timeout, "rejecting a reservation nobody settled");
            if self.settle(Outcome::Rejected, transaction).await.is_ok() {
                bump(&self.counters.expired);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use uuid::Uuid;

    use super::*;
    use crate::participant_store::{CommandAnswer, ParticipantStore};
    use crate::transactional::test_support::Harness;

    #[test]
    fn the_sweep_period_is_a_quarter_of_the_timeout_within_bounds() {
        assert_eq!(sweep_period(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(
            sweep_period(Duration::from_millis(8)),
            Duration::from_millis(10)
        );
        assert_eq!(
            sweep_period(Duration::from_secs(600)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn an_age_past_the_epoch_counts_from_the_epoch() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let before = older_than(now, Duration::from_secs(40));
        assert_eq!(before, SystemTime::UNIX_EPOCH + Duration::from_secs(60));
        assert_eq!(older_than(now, Duration::MAX), SystemTime::UNIX_EPOCH);
    }

    async fn reserve_staged(harness: &Harness, key: &str) -> Uuid {
        let transaction = Uuid::new_v4();
        harness.stage(transaction, key).await;
        harness.store.reserve(transaction).await.unwrap();
        transaction
    }

    #[tokio::test]
    async fn an_expired_reservation_is_rejected_and_counted() {
        let harness = Harness::new();
        let transaction = reserve_staged(&harness, "seat-1").await;
        // Listed only once strictly older than the cut-off.
        tokio::time::sleep(Duration::from_millis(5)).await;
        harness.inner.sweep(Duration::ZERO).await;
        let outcome = harness.store.outcome(transaction).await.unwrap();
        assert_eq!(outcome, Some(Outcome::Rejected));
        let stats = harness.inner.counters.snapshot();
        assert_eq!((stats.expired, stats.rejected), (1, 1));
    }

    #[tokio::test]
    async fn a_reservation_within_its_timeout_is_left_alone() {
        let harness = Harness::new();
        let transaction = reserve_staged(&harness, "seat-1").await;
        harness.inner.sweep(Duration::from_secs(3600)).await;
        assert_eq!(harness.store.outcome(transaction).await.unwrap(), None);
        assert_eq!(harness.store.staged(transaction).await.unwrap().len(), 1);
        assert_eq!(harness.inner.counters.snapshot().expired, 0);
    }

    #[tokio::test]
    async fn old_answers_are_forgotten_and_recent_ones_kept() {
        let harness = Harness::new();
        let command = Uuid::new_v4();
        let answer = CommandAnswer {
            content: Value::from("ok"),
            related_services: None,
        };
        let staging = harness.store.stage(Uuid::new_v4(), command, &[], &answer);
        let _ = staging.await.unwrap();
        harness
            .inner
            .forget_answers(Duration::from_secs(3600))
            .await;
        assert!(harness.store.answered(command).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(5)).await;
        harness.inner.forget_answers(Duration::ZERO).await;
        assert!(harness.store.answered(command).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_settlement_cut_short_is_finished_with_its_decision_not_rejected() {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicBool, Ordering};

        use crate::transactional::callbacks::Callbacks;

        let seen = Arc::new(Mutex::new(Vec::new()));
        let interrupted = Arc::new(AtomicBool::new(false));
        let mut callbacks = Callbacks::default();
        for outcome in [Outcome::Committed, Outcome::Rejected] {
            let seen = Arc::clone(&seen);
            let interrupted = Arc::clone(&interrupted);
            callbacks.add(outcome, None, move |_| {
                seen.lock().unwrap().push(outcome);
                let first = !interrupted.swap(true, Ordering::SeqCst);
                async move {
                    if first {
                        panic!("killed mid-callback");
                    }
                }
            });
        }
        let harness = Harness::with_callbacks(callbacks);
        let transaction = reserve_staged(&harness, "seat-1").await;
        let cut_short = harness.inner.settle(Outcome::Committed, transaction).await;
        assert!(cut_short.is_err());
        tokio::time::sleep(Duration::from_millis(5)).await;
        harness.inner.sweep(Duration::ZERO).await;
        assert_eq!(
            *seen.lock().unwrap(),
            [Outcome::Committed, Outcome::Committed]
        );
        assert!(harness.store.staged(transaction).await.unwrap().is_empty());
        let decided = harness.store.outcome(transaction).await.unwrap();
        assert_eq!(decided, Some(Outcome::Committed));
        assert_eq!(harness.inner.counters.snapshot().expired, 0);
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert!(
            harness
                .store
                .expired_reservations(later)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
