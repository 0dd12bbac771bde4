//! The conformance suite every broker passes: one call checks an implementation against the
//! contract of [`Broker`].
//!
//! ```
//! # tokio_test_block_on(async {
//! use saga_runtime::broker::InProcessBroker;
//! use saga_testkit::conformance::broker::{self as conformance, Expectations};
//!
//! let broker = InProcessBroker::new();
//! conformance::check(|| std::future::ready(broker.clone()), &Expectations::default()).await;
//! # });
//! # fn tokio_test_block_on(future: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(future)
//! # }
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use saga_runtime::SagaResponseStatus;
use saga_runtime::broker::BrokerMessage;
use saga_runtime::broker::{Broker, Delivery, Subscription};
use saga_runtime::error::BrokerError;

/// What the suite may expect of the broker beyond the contract every broker keeps.
#[derive(Debug, Clone)]
pub struct Expectations {
    max_message_bytes: Option<usize>,
    redelivers_dropped_deliveries: bool,
    patience: Duration,
    quiet: Duration,
}

impl Default for Expectations {
    /// No size limit, no redelivery of dropped deliveries, 5 s of patience, 300 ms of quiet.
    fn default() -> Self {
        Self {
            max_message_bytes: None,
            redelivers_dropped_deliveries: false,
            patience: Duration::from_secs(5),
            quiet: Duration::from_millis(300),
        }
    }
}

impl Expectations {
    /// The broker refuses a message whose encoding is over `bytes` with [`BrokerError::TooLarge`].
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }

    /// A delivery taken by a subscriber that goes away without acknowledging it is delivered to
    /// another subscriber (a networked broker, after its ack wait). Without this, only the messages
    /// a dropped subscriber had not taken yet must move on.
    #[must_use]
    pub fn redelivers_dropped_deliveries(mut self) -> Self {
        self.redelivers_dropped_deliveries = true;
        self
    }

    /// How long to wait for a delivery that must come: longer than the broker's redelivery delay
    /// and ack wait.
    #[must_use]
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// How long to wait to conclude that a delivery does not come: longer than the broker's ack
    /// wait, so that an acknowledged message that would come back does.
    #[must_use]
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }
}

/// Runs every check against the broker, panicking with the broken rule on the first violation.
///
/// `connect` returns a handle on the broker under test; every call must reach the same broker (the
/// same server, the same prefix), as the instances of a service do. Every check uses topics of its
/// own, so the suite may run against a broker in use.
pub async fn check<F, Fut, B>(connect: F, expectations: &Expectations)
where
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
    B: Broker,
{
    let broker = connect().await;
    round_trip_keeps_every_field(&broker, expectations).await;
    topics_are_isolated(&broker, expectations).await;
    subscribers_of_a_topic_compete(&broker, &connect().await, expectations).await;
    a_nack_redelivers_and_an_ack_does_not(&broker, expectations).await;
    a_dead_lettered_delivery_is_not_delivered_again(&broker, expectations).await;
    a_message_waits_for_the_first_subscriber(&broker, &connect().await, expectations).await;
    a_dropped_subscribers_message_goes_to_another(&broker, &connect().await, expectations).await;
    a_private_subscription_receives(&broker, expectations).await;
    a_message_over_the_limit_is_refused(&broker, expectations).await;
}

fn topic(name: &str) -> String {
    format!("conformance-{name}-{}", Uuid::new_v4().simple())
}

/// The next delivery within `patience`, or a panic naming `rule`.
async fn receive(subscription: &mut Subscription, patience: Duration, rule: &str) -> Delivery {
    match tokio::time::timeout(patience, subscription.next()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("rule: {rule} (the subscription ended)"),
        Err(_) => panic!("rule: {rule} (nothing arrived within {patience:?})"),
    }
}

/// Panics naming `rule` if a delivery arrives within `quiet`.
async fn nothing_arrives(subscription: &mut Subscription, quiet: Duration, rule: &str) {
    if let Ok(Some(delivery)) = tokio::time::timeout(quiet, subscription.next()).await {
        panic!("rule: {rule} (received {:?})", delivery.message());
    }
}

async fn publish(broker: &dyn Broker, message: BrokerMessage) {
    let topic = message.topic.clone();
    broker
        .publish(message)
        .await
        .unwrap_or_else(|error| panic!("rule: a message on `{topic}` is published ({error})"));
}

