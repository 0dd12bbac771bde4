//! The two-phase commit that closes a saga across the services that joined its transaction.
//!
//! Reserve: each service gets `_Reserve{Name}Transaction` and must answer SUCCESS. All reserved:
//! `_Commit{Name}Transaction` to each; otherwise `_Reject{Name}Transaction` to each and the commit
//! fails. Replies come back on a private reply topic and are matched to the (transaction, service)
//! they answer through the id of the message they reply to; strays and duplicates are ignored. Every
//! phase waits for its answers with a timeout, commits and rejects included: a participant that does
//! not acknowledge is reported, not silently assumed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use crate::broker::{Broker, Subscription};
use crate::error::BrokerError;
use crate::message::{BrokerMessage, SagaResponseStatus, header};

/// One phase of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) enum Phase {
    /// Ask each participant to reserve the tentative work.
    Reserve,
    /// Make it final.
    Commit,
    /// Discard it.
    Reject,
}

impl Phase {
    fn verb(self) -> &'static str {
        match self {
            Self::Reserve => "Reserve",
            Self::Commit => "Commit",
            Self::Reject => "Reject",
        }
    }

    /// The topic of this phase for `service`: `_{Phase}{Title(service)}Transaction`.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn topic(self, service: &str) -> String {
        format!("_{}{}Transaction", self.verb(), title_case(service))
    }
}

/// Python's `str.title()`: the first letter of every run of letters upper-cased, the rest lower-cased
/// (`order-service` -> `Order-Service`, `myService` -> `Myservice`, `order2ship` -> `Order2Ship`).
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) fn title_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous_is_letter = false;
    for ch in text.chars() {
        if ch.is_alphabetic() {
            if previous_is_letter {
                out.extend(ch.to_lowercase());
            } else {
                out.extend(ch.to_uppercase());
            }
            previous_is_letter = true;
        } else {
            out.push(ch);
            previous_is_letter = false;
        }
    }
    out
}

/// Why a commit failed. The transactions were rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) enum CommitError {
    /// Some participants refused the reservation or did not answer in time.
    #[error("the reservation failed for {}", .services.join(", "))]
    ReservationFailed {
        /// The services that refused or did not answer.
        services: Vec<String>,
    },
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// What a completed phase learned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) struct PhaseReport {
    /// The services that answered SUCCESS.
    pub accepted: Vec<String>,
    /// The services that answered otherwise.
    pub refused: Vec<String>,
    /// The services that did not answer before the timeout.
    pub unanswered: Vec<String>,
}

impl PhaseReport {
    /// Whether every participant answered SUCCESS.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn all_accepted(&self) -> bool {
        self.refused.is_empty() && self.unanswered.is_empty()
    }
}

