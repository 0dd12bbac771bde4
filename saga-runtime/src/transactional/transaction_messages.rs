//! The saga committer's messages to the participant: reserve, commit and reject of one
//! transaction, each answered SUCCESS, ERROR or SYSTEM_ERROR.

use serde_json::Value;
use uuid::Uuid;

use super::delivery::Handled;
use super::participant::Inner;
use super::stats::bump;
use crate::committer::Phase;
use crate::message::{BrokerMessage, SagaResponseStatus, header};
use crate::participant_store::{Outcome, ParticipantStoreError};

/// A reply's status and content.
type Answer = (SagaResponseStatus, Value);

impl Inner {
    /// Handles the `phase` message `message`, serialized with every other reserve, commit, reject
    /// and sweep of its transaction, and answers it.
    pub(super) async fn transaction_message(
        &self,
        phase: Phase,
        message: &BrokerMessage,
    ) -> Handled {
        let Some(transaction) = transaction_of(message) else {
            bump(&self.counters.undecodable);
            tracing::warn!(topic = %message.topic, id = %message.id, "a transaction message without a transaction id");
            let content = Value::String("no transaction id".to_owned());
            return self
                .reply(message, SagaResponseStatus::Error, content)
                .await;
        };
        let _settling = self.lock_settlement(transaction).await;
        let (status, content) = match phase {
            // A reserve that comes after the transaction settled (a redelivery) reserves nothing
            // anew: nobody would settle that reservation.
            Phase::Reserve => match self.store.outcome(transaction).await {
                Ok(Some(outcome)) => answer_settled_reserve(transaction, outcome),
                Ok(None) => self.reserve(transaction).await,
                Err(error) => {
                    tracing::error!(%transaction, %error, "reservation failed");
                    (
                        SagaResponseStatus::SystemError,
                        Value::String(error.to_string()),
                    )
                }
            },
            // A commit of a transaction this service rejected (its reservation expired before the
            // decision came) cannot be honoured: its effects went to `on_reject`. Say so, rather
            // than acknowledge a commit that applied nothing.
            Phase::Commit
                if matches!(
                    self.store.outcome(transaction).await,
                    Ok(Some(Outcome::Rejected))
                ) =>
            {
                tracing::error!(%transaction, "a commit of a transaction rejected here (its reservation expired first): nothing is applied");
                let content =
                    format!("transaction {transaction} was rejected here before the commit came");
                (SagaResponseStatus::Error, Value::String(content))
            }
            Phase::Commit => {
                self.answer_settlement(Outcome::Committed, transaction)
                    .await
            }
            Phase::Reject => self.answer_settlement(Outcome::Rejected, transaction).await,
        };
        self.reply(message, status, content).await
    }

    /// Settles `transaction` as `outcome`: SUCCESS; ERROR when another decision was recorded first
    /// (the transaction is settled by that one); SYSTEM_ERROR when it could not be settled (the
    /// committer asks again). The caller holds the transaction's lock.
    async fn answer_settlement(&self, outcome: Outcome, transaction: Uuid) -> Answer {
        match self.settle(outcome, transaction).await {
            Ok(decided) if decided == outcome => (SagaResponseStatus::Success, Value::Null),
            // Asked to reject a transaction whose commit was decided here: it stays committed.
            Ok(decided) => {
                let content = format!("transaction {transaction} was decided {decided:?} here");
                (SagaResponseStatus::Error, Value::String(content))
            }
            Err(error) => (
                SagaResponseStatus::SystemError,
                Value::String(error.to_string()),
            ),
        }
    }

    /// Reserves `transaction` in the store, if it has anything staged. The caller holds the
    /// transaction's lock.
    ///
    /// A transaction with nothing staged holds no key, so its reservation could refuse nobody and
    /// be refused by nobody; recording it would only leave a reservation behind when the reserve is
    /// a redelivery that arrives after the commit or the reject took the effects (the broker hands
    /// out again a delivery whose acknowledgement is late), which nobody settles any more.
    async fn reserve(&self, transaction: Uuid) -> Answer {
        let reserved = match self.store.staged(transaction).await {
            Ok(staged) if staged.is_empty() => Ok(()),
            Ok(_) => self.store.reserve(transaction).await,
            Err(error) => Err(error),
        };
        match reserved {
            Ok(()) => {
                bump(&self.counters.reserved);
                (SagaResponseStatus::Success, Value::Null)
            }
            Err(error @ ParticipantStoreError::Conflict { .. }) => {
                bump(&self.counters.refused);
                tracing::info!(%transaction, %error, "reservation refused");
                (SagaResponseStatus::Error, Value::String(error.to_string()))
            }
            Err(error) => {
                tracing::error!(%transaction, %error, "reservation failed");
                (
                    SagaResponseStatus::SystemError,
                    Value::String(error.to_string()),
                )
            }
        }
    }
}

/// The answer to a reserve of a transaction that settled already (a redelivery): how it settled,
/// with nothing reserved.
fn answer_settled_reserve(transaction: Uuid, outcome: Outcome) -> Answer {
    match outcome {
        Outcome::Committed => (SagaResponseStatus::Success, Value::Null),
        Outcome::Rejected => (
            SagaResponseStatus::Error,
            Value::String(format!("transaction {transaction} was rejected")),
        ),
    }
}

