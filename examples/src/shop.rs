//! The shop as three processes: `order` runs the order saga, `payment` and `stock` answer its
//! commands; they speak over NATS JetStream and keep their state in PostgreSQL (schemas
//! `shop_order`, `shop_payment`, `shop_stock`).
//!
//! `cargo run -p saga-examples --bin shop` starts the two participants as child processes of this
//! one, waits until they listen, places the two orders of the demonstration from a third process
//! (`order`), then stops the participants gracefully. Each role also runs alone:
//! `shop payment`, `shop stock`, `shop order` (the participants run until their standard input
//! closes or they get Ctrl-C). The servers are `SAGA_NATS_URL` (default `nats://127.0.0.1:4222`)
//! and `SAGA_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! `cargo run -p saga-examples --bin order-saga` runs the same services in one process on the
//! embedded defaults.

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

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};

use saga_runtime::broker::NatsBroker;
use saga_runtime::repository::PostgresRepository;
use saga_runtime::transactional::PostgresParticipantStore;
use saga_runtime::wiring::SagaService;
use saga_runtime::wiring::*;
use tokio::io::AsyncReadExt;

/// What a participant prints once it listens; the launcher waits for it.
const READY: &str = "ready";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn nats_url() -> String {
    std::env::var("SAGA_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

fn postgres_url() -> String {
    std::env::var("SAGA_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Starts service `name` over NATS (subject prefix `shop`) and PostgreSQL (schema `shop_{name}`),
/// answering the `#[transactional_command]` handlers of its own module.
async fn start(name: &'static str) -> Result<SagaService, Error> {
    let broker = NatsBroker::builder(nats_url())
        .prefix("shop")
        .connect()
        .await
        .map_err(|error| format!("NATS at {}: {error}", nats_url()))?;
    let schema = format!("shop_{name}");
    let store = PostgresParticipantStore::builder(postgres_url())
        .schema(&schema)
        .connect()
        .await
        .map_err(|error| format!("PostgreSQL at {}: {error}", postgres_url()))?;
    let module = format!("::{name}");
    let mut service = SagaService::builder(name)
        .broker(broker)
        .participant_store(store)
        .commands(move |command| command.module_path().ends_with(&module));
    if name == "order" {
        let repository = PostgresRepository::builder(postgres_url())
            .schema(&schema)
            .connect()
            .await?;
        // Restarted with the same instance name, it takes over its own executions at once.
        service = service
            .repository(repository)
            .manager(|manager| manager.instance("shop-order"));
    } else {
        service = service.registry(Registry::empty());
    }
    Ok(service.start().await?)
}

/// A participant's process: starts, says it is ready, runs until its standard input closes (the
/// launcher) or Ctrl-C, then stops gracefully.
async fn run_participant(name: &'static str) -> Result<(), Error> {
    let service = start(name).await?;
    println!("{READY}");
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            read = stdin.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { break },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    service.shutdown().await;
    Ok(())
}

/// The order service's process: places the two orders and stops. Fails unless the first order
/// commits and the second is compensated.
async fn run_order() -> Result<(), Error> {
    let service = start("order").await?;
    let mut statuses = Vec::new();
    for (title, placed) in order::demo_orders() {
        println!("== {title}");
        statuses.push(order::place(service.manager(), placed).await?.status());
        println!();
    }
    service.shutdown().await;
    if statuses != [SagaStatus::Finished, SagaStatus::Errored] {
        return Err(
            format!("expected one finished and one compensated order, got {statuses:?}").into(),
        );
    }
    Ok(())
}

/// Starts `role` of this binary as a child whose standard output is forwarded; returns once it
/// printed [`READY`] (participants) or right away (`order`).
fn spawn(role: &str, wait_ready: bool) -> Result<Child, Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg(role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no standard output")?;
    let mut lines = BufReader::new(stdout).lines();
    if wait_ready {
        loop {
            match lines.next() {
                Some(Ok(line)) if line == READY => break,
                Some(Ok(line)) => println!("{line}"),
                _ => {
                    let status = child.wait()?;
                    return Err(format!(
                        "the {role} service stopped before it was ready ({status})"
                    )
                    .into());
                }
            }
        }
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            println!("{line}");
        }
    });
    Ok(child)
}

/// The launcher: the participants, then the order process; the participants are stopped by closing
/// their standard input once the orders are placed.
fn launch() -> Result<(), Error> {
    println!(
        "starting payment and stock (NATS {}, PostgreSQL {})",
        nats_url(),
        postgres_url()
    );
    let mut participants = Vec::new();
    for role in ["payment", "stock"] {
        match spawn(role, true) {
            Ok(child) => participants.push(child),
            Err(error) => {
                for mut child in participants {
                    let _ = child.kill();
                }
                return Err(error);
            }
        }
    }
    let mut order = spawn("order", false)?;
    let placed = order.wait()?;
    for child in &mut participants {
        drop(child.stdin.take());
    }
    for mut child in participants {
        child.wait()?;
    }
    if !placed.success() {
        return Err(format!("the order service failed ({placed})").into());
    }
    println!("all three services stopped");
    Ok(())
}

fn main() -> ExitCode {
    logging::init();
    let role = std::env::args().nth(1);
    let result = match role.as_deref() {
        None => launch(),
        Some(role) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("shop: {error}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                match role {
                    "order" => run_order().await,
                    "payment" => run_participant("payment").await,
                    "stock" => run_participant("stock").await,
                    other => Err(format!("unknown role `{other}`: order, payment or stock").into()),
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shop {}: {error}", role.as_deref().unwrap_or("launcher"));
            ExitCode::FAILURE
        }
    }
}
