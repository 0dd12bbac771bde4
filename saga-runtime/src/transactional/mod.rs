//! The participant side of the two-phase commit: commands whose effects stay tentative until their
//! transaction is reserved and committed, or rejected.
//!
//! A [`TransactionalParticipant`] answers commands with handlers registered per topic. A command
//! carries the `transactions` header (ids, comma-separated, outermost first); it runs inside the
//! innermost one. What its handler [stages](CommandContext::stage) is kept in a
//! [`ParticipantStore`] under that transaction, each effect under a conflict key, and nothing is
//! applied yet. Then the saga's committer speaks to the service's transaction topics:
//!
//! - `_Reserve{Service}Transaction`: SUCCESS, unless another reserved transaction holds one of the
//!   transaction's keys (ERROR). The answer is remembered: a repeated reserve answers the same. A
//!   transaction with nothing staged (it staged nothing, or it was settled already: a reserve
//!   redelivered after the commit) holds no key: it is answered SUCCESS and no reservation is
//!   recorded, so none is left behind for the sweeper.
//! - `_Commit{Service}Transaction`: the `on_commit` callbacks receive the staged effects, which are
//!   then removed; SUCCESS.
//! - `_Reject{Service}Transaction`: the same with the `on_reject` callbacks.
//!
//! Commit and reject of a transaction that staged nothing (or was settled already) answer SUCCESS and
//! call nothing, so a redelivered commit never applies an effect twice. A reservation that nobody
//! settles within the [reservation timeout](TransactionalParticipantBuilder::reservation_timeout) is
//! rejected by a sweeper task; a commit that comes after that applies nothing and is answered
//! ERROR (the orchestrator logs that the participant did not acknowledge the commit).
//!
//! The store remembers how each transaction settled ([`ParticipantStore::outcome`]), as long as it
//! remembers answers, so that a message arriving after the settlement starts nothing the
//! settlement would have had to end: a command of a rejected transaction (a compensation command is
//! sent with the reject, on another topic, and may be handled after it) has its effects rejected at
//! once, through the `on_reject` callbacks; a command of a committed transaction (only a redelivery
//! whose answer was forgotten can come that late) has its effects dropped; a reserve (a redelivery)
//! is answered by the outcome and reserves nothing.
//!
//! A handler that fails with [`CommandError::Business`] is answered ERROR (400), with
//! [`CommandError::System`] or a panic SYSTEM_ERROR (500); a failed command stages nothing. A
//! reply carries the request's `saga` header and its `related_services` with this service added
//! (and the services of any saga the handler ran, see [`RequestHeaders`]).
//!
//! Commands are deduplicated by message id. A successful command's answer (its reply content, and
//! the related services its handler's sagas reported) is recorded with its staged effects, in one
//! atomic step; a command whose id was answered already (a redelivery: the reply was sent but the
//! acknowledgement was lost, or the broker redelivered it) is answered the same again without running
//! its handler, and stages nothing ([`ParticipantStats::duplicates`]). Answers outlive the settlement
//! of their transaction, so a redelivery after the commit does not stage again, until they are older
//! than the [answer retention](TransactionalParticipantBuilder::answer_retention) (24 h by default):
//! the sweeper then forgets them, and a command redelivered later runs again. A failed command is not
//! remembered: it stages nothing, and a redelivery runs it again.
//!
//! Every delivery is acknowledged once handled and answered. When the answer cannot be published,
//! or the store cannot be reached while a command is handled, the delivery is handed back for a
//! redelivery instead (a command whose answer is remembered is answered again, one that staged
//! nothing runs again), so neither a broker hiccup nor a database outage turns into a reply the
//! saga never gets or a business refusal. A message that cannot be understood (no valid
//! `transactions` header on a command, a payload the handler's request type does not decode, no
//! transaction id on a reserve/commit/reject) changes nothing: it is logged, counted in
//! [`ParticipantStats::undecodable`], answered SYSTEM_ERROR (commands) or ERROR (transaction
//! messages) when it names a reply topic, and acknowledged.
//!
//! Each topic's deliveries are handled concurrently (up to
//! [`concurrency`](TransactionalParticipantBuilder::concurrency) at a time); the reserve, commit,
//! reject and sweep work on one transaction is serialized, so one instance never settles a
//! transaction twice (several instances sharing a store rely on the store's atomic steps). The callbacks run before the effects are removed from the store:
//! after a crash between the two, a redelivered commit runs them again (at least once).
//!
//! [`shutdown`](TransactionalParticipant::shutdown) stops it gracefully: no new delivery is taken,
//! the ones in hand are handled, answered and acknowledged, and the sweeper stops. Dropping it
//! stops it at once: a delivery in hand is neither answered nor acknowledged (a networked broker
//! delivers it again).

