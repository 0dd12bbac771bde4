// Every mistake of a saga is reported in one build, not only the first.
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

#[derive(Default, Serialize, Deserialize)]
struct Shipment {
    carrier: String,
}

#[local_step]
async fn ship(_shipment: &mut Shipment) -> Result<(), StepError> {
    Ok(())
}

async fn is_big(order: &Order) -> Result<bool, StepError> {
    Ok(order.amount > 100)
}

struct Big;

#[saga(
    name = "has space",
    timeout = 5,
    steps = [
        validate,
        reserve,
        validate,
        missing,
        ship,
        route = conditional(),
        other = conditional(if_then(is_big, Big)),
    ],
)]
struct CreateOrder;

fn main() {}
