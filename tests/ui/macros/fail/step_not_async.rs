// A step's code is awaited: the step function must be an `async fn`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
