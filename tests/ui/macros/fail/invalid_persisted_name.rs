// A persisted name uses 1 to 128 of `A-Z a-z 0-9 _ - . :`: "has space" is not one.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step(name = "")]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(name = "has space", steps = [validate])]
struct CreateOrder;

fn main() {}
