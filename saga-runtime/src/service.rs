//! A service: one name, one repository, one broker, and everything a service of a saga system
//! does on them.

use std::sync::Arc;

use crate::broker::{Broker, InProcessBroker};
use crate::error::BrokerError;
use crate::manager::{SagaError, SagaManager, SagaManagerBuilder};
use crate::registry::{Registry, RegistryError};
use crate::repository::{InMemoryRepository, SagaExecutionRepository};
use crate::shared::Shared;
use crate::transactional::{
    CommandRegistration, DuplicateTopic, InMemoryParticipantStore, ParticipantStore,
    TransactionalParticipant, TransactionalParticipantBuilder,
};

/// The environment variable [`SagaService::from_env`] reads the service name from.
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) const SERVICE_NAME_VARIABLE: &str = "SAGA_SERVICE_NAME";

/// Why a service did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No service name: the builder was given an empty one, or the environment has none.
    #[error("no service name: set {SERVICE_NAME_VARIABLE} or give one to the builder")]
    MissingName,
    /// Two sagas registered with `#[saga]` cannot share the registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Two `#[transactional_command]` handlers claim one topic.
    #[error(transparent)]
    DuplicateTopic(#[from] DuplicateTopic),
    /// The saga manager did not start (subscribing to the reply topic, registering the sagas).
    #[error(transparent)]
    Manager(#[from] SagaError),
    /// The participant could not subscribe to its topics.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

type ManagerSettings = Box<dyn FnOnce(SagaManagerBuilder) -> SagaManagerBuilder + Send>;
type ParticipantSettings =
    Box<dyn FnOnce(TransactionalParticipantBuilder) -> TransactionalParticipantBuilder + Send>;
type CommandFilter = Box<dyn Fn(&CommandRegistration) -> bool + Send>;

/// Builds a [`SagaService`].
#[must_use = "call `start().await` to start the service"]
pub struct SagaServiceBuilder {
    name: String,
    repository: Option<Arc<dyn SagaExecutionRepository>>,
    broker: Option<Arc<dyn Broker>>,
    participant_store: Option<Arc<dyn ParticipantStore>>,
    registry: Option<Registry>,
    commands: Option<CommandFilter>,
    manager: Vec<ManagerSettings>,
    participant: Vec<ParticipantSettings>,
}

impl SagaServiceBuilder {
    /// Where the executions of the sagas it runs are stored (default: in memory, lost with the
    /// process; `SqliteRepository` is the embedded durable choice, `PostgresRepository` the one
    /// several instances share).
    /// A repository, or one shared as an `Arc`.
    pub fn repository(mut self, repository: impl Shared<dyn SagaExecutionRepository>) -> Self {
        self.repository = Some(repository.into_shared());
        self
    }

    /// The broker it speaks through (default: a new [`InProcessBroker`], which reaches only this
    /// process). A broker, or one shared as an `Arc` (several services of one process on one
    /// in-process broker).
    pub fn broker(mut self, broker: impl Shared<dyn Broker>) -> Self {
        self.broker = Some(broker.into_shared());
        self
    }

    /// Where its transactional commands keep their staged effects until their transaction settles
    /// (default: in memory; a participant that must keep its tentative work across a restart gives
    /// `SqliteParticipantStore` or `PostgresParticipantStore`).
    /// A store, or one shared as an `Arc`.
    pub fn participant_store(mut self, store: impl Shared<dyn ParticipantStore>) -> Self {
        self.participant_store = Some(store.into_shared());
        self
    }

    /// The sagas it can run and resume (default: every `#[saga]` linked into the binary,
    /// [`Registry::from_inventory`]).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Which of the `#[transactional_command]` handlers linked into the binary this service
    /// answers (default: all of them). A binary that holds several services' handlers (a demo that
    /// runs them in one process) picks each service's own, e.g. by
    /// [`module_path`](CommandRegistration::module_path).
    pub fn commands(
        mut self,
        filter: impl Fn(&CommandRegistration) -> bool + Send + 'static,
    ) -> Self {
        self.commands = Some(Box::new(filter));
        self
    }

    /// Adjusts the saga manager's settings (instance name, lease, recovery, retention, commit
    /// timeout...): `.manager(|manager| manager.lease(Duration::from_secs(30)))`.
    pub fn manager(
        mut self,
        settings: impl FnOnce(SagaManagerBuilder) -> SagaManagerBuilder + Send + 'static,
    ) -> Self {
        self.manager.push(Box::new(settings));
        self
    }

    /// Adjusts the transactional participant: more command handlers or callbacks, the reservation
    /// timeout: `.participant(|participant| participant.reservation_timeout(..))`.
    pub fn participant(
        mut self,
        settings: impl FnOnce(TransactionalParticipantBuilder) -> TransactionalParticipantBuilder
        + Send
        + 'static,
    ) -> Self {
        self.participant.push(Box::new(settings));
        self
    }

    /// Starts the service: the participant subscribes to its command and transaction topics, then
    /// the manager subscribes to `{name}Reply` and runs a recovery sweep (and the periodic ones).
    ///
    /// The participant starts first, so that the commands and the two-phase commit messages which
    /// recovery sends to this very service find it listening.
    pub async fn start(self) -> Result<SagaService, ServiceError> {
        if self.name.trim().is_empty() {
            return Err(ServiceError::MissingName);
        }
        let broker = self
            .broker
            .unwrap_or_else(|| Arc::new(InProcessBroker::new()));
        let repository = self
            .repository
            .unwrap_or_else(|| Arc::new(InMemoryRepository::new()));
        let store = self
            .participant_store
            .unwrap_or_else(|| Arc::new(InMemoryParticipantStore::new()));
        let registry = match self.registry {
            Some(registry) => registry,
            None => Registry::from_inventory()?,
        };

        let participant = match &self.commands {
            None => {
                TransactionalParticipant::from_inventory(&self.name, Arc::clone(&broker), store)?
            }
            Some(filter) => TransactionalParticipant::from_inventory_where(
                &self.name,
                Arc::clone(&broker),
                store,
                filter,
            )?,
        };
        let participant = self
            .participant
            .into_iter()
            .fold(participant, |builder, settings| settings(builder))
            .spawn()
            .await?;

        let manager = SagaManager::builder(&self.name)
            .broker(broker)
            .repository(repository)
            .registry(registry);
        let manager = match self
            .manager
            .into_iter()
            .fold(manager, |builder, settings| settings(builder))
            .build()
            .await
        {
            Ok(manager) => manager,
            Err(error) => {
                participant.shutdown().await;
                return Err(error.into());
            }
        };
        tracing::info!(service = %self.name, instance = %manager.instance(), "saga service started");
        Ok(SagaService {
            name: self.name,
            manager,
            participant,
        })
    }
}

/// A running service: its saga manager and its transactional participant.
///
/// [`SagaService::builder`] wires the pieces a service otherwise assembles by hand:
///
/// - a [`SagaManager`] that runs the sagas registered with `#[saga]` (a [`Registry::from_inventory`]),
///   listens for replies on `{name}Reply` and, on start, recovers what a previous instance left;
/// - a [`TransactionalParticipant`] that answers every `#[transactional_command]` topic linked into
///   the binary and the service's own `_Reserve/_Commit/_Reject{Name}Transaction` topics (a service
///   that runs sagas takes part in their two-phase commit too).
///
/// ```
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use saga_runtime::wiring::*;
///
/// let service = SagaService::builder("order")       // replies arrive on `orderReply`
///     .repository(InMemoryRepository::new())        // `SqliteRepository`, `PostgresRepository`
///     .broker(InProcessBroker::new())               // or `NatsBroker`
///     .start()
///     .await?;
/// // service.manager().run_saga::<CreateOrder>(order, RunOptions::default()).await?;
/// service.shutdown().await;
/// # Ok(())
/// # }
/// ```
///
/// [`shutdown`](SagaService::shutdown) is graceful: the service stops taking messages, finishes
/// the ones in hand (handled, answered, acknowledged) and stops its background work; what it did
/// not take stays with the broker for the next instance. Dropping it stops its background tasks
/// abruptly.
#[derive(Debug)]
pub struct SagaService {
    name: String,
    manager: SagaManager,
    participant: TransactionalParticipant,
}

impl SagaService {
    /// Starts building service `name`: its replies arrive on `{name}Reply`, its transaction
    /// messages on `_Reserve{Name}Transaction` and the like.
    pub fn builder(name: impl Into<String>) -> SagaServiceBuilder {
        SagaServiceBuilder {
            name: name.into(),
            repository: None,
            broker: None,
            participant_store: None,
            registry: None,
            commands: None,
            manager: Vec::new(),
            participant: Vec::new(),
        }
    }

    /// Starts building the service named by the environment variable `SAGA_SERVICE_NAME`
    /// ([`SERVICE_NAME_VARIABLE`]), as deployments configure it.
    pub fn from_env() -> Result<SagaServiceBuilder, ServiceError> {
        service_name_from_env().map(Self::builder)
    }

    /// The service name.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Its saga manager: runs sagas, resumes them with replies, recovers them.
    pub fn manager(&self) -> &SagaManager {
        &self.manager
    }

    /// Its transactional participant: answers commands and the two-phase commit.
    pub fn participant(&self) -> &TransactionalParticipant {
        &self.participant
    }

    /// Stops gracefully: takes no more messages, finishes those in hand (each handled, answered
    /// and acknowledged), stops recovery sweeps and the reservation sweeper. Messages not taken
    /// stay with the broker for the next instance. Runs still waiting in memory end with
    /// [`SagaError::Shutdown`]; their executions stay stored and resumable.
    pub async fn shutdown(&self) {
        tracing::info!(service = %self.name, "saga service stopping");
        self.manager.shutdown().await;
        self.participant.shutdown().await;
        tracing::info!(service = %self.name, "saga service stopped");
    }
}

/// The service name from the environment variable `SAGA_SERVICE_NAME`.
pub(crate) fn service_name_from_env() -> Result<String, ServiceError> {
    std::env::var(SERVICE_NAME_VARIABLE)
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .ok_or(ServiceError::MissingName)
}
