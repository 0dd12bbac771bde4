//! `NatsBroker` on the NATS server named by `SAGA_TEST_NATS_URL` (skipped without one outside CI):
//! the broker conformance suite, deduplication, dead letters (set aside by the broker or by a
//! subscriber), and a saga run end to end over it.

use std::sync::Arc;
use std::time::Duration;

use saga_runtime::broker::BrokerMessage;
use saga_runtime::broker::{Broker, DEAD_LETTER_REASON, DeadLetter, NatsBroker, Subscription};
use saga_runtime::committer::Phase;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_testkit::conformance::broker::{self as conformance, Expectations};
use saga_testkit::{ParticipantEvent, ScriptedParticipant};
use saga_tests::TestNats;
use serde_json::json;

/// How long a delivery that must come may take (the test brokers' ack wait is 1 s).
const PATIENCE: Duration = Duration::from_secs(5);

async fn receive(subscription: &mut Subscription) -> BrokerMessage {
    let delivery = tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("a delivery arrives in time")
        .expect("the subscription is open");
    let message = delivery.message().clone();
    delivery.ack().await.expect("the delivery is acknowledged");
    message
}

async fn nothing_arrives(subscription: &mut Subscription, quiet: Duration) {
    if let Ok(Some(delivery)) = tokio::time::timeout(quiet, subscription.next()).await {
        panic!("unexpected delivery: {:?}", delivery.message());
    }
}

/// Waits for the dead letters of `topic` until `count` arrived.
async fn dead_letters(broker: &NatsBroker, topic: &str, count: usize) -> Vec<DeadLetter> {
    let mut letters = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while letters.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} dead letters on `{topic}` within {PATIENCE:?}, got {letters:?}"
        );
        letters.extend(
            broker
                .take_dead_letters(topic)
                .await
                .expect("dead letters are read"),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    letters
}

async fn publish_raw(nats: &TestNats, broker: &NatsBroker, topic: &str, payload: Vec<u8>) {
    nats.jetstream()
        .publish(broker.subject(topic), payload.into())
        .await
        .expect("the raw message is sent")
        .await
        .expect("the raw message is stored");
}

#[tokio::test]
async fn the_nats_broker_conforms() {
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let expectations = Expectations::default()
        .max_message_bytes(64 * 1024)
        .redelivers_dropped_deliveries()
        .patience(PATIENCE)
        // Longer than the 1 s ack wait: an acknowledged message would have come back.
        .quiet(Duration::from_millis(1500));
    conformance::check(
        || async {
            nats.builder()
                .max_message_bytes(64 * 1024)
                .connect()
                .await
                .expect("the broker connects")
        },
        &expectations,
    )
    .await;
    nats.drop().await;
}

#[tokio::test]
async fn publishing_one_message_id_twice_delivers_it_once() {
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let broker = nats.broker().await;
    let mut subscription = broker.subscribe("Dedup").await.expect("subscribed");
    let message = BrokerMessage::new("Dedup", json!("once"));
    broker.publish(message.clone()).await.expect("published");
    broker
        .publish(message.clone())
        .await
        .expect("published again");
    let after = BrokerMessage::new("Dedup", json!("after"));
    broker.publish(after.clone()).await.expect("published");

    assert_eq!(receive(&mut subscription).await, message);
    assert_eq!(receive(&mut subscription).await, after);
    nothing_arrives(&mut subscription, Duration::from_millis(1500)).await;
    nats.drop().await;
}

#[tokio::test]
async fn a_payload_that_is_not_a_message_is_dead_lettered_and_the_next_is_delivered() {
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let broker = nats.broker().await;
    let topic = "_ReserveOrderTransaction";
    let mut subscription = broker.subscribe(topic).await.expect("subscribed");
    publish_raw(&nats, &broker, topic, b"{not json".to_vec()).await;
    let good = BrokerMessage::new(topic, json!("good"));
    broker.publish(good.clone()).await.expect("published");

    assert_eq!(receive(&mut subscription).await, good);
    let letters = dead_letters(&broker, topic, 1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].topic, topic);
    assert_eq!(letters[0].payload, b"{not json");
    assert!(
        letters[0]
            .reason
            .starts_with("the payload is not a saga message"),
        "{}: {}",
        DEAD_LETTER_REASON,
        letters[0].reason
    );
    nothing_arrives(&mut subscription, Duration::from_millis(1500)).await;
    nats.drop().await;
}