mod store;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

pub use store::{
    CommandAnswer, InMemoryParticipantStore, Outcome, ParticipantStore, ParticipantStoreError,
    StagedEffect, Staging,
};

#[cfg(feature = "postgres")]
pub use postgres::{PostgresParticipantStore, PostgresParticipantStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteParticipantStore, SqliteParticipantStoreBuilder};

use crate::broker::{Broker, Delivery, Subscription};
use crate::committer::Phase;
use crate::error::BrokerError;
use crate::locks::ExecutionLocks;
use crate::message::{BrokerMessage, SagaResponseStatus, header};
use crate::request_scope::RequestHeaders;

/// Why a command handler did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A business refusal: the reply is ERROR (400) and the saga's `on_error` (or its failure)
    /// decides what follows.
    #[error("{0}")]
    Business(String),
    /// A failure of the service: the reply is SYSTEM_ERROR (500).
    #[error("{0}")]
    System(String),
}

impl CommandError {
    /// A business refusal.
    pub fn business(message: impl std::fmt::Display) -> Self {
        Self::Business(message.to_string())
    }

    /// A system failure.
    pub fn system(message: impl std::fmt::Display) -> Self {
        Self::System(message.to_string())
    }

    /// The reply status it is answered with.
    pub fn status(&self) -> SagaResponseStatus {
        match self {
            Self::Business(_) => SagaResponseStatus::Error,
            Self::System(_) => SagaResponseStatus::SystemError,
        }
    }
}

impl From<serde_json::Error> for CommandError {
    fn from(error: serde_json::Error) -> Self {
        Self::System(error.to_string())
    }
}

/// What a command handler is given besides its request: the message, the transactions it runs in,
/// and where to stage its effects.
#[derive(Debug, Clone)]
pub struct CommandContext {
    message: Arc<BrokerMessage>,
    transactions: Vec<Uuid>,
    staged: Arc<Mutex<Vec<(String, Value)>>>,
}

impl CommandContext {
    /// The command as received.
    pub fn message(&self) -> &BrokerMessage {
        &self.message
    }

    /// The transactions it runs in, outermost first (never empty).
    pub fn transactions(&self) -> &[Uuid] {
        &self.transactions
    }

    /// The transaction it joins: the innermost one.
    pub fn transaction(&self) -> Uuid {
        self.transactions.last().copied().unwrap_or_default()
    }

