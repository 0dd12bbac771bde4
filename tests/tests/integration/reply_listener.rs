//! The reply listener against what can arrive on `{service}Reply` — garbage, messages that are not
//! saga replies, replies for unknown executions, replies that are not awaited or arrive twice,
//! replies that arrive at once — and its graceful shutdown. Every scenario runs over the
//! in-process broker and over `NatsBroker` on the server named by `SAGA_TEST_NATS_URL` (skipped
//! without one outside CI).
//!
//! The manager's broker is wrapped in [`Recording`], which keeps what was published and how each
//! delivery of the reply topic was settled (acked, nacked, dead-lettered), whatever the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_trait::async_trait;
use saga_runtime::broker::{
    Acknowledge, Broker, DeadLetter, Delivery, DeliverySource, NatsBroker, Subscription,
};
use saga_runtime::broker::{BrokerMessage, header};
use saga_runtime::error::BrokerError;
use saga_runtime::execution::ExecutionRecord;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::{ReplyCounts, TestNats, eventually, wait_until};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

/// The reply topic of service `order`.
const REPLIES: &str = "orderReply";

/// How long something that must happen may take: longer than the NATS test brokers' 1 s ack wait,
/// after which a delivery taken by a subscriber that went away moves on.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The saga

/// The saga's context: a tag (to find its gate) and what its reply handlers saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Trip {
    tag: String,
    log: Vec<String>,
}

fn trip() -> Trip {
    Trip {
        tag: Uuid::new_v4().to_string(),
        log: Vec::new(),
    }
}

async fn create_ticket(_trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateTicket", &json!({ "seat": "7C" }))
}

async fn create_payment(_trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreatePayment", &json!({ "amount": 5 }))
}

async fn ticket_created(trip: &mut Trip, reply: SagaResponse) -> Result<(), StepError> {
    pass_gate(&trip.tag).await;
    trip.log
        .push(format!("ticket {}", reply.content::<String>()?));
    Ok(())
}

async fn payment_created(trip: &mut Trip, reply: SagaResponse) -> Result<(), StepError> {
    trip.log
        .push(format!("payment {}", reply.content::<String>()?));
    Ok(())
}

/// `ticket` (CreateTicket) then `payment` (CreatePayment); each reply handler logs the reply.
fn saga() -> Arc<SagaDefinition<Trip>> {
    Arc::new(
        Saga::new("reply-listener-trip")
            .remote_step("ticket")
            .on_execute(create_ticket)
            .on_success(ticket_created)
            .remote_step("payment")
            .on_execute(create_payment)
            .on_success(payment_created)
            .commit()
            .expect("a valid saga"),
    )
}

fn registry() -> Registry {
    Registry::empty()
        .with_definition(saga())
        .expect("the saga registers")
}

/// Where the `ticket` reply handler of a tagged trip stops until the test lets it go on.
struct Gate {
    entered: Notify,
    release: Semaphore,
}

static GATES: Mutex<Vec<(String, Arc<Gate>)>> = Mutex::new(Vec::new());

/// A gate for the trip tagged `tag`.
fn gate(tag: &str) -> Arc<Gate> {
    let gate = Arc::new(Gate {
        entered: Notify::new(),
        release: Semaphore::new(0),
    });
    GATES
        .lock()
        .expect("not poisoned")
        .push((tag.to_owned(), Arc::clone(&gate)));
    gate
}

async fn pass_gate(tag: &str) {
    let gate = GATES
        .lock()
        .expect("not poisoned")
        .iter()
        .find(|(gated, _)| gated == tag)
        .map(|(_, gate)| Arc::clone(gate));
    if let Some(gate) = gate {
        gate.entered.notify_one();
        gate.release
            .acquire()
            .await
            .expect("the gate stays open")
            .forget();
    }
}

// ---------------------------------------------------------------------------------------------
// The broker under test, recorded

/// How a delivery was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Settled {
    Acked,
    Nacked,
    DeadLettered(String),
}

#[derive(Default)]
struct Records {
    published: Vec<BrokerMessage>,
    settled: Vec<(Uuid, Settled)>,
    /// Command topics answered at once by the recording broker, with the reply's content.
    instant: HashMap<String, String>,
}

