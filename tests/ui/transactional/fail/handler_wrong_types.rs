use saga_runtime::prelude::*;
use saga_runtime::transactional::CommandError;

// The first parameter must be the `CommandContext`.
#[transactional_command(topic = "BookFlight")]
async fn book(_context: String, _request: String) -> Result<(), CommandError> {
    Ok(())
}

fn main() {}
