//! Messages: what a saga sends (`SagaRequest`), what comes back (`SagaResponse`), and the envelope the
//! broker carries (`BrokerMessage`) with its headers.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::step_error::StepError;

/// Message headers, ordered by name.
pub type Headers = BTreeMap<String, String>;

/// Names of the headers the saga protocol uses.
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) mod header {
    /// The saga execution id a command belongs to (and a reply answers).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) const SAGA: &str = "saga";
    /// The acting user.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) const USER: &str = "user";
    /// The transaction ids a command runs in, outermost first, comma-separated.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) const TRANSACTIONS: &str = "transactions";
    /// The services that joined the transaction, comma-separated.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) const RELATED_SERVICES: &str = "related_services";
    /// The transaction a reserve/commit/reject message or its reply is about.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) const TRANSACTION: &str = "transaction";
    /// The service that answers a reserve/commit/reject message.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) const SERVICE: &str = "service";
}

/// A command a remote step sends: the target topic and its content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRequest {
    target: String,
    content: Value,
}

impl SagaRequest {
    /// A request for `target` carrying `content` (serialized now, so a step sees encoding errors).
    pub fn new<T: Serialize + ?Sized>(
        target: impl Into<String>,
        content: &T,
    ) -> Result<Self, StepError> {
        Ok(Self {
            target: target.into(),
            content: serde_json::to_value(content)?,
        })
    }

    /// A request with no content (`null`).
    pub fn empty(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            content: Value::Null,
        }
    }

    /// The command topic.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The content, decoded as a `T`.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn content<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        Ok(T::deserialize(&self.content)?)
    }

    /// The raw content.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn raw_content(&self) -> &Value {
        &self.content
    }

    pub(crate) fn into_parts(self) -> (String, Value) {
        (self.target, self.content)
    }
}

/// The status of a reply: 200 SUCCESS, 400 ERROR (a business refusal), 500 SYSTEM_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
pub enum SagaResponseStatus {
    /// 200: the participant did what was asked.
    Success,
    /// 400: the participant refused (a business error).
    Error,
    /// 500: the participant failed.
    SystemError,
}

impl SagaResponseStatus {
    /// The numeric code.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn code(self) -> u16 {
        self.into()
    }
}

impl From<SagaResponseStatus> for u16 {
    fn from(status: SagaResponseStatus) -> u16 {
        match status {
            SagaResponseStatus::Success => 200,
            SagaResponseStatus::Error => 400,
            SagaResponseStatus::SystemError => 500,
        }
    }
}

impl TryFrom<u16> for SagaResponseStatus {
    type Error = String;

    fn try_from(code: u16) -> Result<Self, String> {
        match code {
            200 => Ok(Self::Success),
            400 => Ok(Self::Error),
            500 => Ok(Self::SystemError),
            other => Err(format!(
                "{other} is not a saga reply status (200, 400, 500)"
            )),
        }
    }
}

/// A reply to a saga command, as the saga's handlers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaResponse {
    saga: Uuid,
    request: Uuid,
    status: SagaResponseStatus,
    related_services: BTreeSet<String>,
    content: Value,
}

impl SagaResponse {
    /// A reply to request `request` of saga execution `saga`.
    pub fn new<T: Serialize + ?Sized>(
        saga: Uuid,
        request: Uuid,
        status: SagaResponseStatus,
        content: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            saga,
            request,
            status,
            related_services: BTreeSet::new(),
            content: serde_json::to_value(content)?,
        })
    }

    /// Adds services to the set of services that joined the transaction.
    #[must_use]
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn with_related_services<I, S>(mut self, services: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.related_services
            .extend(services.into_iter().map(Into::into));
        self
    }

    /// Reads a reply from the envelope it arrived in.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn from_message(message: &BrokerMessage) -> Result<Self, MessageError> {
        let saga = message.saga_id()?;
        let request = message
            .correlation_id
            .ok_or_else(|| MessageError::MissingCorrelation {
                topic: message.topic.clone(),
            })?;
        let status = message.status.ok_or_else(|| MessageError::MissingStatus {
            topic: message.topic.clone(),
        })?;
        Ok(Self {
            saga,
            request,
            status,
            related_services: message.related_services(),
            content: message.payload.clone(),
        })
    }

    /// The saga execution this reply is for.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn saga(&self) -> Uuid {
        self.saga
    }

    /// The id of the command this reply answers.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn request(&self) -> Uuid {
        self.request
    }

    /// The reply status.
    pub fn status(&self) -> SagaResponseStatus {
        self.status
    }

    /// Whether the status is SUCCESS.
    pub fn ok(&self) -> bool {
        self.status == SagaResponseStatus::Success
    }

    /// The services the participant reports as having joined the transaction.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn related_services(&self) -> &BTreeSet<String> {
        &self.related_services
    }

    /// The content decoded as a `T`.
    pub fn content<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        Ok(T::deserialize(&self.content)?)
    }

    /// The raw content.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn raw_content(&self) -> &Value {
        &self.content
    }
}

/// The envelope a broker carries: commands, replies and transaction messages alike.
///
/// Made with [`BrokerMessage::new`] and the `with_*` methods; fields may be added (it is
/// `#[non_exhaustive]`), so it is not built with a struct literal outside this crate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BrokerMessage {
    /// Unique id (deduplication key; replies name it as their `correlation_id`).
    pub id: Uuid,
    /// The topic it is published on.
    pub topic: String,
    /// Protocol and user headers.
    #[serde(default)]
    pub headers: Headers,
    /// Where the receiver sends its reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// For a reply: the id of the message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// For a reply: its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SagaResponseStatus>,
    /// The content.
    #[serde(default)]
    pub payload: Value,
}

