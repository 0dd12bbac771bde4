//! The order saga, declared with the attribute macros: validate the order here, charge the payment
//! service, reserve stock in the stock service; compensate in reverse order when something fails;
//! close with a two-phase commit. (`quickstart.rs` shows the builder API.)
//!
//! Everything runs in one process on the embedded defaults: an in-process broker, a SQLite file
//! (`order-saga.db` in the working directory, or the path in `SAGA_DB`) for the executions, and
//! in-process `payment` and `stock` participants. It runs twice: once on the happy
//! path, once with an order the stock service refuses, which shows the compensations and the rejects.

use std::sync::Arc;

use saga_runtime::broker::Broker;
use saga_runtime::message::BrokerMessage;
use saga_runtime::participant::InProcessParticipant;
use saga_runtime::prelude::*;
use saga_runtime::repository::SqliteRepository;
use serde_json::json;
use uuid::Uuid;

/// The saga's state, stored at every pause.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OrderState {
    order_id: Uuid,
    item: String,
    quantity: u32,
    amount_cents: u64,
    validated: bool,
    payment_id: Option<String>,
    reservation_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Charge {
    order_id: Uuid,
    amount_cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reserve {
    order_id: Uuid,
    item: String,
    quantity: u32,
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
    println!("  [order]   -> CreatePayment {} cents", order.amount_cents);
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
    println!(
        "  [order]   -> ReserveStock {} x {}",
        order.quantity, order.item
    );
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
struct CreateOrder;

/// The stock service has 10 of everything.
const STOCK_ON_HAND: u32 = 10;

async fn start_participants(
    broker: Arc<dyn Broker>,
) -> Result<Vec<InProcessParticipant>, BrokerError> {
    let payment = InProcessParticipant::builder("payment", Arc::clone(&broker))
        .command("CreatePayment", |message: &BrokerMessage| {
            let charge: Charge = match serde_json::from_value(message.payload.clone()) {
                Ok(charge) => charge,
                Err(error) => return (SagaResponseStatus::SystemError, json!(error.to_string())),
            };
            println!(
                "  [payment] charged {} cents for order {}",
                charge.amount_cents, charge.order_id
            );
            (
                SagaResponseStatus::Success,
                json!(format!(
                    "pay-{}",
                    &charge.order_id.simple().to_string()[..8]
                )),
            )
        })
        .command("RefundPayment", |message: &BrokerMessage| {
            println!("  [payment] refunded {}", message.payload);
            (SagaResponseStatus::Success, json!(null))
        })
        .spawn()
        .await?;
    let stock = InProcessParticipant::builder("stock", Arc::clone(&broker))
        .command("ReserveStock", |message: &BrokerMessage| {
            let reserve: Reserve = match serde_json::from_value(message.payload.clone()) {
                Ok(reserve) => reserve,
                Err(error) => return (SagaResponseStatus::SystemError, json!(error.to_string())),
            };
            if reserve.quantity > STOCK_ON_HAND {
                println!(
                    "  [stock]   refused {} x {}: only {STOCK_ON_HAND} on hand",
                    reserve.quantity, reserve.item
                );
                return (SagaResponseStatus::Error, json!("out of stock"));
            }
            println!(
                "  [stock]   reserved {} x {}",
                reserve.quantity, reserve.item
            );
            (
                SagaResponseStatus::Success,
                json!(format!(
                    "res-{}",
                    &reserve.order_id.simple().to_string()[..8]
                )),
            )
        })
        .command("ReleaseStock", |message: &BrokerMessage| {
            println!("  [stock]   released {}", message.payload);
            (SagaResponseStatus::Success, json!(null))
        })
        .spawn()
        .await?;
    // The orchestrating service takes part in its own transactions too.
    let order = InProcessParticipant::builder("order", broker)
        .spawn()
        .await?;
    Ok(vec![payment, stock, order])
}

fn print_traffic(broker: &InProcessBroker) {
    println!("  messages published:");
    for message in broker.history() {
        if message.correlation_id.is_none() {
            println!("    {}", message.topic);
        }
    }
    broker.clear_history();
}

use saga_runtime::error::BrokerError;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let database = std::env::var("SAGA_DB").unwrap_or_else(|_| "order-saga.db".to_owned());
    println!("executions are stored in {database}");
    let broker = InProcessBroker::with_history();
    let shared: Arc<dyn Broker> = Arc::new(broker.clone());
    let _participants = start_participants(Arc::clone(&shared)).await?;
    let manager = SagaManager::builder("order")
        .shared_broker(shared)
        .repository(SqliteRepository::open(&database).await?)
        .registry(Registry::from_inventory()?)
        .build()
        .await?;

    println!("== order 1: 2 x book, paid and reserved");
    let order = OrderState {
        order_id: Uuid::new_v4(),
        item: "book".into(),
        quantity: 2,
        amount_cents: 4_200,
        ..OrderState::default()
    };
    let execution = manager
        .run_saga::<CreateOrder>(order, RunOptions::new().user("alice"))
        .await?
        .execution()
        .expect("the execution is returned by default");
    println!("  saga {}: {}", execution.id(), execution.status());
    for step in execution.steps() {
        println!("    step {:<15} {}", step.name(), step.status());
    }
    print_traffic(&broker);

    println!("\n== order 2: 50 x lamp, the stock service refuses");
    let order = OrderState {
        order_id: Uuid::new_v4(),
        item: "lamp".into(),
        quantity: 50,
        amount_cents: 150_000,
        ..OrderState::default()
    };
    let execution = manager
        .run_saga::<CreateOrder>(order, RunOptions::new().user("bob").raise_on_error(false))
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
    print_traffic(&broker);

    println!("\n== the saga as a Mermaid flowchart");
    print!("{}", CreateOrder::definition().to_mermaid());
    Ok(())
}
