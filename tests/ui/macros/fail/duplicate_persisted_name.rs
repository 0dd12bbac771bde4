// Two steps of one saga cannot share a persisted name, even when it is given with `name = "..."`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step(name = "check")]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[local_step(name = "check")]
async fn verify(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate, verify])]
struct CreateOrder;

fn main() {}
