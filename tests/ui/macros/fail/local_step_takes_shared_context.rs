// A local step changes its context: it takes `&mut Order`, not `&Order`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &Order) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
