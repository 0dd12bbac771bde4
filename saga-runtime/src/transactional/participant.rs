//! [`TransactionalParticipant`]: the handle of a running participant (starting it, reading it,
//! stopping it), and the state its tasks share.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::builder::TransactionalParticipantBuilder;
use super::callbacks::Callbacks;
use super::delivery::serve;
use super::registration::{self, CommandRegistration, DuplicateTopic};
use super::stats::{Counters, ParticipantStats};
use super::sweeper::spawn_sweeper;
use crate::broker::{Broker, Delivery};
use crate::committer::Phase;
use crate::error::BrokerError;
use crate::locks::ExecutionLocks;
use crate::participant_store::ParticipantStore;

/// A running transactional participant; [`shutdown`](Self::shutdown) stops it gracefully, dropping
/// it stops it at once.
pub struct TransactionalParticipant {
    inner: Arc<Inner>,
    /// Turned true to stop the subscription loops and the sweeper.
    stop: watch::Sender<bool>,
    /// The subscription loops and the sweeper, until they are awaited by a shutdown.
    tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// What the tasks of one participant share: where it answers, where it keeps its effects, what it
/// calls when they settle, and what it counted.
pub(super) struct Inner {
    pub(super) service: String,
    pub(super) broker: Arc<dyn Broker>,
    pub(super) store: Arc<dyn ParticipantStore>,
    pub(super) callbacks: Callbacks,
    /// One reserve, commit, reject or sweep of a transaction at a time.
    pub(super) settling: ExecutionLocks,
    pub(super) counters: Counters,
}

impl Inner {
    /// The state of participant `service`, nothing counted yet.
    pub(super) fn new(
        service: String,
        broker: Arc<dyn Broker>,
        store: Arc<dyn ParticipantStore>,
        callbacks: Callbacks,
    ) -> Self {
        Self {
            service,
            broker,
            store,
            callbacks,
            settling: ExecutionLocks::default(),
            counters: Counters::default(),
        }
    }
}

impl TransactionalParticipant {
    /// Starts building participant `service` on `broker`, keeping staged effects in `store`.
    pub fn builder(
        service: impl Into<String>,
        broker: Arc<dyn Broker>,
        store: Arc<dyn ParticipantStore>,
    ) -> TransactionalParticipantBuilder {
        TransactionalParticipantBuilder::new(service.into(), broker, store)
    }

    /// Starts building participant `service` with every handler registered by
    /// `#[transactional_command]` in the crates linked into this binary (in topic order), with their
    /// callbacks. More handlers, callbacks and settings may be added to the builder.
    ///
    /// Only crates linked into the binary are seen (a crate of handlers the binary never references
    /// by name must be named with `use my_handlers as _;`).
    pub fn from_inventory(
        service: impl Into<String>,
        broker: Arc<dyn Broker>,
        store: Arc<dyn ParticipantStore>,
    ) -> Result<TransactionalParticipantBuilder, DuplicateTopic> {
        Self::from_inventory_where(service, broker, store, |_| true)
    }

    /// As [`from_inventory`](Self::from_inventory), with only the registered handlers `filter`
    /// accepts (for a binary that holds the handlers of several services). Two accepted handlers
    /// for one topic are refused.
    pub fn from_inventory_where(
        service: impl Into<String>,
        broker: Arc<dyn Broker>,
        store: Arc<dyn ParticipantStore>,
        filter: impl Fn(&CommandRegistration) -> bool,
    ) -> Result<TransactionalParticipantBuilder, DuplicateTopic> {
        let registrations = registration::registered(filter)?;
        let builder = Self::builder(service, broker, store);
        Ok(registrations
            .into_iter()
            .fold(builder, |builder, registration| {
                registration.register(builder)
            }))
    }

    /// Subscribes to the command topics of `builder` and to its service's reserve/commit/reject
    /// topics, serving each in a task of its own, and starts the sweeper.
    pub(super) async fn start(
        builder: TransactionalParticipantBuilder,
    ) -> Result<Self, BrokerError> {
        let TransactionalParticipantBuilder {
            service,
            broker,
            store,
            handlers,
            callbacks,
            reservation_timeout,
            answer_retention,
            concurrency,
        } = builder;
        let inner = Arc::new(Inner::new(service, broker, store, callbacks));
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        for (topic, handler) in handlers {
            let subscription = inner.broker.subscribe(&topic).await?;
            let (inner, topic) = (Arc::clone(&inner), Arc::<str>::from(topic));
            let handle = move |delivery: Delivery| {
                let (inner, handler, topic) =
                    (Arc::clone(&inner), Arc::clone(&handler), Arc::clone(&topic));
                async move {
                    let handled = inner.command(&topic, &handler, delivery.message()).await;
                    (delivery, handled)
                }
            };
            let serving = serve(subscription, stop.subscribe(), concurrency, handle);
            tasks.push(tokio::spawn(serving));
        }
        for phase in [Phase::Reserve, Phase::Commit, Phase::Reject] {
            let subscription = inner.broker.subscribe(&phase.topic(&inner.service)).await?;
            let inner = Arc::clone(&inner);
            let handle = move |delivery: Delivery| {
                let inner = Arc::clone(&inner);
                async move {
                    let handled = inner.transaction_message(phase, delivery.message()).await;
                    (delivery, handled)
                }
            };
            let serving = serve(subscription, stop.subscribe(), concurrency, handle);
            tasks.push(tokio::spawn(serving));
        }
        tasks.push(spawn_sweeper(
            Arc::clone(&inner),
            stop.subscribe(),
            reservation_timeout,
            answer_retention,
        ));
        Ok(Self {
            inner,
            stop,
            tasks: tokio::sync::Mutex::new(tasks),
        })
    }

    /// The service name.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn service(&self) -> &str {
        &self.inner.service
    }

    /// Its store.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn store(&self) -> &Arc<dyn ParticipantStore> {
        &self.inner.store
    }

    /// Stops gracefully: takes no new delivery on any of its subscriptions (they are dropped, so a
    /// networked broker gives their messages to the other instances), lets the deliveries in hand
    /// finish (handler, reply, acknowledgement) and a sweep under way complete, stops the sweeper,
    /// and returns once all of it is done. Calling it again (or at once from elsewhere) waits for the
    /// same end and changes nothing.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let mut tasks = self.tasks.lock().await;
        // Each handle leaves the list once finished: a shutdown that is itself cancelled leaves the
        // rest to the next one, or to the drop, to end.
        while let Some(task) = tasks.last_mut() {
            if let Err(error) = task.await {
                if error.is_panic() {
                    tracing::error!(service = %self.inner.service, %error, "a participant task panicked");
                }
            }
            tasks.pop();
        }
    }

    /// What it handled so far.
    pub fn stats(&self) -> ParticipantStats {
        self.inner.counters.snapshot()
    }
}

impl Drop for TransactionalParticipant {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().iter() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for TransactionalParticipant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalParticipant")
            .field("service", &self.inner.service)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
