//! The manager: starts executions, resumes them with replies, enforces timeouts, and runs the
//! two-phase commit when they end.
//!
//! Every path that changes an execution goes through `Inner::drive` under the execution's lock:
//! claim the execution (store it with this instance as its owner, before any handler runs), run the
//! engine, store the new state together with the messages the engine emitted, then publish them
//! (so that no message is ever sent for a state that was not stored, and none is lost by a crash
//! between the two: recovery publishes again what was stored but not marked published), then
//! commit or reject the transaction. Waiting "in memory" is the same path: the execution is stored
//! at its pause and the caller waits for the reply listener to report that it ended, so a crash
//! while waiting loses nothing. See `recovery` for what happens after a crash.
//!
//! The reply listener settles every delivery: a reply that advanced an execution or changed nothing
//! (unknown execution, not awaited, duplicate) is acknowledged; a failure that may pass (storage,
//! transport, an instance holding the execution) is nacked to be delivered again; a message that
//! is not a saga reply, or whose handling can never succeed, is dead-lettered with the reason.
//! `SagaManager::shutdown` stops it gracefully.

mod options;
mod recovery;

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

pub use options::{RunOptions, RunOutcome};
pub use recovery::RecoveryReport;

use crate::broker::{Broker, Delivery, InProcessBroker, Subscription};
use crate::committer::{CommitError, Phase, PreparedPhase, TransactionCommitter};
use crate::context::Context;
use crate::definition::BoxFuture;
use crate::definition::{Fingerprint, IntoDefinition, SagaDefinition};
use crate::error::{BrokerError, ExecutionError, LoadError, MessageError, RepositoryError};
use crate::execution::{
    Checkpoint, ExecutionEnv, ExecutionRecord, Outbox, Progress, ReplyRejection, SagaExecution,
    SagaStatus, TransactionState, now_ms,
};
use crate::faults;
use crate::locks::ExecutionLocks;
use crate::message::{BrokerMessage, SagaResponse, header};
use crate::registry::{Registry, SagaType};
use crate::repository::{InMemoryRepository, SagaExecutionRepository};
use crate::request_scope::RequestHeaders;
use crate::shard::ShardedMap;

/// What went wrong in a manager call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The execution failed (a step, the commit) or refused the request; see the inner error.
    #[error(transparent)]
    Execution(#[from] ExecutionError),
    /// A stored execution could not be resumed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The repository failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A message that is not a saga reply.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The context could not be encoded for storage.
    #[error("the saga context cannot be encoded: {0}")]
    Encode(#[source] serde_json::Error),
    /// Another definition with the same name and a different fingerprint is registered.
    #[error(
        "saga `{name}` is registered with fingerprint {registered}; a definition with fingerprint {offered} cannot share its name"
    )]
    ConflictingDefinition {
        /// The saga name.
        name: String,
        /// The registered fingerprint.
        registered: Fingerprint,
        /// The other definition's fingerprint.
        offered: Fingerprint,
    },
    /// The execution stopped advancing while its run waited in memory (storage or transport
    /// failure); the stored execution may lag behind what was attempted.
    #[error("saga execution {id} stopped advancing: {reason}")]
    Interrupted {
        /// The execution.
        id: Uuid,
        /// What failed.
        reason: String,
    },
    /// Another manager instance holds the execution (its lease has not run out): it is being
    /// advanced there. Try again later; a reply is redelivered.
    #[error("saga execution {id} is being advanced by instance `{owner}`")]
    Busy {
        /// The execution.
        id: Uuid,
        /// The instance holding it.
        owner: String,
    },
    /// The manager shut down while the run waited for its execution to end.
    #[error("the saga manager shut down while execution {id} was waiting")]
    Shutdown {
        /// The execution, which stays stored and resumable.
        id: Uuid,
    },
}

/// What happened to a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// The reply advanced the execution, which is now in `status`.
    Applied {
        /// The execution.
        id: Uuid,
        /// Its status after the reply.
        status: SagaStatus,
    },
    /// The reply changed nothing.
    Ignored {
        /// The execution it named.
        id: Uuid,
        /// Why.
        reason: ReplyRejection,
    },
}

/// Counts of what the reply listener did with what it received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyStats {
    /// Replies that advanced an execution (acknowledged).
    pub applied: u64,
    /// Replies to a stored execution that changed nothing: it ended, does not wait for that reply,
    /// or already applied it (acknowledged).
    pub ignored: u64,
    /// Replies naming an execution that is not stored (acknowledged).
    pub unknown: u64,
    /// Messages that were not saga replies (dead-lettered).
    pub malformed: u64,
    /// Replies whose handling failed: for a reason that may pass (storage, broker, an instance
    /// holding the execution, a saga not registered yet), nacked to be delivered again; otherwise
    /// dead-lettered.
    pub failed: u64,
    /// Messages set aside as dead letters: the malformed ones and the replies whose handling
    /// failed for good.
    pub dead_lettered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    applied: AtomicU64,
    ignored: AtomicU64,
    unknown: AtomicU64,
    malformed: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
}

/// Runs and resumes saga executions for one service.
///
/// Cheap to clone. [`shutdown`](Self::shutdown) stops the reply listener and the recovery sweeps
/// gracefully; without it, they are aborted when the last clone is dropped.
#[derive(Clone)]
pub struct SagaManager {
    inner: Arc<Inner>,
    background: Arc<Background>,
}

impl std::fmt::Debug for SagaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaManager")
            .field("service", &self.inner.env.service())
            .finish_non_exhaustive()
    }
}

/// Builds a [`SagaManager`].
#[must_use = "call `build().await` to get the manager"]
pub struct SagaManagerBuilder {
    service: String,
    repository: Option<Arc<dyn SagaExecutionRepository>>,
    broker: Option<Arc<dyn Broker>>,
    commit_timeout: Duration,
    registry: Registry,
    instance: Option<String>,
    lease: Duration,
    recover_on_start: bool,
    storage_retry: Duration,
    retention: Option<Duration>,
}