/// A broker that records what is published through it and how the deliveries of its
/// subscriptions are settled, and can answer commands at once.
#[derive(Clone)]
struct Recording {
    inner: Arc<dyn Broker>,
    records: Arc<Mutex<Records>>,
}

impl Recording {
    fn new(inner: Arc<dyn Broker>) -> Self {
        Self {
            inner,
            records: Arc::default(),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().expect("not poisoned")
    }

    /// The messages published on `topic`, in order.
    fn published(&self, topic: &str) -> Vec<BrokerMessage> {
        self.records()
            .published
            .iter()
            .filter(|message| message.topic == topic)
            .cloned()
            .collect()
    }

    /// How the deliveries of message `id` were settled, in order.
    fn settled(&self, id: Uuid) -> Vec<Settled> {
        self.records()
            .settled
            .iter()
            .filter(|(settled, _)| *settled == id)
            .map(|(_, how)| how.clone())
            .collect()
    }

    /// From now on, every command on `topic` is answered SUCCESS with `content` as soon as it is
    /// published (before its publication returns).
    fn answer_instantly(&self, topic: &str, content: &str) {
        self.records()
            .instant
            .insert(topic.to_owned(), content.to_owned());
    }
}

#[async_trait]
impl Broker for Recording {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        let answer = {
            let mut records = self.records();
            records.published.push(message.clone());
            records.instant.get(&message.topic).and_then(|content| {
                message.reply("ticket", SagaResponseStatus::Success, json!(content))
            })
        };
        self.inner.publish(message).await?;
        if let Some(reply) = answer {
            self.publish(reply).await?;
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        let subscription = self.inner.subscribe(topic).await?;
        Ok(self.wrap(subscription))
    }

    async fn subscribe_private(&self, topic: &str) -> Result<Subscription, BrokerError> {
        let subscription = self.inner.subscribe_private(topic).await?;
        Ok(self.wrap(subscription))
    }
}

impl Recording {
    fn wrap(&self, subscription: Subscription) -> Subscription {
        Subscription::new(RecordingSource {
            subscription,
            records: Arc::clone(&self.records),
        })
    }
}

struct RecordingSource {
    subscription: Subscription,
    records: Arc<Mutex<Records>>,
}

#[async_trait]
impl DeliverySource for RecordingSource {
    async fn next(&mut self) -> Option<Delivery> {
        let delivery = self.subscription.next().await?;
        let message = delivery.message().clone();
        let recorder = Recorder {
            id: message.id,
            delivery,
            records: Arc::clone(&self.records),
        };
        Some(Delivery::with_acknowledge(message, Box::new(recorder)))
    }
}

/// Settles the wrapped delivery, then records how.
struct Recorder {
    id: Uuid,
    delivery: Delivery,
    records: Arc<Mutex<Records>>,
}

impl Recorder {
    fn record(records: &Mutex<Records>, id: Uuid, settled: Settled) {
        records
            .lock()
            .expect("not poisoned")
            .settled
            .push((id, settled));
    }
}

#[async_trait]
impl Acknowledge for Recorder {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        let Self {
            id,
            delivery,
            records,
        } = *self;
        delivery.ack().await?;
        Self::record(&records, id, Settled::Acked);
        Ok(())
    }

    async fn nack(self: Box<Self>, _message: BrokerMessage) -> Result<(), BrokerError> {
        let Self {
            id,
            delivery,
            records,
        } = *self;
        delivery.nack().await?;
        Self::record(&records, id, Settled::Nacked);
        Ok(())
    }