async fn subscribe(broker: &dyn Broker, topic: &str) -> Subscription {
    broker
        .subscribe(topic)
        .await
        .unwrap_or_else(|error| panic!("rule: topic `{topic}` can be subscribed to ({error})"))
}

async fn ack(delivery: Delivery) {
    delivery
        .ack()
        .await
        .unwrap_or_else(|error| panic!("rule: a delivery can be acknowledged ({error})"));
}

fn full_message(topic: &str) -> BrokerMessage {
    BrokerMessage::new(
        topic,
        json!({ "amount": 42, "items": ["a", "b"], "nested": { "null": null, "text": "é ✓" } }),
    )
    .with_header("saga", Uuid::new_v4().to_string())
    .with_header("user", "ada")
    .with_reply_to(format!("{topic}Reply"))
}

async fn round_trip_keeps_every_field(broker: &dyn Broker, expectations: &Expectations) {
    let topic = topic("round-trip");
    let mut subscription = subscribe(broker, &topic).await;
    let mut message = full_message(&topic);
    message.correlation_id = Some(Uuid::new_v4());
    message.status = Some(SagaResponseStatus::Error);
    publish(broker, message.clone()).await;
    let delivery = receive(
        &mut subscription,
        expectations.patience,
        "a subscriber receives what is published on its topic",
    )
    .await;
    assert_eq!(
        delivery.message(),
        &message,
        "rule: a delivery keeps every field of the envelope"
    );
    ack(delivery).await;
}

async fn topics_are_isolated(broker: &dyn Broker, expectations: &Expectations) {
    // Characters a networked broker cannot put in a name as they are.
    let id = Uuid::new_v4().simple();
    let dotted = format!("conformance.isolated*{id}");
    let spaced = format!("conformance isolated>{id}");
    let mut dotted_subscription = subscribe(broker, &dotted).await;
    let mut spaced_subscription = subscribe(broker, &spaced).await;
    let message = full_message(&dotted);
    publish(broker, message.clone()).await;
    let delivery = receive(
        &mut dotted_subscription,
        expectations.patience,
        "a topic with `.`, `*` or spaces works",
    )
    .await;
    assert_eq!(
        delivery.message(),
        &message,
        "rule: topics keep their names"
    );
    ack(delivery).await;
    nothing_arrives(
        &mut spaced_subscription,
        expectations.quiet,
        "a message reaches only the subscribers of its own topic",
    )
    .await;
}

async fn subscribers_of_a_topic_compete(
    first: &dyn Broker,
    second: &dyn Broker,
    expectations: &Expectations,
) {
    const COUNT: usize = 10;
    let topic = topic("compete");
    let mut one = subscribe(first, &topic).await;
    let mut two = subscribe(second, &topic).await;
    let mut published = BTreeSet::new();
    for index in 0..COUNT {
        let message = BrokerMessage::new(&topic, json!(index));
        published.insert(message.id);
        publish(first, message).await;
    }
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + expectations.patience;
    let rule = "each message goes to exactly one subscriber of its topic";
    while received.len() < COUNT {
        let delivery = tokio::select! {
            delivery = one.next() => delivery,
            delivery = two.next() => delivery,
            () = tokio::time::sleep_until(deadline) => {
                panic!("rule: {rule} ({} of {COUNT} arrived)", received.len())
            }
        };
        let delivery = delivery.unwrap_or_else(|| panic!("rule: {rule} (a subscription ended)"));
        received.push(delivery.message().id);
        ack(delivery).await;
    }
    let unique: BTreeSet<_> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "rule: {rule} (a duplicate)");
    assert_eq!(unique, published, "rule: {rule}");
    nothing_arrives(&mut one, expectations.quiet, rule).await;
    nothing_arrives(&mut two, expectations.quiet, rule).await;
}

async fn a_nack_redelivers_and_an_ack_does_not(broker: &dyn Broker, expectations: &Expectations) {
    let topic = topic("nack");
    let mut subscription = subscribe(broker, &topic).await;
    let message = full_message(&topic);
    publish(broker, message.clone()).await;
    let first = receive(
        &mut subscription,
        expectations.patience,
        "a message arrives",
    )
    .await;
    first
        .nack()
        .await
        .unwrap_or_else(|error| panic!("rule: a delivery can be nacked ({error})"));
    let again = receive(
        &mut subscription,
        expectations.patience,
        "a nacked message is delivered again",
    )
    .await;
    assert_eq!(
        again.message(),
        &message,
        "rule: a redelivery is the same message"
    );
    ack(again).await;
    nothing_arrives(
        &mut subscription,
        expectations.quiet,
        "an acknowledged message is not delivered again",
    )
    .await;
}

