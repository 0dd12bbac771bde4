// Each handler is given once: the second `on_failure` is reported.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

async fn refund(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Refund", &order.amount)
}

#[remote_step(on_failure = refund, on_failure = refund)]
async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charge", &order.amount)
}

fn main() {}