impl SagaManagerBuilder {
    /// Keeps finished executions for `retention` after their last change, then deletes them
    /// (checked at every recovery sweep). Default: keep them all (an audit trail). Executions in any
    /// other status are never deleted.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// This instance's name, written as the owner of the executions it advances (default: the
    /// service name and a random suffix). Give an instance the same name when it restarts and its
    /// start-up recovery takes over its own executions at once, instead of waiting for their leases
    /// to run out.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// How long an instance holds an execution it advances (default 2 minutes); when an instance
    /// dies, another one's recovery takes its executions over after that. It must exceed the
    /// longest advance: the slowest run of local steps plus the two-phase commit. Recovery sweeps
    /// run at this interval too.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(1));
        self
    }

    /// Whether `build` runs a recovery sweep and starts the periodic ones (default `true`). See
    /// [`SagaManager::recover`].
    pub fn recover_on_start(mut self, recover: bool) -> Self {
        self.recover_on_start = recover;
        self
    }

    /// How long a store that fails for a storage reason (database unreachable, locked) is retried,
    /// with exponential back-off, before the advance fails (default 30 s).
    pub fn storage_retry(mut self, retry: Duration) -> Self {
        self.storage_retry = retry;
        self
    }

    /// The sagas whose stored executions this manager can resume by name (default: none; sagas
    /// started with [`SagaManager::run`] are known from then on). See [`Registry::from_inventory`].
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// The repository (default: a new [`InMemoryRepository`]).
    pub fn repository(mut self, repository: impl SagaExecutionRepository) -> Self {
        self.repository = Some(Arc::new(repository));
        self
    }

    /// The repository, shared.
    pub fn shared_repository(mut self, repository: Arc<dyn SagaExecutionRepository>) -> Self {
        self.repository = Some(repository);
        self
    }

    /// The broker (default: a new [`InProcessBroker`]).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// The broker, shared.
    pub fn shared_broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// How long each phase of the two-phase commit waits for the participants (default 30 s).
    pub fn commit_timeout(mut self, timeout: Duration) -> Self {
        self.commit_timeout = timeout;
        self
    }

    /// Subscribes to the service's reply topic and starts the reply listener.
    pub async fn build(self) -> Result<SagaManager, SagaError> {
        let env = ExecutionEnv::new(self.service);
        let broker = self
            .broker
            .unwrap_or_else(|| Arc::new(InProcessBroker::new()));
        let repository = self
            .repository
            .unwrap_or_else(|| Arc::new(InMemoryRepository::new()));
        let committer =
            TransactionCommitter::new(Arc::clone(&broker), env.service(), self.commit_timeout);
        let subscription = broker.subscribe(env.reply_topic()).await?;
        let instance = self
            .instance
            .unwrap_or_else(|| format!("{}-{}", env.service(), Uuid::new_v4().simple()));
        let (stopping, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            env,
            repository,
            broker,
            committer,
            sagas: RwLock::default(),
            locks: ExecutionLocks::default(),
            parked: ShardedMap::default(),
            expiries: ShardedMap::default(),
            counters: Counters::default(),
            instance,
            lease: self.lease,
            storage_retry: self.storage_retry,
            retention: self.retention,
            stopping,
        });
        for saga in self.registry.erased() {
            inner.register_erased(saga)?;
        }
        let (alive, working) = watch::channel(());
        let mut tasks = vec![tokio::spawn(listen(
            Arc::downgrade(&inner),
            subscription,
            inner.stopping.subscribe(),
            working.clone(),
        ))];
        if self.recover_on_start {
            let report = inner.recover().await;
            if !report.is_empty() {
                tracing::info!(%report, "start-up recovery");
            }
            let sweeps = recovery::sweep_periodically(
                Arc::downgrade(&inner),
                self.lease,
                inner.stopping.subscribe(),
            );
            tasks.push(tokio::spawn(async move {
                let _working = working;
                sweeps.await;
            }));
        }
        Ok(SagaManager {
            inner,
            background: Arc::new(Background { tasks, alive }),
        })
    }
}

