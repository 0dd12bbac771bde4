//! The broker: publish and subscribe with headers and reply topics.
//!
//! The engine needs two operations, so that is the whole trait; a networked broker adds its own
//! acknowledgement to each [`Delivery`]. The in-process broker is the embedded default;
//! `NatsBroker` (feature `nats`) runs on NATS JetStream. The conformance suite of `saga-testkit`
//! (`saga_testkit::conformance::broker::check`) checks a broker against the contract.
//!
//! A delivery is settled one of three ways: [`ack`](Delivery::ack) (handled),
//! [`nack`](Delivery::nack) (deliver it again later) or [`dead_letter`](Delivery::dead_letter)
//! (it can never be handled: set it aside, with the reason, for a human).

mod error;
mod in_process;
#[cfg(feature = "nats")]
mod nats;

use async_trait::async_trait;

#[cfg(feature = "nats")]
pub use self::nats::{NatsBroker, NatsBrokerBuilder};
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) use crate::message::header;
pub use crate::{
    broker::{error::BrokerError, in_process::InProcessBroker},
    message::{BrokerMessage, Headers},
};
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) use in_process::{MAX_DEAD_LETTERS, REDELIVERY_DELAY};
#[cfg(feature = "nats")]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) use nats::{DEAD_LETTER_REASON, DEAD_LETTER_TOPIC};

/// Publish/subscribe transport for saga messages.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes `message` on its topic. Returns once the broker has taken it.
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError>;

    /// Subscribes to `topic`. Subscribers of one topic compete: each message goes to one of them
    /// (the instances of one service share its topics).
    async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError>;

    /// Subscribes to a topic only this subscriber reads, for a short while (answers to one
    /// request). A networked broker keeps nothing for it after the subscription is dropped; by
    /// default it is an ordinary [`subscribe`](Self::subscribe).
    async fn subscribe_private(&self, topic: &str) -> Result<Subscription, BrokerError> {
        self.subscribe(topic).await
    }
}

crate::shared::shared_port!(Broker);

/// Where a subscription's deliveries come from; implemented by each broker.
#[async_trait]
pub trait DeliverySource: Send {
    /// The next delivery, or `None` once the subscription ended.
    async fn next(&mut self) -> Option<Delivery>;
}

/// A stream of deliveries from one topic. Dropping it unsubscribes.
pub struct Subscription {
    source: Box<dyn DeliverySource>,
}

impl Subscription {
    /// Wraps a broker's delivery source.
    pub fn new(source: impl DeliverySource + 'static) -> Self {
        Self {
            source: Box::new(source),
        }
    }

    /// The next delivery, or `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.source.next().await
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// How a broker learns that a delivery was handled.
#[async_trait]
pub trait Acknowledge: Send {
    /// The message was handled; do not deliver it again.
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    /// The message was not handled; deliver it again later. The message is handed back for brokers
    /// that redeliver it themselves.
    async fn nack(self: Box<Self>, message: BrokerMessage) -> Result<(), BrokerError>;

    /// The message can never be handled (`reason` says why): set it aside where a human can read
    /// it, and do not deliver it again. A broker that keeps dead letters stores it first and, if it
    /// cannot, asks for a redelivery instead and returns the error. By default the broker keeps no
    /// dead letters: the message is logged with the reason and acknowledged (dropped).
    async fn dead_letter(
        self: Box<Self>,
        message: BrokerMessage,
        reason: String,
    ) -> Result<(), BrokerError> {
        tracing::warn!(
            topic = %message.topic,
            message.id = %message.id,
            %reason,
            "dropping a message that can never be handled (this broker keeps no dead letters)"
        );
        self.ack().await
    }
}

/// A message set aside instead of being handled (see [`Delivery::dead_letter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The topic it was published on.
    pub topic: String,
    /// Why it was set aside.
    pub reason: String,
    /// Its payload as it arrived: the JSON of a [`BrokerMessage`], unless it was set aside for not
    /// being one.
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// The message, if the payload is one.
    pub fn message(&self) -> Option<BrokerMessage> {
        serde_json::from_slice(&self.payload).ok()
    }
}

/// One received message, to be acknowledged after it was handled.
pub struct Delivery {
    message: BrokerMessage,
    acknowledge: Option<Box<dyn Acknowledge>>,
}

impl Delivery {
    /// A delivery that needs no acknowledgement.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn unacknowledged(message: BrokerMessage) -> Self {
        Self {
            message,
            acknowledge: None,
        }
    }

    /// A delivery acknowledged through `acknowledge`.
    pub fn with_acknowledge(message: BrokerMessage, acknowledge: Box<dyn Acknowledge>) -> Self {
        Self {
            message,
            acknowledge: Some(acknowledge),
        }
    }

    /// The message.
    pub fn message(&self) -> &BrokerMessage {
        &self.message
    }

    /// Takes the message out, acknowledging nothing.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn into_message(self) -> BrokerMessage {
        self.message
    }

    /// Acknowledges the delivery.
    pub async fn ack(self) -> Result<(), BrokerError> {
        match self.acknowledge {
            Some(acknowledge) => acknowledge.ack().await,
            None => Ok(()),
        }
    }

    /// Asks for a redelivery.
    pub async fn nack(self) -> Result<(), BrokerError> {
        match self.acknowledge {
            Some(acknowledge) => acknowledge.nack(self.message).await,
            None => Ok(()),
        }
    }

    /// Sets the message aside for good because it can never be handled: the broker keeps it as a
    /// dead letter with `reason` (or, if it keeps none, logs it and drops it) and does not deliver
    /// it again. See [`Acknowledge::dead_letter`].
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<(), BrokerError> {
        let reason = reason.into();
        match self.acknowledge {
            Some(acknowledge) => acknowledge.dead_letter(self.message, reason).await,
            None => {
                tracing::warn!(
                    topic = %self.message.topic,
                    message.id = %self.message.id,
                    %reason,
                    "dropping a message that can never be handled"
                );
                Ok(())
            }
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}
