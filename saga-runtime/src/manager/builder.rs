//! Building a manager: its settings, then the subscription to the reply topic, the reply listener,
//! the start-up recovery and the periodic sweeps.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::handle::Background;
use super::{Inner, SagaError, SagaManager, listener, recovery};
use crate::broker::{Broker, InProcessBroker};
use crate::committer::TransactionCommitter;
use crate::execution::ExecutionEnv;
use crate::registry::Registry;
use crate::repository::{InMemoryRepository, SagaExecutionRepository};
use crate::shared::Shared;

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
    /// The defaults, for service `service`.
    pub(super) fn new(service: String) -> Self {
        Self {
            service,
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

    /// The repository (default: a new [`InMemoryRepository`]): a repository, or one shared as an
    /// `Arc`.
    pub fn repository(mut self, repository: impl Shared<dyn SagaExecutionRepository>) -> Self {
        self.repository = Some(repository.into_shared());
        self
    }

    /// The broker (default: a new [`InProcessBroker`]): a broker, or one shared as an `Arc`.
    pub fn broker(mut self, broker: impl Shared<dyn Broker>) -> Self {
        self.broker = Some(broker.into_shared());
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
            sagas: Default::default(),
            locks: Default::default(),
            parked: Default::default(),
            expiries: Default::default(),
            counters: Default::default(),
            recent_replies: Default::default(),
            instance,
            lease: self.lease,
            storage_retry: self.storage_retry,
            retention: self.retention,
            stopping,
        });
        for saga in self.registry.erased() {
            inner.sagas.insert(saga)?;
        }
        let (alive, working) = watch::channel(());
        let mut tasks = vec![tokio::spawn(listener::listen(
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
