// A conditional alternative runs a sub-saga: `Big` must be a `#[saga]` type.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

async fn is_big(order: &Order) -> Result<bool, StepError> {
    Ok(order.amount > 100)
}

struct Big;

#[saga(steps = [validate, route = conditional(if_then(is_big, Big))])]
struct CreateOrder;

fn main() {}
