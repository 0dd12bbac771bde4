//! What every step of one advance shares: the execution's identity, its environment, its headers
//! and the outbox its commands go to; and the guard that turns a handler's error or panic into a
//! [`StepFailure`].

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use uuid::Uuid;

use super::super::{ExecutionEnv, Outbox, StepFailure};
use crate::definition::BoxFuture;
use crate::error::StepError;
use crate::message::{BrokerMessage, Headers, SagaRequest, header};

/// What every step of one `execute` call shares.
pub(in crate::execution) struct Run<'r> {
    pub(super) id: Uuid,
    pub(super) user: Option<&'r str>,
    pub(super) env: &'r ExecutionEnv,
    headers: &'r Headers,
    outbox: &'r mut Outbox,
}

impl<'r> Run<'r> {
    pub(in crate::execution) fn new(
        id: Uuid,
        user: Option<&'r str>,
        env: &'r ExecutionEnv,
        headers: &'r Headers,
        outbox: &'r mut Outbox,
    ) -> Self {
        Self {
            id,
            user,
            env,
            headers,
            outbox,
        }
    }

    /// Queues `request` as a command with the execution's headers; returns the message id.
    pub(super) fn send(&mut self, request: SagaRequest) -> Uuid {
        let (target, content) = request.into_parts();
        let mut message = BrokerMessage::new(target, content).with_reply_to(self.env.reply_topic());
        message.headers = self.command_headers();
        let id = message.id;
        self.outbox.push(message);
        id
    }

    /// Queues `request` again as the command with message id `id` (sent before).
    pub(super) fn resend(&mut self, request: SagaRequest, id: Uuid) {
        let (target, content) = request.into_parts();
        let mut message = BrokerMessage::new(target, content).with_reply_to(self.env.reply_topic());
        message.id = id;
        message.headers = self.command_headers();
        self.outbox.push(message);
    }

    /// The headers of a command: the inherited ones, with the execution's id as `saga`, nested in
    /// the inherited `transactions`, and the acting user. Built per message, so that an advance
    /// that sends nothing builds nothing.
    fn command_headers(&self) -> Headers {
        let mut headers = self.headers.clone();
        let id = self.id.to_string();
        let transactions = match self.headers.get(header::TRANSACTIONS) {
            Some(outer) if !outer.is_empty() => format!("{outer},{id}"),
            _ => id.clone(),
        };
        headers.insert(header::TRANSACTIONS.to_owned(), transactions);
        headers.insert(header::SAGA.to_owned(), id);
        if let Some(user) = self.user {
            headers.insert(header::USER.to_owned(), user.to_owned());
        }
        headers
    }
}

/// Awaits a handler, turning its error or its panic into the step's failure.
pub(super) async fn guarded<T>(
    future: BoxFuture<'_, Result<T, StepError>>,
) -> Result<T, StepFailure> {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.into()),
        Err(panic) => Err(StepFailure::Panicked {
            message: panic_message(&*panic),
        }),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox_topics(outbox: &Outbox) -> Vec<(String, Headers)> {
        outbox
            .messages()
            .iter()
            .map(|message| (message.topic.clone(), message.headers.clone()))
            .collect()
    }

    #[tokio::test]
    async fn a_panicking_handler_fails_with_its_message() {
        let failure = guarded::<()>(Box::pin(async { panic!("boom {}", 42) }))
            .await
            .expect_err("the panic is caught");
        assert!(
            matches!(&failure, StepFailure::Panicked { message } if message == "boom 42"),
            "{failure:?}"
        );
        assert_eq!(failure.to_string(), "handler panicked: boom 42");
    }

    #[tokio::test]
    async fn a_handler_error_becomes_a_handler_failure() {
        let failure = guarded::<()>(Box::pin(async { Err(StepError::msg("card declined")) }))
            .await
            .expect_err("the error is the failure");
        assert!(matches!(failure, StepFailure::Handler { source: None, .. }));
        assert_eq!(failure.to_string(), "card declined");
    }

    #[test]
    fn commands_nest_the_execution_in_the_inherited_transactions_and_name_the_user() {
        let env = ExecutionEnv::new("order");
        let id = Uuid::new_v4();
        let mut inherited = Headers::new();
        inherited.insert(header::TRANSACTIONS.to_owned(), "outer".to_owned());
        let mut outbox = Outbox::new();
        let mut run = Run::new(id, Some("ann"), &env, &inherited, &mut outbox);
        let sent = run.send(SagaRequest::empty("Charge"));
        run.resend(SagaRequest::empty("Charge"), sent);
        let messages = outbox.messages();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].id, sent);
        assert_eq!(messages[1].id, sent, "a resend keeps the message id");
        for (topic, headers) in outbox_topics(&outbox) {
            assert_eq!(topic, "Charge");
            assert_eq!(headers[header::TRANSACTIONS], format!("outer,{id}"));
            assert_eq!(headers[header::SAGA], id.to_string());
            assert_eq!(headers[header::USER], "ann");
        }
        assert_eq!(messages[0].reply_to.as_deref(), Some("orderReply"));
    }
}