#[tokio::test]
async fn an_oversized_payload_is_dead_lettered() {
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let broker = nats
        .builder()
        .max_message_bytes(1024)
        .connect()
        .await
        .expect("connects");
    let topic = "Large";
    let mut subscription = broker.subscribe(topic).await.expect("subscribed");
    // A valid envelope, over this broker's limit (under the server's).
    let large =
        serde_json::to_vec(&BrokerMessage::new(topic, json!("x".repeat(4096)))).expect("encodes");
    publish_raw(&nats, &broker, topic, large.clone()).await;
    let small = BrokerMessage::new(topic, json!("small"));
    broker.publish(small.clone()).await.expect("published");

    assert_eq!(receive(&mut subscription).await, small);
    let letters = dead_letters(&broker, topic, 1).await;
    assert_eq!(letters[0].payload, large);
    assert!(
        letters[0].reason.contains("over the limit of 1024"),
        "{}",
        letters[0].reason
    );
    nats.drop().await;
}

#[tokio::test]
async fn a_delivery_held_longer_than_the_ack_wait_goes_to_nobody_else() {
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let ack_wait = Duration::from_millis(500);
    let broker = nats
        .builder()
        .ack_wait(ack_wait)
        .connect()
        .await
        .expect("connects");
    let topic = "SlowWork";
    let mut first = broker.subscribe(topic).await.expect("subscribed");
    let message = BrokerMessage::new(topic, json!("slow"));
    broker.publish(message.clone()).await.expect("published");
    let held = tokio::time::timeout(PATIENCE, first.next())
        .await
        .expect("the delivery arrives")
        .expect("the subscription is open");
    assert_eq!(held.message(), &message);

    // A competing subscriber sees nothing while the first works for four ack waits.
    let mut second = broker.subscribe(topic).await.expect("subscribed");
    nothing_arrives(&mut second, ack_wait * 4).await;
    held.ack().await.expect("acknowledged");
    nothing_arrives(&mut second, ack_wait * 2).await;
    nothing_arrives(&mut first, Duration::from_millis(100)).await;

    // A delivery dropped without a word comes again once the ack wait has passed.
    let again = BrokerMessage::new(topic, json!("dropped"));
    broker.publish(again.clone()).await.expect("published");
    let dropped = tokio::time::timeout(PATIENCE, first.next())
        .await
        .expect("the delivery arrives")
        .expect("the subscription is open");
    drop(dropped);
    drop(first);
    assert_eq!(receive(&mut second).await, again);
    nats.drop().await;
}

#[tokio::test]
async fn a_message_nacked_max_deliver_times_is_dead_lettered() {
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let broker = nats
        .builder()
        .max_deliver(3)
        .connect()
        .await
        .expect("connects");
    let topic = "Poison";
    let mut subscription = broker.subscribe(topic).await.expect("subscribed");
    let poison = BrokerMessage::new(topic, json!("poison"));
    broker.publish(poison.clone()).await.expect("published");

    for attempt in 1..=3 {
        let delivery = tokio::time::timeout(PATIENCE, subscription.next())
            .await
            .unwrap_or_else(|_| panic!("attempt {attempt} arrives"))
            .expect("the subscription is open");
        assert_eq!(delivery.message(), &poison, "attempt {attempt}");
        delivery.nack().await.expect("nacked");
    }
    nothing_arrives(&mut subscription, Duration::from_millis(1500)).await;
    let letters = dead_letters(&broker, topic, 1).await;
    assert_eq!(
        serde_json::from_slice::<BrokerMessage>(&letters[0].payload).expect("the envelope"),
        poison
    );
    assert!(
        letters[0].reason.contains("delivered 3 times"),
        "{}",
        letters[0].reason
    );
    nats.drop().await;
}