/// Runs the two-phase commit for executions of one service.
#[derive(Clone)]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) struct TransactionCommitter {
    broker: Arc<dyn Broker>,
    reply_topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for TransactionCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionCommitter")
            .field("reply_topic", &self.reply_topic)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TransactionCommitter {
    /// A committer for service `service` that waits `timeout` for each phase's answers.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn new(broker: Arc<dyn Broker>, service: &str, timeout: Duration) -> Self {
        Self {
            broker,
            reply_topic: format!("{service}Reply"),
            timeout,
        }
    }

    /// Reserves every transaction, then commits them all or, if any reservation fails, rejects them
    /// all and fails.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn commit(
        &self,
        transactions: &[(Uuid, String)],
    ) -> Result<PhaseReport, CommitError> {
        let reserved = self.phase(Phase::Reserve, transactions).await?;
        if !reserved.all_accepted() {
            let mut services = reserved.refused.clone();
            services.extend(reserved.unanswered.iter().cloned());
            tracing::warn!(?services, "reservation failed; rejecting the transaction");
            self.reject(transactions).await?;
            return Err(CommitError::ReservationFailed { services });
        }
        let committed = self.phase(Phase::Commit, transactions).await?;
        if !committed.all_accepted() {
            tracing::warn!(
                refused = ?committed.refused,
                unanswered = ?committed.unanswered,
                "a participant did not acknowledge the commit"
            );
        }
        Ok(committed)
    }

    /// Rejects every transaction.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn reject(
        &self,
        transactions: &[(Uuid, String)],
    ) -> Result<PhaseReport, CommitError> {
        let report = self.phase(Phase::Reject, transactions).await?;
        if !report.all_accepted() {
            tracing::warn!(
                refused = ?report.refused,
                unanswered = ?report.unanswered,
                "a participant did not acknowledge the reject"
            );
        }
        Ok(report)
    }

    /// Sends one phase's message to every transaction and collects the answers.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn phase(
        &self,
        phase: Phase,
        transactions: &[(Uuid, String)],
    ) -> Result<PhaseReport, BrokerError> {
        let mut prepared = self.prepare(phase, transactions).await?;
        for message in prepared.take_messages() {
            self.broker.publish(message).await?;
        }
        Ok(self.collect(prepared).await)
    }

    /// Builds one phase's messages and subscribes to where their answers arrive, without sending
    /// anything: the caller stores the messages with its decision first, then publishes them, then
    /// [`collect`](Self::collect)s the answers.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn prepare(
        &self,
        phase: Phase,
        transactions: &[(Uuid, String)],
    ) -> Result<PreparedPhase, BrokerError> {
        if transactions.is_empty() {
            return Ok(PreparedPhase {
                reply_topic: String::new(),
                subscription: None,
                messages: Vec::new(),
                pending: BTreeMap::new(),
            });
        }
        // A private topic per phase: answers of earlier phases or other executions never land here.
        let reply_topic = format!("{}.{}", self.reply_topic, Uuid::new_v4().simple());
        let subscription = self.broker.subscribe_private(&reply_topic).await?;
        let mut pending = BTreeMap::new();
        let mut messages = Vec::with_capacity(transactions.len());
        for (transaction, service) in transactions {
            let message =
                BrokerMessage::new(phase.topic(service), Value::String(transaction.to_string()))
                    .with_header(header::TRANSACTION, transaction.to_string())
                    .with_header(header::SAGA, transaction.to_string())
                    .with_reply_to(reply_topic.clone());
            pending.insert(message.id, service.clone());
            messages.push(message);
        }
        Ok(PreparedPhase {
            reply_topic,
            subscription: Some(subscription),
            messages,
            pending,
        })
    }

    /// Waits (up to the timeout) for the answers to a prepared phase whose messages were sent.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn collect(&self, prepared: PreparedPhase) -> PhaseReport {
        let PreparedPhase {
            reply_topic,
            subscription,
            mut pending,
            ..
        } = prepared;
        let mut report = PhaseReport::default();
        let Some(mut subscription) = subscription else {
            return report;
        };
        let deadline = Instant::now() + self.timeout;
        while !pending.is_empty() {
            let delivery = match tokio::time::timeout_at(deadline, subscription.next()).await {
                Ok(Some(delivery)) => delivery,
                Ok(None) | Err(_) => break,
            };
            let answer = delivery.message();
            let matched = answer
                .correlation_id
                .and_then(|request| pending.remove(&request));
            let status = answer.status;
            // Acknowledge whether or not it matched: a stray answer is never useful again.
            let _ = delivery.ack().await;
            let Some(service) = matched else {
                tracing::debug!(topic = %reply_topic, "ignored an unmatched transaction answer");
                continue;
            };
            if status == Some(SagaResponseStatus::Success) {
                report.accepted.push(service);
            } else {
                report.refused.push(service);
            }
        }
        report.unanswered = pending.into_values().collect();
        report.unanswered.sort();
        report.accepted.sort();
        report.refused.sort();
        report
    }
}

/// One phase of the two-phase commit, built but not sent (see [`TransactionCommitter::prepare`]).
#[derive(Debug)]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) struct PreparedPhase {
    reply_topic: String,
    subscription: Option<Subscription>,
    messages: Vec<BrokerMessage>,
    pending: BTreeMap<Uuid, String>,
}

impl PreparedPhase {
    /// Takes the messages to send (once; later calls return none).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn take_messages(&mut self) -> Vec<BrokerMessage> {
        std::mem::take(&mut self.messages)
    }
}

#[cfg(test)]
mod tests {
    use super::title_case;

    #[test]
    fn title_case_follows_python() {
        assert_eq!(title_case("order"), "Order");
        assert_eq!(title_case("myService"), "Myservice");
        assert_eq!(title_case("order-service"), "Order-Service");
        assert_eq!(title_case("order2ship"), "Order2Ship");
        assert_eq!(title_case("ORDER_stock"), "Order_Stock");
        assert_eq!(title_case(""), "");
    }
}
