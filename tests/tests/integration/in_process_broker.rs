//! The in-process broker: competing subscribers (round robin), the backlog of a topic nobody
//! listens to, unread messages of a dropped subscriber, nack/ack, topics forgotten once unused
//! (no leak of the commit phases' private reply topics), the recorded history, and dead letters.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use saga_runtime::broker::BrokerMessage;
use saga_runtime::broker::{Broker, MAX_DEAD_LETTERS, REDELIVERY_DELAY, Subscription};
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::Harness;
use serde_json::{Value, json};
use uuid::Uuid;

/// How long a test waits for a message that must arrive.
const ARRIVES_WITHIN: Duration = Duration::from_secs(5);

/// How long a test waits to see that no message arrives.
const QUIET_FOR: Duration = Duration::from_millis(300);

fn message(topic: &str, number: u64) -> BrokerMessage {
    BrokerMessage::new(topic, json!(number))
}

async fn publish_all(broker: &InProcessBroker, messages: &[BrokerMessage]) {
    for message in messages {
        broker
            .publish(message.clone())
            .await
            .expect("publishing in process succeeds");
    }
}

/// The next message of `subscription`, acknowledged.
async fn receive(subscription: &mut Subscription) -> BrokerMessage {
    let delivery = tokio::time::timeout(ARRIVES_WITHIN, subscription.next())
        .await
        .expect("a message arrives")
        .expect("the subscription is open");
    let message = delivery.message().clone();
    delivery.ack().await.expect("the delivery is acknowledged");
    message
}

async fn receive_n(subscription: &mut Subscription, count: usize) -> Vec<BrokerMessage> {
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        messages.push(receive(subscription).await);
    }
    messages
}

/// Asserts that nothing arrives on `subscription` for a while.
async fn nothing_more(subscription: &mut Subscription, waiting: Duration) {
    if let Ok(delivery) = tokio::time::timeout(waiting, subscription.next()).await {
        panic!("no further message was expected, got {delivery:?}");
    }
}

fn ids(messages: &[BrokerMessage]) -> Vec<Uuid> {
    messages.iter().map(|message| message.id).collect()
}

fn payloads(messages: &[BrokerMessage]) -> Vec<Value> {
    messages
        .iter()
        .map(|message| message.payload.clone())
        .collect()
}

#[tokio::test]
async fn each_message_goes_to_exactly_one_of_two_subscribers_in_turn() {
    let broker = InProcessBroker::new();
    let mut first = broker.subscribe("Work").await.expect("subscribed");
    let mut second = broker.subscribe("Work").await.expect("subscribed");
    let sent: Vec<BrokerMessage> = (0..6).map(|number| message("Work", number)).collect();

    publish_all(&broker, &sent).await;

    let to_first = receive_n(&mut first, 3).await;
    let to_second = receive_n(&mut second, 3).await;
    nothing_more(&mut first, QUIET_FOR).await;
    nothing_more(&mut second, Duration::ZERO).await;
    // Round robin: the messages alternate between the two subscribers, each keeping the order.
    let (expected_first, expected_second) = if to_first[0].id == sent[0].id {
        (vec![0, 2, 4], vec![1, 3, 5])
    } else {
        (vec![1, 3, 5], vec![0, 2, 4])
    };
    assert_eq!(
        ids(&to_first),
        expected_first
            .iter()
            .map(|&index| sent[index].id)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        ids(&to_second),
        expected_second
            .iter()
            .map(|&index| sent[index].id)
            .collect::<Vec<_>>()
    );
    assert_eq!(broker.backlog("Work"), 0);
}

#[tokio::test]
async fn messages_without_a_subscriber_wait_in_the_backlog_for_the_first_one_in_order() {
    let broker = InProcessBroker::new();
    let sent: Vec<BrokerMessage> = (0..3).map(|number| message("Later", number)).collect();

    publish_all(&broker, &sent).await;
    assert_eq!(broker.backlog("Later"), 3);
    assert_eq!(broker.backlog("Elsewhere"), 0);

    let mut first = broker.subscribe("Later").await.expect("subscribed");
    assert_eq!(broker.backlog("Later"), 0);
    let mut second = broker.subscribe("Later").await.expect("subscribed");
    let received = receive_n(&mut first, 3).await;
    assert_eq!(ids(&received), ids(&sent));
    assert_eq!(payloads(&received), vec![json!(0), json!(1), json!(2)]);
    // The backlog went to the first subscriber only.
    nothing_more(&mut second, QUIET_FOR).await;
    nothing_more(&mut first, Duration::ZERO).await;
}

