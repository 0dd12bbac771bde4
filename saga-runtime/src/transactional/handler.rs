//! Command handlers: what a handler is given ([`CommandContext`]), how it fails
//! ([`CommandError`]), and the type-erased form the participant keeps per topic.

use std::error::Error;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::message::{BrokerMessage, SagaResponseStatus};

/// Why a command handler did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// A business refusal: the reply is ERROR (400) and the saga's `on_error` (or its failure)
    /// decides what follows.
    #[error("{0}")]
    Business(String),
    /// A failure of the service: the reply is SYSTEM_ERROR (500), its content the message followed
    /// by the chain of causes.
    #[error("{message}")]
    System {
        /// What failed.
        message: String,
        /// The failure underneath, when one caused it.
        #[source]
        source: Option<Box<dyn Error + Send + Sync + 'static>>,
    },
}

impl CommandError {
    /// A business refusal.
    pub fn business(message: impl std::fmt::Display) -> Self {
        Self::Business(message.to_string())
    }

    /// A system failure with no cause underneath.
    pub fn system(message: impl std::fmt::Display) -> Self {
        Self::System {
            message: message.to_string(),
            source: None,
        }
    }

    /// A system failure caused by `cause`, which is kept as its source.
    pub(crate) fn system_caused_by(
        message: impl std::fmt::Display,
        cause: impl Into<Box<dyn Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::System {
            message: message.to_string(),
            source: Some(cause.into()),
        }
    }

    /// The reply status it is answered with.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn status(&self) -> SagaResponseStatus {
        match self {
            Self::Business(_) => SagaResponseStatus::Error,
            Self::System { .. } => SagaResponseStatus::SystemError,
        }
    }

    /// The reply's content: the message, then each cause, `: `-separated (the reply is all the
    /// saga learns of the failure).
    pub(super) fn reply_content(&self) -> String {
        let mut content = self.to_string();
        let mut cause = self.source();
        while let Some(error) = cause {
            content.push_str(": ");
            content.push_str(&error.to_string());
            cause = error.source();
        }
        content
    }
}

impl From<serde_json::Error> for CommandError {
    fn from(error: serde_json::Error) -> Self {
        Self::system_caused_by("a JSON value did not convert", error)
    }
}

/// What a command handler is given besides its request: the message, the transactions it runs in,
/// and where to stage its effects.
#[derive(Debug, Clone)]
pub struct CommandContext {
    message: Arc<BrokerMessage>,
    transactions: Vec<Uuid>,
    staged: Arc<Mutex<Vec<(String, Value)>>>,
}

impl CommandContext {
    /// The context of `message`, running in `transactions` (outermost first, never empty).
    pub(super) fn new(message: &BrokerMessage, transactions: Vec<Uuid>) -> Self {
        Self {
            message: Arc::new(message.clone()),
            transactions,
            staged: Arc::default(),
        }
    }

    /// The command as received.
    pub fn message(&self) -> &BrokerMessage {
        &self.message
    }

    /// The transactions it runs in, outermost first (never empty).
    pub fn transactions(&self) -> &[Uuid] {
        &self.transactions
    }

    /// The transaction it joins: the innermost one.
    pub fn transaction(&self) -> Uuid {
        self.transactions.last().copied().unwrap_or_default()
    }

