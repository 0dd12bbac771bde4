//! A scripted participant: a test double that answers commands with closures and the two-phase
//! commit's reserve/commit/reject messages with a policy, and keeps a log of what it received.
//!
//! It is what tests and benchmarks put on the other side of a saga to script a service's answers.
//! It stores nothing and runs no effects: a real service uses
//! `saga_runtime::transactional::TransactionalParticipant`.

use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

use saga_runtime::SagaResponseStatus;
use saga_runtime::broker::Broker;
use saga_runtime::broker::{BrokerMessage, header};
use saga_runtime::committer::Phase;
use saga_runtime::error::BrokerError;

/// Answers one command: the reply's status and content.
pub type CommandHandler = Arc<dyn Fn(&BrokerMessage) -> (SagaResponseStatus, Value) + Send + Sync>;

/// Decides whether a reservation of transaction `id` is accepted.
pub type ReservePolicy = Arc<dyn Fn(Uuid) -> bool + Send + Sync>;

/// Something the participant received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParticipantEvent {
    /// A command on this topic, answered with this status.
    Command {
        /// The command topic.
        topic: String,
        /// The reply status.
        status: SagaResponseStatus,
    },
    /// A transaction message.
    Transaction {
        /// Reserve, commit or reject.
        phase: Phase,
        /// The transaction.
        transaction: Uuid,
        /// Whether it was accepted.
        accepted: bool,
    },
}

/// Builds an [`ScriptedParticipant`].
#[must_use = "call `spawn().await` to start the participant"]
pub struct ScriptedParticipantBuilder {
    service: String,
    broker: Arc<dyn Broker>,
    commands: Vec<(String, CommandHandler)>,
    reserve: ReservePolicy,
    answer_transactions: bool,
}

impl ScriptedParticipantBuilder {
    /// Answers commands on `topic` with `handler`.
    pub fn command<F>(mut self, topic: impl Into<String>, handler: F) -> Self
    where
        F: Fn(&BrokerMessage) -> (SagaResponseStatus, Value) + Send + Sync + 'static,
    {
        self.commands.push((topic.into(), Arc::new(handler)));
        self
    }

    /// Decides reservations (default: accept all).
    pub fn reserve<F>(mut self, policy: F) -> Self
    where
        F: Fn(Uuid) -> bool + Send + Sync + 'static,
    {
        self.reserve = Arc::new(policy);
        self
    }

    /// Whether to answer reserve/commit/reject messages at all (default `true`); a participant that
    /// does not answer lets tests exercise the commit timeout.
    pub fn answer_transactions(mut self, answer: bool) -> Self {
        self.answer_transactions = answer;
        self
    }

    /// Subscribes to its topics and starts answering.
    pub async fn spawn(self) -> Result<ScriptedParticipant, BrokerError> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (topic, handler) in self.commands {
            let mut subscription = self.broker.subscribe(&topic).await?;
            let (broker, log, service) = (
                Arc::clone(&self.broker),
                Arc::clone(&log),
                self.service.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while let Some(delivery) = subscription.next().await {
                    let message = delivery.message();
                    let (status, content) = handler(message);
                    lock(&log).push(ParticipantEvent::Command {
                        topic: message.topic.clone(),
                        status,
                    });
                    if let Some(reply) = message.reply(&service, status, content) {
                        let _ = broker.publish(reply).await;
                    }
                    let _ = delivery.ack().await;
                }
            }));
        }
        for phase in [Phase::Reserve, Phase::Commit, Phase::Reject] {
            let mut subscription = self.broker.subscribe(&phase.topic(&self.service)).await?;
            let (broker, log, service, reserve) = (
                Arc::clone(&self.broker),
                Arc::clone(&log),
                self.service.clone(),
                Arc::clone(&self.reserve),
            );
            let answer = self.answer_transactions;
            tasks.push(tokio::spawn(async move {
                while let Some(delivery) = subscription.next().await {
                    let message = delivery.message();
                    let transaction = message
                        .headers
                        .get(header::TRANSACTION)
                        .and_then(|value| Uuid::parse_str(value).ok())
                        .unwrap_or_default();
                    let accepted = phase != Phase::Reserve || reserve(transaction);
                    lock(&log).push(ParticipantEvent::Transaction {
                        phase,
                        transaction,
                        accepted,
                    });
                    let status = if accepted {
                        SagaResponseStatus::Success
                    } else {
                        SagaResponseStatus::Error
                    };
                    if answer {
                        if let Some(reply) = message.reply(&service, status, Value::Null) {
                            let _ = broker.publish(reply).await;
                        }
                    }
                    let _ = delivery.ack().await;
                }
            }));
        }
        Ok(ScriptedParticipant {
            service: self.service,
            log,
            tasks,
        })
    }
}

/// A running in-process participant; dropping it stops it.
pub struct ScriptedParticipant {
    service: String,
    log: Arc<Mutex<Vec<ParticipantEvent>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ScriptedParticipant {
    /// Starts building participant `service` on `broker`.
    pub fn builder(
        service: impl Into<String>,
        broker: Arc<dyn Broker>,
    ) -> ScriptedParticipantBuilder {
        ScriptedParticipantBuilder {
            service: service.into(),
            broker,
            commands: Vec::new(),
            reserve: Arc::new(|_| true),
            answer_transactions: true,
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// What it received so far, in order.
    pub fn log(&self) -> Vec<ParticipantEvent> {
        lock(&self.log).clone()
    }
}

impl Drop for ScriptedParticipant {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for ScriptedParticipant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedParticipant")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
