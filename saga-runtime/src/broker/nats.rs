//! The NATS JetStream broker: topics are subjects of one stream, subscribers are pull consumers.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use futures_util::StreamExt;

use super::{Broker, DeadLetter, Delivery, DeliverySource, Subscription};
use crate::error::BrokerError;
use crate::message::BrokerMessage;

mod ack;
use ack::{NatsAcknowledge, keep_alive};

/// The default limit on an encoded message: 1 MiB (the NATS server's default maximum payload).
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The header of a dead letter that says why it was set aside.
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) const DEAD_LETTER_REASON: &str = "Saga-Dead-Letter-Reason";

/// The header of a dead letter that names the topic it was published on.
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) const DEAD_LETTER_TOPIC: &str = "Saga-Dead-Letter-Topic";

/// A broker on NATS JetStream.
///
/// Every topic is the subject `{prefix}.{topic}` (the topic sanitized: see below), and one stream,
/// named after the prefix, captures `{prefix}.>` with work-queue retention: a message stays stored
/// until a subscriber acknowledges it, so messages published while nobody listens wait for the
/// first subscriber.
///
/// - [`publish`](Broker::publish) sends the whole [`BrokerMessage`] as JSON, refuses a message over
///   the size limit with [`BrokerError::TooLarge`] before sending it, sets `Nats-Msg-Id` to the
///   message id (the stream drops a repeat within its duplicate window) and returns once the stream
///   stored it.
/// - [`subscribe`](Broker::subscribe) binds to a durable pull consumer named after the topic, shared
///   by every subscriber of the topic: they compete for its messages, and a restarted instance
///   resumes what arrived while it was down. A delivery that is neither acked nor nacked within
///   the ack wait (its subscriber died) goes to another subscriber. A nack redelivers after the
///   redelivery delay.
/// - [`subscribe_private`](Broker::subscribe_private) uses an ephemeral consumer, deleted (and its
///   subject purged) when the subscription is dropped, or by the server once it is idle.
///
/// **Dead letters.** A delivery that does not decode as a [`BrokerMessage`], that exceeds the size
/// limit, or that was already delivered `max_deliver` times is never handed out: it is published
/// to `{prefix}.dead.{topic}` with headers [`DEAD_LETTER_REASON`] and [`DEAD_LETTER_TOPIC`] and
/// its original payload, then acknowledged. The delivery count is checked by the broker itself
/// (the consumer has no limit of its own), so a message nacked `max_deliver` times is
/// dead-lettered on its next delivery. A subscriber sets aside a delivery it can never handle the
/// same way, with its own reason, through [`Delivery::dead_letter`]: the dead letter is stored,
/// then the delivery acknowledged (if the dead letter cannot be stored, the delivery is nacked and
/// the error returned). [`take_dead_letters`](Self::take_dead_letters) reads them.
///
/// **Topic names.** A topic is one subject token: ASCII letters, digits, `_` and `-` are kept, every
/// other byte becomes `~` and two hex digits (`orderReply.1f2e` is `orderReply~2e1f2e`), so
/// distinct topics stay distinct and `.`, `*`, `>` and spaces never reach a subject. The prefix is
/// sanitized the same way.
///
/// Cloning shares the connection.
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    jetstream: jetstream::Context,
    stream: stream::Stream,
    settings: Settings,
}

#[derive(Debug, Clone)]
struct Settings {
    prefix: String,
    max_message_bytes: usize,
    ack_wait: Duration,
    max_deliver: u32,
    redelivery_delay: Duration,
    duplicate_window: Duration,
    prefetch: usize,
    private_idle: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: sanitize("saga"),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            redelivery_delay: Duration::from_secs(1),
            duplicate_window: Duration::from_secs(120),
            prefetch: 8,
            private_idle: Duration::from_secs(60),
        }
    }
}

/// Configures and connects a [`NatsBroker`].
#[derive(Debug, Clone)]
pub struct NatsBrokerBuilder {
    url: String,
    settings: Settings,
}

