//! Taking a topic's deliveries: several at once, up to the participant's concurrency, each
//! acknowledged once handled or handed back for a redelivery, until the participant stops.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::broker::{Delivery, Subscription};

/// Whether a delivery was handled for good (acknowledged) or must come again (its answer could
/// not be sent, or the store could not be reached: a redelivery finds the remembered answer, or
/// runs the command once the store is back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handled {
    Done,
    Again,
}

/// Takes deliveries from `subscription` and hands each to `handle` (which hands it back with
/// whether it was handled) in a task of its own, at most `concurrency` at a time, then
/// acknowledges it (or asks for a redelivery), until `stopped` turns true (or the participant is
/// gone) or the subscription ends. The deliveries in hand are always finished before it returns:
/// the stop is only looked at before taking one. Dropping the subscription on the way out gives
/// what it received but nobody took back to the broker.
pub(super) async fn serve<F, Fut>(
    mut subscription: Subscription,
    mut stopped: watch::Receiver<bool>,
    concurrency: usize,
    handle: F,
) where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = (Delivery, Handled)> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut in_hand = JoinSet::new();
    loop {
        // A free slot first, so that nothing is taken from the broker that cannot start at once.
        let slot = tokio::select! {
            biased;
            _ = stopped.wait_for(|stopped| *stopped) => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let delivery = tokio::select! {
            // The stop first: once it is asked for, no delivery that is ready is taken any more.
            biased;
            _ = stopped.wait_for(|stopped| *stopped) => break,
            delivery = subscription.next() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
        };
        let work = handle(delivery);
        in_hand.spawn(async move {
            let (delivery, handled) = work.await;
            acknowledge(delivery, handled).await;
            drop(slot);
        });
        // Reap the finished ones as we go, so the set holds only what is in hand.
        while in_hand.try_join_next().is_some() {}
    }
    drop(subscription);
    while in_hand.join_next().await.is_some() {}
}

/// Acknowledges `delivery`, or asks for it again; a broker that cannot be told is only logged (it
/// delivers the message again on its own).
async fn acknowledge(delivery: Delivery, handled: Handled) {
    let topic = delivery.message().topic.clone();
    let result = match handled {
        Handled::Done => delivery.ack().await,
        Handled::Again => delivery.nack().await,
    };
    if let Err(error) = result {
        tracing::warn!(%topic, %error, ?handled, "could not acknowledge a delivery");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::broker::{Broker, InProcessBroker};
    use crate::message::BrokerMessage;

    #[tokio::test]
    async fn no_more_than_the_concurrency_is_in_hand_at_once() {
        let broker = InProcessBroker::new();
        let subscription = broker.subscribe("Work").await.unwrap();
        for _ in 0..6 {
            broker
                .publish(BrokerMessage::new("Work", Value::Null))
                .await
                .unwrap();
        }
        let (stop, stopped) = watch::channel(false);
        let (running, most, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let handle = {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            move |delivery: Delivery| {
                let (running, most, done) = (running.clone(), most.clone(), done.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                    (delivery, Handled::Done)
                }
            }
        };
        let serving = tokio::spawn(serve(subscription, stopped, 2, handle));
        while done.load(Ordering::SeqCst) < 6 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send_replace(true);
        serving.await.unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stop_finishes_the_deliveries_in_hand_and_takes_no_more() {
        let broker = InProcessBroker::new();
        let subscription = broker.subscribe("Work").await.unwrap();
        broker
            .publish(BrokerMessage::new("Work", Value::Null))
            .await
            .unwrap();
        let (stop, stopped) = watch::channel(false);
        let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (release, released) = watch::channel(false);
        let handle = {
            let (started, finished) = (started.clone(), finished.clone());
            move |delivery: Delivery| {
                let (started, finished, mut released) =
                    (started.clone(), finished.clone(), released.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    released.wait_for(|released| *released).await.unwrap();
                    finished.fetch_add(1, Ordering::SeqCst);
                    (delivery, Handled::Done)
                }
            }
        };
        let serving = tokio::spawn(serve(subscription, stopped, 4, handle));
        while started.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send_replace(true);
        // Published after the stop: left to the broker, not taken.
        broker
            .publish(BrokerMessage::new("Work", Value::Null))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!serving.is_finished(), "the delivery in hand is waited for");
        release.send_replace(true);
        serving.await.unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(
            broker.backlog("Work"),
            1,
            "the later message stays with the broker"
        );
    }
}