    async fn dead_letter(
        self: Box<Self>,
        _message: BrokerMessage,
        reason: String,
    ) -> Result<(), BrokerError> {
        let Self {
            id,
            delivery,
            records,
        } = *self;
        delivery.dead_letter(reason.clone()).await?;
        Self::record(&records, id, Settled::DeadLettered(reason));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The two brokers

enum Backend {
    InProcess(InProcessBroker),
    Nats {
        nats: Box<TestNats>,
        broker: NatsBroker,
    },
}

impl Backend {
    fn in_process() -> Self {
        Self::InProcess(InProcessBroker::new())
    }

    /// `None` when there is no NATS server to test against (outside CI).
    async fn nats() -> Option<Self> {
        let nats = TestNats::connect().await?;
        let broker = nats.broker().await;
        Some(Self::Nats {
            nats: Box::new(nats),
            broker,
        })
    }

    fn broker(&self) -> Arc<dyn Broker> {
        match self {
            Self::InProcess(broker) => Arc::new(broker.clone()),
            Self::Nats { broker, .. } => Arc::new(broker.clone()),
        }
    }
}

/// Runs each scenario over the in-process broker and over NATS.
macro_rules! on_both_brokers {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_process() {
                super::$scenario(super::Backend::in_process()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                let Some(backend) = super::Backend::nats().await else {
                    return;
                };
                super::$scenario(backend).await;
            }
        }
    )+};
}

/// A manager of service `order` on a recorded broker, with an in-memory repository.
struct World {
    backend: Backend,
    broker: Recording,
    repository: Arc<InMemoryRepository>,
    manager: SagaManager,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let broker = Recording::new(backend.broker());
        let repository = Arc::new(InMemoryRepository::new());
        let manager = instance(&broker, &repository).await;
        Self {
            backend,
            broker,
            repository,
            manager,
        }
    }

    /// Another instance of the service on the same broker and repository.
    async fn instance(&self) -> SagaManager {
        instance(&self.broker, &self.repository).await
    }

    /// Starts a trip paused on disk at `ticket`; returns its id and its CreateTicket command.
    async fn start(&self, trip: Trip) -> (Uuid, BrokerMessage) {
        let id = self
            .manager
            .run(
                saga(),
                trip,
                RunOptions::new().autocommit(false).pause_on_disk(true),
            )
            .await
            .expect("the saga pauses")
            .id();
        (id, self.command("CreateTicket", id))
    }

    /// The command published on `topic` for execution `id` (exactly one).
    fn command(&self, topic: &str, id: Uuid) -> BrokerMessage {
        let mut found: Vec<BrokerMessage> = self
            .broker
            .published(topic)
            .into_iter()
            .filter(|message| message.saga_id().ok() == Some(id))
            .collect();
        assert_eq!(found.len(), 1, "one `{topic}` command of {id}: {found:?}");
        found.remove(0)
    }

    /// Publishes the reply to `command` (SUCCESS with `content`) and returns it.
    async fn reply(&self, command: &BrokerMessage, content: &str) -> BrokerMessage {
        let reply = command
            .reply("ticket", SagaResponseStatus::Success, json!(content))
            .expect("the command names its reply topic");
        assert_eq!(reply.topic, REPLIES);
        self.publish(reply.clone()).await;
        reply
    }

    async fn publish(&self, message: BrokerMessage) {
        self.broker.publish(message).await.expect("published");
    }

    /// The stored record of execution `id`.
    fn record(&self, id: Uuid) -> ExecutionRecord {
        let json = self.repository.raw(id).expect("the execution is stored");
        ExecutionRecord::from_json(&json).expect("a stored record decodes")
    }

    /// The stored context of execution `id`.
    async fn trip(&self, id: Uuid) -> Trip {
        self.manager
            .load(saga(), id)
            .await
            .expect("the execution loads")
            .into_context()
    }

    /// Waits until `count` dead letters of the reply topic are stored, and takes them.
    async fn dead_letters(&self, count: usize) -> Vec<DeadLetter> {
        let mut letters = Vec::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while letters.len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} dead letters within {PATIENCE:?}, got {letters:?}"
            );
            match &self.backend {
                Backend::InProcess(broker) => letters = broker.dead_letters(REPLIES),
                Backend::Nats { broker, .. } => letters.extend(
                    broker
                        .take_dead_letters(REPLIES)
                        .await
                        .expect("dead letters are read"),
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(letters.len(), count, "{letters:?}");
        letters
    }

    /// Asserts that nothing of the reply topic is left with the broker: nothing waits for a
    /// subscriber, and (NATS) nothing delivered waits for its acknowledgement.
    async fn assert_replies_all_settled(&self) {
        match &self.backend {
            Backend::InProcess(broker) => assert_eq!(broker.backlog(REPLIES), 0),
            // The listener counts a reply before its acknowledgement reaches the server, so the
            // consumer is asked until it agrees.
            Backend::Nats { nats, .. } => {
                wait_until(
                    PATIENCE,
                    "nothing of the reply topic is pending or awaits its acknowledgement",
                    || async {
                        let info = reply_consumer_info(nats).await;
                        (info.num_pending, info.num_ack_pending) == (0, 0)
                    },
                )
                .await;
            }
        }
    }

    /// Asserts that `reply` is still with the broker, not handled.
    async fn assert_still_with_the_broker(&self, reply: &BrokerMessage) {
        match &self.backend {
            Backend::InProcess(broker) => assert_eq!(broker.backlog(REPLIES), 1),
            Backend::Nats { nats, broker } => {
                let stream = nats
                    .jetstream()
                    .get_stream(nats.prefix())
                    .await
                    .expect("the test stream exists");
                // Work-queue retention: an acknowledged message is removed from the stream.
                let stored = stream
                    .get_last_raw_message_by_subject(&broker.subject(REPLIES))
                    .await
                    .expect("a reply is stored on the reply subject");
                let message: BrokerMessage =
                    serde_json::from_slice(&stored.payload).expect("an envelope");
                assert_eq!(message.id, reply.id);
            }
        }
    }

    /// Deletes the NATS test stream.
    async fn finish(self) {
        let Self {
            backend, manager, ..
        } = self;
        shut_down(&manager).await;
        drop(manager);
        if let Backend::Nats { nats, .. } = backend {
            (*nats).drop().await;
        }
    }
}