async fn a_dead_lettered_delivery_is_not_delivered_again(
    broker: &dyn Broker,
    expectations: &Expectations,
) {
    let topic = topic("dead-letter");
    let mut subscription = subscribe(broker, &topic).await;
    let poison = full_message(&topic);
    publish(broker, poison.clone()).await;
    let delivery = receive(
        &mut subscription,
        expectations.patience,
        "a message arrives",
    )
    .await;
    assert_eq!(delivery.message(), &poison);
    delivery
        .dead_letter("the conformance suite sets it aside")
        .await
        .unwrap_or_else(|error| panic!("rule: a delivery can be dead-lettered ({error})"));
    let next = full_message(&topic);
    publish(broker, next.clone()).await;
    let delivery = receive(
        &mut subscription,
        expectations.patience,
        "the topic goes on after a dead letter",
    )
    .await;
    assert_eq!(
        delivery.message(),
        &next,
        "rule: a dead-lettered message is not delivered again"
    );
    ack(delivery).await;
    nothing_arrives(
        &mut subscription,
        expectations.quiet,
        "a dead-lettered message is not delivered again",
    )
    .await;
}

async fn a_message_waits_for_the_first_subscriber(
    publisher: &dyn Broker,
    subscriber: &dyn Broker,
    expectations: &Expectations,
) {
    let topic = topic("durable");
    let message = full_message(&topic);
    publish(publisher, message.clone()).await;
    let mut subscription = subscribe(subscriber, &topic).await;
    let delivery = receive(
        &mut subscription,
        expectations.patience,
        "a message published before anyone subscribed goes to the first subscriber",
    )
    .await;
    assert_eq!(delivery.message(), &message);
    ack(delivery).await;
}

async fn a_dropped_subscribers_message_goes_to_another(
    first: &dyn Broker,
    second: &dyn Broker,
    expectations: &Expectations,
) {
    let topic = topic("dropped");
    let mut leaving = subscribe(first, &topic).await;
    let message = full_message(&topic);
    publish(first, message.clone()).await;
    if expectations.redelivers_dropped_deliveries {
        let taken = receive(&mut leaving, expectations.patience, "a message arrives").await;
        drop(taken);
    } else {
        // Let the message reach the subscriber, which never reads it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(leaving);
    let mut staying = subscribe(second, &topic).await;
    let delivery = receive(
        &mut staying,
        expectations.patience,
        "a message a subscriber did not acknowledge before it went away goes to another",
    )
    .await;
    assert_eq!(delivery.message(), &message);
    ack(delivery).await;
}

async fn a_private_subscription_receives(broker: &dyn Broker, expectations: &Expectations) {
    let topic = format!("conformanceReply.{}", Uuid::new_v4().simple());
    let mut subscription = broker
        .subscribe_private(&topic)
        .await
        .unwrap_or_else(|error| panic!("rule: a private topic can be subscribed to ({error})"));
    let message = full_message(&topic);
    publish(broker, message.clone()).await;
    let delivery = receive(
        &mut subscription,
        expectations.patience,
        "a private subscription receives what is published on its topic",
    )
    .await;
    assert_eq!(delivery.message(), &message);
    ack(delivery).await;
    drop(subscription);
}

async fn a_message_over_the_limit_is_refused(broker: &dyn Broker, expectations: &Expectations) {
    let Some(limit) = expectations.max_message_bytes else {
        return;
    };
    let topic = topic("too-large");
    let mut subscription = subscribe(broker, &topic).await;
    let large = BrokerMessage::new(&topic, json!("x".repeat(limit)));
    match broker.publish(large).await {
        Err(BrokerError::TooLarge {
            topic: refused,
            size,
            limit: reported,
        }) => {
            assert_eq!(refused, topic, "rule: TooLarge names the topic");
            assert!(size > limit, "rule: TooLarge reports the size ({size})");
            assert_eq!(reported, limit, "rule: TooLarge reports the limit");
        }
        other => panic!("rule: a message over the limit is refused with TooLarge ({other:?})"),
    }
    let small = BrokerMessage::new(&topic, json!("small"));
    publish(broker, small.clone()).await;
    let delivery = receive(
        &mut subscription,
        expectations.patience,
        "a message under the limit is delivered",
    )
    .await;
    assert_eq!(
        delivery.message().id,
        small.id,
        "rule: a refused message is never delivered"
    );
    ack(delivery).await;
}
