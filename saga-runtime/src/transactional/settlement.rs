//! Settling a transaction: its decision recorded first, then its staged effects handed to the
//! `on_commit` or `on_reject` callbacks and removed; one settlement of a transaction at a time in
//! this process.
//!
//! The decision is durable before any callback runs, so a settlement cut short (a crash, a
//! callback that panicked, a store that failed) resumes with the same decision whoever resumes it
//! (a redelivered commit or reject, the sweeper), and a decided transaction is never settled the
//! other way. Callbacks may therefore see the same effects again after such an interruption: they
//! are called at least once per effect, with a stable identity to be idempotent with (the
//! transaction id and each effect's key). Only the effects handed to the callbacks are removed, so
//! an effect staged while they ran (a command of the transaction handled meanwhile) is settled by
//! the same decision, in the same settlement, never dropped.

use uuid::Uuid;

use super::participant::Inner;
use super::stats::bump;
use crate::locks::ExecutionGuard;
use crate::participant_store::{Outcome, ParticipantStoreError};

/// Why a transaction was not settled: its effects stay staged, and the settlement can be tried
/// again (a redelivered commit or reject, the next sweep).
#[derive(Debug, thiserror::Error)]
pub(super) enum SettleError {
    /// The store failed: reading the staged effects or the outcome, or removing the effects.
    #[error(transparent)]
    Store(#[from] ParticipantStoreError),
    /// A callback panicked, with this message.
    #[error("the {} callback panicked: {message}", callbacks_of(*.outcome))]
    CallbackPanicked {
        /// The outcome whose callbacks were called.
        outcome: Outcome,
        /// What the panic said.
        message: String,
    },
}

/// The name of the callbacks an outcome calls, as the protocol names its phase.
fn callbacks_of(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Committed => "Commit",
        Outcome::Rejected => "Reject",
    }
}

impl Inner {
    /// Waits until no one else in this process reserves, settles or sweeps `transaction`; the
    /// settlement steps below expect their caller to hold this.
    pub(super) async fn lock_settlement(&self, transaction: Uuid) -> ExecutionGuard {
        self.settling.lock(transaction).await
    }

    /// Commits or rejects `transaction`: records `outcome` as its decision unless one was recorded
    /// already, then hands its staged effects to the callbacks of the decision that stands and
    /// removes them, until none remain. Returns that decision. The caller holds the transaction's
    /// lock.
    pub(super) async fn settle(
        &self,
        outcome: Outcome,
        transaction: Uuid,
    ) -> Result<Outcome, SettleError> {
        let decided = self
            .store
            .decide(transaction, outcome)
            .await
            .inspect_err(|error| {
                tracing::error!(%transaction, %error, "could not record the decision");
            })?;
        if decided != outcome {
            tracing::warn!(%transaction, asked = ?outcome, ?decided, "a transaction decided already is settled as decided");
        }
        let mut settled = 0;
        loop {
            let effects = self.store.staged(transaction).await.inspect_err(|error| {
                tracing::error!(%transaction, %error, "could not read the staged effects");
            })?;
            if !effects.is_empty() {
                if let Err(message) = self.callbacks.call(decided, transaction, &effects).await {
                    let error = SettleError::CallbackPanicked {
                        outcome: decided,
                        message,
                    };
                    tracing::error!(%transaction, "{error}; the effects stay staged");
                    return Err(error);
                }
            }
            let remaining = self
                .store
                .remove_settled(transaction, effects.len())
                .await
                .inspect_err(|error| {
                    tracing::error!(%transaction, %error, "could not remove the settled effects");
                })?;
            settled += effects.len();
            if remaining == 0 {
                break;
            }
            // Staged while the callbacks ran: the same decision settles them now.
        }
        if settled > 0 {
            bump(match decided {
                Outcome::Committed => &self.counters.committed,
                Outcome::Rejected => &self.counters.rejected,
            });
        }
        tracing::info!(
            service = %self.service,
            %transaction,
            outcome = ?decided,
            effects = settled,
            "transaction settled"
        );
        Ok(decided)
    }