    /// Records a tentative effect under conflict key `key`: it is kept under
    /// [`transaction`](Self::transaction) once the handler succeeds, and handed to the `on_commit`
    /// or `on_reject` callbacks when the transaction settles.
    pub fn stage(&self, key: impl Into<String>, effect: Value) {
        self.staged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key.into(), effect));
    }

    fn take_staged(&self) -> Vec<(String, Value)> {
        std::mem::take(&mut *self.staged.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A settled transaction, as the `on_commit` / `on_reject` callbacks receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The transaction.
    pub transaction: Uuid,
    /// Its staged effects, in the order they were staged (only the callback's topic's, for a
    /// callback registered for one topic).
    pub effects: Vec<StagedEffect>,
}

/// Counters of what a participant handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParticipantStats {
    /// Commands answered (any status), duplicates included.
    pub commands: u64,
    /// Commands answered again with the remembered answer, without running the handler: deliveries
    /// of a command whose message id was answered successfully before.
    pub duplicates: u64,
    /// Messages that could not be understood (acknowledged, changed nothing).
    pub undecodable: u64,
    /// Reservations granted.
    pub reserved: u64,
    /// Reservations refused.
    pub refused: u64,
    /// Transactions committed that had staged effects.
    pub committed: u64,
    /// Transactions rejected that had staged effects (expired ones included).
    pub rejected: u64,
    /// Reservations rejected by the sweeper.
    pub expired: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commands: AtomicU64,
    duplicates: AtomicU64,
    undecodable: AtomicU64,
    reserved: AtomicU64,
    refused: AtomicU64,
    committed: AtomicU64,
    rejected: AtomicU64,
    expired: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

type HandlerResult = Result<Result<Value, CommandError>, serde_json::Error>;
type ErasedHandler =
    Arc<dyn Fn(CommandContext, Value) -> BoxFuture<'static, HandlerResult> + Send + Sync>;
type Callback = Arc<dyn Fn(Settled) -> BoxFuture<'static, ()> + Send + Sync>;

/// Builds a [`TransactionalParticipant`].
#[must_use = "call `spawn().await` to start the participant"]
pub struct TransactionalParticipantBuilder {
    service: String,
    broker: Arc<dyn Broker>,
    store: Arc<dyn ParticipantStore>,
    handlers: BTreeMap<String, ErasedHandler>,
    on_commit: Vec<(Option<String>, Callback)>,
    on_reject: Vec<(Option<String>, Callback)>,
    reservation_timeout: Duration,
    answer_retention: Duration,
    concurrency: usize,
}

impl TransactionalParticipantBuilder {
    /// Answers commands on `topic` with `handler`: the payload decoded as `Req`, the response
    /// encoded as the reply's content. A later handler for the same topic replaces the earlier.
    pub fn command<Req, Resp, F, Fut>(mut self, topic: impl Into<String>, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(CommandContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, CommandError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |context, payload| {
            let request = match Req::deserialize(payload) {
                Ok(request) => request,
                Err(error) => return Box::pin(async move { Err(error) }),
            };
            let future = handler(context, request);
            Box::pin(async move {
                Ok(match future.await {
                    Ok(response) => serde_json::to_value(response).map_err(CommandError::from),
                    Err(error) => Err(error),
                })
            })
        });
        self.handlers.insert(topic.into(), erased);
        self
    }

    /// Calls `callback` with every committed transaction's staged effects.
    pub fn on_commit<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(Settled) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_commit.push((None, erase(callback)));
        self
    }

    /// Calls `callback` with the effects staged by commands on `topic`, when their transaction
    /// commits (not called when that topic staged nothing).
    pub fn on_commit_of<F, Fut>(mut self, topic: impl Into<String>, callback: F) -> Self
    where
        F: Fn(Settled) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_commit.push((Some(topic.into()), erase(callback)));
        self
    }

    /// Calls `callback` with every rejected transaction's staged effects (expired ones included).
    pub fn on_reject<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(Settled) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_reject.push((None, erase(callback)));
        self
    }

    /// Calls `callback` with the effects staged by commands on `topic`, when their transaction is
    /// rejected (not called when that topic staged nothing).
    pub fn on_reject_of<F, Fut>(mut self, topic: impl Into<String>, callback: F) -> Self
    where
        F: Fn(Settled) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_reject.push((Some(topic.into()), erase(callback)));
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
        let inner = Arc::new(Inner {
            service: self.service,
            broker: self.broker,
            store: self.store,
            on_commit: self.on_commit,
            on_reject: self.on_reject,
            settling: ExecutionLocks::default(),
            counters: Counters::default(),
        });
        let concurrency = self.concurrency;
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        for (topic, handler) in self.handlers {
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
            tasks.push(tokio::spawn(serve(
                subscription,
                stop.subscribe(),
                concurrency,
                handle,
            )));
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
            tasks.push(tokio::spawn(serve(
                subscription,
                stop.subscribe(),
                concurrency,
                handle,
            )));
        }
        let (timeout, retention) = (self.reservation_timeout, self.answer_retention);
        let sweeper = Arc::clone(&inner);
        let mut stopped = stop.subscribe();
        tasks.push(tokio::spawn(async move {
            let period = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
            loop {
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|stopped| *stopped) => return,
                    () = tokio::time::sleep(period) => {}
                }
                sweeper.sweep(timeout).await;
                sweeper.forget_answers(retention).await;
            }
        }));
        Ok(TransactionalParticipant {
            inner,
            stop,
            tasks: tokio::sync::Mutex::new(tasks),
        })
    }
}

