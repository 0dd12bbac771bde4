// Every listed step must exist: `reserve` is not defined.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate, reserve])]
struct CreateOrder;

fn main() {}
