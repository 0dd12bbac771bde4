//! Who runs an execution: the service and the topic its replies come back on.

/// Who runs the execution: the service name (it joins every transaction it runs) and the topic
/// replies to its commands go to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) struct ExecutionEnv {
    service: String,
    reply_topic: String,
}

impl ExecutionEnv {
    /// The environment of service `service`; replies go to `{service}Reply`.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn new(service: impl Into<String>) -> Self {
        let service = service.into();
        let reply_topic = format!("{service}Reply");
        Self {
            service,
            reply_topic,
        }
    }

    /// The service name.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// The reply topic.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn reply_topic(&self) -> &str {
        &self.reply_topic
    }
}
