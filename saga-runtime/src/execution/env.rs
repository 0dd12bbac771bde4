//! Who runs an execution: the service and the topic its replies come back on.

/// Who runs the execution: the service name (it joins every transaction it runs) and the topic
/// replies to its commands go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionEnv {
    service: String,
    reply_topic: String,
}

impl ExecutionEnv {
    /// The environment of service `service`; replies go to `{service}Reply`.
    pub fn new(service: impl Into<String>) -> Self {
        let service = service.into();
        let reply_topic = format!("{service}Reply");
        Self {
            service,
            reply_topic,
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The reply topic.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }
}
