// A conditional step has at most one `else_then`: the second is reported.
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
struct Small;

#[saga(steps = [validate])]
struct Big;

#[saga(steps = [validate, route = conditional(else_then(Small), else_then(Big))])]
struct CreateOrder;

fn main() {}