#[tokio::test]
async fn unread_messages_of_a_dropped_subscriber_go_to_the_remaining_one() {
    let broker = InProcessBroker::new();
    let first = broker.subscribe("Jobs").await.expect("subscribed");
    let mut second = broker.subscribe("Jobs").await.expect("subscribed");
    let sent: Vec<BrokerMessage> = (0..4).map(|number| message("Jobs", number)).collect();
    publish_all(&broker, &sent).await;

    // `first` received its share but read none of it.
    drop(first);

    let received = receive_n(&mut second, 4).await;
    nothing_more(&mut second, QUIET_FOR).await;
    let received_ids: BTreeSet<Uuid> = ids(&received).into_iter().collect();
    let sent_ids: BTreeSet<Uuid> = ids(&sent).into_iter().collect();
    assert_eq!(received_ids, sent_ids, "every message arrives exactly once");
    assert_eq!(broker.backlog("Jobs"), 0);

    // Later messages all go to the remaining subscriber.
    let later = message("Jobs", 4);
    publish_all(&broker, std::slice::from_ref(&later)).await;
    assert_eq!(receive(&mut second).await.id, later.id);
}

#[tokio::test]
async fn unread_messages_of_the_last_subscriber_go_back_to_the_backlog() {
    let broker = InProcessBroker::new();
    let only = broker.subscribe("Jobs").await.expect("subscribed");
    let sent: Vec<BrokerMessage> = (0..2).map(|number| message("Jobs", number)).collect();
    publish_all(&broker, &sent).await;
    assert_eq!(broker.backlog("Jobs"), 0);

    drop(only);

    assert_eq!(broker.backlog("Jobs"), 2);
    assert_eq!(broker.topic_count(), 1, "a topic with a backlog is kept");
    let mut next = broker.subscribe("Jobs").await.expect("subscribed");
    let received = receive_n(&mut next, 2).await;
    assert_eq!(ids(&received), ids(&sent));
    assert_eq!(broker.backlog("Jobs"), 0);
    nothing_more(&mut next, QUIET_FOR).await;
}

#[tokio::test]
async fn a_nacked_delivery_comes_back_and_an_acked_one_does_not() {
    let broker = InProcessBroker::new();
    let mut subscription = broker.subscribe("Retry").await.expect("subscribed");
    let sent = message("Retry", 7);
    publish_all(&broker, std::slice::from_ref(&sent)).await;

    let delivery = tokio::time::timeout(ARRIVES_WITHIN, subscription.next())
        .await
        .expect("a message arrives")
        .expect("the subscription is open");
    assert_eq!(delivery.message(), &sent);
    delivery.nack().await.expect("the nack is taken");

    // The same message again (after REDELIVERY_DELAY), then nothing once it is acknowledged.
    let again = receive(&mut subscription).await;
    assert_eq!(again, sent);
    nothing_more(&mut subscription, REDELIVERY_DELAY * 3).await;
    assert_eq!(broker.backlog("Retry"), 0);

    // An acknowledged delivery is never delivered again.
    let other = message("Retry", 8);
    publish_all(&broker, std::slice::from_ref(&other)).await;
    assert_eq!(receive(&mut subscription).await, other);
    nothing_more(&mut subscription, REDELIVERY_DELAY * 3).await;
}

#[tokio::test]
async fn a_nacked_delivery_goes_to_the_backlog_once_nobody_listens() {
    let broker = InProcessBroker::new();
    let mut subscription = broker.subscribe("Retry").await.expect("subscribed");
    let sent = message("Retry", 1);
    publish_all(&broker, std::slice::from_ref(&sent)).await;
    let delivery = tokio::time::timeout(ARRIVES_WITHIN, subscription.next())
        .await
        .expect("a message arrives")
        .expect("the subscription is open");
    delivery.nack().await.expect("the nack is taken");
    drop(subscription);

    saga_tests::eventually(|| broker.backlog("Retry") == 1).await;
    let mut next = broker.subscribe("Retry").await.expect("subscribed");
    assert_eq!(receive(&mut next).await, sent);
}

#[tokio::test]
async fn dropped_subscriptions_free_their_topics() {
    let broker = InProcessBroker::new();
    assert_eq!(broker.topic_count(), 0);
    let first = broker.subscribe("A").await.expect("subscribed");
    let second = broker.subscribe("A").await.expect("subscribed");
    let other = broker.subscribe("B").await.expect("subscribed");
    publish_all(&broker, &[message("C", 0)]).await;
    assert_eq!(broker.topic_count(), 3);

    drop(first);
    assert_eq!(broker.topic_count(), 3, "`A` still has a subscriber");
    drop(second);
    assert_eq!(broker.topic_count(), 2);
    drop(other);
    assert_eq!(broker.topic_count(), 1, "`C` keeps its backlog");

    let mut reader = broker.subscribe("C").await.expect("subscribed");
    assert_eq!(receive(&mut reader).await.payload, json!(0));
    drop(reader);
    assert_eq!(broker.topic_count(), 0);
    assert_eq!(broker.backlog("C"), 0);
}

async fn reserve(order: &mut Vec<String>) -> Result<(), StepError> {
    order.push("reserved".to_owned());
    Ok(())
}

