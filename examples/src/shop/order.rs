//! The order service's saga, declared with the attribute macros: validate the order here, charge the
//! payment service, reserve stock in the stock service; compensate in reverse order when something
//! fails; close with a two-phase commit across every service that took part.

use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use uuid::Uuid;

use crate::messages::{Charge, Reserve};

/// The saga's state, stored at every pause.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct OrderState {
    /// The order.
    pub(crate) order_id: Uuid,
    /// What is ordered.
    pub(crate) item: String,
    /// How many.
    pub(crate) quantity: u32,
    /// Its price.
    pub(crate) amount_cents: u64,
    /// Whether validation passed.
    pub(crate) validated: bool,
    /// The payment service's id of the charge.
    pub(crate) payment_id: Option<String>,
    /// The stock service's id of the reservation.
    pub(crate) reservation_id: Option<String>,
}

#[local_step(on_failure = cancel_order)]
async fn validate_order(order: &mut OrderState) -> Result<(), StepError> {
    if order.quantity == 0 || order.amount_cents == 0 {
        return Err(StepError::msg("an order needs a quantity and an amount"));
    }
    order.validated = true;
    println!("  [order]   validated order {}", order.order_id);
    Ok(())
}

async fn cancel_order(order: &mut OrderState) -> Result<(), StepError> {
    order.validated = false;
    println!(
        "  [order]   compensation: cancelled order {}",
        order.order_id
    );
    Ok(())
}

#[remote_step(on_success = payment_done, on_failure = refund_payment)]
async fn charge_payment(order: &OrderState) -> Result<SagaRequest, StepError> {
    SagaRequest::new(
        "CreatePayment",
        &Charge {
            order_id: order.order_id,
            amount_cents: order.amount_cents,
        },
    )
}

async fn payment_done(order: &mut OrderState, reply: SagaResponse) -> Result<(), StepError> {
    let payment_id: String = reply.content()?;
    println!("  [order]   <- payment {payment_id} accepted");
    order.payment_id = Some(payment_id);
    Ok(())
}

async fn refund_payment(order: &OrderState) -> Result<SagaRequest, StepError> {
    println!(
        "  [order]   compensation: -> RefundPayment {:?}",
        order.payment_id
    );
    SagaRequest::new("RefundPayment", &order.payment_id)
}

#[remote_step(on_success = stock_reserved, on_failure = release_stock)]
async fn reserve_stock(order: &OrderState) -> Result<SagaRequest, StepError> {
    SagaRequest::new(
        "ReserveStock",
        &Reserve {
            order_id: order.order_id,
            item: order.item.clone(),
            quantity: order.quantity,
        },
    )
}

async fn stock_reserved(order: &mut OrderState, reply: SagaResponse) -> Result<(), StepError> {
    let reservation_id: String = reply.content()?;
    println!("  [order]   <- stock reservation {reservation_id}");
    order.reservation_id = Some(reservation_id);
    Ok(())
}

async fn release_stock(order: &OrderState) -> Result<SagaRequest, StepError> {
    println!(
        "  [order]   compensation: -> ReleaseStock {:?}",
        order.reservation_id
    );
    SagaRequest::new("ReleaseStock", &order.reservation_id)
}

/// The saga: its steps in order. Its persisted name is `create-order`.
#[saga(name = "create-order", steps = [validate_order, charge_payment, reserve_stock])]
pub(crate) struct CreateOrder;

/// The two orders of the demonstration: one that goes through, one the stock service refuses
/// (more than it has on hand).
pub(crate) fn demo_orders() -> [(&'static str, OrderState); 2] {
    [
        (
            "order 1: 2 x book, paid and reserved",
            OrderState {
                order_id: Uuid::new_v4(),
                item: "book".into(),
                quantity: 2,
                amount_cents: 4_200,
                ..OrderState::default()
            },
        ),
        (
            "order 2: 50 x lamp, the stock service refuses",
            OrderState {
                order_id: Uuid::new_v4(),
                item: "lamp".into(),
                quantity: 50,
                amount_cents: 150_000,
                ..OrderState::default()
            },
        ),
    ]
}

/// Runs `order` to its end (replies awaited, two-phase commit included) and prints the outcome.
pub(crate) async fn place(
    manager: &SagaManager,
    order: OrderState,
) -> Result<SagaExecution<OrderState>, SagaError> {
    let options = RunOptions::new().user("alice").raise_on_error(false);
    let execution = manager
        .run_saga::<CreateOrder>(order, options)
        .await?
        .execution()
        .expect("the execution is returned by default");
    println!("  saga {}: {}", execution.id(), execution.status());
    for step in execution.steps() {
        println!(
            "    step {:<15} {}{}",
            step.name(),
            step.status(),
            if step.already_rollback() {
                " (compensated)"
            } else {
                ""
            }
        );
    }
    Ok(execution)
}
