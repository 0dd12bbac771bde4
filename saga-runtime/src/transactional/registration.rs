//! Handlers registered through `inventory` ([`CommandRegistration`], submitted by
//! `#[transactional_command]`), and collecting them for a participant: in topic order, never two for
//! one topic ([`DuplicateTopic`]).

use super::builder::TransactionalParticipantBuilder;

/// A command handler as `inventory` collects it: its topic, where it was declared, and how to add
/// it (with its callbacks) to a participant builder.
///
/// `#[transactional_command]` submits one per handler; by hand:
/// `inventory::submit! { CommandRegistration::new("Topic", concat!(file!(), ":", line!()), register) }`
/// (with `inventory` taken from `saga_runtime::__private`), `register` being a
/// `fn(TransactionalParticipantBuilder) -> TransactionalParticipantBuilder`.
pub struct CommandRegistration {
    topic: &'static str,
    location: &'static str,
    module_path: &'static str,
    register: fn(TransactionalParticipantBuilder) -> TransactionalParticipantBuilder,
}

impl CommandRegistration {
    /// The registration of the handler of `topic`, declared at `location` (`file:line`).
    pub const fn new(
        topic: &'static str,
        location: &'static str,
        register: fn(TransactionalParticipantBuilder) -> TransactionalParticipantBuilder,
    ) -> Self {
        Self {
            topic,
            location,
            module_path: "",
            register,
        }
    }

    /// The same registration, declared in module `module_path` (`module_path!()`; the macro
    /// gives it).
    pub const fn in_module(mut self, module_path: &'static str) -> Self {
        self.module_path = module_path;
        self
    }

    /// The module the handler was declared in (`crate::module`), empty when not given.
    pub fn module_path(&self) -> &'static str {
        self.module_path
    }

    /// The command topic.
    pub fn topic(&self) -> &'static str {
        self.topic
    }

    /// Where it was declared (`file:line`).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn location(&self) -> &'static str {
        self.location
    }

    /// Adds the handler, with its callbacks, to `builder`.
    pub(super) fn register(
        &self,
        builder: TransactionalParticipantBuilder,
    ) -> TransactionalParticipantBuilder {
        (self.register)(builder)
    }
}

impl std::fmt::Debug for CommandRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRegistration")
            .field("topic", &self.topic)
            .field("location", &self.location)
            .field("module_path", &self.module_path)
            .finish_non_exhaustive()
    }
}

inventory::collect!(CommandRegistration);

/// Two registered handlers claim one command topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two transactional command handlers for topic `{topic}`: {first} and {second}")]
pub struct DuplicateTopic {
    /// The topic.
    pub topic: String,
    /// Where the first handler was declared.
    pub first: String,
    /// Where the second handler was declared.
    pub second: String,
}

/// The handlers registered in the crates linked into this binary that `filter` accepts, in topic
/// order (never in `inventory`'s order, which is unspecified).
pub(super) fn registered(
    filter: impl Fn(&CommandRegistration) -> bool,
) -> Result<Vec<&'static CommandRegistration>, DuplicateTopic> {
    let registrations = inventory::iter::<CommandRegistration>
        .into_iter()
        .filter(|registration| filter(registration))
        .collect();
    in_topic_order(registrations)
}

/// `registrations` sorted by topic (then declaration), refused when two share a topic: which of
/// them should answer it cannot be guessed.
fn in_topic_order(
    mut registrations: Vec<&CommandRegistration>,
) -> Result<Vec<&CommandRegistration>, DuplicateTopic> {
    registrations.sort_by_key(|registration| (registration.topic, registration.location));
    for pair in registrations.windows(2) {
        if pair[0].topic == pair[1].topic {
            return Err(DuplicateTopic {
                topic: pair[0].topic.to_owned(),
                first: pair[0].location.to_owned(),
                second: pair[1].location.to_owned(),
            });
        }
    }
    Ok(registrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unchanged(builder: TransactionalParticipantBuilder) -> TransactionalParticipantBuilder {
        builder
    }

    const PAY: CommandRegistration = CommandRegistration::new("Pay", "pay.rs:3", unchanged);
    const BOOK: CommandRegistration =
        CommandRegistration::new("Book", "book.rs:9", unchanged).in_module("shop::book");
    const BOOK_AGAIN: CommandRegistration =
        CommandRegistration::new("Book", "book.rs:2", unchanged);

    #[test]
    fn registrations_come_in_topic_order() {
        let ordered = in_topic_order(vec![&PAY, &BOOK]).expect("no topic twice");
        let topics = ordered.iter().map(|r| r.topic()).collect::<Vec<_>>();
        assert_eq!(topics, ["Book", "Pay"]);
        assert_eq!(ordered[0].module_path(), "shop::book");
        assert_eq!(ordered[1].module_path(), "");
    }

    #[test]
    fn two_registrations_of_one_topic_are_refused_naming_both_in_declaration_order() {
        let refused = in_topic_order(vec![&BOOK, &PAY, &BOOK_AGAIN]).unwrap_err();
        assert_eq!(
            refused,
            DuplicateTopic {
                topic: "Book".to_owned(),
                first: "book.rs:2".to_owned(),
                second: "book.rs:9".to_owned(),
            }
        );
    }
}