/// The transaction a reserve/commit/reject message is about: its `transaction` header, else its
/// payload.
fn transaction_of(message: &BrokerMessage) -> Option<Uuid> {
    match message.headers.get(header::TRANSACTION) {
        Some(value) => Uuid::parse_str(value).ok(),
        None => message
            .payload
            .as_str()
            .and_then(|value| Uuid::parse_str(value).ok()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::participant_store::ParticipantStore;
    use crate::transactional::test_support::Harness;

    fn phase_message(phase: Phase, transaction: Uuid) -> BrokerMessage {
        BrokerMessage::new(phase.topic(Harness::SERVICE), Value::Null)
            .with_header(header::TRANSACTION, transaction.to_string())
            .with_reply_to("Replies")
    }

    /// Sends `phase` for `transaction` and returns the reply's status.
    async fn send(harness: &Harness, phase: Phase, transaction: Uuid) -> SagaResponseStatus {
        harness.broker.clear_history();
        let message = phase_message(phase, transaction);
        let handled = harness.inner.transaction_message(phase, &message).await;
        assert_eq!(handled, Handled::Done);
        harness.only_reply().status.expect("a reply status")
    }

    #[test]
    fn the_transaction_is_read_from_the_header_else_from_the_payload() {
        let id = Uuid::new_v4();
        let by_header =
            BrokerMessage::new("T", Value::Null).with_header(header::TRANSACTION, id.to_string());
        assert_eq!(transaction_of(&by_header), Some(id));
        let by_payload = BrokerMessage::new("T", Value::String(id.to_string()));
        assert_eq!(transaction_of(&by_payload), Some(id));
        assert_eq!(transaction_of(&BrokerMessage::new("T", Value::Null)), None);
    }

    #[test]
    fn a_malformed_transaction_header_is_not_overridden_by_the_payload() {
        let message = BrokerMessage::new("T", Value::String(Uuid::new_v4().to_string()))
            .with_header(header::TRANSACTION, "not-a-uuid");
        assert_eq!(transaction_of(&message), None);
    }

    #[test]
    fn a_settled_reserve_answers_how_the_transaction_settled() {
        let id = Uuid::new_v4();
        let committed = answer_settled_reserve(id, Outcome::Committed);
        assert_eq!(committed, (SagaResponseStatus::Success, Value::Null));
        let (status, content) = answer_settled_reserve(id, Outcome::Rejected);
        assert_eq!(status, SagaResponseStatus::Error);
        assert_eq!(
            content,
            Value::String(format!("transaction {id} was rejected"))
        );
    }

    #[tokio::test]
    async fn a_message_without_transaction_is_refused_and_counted_undecodable() {
        let harness = Harness::new();
        let message = BrokerMessage::new("T", Value::Null).with_reply_to("Replies");
        let handled = harness
            .inner
            .transaction_message(Phase::Commit, &message)
            .await;
        assert_eq!(handled, Handled::Done);
        assert_eq!(harness.only_reply().status, Some(SagaResponseStatus::Error));
        assert_eq!(harness.inner.counters.snapshot().undecodable, 1);
    }

    #[tokio::test]
    async fn a_reserve_of_nothing_staged_succeeds_and_leaves_no_reservation() {
        let harness = Harness::new();
        let status = send(&harness, Phase::Reserve, Uuid::new_v4()).await;
        assert_eq!(status, SagaResponseStatus::Success);
        let later = SystemTime::now() + Duration::from_secs(60);
        let left = harness.store.expired_reservations(later).await.unwrap();
        assert!(left.is_empty(), "nothing for the sweeper: {left:?}");
    }

    #[tokio::test]
    async fn a_reserve_of_a_held_key_is_refused() {
        let harness = Harness::new();
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        harness.stage(first, "seat-1").await;
        harness.stage(second, "seat-1").await;
        assert_eq!(
            send(&harness, Phase::Reserve, first).await,
            SagaResponseStatus::Success
        );
        assert_eq!(
            send(&harness, Phase::Reserve, second).await,
            SagaResponseStatus::Error
        );
        let stats = harness.inner.counters.snapshot();
        assert_eq!((stats.reserved, stats.refused), (1, 1));
    }

    #[tokio::test]
    async fn a_commit_of_a_transaction_rejected_here_is_answered_error() {
        let harness = Harness::new();
        let transaction = Uuid::new_v4();
        harness.stage(transaction, "seat-1").await;
        assert_eq!(
            send(&harness, Phase::Reject, transaction).await,
            SagaResponseStatus::Success
        );
        assert_eq!(
            send(&harness, Phase::Commit, transaction).await,
            SagaResponseStatus::Error
        );
        // A reject again is harmless: it is acknowledged and changes nothing.
        assert_eq!(
            send(&harness, Phase::Reject, transaction).await,
            SagaResponseStatus::Success
        );
        assert_eq!(harness.inner.counters.snapshot().rejected, 1);
    }

    #[tokio::test]
    async fn a_reserve_after_the_commit_reserves_nothing_anew() {
        let harness = Harness::new();
        let transaction = Uuid::new_v4();
        harness.stage(transaction, "seat-1").await;
        assert_eq!(
            send(&harness, Phase::Reserve, transaction).await,
            SagaResponseStatus::Success
        );
        assert_eq!(
            send(&harness, Phase::Commit, transaction).await,
            SagaResponseStatus::Success
        );
        assert_eq!(
            send(&harness, Phase::Reserve, transaction).await,
            SagaResponseStatus::Success
        );
        assert_eq!(harness.inner.counters.snapshot().reserved, 1);
    }
}
