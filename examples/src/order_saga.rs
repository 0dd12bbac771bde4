//! The shop on the embedded defaults: the `order` service runs the order saga, the `payment` and
//! `stock` services answer its commands with `#[transactional_command]` handlers, and every saga is
//! closed by a two-phase commit across the three. All three run in this one process, on an
//! in-process broker, with SQLite files for the executions and the staged effects (`order-saga.db`
//! in the working directory, or the path in `SAGA_DB`, and two files beside it).
//!
//! It places two orders: one goes through, one the stock service refuses, which shows the
//! compensations and the rejects on both participants. The same services run as three processes over
//! NATS and PostgreSQL with `cargo run -p saga-examples --bin shop`.

#[path = "shop/logging.rs"]
mod logging;
#[path = "shop/messages.rs"]
mod messages;
#[path = "shop/order.rs"]
mod order;
#[path = "shop/payment.rs"]
mod payment;
#[path = "shop/stock.rs"]
mod stock;

use std::path::Path;
use std::sync::Arc;

use saga_runtime::broker::Broker;
use saga_runtime::prelude::*;
use saga_runtime::repository::SqliteRepository;
use saga_runtime::transactional::SqliteParticipantStore;
use saga_runtime::wiring::*;

use crate::order::CreateOrder;

/// Starts service `name` on `broker`, answering the `#[transactional_command]` handlers of its own
/// module only (this binary holds all three services' handlers), its staged effects in `store`.
async fn participant(
    name: &'static str,
    broker: &Arc<dyn Broker>,
    store: &Path,
) -> Result<SagaService, Box<dyn std::error::Error>> {
    let module = format!("::{name}");
    Ok(SagaService::builder(name)
        .broker(Arc::clone(broker))
        .participant_store(SqliteParticipantStore::open(store).await?)
        .registry(Registry::empty())
        .commands(move |command| command.module_path().ends_with(&module))
        .start()
        .await?)
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logging::init();
    let database = std::env::var("SAGA_DB").unwrap_or_else(|_| "order-saga.db".to_owned());
    let beside = |service: &str| Path::new(&database).with_extension(format!("{service}.db"));
    println!(
        "executions are stored in {database}, staged effects in {} and {}",
        beside("payment").display(),
        beside("stock").display()
    );
    let broker = InProcessBroker::with_history();
    let shared: Arc<dyn Broker> = Arc::new(broker.clone());
    let payment = participant("payment", &shared, &beside("payment")).await?;
    let stock = participant("stock", &shared, &beside("stock")).await?;
    let order = SagaService::builder("order")
        .broker(Arc::clone(&shared))
        .repository(SqliteRepository::open(&database).await?)
        .participant_store(SqliteParticipantStore::open(&database).await?)
        .commands(|command| command.module_path().ends_with("::order"))
        .start()
        .await?;

    for (title, placed) in order::demo_orders() {
        println!("== {title}");
        order::place(order.manager(), placed).await?;
        print_traffic(&broker);
        println!();
    }

    println!("== the saga as a Mermaid flowchart");
    print!("{}", CreateOrder::definition().to_mermaid());

    for service in [&order, &payment, &stock] {
        service.shutdown().await;
    }
    Ok(())
}
