use saga_runtime::prelude::*;
use saga_runtime::transactional::{CommandContext, CommandError, Settled};

async fn apply(_settled: Settled) {}

async fn discard(_settled: Settled) {}

#[derive(Deserialize)]
struct Booking {
    seat: String,
}

#[transactional_command(topic = "BookFlight", on_commit = apply, on_reject = discard)]
async fn book(context: CommandContext, request: Booking) -> Result<String, CommandError> {
    context.stage(request.seat.clone(), serde_json::Value::Null);
    Ok(request.seat)
}

#[transactional_command(topic = "CancelFlight", crate = saga_runtime)]
pub async fn cancel(_context: CommandContext, _request: ()) -> Result<(), CommandError> {
    Ok(())
}

fn main() {
    // The handler is still an ordinary function.
    let _ = book;
}
