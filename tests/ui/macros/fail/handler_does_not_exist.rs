// A handler names an existing function: `refund` is not defined.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[remote_step(on_failure = refund)]
async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charge", &order.amount)
}

fn main() {}
