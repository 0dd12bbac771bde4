//! Shared fixtures of the integration tests: a manager for service `order` on an in-process broker
//! that records every message, and helpers to answer the commands it publishes; [`TestDatabase`], a
//! fresh schema on the PostgreSQL server named by `SAGA_TEST_POSTGRES_URL`; [`TestNats`], a stream
//! of its own on the NATS server named by `SAGA_TEST_NATS_URL`; [`shop`], three services over both
//! that count what their steps and participants did.

pub mod faulty;
pub mod jobs;
mod nats;
mod postgres;
mod reply_counts;
pub mod shop;

pub use nats::TestNats;
pub use postgres::TestDatabase;
pub use reply_counts::ReplyCounts;

use std::sync::Arc;
use std::time::Duration;

use saga_runtime::broker::Broker;
use saga_runtime::broker::{BrokerMessage, Headers};
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_testkit::{ScriptedParticipant, ScriptedParticipantBuilder};
use serde_json::Value;
use uuid::Uuid;

/// The service the tests' sagas run in.
pub const SERVICE: &str = "order";

/// A manager for service [`SERVICE`], its broker and its repository.
pub struct Harness {
    /// The broker; it records every published message.
    pub broker: InProcessBroker,
    /// The manager.
    pub manager: SagaManager,
    /// The repository behind the manager.
    pub repository: Arc<InMemoryRepository>,
}

impl Harness {
    /// A fresh harness (commit phases wait at most 2 s).
    pub async fn new() -> Self {
        Self::with_commit_timeout(Duration::from_secs(2)).await
    }

    /// A fresh harness whose commit phases wait at most `timeout`.
    pub async fn with_commit_timeout(timeout: Duration) -> Self {
        let broker = InProcessBroker::with_history();
        let repository = Arc::new(InMemoryRepository::new());
        let manager = SagaManager::builder(SERVICE)
            .broker(Arc::new(broker.clone()))
            .repository(repository.clone())
            .commit_timeout(timeout)
            .build()
            .await
            .expect("the manager starts");
        Self {
            broker,
            manager,
            repository,
        }
    }

    /// The broker as a trait object, to start participants on it.
    pub fn broker(&self) -> Arc<dyn Broker> {
        Arc::new(self.broker.clone())
    }

    /// Starts building a participant on the harness's broker.
    pub fn participant(&self, service: &str) -> ScriptedParticipantBuilder {
        ScriptedParticipant::builder(service, self.broker())
    }

    /// Starts participants that accept every reservation for each of `services`.
    pub async fn accepting(&self, services: &[&str]) -> Vec<ScriptedParticipant> {
        let mut participants = Vec::new();
        for service in services {
            participants.push(
                self.participant(service)
                    .spawn()
                    .await
                    .expect("the participant starts"),
            );
        }
        participants
    }

    /// Every message published so far that is not a reply, in order.
    pub fn sent(&self) -> Vec<BrokerMessage> {
        self.broker
            .history()
            .into_iter()
            .filter(|message| message.correlation_id.is_none())
            .collect()
    }

    /// The topics of [`sent`](Self::sent).
    pub fn sent_topics(&self) -> Vec<String> {
        self.sent()
            .into_iter()
            .map(|message| message.topic)
            .collect()
    }

    /// Forgets the recorded messages.
    pub fn clear(&self) {
        self.broker.clear_history();
    }
}

/// A reply to `command` with `status`, `content` and the participant's `related` services.
pub fn reply_to(
    command: &BrokerMessage,
    status: SagaResponseStatus,
    content: Value,
    related: &[&str],
) -> SagaResponse {
    let saga = command.saga_id().expect("a saga command names its saga");
    SagaResponse::new(saga, command.id, status, &content)
        .expect("JSON content encodes")
        .with_related_services(related.iter().copied())
}

