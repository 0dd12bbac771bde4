//! The outbox: what an execution emitted, held until its caller has stored the new state.

use crate::message::BrokerMessage;

/// The messages an execution emitted, in order, waiting to be published.
#[derive(Debug, Default)]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) struct Outbox {
    messages: Vec<BrokerMessage>,
}

impl Outbox {
    /// An empty outbox.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The pending messages.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn messages(&self) -> &[BrokerMessage] {
        &self.messages
    }

    /// Takes the pending messages out.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn drain(&mut self) -> Vec<BrokerMessage> {
        std::mem::take(&mut self.messages)
    }

    /// Whether nothing is pending.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub(crate) fn push(&mut self, message: BrokerMessage) {
        self.messages.push(message);
    }

    /// Puts `messages` back in front of what is queued (they were taken out but not published).
    pub(crate) fn restore(&mut self, mut messages: Vec<BrokerMessage>) {
        if messages.is_empty() {
            return;
        }
        messages.append(&mut self.messages);
        self.messages = messages;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn message(topic: &str) -> BrokerMessage {
        BrokerMessage::new(topic, Value::Null)
    }

    fn topics(outbox: &Outbox) -> Vec<&str> {
        outbox
            .messages()
            .iter()
            .map(|message| message.topic.as_str())
            .collect()
    }

    #[test]
    fn restored_messages_go_out_before_the_ones_queued_since() {
        let mut outbox = Outbox::new();
        outbox.push(message("later"));
        outbox.restore(vec![message("first"), message("second")]);
        assert_eq!(topics(&outbox), ["first", "second", "later"]);
    }

    #[test]
    fn draining_empties_the_outbox() {
        let mut outbox = Outbox::new();
        outbox.push(message("a"));
        assert_eq!(outbox.drain().len(), 1);
        assert!(outbox.is_empty());
        outbox.restore(Vec::new());
        assert!(outbox.is_empty());
    }
}
