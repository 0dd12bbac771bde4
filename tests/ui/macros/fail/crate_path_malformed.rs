// `crate = ...` names the runtime crate by its path, e.g. `crate = my_crate::saga`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step(crate = 42)]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(crate = "not a path", steps = [validate])]
struct CreateOrder;

fn main() {}
