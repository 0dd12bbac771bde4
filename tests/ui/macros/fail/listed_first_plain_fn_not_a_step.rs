// A plain function listed first (where the saga takes its context from) is not a step either.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[local_step]
async fn reserve(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate, reserve])]
struct CreateOrder;

fn main() {}
