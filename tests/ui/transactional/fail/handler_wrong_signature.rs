use saga_runtime::prelude::*;
use saga_runtime::transactional::{CommandContext, CommandError};

// Not async, and the request is missing.
#[transactional_command(topic = "BookFlight")]
fn book(_context: CommandContext) -> Result<(), CommandError> {
    Ok(())
}

fn main() {}
