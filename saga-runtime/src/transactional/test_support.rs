//! What the unit tests of the participant share: a participant's state over an in-process broker
//! that records what is published and an in-memory store, and a broker and a store that fail.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use super::callbacks::Callbacks;
use super::participant::Inner;
use crate::broker::{Broker, InProcessBroker, Subscription};
use crate::error::BrokerError;
use crate::message::BrokerMessage;
use crate::participant_store::{
    CommandAnswer, InMemoryParticipantStore, Outcome, ParticipantStore, ParticipantStoreError,
    StagedEffect, Staging,
};

/// A participant's state, without its tasks: the tests call its methods one message at a time.
pub(super) struct Harness {
    /// Records every reply (when it is the participant's broker).
    pub(super) broker: InProcessBroker,
    pub(super) store: Arc<InMemoryParticipantStore>,
    pub(super) inner: Inner,
}

impl Harness {
    pub(super) const SERVICE: &'static str = "stock";

    pub(super) fn new() -> Self {
        Self::with_callbacks(Callbacks::default())
    }

    pub(super) fn with_callbacks(callbacks: Callbacks) -> Self {
        let broker = InProcessBroker::with_history();
        let store = Arc::new(InMemoryParticipantStore::new());
        let inner = Inner::new(
            Self::SERVICE.to_owned(),
            Arc::new(broker.clone()),
            Arc::clone(&store) as Arc<dyn ParticipantStore>,
            callbacks,
        );
        Self {
            broker,
            store,
            inner,
        }
    }

    /// Answers over `broker` instead.
    pub(super) fn with_broker(broker: Arc<dyn Broker>) -> Self {
        let mut harness = Self::new();
        harness.inner.broker = broker;
        harness
    }

    /// Keeps its effects in `store` instead.
    pub(super) fn with_store(store: Arc<dyn ParticipantStore>) -> Self {
        let mut harness = Self::new();
        harness.inner.store = store;
        harness
    }

    /// Stages one effect of topic `Book` under `key` in `transaction`, as a command would (a
    /// command of its own, answered `null`).
    pub(super) async fn stage(&self, transaction: Uuid, key: &str) -> StagedEffect {
        let effect = StagedEffect {
            topic: "Book".to_owned(),
            key: key.to_owned(),
            effect: Value::from(key),
        };
        let answer = CommandAnswer {
            content: Value::Null,
            related_services: None,
        };
        let effects = std::slice::from_ref(&effect);
        let staging = self
            .store
            .stage(transaction, Uuid::new_v4(), effects, &answer);
        assert_eq!(staging.await.unwrap(), Staging::Staged);
        effect
    }

    /// The one message published so far.
    pub(super) fn only_reply(&self) -> BrokerMessage {
        let mut published = self.broker.history();
        assert_eq!(published.len(), 1, "one reply: {published:?}");
        published.remove(0)
    }
}

fn unreachable() -> ParticipantStoreError {
    ParticipantStoreError::Storage("the database is unreachable".into())
}

/// A broker that takes nothing.
pub(super) struct UnreachableBroker;

#[async_trait]
impl Broker for UnreachableBroker {
    async fn publish(&self, _message: BrokerMessage) -> Result<(), BrokerError> {
        Err(BrokerError::Closed)
    }

    async fn subscribe(&self, _topic: &str) -> Result<Subscription, BrokerError> {
        Err(BrokerError::Closed)
    }
}

/// A store whose database cannot be reached.
pub(super) struct UnreachableStore;

#[async_trait]
impl ParticipantStore for UnreachableStore {
    async fn stage(
        &self,
        _transaction: Uuid,
        _command: Uuid,
        _effects: &[StagedEffect],
        _answer: &CommandAnswer,
    ) -> Result<Staging, ParticipantStoreError> {
        Err(unreachable())
    }

    async fn answered(
        &self,
        _command: Uuid,
    ) -> Result<Option<CommandAnswer>, ParticipantStoreError> {
        Err(unreachable())
    }

    async fn forget_answers(&self, _before: SystemTime) -> Result<u64, ParticipantStoreError> {
        Err(unreachable())
    }

    async fn reserve(&self, _transaction: Uuid) -> Result<(), ParticipantStoreError> {
        Err(unreachable())
    }

    async fn staged(&self, _transaction: Uuid) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        Err(unreachable())
    }

    async fn expired_reservations(
        &self,
        _before: SystemTime,
    ) -> Result<Vec<Uuid>, ParticipantStoreError> {
        Err(unreachable())
    }

    async fn decide(
        &self,
        _transaction: Uuid,
        _outcome: Outcome,
    ) -> Result<Outcome, ParticipantStoreError> {
        Err(unreachable())
    }

    async fn outcome(&self, _transaction: Uuid) -> Result<Option<Outcome>, ParticipantStoreError> {
        Err(unreachable())
    }

    async fn remove_settled(
        &self,
        _transaction: Uuid,
        _count: usize,
    ) -> Result<usize, ParticipantStoreError> {
        Err(unreachable())
    }

    async fn unfinished(
        &self,
        _before: SystemTime,
    ) -> Result<Vec<(Uuid, Outcome)>, ParticipantStoreError> {
        Err(unreachable())
    }
}
