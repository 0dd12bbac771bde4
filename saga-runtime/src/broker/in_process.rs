//! The in-process broker: topics are in-memory queues inside one process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Broker, Delivery, DeliverySource, Subscription};
use crate::error::BrokerError;
use crate::message::BrokerMessage;

/// A broker inside one process: each topic delivers every message to one of its subscribers (round
/// robin); messages published while a topic has no subscriber wait in a backlog for the first one,
/// as they would in a durable queue. Cloning shares the broker.
///
/// [`with_history`](Self::with_history) keeps a copy of every published message, in order, for tests
/// and examples that show the traffic.
#[derive(Clone, Default)]
pub struct InProcessBroker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    topics: Mutex<HashMap<String, Topic>>,
    history: Option<Mutex<Vec<BrokerMessage>>>,
}

#[derive(Default)]
struct Topic {
    subscribers: Vec<mpsc::UnboundedSender<BrokerMessage>>,
    next: usize,
    backlog: VecDeque<BrokerMessage>,
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
                topics: Mutex::default(),
                history: Some(Mutex::default()),
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
    pub fn backlog(&self, topic: &str) -> usize {
        lock(&self.inner.topics)
            .get(topic)
            .map_or(0, |topic| topic.backlog.len())
    }
}

impl std::fmt::Debug for InProcessBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBroker").finish_non_exhaustive()
    }
}

/// Locks a mutex; a panic elsewhere while holding it does not make the broker unusable, since every
/// critical section leaves the maps consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Broker for InProcessBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        if let Some(history) = &self.inner.history {
            lock(history).push(message.clone());
        }
        let mut topics = lock(&self.inner.topics);
        let topic = topics.entry(message.topic.clone()).or_default();
        let mut message = message;
        while !topic.subscribers.is_empty() {
            let index = topic.next % topic.subscribers.len();
            match topic.subscribers[index].send(message) {
                Ok(()) => {
                    topic.next = index + 1;
                    return Ok(());
                }
                Err(mpsc::error::SendError(returned)) => {
                    // That subscriber is gone: forget it and try the next one.
                    topic.subscribers.swap_remove(index);
                    message = returned;
                }
            }
        }
        topic.backlog.push_back(message);
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut topics = lock(&self.inner.topics);
        let topic = topics.entry(topic.to_owned()).or_default();
        for message in topic.backlog.drain(..) {
            // The receiver is alive: it is in hand.
            let _ = sender.send(message);
        }
        topic.subscribers.push(sender);
        Ok(Subscription::new(Receiver(receiver)))
    }
}

struct Receiver(mpsc::UnboundedReceiver<BrokerMessage>);

#[async_trait]
impl DeliverySource for Receiver {
    async fn next(&mut self) -> Option<Delivery> {
        self.0.recv().await.map(Delivery::unacknowledged)
    }
}