/// A manager of service `order` that knows the saga from the start (its listener may receive a
/// reply at once).
async fn instance(broker: &Recording, repository: &Arc<InMemoryRepository>) -> SagaManager {
    SagaManager::builder("order")
        .broker(Arc::new(broker.clone()))
        .repository(repository.clone())
        .registry(registry())
        .build()
        .await
        .expect("the manager starts")
}

async fn reply_consumer_info(nats: &TestNats) -> async_nats::jetstream::consumer::Info {
    let stream = nats
        .jetstream()
        .get_stream(nats.prefix())
        .await
        .expect("the test stream exists");
    let mut consumer = stream
        .get_consumer::<pull::Config>(REPLIES)
        .await
        .expect("the reply topic's durable consumer exists");
    consumer.info().await.expect("consumer info").clone()
}

/// Shuts `manager` down, failing (rather than hanging) if it does not stop within [`PATIENCE`].
async fn shut_down(manager: &SagaManager) {
    tokio::time::timeout(PATIENCE, manager.shutdown())
        .await
        .unwrap_or_else(|_| panic!("the manager stops within {PATIENCE:?}"));
}

fn stats(manager: &SagaManager) -> ReplyCounts {
    manager.reply_stats().into()
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// (a) Bytes that are not JSON, published raw on the reply subject, end in the dead letters with a
/// reason; no execution changes, and the listener goes on. NATS only: the in-process broker
/// carries nothing but messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_is_not_json_is_dead_lettered_and_changes_nothing() {
    let Some(backend) = Backend::nats().await else {
        return;
    };
    let world = World::new(backend).await;
    let (id, ticket) = world.start(trip()).await;
    let before = world.record(id);
    let Backend::Nats { nats, broker } = &world.backend else {
        unreachable!("a NATS backend");
    };
    nats.jetstream()
        .publish(broker.subject(REPLIES), b"{not json".to_vec().into())
        .await
        .expect("the raw message is sent")
        .await
        .expect("the raw message is stored");

    let letters = world.dead_letters(1).await;
    assert_eq!(letters[0].topic, REPLIES);
    assert_eq!(letters[0].payload, b"{not json");
    assert!(
        letters[0]
            .reason
            .starts_with("the payload is not a saga message"),
        "{}",
        letters[0].reason
    );
    // The broker set it aside before the manager saw it.
    assert_eq!(stats(&world.manager), ReplyCounts::default());
    assert_eq!(world.record(id), before);

    // The listener goes on.
    world.reply(&ticket, "T-1").await;
    eventually(|| stats(&world.manager).applied == 1).await;
    assert_eq!(world.trip(id).await.log, ["ticket T-1"]);
    world.assert_replies_all_settled().await;
    world.finish().await;
}

