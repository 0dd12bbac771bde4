//! The in-process broker: topics are in-memory queues inside one process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Acknowledge, Broker, DeadLetter, Delivery, DeliverySource, Subscription};
use crate::error::BrokerError;
use crate::message::BrokerMessage;

/// A broker inside one process: each topic delivers every message to one of its subscribers (round
/// robin); messages published while a topic has no subscriber wait in a backlog for the first one,
/// as they would in a durable queue, and messages a subscriber received but had not read when it
/// went away go back to the topic. A delivery that is nacked comes back after
/// [`REDELIVERY_DELAY`]. Cloning shares the broker.
///
/// [`with_history`](Self::with_history) keeps a copy of every published message, in order, for tests
/// and examples that show the traffic.
///
/// A delivery set aside with [`Delivery::dead_letter`] is kept in memory with its reason,
/// readable with [`dead_letters`](Self::dead_letters) (the last [`MAX_DEAD_LETTERS`] of each
/// topic), and never delivered again.
#[derive(Clone, Default)]
pub struct InProcessBroker {
    inner: Arc<Inner>,
}

/// How long a nacked delivery waits before it is delivered again.
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) const REDELIVERY_DELAY: Duration = Duration::from_millis(100);

/// How many dead letters the in-process broker keeps per topic; older ones are dropped.
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) const MAX_DEAD_LETTERS: usize = 1024;

#[derive(Default)]
struct Inner {
    topics: RwLock<HashMap<String, Arc<Mutex<Topic>>>>,
    history: Option<Mutex<Vec<BrokerMessage>>>,
    dead_letters: Mutex<HashMap<String, VecDeque<DeadLetter>>>,
}

#[derive(Default)]
struct Topic {
    subscribers: Vec<mpsc::UnboundedSender<BrokerMessage>>,
    next: usize,
    backlog: VecDeque<BrokerMessage>,
    /// Set when the topic left the map; whoever still holds it looks it up again.
    removed: bool,
}

impl Topic {
    /// Hands `message` to a live subscriber, or keeps it in the backlog.
    fn deliver(&mut self, mut message: BrokerMessage) {
        while !self.subscribers.is_empty() {
            let index = self.next % self.subscribers.len();
            match self.subscribers[index].send(message) {
                Ok(()) => {
                    self.next = index + 1;
                    return;
                }
                Err(mpsc::error::SendError(returned)) => {
                    // That subscriber is gone: forget it and try the next one.
                    self.subscribers.swap_remove(index);
                    message = returned;
                }
            }
        }
        self.backlog.push_back(message);
    }
}

impl InProcessBroker {
    /// A new, empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new broker that records every published message.
    pub fn with_history() -> Self {
        Self {
            inner: Arc::new(Inner {
                history: Some(Mutex::default()),
                ..Inner::default()
            }),
        }
    }

    /// The messages published so far, in order (empty unless made [`with_history`](Self::with_history)).
    pub fn history(&self) -> Vec<BrokerMessage> {
        self.inner
            .history
            .as_ref()
            .map(|history| lock(history).clone())
            .unwrap_or_default()
    }

    /// Forgets the recorded messages.
    pub fn clear_history(&self) {
        if let Some(history) = &self.inner.history {
            lock(history).clear();
        }
    }

