// A struct listed first (where the saga takes its context from) is not a step either.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

struct Reserve;

#[saga(steps = [Reserve, validate])]
struct CreateOrder;

fn main() {}