/// The manager's background work: the reply listener, the reply tasks it spawned and the recovery
/// sweeps. Each of them holds a receiver of `alive`, so that its sender sees them all gone.
///
/// When the last manager handle goes, the listener and the sweeps are aborted (a reply task
/// already spawned finishes on its own).
struct Background {
    tasks: Vec<JoinHandle<()>>,
    alive: watch::Sender<()>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl SagaManager {
    /// Starts building the manager of service `service` (replies arrive on `{service}Reply`).
    pub fn builder(service: impl Into<String>) -> SagaManagerBuilder {
        SagaManagerBuilder {
            service: service.into(),
            repository: None,
            broker: None,
            commit_timeout: Duration::from_secs(30),
            registry: Registry::empty(),
            instance: None,
            lease: Duration::from_secs(120),
            recover_on_start: true,
            storage_retry: Duration::from_secs(30),
            retention: None,
        }
    }

    /// This instance's name (the owner written on the executions it advances).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Stops this instance gracefully, and returns once it stopped:
    ///
    /// 1. The reply listener takes no new delivery and drops its subscription: what arrives from
    ///    now on (or was received but not taken yet) stays with the broker for the other instances
    ///    or the next one (a networked broker hands a delivery taken but never acknowledged to
    ///    another subscriber after its ack wait).
    /// 2. The replies already taken are handled to the end and settled (acknowledged, nacked or
    ///    dead-lettered).
    /// 3. The periodic recovery sweeps stop (a sweep under way finishes first), and the timers of
    ///    paused steps no longer fire here (their deadline is stored: recovery elsewhere arms them
    ///    again).
    /// 4. The runs still waiting in memory for a reply return [`SagaError::Shutdown`]; their
    ///    executions stay stored and are resumed by whichever instance receives the reply.
    ///
    /// Calls from several clones all wait for the same stop; a second call returns at once. The
    /// manager's other methods keep working (a run that would wait in memory returns
    /// [`SagaError::Shutdown`] at its first pause).
    pub async fn shutdown(&self) {
        if !self.inner.stopping.send_replace(true) {
            tracing::info!(instance = %self.inner.instance, "shutting down the saga manager");
        }
        self.background.alive.closed().await;
        // No reply reaches the runs waiting in memory any more.
        let waiting = self.inner.parked.drain();
        if !waiting.is_empty() {
            tracing::info!(
                runs = waiting.len(),
                "runs waiting in memory are told that the manager shut down"
            );
        }
        drop(waiting);
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// Runs one recovery sweep now (the manager also runs one when it is built and then one per
    /// lease period, unless [`SagaManagerBuilder::recover_on_start`] turned them off) and reports
    /// what it did. What recovery does with each kind of execution is described in the crate's
    /// README (section "Durability and recovery").
    pub async fn recover(&self) -> RecoveryReport {
        self.inner.recover().await
    }

    /// The service's execution environment.
    pub fn env(&self) -> &ExecutionEnv {
        &self.inner.env
    }

    /// The repository.
    pub fn repository(&self) -> &Arc<dyn SagaExecutionRepository> {
        &self.inner.repository
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// What the reply listener did so far.
    pub fn reply_stats(&self) -> ReplyStats {
        let counters = &self.inner.counters;
        ReplyStats {
            applied: counters.applied.load(Ordering::Relaxed),
            ignored: counters.ignored.load(Ordering::Relaxed),
            unknown: counters.unknown.load(Ordering::Relaxed),
            malformed: counters.malformed.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// Makes `definition` known, so that stored executions of it can be resumed by name.
    pub fn register<C: Context>(
        &self,
        definition: impl IntoDefinition<C>,
    ) -> Result<(), SagaError> {
        self.inner.register(definition.into_definition())
    }

    /// Starts an execution of saga type `T` (a `#[saga]` type, or any [`SagaType`]) with `context`.
    pub async fn run_saga<T: SagaType>(
        &self,
        context: T::Context,
        options: RunOptions,
    ) -> Result<RunOutcome<T::Context>, SagaError> {
        self.run(T::definition(), context, options).await
    }

    /// Starts an execution of `definition` with `context`.
    ///
    /// By default it waits until the execution ends and returns it (or the error of a failed saga);
    /// see [`RunOptions`] for the other behaviours.
    pub async fn run<C: Context>(
        &self,
        definition: impl IntoDefinition<C>,
        context: C,
        options: RunOptions,
    ) -> Result<RunOutcome<C>, SagaError> {
        let definition = definition.into_definition();
        self.inner.register(Arc::clone(&definition))?;
        let request = RequestHeaders::current();
        let inherited = request.as_ref().map(RequestHeaders::snapshot);
        let mut execution = SagaExecution::new(Arc::clone(&definition), context);
        let user = inherited
            .as_ref()
            .and_then(|headers| headers.get(header::USER).cloned())
            .or(options.user.clone());
        if let Some(user) = user {
            execution = execution.with_user(user);
        }
        if let Some(headers) = inherited {
            execution = execution.with_inherited_headers(headers);
        }
        execution.settings.autocommit = options.autocommit;
        execution.settings.timeout_ms = options.timeout.map(duration_ms);
        let id = execution.id();

        let guard = self.inner.locks.lock(id).await;
        let driven = self.inner.drive(&mut execution, Input::Start).await?;
        let (execution, failure) =
            if !options.pause_on_disk && execution.status() == SagaStatus::Paused {
                // Parked under the lock, so that the reply cannot be handled before it is parked.
                let (waiter, completion) = oneshot::channel();
                self.inner.park(id, Box::new(execution), waiter);
                drop(guard);
                let completion = completion.await.map_err(|_| SagaError::Shutdown { id })??;
                let execution = completion
                    .execution
                    .downcast::<SagaExecution<C>>()
                    .map_err(|_| LoadError::WrongSaga {
                        id,
                        stored: definition.name().to_owned(),
                        expected: definition.name().to_owned(),
                    })?;
                (*execution, completion.failure)
            } else {
                drop(guard);
                (execution, driven.failure)
            };
        if let Some(request) = &request {
            request.add_related_services(&execution.related_services(&self.inner.env));
        }
        if let Some(failure) = failure {
            if options.raise_on_error {
                return Err(failure.into());
            }
        }
        Ok(if options.return_execution {
            RunOutcome::Execution(execution)
        } else {
            RunOutcome::Id(id)
        })
    }

    /// Resumes the execution `reply` names with it.
    pub async fn resume(&self, reply: SagaResponse) -> Result<ReplyOutcome, SagaError> {
        self.inner
            .advance_stored(reply.saga(), Input::Reply(reply))
            .await
    }

    /// Reads `message` as a reply and resumes the execution it names.
    pub async fn handle_reply(&self, message: &BrokerMessage) -> Result<ReplyOutcome, SagaError> {
        let reply = SagaResponse::from_message(message)?;
        self.resume(reply).await
    }

    /// Compensates a stored execution by hand: its executed steps in reverse order (and a remote
    /// step still waiting for its reply: its command was sent), then, with its autocommit setting,
    /// rejects its transactions, unless it had finished: a committed transaction is final, so a
    /// finished saga is only compensated. A second rollback is an error and sends nothing. A run
    /// waiting in memory for the execution returns [`ExecutionError::RolledBack`].
    pub async fn rollback(&self, id: Uuid) -> Result<SagaStatus, SagaError> {
        match self.inner.advance_stored(id, Input::Rollback).await? {
            ReplyOutcome::Applied { status, .. } => Ok(status),
            ReplyOutcome::Ignored { reason, .. } => {
                Err(ExecutionError::ReplyRejected { id, reason }.into())
            }
        }
    }

    /// Runs the two-phase commit of a stored execution that finished without autocommit. An
    /// execution that has not finished, or whose transaction was already committed or rejected, is
    /// [`ExecutionError::CannotCommit`] and nothing is sent. A refused reservation rejects the
    /// transaction, compensates the steps and returns [`ExecutionError::CommitFailed`].
    pub async fn commit(&self, id: Uuid) -> Result<SagaStatus, SagaError> {
        match self.inner.advance_stored(id, Input::Commit).await? {
            ReplyOutcome::Applied { status, .. } => Ok(status),
            ReplyOutcome::Ignored { reason, .. } => {
                Err(ExecutionError::ReplyRejected { id, reason }.into())
            }
        }
    }

    /// Loads a stored execution of `definition`.
    pub async fn load<C: Context>(
        &self,
        definition: impl IntoDefinition<C>,
        id: Uuid,
    ) -> Result<SagaExecution<C>, SagaError> {
        let record = self.inner.repository.load(id).await?;
        Ok(SagaExecution::from_record(definition, record)?)
    }
}

/// What advances an execution.
#[derive(Clone)]
pub(crate) enum Input {
    Start,
    Reply(SagaResponse),
    Expire(Uuid),
    Rollback,
    Commit,
}

/// The result of one drive.
#[derive(Default)]
struct Driven {
    /// The saga failed (raised to the caller with `raise_on_error`).
    failure: Option<ExecutionError>,
    /// The input was a reply that did not fit.
    rejection: Option<ReplyRejection>,
}

/// How an execution ended, for the run waiting in memory.
struct Completion {
    /// The `SagaExecution<C>` of the waiting run.
    execution: Box<dyn Any + Send>,
    failure: Option<ExecutionError>,
}

/// An execution whose run waits in memory: kept decoded, so that its replies need no load.
///
/// Every change in this process goes through `Inner::advance_stored` under the execution's lock,
/// so the parked copy is the latest this process knows; a change by another process is caught by
/// the store's compare-and-set.
struct Parked {
    saga: Arc<dyn ErasedSaga>,
    execution: Box<dyn Any + Send>,
    /// The stored version the parked copy is at.
    version: u64,
    waiter: oneshot::Sender<Result<Completion, SagaError>>,
}

/// Where an execution to advance comes from.
pub(crate) enum Source {
    Parked(Box<dyn Any + Send>),
    Stored(Box<ExecutionRecord>),
}

/// The result of advancing a registered saga's execution.
pub(crate) struct Advanced {
    outcome: ReplyOutcome,
    /// The stored version after the advance.
    version: u64,
    /// The execution, when it was asked back (it is parked again or handed to its run).
    execution: Option<Box<dyn Any + Send>>,
    failure: Option<ExecutionError>,
}

pub(crate) struct Inner {
    env: ExecutionEnv,
    repository: Arc<dyn SagaExecutionRepository>,
    broker: Arc<dyn Broker>,
    committer: TransactionCommitter,
    sagas: RwLock<HashMap<String, Arc<dyn ErasedSaga>>>,
    locks: ExecutionLocks,
    parked: ShardedMap<Parked>,
    /// The command each armed expiry timer waits for, so that recovery sweeps arm a timer once.
    expiries: ShardedMap<Uuid>,
    counters: Counters,
    instance: String,
    lease: Duration,
    storage_retry: Duration,
    retention: Option<Duration>,
    /// Set by `SagaManager::shutdown`.
    stopping: watch::Sender<bool>,
}

/// Whether a store keeps this instance as the execution's owner (it goes on advancing it) or lets
/// the execution rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    Keep,
    Release,
}

/// What a store wrote: the version, and the messages stored with it, to publish next.
pub(crate) struct Stored {
    id: Uuid,
    version: u64,
    messages: Vec<BrokerMessage>,
}

impl Inner {
    fn register<C: Context>(&self, definition: Arc<SagaDefinition<C>>) -> Result<(), SagaError> {
        // Every run registers its saga: the common case, already known, takes only the read lock.
        if self
            .saga(definition.name())
            .is_some_and(|known| known.fingerprint() == definition.fingerprint())
        {
            return Ok(());
        }
        self.register_erased(Arc::new(Typed(definition)))
    }

    fn register_erased(&self, saga: Arc<dyn ErasedSaga>) -> Result<(), SagaError> {
        let mut sagas = self.sagas.write().unwrap_or_else(PoisonError::into_inner);
        match sagas.get(saga.name()) {
            Some(known) if known.fingerprint() == saga.fingerprint() => Ok(()),
            Some(known) => Err(SagaError::ConflictingDefinition {
                name: saga.name().to_owned(),
                registered: known.fingerprint(),
                offered: saga.fingerprint(),
            }),
            None => {
                sagas.insert(saga.name().to_owned(), saga);
                Ok(())
            }
        }
    }

    fn saga(&self, name: &str) -> Option<Arc<dyn ErasedSaga>> {
        self.sagas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Keeps the execution of a run that waits in memory (call under the execution's lock).
    fn park<C: Context>(
        &self,
        id: Uuid,
        execution: Box<SagaExecution<C>>,
        waiter: oneshot::Sender<Result<Completion, SagaError>>,
    ) {
        let saga = self
            .saga(execution.definition().name())
            .unwrap_or_else(|| Arc::new(Typed(Arc::clone(execution.definition()))));
        let version = execution.version();
        self.parked.shard(&id).insert(
            id,
            Parked {
                saga,
                execution,
                version,
                waiter,
            },
        );
        // Checked after parking: either this sees the shutdown, or the shutdown's drain sees the
        // parked run.
        if self.is_stopping() {
            // Dropping the waiter tells the run that the manager shut down.
            drop(self.parked.shard(&id).remove(&id));
        }
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Loads execution `id`, advances it with `input` and stores it, under its lock.
    async fn advance_stored(
        self: &Arc<Self>,
        id: Uuid,
        input: Input,
    ) -> Result<ReplyOutcome, SagaError> {
        let _guard = self.locks.lock(id).await;
        let is_commit = matches!(input, Input::Commit);
        if is_commit && self.parked.shard(&id).contains_key(&id) {
            // A run waits for it in memory, so it has not finished: leave it to that run.
            return Err(ExecutionError::CannotCommit {
                id,
                status: SagaStatus::Paused,
                transaction: TransactionState::Open,
            }
            .into());
        }
        let parked = self.parked.shard(&id).remove(&id);
        let Some(parked) = parked else {
            return self.advance_loaded(id, input, is_commit).await;
        };
        let Parked {
            saga,
            execution,
            version: parked_version,
            waiter,
        } = parked;
        let input_again = input.clone();
        let advanced = saga
            .advance(self, id, Source::Parked(execution), input, true)
            .await;
        if let Ok(Advanced {
            outcome: ReplyOutcome::Ignored { .. },
            ..
        }) = &advanced
        {
            // A refusal stores nothing, so it cannot see that another instance advanced the
            // execution since it was parked: check. A stale copy is dropped (the waiting run hears
            // so) and the input is applied to the stored copy instead.
            if self.stored_version(id).await? != parked_version {
                drop(advanced);
                let _ = waiter.send(Err(SagaError::Interrupted {
                    id,
                    reason: "another instance advanced the execution".to_owned(),
                }));
                return self.advance_loaded(id, input_again, is_commit).await;
            }
        }
        match advanced {
            Ok(Advanced {
                outcome,
                version,
                execution: Some(execution),
                failure,
            }) => {
                let ended = match outcome {
                    ReplyOutcome::Applied { status, .. } => status.is_terminal(),
                    ReplyOutcome::Ignored { .. } => false,
                };
                if ended {
                    // The run may have given up waiting; the execution is stored either way.
                    let _ = waiter.send(Ok(Completion { execution, failure }));
                } else if self.is_stopping() {
                    // No reply reaches it here any more: the run hears that the manager shut
                    // down (the waiter is dropped); the execution is stored.
                    drop((execution, waiter));
                } else {
                    let parked = Parked {
                        saga,
                        execution,
                        version,
                        waiter,
                    };
                    self.parked.shard(&id).insert(id, parked);
                }
                Ok(outcome)
            }
            Ok(advanced) => Ok(advanced.outcome),
            Err(error) => {
                let _ = waiter.send(Err(SagaError::Interrupted {
                    id,
                    reason: error.to_string(),
                }));
                if matches!(
                    error,
                    SagaError::Repository(RepositoryError::Conflict { .. })
                ) {
                    // Changed elsewhere since it was parked: apply the input to the stored copy.
                    return self.advance_loaded(id, input_again, is_commit).await;
                }
                Err(error)
            }
        }
    }

    /// Loads execution `id` and advances it with `input` (call under the execution's lock). A lost
    /// race (the stored copy changed between load and store) reloads and applies the input again:
    /// the state machine then refuses what no longer fits (a reply already applied is a duplicate),
    /// so nothing is overwritten and nothing is applied twice.
    async fn advance_loaded(
        self: &Arc<Self>,
        id: Uuid,
        input: Input,
        is_commit: bool,
    ) -> Result<ReplyOutcome, SagaError> {
        const ATTEMPTS: usize = 4;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let record = match self.repository.load(id).await {
                Ok(record) => record,
                Err(RepositoryError::NotFound { .. }) => {
                    return Ok(ReplyOutcome::Ignored {
                        id,
                        reason: ReplyRejection::UnknownExecution,
                    });
                }
                Err(error) => return Err(error.into()),
            };
            if let Some(owner) = self.held_elsewhere(&record) {
                return Err(SagaError::Busy { id, owner });
            }
            let saga = self
                .saga(&record.saga)
                .ok_or_else(|| LoadError::UnknownSaga {
                    id,
                    saga: record.saga.clone(),
                })?;
            let advanced = match saga
                .advance(
                    self,
                    id,
                    Source::Stored(Box::new(record)),
                    input.clone(),
                    false,
                )
                .await
            {
                Err(SagaError::Repository(RepositoryError::Conflict { .. }))
                    if attempt < ATTEMPTS =>
                {
                    tracing::debug!(saga.id = %id, "lost a race for the execution: reloading");
                    continue;
                }
                other => other?,
            };
            // A commit asked for by hand reports its failure to the caller; a saga failing on a
            // reply is an outcome of the saga, reported to whoever waits for it.
            if let (true, Some(failure)) = (is_commit, advanced.failure) {
                return Err(failure.into());
            }
            return Ok(advanced.outcome);
        }
    }

    /// The version stored now for execution `id` (0: none).
    async fn stored_version(&self, id: Uuid) -> Result<u64, SagaError> {
        match self.repository.load(id).await {
            Ok(record) => Ok(record.version),
            Err(RepositoryError::NotFound { .. }) => Ok(0),
            Err(RepositoryError::Corrupt { .. }) => Ok(u64::MAX),
            Err(error) => Err(error.into()),
        }
    }

    /// The other instance holding `record`, if its lease still runs.
    fn held_elsewhere(&self, record: &ExecutionRecord) -> Option<String> {
        match (&record.owner, record.lease_until_ms) {
            (Some(owner), Some(until)) if *owner != self.instance && until > now_ms() => {
                Some(owner.clone())
            }
            _ => None,
        }
    }

    /// Runs the engine on `execution`, stores the result, publishes what it emitted, and settles the
    /// transaction when the execution ended.
    async fn drive<C: Context>(
        self: &Arc<Self>,
        execution: &mut SagaExecution<C>,
        input: Input,
    ) -> Result<Driven, SagaError> {
        let span = tracing::info_span!(
            "saga.run",
            saga.name = %execution.definition().name(),
            saga.id = %execution.id(),
        );
        self.drive_inner(execution, input).instrument(span).await
    }

    async fn drive_inner<C: Context>(
        self: &Arc<Self>,
        execution: &mut SagaExecution<C>,
        input: Input,
    ) -> Result<Driven, SagaError> {
        let env = &self.env;
        let mut driven = Driven::default();
        // An input that does not fit changes nothing, not even the owner.
        if let Some(reason) = refusal(execution, &input)? {
            tracing::debug!(%reason, "input ignored");
            driven.rejection = Some(reason);
            return Ok(driven);
        }
        // Messages stored with the loaded state and not marked published go out first, with the
        // next store: no store may overwrite them unpublished.
        let mut outbox = Outbox::new();
        outbox.restore(std::mem::take(&mut execution.unpublished));
        if let Input::Commit = input {
            driven.failure = self.commit(execution, &mut outbox).await?;
            return Ok(driven);
        }
        // A committed transaction is final: compensating a finished saga by hand undoes its steps
        // but rejects nothing.
        let autocommit = execution.settings.autocommit;
        let reject_on_failure = autocommit && execution.status() != SagaStatus::Finished;
        // The claim: stored with this instance as owner before any handler runs, so that another
        // instance leaves it alone and recovery knows it was being advanced.
        let claimed = self.store(execution, &mut outbox, Hold::Keep).await?;
        self.publish(claimed).await?;
        let mut saver = Saver { inner: self };
        let result = match input {
            Input::Start => {
                execution
                    .execute_checkpointed(None, env, &mut outbox, &mut saver)
                    .await
            }
            Input::Reply(reply) => {
                execution
                    .execute_checkpointed(Some(reply), env, &mut outbox, &mut saver)
                    .await
            }
            Input::Expire(request) => {
                execution
                    .expire_checkpointed(request, env, &mut outbox, &mut saver)
                    .await
            }
            Input::Rollback => {
                match execution
                    .rollback_checkpointed(env, &mut outbox, &mut saver)
                    .await
                {
                    Ok(()) => {
                        driven.failure = Some(ExecutionError::RolledBack { id: execution.id() });
                        Ok(Progress::Finished)
                    }
                    Err(error) => Err(error),
                }
            }
            Input::Commit => unreachable!("handled above"),
        };
        self.settle(
            execution,
            &mut outbox,
            result,
            reject_on_failure,
            &mut driven,
        )
        .await?;
        Ok(driven)
    }

    /// Stores, publishes and settles the transaction after the engine ran (`result`): the common
    /// tail of every advance, recovery's included.
    async fn settle<C: Context>(
        self: &Arc<Self>,
        execution: &mut SagaExecution<C>,
        outbox: &mut Outbox,
        result: Result<Progress, ExecutionError>,
        reject_on_failure: bool,
        driven: &mut Driven,
    ) -> Result<(), SagaError> {
        let autocommit = execution.settings.autocommit;
        match result {
            Ok(Progress::Paused) => {
                let timeout = execution.settings.timeout_ms;
                execution.deadline_ms =
                    timeout.map(|timeout| clamp_ms(now_ms().saturating_add(timeout)));
                let stored = self.store(execution, outbox, Hold::Release).await?;
                // Armed before publishing: if the publish fails, the timeout still ends the wait.
                if let (Some(timeout), Some(request)) = (timeout, execution.waiting_request()) {
                    self.schedule_expiry(execution.id(), request, Duration::from_millis(timeout));
                }
                self.publish(stored).await?;
            }
            Ok(Progress::Finished) if execution.status() == SagaStatus::Finished && autocommit => {
                driven.failure = self.commit(execution, outbox).await?;
            }
            Ok(Progress::Finished) => {
                let rolled_back = execution.status() == SagaStatus::Errored;
                let rejecting = if rolled_back && reject_on_failure {
                    Some(self.decide_reject(execution, outbox).await?)
                } else {
                    None
                };
                let stored = self.store(execution, outbox, Hold::Release).await?;
                self.publish(stored).await?;
                if let Some(rejecting) = rejecting {
                    self.collect_answers(rejecting).await;
                }
            }
            Err(
                error @ (ExecutionError::StepFailed { .. } | ExecutionError::RollbackFailed { .. }),
            ) => {
                let rejecting = if reject_on_failure {
                    Some(self.decide_reject(execution, outbox).await?)
                } else {
                    None
                };
                let stored = self.store(execution, outbox, Hold::Release).await?;
                self.publish(stored).await?;
                if let Some(rejecting) = rejecting {
                    self.collect_answers(rejecting).await;
                }
                driven.failure = Some(error);
            }
            Err(error) => {
                // Nothing ran (the input was refused after all): let the execution rest again.
                if let Err(release) = self.store(execution, outbox, Hold::Release).await {
                    tracing::warn!(%release, "releasing the execution failed");
                }
                match error {
                    ExecutionError::ReplyRejected { reason, .. } => {
                        driven.rejection = Some(reason);
                    }
                    error => return Err(error.into()),
                }
            }
        }
        Ok(())
    }

    /// Runs the two-phase commit of a finished execution; a failed commit rejects the transaction,
    /// compensates the steps and leaves the execution errored (the returned failure).
    ///
    /// The decision is stored before anyone hears it: the execution is stored `committing` before
    /// the reservations, and `committed` or `rejected` together with the commit or reject messages
    /// (its outbox) before they are sent. A stop before the decision is stored makes recovery run
    /// the reservation again (nobody was told anything final); a stop after it makes recovery send
    /// the stored messages again.
    async fn commit<C: Context>(
        &self,
        execution: &mut SagaExecution<C>,
        outbox: &mut Outbox,
    ) -> Result<Option<ExecutionError>, SagaError> {
        let env = &self.env;
        let mut failure = None;
        execution.transaction = TransactionState::Committing;
        execution.touch();
        let stored = self.store(execution, outbox, Hold::Keep).await?;
        self.publish(stored).await?;
        faults::reach("before-commit");
        let transactions = execution.transactions(env);
        let refusal = match self.committer.phase(Phase::Reserve, &transactions).await {
            Ok(reserved) if reserved.all_accepted() => None,
            Ok(reserved) => {
                let mut services = reserved.refused;
                services.extend(reserved.unanswered);
                tracing::warn!(?services, "reservation failed; rejecting the transaction");
                Some(CommitError::ReservationFailed { services })
            }
            // The outcome of the reservation is unknown: reject, so that nothing stays reserved.
            Err(error) => Some(CommitError::Broker(error)),
        };
        let phase = match refusal {
            None => {
                execution.transaction = TransactionState::Committed;
                Phase::Commit
            }
            Some(error) => {
                execution.mark_errored();
                let mut saver = Saver { inner: self };
                let message = match execution
                    .rollback_checkpointed(env, outbox, &mut saver)
                    .await
                {
                    Ok(()) => error.to_string(),
                    Err(rollback) => format!("{error}; {rollback}"),
                };
                failure = Some(ExecutionError::CommitFailed {
                    id: execution.id(),
                    message,
                });
                execution.transaction = TransactionState::Rejected;
                Phase::Reject
            }
        };
        execution.touch();
        let mut decided = self.committer.prepare(phase, &transactions).await?;
        for message in decided.take_messages() {
            outbox.push(message);
        }
        let stored = self.store(execution, outbox, Hold::Release).await?;
        faults::reach("after-commit");
        self.publish(stored).await?;
        self.collect_answers(decided).await;
        Ok(failure)
    }

    /// Decides to reject the execution's transaction: marks it `rejected` and queues the reject
    /// messages in `outbox`, to be stored with that decision and then sent.
    async fn decide_reject<C: Context>(
        &self,
        execution: &mut SagaExecution<C>,
        outbox: &mut Outbox,
    ) -> Result<PreparedPhase, SagaError> {
        execution.transaction = TransactionState::Rejected;
        execution.touch();
        let transactions = execution.transactions(&self.env);
        let mut rejecting = self.committer.prepare(Phase::Reject, &transactions).await?;
        for message in rejecting.take_messages() {
            outbox.push(message);
        }
        Ok(rejecting)
    }

    /// Waits for the answers to a sent commit or reject phase and reports the missing ones.
    async fn collect_answers(&self, phase: PreparedPhase) {
        let report = self.committer.collect(phase).await;
        if !report.all_accepted() {
            tracing::warn!(
                refused = ?report.refused,
                unanswered = ?report.unanswered,
                "a participant did not acknowledge the transaction's outcome"
            );
        }
    }

    /// Stores the execution with the messages queued in `outbox` (they leave the outbox and go into
    /// the stored row, to be published next) and, with [`Hold::Keep`], this instance as its owner.
    async fn store<C: Context>(
        &self,
        execution: &mut SagaExecution<C>,
        outbox: &mut Outbox,
        hold: Hold,
    ) -> Result<Stored, SagaError> {
        let messages = outbox.drain();
        let lease_until_ms = clamp_ms(now_ms().saturating_add(duration_ms(self.lease)));
        faults::reach("before-store");
        let (result, messages) = execution
            .with_record(async |record: &mut ExecutionRecord| {
                record.pending = messages;
                if hold == Hold::Keep {
                    record.owner = Some(self.instance.clone());
                    record.lease_until_ms = Some(lease_until_ms);
                }
                let result = self.store_record(record).await;
                (result, std::mem::take(&mut record.pending))
            })
            .await
            .map_err(SagaError::Encode)?;
        let version = match result {
            Ok(version) => version,
            Err(error) => {
                // Not stored: they stay queued for the next store.
                outbox.restore(messages);
                return Err(error.into());
            }
        };
        execution.version = version;
        faults::reach("after-store");
        Ok(Stored {
            id: execution.id(),
            version,
            messages,
        })
    }

    /// Stores `record`, retrying storage failures with exponential back-off for up to
    /// `storage_retry`. A retry after a failure whose outcome is unknown (the commit may have
    /// happened before the connection broke) can meet its own earlier write as a conflict: the
    /// stored copy is then compared with the record, and an identical one counts as stored.
    async fn store_record(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        let give_up = Instant::now() + self.storage_retry;
        let mut delay = Duration::from_millis(10);
        let mut retried = false;
        loop {
            match self.repository.store(record).await {
                Ok(version) => return Ok(version),
                Err(RepositoryError::Storage(error)) if Instant::now() + delay < give_up => {
                    tracing::warn!(saga.id = %record.id, %error, ?delay, "storing failed; retrying");
                    retried = true;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(conflict @ RepositoryError::Conflict { found, .. })
                    if retried && found == record.version + 1 =>
                {
                    return match self.repository.load(record.id).await {
                        Ok(stored) if same_but_version(&stored, record) => Ok(found),
                        _ => Err(conflict),
                    };
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Publishes the messages of a store, then marks them published in the stored row (a crash
    /// before that mark makes recovery publish them again: receivers deduplicate by message id).
    async fn publish(&self, stored: Stored) -> Result<(), SagaError> {
        self.try_publish(stored)
            .await
            .map_err(|(error, _)| SagaError::Broker(error))
    }

    /// [`publish`](Self::publish), handing back what was not published when the broker fails (it
    /// stays pending in the stored row).
    async fn try_publish(&self, stored: Stored) -> Result<(), (BrokerError, Vec<BrokerMessage>)> {
        if stored.messages.is_empty() {
            return Ok(());
        }
        let mut messages = stored.messages.into_iter();
        while let Some(message) = messages.next() {
            if let Err(error) = self.broker.publish(message.clone()).await {
                let mut unpublished = vec![message];
                unpublished.extend(messages);
                return Err((error, unpublished));
            }
        }
        faults::reach("after-publish");
        if let Err(error) = self
            .repository
            .mark_published(stored.id, stored.version)
            .await
        {
            tracing::warn!(saga.id = %stored.id, %error, "marking messages published failed; recovery will publish them again");
        }
        Ok(())
    }

    fn schedule_expiry(self: &Arc<Self>, id: Uuid, request: Uuid, after: Duration) {
        if self.expiries.shard(&id).insert(id, request) == Some(request) {
            return; // already armed (a recovery sweep found it again)
        }
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if inner.is_stopping() {
                // Shut down: the deadline is stored, and recovery elsewhere arms it again.
                return;
            }
            {
                let mut expiries = inner.expiries.shard(&id);
                if expiries.get(&id) == Some(&request) {
                    expiries.remove(&id);
                }
            }
            match inner.advance_stored(id, Input::Expire(request)).await {
                Ok(ReplyOutcome::Applied { status, .. }) => {
                    tracing::info!(saga.id = %id, %status, "a paused step timed out");
                }
                Ok(ReplyOutcome::Ignored { .. }) => {}
                Err(error) => {
                    tracing::error!(saga.id = %id, %error, "expiring a paused step failed");
                }
            }
        });
    }
}

/// A registered definition, with its context type erased.
#[async_trait]
pub(crate) trait ErasedSaga: Send + Sync {
    fn name(&self) -> &str;

    fn fingerprint(&self) -> Fingerprint;

    /// The step graph as a Mermaid flowchart.
    fn to_mermaid(&self) -> String;

    /// Recovers a stored execution of this saga (see `recovery`).
    async fn recover(
        &self,
        inner: &Arc<Inner>,
        record: ExecutionRecord,
    ) -> Result<recovery::Recovered, SagaError>;

    /// Advances an execution of this saga; with `keep`, hands the execution back.
    async fn advance(
        &self,
        inner: &Arc<Inner>,
        id: Uuid,
        source: Source,
        input: Input,
        keep: bool,
    ) -> Result<Advanced, SagaError>;
}

pub(crate) struct Typed<C>(pub(crate) Arc<SagaDefinition<C>>);

#[async_trait]
impl<C: Context> ErasedSaga for Typed<C> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn fingerprint(&self) -> Fingerprint {
        self.0.fingerprint()
    }

    fn to_mermaid(&self) -> String {
        self.0.to_mermaid()
    }

    async fn recover(
        &self,
        inner: &Arc<Inner>,
        record: ExecutionRecord,
    ) -> Result<recovery::Recovered, SagaError> {
        inner.recover_execution(&self.0, record).await
    }

    async fn advance(
        &self,
        inner: &Arc<Inner>,
        id: Uuid,
        source: Source,
        input: Input,
        keep: bool,
    ) -> Result<Advanced, SagaError> {
        let mut execution = match source {
            Source::Stored(record) => SagaExecution::from_record(Arc::clone(&self.0), *record)?,
            Source::Parked(parked) => match parked.downcast::<SagaExecution<C>>() {
                Ok(execution) => *execution,
                // Parked by a run of another context type under the same saga name: use the
                // stored copy instead.
                Err(_) => {
                    let record = inner.repository.load(id).await?;
                    SagaExecution::from_record(Arc::clone(&self.0), record)?
                }
            },
        };
        let driven = inner.drive(&mut execution, input).await?;
        let outcome = match driven.rejection {
            Some(reason) => ReplyOutcome::Ignored { id, reason },
            None => ReplyOutcome::Applied {
                id,
                status: execution.status(),
            },
        };
        Ok(Advanced {
            outcome,
            version: execution.version(),
            execution: keep.then(|| Box::new(execution) as Box<dyn Any + Send>),
            failure: driven.failure,
        })
    }
}

/// Receives the service's replies and resumes the executions they name, each in its own task,
/// until `stop` turns true. Every task holds a clone of `working`, as does the listener itself.
async fn listen(
    inner: Weak<Inner>,
    mut subscription: Subscription,
    mut stop: watch::Receiver<bool>,
    working: watch::Receiver<()>,
) {
    loop {
        let delivery = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            delivery = subscription.next() => delivery,
        };
        let Some(delivery) = delivery else {
            break;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let working = working.clone();
        tokio::spawn(async move {
            handle_delivery(&inner, delivery).await;
            drop(working);
        });
    }
    // What was received but not taken goes back to the broker.
    drop(subscription);
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Handles one delivery of the reply topic and settles it.
async fn handle_delivery(inner: &Arc<Inner>, delivery: Delivery) {
    let counters = &inner.counters;
    let message_id = delivery.message().id;
    let reply = match SagaResponse::from_message(delivery.message()) {
        Ok(reply) => reply,
        Err(error) => {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%message_id, %error, "dead-lettering a message that is not a saga reply");
            dead_letter(counters, delivery, error.to_string()).await;
            return;
        }
    };
    let id = reply.saga();
    match inner.advance_stored(id, Input::Reply(reply)).await {
        Ok(ReplyOutcome::Applied { .. }) => {
            counters.applied.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ReplyOutcome::Ignored {
            reason: ReplyRejection::UnknownExecution,
            ..
        }) => {
            counters.unknown.fetch_add(1, Ordering::Relaxed);
            tracing::info!(saga.id = %id, %message_id, "ignored a reply for an execution that is not stored");
        }
        Ok(ReplyOutcome::Ignored { id, reason }) => {
            counters.ignored.fetch_add(1, Ordering::Relaxed);
            tracing::info!(saga.id = %id, %message_id, %reason, "ignored a reply");
            if reason == ReplyRejection::ExecutionEnded(SagaStatus::Errored)
                && let Err(error) = reject_late_work(inner, delivery.message()).await
            {
                tracing::warn!(saga.id = %id, %message_id, %error, "could not reject a late reply's work; asking for the reply again");
                if let Err(error) = delivery.nack().await {
                    tracing::warn!(%message_id, %error, "asking for a redelivery failed");
                }
                return;
            }
        }
        Err(error) if is_transient(&error) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            // Storage or transport trouble: have the reply delivered again.
            tracing::warn!(saga.id = %id, %message_id, %error, "handling a reply failed; asking for redelivery");
            if let Err(error) = delivery.nack().await {
                tracing::warn!(%message_id, %error, "asking for a redelivery failed");
            }
            return;
        }
        Err(error) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(saga.id = %id, %message_id, %error, "handling a reply failed for good; dead-lettering it");
            dead_letter(counters, delivery, error.to_string()).await;
            return;
        }
    }
    if let Err(error) = delivery.ack().await {
        tracing::warn!(%message_id, %error, "acknowledging a reply failed");
    }
}

/// Rejects, at the service that sent `reply`, the transaction its command ran in, when the reply
/// comes after its execution was rejected (the step gave up waiting: a timeout). That service did
/// the work without being part of the decision, so no reject reached it; its tentative work would
/// stay staged for ever. A reject is idempotent, so a service that did get one, or staged nothing,
/// is not harmed; a reply that names no service or no transaction leaves nothing to reject.
async fn reject_late_work(inner: &Inner, reply: &BrokerMessage) -> Result<(), BrokerError> {
    let (Some(service), Some(transactions)) = (
        reply.headers.get(header::SERVICE),
        crate::message::parse_transactions(reply),
    ) else {
        return Ok(());
    };
    let Some(transaction) = transactions.last() else {
        return Ok(());
    };
    tracing::info!(%service, %transaction, "rejecting the work of a reply that came after its saga was rejected");
    let reject = BrokerMessage::new(
        Phase::Reject.topic(service),
        serde_json::Value::String(transaction.to_string()),
    )
    .with_header(header::TRANSACTION, transaction.to_string())
    .with_header(header::SAGA, transaction.to_string());
    inner.broker.publish(reject).await
}

/// Sets `delivery` aside with `reason`, and counts it.
async fn dead_letter(counters: &Counters, delivery: Delivery, reason: String) {
    let message_id = delivery.message().id;
    match delivery.dead_letter(reason).await {
        Ok(()) => {
            counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            // The broker asked for a redelivery instead: it comes back and is set aside then.
            tracing::warn!(%message_id, %error, "dead-lettering a reply failed");
        }
    }
}

/// Whether a failure may pass if the same reply is handled again later.
fn is_transient(error: &SagaError) -> bool {
    matches!(
        error,
        SagaError::Repository(RepositoryError::Storage(_) | RepositoryError::Conflict { .. })
            | SagaError::Broker(_)
            | SagaError::Busy { .. }
            // Registered later by a run, or known to another instance.
            | SagaError::Load(LoadError::UnknownSaga { .. })
    )
}

/// Why `input` does not fit `execution` now, if it does not: a reply or an expiry that is not
/// awaited is ignored (`Some`); a commit or rollback that cannot be done is an error.
fn refusal<C: Context>(
    execution: &SagaExecution<C>,
    input: &Input,
) -> Result<Option<ReplyRejection>, SagaError> {
    match input {
        Input::Start => Ok(None),
        Input::Reply(reply) => match execution.check_reply(reply) {
            Ok(()) => Ok(None),
            Err(ExecutionError::ReplyRejected { reason, .. }) => Ok(Some(reason)),
            Err(error) => Err(error.into()),
        },
        Input::Expire(request) => {
            Ok((!execution.is_waiting_for(*request)).then_some(ReplyRejection::NotWaiting))
        }
        Input::Commit => {
            if execution.status() != SagaStatus::Finished
                || execution.transaction != TransactionState::Open
            {
                return Err(ExecutionError::CannotCommit {
                    id: execution.id(),
                    status: execution.status(),
                    transaction: execution.transaction,
                }
                .into());
            }
            Ok(None)
        }
        Input::Rollback => {
            if execution.already_rollback() {
                return Err(ExecutionError::AlreadyRolledBack {
                    id: execution.id(),
                    what: execution.definition().name().to_owned(),
                }
                .into());
            }
            Ok(None)
        }
    }
}

/// Whether `stored` is `record` as stored by an earlier attempt (all but the version equal).
fn same_but_version(stored: &ExecutionRecord, record: &ExecutionRecord) -> bool {
    let mut mine = record.clone();
    mine.version = stored.version;
    // Recovery elsewhere may have published and cleared the pending messages since.
    mine.pending.clone_from(&stored.pending);
    mine == *stored
}

/// The checkpoint of the manager's advances: stores the execution (held) with what it emitted so
/// far, and publishes that.
struct Saver<'i> {
    inner: &'i Inner,
}

impl<C: Context> Checkpoint<C> for Saver<'_> {
    fn save<'a>(
        &'a mut self,
        execution: &'a mut SagaExecution<C>,
        outbox: &'a mut Outbox,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let stored = self
                .inner
                .store(execution, outbox, Hold::Keep)
                .await
                .map_err(|error| error.to_string())?;
            if let Err((error, unpublished)) = self.inner.try_publish(stored).await {
                // Kept queued, so that the next store keeps them pending (and they go out then or
                // through recovery); the compensation goes on.
                tracing::warn!(%error, "publishing at a checkpoint failed");
                outbox.restore(unpublished);
            }
            faults::reach("before-compensation");
            Ok(())
        })
    }
}

/// A timestamp every backend can store (SQL integers are signed 64-bit).
fn clamp_ms(ms: u64) -> u64 {
    ms.min(i64::MAX as u64)
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