/// Takes deliveries from `subscription` and hands each to `handle` (which hands it back with
/// whether it was handled) in a task of its own, at most `concurrency` at a time, then
/// acknowledges it (or asks for a redelivery), until `stopped` turns true (or the participant is
/// gone) or the subscription ends. The deliveries in hand are always finished before it returns:
/// the stop is only looked at before taking one. Dropping the subscription on the way out gives
/// what it received but nobody took back to the broker.
async fn serve<F, Fut>(
    mut subscription: Subscription,
    mut stopped: watch::Receiver<bool>,
    concurrency: usize,
    handle: F,
) where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = (Delivery, Handled)> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut in_hand = JoinSet::new();
    loop {
        // A free slot first, so that nothing is taken from the broker that cannot start at once.
        let slot = tokio::select! {
            biased;
            _ = stopped.wait_for(|stopped| *stopped) => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let delivery = tokio::select! {
            // The stop first: once it is asked for, no delivery that is ready is taken any more.
            biased;
            _ = stopped.wait_for(|stopped| *stopped) => break,
            delivery = subscription.next() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
        };
        let work = handle(delivery);
        in_hand.spawn(async move {
            let (delivery, handled) = work.await;
            acknowledge(delivery, handled).await;
            drop(slot);
        });
        // Reap the finished ones as we go, so the set holds only what is in hand.
        while in_hand.try_join_next().is_some() {}
    }
    drop(subscription);
    while in_hand.join_next().await.is_some() {}
}

fn erase<F, Fut>(callback: F) -> Callback
where
    F: Fn(Settled) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |settled| Box::pin(callback(settled)))
}

/// Whether a delivery was handled for good (acknowledged) or must come again (its answer could
/// not be sent, or the store could not be reached: a redelivery finds the remembered answer, or
/// runs the command once the store is back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    Done,
    Again,
}

async fn acknowledge(delivery: Delivery, handled: Handled) {
    let topic = delivery.message().topic.clone();
    let result = match handled {
        Handled::Done => delivery.ack().await,
        Handled::Again => delivery.nack().await,
    };
    if let Err(error) = result {
        tracing::warn!(%topic, %error, ?handled, "could not acknowledge a delivery");
    }
}

/// A command handler as `inventory` collects it: its topic, where it was declared, and how to add
/// it (with its callbacks) to a participant builder.
///
/// `#[transactional_command]` submits one per handler; by hand:
/// `inventory::submit! { CommandRegistration::new("Topic", concat!(file!(), ":", line!()), register) }`
/// (with `inventory` taken from `saga_runtime::__private`), `register` being a
/// `fn(TransactionalParticipantBuilder) -> TransactionalParticipantBuilder`.
pub struct CommandRegistration {
    topic: &'static str,
    location: &'static str,
    module_path: &'static str,
    register: fn(TransactionalParticipantBuilder) -> TransactionalParticipantBuilder,
}

impl CommandRegistration {
    /// The registration of the handler of `topic`, declared at `location` (`file:line`).
    pub const fn new(
        topic: &'static str,
        location: &'static str,
        register: fn(TransactionalParticipantBuilder) -> TransactionalParticipantBuilder,
    ) -> Self {
        Self {
            topic,
            location,
            module_path: "",
            register,
        }
    }

