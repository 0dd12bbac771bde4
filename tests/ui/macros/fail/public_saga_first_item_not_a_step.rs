// A public saga takes its context from its first step too: a plain function there is not a step.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
pub struct Order {
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
pub struct CreateOrder;

fn main() {}
