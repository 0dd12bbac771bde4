// A step takes its context and nothing else (plus `&Params` with `params = ...`).
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order, _strict: bool) -> Result<(), StepError> {
    Ok(())
}

#[local_step]
async fn reserve() -> Result<(), StepError> {
    Ok(())
}

fn main() {}
