//! The broker: publish and subscribe with headers and reply topics.
//!
//! The engine needs two operations, so that is the whole trait; a networked broker adds its own
//! acknowledgement to each [`Delivery`]. The in-process broker is the embedded default;
//! `NatsBroker` (feature `nats`) runs on NATS JetStream. [`conformance::check`] checks a broker
//! against the contract.

pub mod conformance;
mod in_process;
#[cfg(feature = "nats")]
mod nats;

use async_trait::async_trait;

pub use in_process::{InProcessBroker, REDELIVERY_DELAY};
#[cfg(feature = "nats")]
pub use nats::{
    DEAD_LETTER_REASON, DEAD_LETTER_TOPIC, DEFAULT_MAX_MESSAGE_BYTES, DeadLetter, NatsBroker,
    NatsBrokerBuilder,
};

use crate::error::BrokerError;
use crate::message::BrokerMessage;

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
}

/// One received message, to be acknowledged after it was handled.
pub struct Delivery {
    message: BrokerMessage,
    acknowledge: Option<Box<dyn Acknowledge>>,
}

impl Delivery {
    /// A delivery that needs no acknowledgement.
    pub fn unacknowledged(message: BrokerMessage) -> Self {
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
    pub fn into_message(self) -> BrokerMessage {
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
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}
