//! The broker conformance suite passes on the in-process broker and catches a broker that breaks
//! the contract.

use std::future::ready;

use async_trait::async_trait;
use saga_runtime::broker::BrokerMessage;
use saga_runtime::broker::{
    Acknowledge, Broker, Delivery, DeliverySource, InProcessBroker, Subscription,
};
use saga_runtime::error::BrokerError;
use saga_testkit::conformance::broker::{self as conformance, Expectations};

#[tokio::test]
async fn the_in_process_broker_conforms() {
    let broker = InProcessBroker::new();
    conformance::check(|| ready(broker.clone()), &Expectations::default()).await;
}

/// An in-process broker whose nack acknowledges: a nacked message is lost.
#[derive(Clone, Default)]
struct ForgetfulBroker {
    inner: InProcessBroker,
}

struct Forgetful {
    subscription: Subscription,
}

struct AckOnly;

#[async_trait]
impl Acknowledge for AckOnly {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn nack(self: Box<Self>, _message: BrokerMessage) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[async_trait]
impl DeliverySource for Forgetful {
    async fn next(&mut self) -> Option<Delivery> {
        let message = self.subscription.next().await?.into_message();
        Some(Delivery::with_acknowledge(message, Box::new(AckOnly)))
    }
}

#[async_trait]
impl Broker for ForgetfulBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        self.inner.publish(message).await
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        let subscription = self.inner.subscribe(topic).await?;
        Ok(Subscription::new(Forgetful { subscription }))
    }
}

#[tokio::test]
async fn a_broker_that_loses_nacked_messages_fails_the_suite() {
    let outcome = tokio::spawn(async {
        let broker = ForgetfulBroker::default();
        conformance::check(|| ready(broker.clone()), &Expectations::default()).await;
    })
    .await;
    let panic = outcome.expect_err("the suite must fail").into_panic();
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_default();
    assert!(
        message.contains("rule: a nacked message is delivered again"),
        "{message}"
    );
}

#[tokio::test]
async fn the_in_process_broker_has_no_limit_the_suite_could_check() {
    // A limit the in-process broker does not have: the suite notices.
    let outcome = tokio::spawn(async {
        let broker = InProcessBroker::new();
        let expectations = Expectations::default().max_message_bytes(1024);
        conformance::check(|| ready(broker.clone()), &expectations).await;
    })
    .await;
    let panic = outcome.expect_err("the suite must fail").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("rule: a message over the limit is refused with TooLarge"),
        "{message}"
    );
}
