use saga_runtime::prelude::*;
use saga_runtime::transactional::{CommandContext, CommandError, Settled};

async fn apply(_settled: Settled) {}

#[transactional_command(on_commit = apply)]
async fn book(_context: CommandContext, _request: String) -> Result<(), CommandError> {
    Ok(())
}

fn main() {}
