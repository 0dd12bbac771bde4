//! Handling a command: deduplicated by message id, its handler run inside the request's header
//! scope, what it staged kept with its answer in one atomic step, then answered.

use serde_json::Value;

use super::delivery::Handled;
use super::handler::{CommandContext, ErasedHandler, HandlerResult};
use super::panics::catch_panic;
use super::participant::Inner;
use super::stats::bump;
use crate::message::{BrokerMessage, SagaResponseStatus, header, parse_transactions};
use crate::participant_store::{CommandAnswer, StagedEffect, Staging};
use crate::request_scope::RequestHeaders;

impl Inner {
    /// Handles command `message` of `topic` with `handler` and answers it; [`Handled::Again`] when
    /// it must come again (the store or the broker could not be reached).
    pub(super) async fn command(
        &self,
        topic: &str,
        handler: &ErasedHandler,
        message: &BrokerMessage,
    ) -> Handled {
        let Some(transactions) = parse_transactions(message) else {
            bump(&self.counters.undecodable);
            tracing::warn!(%topic, id = %message.id, "a command without a valid `transactions` header");
            let content = Value::String("no valid `transactions` header".to_owned());
            return self
                .answer(message, SagaResponseStatus::SystemError, content, None)
                .await;
        };
        match self.store.answered(message.id).await {
            Ok(None) => {}
            Ok(Some(earlier)) => {
                let transaction = transactions.last().copied().unwrap_or_default();
                if let Err(error) = self.settle_late(topic, transaction).await {
                    tracing::error!(%topic, id = %message.id, %error, "could not settle the effects of a command that came after its transaction settled; asking for it again");
                    return Handled::Again;
                }
                return self.answer_again(topic, message, earlier).await;
            }
            Err(error) => {
                // Without knowing whether it ran, running it could stage it twice: it comes again
                // once the store answers.
                tracing::error!(%topic, id = %message.id, %error, "could not look up the command's answer; asking for it again");
                return Handled::Again;
            }
        }
        let context = CommandContext::new(message, transactions);
        let (ran, related) = run_handler(handler, &context, message).await;
        let (status, content) = match ran {
            Err(panic) => {
                let content = format!("the handler panicked: {panic}");
                let transaction = context.transaction();
                tracing::error!(%topic, %transaction, "{content}");
                (SagaResponseStatus::SystemError, Value::String(content))
            }
            Ok(Err(error)) => {
                bump(&self.counters.undecodable);
                tracing::warn!(%topic, id = %message.id, %error, "a command payload that does not decode");
                let content = format!("the request does not decode: {error}");
                (SagaResponseStatus::SystemError, Value::String(content))
            }
            Ok(Ok(Err(error))) => (error.status(), Value::String(error.reply_content())),
            Ok(Ok(Ok(response))) => {
                let answer = CommandAnswer {
                    content: response,
                    related_services: related,
                };
                return self
                    .stage_and_answer(topic, message, &context, answer)
                    .await;
            }
        };
        self.answer(message, status, content, related).await
    }

    /// Keeps what a successful handler staged, with its `answer`, under the command's transaction,
    /// then answers. When another delivery of the command was staged first, its answer stands.
    async fn stage_and_answer(
        &self,
        topic: &str,
        message: &BrokerMessage,
        context: &CommandContext,
        answer: CommandAnswer,
    ) -> Handled {
        let transaction = context.transaction();
        let effects = context
            .take_staged()
            .into_iter()
            .map(|(key, effect)| StagedEffect {
                topic: topic.to_owned(),
                key,
                effect,
            })
            .collect::<Vec<_>>();
        let staging = match self
            .store
            .stage(transaction, message.id, &effects, &answer)
            .await
        {
            Ok(staging) => staging,
            // A store that cannot be reached is not the business's answer: the command comes
            // again and runs once the store is back (nothing of it was staged).
            Err(error) => {
                tracing::error!(%topic, %transaction, %error, "could not stage the effects; asking for the command again");
                return Handled::Again;
            }
        };
        // A command that comes after its transaction settled (its compensation raced the reject)
        // must not leave its effects staged for a settlement that already passed.
        if let Err(error) = self.settle_late(topic, transaction).await {
            tracing::error!(%topic, %transaction, %error, "could not settle the effects of a command that came after its transaction settled; asking for the command again");
            return Handled::Again;
        }
        match staging {
            Staging::Staged => {
                let CommandAnswer {
                    content,
                    related_services,
                } = answer;
                self.answer(
                    message,
                    SagaResponseStatus::Success,
                    content,
                    related_services,
                )
                .await
            }
            Staging::Answered(earlier) => self.answer_again(topic, message, earlier).await,
        }
    }
}

