//! `#[transactional_command]`: handlers registered with `inventory` and gathered by
//! `TransactionalParticipant::from_inventory`, with their per-topic `on_commit` / `on_reject`
//! callbacks, behind a saga.

use std::sync::{Arc, Mutex, PoisonError};

use saga_runtime::prelude::*;
use saga_runtime::transactional::{
    CommandContext, CommandError, InMemoryParticipantStore, Settled, TransactionalParticipant,
};
use saga_runtime::wiring::*;
use saga_tests::{Harness, eventually};
use serde_json::json;

/// What the callbacks saw: ("commit" or "reject", the effects' keys).
static JOURNAL: Mutex<Vec<(&'static str, Vec<String>)>> = Mutex::new(Vec::new());

fn journal() -> Vec<(&'static str, Vec<String>)> {
    JOURNAL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn record(phase: &'static str, settled: &Settled) {
    let keys = settled
        .effects
        .iter()
        .map(|effect| effect.key.clone())
        .collect();
    JOURNAL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((phase, keys));
}

async fn apply(settled: Settled) {
    record("commit", &settled);
}

async fn discard(settled: Settled) {
    record("reject", &settled);
}

#[derive(Debug, Serialize, Deserialize)]
struct Reserve {
    item: String,
    quantity: u32,
}

#[transactional_command(topic = "ReserveStock", on_commit = apply, on_reject = discard)]
async fn reserve_stock(context: CommandContext, request: Reserve) -> Result<String, CommandError> {
    if request.quantity == 0 {
        return Err(CommandError::business("nothing to reserve"));
    }
    context.stage(
        format!("stock:{}", request.item),
        json!({ "take": request.quantity }),
    );
    Ok(format!("R-{}", request.item))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Order {
    item: String,
    quantity: u32,
    reservation: Option<String>,
}

async fn reserve(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new(
        "ReserveStock",
        &json!({ "item": order.item, "quantity": order.quantity }),
    )
}

async fn reserved(order: &mut Order, reply: SagaResponse) -> Result<(), StepError> {
    order.reservation = Some(reply.content()?);
    Ok(())
}

async fn check(order: &mut Order) -> Result<(), StepError> {
    if order.item == "forbidden" {
        return Err(StepError::msg("forbidden item"));
    }
    Ok(())
}

fn order_saga() -> Arc<SagaDefinition<Order>> {
    Arc::new(
        Saga::new("order-stock")
            .remote_step("reserve")
            .on_execute(reserve)
            .on_success(reserved)
            .local_step("check")
            .on_execute(check)
            .commit()
            .expect("a valid saga"),
    )
}

#[tokio::test]
async fn registered_handlers_commit_and_reject_through_their_callbacks() {
    let harness = Harness::new().await;
    let _order = harness.accepting(&["order"]).await;
    let store = Arc::new(InMemoryParticipantStore::new());
    let stock = TransactionalParticipant::from_inventory_where(
        "stock",
        harness.broker(),
        store,
        |command| command.module_path() == module_path!(),
    )
    .expect("one handler per topic")
    .spawn()
    .await
    .expect("stock starts");

    let finished = harness
        .manager
        .run(
            order_saga(),
            Order {
                item: "pen".to_owned(),
                quantity: 2,
                ..Order::default()
            },
            RunOptions::new(),
        )
        .await
        .expect("the saga finishes")
        .execution()
        .expect("the execution is returned");
    assert_eq!(finished.context().reservation.as_deref(), Some("R-pen"));
    assert_eq!(journal(), [("commit", vec!["stock:pen".to_owned()])]);

    let failed = harness
        .manager
        .run(
            order_saga(),
            Order {
                item: "forbidden".to_owned(),
                quantity: 1,
                ..Order::default()
            },
            RunOptions::new().raise_on_error(false),
        )
        .await
        .expect("the saga runs")
        .execution()
        .expect("the execution is returned");
    assert_eq!(failed.status(), SagaStatus::Errored);
    eventually(|| journal().len() == 2).await;
    assert_eq!(journal()[1], ("reject", vec!["stock:forbidden".to_owned()]));

    let refused = harness
        .manager
        .run(
            order_saga(),
            Order {
                item: "pen".to_owned(),
                quantity: 0,
                ..Order::default()
            },
            RunOptions::new().raise_on_error(false),
        )
        .await
        .expect("the saga runs")
        .execution()
        .expect("the execution is returned");
    assert_eq!(refused.status(), SagaStatus::Errored);
    assert_eq!(stock.stats().commands, 3);
    assert_eq!((stock.stats().committed, stock.stats().rejected), (1, 1));
}
