// `name` is a string literal: the persisted name is fixed at compile time.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

const NAME: &str = "create-order";

#[saga(name = NAME, steps = [validate])]
struct CreateOrder;

fn main() {}
