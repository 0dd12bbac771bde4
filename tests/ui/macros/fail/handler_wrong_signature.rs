// Each handler has its slot's signature: a compensation of a local step takes `&mut Order`, a
// reply handler takes the reply too.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

async fn cancel(_order: &Order) -> Result<(), StepError> {
    Ok(())
}

#[local_step(on_failure = cancel)]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

async fn charged(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[remote_step(on_success = charged)]
async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charge", &order.amount)
}

fn main() {}