on_both_brokers!(
    messages_that_are_not_saga_replies_are_dead_lettered_and_counted_as_malformed,
    a_reply_for_an_unknown_execution_is_acknowledged_and_counted,
    replies_that_are_not_awaited_are_acknowledged_and_counted_as_ignored,
    the_same_reply_delivered_twice_advances_the_execution_once,
    a_reply_published_with_its_command_is_not_lost,
    a_reply_whose_handling_can_never_succeed_is_dead_lettered,
    shutdown_finishes_the_reply_in_hand_and_leaves_new_ones_to_the_next_instance,
    shutdown_tells_a_run_waiting_in_memory_and_the_next_instance_resumes_it,
    shutdown_stops_the_recovery_sweeps,
);

/// (b) A message without the `saga` header, or with a bad one, or without a status, is not a saga
/// reply: it is dead-lettered with the reason and counted as malformed.
async fn messages_that_are_not_saga_replies_are_dead_lettered_and_counted_as_malformed(
    backend: Backend,
) {
    let world = World::new(backend).await;
    let (id, ticket) = world.start(trip()).await;
    let before = world.record(id);
    let valid = ticket
        .reply("ticket", SagaResponseStatus::Success, json!("T-1"))
        .expect("the command names its reply topic");
    let mut without_saga = valid.clone();
    without_saga.id = Uuid::new_v4();
    without_saga.headers.remove(header::SAGA);
    let mut bad_saga = valid.clone();
    bad_saga.id = Uuid::new_v4();
    bad_saga
        .headers
        .insert(header::SAGA.to_owned(), "not-a-uuid".to_owned());
    let mut without_status = valid.clone();
    without_status.id = Uuid::new_v4();
    without_status.status = None;
    let garbage = [without_saga, bad_saga, without_status];
    for message in &garbage {
        world.publish(message.clone()).await;
    }

    let letters = world.dead_letters(garbage.len()).await;
    eventually(|| stats(&world.manager).dead_lettered == 3).await;
    assert_eq!(
        stats(&world.manager),
        ReplyCounts {
            malformed: 3,
            dead_lettered: 3,
            ..ReplyCounts::default()
        }
    );
    let reasons: HashMap<Uuid, String> = letters
        .iter()
        .map(|letter| {
            assert_eq!(letter.topic, REPLIES);
            let message = letter.message().expect("the dead letter is the envelope");
            (message.id, letter.reason.clone())
        })
        .collect();
    let expected = [
        "message on `orderReply` lacks the `saga` header".to_owned(),
        "message on `orderReply` has an invalid `saga` header: \"not-a-uuid\"".to_owned(),
        "message on `orderReply` has no valid reply status".to_owned(),
    ];
    for (message, reason) in garbage.iter().zip(expected) {
        assert_eq!(reasons.get(&message.id), Some(&reason));
        assert_eq!(
            world.broker.settled(message.id),
            [Settled::DeadLettered(reason)]
        );
    }
    assert_eq!(world.record(id), before, "no execution changed");
    world.assert_replies_all_settled().await;

    // The listener goes on.
    world.publish(valid).await;
    eventually(|| stats(&world.manager).applied == 1).await;
    assert_eq!(world.trip(id).await.log, ["ticket T-1"]);
    world.finish().await;
}

/// (c) A reply naming an execution that is not stored is acknowledged (it never comes back) and
/// counted as unknown.
async fn a_reply_for_an_unknown_execution_is_acknowledged_and_counted(backend: Backend) {
    let world = World::new(backend).await;
    let stranger = BrokerMessage::new("CreateTicket", json!({}))
        .with_header(header::SAGA, Uuid::new_v4().to_string())
        .with_reply_to(REPLIES);
    let reply = world.reply(&stranger, "T-0").await;

    eventually(|| stats(&world.manager).unknown == 1).await;
    eventually(|| !world.broker.settled(reply.id).is_empty()).await;
    assert_eq!(world.broker.settled(reply.id), [Settled::Acked]);
    assert_eq!(
        stats(&world.manager),
        ReplyCounts {
            unknown: 1,
            ..ReplyCounts::default()
        }
    );
    assert!(world.repository.is_empty());
    world.assert_replies_all_settled().await;
    world.finish().await;
}