/// Runs `handler` on `message` inside the request's header scope (the sagas it runs carry the
/// headers on and report the services they reached); a panic is caught as its message. Returns
/// what it did and the scope's `related_services` afterwards, if any.
async fn run_handler(
    handler: &ErasedHandler,
    context: &CommandContext,
    message: &BrokerMessage,
) -> (Result<HandlerResult, String>, Option<String>) {
    let scope = RequestHeaders::new(message.headers.clone());
    let run = catch_panic(|| handler(context.clone(), message.payload.clone()));
    let ran = scope.clone().scope(run).await;
    let related = scope.snapshot().remove(header::RELATED_SERVICES);
    (ran, related)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use uuid::Uuid;

    use super::*;
    use crate::participant_store::{Outcome, ParticipantStore};
    use crate::transactional::callbacks::{Callbacks, Settled};
    use crate::transactional::handler::{CommandError, erase_handler};
    use crate::transactional::test_support::{Harness, UnreachableStore};

    /// A handler that stages its request under its own key and answers `booked-{request}`;
    /// `runs` counts its calls. A request "refuse" is refused, "panic" panics.
    fn booking(runs: &Arc<AtomicUsize>) -> ErasedHandler {
        let runs = Arc::clone(runs);
        erase_handler(move |context: CommandContext, request: String| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move {
                match request.as_str() {
                    "refuse" => return Err(CommandError::business("fully booked")),
                    "panic" => panic!("the seat map is gone"),
                    _ => {}
                }
                context.stage(request.clone(), Value::from(request.clone()));
                Ok(format!("booked-{request}"))
            }
        })
    }

    fn command(transactions: &[Uuid], request: Value) -> BrokerMessage {
        let ids = transactions.iter().map(Uuid::to_string).collect::<Vec<_>>();
        BrokerMessage::new("Book", request)
            .with_header(header::TRANSACTIONS, ids.join(","))
            .with_reply_to("Replies")
    }

    #[tokio::test]
    async fn a_command_stages_under_its_innermost_transaction_and_remembers_its_answer() {
        let (harness, runs) = (Harness::new(), Arc::new(AtomicUsize::new(0)));
        let (outer, inner) = (Uuid::new_v4(), Uuid::new_v4());
        let message = command(&[outer, inner], Value::from("seat-1"));
        let handled = harness
            .inner
            .command("Book", &booking(&runs), &message)
            .await;
        assert_eq!(handled, Handled::Done);
        let reply = harness.only_reply();
        assert_eq!(reply.status, Some(SagaResponseStatus::Success));
        assert_eq!(reply.payload, Value::from("booked-seat-1"));
        let staged = harness.store.staged(inner).await.unwrap();
        assert_eq!(staged.len(), 1);
        assert_eq!(
            (staged[0].topic.as_str(), staged[0].key.as_str()),
            ("Book", "seat-1")
        );
        assert!(harness.store.staged(outer).await.unwrap().is_empty());
        let remembered = harness.store.answered(message.id).await.unwrap();
        assert_eq!(remembered.map(|a| a.content), Some(reply.payload));
    }

    #[tokio::test]
    async fn a_redelivered_command_is_answered_again_without_running_its_handler() {
        let (harness, runs) = (Harness::new(), Arc::new(AtomicUsize::new(0)));
        let transaction = Uuid::new_v4();
        let message = command(&[transaction], Value::from("seat-1"));
        let handler = booking(&runs);
        harness.inner.command("Book", &handler, &message).await;
        harness.inner.command("Book", &handler, &message).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let replies = harness.broker.history();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].payload, replies[1].payload);
        assert_eq!(harness.store.staged(transaction).await.unwrap().len(), 1);
        let stats = harness.inner.counters.snapshot();
        assert_eq!((stats.commands, stats.duplicates), (2, 1));
    }

    #[tokio::test]
    async fn a_refused_command_is_answered_error_stages_nothing_and_is_not_remembered() {
        let (harness, runs) = (Harness::new(), Arc::new(AtomicUsize::new(0)));
        let transaction = Uuid::new_v4();
        let message = command(&[transaction], Value::from("refuse"));
        harness
            .inner
            .command("Book", &booking(&runs), &message)
            .await;
        let reply = harness.only_reply();
        assert_eq!(reply.status, Some(SagaResponseStatus::Error));
        assert_eq!(reply.payload, Value::from("fully booked"));
        assert!(harness.store.staged(transaction).await.unwrap().is_empty());
        assert!(harness.store.answered(message.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_system_error() {
        let (harness, runs) = (Harness::new(), Arc::new(AtomicUsize::new(0)));
        let message = command(&[Uuid::new_v4()], Value::from("panic"));
        harness
            .inner
            .command("Book", &booking(&runs), &message)
            .await;
        let reply = harness.only_reply();
        assert_eq!(reply.status, Some(SagaResponseStatus::SystemError));
        let expected = "the handler panicked: the seat map is gone";
        assert_eq!(reply.payload, Value::from(expected));
    }

    #[tokio::test]
    async fn a_command_that_cannot_be_understood_is_answered_system_error_and_counted() {
        let (harness, runs) = (Harness::new(), Arc::new(AtomicUsize::new(0)));
        let handler = booking(&runs);
        let no_header = BrokerMessage::new("Book", Value::from("seat-1")).with_reply_to("R");
        harness.inner.command("Book", &handler, &no_header).await;
        let bad_payload = command(&[Uuid::new_v4()], Value::from(7));
        harness.inner.command("Book", &handler, &bad_payload).await;
        let statuses = harness
            .broker
            .history()
            .into_iter()
            .map(|reply| reply.status)
            .collect::<Vec<_>>();
        let system_error = Some(SagaResponseStatus::SystemError);
        assert_eq!(statuses, [system_error, system_error]);
        assert_eq!(harness.inner.counters.snapshot().undecodable, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_command_is_asked_for_again_when_the_store_cannot_tell_whether_it_ran() {
        let harness = Harness::with_store(Arc::new(UnreachableStore));
        let runs = Arc::new(AtomicUsize::new(0));
        let message = command(&[Uuid::new_v4()], Value::from("seat-1"));
        let handled = harness
            .inner
            .command("Book", &booking(&runs), &message)
            .await;
        assert_eq!(handled, Handled::Again);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert!(harness.broker.history().is_empty());
    }

    #[tokio::test]
    async fn a_command_after_its_transaction_was_rejected_has_its_effects_rejected_at_once() {
        let rejected = Arc::new(std::sync::Mutex::new(Vec::<Settled>::new()));
        let mut callbacks = Callbacks::default();
        let seen = Arc::clone(&rejected);
        callbacks.add(Outcome::Rejected, None, move |settled| {
            seen.lock().unwrap().push(settled);
            async {}
        });
        let harness = Harness::with_callbacks(callbacks);
        let transaction = Uuid::new_v4();
        harness
            .inner
            .settle(Outcome::Rejected, transaction)
            .await
            .unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let message = command(&[transaction], Value::from("seat-1"));
        harness
            .inner
            .command("Book", &booking(&runs), &message)
            .await;
        assert_eq!(
            harness.only_reply().status,
            Some(SagaResponseStatus::Success)
        );
        assert!(harness.store.staged(transaction).await.unwrap().is_empty());
        let rejected = rejected.lock().unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].effects[0].key, "seat-1");
    }
}
