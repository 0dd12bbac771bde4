//! Acknowledging a JetStream delivery: the ack, nack and dead letter of one message, and the
//! keep-alive that extends its ack wait while it is in hand.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::super::Acknowledge;
use super::{Inner, boxed};
use crate::error::BrokerError;
use crate::message::BrokerMessage;

/// Tells the server, every half ack wait, that `message` is still being handled, so that a
/// delivery whose handling outlasts the ack wait (a reply that carries a saga through its
/// two-phase commit, a command queued behind a slow one) is not handed to another subscriber
/// meanwhile. Stops when the delivery is settled or dropped; a subscriber that dies stops it too,
/// and the message then comes again after the ack wait.
pub(super) fn keep_alive(message: jetstream::Message, ack_wait: Duration) -> JoinHandle<()> {
    let period = (ack_wait / 2).max(Duration::from_millis(50));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            if let Err(error) = message.ack_with(AckKind::Progress).await {
                tracing::debug!(%error, "could not extend a delivery's ack wait");
            }
        }
    })
}

/// Acknowledges a JetStream delivery: an ack waits for the server's confirmation, a nack asks for a
/// redelivery after the delay, a dead letter is stored under the topic's dead letters, then acked.
/// Until then, [`keep_alive`] extends its ack wait.
pub(super) struct NatsAcknowledge {
    pub(super) message: jetstream::Message,
    pub(super) inner: Arc<Inner>,
    pub(super) topic: String,
    pub(super) keep_alive: JoinHandle<()>,
}

impl Drop for NatsAcknowledge {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

#[async_trait]
impl Acknowledge for NatsAcknowledge {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.keep_alive.abort();
        self.message.double_ack().await.map_err(boxed)
    }

    async fn nack(self: Box<Self>, _message: BrokerMessage) -> Result<(), BrokerError> {
        self.keep_alive.abort();
        self.message
            .ack_with(AckKind::Nak(Some(self.inner.settings.redelivery_delay)))
            .await
            .map_err(boxed)
    }

    async fn dead_letter(
        self: Box<Self>,
        _message: BrokerMessage,
        reason: String,
    ) -> Result<(), BrokerError> {
        tracing::warn!(topic = %self.topic, %reason, "dead-lettering a message at its subscriber's request");
        self.keep_alive.abort();
        let (message, inner, topic) = (
            self.message.clone(),
            Arc::clone(&self.inner),
            self.topic.clone(),
        );
        drop(self);
        inner.dead_letter(&topic, message, &reason).await
    }
}