    /// The same registration, declared in module `module_path` (`module_path!()`; the macro
    /// gives it).
    pub const fn in_module(mut self, module_path: &'static str) -> Self {
        self.module_path = module_path;
        self
    }

    /// The module the handler was declared in (`crate::module`), empty when not given.
    pub fn module_path(&self) -> &'static str {
        self.module_path
    }

    /// The command topic.
    pub fn topic(&self) -> &'static str {
        self.topic
    }

    /// Where it was declared (`file:line`).
    pub fn location(&self) -> &'static str {
        self.location
    }
}

impl std::fmt::Debug for CommandRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRegistration")
            .field("topic", &self.topic)
            .field("location", &self.location)
            .field("module_path", &self.module_path)
            .finish_non_exhaustive()
    }
}

inventory::collect!(CommandRegistration);

/// Two registered handlers claim one command topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two transactional command handlers for topic `{topic}`: {first} and {second}")]
pub struct DuplicateTopic {
    /// The topic.
    pub topic: String,
    /// Where the first handler was declared.
    pub first: String,
    /// Where the second handler was declared.
    pub second: String,
}

/// A running transactional participant; [`shutdown`](Self::shutdown) stops it gracefully, dropping
/// it stops it at once.
pub struct TransactionalParticipant {
    inner: Arc<Inner>,
    /// Turned true to stop the subscription loops and the sweeper.
    stop: watch::Sender<bool>,
    /// The subscription loops and the sweeper, until they are awaited by a shutdown.
    tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl TransactionalParticipant {
    /// Starts building participant `service` on `broker`, keeping staged effects in `store`.
    pub fn builder(
        service: impl Into<String>,
        broker: Arc<dyn Broker>,
        store: Arc<dyn ParticipantStore>,
    ) -> TransactionalParticipantBuilder {
        TransactionalParticipantBuilder {
            service: service.into(),
            broker,
            store,
            handlers: BTreeMap::new(),
            on_commit: Vec::new(),
            on_reject: Vec::new(),
            reservation_timeout: Duration::from_secs(60),
            answer_retention: Duration::from_secs(24 * 60 * 60),
            concurrency: 16,
        }
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
        let mut registrations = inventory::iter::<CommandRegistration>
            .into_iter()
            .filter(|registration| filter(registration))
            .collect::<Vec<_>>();
        registrations.sort_by_key(|registration| (registration.topic, registration.location));
        for pair in registrations.windows(2) {
            if pair[0].topic == pair[1].topic {
                return Err(DuplicateTopic {
                    topic: pair[0].topic.to_owned(),
                    first: pair[0].location.to_owned(),
                    second: pair[1].location.to_owned(),
                });
            }
        }
        let builder = Self::builder(service, broker, store);
        Ok(registrations
            .into_iter()
            .fold(builder, |builder, registration| {
                (registration.register)(builder)
            }))
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Its store.
    pub fn store(&self) -> &Arc<dyn ParticipantStore> {
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
        let counters = &self.inner.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ParticipantStats {
            commands: read(&counters.commands),
            duplicates: read(&counters.duplicates),
            undecodable: read(&counters.undecodable),
            reserved: read(&counters.reserved),
            refused: read(&counters.refused),
            committed: read(&counters.committed),
            rejected: read(&counters.rejected),
            expired: read(&counters.expired),
        }
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

struct Inner {
    service: String,
    broker: Arc<dyn Broker>,
    store: Arc<dyn ParticipantStore>,
    on_commit: Vec<(Option<String>, Callback)>,
    on_reject: Vec<(Option<String>, Callback)>,
    /// One reserve, commit, reject or sweep of a transaction at a time.
    settling: ExecutionLocks,
    counters: Counters,
}

/// The `transactions` header as ids, outermost first; `None` when absent, empty or malformed.
pub fn parse_transactions(message: &BrokerMessage) -> Option<Vec<Uuid>> {
    let value = message.headers.get(header::TRANSACTIONS)?;
    let ids = value
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(Uuid::parse_str)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    (!ids.is_empty()).then_some(ids)
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

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

impl Inner {
    /// Publishes the reply to `request` (if it names a reply topic); [`Handled::Again`] when that
    /// failed, so that the request comes again and is answered then.
    async fn reply(
        &self,
        request: &BrokerMessage,
        status: SagaResponseStatus,
        content: Value,
    ) -> Handled {
        let Some(reply) = request.reply(&self.service, status, content) else {
            return Handled::Done;
        };
        match self.broker.publish(reply).await {
            Ok(()) => Handled::Done,
            Err(error) => {
                tracing::warn!(topic = %request.topic, %error, "could not publish a reply; asking for the request again");
                Handled::Again
            }
        }
    }

    /// Answers `message` with `status` and `content`; the reply names the services the handler's
    /// own sagas reached (`related`), if any.
    async fn answer(
        &self,
        message: &BrokerMessage,
        status: SagaResponseStatus,
        content: Value,
        related: Option<String>,
    ) -> Handled {
        bump(&self.counters.commands);
        match related {
            None => self.reply(message, status, content).await,
            Some(related) => {
                let mut request = message.clone();
                request
                    .headers
                    .insert(header::RELATED_SERVICES.to_owned(), related);
                self.reply(&request, status, content).await
            }
        }
    }

    /// Answers a command that was answered before the same way again, without running its handler.
    async fn answer_again(
        &self,
        topic: &str,
        message: &BrokerMessage,
        earlier: CommandAnswer,
    ) -> Handled {
        bump(&self.counters.duplicates);
        tracing::info!(%topic, id = %message.id, "a command answered before: answering it again");
        let CommandAnswer {
            content,
            related_services,
        } = earlier;
        self.answer(
            message,
            SagaResponseStatus::Success,
            content,
            related_services,
        )
        .await
    }

    async fn command(
        &self,
        topic: &str,
        handler: &ErasedHandler,
        message: &BrokerMessage,
    ) -> Handled {
        let Some(transactions) = parse_transactions(message) else {
            bump(&self.counters.undecodable);
            tracing::warn!(%topic, id = %message.id, "a command without a valid `transactions` header");
            let content = Value::String("no valid `transactions` header".to_owned());
            return self
                .answer(message, SagaResponseStatus::SystemError, content, None)
                .await;
        };
        match self.store.answered(message.id).await {
            Ok(None) => {}
            Ok(Some(earlier)) => {
                if let Err(error) = self
                    .settle_late(topic, transactions.last().copied().unwrap_or_default())
                    .await
                {
                    tracing::error!(%topic, id = %message.id, %error, "could not settle the effects of a command that came after its transaction settled; asking for it again");
                    return Handled::Again;
                }
                return self.answer_again(topic, message, earlier).await;
            }
            Err(error) => {
                // Without knowing whether it ran, running it could stage it twice: it comes again
                // once the store answers.
                tracing::error!(%topic, id = %message.id, %error, "could not look up the command's answer; asking for it again");
                return Handled::Again;
            }
        }
        let context = CommandContext {
            message: Arc::new(message.clone()),
            transactions,
            staged: Arc::default(),
        };
        let transaction = context.transaction();
        let scope = RequestHeaders::new(message.headers.clone());
        let run = {
            let (handler, context, payload) = (
                Arc::clone(handler),
                context.clone(),
                message.payload.clone(),
            );
            async move {
                let future =
                    std::panic::catch_unwind(AssertUnwindSafe(|| handler(context, payload)))?;
                AssertUnwindSafe(future).catch_unwind().await
            }
        };
        let outcome = scope.clone().scope(run).await;
        // The services the handler's own sagas reached, if any.
        let related = scope.snapshot().remove(header::RELATED_SERVICES);
        let (status, content) = match outcome {
            Err(panic) => {
                let message = format!("the handler panicked: {}", panic_message(&*panic));
                tracing::error!(%topic, %transaction, "{message}");
                (SagaResponseStatus::SystemError, Value::String(message))
            }
            Ok(Err(error)) => {
                bump(&self.counters.undecodable);
                tracing::warn!(%topic, id = %message.id, %error, "a command payload that does not decode");
                let content = format!("the request does not decode: {error}");
                (SagaResponseStatus::SystemError, Value::String(content))
            }
            Ok(Ok(Err(error))) => (error.status(), Value::String(error.to_string())),
            Ok(Ok(Ok(response))) => {
                let effects = context
                    .take_staged()
                    .into_iter()
                    .map(|(key, effect)| StagedEffect {
                        topic: topic.to_owned(),
                        key,
                        effect,
                    })
                    .collect::<Vec<_>>();
                let answer = CommandAnswer {
                    content: response,
                    related_services: related.clone(),
                };
                let staged = self
                    .store
                    .stage(transaction, message.id, &effects, &answer)
                    .await;
                // A command that comes after its transaction settled (its compensation raced the
                // reject) must not leave its effects staged for a settlement that already passed.
                let staged = match staged {
                    Ok(staging) => self
                        .settle_late(topic, transaction)
                        .await
                        .map(|()| staging)
                        .map_err(ParticipantStoreError::Storage),
                    Err(error) => Err(error),
                };
                match staged {
                    Ok(Staging::Staged) => (SagaResponseStatus::Success, answer.content),
                    // Another delivery of the same command was staged first: its answer stands.
                    Ok(Staging::Answered(earlier)) => {
                        return self.answer_again(topic, message, earlier).await;
                    }
                    // A store that cannot be reached is not the business's answer: the command comes
                    // again and runs once the store is back (nothing of it was staged).
                    Err(error) => {
                        tracing::error!(%topic, %transaction, %error, "could not stage the effects; asking for the command again");
                        return Handled::Again;
                    }
                }
            }
        };
        self.answer(message, status, content, related).await
    }

    async fn transaction_message(&self, phase: Phase, message: &BrokerMessage) -> Handled {
        let Some(transaction) = transaction_of(message) else {
            bump(&self.counters.undecodable);
            tracing::warn!(topic = %message.topic, id = %message.id, "a transaction message without a transaction id");
            let content = Value::String("no transaction id".to_owned());
            return self
                .reply(message, SagaResponseStatus::Error, content)
                .await;
        };
        let _settling = self.settling.lock(transaction).await;
        let (status, content) = match phase {
            // A reserve that comes after the transaction settled (a redelivery) reserves nothing
            // anew: nobody would settle that reservation.
            Phase::Reserve => match self.store.outcome(transaction).await {
                Ok(Some(Outcome::Committed)) => (SagaResponseStatus::Success, Value::Null),
                Ok(Some(Outcome::Rejected)) => (
                    SagaResponseStatus::Error,
                    Value::String(format!("transaction {transaction} was rejected")),
                ),
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
            Phase::Commit | Phase::Reject => match self.settle(phase, transaction).await {
                Ok(()) => (SagaResponseStatus::Success, Value::Null),
                Err(error) => (SagaResponseStatus::SystemError, Value::String(error)),
            },
        };
        self.reply(message, status, content).await
    }

    /// Reserves `transaction` in the store, if it has anything staged. The caller holds the
    /// transaction's lock.
    ///
    /// A transaction with nothing staged holds no key, so its reservation could refuse nobody and
    /// be refused by nobody; recording it would only leave a reservation behind when the reserve is
    /// a redelivery that arrives after the commit or the reject took the effects (the broker hands
    /// out again a delivery whose acknowledgement is late), which nobody settles any more.
    async fn reserve(&self, transaction: Uuid) -> (SagaResponseStatus, Value) {
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

    /// Settles the effects a command staged in `transaction` after the transaction settled (a
    /// compensation command that raced the reject, or any command handled late): those of a
    /// rejected transaction go to the `on_reject` callbacks, as they would have with the reject;
    /// those of a committed one are dropped without a callback (only a command answered already,
    /// whose answer was forgotten, can come after the commit: its effects were applied then).
    async fn settle_late(
        &self,
        topic: &str,
        transaction: Uuid,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(outcome) = self.store.outcome(transaction).await? else {
            return Ok(());
        };
        let _settling = self.settling.lock(transaction).await;
        match outcome {
            Outcome::Rejected => {
                tracing::warn!(%topic, %transaction, "a command came after its transaction was rejected: rejecting its effects");
                self.settle(Phase::Reject, transaction).await?;
            }
            Outcome::Committed => {
                let dropped = self.store.settle(transaction, Outcome::Committed).await?;
                if !dropped.is_empty() {
                    tracing::error!(%topic, %transaction, effects = dropped.len(), "a command came after its transaction was committed: its effects are dropped");
                }
            }
        }
        Ok(())
    }

    /// Commits or rejects `transaction`: runs the callbacks on its staged effects, then removes them.
    /// The caller holds the transaction's lock.
    async fn settle(&self, phase: Phase, transaction: Uuid) -> Result<(), String> {
        let effects = self.store.staged(transaction).await.map_err(|error| {
            tracing::error!(%transaction, %error, "could not read the staged effects");
            error.to_string()
        })?;
        if !effects.is_empty() {
            let callbacks = if phase == Phase::Commit {
                &self.on_commit
            } else {
                &self.on_reject
            };
            for (topic, callback) in callbacks {
                let effects = match topic {
                    None => effects.clone(),
                    Some(topic) => effects
                        .iter()
                        .filter(|effect| &effect.topic == topic)
                        .cloned()
                        .collect(),
                };
                if topic.is_some() && effects.is_empty() {
                    continue;
                }
                let settled = Settled {
                    transaction,
                    effects,
                };
                let call = std::panic::catch_unwind(AssertUnwindSafe(|| callback(settled)));
                let result = match call {
                    Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                    Err(panic) => Err(panic),
                };
                if let Err(panic) = result {
                    let message = format!(
                        "the {phase:?} callback panicked: {}",
                        panic_message(&*panic)
                    );
                    tracing::error!(%transaction, "{message}; the effects stay staged");
                    return Err(message);
                }
            }
        }
        let outcome = if phase == Phase::Commit {
            Outcome::Committed
        } else {
            Outcome::Rejected
        };
        self.store
            .settle(transaction, outcome)
            .await
            .map_err(|error| {
                tracing::error!(%transaction, %error, "could not remove the settled effects");
                error.to_string()
            })?;
        if !effects.is_empty() {
            bump(if phase == Phase::Commit {
                &self.counters.committed
            } else {
                &self.counters.rejected
            });
        }
        tracing::info!(
            service = %self.service,
            %transaction,
            ?outcome,
            effects = effects.len(),
            "transaction settled"
        );
        Ok(())
    }

    /// Forgets the answers of commands older than `retention`.
    async fn forget_answers(&self, retention: Duration) {
        let before = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match self.store.forget_answers(before).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::debug!(forgotten, ?retention, "forgot old command answers"),
            Err(error) => tracing::warn!(%error, "could not forget the old command answers"),
        }
    }

    /// Rejects the reservations older than `timeout`.
    async fn sweep(&self, timeout: Duration) {
        let before = SystemTime::now()
            .checked_sub(timeout)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let expired = match self.store.expired_reservations(before).await {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(%error, "could not list the expired reservations");
                return;
            }
        };
        for transaction in expired {
            let _settling = self.settling.lock(transaction).await;
            // Settled between the listing and the lock: nothing left to expire.
            if !matches!(self.store.outcome(transaction).await, Ok(None)) {
                continue;
            }
            tracing::warn!(%transaction, ?timeout, "rejecting a reservation nobody settled");
            if self.settle(Phase::Reject, transaction).await.is_ok() {
                bump(&self.counters.expired);
            }
        }
    }
}