    /// The number of messages waiting on `topic` for a subscriber.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn backlog(&self, topic: &str) -> usize {
        self.inner
            .existing(topic)
            .map_or(0, |topic| lock(&topic).backlog.len())
    }

    /// The dead letters of `topic` so far, oldest first (see [`Delivery::dead_letter`]); each
    /// payload is the JSON of the message.
    pub fn dead_letters(&self, topic: &str) -> Vec<DeadLetter> {
        lock(&self.inner.dead_letters)
            .get(topic)
            .map(|letters| letters.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The number of topics with subscribers or a backlog.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn topic_count(&self) -> usize {
        self.inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Inner {
    fn existing(&self, name: &str) -> Option<Arc<Mutex<Topic>>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Topic `name`, created if needed.
    fn handle(&self, name: &str) -> Arc<Mutex<Topic>> {
        match self.existing(name) {
            Some(topic) => topic,
            None => Arc::clone(
                self.topics
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(name.to_owned())
                    .or_default(),
            ),
        }
    }

    /// Runs `action` on topic `name`, creating it if needed.
    fn with_topic<T>(&self, name: &str, mut action: impl FnMut(&mut Topic) -> T) -> T {
        loop {
            let topic = self.handle(name);
            let mut topic = lock(&topic);
            if !topic.removed {
                return action(&mut topic);
            }
        }
    }

    /// Forgets topic `name` if nobody listens to it and nothing waits in it.
    fn prune(&self, name: &str) {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let Some(topic) = topics.get(name) else {
            return;
        };
        let mut guard = lock(topic);
        guard
            .subscribers
            .retain(|subscriber| !subscriber.is_closed());
        if guard.subscribers.is_empty() && guard.backlog.is_empty() {
            guard.removed = true;
            drop(guard);
            topics.remove(name);
        }
    }
}

impl std::fmt::Debug for InProcessBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBroker").finish_non_exhaustive()
    }
}

/// Locks a mutex; a panic elsewhere while holding it does not make the broker unusable, since every
/// critical section leaves the queues consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Broker for InProcessBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        if let Some(history) = &self.inner.history {
            lock(history).push(message.clone());
        }
        loop {
            let topic = self.inner.handle(&message.topic);
            let mut topic = lock(&topic);
            if !topic.removed {
                topic.deliver(message);
                return Ok(());
            }
        }
    }

    async fn subscribe(&self, name: &str) -> Result<Subscription, BrokerError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.inner.with_topic(name, |topic| {
            for message in topic.backlog.drain(..) {
                // The receiver is alive: it is in hand.
                let _ = sender.send(message);
            }
            topic.subscribers.push(sender.clone());
        });
        Ok(Subscription::new(Receiver {
            receiver,
            broker: Arc::downgrade(&self.inner),
            topic: name.to_owned(),
        }))
    }
}

struct Receiver {
    receiver: mpsc::UnboundedReceiver<BrokerMessage>,
    broker: Weak<Inner>,
    topic: String,
}

#[async_trait]
impl DeliverySource for Receiver {
    async fn next(&mut self) -> Option<Delivery> {
        let message = self.receiver.recv().await?;
        let redeliver = Redeliver {
            broker: Weak::clone(&self.broker),
        };
        Some(Delivery::with_acknowledge(message, Box::new(redeliver)))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        // Messages handed to this subscriber but never read go back to the topic.
        self.receiver.close();
        let mut unread = Vec::new();
        while let Ok(message) = self.receiver.try_recv() {
            unread.push(message);
        }
        if !unread.is_empty() {
            broker.with_topic(&self.topic, |topic| {
                topic
                    .subscribers
                    .retain(|subscriber| !subscriber.is_closed());
                for message in unread.drain(..) {
                    topic.deliver(message);
                }
            });
        }
        broker.prune(&self.topic);
    }
}

/// Acknowledges in-process deliveries: an ack needs nothing, a nack publishes the message again
/// after [`REDELIVERY_DELAY`], a dead letter is kept in the broker's memory.
struct Redeliver {
    broker: Weak<Inner>,
}

#[async_trait]
impl Acknowledge for Redeliver {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn nack(self: Box<Self>, message: BrokerMessage) -> Result<(), BrokerError> {
        let Some(inner) = self.broker.upgrade() else {
            return Err(BrokerError::Closed);
        };
        let broker = InProcessBroker { inner };
        tokio::spawn(async move {
            tokio::time::sleep(REDELIVERY_DELAY).await;
            // Publishing in process cannot fail.
            let _ = broker.publish(message).await;
        });
        Ok(())
    }

    async fn dead_letter(
        self: Box<Self>,
        message: BrokerMessage,
        reason: String,
    ) -> Result<(), BrokerError> {
        let Some(inner) = self.broker.upgrade() else {
            return Err(BrokerError::Closed);
        };
        tracing::warn!(topic = %message.topic, message.id = %message.id, %reason, "dead-lettering a message");
        let payload =
            serde_json::to_vec(&message).map_err(|error| BrokerError::Other(error.into()))?;
        let letter = DeadLetter {
            topic: message.topic,
            reason,
            payload,
        };
        let mut dead_letters = lock(&inner.dead_letters);
        let letters = dead_letters.entry(letter.topic.clone()).or_default();
        if letters.len() == MAX_DEAD_LETTERS {
            letters.pop_front();
        }
        letters.push_back(letter);
        Ok(())
    }
}