/// (d) A reply to a command the execution does not wait for, and a late reply for an ended
/// execution, change nothing: acknowledged and counted as ignored.
async fn replies_that_are_not_awaited_are_acknowledged_and_counted_as_ignored(backend: Backend) {
    let world = World::new(backend).await;
    let (id, ticket) = world.start(trip()).await;
    let before = world.record(id);

    // A reply naming the execution, to a command it never sent.
    let mut never_sent = ticket.clone();
    never_sent.id = Uuid::new_v4();
    let stray = world.reply(&never_sent, "T-stray").await;
    eventually(|| stats(&world.manager).ignored == 1).await;
    assert_eq!(world.record(id), before);

    // The saga ends; then a late reply to its last command arrives.
    world.reply(&ticket, "T-1").await;
    eventually(|| stats(&world.manager).applied == 1).await;
    let payment = world.command("CreatePayment", id);
    world.reply(&payment, "P-1").await;
    eventually(|| stats(&world.manager).applied == 2).await;
    let ended = world.record(id);
    assert_eq!(ended.status, SagaStatus::Finished);
    let late = world.reply(&payment, "P-late").await;
    eventually(|| stats(&world.manager).ignored == 2).await;

    assert_eq!(
        stats(&world.manager),
        ReplyCounts {
            applied: 2,
            ignored: 2,
            ..ReplyCounts::default()
        }
    );
    assert_eq!(world.record(id), ended);
    assert_eq!(world.trip(id).await.log, ["ticket T-1", "payment P-1"]);
    for ignored in [&stray, &late] {
        eventually(|| !world.broker.settled(ignored.id).is_empty()).await;
        assert_eq!(world.broker.settled(ignored.id), [Settled::Acked]);
    }
    world.assert_replies_all_settled().await;
    world.finish().await;
}

/// (e) The very same reply delivered twice (over NATS, published raw, past the broker's
/// deduplication): the execution advances once, the second is counted as ignored.
async fn the_same_reply_delivered_twice_advances_the_execution_once(backend: Backend) {
    let world = World::new(backend).await;
    let (id, ticket) = world.start(trip()).await;
    let reply = ticket
        .reply("ticket", SagaResponseStatus::Success, json!("T-1"))
        .expect("the command names its reply topic");
    for _ in 0..2 {
        match &world.backend {
            Backend::InProcess(_) => world.publish(reply.clone()).await,
            Backend::Nats { nats, broker } => {
                let payload = serde_json::to_vec(&reply).expect("encodes");
                nats.jetstream()
                    .publish(broker.subject(REPLIES), payload.into())
                    .await
                    .expect("sent")
                    .await
                    .expect("stored");
            }
        }
    }

    eventually(|| {
        let stats = stats(&world.manager);
        stats.applied + stats.ignored == 2
    })
    .await;
    assert_eq!(
        stats(&world.manager),
        ReplyCounts {
            applied: 1,
            ignored: 1,
            ..ReplyCounts::default()
        }
    );
    let record = world.record(id);
    assert_eq!(record.status, SagaStatus::Paused);
    assert_eq!(record.paused_step.as_deref(), Some("payment"));
    assert_eq!(world.trip(id).await.log, ["ticket T-1"]);
    assert_eq!(world.broker.published("CreatePayment").len(), 1);
    eventually(|| world.broker.settled(reply.id).len() == 2).await;
    assert_eq!(
        world.broker.settled(reply.id),
        [Settled::Acked, Settled::Acked]
    );
    world.assert_replies_all_settled().await;
    world.finish().await;
}

