use saga_runtime::prelude::*;
use saga_runtime::transactional::{CommandContext, CommandError};

#[transactional_command(topic = "BookFlight", on_success = done)]
async fn book(_context: CommandContext, _request: String) -> Result<(), CommandError> {
    Ok(())
}

fn main() {}
