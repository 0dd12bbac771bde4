//! Answering: the reply to a command or a transaction message, published on its reply topic, and
//! the same answer again for a command answered before.

use serde_json::Value;

use super::delivery::Handled;
use super::participant::Inner;
use super::stats::bump;
use crate::message::{BrokerMessage, SagaResponseStatus, header};
use crate::participant_store::CommandAnswer;

impl Inner {
    /// Publishes the reply to `request` (if it names a reply topic); [`Handled::Again`] when that
    /// failed, so that the request comes again and is answered then.
    pub(super) async fn reply(
        &self,
        request: &BrokerMessage,
        status: SagaResponseStatus,
        content: Value,
    ) -> Handled {
        let Some(reply) = request.reply(&self.service, status, content) else {
            return Handled::Done;
        };
        match self.broker.publish(reply).await {
            Ok(()) => Handled::Done,
            Err(error) => {
                tracing::warn!(topic = %request.topic, %error, "could not publish a reply; asking for the request again");
                Handled::Again
            }
        }
    }

    /// Answers command `message` with `status` and `content`; the reply names the services the
    /// handler's own sagas reached (`related`), if any.
    pub(super) async fn answer(
        &self,
        message: &BrokerMessage,
        status: SagaResponseStatus,
        content: Value,
        related: Option<String>,
    ) -> Handled {
        bump(&self.counters.commands);
        match related {
            None => self.reply(message, status, content).await,
            Some(related) => {
                let mut request = message.clone();
                request
                    .headers
                    .insert(header::RELATED_SERVICES.to_owned(), related);
                self.reply(&request, status, content).await
            }
        }
    }

    /// Answers a command that was answered before the same way again, without running its handler.
    pub(super) async fn answer_again(
        &self,
        topic: &str,
        message: &BrokerMessage,
        earlier: CommandAnswer,
    ) -> Handled {
        bump(&self.counters.duplicates);
        tracing::info!(%topic, id = %message.id, "a command answered before: answering it again");
        let CommandAnswer {
            content,
            related_services,
        } = earlier;
        self.answer(
            message,
            SagaResponseStatus::Success,
            content,
            related_services,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::transactional::test_support::{Harness, UnreachableBroker};

    #[tokio::test]
    async fn a_request_without_reply_topic_is_done_without_a_reply() {
        let harness = Harness::new();
        let request = BrokerMessage::new("Book", Value::Null);
        let handled = harness
            .inner
            .reply(&request, SagaResponseStatus::Success, Value::Null)
            .await;
        assert_eq!(handled, Handled::Done);
        assert!(harness.broker.history().is_empty());
    }

    #[tokio::test]
    async fn a_reply_that_cannot_be_published_asks_for_the_request_again() {
        let harness = Harness::with_broker(Arc::new(UnreachableBroker));
        let request = BrokerMessage::new("Book", Value::Null).with_reply_to("Replies");
        let handled = harness
            .inner
            .reply(&request, SagaResponseStatus::Success, Value::Null)
            .await;
        assert_eq!(handled, Handled::Again);
    }

    #[tokio::test]
    async fn an_answer_names_the_services_the_handler_reached() {
        let harness = Harness::new();
        let request = BrokerMessage::new("Book", Value::Null)
            .with_reply_to("Replies")
            .with_header(header::RELATED_SERVICES, "orders");
        let related = Some("orders,payments".to_owned());
        harness
            .inner
            .answer(&request, SagaResponseStatus::Success, Value::Null, related)
            .await;
        let reply = harness.only_reply();
        let services = reply.related_services().into_iter().collect::<Vec<_>>();
        assert_eq!(services, ["orders", "payments", Harness::SERVICE]);
        assert_eq!(harness.inner.counters.snapshot().commands, 1);
    }

    #[tokio::test]
    async fn an_answer_given_again_is_the_remembered_success_and_counts_as_duplicate() {
        let harness = Harness::new();
        let request = BrokerMessage::new("Book", Value::Null).with_reply_to("Replies");
        let earlier = CommandAnswer {
            content: Value::from("booking-7"),
            related_services: None,
        };
        harness.inner.answer_again("Book", &request, earlier).await;
        let reply = harness.only_reply();
        assert_eq!(reply.status, Some(SagaResponseStatus::Success));
        assert_eq!(reply.payload, Value::from("booking-7"));
        let stats = harness.inner.counters.snapshot();
        assert_eq!((stats.commands, stats.duplicates), (1, 1));
    }
}
