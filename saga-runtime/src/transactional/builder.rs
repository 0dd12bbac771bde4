//! [`TransactionalParticipantBuilder`]: a participant's handlers, callbacks and settings, before
//! it starts.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::callbacks::{Callbacks, Settled};
use super::handler::{CommandContext, CommandError, ErasedHandler, erase_handler};
use super::participant::TransactionalParticipant;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::participant_store::{Outcome, ParticipantStore};

/// Builds a [`TransactionalParticipant`].
#[must_use = "call `spawn().await` to start the participant"]
pub struct TransactionalParticipantBuilder {
    pub(super) service: String,
    pub(super) broker: Arc<dyn Broker>,
    pub(super) store: Arc<dyn ParticipantStore>,
    pub(super) handlers: BTreeMap<String, ErasedHandler>,
    pub(super) callbacks: Callbacks,
    pub(super) reservation_timeout: Duration,
    pub(super) answer_retention: Duration,
    pub(super) concurrency: usize,
}

impl TransactionalParticipantBuilder {
    /// Participant `service` on `broker`, keeping staged effects in `store`, with no handler yet
    /// and the default settings.
    pub(super) fn new(
        service: String,
        broker: Arc<dyn Broker>,
        store: Arc<dyn ParticipantStore>,
    ) -> Self {
        Self {
            service,
            broker,
            store,
            handlers: BTreeMap::new(),
            callbacks: Callbacks::default(),
            reservation_timeout: Duration::from_secs(60),
            answer_retention: Duration::from_secs(24 * 60 * 60),
            concurrency: 16,
        }
    }

    /// Answers commands on `topic` with `handler`: the payload decoded as `Req`, the response
    /// encoded as the reply's content. A later handler for the same topic replaces the earlier.
    pub fn command<Req, Resp, F, Fut>(mut self, topic: impl Into<String>, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(CommandContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, CommandError>> + Send + 'static,
    {
        self.handlers.insert(topic.into(), erase_handler(handler));
        self
    }

    /// Calls `callback` with every committed transaction's staged effects.
    pub fn on_commit<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(Settled) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.callbacks.add(Outcome::Committed, None, callback);
        self
    }

    /// Calls `callback` with the effects staged by commands on `topic`, when their transaction
    /// commits (not called when that topic staged nothing).
    pub fn on_commit_of<F, Fut>(mut self, topic: impl Into<String>, callback: F) -> Self
    where
        F: Fn(Settled) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.callbacks
            .add(Outcome::Committed, Some(topic.into()), callback);
        self
    }

    /// Calls `callback` with every rejected transaction's staged effects (expired ones included).
    pub fn on_reject<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(Settled) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.callbacks.add(Outcome::Rejected, None, callback);
        self
    }

    /// Calls `callback` with the effects staged by commands on `topic`, when their transaction is
    /// rejected (not called when that topic staged nothing).
    pub fn on_reject_of<F, Fut>(mut self, topic: impl Into<String>, callback: F) -> Self
    where
        F: Fn(Settled) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.callbacks
            .add(Outcome::Rejected, Some(topic.into()), callback);
        self
    }

    /// How long a reservation may stay unsettled before the sweeper rejects it (default 60 s).
    pub fn reservation_timeout(mut self, timeout: Duration) -> Self {
        self.reservation_timeout = timeout;
        self
    }

    /// How long the answer of a command is remembered, so that a redelivery of it is answered again
    /// without running the handler (default 24 h). The sweeper forgets older answers; it should
    /// exceed the longest time the broker may take to redeliver a command.
    pub fn answer_retention(mut self, retention: Duration) -> Self {
        self.answer_retention = retention;
        self
    }

    /// How many deliveries of one topic are handled at once (default 16, at least 1). Commands run
    /// their handlers concurrently up to this; reserve, commit and reject messages of different
    /// transactions are settled concurrently, those of one transaction one at a time. With 1, a
    /// topic's messages are handled one after another, in the order the broker hands them out.
    pub fn concurrency(mut self, deliveries: usize) -> Self {
        self.concurrency = deliveries.max(1);
        self
    }

    /// Subscribes to its command topics and its reserve/commit/reject topics and starts answering.
    pub async fn spawn(self) -> Result<TransactionalParticipant, BrokerError> {
        TransactionalParticipant::start(self).await
    }
}
