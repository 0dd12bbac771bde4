//! Two `#[transactional_command]` handlers for one topic: `from_inventory` refuses to choose.

use std::sync::Arc;

use saga_runtime::prelude::*;
use saga_runtime::transactional::{
    CommandContext, CommandError, DuplicateTopic, InMemoryParticipantStore,
    TransactionalParticipant,
};
use saga_runtime::wiring::*;

#[transactional_command(topic = "ShipParcel")]
async fn ship(_context: CommandContext, _request: String) -> Result<(), CommandError> {
    Ok(())
}

#[transactional_command(topic = "ShipParcel")]
async fn ship_again(_context: CommandContext, _request: String) -> Result<(), CommandError> {
    Ok(())
}

#[test]
fn two_handlers_for_one_topic_are_an_error_naming_both() {
    let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new());
    let error = TransactionalParticipant::from_inventory(
        "shipping",
        broker,
        Arc::new(InMemoryParticipantStore::new()),
    )
    .err()
    .expect("two handlers claim `ShipParcel`");
    let DuplicateTopic {
        topic,
        first,
        second,
    } = error;
    assert_eq!(topic, "ShipParcel");
    let mut lines = [first, second].map(|location| {
        location
            .rsplit_once(':')
            .map(|(_, line)| line.to_owned())
            .expect("file:line")
    });
    lines.sort();
    assert_eq!(lines, ["12", "17"]);
}
