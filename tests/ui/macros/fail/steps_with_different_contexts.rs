// All steps of a saga work on one context type: `ship` works on `Shipment`, not `Order`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Shipment {
    carrier: String,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[local_step]
async fn ship(_shipment: &mut Shipment) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate, ship])]
struct CreateOrder;

fn main() {}
