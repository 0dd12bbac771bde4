// `crate = path` reaches the runtime where it is re-exported: no generated path assumes
// `::saga_runtime`, which here names this crate itself.
extern crate self as saga_runtime;

mod facade {
    pub extern crate saga_runtime as runtime_alias;
}

use facade::runtime_alias;
use runtime_alias::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[runtime_alias::local_step(crate = runtime_alias, on_failure = cancel)]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

async fn cancel(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[remote_step(crate = runtime_alias, on_success = (charged, 1_u8), params = 10_u64)]
async fn charge(order: &Order, fee: &u64) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charge", &(order.amount + fee))
}

async fn charged(_order: &mut Order, _reply: SagaResponse, _code: &u8) -> Result<(), StepError> {
    Ok(())
}

async fn is_big(order: &Order) -> Result<bool, StepError> {
    Ok(order.amount > 100)
}

#[saga(crate = runtime_alias, steps = [validate])]
struct Big;

#[saga(crate = facade::runtime_alias, steps = [validate, charge, route = conditional(if_then(is_big, Big), else_then(Big))])]
struct CreateOrder;

fn main() {
    assert_eq!(CreateOrder::definition().steps().len(), 3);
}