    /// Settles the effects a command staged in `transaction` after the transaction settled (a
    /// compensation command that raced the reject, or any command handled late): those of a
    /// rejected transaction go to the `on_reject` callbacks, as they would have with the reject;
    /// those of a committed one are dropped without a callback (only a command answered already,
    /// whose answer was forgotten, can come after the commit: its effects were applied then).
    /// Nothing happens while the transaction is still open.
    pub(super) async fn settle_late(
        &self,
        topic: &str,
        transaction: Uuid,
    ) -> Result<(), SettleError> {
        let Some(outcome) = self.store.outcome(transaction).await? else {
            return Ok(());
        };
        let _settling = self.lock_settlement(transaction).await;
        match outcome {
            Outcome::Rejected => {
                tracing::warn!(%topic, %transaction, "a command came after its transaction was rejected: rejecting its effects");
                self.settle(Outcome::Rejected, transaction).await?;
            }
            Outcome::Committed => {
                let dropped = self.store.staged(transaction).await?.len();
                self.store.remove_settled(transaction, dropped).await?;
                if dropped > 0 {
                    tracing::error!(%topic, %transaction, effects = dropped, "a command came after its transaction was committed: its effects are dropped");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::participant_store::{
        CommandAnswer, InMemoryParticipantStore, ParticipantStore, StagedEffect, Staging,
    };
    use crate::transactional::callbacks::{Callbacks, Settled};
    use crate::transactional::test_support::{Harness, UnreachableStore};

    type Calls = Arc<Mutex<Vec<(Outcome, Settled)>>>;

    /// A harness whose callbacks record what they are called with.
    fn recording() -> (Harness, Calls) {
        let calls = Calls::default();
        let mut callbacks = Callbacks::default();
        for outcome in [Outcome::Committed, Outcome::Rejected] {
            let calls = Arc::clone(&calls);
            callbacks.add(outcome, None, move |settled| {
                calls.lock().unwrap().push((outcome, settled));
                async {}
            });
        }
        (Harness::with_callbacks(callbacks), calls)
    }

    #[tokio::test]
    async fn a_commit_hands_the_effects_to_on_commit_then_removes_them() {
        let (harness, calls) = recording();
        let transaction = Uuid::new_v4();
        let effect = harness.stage(transaction, "seat-1").await;
        harness
            .inner
            .settle(Outcome::Committed, transaction)
            .await
            .unwrap();
        let calls = calls.lock().unwrap().clone();
        let expected = Settled {
            transaction,
            effects: vec![effect],
        };
        assert_eq!(calls, [(Outcome::Committed, expected)]);
        assert!(harness.store.staged(transaction).await.unwrap().is_empty());
        let outcome = harness.store.outcome(transaction).await.unwrap();
        assert_eq!(outcome, Some(Outcome::Committed));
        assert_eq!(harness.inner.counters.snapshot().committed, 1);
    }

    #[tokio::test]
    async fn settling_what_staged_nothing_calls_nobody_but_remembers_the_outcome() {
        let (harness, calls) = recording();
        let transaction = Uuid::new_v4();
        harness
            .inner
            .settle(Outcome::Rejected, transaction)
            .await
            .unwrap();
        assert!(calls.lock().unwrap().is_empty());
        let outcome = harness.store.outcome(transaction).await.unwrap();
        assert_eq!(outcome, Some(Outcome::Rejected));
        assert_eq!(harness.inner.counters.snapshot().rejected, 0);
    }

    #[tokio::test]
    async fn a_panicking_callback_leaves_the_effects_staged_with_the_decision_recorded() {
        let mut callbacks = Callbacks::default();
        callbacks.add(Outcome::Committed, None, |_| async {
            panic!("ledger down")
        });
        let harness = Harness::with_callbacks(callbacks);
        let transaction = Uuid::new_v4();
        harness.stage(transaction, "seat-1").await;
        let error = harness
            .inner
            .settle(Outcome::Committed, transaction)
            .await
            .unwrap_err();
        assert!(matches!(error, SettleError::CallbackPanicked { .. }));
        assert_eq!(
            error.to_string(),
            "the Commit callback panicked: ledger down"
        );
        assert_eq!(harness.store.staged(transaction).await.unwrap().len(), 1);
        let decided = harness.store.outcome(transaction).await.unwrap();
        assert_eq!(decided, Some(Outcome::Committed));
    }

    /// Callbacks of both outcomes that record what they are called with; the commit callback
    /// panics the first time, as a process killed in the middle of it would stop.
    fn interrupted_once() -> (Harness, Calls) {
        let calls = Calls::default();
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut callbacks = Callbacks::default();
        for outcome in [Outcome::Committed, Outcome::Rejected] {
            let calls = Arc::clone(&calls);
            let interrupted = Arc::clone(&interrupted);
            callbacks.add(outcome, None, move |settled| {
                calls.lock().unwrap().push((outcome, settled));
                let first = !interrupted.swap(true, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if outcome == Outcome::Committed && first {
                        panic!("killed mid-callback");
                    }
                }
            });
        }
        (Harness::with_callbacks(callbacks), calls)
    }

    #[tokio::test]
    async fn an_interrupted_commit_is_finished_as_a_commit_even_when_a_reject_comes_next() {
        let (harness, calls) = interrupted_once();
        let transaction = Uuid::new_v4();
        let effect = harness.stage(transaction, "seat-1").await;
        let interrupted = harness.inner.settle(Outcome::Committed, transaction).await;
        assert!(interrupted.is_err());
        let decided = harness
            .inner
            .settle(Outcome::Rejected, transaction)
            .await
            .unwrap();
        assert_eq!(decided, Outcome::Committed);
        // At least once, with the same identity each time: the transaction and the effect's key.
        let expected = Settled {
            transaction,
            effects: vec![effect],
        };
        let calls = calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                (Outcome::Committed, expected.clone()),
                (Outcome::Committed, expected)
            ]
        );
        assert!(harness.store.staged(transaction).await.unwrap().is_empty());
        assert_eq!(harness.inner.counters.snapshot().rejected, 0);
    }

    #[tokio::test]
    async fn an_effect_staged_while_the_callbacks_run_is_settled_by_the_same_decision() {
        let store = Arc::new(InMemoryParticipantStore::new());
        let calls = Calls::default();
        let mut callbacks = Callbacks::default();
        {
            let calls = Arc::clone(&calls);
            let store = Arc::clone(&store);
            callbacks.add(Outcome::Rejected, None, move |settled| {
                let first = calls.lock().unwrap().is_empty();
                calls
                    .lock()
                    .unwrap()
                    .push((Outcome::Rejected, settled.clone()));
                let store = Arc::clone(&store);
                async move {
                    if first {
                        // A compensation command of the transaction, handled meanwhile.
                        let late = StagedEffect {
                            topic: "Refund".to_owned(),
                            key: "refund-1".to_owned(),
                            effect: serde_json::Value::Null,
                        };
                        let answer = CommandAnswer {
                            content: serde_json::Value::Null,
                            related_services: None,
                        };
                        let staged = store
                            .stage(settled.transaction, Uuid::new_v4(), &[late], &answer)
                            .await;
                        assert_eq!(staged.unwrap(), Staging::Staged);
                    }
                }
            });
        }
        let mut harness = Harness::with_callbacks(callbacks);
        harness.inner.store = Arc::clone(&store) as Arc<dyn ParticipantStore>;
        harness.store = Arc::clone(&store);
        let transaction = Uuid::new_v4();
        harness.stage(transaction, "seat-1").await;
        harness.store.reserve(transaction).await.unwrap();
        harness
            .inner
            .settle(Outcome::Rejected, transaction)
            .await
            .unwrap();
        let keys: Vec<Vec<String>> = calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, settled)| settled.effects.iter().map(|e| e.key.clone()).collect())
            .collect();
        assert_eq!(
            keys,
            [vec!["seat-1".to_owned()], vec!["refund-1".to_owned()]]
        );
        assert!(harness.store.staged(transaction).await.unwrap().is_empty());
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(
            harness
                .store
                .expired_reservations(later)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_is_a_store_error() {
        let harness = Harness::with_store(Arc::new(UnreachableStore));
        let error = harness
            .inner
            .settle(Outcome::Rejected, Uuid::new_v4())
            .await
            .unwrap_err();
        assert!(matches!(error, SettleError::Store(_)), "{error:?}");
    }

    #[tokio::test]
    async fn late_effects_of_an_open_transaction_stay_staged() {
        let (harness, calls) = recording();
        let transaction = Uuid::new_v4();
        harness.stage(transaction, "seat-1").await;
        harness
            .inner
            .settle_late("Book", transaction)
            .await
            .unwrap();
        assert!(calls.lock().unwrap().is_empty());
        assert_eq!(harness.store.staged(transaction).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn late_effects_of_a_rejected_transaction_go_to_on_reject() {
        let (harness, calls) = recording();
        let transaction = Uuid::new_v4();
        harness
            .inner
            .settle(Outcome::Rejected, transaction)
            .await
            .unwrap();
        let effect = harness.stage(transaction, "seat-1").await;
        harness
            .inner
            .settle_late("Book", transaction)
            .await
            .unwrap();
        let calls = calls.lock().unwrap().clone();
        let expected = Settled {
            transaction,
            effects: vec![effect],
        };
        assert_eq!(calls, [(Outcome::Rejected, expected)]);
        assert!(harness.store.staged(transaction).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn late_effects_of_a_committed_transaction_are_dropped_without_a_callback() {
        let (harness, calls) = recording();
        let transaction = Uuid::new_v4();
        harness
            .inner
            .settle(Outcome::Committed, transaction)
            .await
            .unwrap();
        harness.stage(transaction, "seat-1").await;
        harness
            .inner
            .settle_late("Book", transaction)
            .await
            .unwrap();
        assert!(calls.lock().unwrap().is_empty());
        assert!(harness.store.staged(transaction).await.unwrap().is_empty());
        assert_eq!(harness.inner.counters.snapshot().committed, 0);
    }
}