async fn release(order: &mut Vec<String>) -> Result<(), StepError> {
    order.push("released".to_owned());
    Ok(())
}

#[tokio::test]
async fn fifty_committed_sagas_leave_no_private_reply_topic_behind() {
    let harness = Harness::new().await;
    let _order = harness.accepting(&["order"]).await;
    // The manager's `orderReply` and the participant's reserve, commit and reject topics.
    let before = harness.broker.topic_count();
    assert_eq!(before, 4);
    let saga = Arc::new(
        Saga::new("local-only")
            .local_step("reserve")
            .on_execute(reserve)
            .on_failure(release)
            .commit()
            .expect("a valid saga"),
    );

    for round in 0..50 {
        let execution = harness
            .manager
            .run(Arc::clone(&saga), Vec::new(), RunOptions::new())
            .await
            .expect("the saga finishes")
            .execution()
            .expect("the execution is returned");
        assert_eq!(execution.status(), SagaStatus::Finished, "round {round}");
        assert_eq!(execution.context(), &vec!["reserved".to_owned()]);
    }

    assert_eq!(harness.broker.topic_count(), before);
    let sent = harness.sent_topics();
    assert_eq!(sent.len(), 100);
    assert_eq!(
        sent.iter()
            .filter(|topic| *topic == "_ReserveOrderTransaction")
            .count(),
        50
    );
    assert_eq!(
        sent.iter()
            .filter(|topic| *topic == "_CommitOrderTransaction")
            .count(),
        50
    );
}

#[tokio::test]
async fn history_keeps_the_published_messages_in_order_until_cleared() {
    let broker = InProcessBroker::with_history();
    let mut subscription = broker.subscribe("B").await.expect("subscribed");
    let sent = vec![
        message("A", 0),
        message("B", 1),
        message("A", 2),
        message("C", 3),
    ];

    publish_all(&broker, &sent).await;

    assert_eq!(broker.history(), sent);
    // Delivering a message does not change the history.
    assert_eq!(receive(&mut subscription).await, sent[1]);
    assert_eq!(broker.history(), sent);

    broker.clear_history();
    assert!(broker.history().is_empty());
    // The backlogs are not part of the history.
    assert_eq!(broker.backlog("A"), 2);

    let after = message("D", 4);
    publish_all(&broker, std::slice::from_ref(&after)).await;
    assert_eq!(broker.history(), vec![after]);
}

#[tokio::test]
async fn a_broker_made_without_history_records_nothing() {
    let broker = InProcessBroker::new();
    publish_all(&broker, &[message("A", 0), message("B", 1)]).await;
    assert!(broker.history().is_empty());
    assert_eq!(broker.backlog("A"), 1);
    assert_eq!(broker.backlog("B"), 1);
}

#[tokio::test]
async fn a_dead_lettered_delivery_is_kept_with_its_reason_and_not_delivered_again() {
    let broker = InProcessBroker::new();
    let mut subscription = broker.subscribe("Poison").await.expect("subscribed");
    let poison = message("Poison", 1);
    publish_all(&broker, std::slice::from_ref(&poison)).await;
    let delivery = tokio::time::timeout(ARRIVES_WITHIN, subscription.next())
        .await
        .expect("a message arrives")
        .expect("the subscription is open");
    delivery
        .dead_letter("cannot be handled")
        .await
        .expect("dead-lettered");

    let letters = broker.dead_letters("Poison");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].topic, "Poison");
    assert_eq!(letters[0].reason, "cannot be handled");
    assert_eq!(letters[0].message(), Some(poison));
    assert!(broker.dead_letters("Other").is_empty());
    // Longer than the redelivery delay: a nacked message would have come back.
    nothing_more(&mut subscription, REDELIVERY_DELAY * 3).await;
}

#[tokio::test]
async fn the_oldest_dead_letters_of_a_topic_make_room_for_new_ones() {
    let broker = InProcessBroker::new();
    let mut subscription = broker.subscribe("Poison").await.expect("subscribed");
    let count = MAX_DEAD_LETTERS + 2;
    let messages: Vec<BrokerMessage> = (0..count as u64)
        .map(|number| message("Poison", number))
        .collect();
    publish_all(&broker, &messages).await;
    for number in 0..count {
        let delivery = subscription.next().await.expect("the subscription is open");
        delivery
            .dead_letter(format!("number {number}"))
            .await
            .expect("dead-lettered");
    }

    let letters = broker.dead_letters("Poison");
    assert_eq!(letters.len(), MAX_DEAD_LETTERS);
    assert_eq!(letters[0].reason, "number 2");
    assert_eq!(letters[0].message(), Some(messages[2].clone()));
    assert_eq!(
        letters.last().map(|letter| letter.reason.as_str()),
        Some(format!("number {}", count - 1).as_str())
    );
}
