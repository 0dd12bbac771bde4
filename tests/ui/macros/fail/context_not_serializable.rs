// A saga's context is stored at every pause: it must be serializable (`Serialize + Deserialize`).
use saga_runtime::prelude::*;

#[derive(Default)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate])]
struct CreateOrder;

fn main() {}
