//! The README's saga, built at run time with the builder API: a local step and a remote step, run
//! against a payment service in the same process (on the in-process broker).

use std::sync::Arc;

use saga_runtime::prelude::*;
use saga_runtime::transactional::{
    CommandContext, CommandError, InMemoryParticipantStore, TransactionalParticipant,
};
use saga_runtime::wiring::*;

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
    // The payment service: charges tentatively, settled by the saga's two-phase commit.
    let store = Arc::new(InMemoryParticipantStore::new());
    let _payment = TransactionalParticipant::builder("payment", Arc::clone(&broker), store)
        .command(
            "CreatePayment",
            |command: CommandContext, amount: u64| async move {
                command.stage("charge", amount.into());
                Ok::<_, CommandError>("pay-1")
            },
        )
        .spawn()
        .await?;
    // The order service takes part in the commit of its own sagas too.
    let store = Arc::new(InMemoryParticipantStore::new());
    let _order = TransactionalParticipant::builder("order", Arc::clone(&broker), store)
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
    let manager = SagaManager::builder("order").broker(broker).build().await?;
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
