// A step is listed once: its function name is its persisted name within the saga.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate, validate])]
struct CreateOrder;

fn main() {}
