// Every mistake of a step is reported in one build: its arguments, its signature and its handlers.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

async fn cancel(_order: &Order) -> Result<(), StepError> {
    Ok(())
}

#[local_step(on_success = cancel, retries = 3, on_failure = cancel, name = "has space")]
fn validate(_order: &Order, _strict: bool) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