impl BrokerMessage {
    /// A new message with a fresh id.
    pub fn new(topic: impl Into<String>, payload: Value) -> Self {
        Self {
            id: Uuid::new_v4(),
            topic: topic.into(),
            headers: Headers::new(),
            reply_to: None,
            correlation_id: None,
            status: None,
            payload,
        }
    }

    /// Sets a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the reply topic.
    #[must_use]
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn with_reply_to(mut self, topic: impl Into<String>) -> Self {
        self.reply_to = Some(topic.into());
        self
    }

    /// The reply to this message from `service`: sent to its `reply_to` topic, correlated with its id,
    /// carrying its `saga` and `transaction` headers and `related_services` with `service` added.
    ///
    /// Returns `None` when the message names no reply topic.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn reply(
        &self,
        service: &str,
        status: SagaResponseStatus,
        payload: Value,
    ) -> Option<BrokerMessage> {
        let topic = self.reply_to.clone()?;
        let mut headers = Headers::new();
        // `transactions` goes back too: an orchestrator that gave up on the command (its step
        // timed out) learns from a late reply which transaction to reject at this service.
        for name in [header::SAGA, header::TRANSACTION, header::TRANSACTIONS] {
            if let Some(value) = self.headers.get(name) {
                headers.insert(name.to_owned(), value.clone());
            }
        }
        let mut related = self.related_services();
        related.insert(service.to_owned());
        headers.insert(header::RELATED_SERVICES.to_owned(), join_services(&related));
        headers.insert(header::SERVICE.to_owned(), service.to_owned());
        Some(BrokerMessage {
            id: Uuid::new_v4(),
            topic,
            headers,
            reply_to: None,
            correlation_id: Some(self.id),
            status: Some(status),
            payload,
        })
    }

    /// The `saga` header as an execution id.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn saga_id(&self) -> Result<Uuid, MessageError> {
        let value = self
            .headers
            .get(header::SAGA)
            .ok_or_else(|| MessageError::MissingHeader {
                topic: self.topic.clone(),
                header: header::SAGA,
            })?;
        Uuid::parse_str(value).map_err(|_| MessageError::InvalidHeader {
            topic: self.topic.clone(),
            header: header::SAGA,
            value: value.clone(),
        })
    }

    /// The `related_services` header as a set (empty when absent).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn related_services(&self) -> BTreeSet<String> {
        self.headers
            .get(header::RELATED_SERVICES)
            .map(|value| split_services(value))
            .unwrap_or_default()
    }
}

/// The `transactions` header of `message` as ids, outermost first; `None` when absent, empty or
/// malformed (one id that does not parse spoils the whole header: running a command in the wrong
/// transaction would be worse than refusing it).
pub(crate) fn parse_transactions(message: &BrokerMessage) -> Option<Vec<Uuid>> {
    let value = message.headers.get(header::TRANSACTIONS)?;
    let ids = value
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(Uuid::parse_str)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    (!ids.is_empty()).then_some(ids)
}

/// Splits a comma-separated header value, dropping empty entries.
pub(crate) fn split_services(value: &str) -> BTreeSet<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|service| !service.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Joins service names into a header value.
pub(crate) fn join_services(services: &BTreeSet<String>) -> String {
    services
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// A message that cannot be read as a saga reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A required header is absent.
    #[error("message on `{topic}` lacks the `{header}` header")]
    MissingHeader {
        /// The message's topic.
        topic: String,
        /// The missing header.
        header: &'static str,
    },
    /// A header holds a value of the wrong form.
    #[error("message on `{topic}` has an invalid `{header}` header: {value:?}")]
    InvalidHeader {
        /// The message's topic.
        topic: String,
        /// The header.
        header: &'static str,
        /// Its value.
        value: String,
    },
    /// A reply without a status, or with one outside 200/400/500.
    #[error("message on `{topic}` has no valid reply status")]
    MissingStatus {
        /// The message's topic.
        topic: String,
    },
    /// A reply that does not name the request it answers.
    #[error("message on `{topic}` has no correlation id")]
    MissingCorrelation {
        /// The message's topic.
        topic: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_transactions(value: &str) -> BrokerMessage {
        BrokerMessage::new("Topic", Value::Null).with_header(header::TRANSACTIONS, value)
    }

    #[test]
    fn transactions_are_read_outermost_first() {
        let (outer, inner) = (Uuid::new_v4(), Uuid::new_v4());
        let message = with_transactions(&format!("{outer},{inner}"));
        assert_eq!(parse_transactions(&message), Some(vec![outer, inner]));
    }

    #[test]
    fn transactions_tolerate_spaces_and_empty_entries() {
        let id = Uuid::new_v4();
        let message = with_transactions(&format!(" , {id} ,,"));
        assert_eq!(parse_transactions(&message), Some(vec![id]));
    }

    #[test]
    fn no_transactions_header_is_none() {
        assert_eq!(
            parse_transactions(&BrokerMessage::new("Topic", Value::Null)),
            None
        );
    }

    #[test]
    fn an_empty_transactions_header_is_none() {
        assert_eq!(parse_transactions(&with_transactions(" , ")), None);
    }

    #[test]
    fn one_malformed_id_spoils_the_transactions_header() {
        let message = with_transactions(&format!("{},not-a-uuid", Uuid::new_v4()));
        assert_eq!(parse_transactions(&message), None);
    }
}