    /// Records a tentative effect under conflict key `key`: it is kept under
    /// [`transaction`](Self::transaction) once the handler succeeds, and handed to the `on_commit`
    /// or `on_reject` callbacks when the transaction settles.
    pub fn stage(&self, key: impl Into<String>, effect: Value) {
        self.staged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key.into(), effect));
    }

    /// What was staged so far, as `(key, effect)` in staging order, leaving nothing behind.
    pub(super) fn take_staged(&self) -> Vec<(String, Value)> {
        std::mem::take(&mut *self.staged.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What an erased handler returns: `Err` when the request did not decode (the handler never ran),
/// else the handler's own result with its response encoded.
pub(super) type HandlerResult = Result<Result<Value, CommandError>, serde_json::Error>;

/// A handler with its request and response types erased to JSON, as kept per command topic.
pub(super) type ErasedHandler =
    Arc<dyn Fn(CommandContext, Value) -> BoxFuture<'static, HandlerResult> + Send + Sync>;

/// Erases `handler`: the payload decoded as `Req`, the response encoded as JSON.
pub(super) fn erase_handler<Req, Resp, F, Fut>(handler: F) -> ErasedHandler
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + 'static,
    F: Fn(CommandContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, CommandError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |context, payload| {
        let request = match Req::deserialize(payload) {
            Ok(request) => request,
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        let future = handler(context, request);
        Box::pin(async move {
            Ok(match future.await {
                Ok(response) => serde_json::to_value(response).map_err(|error| {
                    CommandError::system_caused_by("the response does not encode", error)
                }),
                Err(error) => Err(error),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_business_refusal_is_answered_error_with_its_message() {
        let error = CommandError::business("out of stock");
        assert_eq!(error.status(), SagaResponseStatus::Error);
        assert_eq!(error.reply_content(), "out of stock");
        assert!(error.source().is_none());
    }

    #[test]
    fn a_system_failure_keeps_its_cause_as_source() {
        let cause = std::io::Error::other("disk full");
        let error = CommandError::system_caused_by("could not write the ledger", cause);
        assert_eq!(error.status(), SagaResponseStatus::SystemError);
        assert_eq!(error.to_string(), "could not write the ledger");
        let source = error.source().expect("the cause is the source");
        assert_eq!(source.to_string(), "disk full");
        assert_eq!(
            error.reply_content(),
            "could not write the ledger: disk full"
        );
    }

    #[test]
    fn a_system_failure_without_cause_answers_its_message_alone() {
        assert_eq!(CommandError::system("boom").reply_content(), "boom");
    }

    #[test]
    fn a_json_error_becomes_a_system_failure_caused_by_it() {
        let json = serde_json::from_str::<u32>("\"x\"").unwrap_err();
        let text = json.to_string();
        let error = CommandError::from(json);
        assert_eq!(error.status(), SagaResponseStatus::SystemError);
        let source = error.source().expect("the JSON error is the source");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        assert!(error.reply_content().ends_with(&text));
    }

    #[tokio::test]
    async fn an_erased_handler_tells_an_undecodable_request_from_a_failure() {
        let handler = erase_handler(|_context, amount: u32| async move {
            if amount == 0 {
                Err(CommandError::business("nothing to book"))
            } else {
                Ok(amount * 2)
            }
        });
        let context = || CommandContext::new(&BrokerMessage::new("Book", Value::Null), vec![]);
        let doubled = handler(context(), Value::from(21)).await;
        assert_eq!(doubled.unwrap().unwrap(), Value::from(42));
        let refused = handler(context(), Value::from(0)).await;
        assert!(matches!(refused, Ok(Err(CommandError::Business(_)))));
        let undecodable = handler(context(), Value::from("twenty")).await;
        assert!(undecodable.is_err());
    }

    #[test]
    fn the_context_joins_the_innermost_transaction_and_hands_out_its_staging_once() {
        let (outer, inner) = (Uuid::new_v4(), Uuid::new_v4());
        let context =
            CommandContext::new(&BrokerMessage::new("Book", Value::Null), vec![outer, inner]);
        assert_eq!(context.transaction(), inner);
        context.stage("seat-1", Value::from(1));
        context.clone().stage("seat-2", Value::from(2));
        let staged = context.take_staged();
        assert_eq!(
            staged,
            vec![
                ("seat-1".to_owned(), Value::from(1)),
                ("seat-2".to_owned(), Value::from(2))
            ]
        );
        assert!(context.take_staged().is_empty());
    }
}
