//! The engine bench, shared by the bench targets that differ only in their global allocator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use saga_runtime::broker::Broker;
use saga_runtime::broker::BrokerMessage;
use saga_runtime::execution::{ExecutionEnv, Outbox};
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_testkit::ScriptedParticipant;
use serde_json::json;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Order {
    id: u64,
    amount: u64,
    validated: bool,
    reserved: bool,
    confirmed: bool,
    payment: Option<String>,
}

async fn validate(order: &mut Order) -> Result<(), StepError> {
    order.validated = order.amount > 0;
    Ok(())
}

async fn reserve(order: &mut Order) -> Result<(), StepError> {
    order.reserved = true;
    Ok(())
}

async fn confirm(order: &mut Order) -> Result<(), StepError> {
    order.confirmed = true;
    Ok(())
}

async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charge", &order.amount)
}

async fn charged(order: &mut Order, reply: SagaResponse) -> Result<(), StepError> {
    order.payment = Some(reply.content()?);
    Ok(())
}

fn local_saga() -> Arc<SagaDefinition<Order>> {
    Arc::new(
        Saga::new("bench-local")
            .local_step("validate")
            .on_execute(validate)
            .local_step("reserve")
            .on_execute(reserve)
            .local_step("confirm")
            .on_execute(confirm)
            .commit()
            .expect("valid saga"),
    )
}

fn remote_saga() -> Arc<SagaDefinition<Order>> {
    Arc::new(
        Saga::new("bench-remote")
            .local_step("validate")
            .on_execute(validate)
            .remote_step("charge")
            .on_execute(charge)
            .on_success(charged)
            .local_step("confirm")
            .on_execute(confirm)
            .commit()
            .expect("valid saga"),
    )
}

fn order(id: u64) -> Order {
    Order {
        id,
        amount: 100 + id % 7,
        ..Order::default()
    }
}

struct Figure {
    label: &'static str,
    per_second: f64,
    ns_per_unit: f64,
    unit: &'static str,
}

fn report(figure: &Figure) {
    println!(
        "{:<62} {:>12.0} /s {:>10.0} ns per {}",
        figure.label, figure.per_second, figure.ns_per_unit, figure.unit
    );
}

fn figure(
    label: &'static str,
    count: u64,
    elapsed: Duration,
    units_each: u64,
    unit: &'static str,
) -> Figure {
    let seconds = elapsed.as_secs_f64();
    Figure {
        label,
        per_second: count as f64 / seconds,
        ns_per_unit: seconds * 1e9 / (count * units_each) as f64,
        unit,
    }
}

/// Runs `count` items with `concurrency` in flight, each produced by `run(i)`.
async fn concurrently<F, Fut>(count: u64, concurrency: u64, run: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let run = Arc::new(run);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let run = Arc::clone(&run);
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < count {
                run(i).await;
                i += concurrency;
            }
        }));
    }
    for task in tasks {
        task.await.expect("bench task");
    }
    start.elapsed()
}

