//! The headers of the message being handled, for sagas started inside a message handler.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use crate::message::{Headers, header, join_services};

tokio::task_local! {
    static REQUEST_HEADERS: RequestHeaders;
}

/// Shared, mutable headers of the message being handled.
///
/// A handler runs its code inside [`RequestHeaders::scope`]; a saga started there inherits the
/// message's headers (its commands nest their transaction inside the message's `transactions`, and a
/// `user` header wins over the run option), and when the run returns, the message's
/// `related_services` header gains the services the saga involved, so that the handler's own reply
/// tells its caller who joined the transaction.
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders {
    headers: Arc<Mutex<Headers>>,
}

impl RequestHeaders {
    /// Wraps the headers of an incoming message.
    pub fn new(headers: Headers) -> Self {
        Self {
            headers: Arc::new(Mutex::new(headers)),
        }
    }

    /// Runs `future` with these as the current request headers.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        REQUEST_HEADERS.scope(self, future).await
    }

    /// The request headers of the running task, if it runs inside [`scope`](Self::scope).
    pub fn current() -> Option<Self> {
        REQUEST_HEADERS.try_with(Clone::clone).ok()
    }

    /// A copy of the headers.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn snapshot(&self) -> Headers {
        self.headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds `services` to the `related_services` header.
    pub(crate) fn add_related_services(&self, services: &BTreeSet<String>) {
        let mut headers = self.headers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut related = headers
            .get(header::RELATED_SERVICES)
            .map(|value| crate::message::split_services(value))
            .unwrap_or_default();
        related.extend(services.iter().cloned());
        headers.insert(header::RELATED_SERVICES.to_owned(), join_services(&related));
    }
}