impl NatsBrokerBuilder {
    /// The subject prefix, which also names the stream (default `saga`).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.settings.prefix = sanitize(prefix);
        self
    }

    /// The largest encoded message published or delivered (default [`DEFAULT_MAX_MESSAGE_BYTES`]).
    /// The server's own limit (`max_payload`) still applies.
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_message_bytes = bytes;
        self
    }

    /// How long a delivery may go without news from its subscriber before it goes to another one
    /// (default 30 s). While a subscriber holds a delivery, it tells the server every half ack
    /// wait that it is still at work, so a long handling is not handed out twice; a subscriber
    /// that died stops telling, and its deliveries come again after this. Set only when a topic's
    /// consumer is created: an existing consumer keeps its value.
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.settings.ack_wait = wait;
        self
    }

    /// How many times a message is handed out before it is dead-lettered (default 10, at least 1).
    #[must_use]
    pub fn max_deliver(mut self, attempts: u32) -> Self {
        self.settings.max_deliver = attempts.max(1);
        self
    }

    /// How long a nacked delivery waits before it is delivered again (default 1 s).
    #[must_use]
    pub fn redelivery_delay(mut self, delay: Duration) -> Self {
        self.settings.redelivery_delay = delay;
        self
    }

    /// How long the stream remembers message ids to drop repeats (default 2 min). Set only when the
    /// stream is created.
    #[must_use]
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.settings.duplicate_window = window;
        self
    }

    /// How many messages a subscriber pulls ahead of its handler (default 8). A prefetched message
    /// counts against the ack wait like one being handled.
    #[must_use]
    pub fn prefetch(mut self, messages: usize) -> Self {
        self.settings.prefetch = messages.max(1);
        self
    }

    /// Connects, and creates the stream if it does not exist.
    pub async fn connect(self) -> Result<NatsBroker, BrokerError> {
        let client = async_nats::connect(&self.url).await.map_err(other)?;
        let jetstream = jetstream::new(client);
        let settings = self.settings;
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: settings.prefix.clone(),
                subjects: vec![format!("{}.>", settings.prefix)],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                duplicate_window: settings.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(other)?;
        Ok(NatsBroker {
            inner: Arc::new(Inner {
                jetstream,
                stream,
                settings,
            }),
        })
    }
}

impl NatsBroker {
    /// A builder for a broker on the NATS server at `url` (e.g. `nats://127.0.0.1:4222`).
    pub fn builder(url: impl Into<String>) -> NatsBrokerBuilder {
        NatsBrokerBuilder {
            url: url.into(),
            settings: Settings::default(),
        }
    }

