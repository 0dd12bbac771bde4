//! The README's saga: a local step and a remote step, run against an in-process payment service.

use std::sync::Arc;

use saga_runtime::participant::InProcessParticipant;
use saga_runtime::prelude::*;
use serde_json::json;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
    validated: bool,
    payment: Option<String>,
}

async fn validate(order: &mut Order) -> Result<(), StepError> {
    if order.amount == 0 {
        return Err(StepError::msg("empty order"));
    }
    order.validated = true;
    Ok(())
}
async fn cancel(order: &mut Order) -> Result<(), StepError> {
    order.validated = false;
    Ok(())
}
async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreatePayment", &order.amount)
}
async fn charged(order: &mut Order, reply: SagaResponse) -> Result<(), StepError> {
    order.payment = Some(reply.content()?);
    Ok(())
}
async fn refund(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("RefundPayment", &order.payment)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new());
    let _payment = InProcessParticipant::builder("payment", Arc::clone(&broker))
        .command("CreatePayment", |_| {
            (SagaResponseStatus::Success, json!("pay-1"))
        })
        .spawn()
        .await?;
    let _order = InProcessParticipant::builder("order", Arc::clone(&broker))
        .spawn()
        .await?;

    let saga = Arc::new(
        Saga::new("create-order")
            .local_step("validate")
            .on_execute(validate)
            .on_failure(cancel)
            .remote_step("charge")
            .on_execute(charge)
            .on_success(charged)
            .on_failure(refund)
            .commit()?,
    );
    let manager = SagaManager::builder("order")
        .shared_broker(broker)
        .build()
        .await?;
    let order = Order {
        amount: 4200,
        ..Order::default()
    };
    let execution = manager
        .run(saga, order, RunOptions::new())
        .await?
        .execution()
        .expect("returned by default");
    assert_eq!(execution.status(), SagaStatus::Finished);
    println!(
        "{}: {} with payment {:?}",
        execution.definition().name(),
        execution.status(),
        execution.context().payment
    );
    Ok(())
}