/// (f) Participants that answer as soon as the command is published (before the publication even
/// returns): the replies are not lost, paused on disk or waiting in memory.
async fn a_reply_published_with_its_command_is_not_lost(backend: Backend) {
    let world = World::new(backend).await;
    world.broker.answer_instantly("CreateTicket", "T-now");
    world.broker.answer_instantly("CreatePayment", "P-now");

    let on_disk = world
        .manager
        .run(
            saga(),
            trip(),
            RunOptions::new().autocommit(false).pause_on_disk(true),
        )
        .await
        .expect("the saga pauses")
        .id();
    wait_until(PATIENCE, "the saga paused on disk finishes", || async {
        world.record(on_disk).status == SagaStatus::Finished
    })
    .await;
    assert_eq!(
        world.trip(on_disk).await.log,
        ["ticket T-now", "payment P-now"]
    );

    let in_memory = world
        .manager
        .run(saga(), trip(), RunOptions::new().autocommit(false))
        .await
        .expect("the saga finishes")
        .execution()
        .expect("the run waited for the end");
    assert_eq!(in_memory.status(), SagaStatus::Finished);
    assert_eq!(in_memory.context().log, ["ticket T-now", "payment P-now"]);

    eventually(|| stats(&world.manager).applied == 4).await;
    assert_eq!(
        stats(&world.manager),
        ReplyCounts {
            applied: 4,
            ..ReplyCounts::default()
        }
    );
    world.assert_replies_all_settled().await;
    world.finish().await;
}

/// A reply whose execution cannot be read (a corrupt row) can never be applied: it is
/// dead-lettered with the error as its reason, not acknowledged silently nor redelivered forever.
async fn a_reply_whose_handling_can_never_succeed_is_dead_lettered(backend: Backend) {
    let world = World::new(backend).await;
    let (id, ticket) = world.start(trip()).await;
    world.repository.put_raw(id, "{ not a record");
    let reply = world.reply(&ticket, "T-1").await;

    let letters = world.dead_letters(1).await;
    assert_eq!(
        letters[0].message().map(|message| message.id),
        Some(reply.id)
    );
    assert!(
        letters[0].reason.contains(&format!("{id} is corrupt")),
        "{}",
        letters[0].reason
    );
    eventually(|| stats(&world.manager).dead_lettered == 1).await;
    assert_eq!(
        stats(&world.manager),
        ReplyCounts {
            failed: 1,
            dead_lettered: 1,
            ..ReplyCounts::default()
        }
    );
    assert_eq!(
        world.broker.settled(reply.id),
        [Settled::DeadLettered(letters[0].reason.clone())]
    );
    world.assert_replies_all_settled().await;
    world.finish().await;
}

/// (g) Shutdown lets the reply in hand finish (handled and acknowledged), takes no reply after it,
/// and a reply that arrives then stays with the broker for the next instance, which handles it.
async fn shutdown_finishes_the_reply_in_hand_and_leaves_new_ones_to_the_next_instance(
    backend: Backend,
) {
    let world = World::new(backend).await;
    let held_trip = trip();
    let held_gate = gate(&held_trip.tag);
    let (held, held_ticket) = world.start(held_trip).await;
    let (later, later_ticket) = world.start(trip()).await;

    let in_hand = world.reply(&held_ticket, "T-1").await;
    held_gate.entered.notified().await;
    let stopping = world.manager.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    eventually(|| world.manager.is_shut_down()).await;

    // A reply arriving now is not taken.
    let after = world.reply(&later_ticket, "T-2").await;
    // Shutdown waits for the reply in hand.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the reply in hand"
    );
    held_gate.release.add_permits(1);
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("the manager stops once the reply in hand is handled")
        .expect("shutdown does not panic");

    // The reply in hand was applied and acknowledged.
    let record = world.record(held);
    assert_eq!(record.status, SagaStatus::Paused);
    assert_eq!(record.paused_step.as_deref(), Some("payment"));
    assert_eq!(world.trip(held).await.log, ["ticket T-1"]);
    assert_eq!(world.broker.settled(in_hand.id), [Settled::Acked]);
    assert_eq!(
        stats(&world.manager),
        ReplyCounts {
            applied: 1,
            ..ReplyCounts::default()
        }
    );
    // The later one is still with the broker, untouched.
    assert_eq!(world.broker.settled(after.id), []);
    assert_eq!(world.record(later).paused_step.as_deref(), Some("ticket"));
    world.assert_still_with_the_broker(&after).await;
    // Shutting down again (from any clone) returns at once.
    shut_down(&world.manager.clone()).await;

    // The next instance, on the same topic (the same durable consumer), handles it.
    let next = world.instance().await;
    wait_until(PATIENCE, "the next instance applies the reply", || async {
        stats(&next).applied == 1
    })
    .await;
    let record = world.record(later);
    assert_eq!(record.paused_step.as_deref(), Some("payment"));
    assert_eq!(world.trip(later).await.log, ["ticket T-2"]);
    assert_eq!(
        stats(&world.manager).applied,
        1,
        "the first instance took nothing more"
    );
    assert_eq!(
        stats(&next),
        ReplyCounts {
            applied: 1,
            ..ReplyCounts::default()
        }
    );
    eventually(|| world.broker.settled(after.id).contains(&Settled::Acked)).await;
    shut_down(&next).await;
    world.assert_replies_all_settled().await;
    world.finish().await;
}

