//! What a broker reports when it cannot publish or subscribe.

/// The broker could not publish or subscribe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker was closed.
    #[error("the broker is closed")]
    Closed,
    /// The message exceeds the broker's size limit.
    #[error("message for `{topic}` is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Its topic.
        topic: String,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Any other failure of the transport.
    #[error("broker error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl BrokerError {
    /// Whether publishing the same message again can never succeed (it is too large), as opposed
    /// to a failure of the transport that may pass.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }
}
