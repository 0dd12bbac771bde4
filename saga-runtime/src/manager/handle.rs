//! The public handle of a manager: runs sagas and waits for them, resumes executions with replies,
//! commits and rolls them back by hand, and shuts the manager down.

use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::advance::Input;
use super::{
    Inner, RecoveryReport, ReplyOutcome, ReplyStats, RunOptions, RunOutcome, SagaError,
    SagaManagerBuilder, duration_ms,
};
use crate::broker::Broker;
use crate::context::Context;
use crate::definition::IntoDefinition;
use crate::error::{ExecutionError, LoadError, RepositoryError};
use crate::execution::{ExecutionEnv, SagaExecution, SagaStatus};
use crate::message::{BrokerMessage, SagaResponse, header};
use crate::registry::SagaType;
use crate::repository::SagaExecutionRepository;
use crate::request_scope::RequestHeaders;

/// Runs and resumes saga executions for one service.
///
/// Cheap to clone. [`shutdown`](Self::shutdown) stops the reply listener and the recovery sweeps
/// gracefully; without it, they are aborted when the last clone is dropped.
#[derive(Clone)]
pub struct SagaManager {
    pub(super) inner: Arc<Inner>,
    pub(super) background: Arc<Background>,
}

impl std::fmt::Debug for SagaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaManager")
            .field("service", &self.inner.env.service())
            .finish_non_exhaustive()
    }
}

/// The manager's background work: the reply listener, the reply tasks it spawned and the recovery
/// sweeps. Each of them holds a receiver of `alive`, so that its sender sees them all gone.
///
/// When the last manager handle goes, the listener and the sweeps are aborted (a reply task
/// already spawned finishes on its own).
pub(super) struct Background {
    pub(super) tasks: Vec<JoinHandle<()>>,
    pub(super) alive: watch::Sender<()>,
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
        SagaManagerBuilder::new(service.into())
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
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn is_shut_down(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// Runs one recovery sweep now (the manager also runs one when it is built and then one per
    /// lease period, unless [`SagaManagerBuilder::recover_on_start`] turned them off) and reports
    /// what it did. What recovery does with each kind of execution is described in the crate's
    /// manual (chapter "Durability and recovery").
    pub async fn recover(&self) -> RecoveryReport {
        self.inner.recover().await
    }

    /// The service's execution environment.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn env(&self) -> &ExecutionEnv {
        &self.inner.env
    }

    /// The repository.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn repository(&self) -> &Arc<dyn SagaExecutionRepository> {
        &self.inner.repository
    }

    /// The broker.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// What the reply listener did so far.
    pub fn reply_stats(&self) -> ReplyStats {
        self.inner.counters.snapshot()
    }

    /// Makes `definition` known, so that stored executions of it can be resumed by name.
    pub fn register<C: Context>(
        &self,
        definition: impl IntoDefinition<C>,
    ) -> Result<(), SagaError> {
        self.inner.sagas.register(definition.into_definition())
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
        self.inner.sagas.register(Arc::clone(&definition))?;
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
        if let Some(id) = options.id {
            execution = execution.with_id(id);
        }
        execution.settings.autocommit = options.autocommit;
        execution.settings.timeout_ms = options.timeout.map(duration_ms);
        let id = execution.id();

        let guard = self.inner.locks.lock(id).await;
        if options.id.is_some() && self.is_stored(id).await? {
            drop(guard);
            return self.outcome_of_started(&definition, id, &options).await;
        }
        let advanced = match self.inner.advance(&mut execution, Input::Start).await {
            // Another instance stored its claim on this id first: nothing ran here.
            Err(SagaError::Repository(RepositoryError::Conflict { .. }))
                if options.id.is_some() =>
            {
                drop(guard);
                return self.outcome_of_started(&definition, id, &options).await;
            }
            Err(error) => return Err(self.started_or_not(id, error).await),
            Ok(advanced) => advanced,
        };
        let (execution, failure) =
            if !options.pause_on_disk && execution.status() == SagaStatus::Paused {
                // Parked under the lock, so that the reply cannot be handled before it is parked.
                let (waiter, completion) = oneshot::channel();
                self.inner.park(Box::new(execution), waiter);
                drop(guard);
                let completion = completion.await.map_err(|_| SagaError::Shutdown { id })??;
                let execution = completion
                    .execution
                    .into_any()
                    .downcast::<SagaExecution<C>>()
                    .map_err(|_| LoadError::WrongSaga {
                        id,
                        stored: definition.name().to_owned(),
                        expected: definition.name().to_owned(),
                    })?;
                (*execution, completion.failure)
            } else {
                drop(guard);
                (execution, advanced.failure)
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
        self.inner.apply(reply.saga(), Input::Reply(reply)).await
    }

    /// Reads `message` as a reply and resumes the execution it names.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn handle_reply(
        &self,
        message: &BrokerMessage,
    ) -> Result<ReplyOutcome, SagaError> {
        let reply = SagaResponse::from_message(message)?;
        self.resume(reply).await
    }

    /// Compensates a stored execution by hand: its executed steps in reverse order (and a remote
    /// step still waiting for its reply: its command was sent), then, with its autocommit setting,
    /// rejects its transactions, unless it had finished: a committed transaction is final, so a
    /// finished saga is only compensated. A second rollback is an error and sends nothing. A run
    /// waiting in memory for the execution returns [`ExecutionError::RolledBack`].
    pub async fn rollback(&self, id: Uuid) -> Result<SagaStatus, SagaError> {
        match self.inner.apply(id, Input::Rollback).await? {
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
        match self.inner.apply(id, Input::Commit).await? {
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