/// Shutdown tells a run waiting in memory that the manager shut down; its execution stays stored
/// and the next instance resumes it with the reply.
async fn shutdown_tells_a_run_waiting_in_memory_and_the_next_instance_resumes_it(backend: Backend) {
    let world = World::new(backend).await;
    let manager = world.manager.clone();
    let run = tokio::spawn(async move {
        manager
            .run(saga(), trip(), RunOptions::new().autocommit(false))
            .await
    });
    eventually(|| !world.broker.published("CreateTicket").is_empty()).await;
    let ticket = world.broker.published("CreateTicket").remove(0);
    let id = ticket.saga_id().expect("names its saga");

    shut_down(&world.manager).await;
    match run.await.expect("the run does not panic") {
        Err(SagaError::Shutdown { id: stopped }) => assert_eq!(stopped, id),
        other => panic!("expected SagaError::Shutdown, got {other:?}"),
    }
    assert_eq!(world.record(id).status, SagaStatus::Paused);

    let next = world.instance().await;
    world.reply(&ticket, "T-1").await;
    wait_until(PATIENCE, "the next instance applies the reply", || async {
        stats(&next).applied == 1
    })
    .await;
    assert_eq!(world.record(id).paused_step.as_deref(), Some("payment"));
    assert_eq!(world.trip(id).await.log, ["ticket T-1"]);
    shut_down(&next).await;
    world.finish().await;
}

/// Shutdown stops the periodic recovery sweeps: with a retention of zero, a sweep deletes a
/// finished execution; after shutdown none does.
async fn shutdown_stops_the_recovery_sweeps(backend: Backend) {
    let world = World::new(backend).await;
    let sweeping = SagaManager::builder("order")
        .broker(Arc::new(world.broker.clone()))
        .repository(world.repository.clone())
        .registry(registry())
        .lease(Duration::from_millis(50))
        .retention(Duration::ZERO)
        .build()
        .await
        .expect("the manager starts");
    world.broker.answer_instantly("CreateTicket", "T-now");
    world.broker.answer_instantly("CreatePayment", "P-now");
    // Paused on disk: the replies go to either instance (they share the reply topic).
    let finished = |manager: SagaManager| async move {
        manager
            .run(
                saga(),
                trip(),
                RunOptions::new().autocommit(false).pause_on_disk(true),
            )
            .await
            .expect("the saga pauses")
            .id()
    };
    let swept = finished(world.manager.clone()).await;
    // Only a finished execution is deleted.
    wait_until(
        PATIENCE,
        "a sweep deletes the finished execution",
        || async { world.repository.raw(swept).is_none() },
    )
    .await;

    shut_down(&sweeping).await;
    let kept = finished(world.manager.clone()).await;
    wait_until(PATIENCE, "the execution finishes", || async {
        world.record(kept).status == SagaStatus::Finished
    })
    .await;
    // Several lease periods: a sweep would have deleted it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        world.repository.raw(kept).is_some(),
        "no sweep ran after shutdown"
    );
    world.finish().await;
}
