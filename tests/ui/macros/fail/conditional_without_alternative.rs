// A conditional step chooses among sub-sagas: `conditional()` needs an `if_then` or `else_then`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate, route = conditional()])]
struct CreateOrder;

fn main() {}