    /// Connects to the NATS server at `url` with the default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Self, BrokerError> {
        Self::builder(url).connect().await
    }

    /// The subject `topic` is published on.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn subject(&self, topic: &str) -> String {
        format!("{}.{}", self.inner.settings.prefix, sanitize(topic))
    }

    /// The subject the dead letters of `topic` are published on.
    pub(crate) fn dead_letter_subject(&self, topic: &str) -> String {
        format!("{}.dead.{}", self.inner.settings.prefix, sanitize(topic))
    }

    /// Takes the dead letters of `topic` stored so far, oldest first: they are removed from the
    /// stream.
    pub async fn take_dead_letters(&self, topic: &str) -> Result<Vec<DeadLetter>, BrokerError> {
        let consumer: PullConsumer = self
            .inner
            .stream
            .create_consumer(pull::Config {
                filter_subject: self.dead_letter_subject(topic),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                inactive_threshold: Duration::from_secs(10),
                ..Default::default()
            })
            .await
            .map_err(other)?;
        let name = consumer.cached_info().name.clone();
        let mut remaining = consumer.cached_info().num_pending;
        let mut letters = Vec::new();
        while remaining > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(usize::try_from(remaining).unwrap_or(usize::MAX))
                .messages()
                .await
                .map_err(other)?;
            let mut taken = 0;
            while let Some(message) = batch.next().await {
                let message = message.map_err(boxed)?;
                let header = |name: &str| {
                    message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get(name))
                        .map(|value| value.as_str().to_owned())
                        .unwrap_or_default()
                };
                letters.push(DeadLetter {
                    topic: header(DEAD_LETTER_TOPIC),
                    reason: header(DEAD_LETTER_REASON),
                    payload: message.payload.to_vec(),
                });
                message.double_ack().await.map_err(boxed)?;
                taken += 1;
            }
            if taken == 0 {
                break;
            }
            remaining = remaining.saturating_sub(taken);
        }
        let _ = self.inner.stream.delete_consumer(&name).await;
        Ok(letters)
    }

    /// Subscribes through `consumer`; `private` is deleted when the subscription is dropped.
    async fn open(
        &self,
        consumer: PullConsumer,
        topic: &str,
        private: Option<PrivateConsumer>,
    ) -> Result<Subscription, BrokerError> {
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.inner.settings.prefetch)
            .messages()
            .await
            .map_err(other)?;
        Ok(Subscription::new(Source {
            messages,
            inner: Arc::clone(&self.inner),
            topic: topic.to_owned(),
            _private: private,
        }))
    }

    fn consumer_config(&self, topic: &str) -> pull::Config {
        pull::Config {
            filter_subject: self.subject(topic),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: self.inner.settings.ack_wait,
            // The delivery count is checked on delivery (see `Source::screen`).
            max_deliver: -1,
            ..Default::default()
        }
    }
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        let payload = serde_json::to_vec(&message).map_err(other)?;
        let limit = self.inner.settings.max_message_bytes;
        if payload.len() > limit {
            return Err(BrokerError::TooLarge {
                topic: message.topic,
                size: payload.len(),
                limit,
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, message.id.to_string().as_str());
        let stored = self
            .inner
            .jetstream
            .publish_with_headers(self.subject(&message.topic), headers, payload.into())
            .await
            .map_err(other)?;
        stored.await.map_err(other)?;
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        let consumer: PullConsumer = self
            .inner
            .stream
            .get_or_create_consumer(
                &sanitize(topic),
                pull::Config {
                    durable_name: Some(sanitize(topic)),
                    ..self.consumer_config(topic)
                },
            )
            .await
            .map_err(other)?;
        self.open(consumer, topic, None).await
    }

    async fn subscribe_private(&self, topic: &str) -> Result<Subscription, BrokerError> {
        let consumer: PullConsumer = self
            .inner
            .stream
            .create_consumer(pull::Config {
                inactive_threshold: self.inner.settings.private_idle,
                ..self.consumer_config(topic)
            })
            .await
            .map_err(other)?;
        let private = PrivateConsumer {
            stream: self.inner.stream.clone(),
            name: consumer.cached_info().name.clone(),
            subject: self.subject(topic),
        };
        self.open(consumer, topic, Some(private)).await
    }
}

/// An ephemeral consumer, deleted with its subject's leftovers when dropped.
struct PrivateConsumer {
    stream: stream::Stream,
    name: String,
    subject: String,
}

impl Drop for PrivateConsumer {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to clean up from: the server deletes the idle consumer.
            return;
        };
        let stream = self.stream.clone();
        let name = std::mem::take(&mut self.name);
        let subject = std::mem::take(&mut self.subject);
        runtime.spawn(async move {
            let _ = stream.delete_consumer(&name).await;
            let _ = stream.purge().filter(subject).await;
        });
    }
}

/// The deliveries of one subscription.
struct Source {
    messages: pull::Stream,
    inner: Arc<Inner>,
    topic: String,
    _private: Option<PrivateConsumer>,
}

impl Source {
    /// The decoded message, or why it must be dead-lettered.
    fn screen(&self, message: &jetstream::Message) -> Result<BrokerMessage, String> {
        let settings = &self.inner.settings;
        if let Ok(info) = message.info()
            && info.delivered > i64::from(settings.max_deliver)
        {
            return Err(format!(
                "delivered {} times without being acknowledged (max_deliver is {})",
                info.delivered - 1,
                settings.max_deliver
            ));
        }
        if message.payload.len() > settings.max_message_bytes {
            return Err(format!(
                "the payload is {} bytes, over the limit of {}",
                message.payload.len(),
                settings.max_message_bytes
            ));
        }
        serde_json::from_slice(&message.payload)
            .map_err(|error| format!("the payload is not a saga message: {error}"))
    }

