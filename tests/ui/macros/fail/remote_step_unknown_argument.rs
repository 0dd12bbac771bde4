// `#[remote_step]` accepts only its own arguments: `on_reply` is not one of them.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

async fn charged(_order: &mut Order, _reply: SagaResponse) -> Result<(), StepError> {
    Ok(())
}

#[remote_step(on_reply = charged)]
async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charge", &order.amount)
}

fn main() {}