/// Waits (up to 5 s) until `condition` holds, polling every millisecond.
pub async fn eventually(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition did not hold within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits up to `limit` until the asynchronous `condition` holds, checking every 20 ms; fails naming
/// `what` otherwise.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A published message, with a private commit reply topic reduced to its shape.
#[derive(Debug, PartialEq)]
pub struct Sent {
    /// The topic.
    pub topic: String,
    /// The headers.
    pub headers: Headers,
    /// The reply topic (a private one as `orderReply.<private>`).
    pub reply_to: Option<String>,
    /// The content.
    pub payload: Value,
}

/// The summary of `message`.
pub fn summary(message: &BrokerMessage) -> Sent {
    let reply_to = message
        .reply_to
        .as_ref()
        .map(|topic| match topic.strip_prefix("orderReply.") {
            Some(suffix) if suffix.len() == 32 && suffix.chars().all(|c| c.is_ascii_hexdigit()) => {
                "orderReply.<private>".to_owned()
            }
            _ => topic.clone(),
        });
    Sent {
        topic: message.topic.clone(),
        headers: message.headers.clone(),
        reply_to,
        payload: message.payload.clone(),
    }
}

/// The summaries of `messages`.
pub fn summaries(messages: &[BrokerMessage]) -> Vec<Sent> {
    messages.iter().map(summary).collect()
}

/// The sagas submitted with `inventory` by the items of `module` (`module_path!()`) and its
/// submodules: the registry a test module would gather if it were a binary of its own.
pub fn module_registry(module: &str) -> Result<Registry, saga_runtime::error::RegistryError> {
    Registry::from_inventory_where(|saga| {
        saga.type_name()
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with("::"))
    })
}

/// Headers from name/value pairs.
pub fn headers(pairs: &[(&str, String)]) -> Headers {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

/// A saga command (or compensation) of execution `id` run by user `U`.
pub fn command(topic: &str, id: Uuid, payload: Value) -> Sent {
    Sent {
        topic: topic.to_owned(),
        headers: headers(&[
            ("saga", id.to_string()),
            ("transactions", id.to_string()),
            ("user", "U".to_owned()),
        ]),
        reply_to: Some("orderReply".to_owned()),
        payload,
    }
}

/// A two-phase-commit message about transaction `id`.
pub fn transaction(topic: &str, id: Uuid) -> Sent {
    Sent {
        topic: topic.to_owned(),
        headers: headers(&[("saga", id.to_string()), ("transaction", id.to_string())]),
        reply_to: Some("orderReply.<private>".to_owned()),
        payload: Value::String(id.to_string()),
    }
}

/// Asserts that a macro-declared definition is the builder-made one: same name, fingerprint, and
/// steps (names and kinds, in order).
pub fn assert_same_definition<C>(declared: &SagaDefinition<C>, built: &SagaDefinition<C>) {
    let steps = |definition: &SagaDefinition<C>| {
        definition
            .steps()
            .iter()
            .map(|step| (step.name().to_owned(), step.kind()))
            .collect::<Vec<_>>()
    };
    assert_eq!(declared.name(), built.name());
    assert_eq!(
        declared.fingerprint(),
        built.fingerprint(),
        "{}",
        built.name()
    );
    assert_eq!(steps(declared), steps(built), "{}", built.name());
}

/// Runs each `scenario(definition)` twice, as `scenario::builder` with `builder()` and as
/// `scenario::macros` with the definition of saga type `Declared`: the definition is the only
/// difference.
#[macro_export]
macro_rules! with_both_definitions {
    ($builder:ident, $declared:ident: $($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn builder() {
                super::$scenario(super::$builder()).await;
            }

            #[tokio::test]
            async fn macros() {
                super::$scenario(
                    <super::$declared as ::saga_runtime::SagaType>::definition(),
                )
                .await;
            }
        }
    )+};
}

/// The stored execution `id` of `saga`, loaded through the harness's manager.
pub async fn load<C: Context>(
    harness: &Harness,
    saga: &Arc<SagaDefinition<C>>,
    id: uuid::Uuid,
) -> SagaExecution<C> {
    harness
        .manager
        .load(Arc::clone(saga), id)
        .await
        .expect("the execution is stored")
}