    /// Dead-letters a delivery the broker refuses to hand out, logging what fails.
    async fn dead_letter(&self, message: jetstream::Message, reason: &str) {
        tracing::warn!(topic = %self.topic, %reason, "dead-lettering a message");
        if let Err(error) = self.inner.dead_letter(&self.topic, message, reason).await {
            tracing::warn!(topic = %self.topic, %error, "dead-lettering a message failed");
        }
    }
}

impl Inner {
    /// Publishes `message` to the dead letters of `topic` with `reason`, then acknowledges it; if
    /// the dead letter cannot be stored, the message is nacked to be tried again and the error
    /// returned.
    async fn dead_letter(
        &self,
        topic: &str,
        message: jetstream::Message,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let mut headers = HeaderMap::new();
        headers.insert(DEAD_LETTER_REASON, header_value(reason).as_str());
        headers.insert(DEAD_LETTER_TOPIC, header_value(topic).as_str());
        if let Ok(info) = message.info() {
            // A dead letter published again after a crash is dropped as a repeat.
            let id = format!("dead-{}-{}", info.stream, info.stream_sequence);
            headers.insert(NATS_MESSAGE_ID, id.as_str());
        }
        let subject = format!("{}.dead.{}", self.settings.prefix, sanitize(topic));
        let stored = match self
            .jetstream
            .publish_with_headers(subject, headers, message.payload.clone())
            .await
        {
            Ok(stored) => stored.await.map(drop).map_err(other),
            Err(error) => Err(other(error)),
        };
        match stored {
            Ok(()) => message.double_ack().await.map_err(boxed),
            Err(error) => {
                tracing::error!(%topic, %error, "could not store a dead letter; asking for a redelivery");
                if let Err(nack) = message
                    .ack_with(AckKind::Nak(Some(self.settings.redelivery_delay)))
                    .await
                {
                    tracing::warn!(%topic, error = %nack, "asking for a redelivery failed");
                }
                Err(error)
            }
        }
    }
}

#[async_trait]
impl DeliverySource for Source {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let message = match self.messages.next().await? {
                Ok(message) => message,
                Err(error) if error.kind() == MessagesErrorKind::ConsumerDeleted => return None,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, %error, "pulling messages failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.screen(&message) {
                Ok(decoded) => {
                    let keep_alive = keep_alive(message.clone(), self.inner.settings.ack_wait);
                    let acknowledge = NatsAcknowledge {
                        message,
                        inner: Arc::clone(&self.inner),
                        topic: self.topic.clone(),
                        keep_alive,
                    };
                    return Some(Delivery::with_acknowledge(decoded, Box::new(acknowledge)));
                }
                Err(reason) => self.dead_letter(message, &reason).await,
            }
        }
    }
}

/// `text` as a header value: NATS headers are one line, so line breaks become spaces.
fn header_value(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

fn other(error: impl std::error::Error + Send + Sync + 'static) -> BrokerError {
    BrokerError::Other(Box::new(error))
}

fn boxed(error: Box<dyn std::error::Error + Send + Sync + 'static>) -> BrokerError {
    BrokerError::Other(error)
}

/// `text` as one subject token: ASCII letters, digits, `_` and `-` kept, every other byte as `~`
/// and two lower-case hex digits.
fn sanitize(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "~{byte:02x}");
        }
    }
    if out.is_empty() {
        out.push('~');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn sanitizing_keeps_plain_names_and_escapes_the_rest() {
        assert_eq!(
            sanitize("_ReserveOrderTransaction"),
            "_ReserveOrderTransaction"
        );
        assert_eq!(sanitize("order-service"), "order-service");
        assert_eq!(sanitize("orderReply.ab12"), "orderReply~2eab12");
        assert_eq!(sanitize("a b*c>"), "a~20b~2ac~3e");
        assert_eq!(sanitize("~"), "~7e");
        assert_eq!(sanitize("é"), "~c3~a9");
        assert_eq!(sanitize(""), "~");
        assert_ne!(sanitize("a.b"), sanitize("a b"));
    }
}
