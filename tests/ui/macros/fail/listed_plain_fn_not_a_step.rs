// Only functions annotated with `#[local_step]` or `#[remote_step]` can be listed in `steps`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

async fn reserve(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate, reserve])]
struct CreateOrder;

fn main() {}