#[tokio::test]
async fn a_delivery_a_subscriber_dead_letters_is_stored_with_its_reason_and_not_delivered_again() {
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let broker = nats.broker().await;
    let topic = "orderReply";
    let mut subscription = broker.subscribe(topic).await.expect("subscribed");
    let poison = BrokerMessage::new(topic, json!("poison"));
    broker.publish(poison.clone()).await.expect("published");
    let delivery = tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("a delivery arrives in time")
        .expect("the subscription is open");
    // A header value is one line: a line break in the reason becomes a space.
    delivery
        .dead_letter("not a saga reply:\nno `saga` header")
        .await
        .expect("dead-lettered");

    let letters = dead_letters(&broker, topic, 1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].topic, topic);
    assert_eq!(letters[0].reason, "not a saga reply: no `saga` header");
    assert_eq!(letters[0].message(), Some(poison));
    // Longer than the 1 s ack wait: an unacknowledged delivery would have come back.
    nothing_arrives(&mut subscription, Duration::from_millis(1500)).await;
    nats.drop().await;
}

#[tokio::test]
async fn a_dropped_private_subscription_leaves_no_consumer_behind() {
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let broker = nats.broker().await;
    let consumers = || async {
        let mut stream = nats
            .jetstream()
            .get_stream(nats.prefix())
            .await
            .expect("the test stream exists");
        stream
            .info()
            .await
            .expect("stream info")
            .state
            .consumer_count
    };
    let topic = "orderReply.0123abcd";
    let mut private = broker.subscribe_private(topic).await.expect("subscribed");
    assert_eq!(consumers().await, 1);
    let answer = BrokerMessage::new(topic, json!("answer"));
    broker.publish(answer.clone()).await.expect("published");
    assert_eq!(receive(&mut private).await, answer);
    drop(private);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while consumers().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the private consumer is deleted within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The durable consumers of ordinary topics stay.
    drop(broker.subscribe("orderReply").await.expect("subscribed"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(consumers().await, 1);
    nats.drop().await;
}

/// The saga's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Booking {
    item: String,
    ticket: Option<String>,
}

async fn create_ticket(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateTicket", &json!({ "item": booking.item }))
}

async fn ticket_created(booking: &mut Booking, reply: SagaResponse) -> Result<(), StepError> {
    booking.ticket = Some(reply.content()?);
    Ok(())
}

async fn delete_ticket(booking: &Booking) -> Result<SagaRequest, StepError> {
    SagaRequest::new("DeleteTicket", &json!({ "ticket": booking.ticket }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_runs_end_to_end_over_nats() {
    let Some(nats) = TestNats::connect().await else {
        return;
    };
    let broker: Arc<dyn Broker> = Arc::new(nats.broker().await);
    let saga = Arc::new(
        Saga::new("book-over-nats")
            .remote_step("create_ticket")
            .on_execute(create_ticket)
            .on_success(ticket_created)
            .on_failure(delete_ticket)
            .commit()
            .expect("a valid saga"),
    );
    let manager = SagaManager::builder("order")
        .broker(Arc::clone(&broker))
        .repository(InMemoryRepository::new())
        .commit_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("the manager starts");
    let ticket = ScriptedParticipant::builder("ticket", Arc::clone(&broker))
        .command("CreateTicket", |message: &BrokerMessage| {
            assert_eq!(message.payload, json!({ "item": "concert" }));
            (SagaResponseStatus::Success, json!("ticket-1"))
        })
        .spawn()
        .await
        .expect("the participant starts");
    let order = ScriptedParticipant::builder("order", Arc::clone(&broker))
        .spawn()
        .await
        .expect("the participant starts");

    let booking = Booking {
        item: "concert".to_owned(),
        ticket: None,
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        manager.run(Arc::clone(&saga), booking, RunOptions::new().user("U")),
    )
    .await
    .expect("the saga ends in time")
    .expect("the saga succeeds");
    let execution = outcome.execution().expect("the run waited for the end");
    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(execution.context().ticket.as_deref(), Some("ticket-1"));
    let id = execution.id();
    let transaction = |phase| ParticipantEvent::Transaction {
        phase,
        transaction: id,
        accepted: true,
    };
    assert_eq!(
        ticket.log(),
        [
            ParticipantEvent::Command {
                topic: "CreateTicket".to_owned(),
                status: SagaResponseStatus::Success,
            },
            transaction(Phase::Reserve),
            transaction(Phase::Commit),
        ]
    );
    assert_eq!(
        order.log(),
        [transaction(Phase::Reserve), transaction(Phase::Commit)]
    );
    drop((ticket, order, manager));
    nats.drop().await;
}
