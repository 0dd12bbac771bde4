// `#[saga]` goes on a unit struct, not on a function.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate])]
fn create_order() {}

fn main() {}
