use saga_runtime::prelude::*;
use saga_runtime::transactional::{CommandContext, CommandError};

async fn apply(_transaction: u32) {}

#[transactional_command(topic = "BookFlight", on_commit = apply)]
async fn book(_context: CommandContext, _request: String) -> Result<(), CommandError> {
    Ok(())
}

fn main() {}