/// Runs the whole bench on the runtime chosen by `SAGA_BENCH_RUNTIME`.
pub(crate) fn main_with(allocator: &str) {
    // SAGA_BENCH_RUNTIME=current runs everything on one thread (no cross-thread wake-ups).
    let current = std::env::var("SAGA_BENCH_RUNTIME").is_ok_and(|flavor| flavor == "current");
    let runtime = if current {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("runtime");
    runtime.block_on(bench(current, allocator));
}

/// Iteration counts divided by this (SAGA_BENCH_QUICK=1: a quick run).
fn scale() -> u64 {
    if std::env::var_os("SAGA_BENCH_QUICK").is_some() {
        10
    } else {
        1
    }
}

/// Whether section `name` runs (SAGA_BENCH_ONLY=a|b|raw runs one section).
fn enabled(name: &str) -> bool {
    std::env::var("SAGA_BENCH_ONLY").map_or(true, |only| only == name)
}

async fn bench(current: bool, allocator: &str) {
    println!(
        "saga-runtime engine bench: {} cores, {} runtime, {allocator} allocator",
        num_cpus(),
        if current {
            "current-thread"
        } else {
            "multi-thread"
        }
    );
    let mut figures = Vec::new();
    if enabled("a") {
        figures.push(engine_local().await);
        figures.push(manager_local().await);
    }
    if enabled("raw") || enabled("a") {
        figures.push(raw_encode().await);
        figures.push(raw_store().await);
        figures.push(raw_round_trip().await);
    }
    if enabled("b") {
        figures.extend(remote().await);
    }
    println!();
    for figure in &figures {
        report(figure);
    }
}

/// (a) the bare engine: three local steps, no storage, no messages.
async fn engine_local() -> Figure {
    let env = ExecutionEnv::new("order");
    let local = local_saga();
    let count = 1_000_000 / scale();
    for _ in 0..count / 10 {
        let mut execution = SagaExecution::new(Arc::clone(&local), order(1));
        let _ = execution.execute(None, &env, &mut Outbox::new()).await;
    }
    let start = Instant::now();
    for i in 0..count {
        let mut execution = SagaExecution::new(Arc::clone(&local), order(i));
        let progress = execution.execute(None, &env, &mut Outbox::new()).await;
        assert!(progress.is_ok());
    }
    figure(
        "(a) 3 local steps, engine only, 1 task",
        count,
        start.elapsed(),
        3,
        "step",
    )
}

/// (a) through the manager: the execution is stored once, at its end.
async fn manager_local() -> Figure {
    let manager = SagaManager::builder("order")
        .build()
        .await
        .expect("manager");
    let local = local_saga();
    let count = 300_000 / scale();
    let start = Instant::now();
    for i in 0..count {
        manager
            .run(
                Arc::clone(&local),
                order(i),
                RunOptions::new().autocommit(false).return_execution(false),
            )
            .await
            .expect("runs");
    }
    figure(
        "(a) 3 local steps, manager + in-memory store, 1 task",
        count,
        start.elapsed(),
        3,
        "step",
    )
}

async fn finished_execution() -> SagaExecution<Order> {
    let mut execution = SagaExecution::new(local_saga(), order(1));
    execution
        .execute(None, &ExecutionEnv::new("order"), &mut Outbox::new())
        .await
        .expect("runs");
    execution
}

/// Raw: encoding one execution record to JSON.
async fn raw_encode() -> Figure {
    let execution = finished_execution().await;
    let count = 300_000 / scale();
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..count {
        bytes += execution.to_record().expect("encodes").to_json().len();
    }
    let elapsed = start.elapsed();
    println!("execution record: {} bytes of JSON", bytes as u64 / count);
    figure(
        "raw: encode an execution record to JSON, 1 task",
        count,
        elapsed,
        1,
        "record",
    )
}

/// Raw: one in-memory repository store (encode + insert).
async fn raw_store() -> Figure {
    let execution = finished_execution().await;
    let repository = InMemoryRepository::new();
    let count = 300_000 / scale();
    let start = Instant::now();
    for _ in 0..count {
        let mut record = execution.to_record().expect("encodes");
        record.id = uuid::Uuid::new_v4();
        repository.store(&record).await.expect("stores");
    }
    figure(
        "raw: in-memory repository store (encode + insert), 1 task",
        count,
        start.elapsed(),
        1,
        "store",
    )
}

/// Raw: an in-process round trip (publish, receive, publish the reply, receive it).
async fn raw_round_trip() -> Figure {
    let broker = InProcessBroker::new();
    let mut requests = broker.subscribe("Ping").await.expect("subscribes");
    let mut replies = broker.subscribe("PingReply").await.expect("subscribes");
    let echo = tokio::spawn({
        let broker = broker.clone();
        async move {
            while let Some(delivery) = requests.next().await {
                let reply = delivery
                    .message()
                    .reply("pong", SagaResponseStatus::Success, json!(null))
                    .expect("has reply_to");
                broker.publish(reply).await.expect("publishes");
            }
        }
    });
    let count = 200_000 / scale();
    let start = Instant::now();
    for _ in 0..count {
        let message = BrokerMessage::new("Ping", json!(1)).with_reply_to("PingReply");
        broker.publish(message).await.expect("publishes");
        replies.next().await.expect("a reply");
    }
    let elapsed = start.elapsed();
    echo.abort();
    figure(
        "raw: in-process broker round trip, 1 task",
        count,
        elapsed,
        1,
        "round trip",
    )
}

/// (b) local -> remote -> local, the participant replying at once, the run waiting through the
/// repository: stored at the pause and at the end.
async fn remote() -> Vec<Figure> {
    let broker: Arc<dyn Broker> = Arc::new(InProcessBroker::new());
    let _payment = ScriptedParticipant::builder("payment", Arc::clone(&broker))
        .command("Charge", |_: &BrokerMessage| {
            (SagaResponseStatus::Success, json!("pay-1"))
        })
        .spawn()
        .await
        .expect("participant");
    let _order = ScriptedParticipant::builder("order", Arc::clone(&broker))
        .spawn()
        .await
        .expect("participant");
    let manager = SagaManager::builder("order")
        .broker(broker)
        .build()
        .await
        .expect("manager");
    let remote = remote_saga();
    let mut figures = Vec::new();
    for (label, autocommit, concurrency) in [
        ("(b) local->remote->local, no 2PC, 1 in flight", false, 1),
        ("(b) local->remote->local, no 2PC, 64 in flight", false, 64),
        ("(b) local->remote->local, with 2PC, 1 in flight", true, 1),
        ("(b) local->remote->local, with 2PC, 64 in flight", true, 64),
    ] {
        let count = if concurrency == 1 { 50_000 } else { 300_000 } / scale();
        let (manager, remote) = (manager.clone(), Arc::clone(&remote));
        let elapsed = concurrently(count, concurrency, move |i| {
            let (manager, remote) = (manager.clone(), Arc::clone(&remote));
            async move {
                let outcome = manager
                    .run(
                        remote,
                        order(i),
                        RunOptions::new()
                            .autocommit(autocommit)
                            .return_execution(false),
                    )
                    .await
                    .expect("runs");
                let _ = outcome.id();
            }
        })
        .await;
        figures.push(figure(label, count, elapsed, 3, "step"));
    }
    figures
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
