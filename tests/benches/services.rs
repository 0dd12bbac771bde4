//! The three-service saga over NATS JetStream and PostgreSQL, printed beside the raw rates of the
//! two servers it stands on, measured in the same run.
//!
//! - raw: a JetStream publish awaiting its ack (a saga command's size, with `Nats-Msg-Id`, on a
//!   work-queue stream configured as the broker's), 1 and 64 in flight on one connection; a
//!   single-row PostgreSQL upsert commit (`INSERT .. ON CONFLICT (id) DO UPDATE` on a three-column
//!   table, one statement per autocommit transaction), on 1 and 8 connections;
//! - sagas: `order` (a `PostgresRepository`, and a `PostgresParticipantStore` for its own part in
//!   the two-phase commit) runs validate (local) → `CreatePayment` (service `payment`) →
//!   `ReserveStock` (service `stock`); `payment` and `stock` answer with `#[transactional_command]`
//!   style handlers staging one effect each in their own `PostgresParticipantStore` schema. Each
//!   service has its own `NatsBroker` connection (same prefix), as separate processes would. Every
//!   run uses the default `RunOptions`: it waits in memory for the end, and autocommit closes it
//!   with the two-phase commit (reserve, then commit) across the three services. Latency is the
//!   time from `run` to its return; 1, 8 and 64 sagas in flight.
//!
//! The brokers, repository and stores are wrapped in counters, so the table shows what a saga
//! costs: JetStream publishes (each awaits the stream's ack), delivery acks (each awaits the
//! server's confirmation), private reply consumers (one per commit phase: a consumer creation, then
//! a deletion and a purge of its subject when dropped: three JetStream API round trips), and
//! PostgreSQL writes (each one commit) and reads.
//!
//! Servers: `SAGA_TEST_POSTGRES_URL` and `SAGA_TEST_NATS_URL` (each bench run takes fresh schemas
//! and a fresh stream, removed at the end); without them, it prints what to set and exits.
//! Knobs: `SAGA_BENCH_SECONDS=<f64>` (seconds per row, default 5).
//!
//! Run with `cargo bench -p saga-tests --bench services`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_trait::async_trait;
use saga_runtime::broker::{BrokerMessage, header};
use saga_runtime::broker::{Delivery, DeliverySource, NatsBroker, Subscription};
use saga_runtime::error::{BrokerError, RepositoryError};
use saga_runtime::execution::ExecutionRecord;
use saga_runtime::prelude::*;
use saga_runtime::repository::PostgresRepository;
use saga_runtime::transactional::{
    CommandAnswer, CommandContext, CommandError, Outcome, ParticipantStore, ParticipantStoreError,
    PostgresParticipantStore, StagedEffect, Staging,
};
use saga_runtime::wiring::*;
use saga_tests::{TestDatabase, TestNats};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The saga and its participants.

/// The saga's state (as the shop's `OrderState`).
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

/// `CreatePayment`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Charge {
    order_id: Uuid,
    amount_cents: u64,
}

/// `ReserveStock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reserve {
    order_id: Uuid,
    item: String,
    quantity: u32,
}

async fn validate_order(order: &mut OrderState) -> Result<(), StepError> {
    if order.quantity == 0 || order.amount_cents == 0 {
        return Err(StepError::msg("an order needs a quantity and an amount"));
    }
    order.validated = true;
    Ok(())
}

async fn cancel_order(order: &mut OrderState) -> Result<(), StepError> {
    order.validated = false;
    Ok(())
}

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
    order.payment_id = Some(reply.content()?);
    Ok(())
}

async fn refund_payment(order: &OrderState) -> Result<SagaRequest, StepError> {
    SagaRequest::new("RefundPayment", &order.payment_id)
}

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
    order.reservation_id = Some(reply.content()?);
    Ok(())
}

async fn release_stock(order: &OrderState) -> Result<SagaRequest, StepError> {
    SagaRequest::new("ReleaseStock", &order.reservation_id)
}

/// The shop's order saga, with the builder.
fn create_order() -> Arc<SagaDefinition<OrderState>> {
    Arc::new(
        Saga::new("bench-create-order")
            .local_step("validate_order")
            .on_execute(validate_order)
            .on_failure(cancel_order)
            .remote_step("charge_payment")
            .on_execute(charge_payment)
            .on_success(payment_done)
            .on_failure(refund_payment)
            .remote_step("reserve_stock")
            .on_execute(reserve_stock)
            .on_success(stock_reserved)
            .on_failure(release_stock)
            .commit()
            .expect("a valid saga"),
    )
}

fn order(i: u64) -> OrderState {
    OrderState {
        order_id: Uuid::new_v4(),
        item: format!("item-{}", i % 16),
        quantity: 1 + (i % 3) as u32,
        amount_cents: 1_000 + i % 5_000,
        ..OrderState::default()
    }
}

fn short(id: Uuid) -> String {
    id.simple().to_string()[..8].to_owned()
}

/// `payment`: stages the charge under the order's key.
async fn create_payment(context: CommandContext, charge: Charge) -> Result<String, CommandError> {
    let payment = format!("pay-{}", short(charge.order_id));
    context.stage(
        format!("payment:{}", charge.order_id),
        json!({ "payment": payment, "amount_cents": charge.amount_cents }),
    );
    Ok(payment)
}

async fn refund(context: CommandContext, payment: Option<String>) -> Result<(), CommandError> {
    if let Some(payment) = payment {
        context.stage(format!("refund:{payment}"), json!({ "payment": payment }));
    }
    Ok(())
}

/// `stock`: stages the reservation under the order's key (the shop uses the item's, so that two
/// transactions never hold one item; here concurrent sagas must not refuse each other).
async fn reserve(context: CommandContext, reserve: Reserve) -> Result<String, CommandError> {
    let reservation = format!("res-{}", short(reserve.order_id));
    context.stage(
        format!("stock:{}", reserve.order_id),
        json!({ "item": reserve.item, "quantity": reserve.quantity, "reservation": reservation }),
    );
    Ok(reservation)
}

async fn release(
    _context: CommandContext,
    _reservation: Option<String>,
) -> Result<(), CommandError> {
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Counters around the broker, the repository and the participant stores.

/// What the services asked of the servers.
#[derive(Default)]
struct Ops {
    /// JetStream publishes (each awaits the stream's ack).
    publishes: AtomicU64,
    /// Deliveries handed out (each acknowledged with a confirmed ack).
    deliveries: AtomicU64,
    /// Private subscriptions (a consumer created, then deleted and its subject purged).
    private: AtomicU64,
    /// PostgreSQL writes: repository stores, marks, deletes; participant stages, reserves, takes.
    pg_writes: AtomicU64,
    /// PostgreSQL reads.
    pg_reads: AtomicU64,
}

/// A copy of [`Ops`].
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    publishes: u64,
    deliveries: u64,
    private: u64,
    pg_writes: u64,
    pg_reads: u64,
}

impl Ops {
    fn take(&self) -> Counts {
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::Relaxed);
        Counts {
            publishes: take(&self.publishes),
            deliveries: take(&self.deliveries),
            private: take(&self.private),
            pg_writes: take(&self.pg_writes),
            pg_reads: take(&self.pg_reads),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct CountingBroker {
    inner: NatsBroker,
    ops: Arc<Ops>,
}

struct CountingSource {
    inner: Subscription,
    ops: Arc<Ops>,
}

#[async_trait]
impl DeliverySource for CountingSource {
    async fn next(&mut self) -> Option<Delivery> {
        let delivery = self.inner.next().await?;
        bump(&self.ops.deliveries);
        Some(delivery)
    }
}

#[async_trait]
impl Broker for CountingBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        bump(&self.ops.publishes);
        self.inner.publish(message).await
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        let inner = self.inner.subscribe(topic).await?;
        Ok(Subscription::new(CountingSource {
            inner,
            ops: Arc::clone(&self.ops),
        }))
    }

    async fn subscribe_private(&self, topic: &str) -> Result<Subscription, BrokerError> {
        bump(&self.ops.private);
        let inner = self.inner.subscribe_private(topic).await?;
        Ok(Subscription::new(CountingSource {
            inner,
            ops: Arc::clone(&self.ops),
        }))
    }
}

struct CountingRepository {
    inner: PostgresRepository,
    ops: Arc<Ops>,
}

#[async_trait]
impl SagaExecutionRepository for CountingRepository {
    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        bump(&self.ops.pg_writes);
        self.inner.store(record).await
    }

    async fn store_batch(&self, records: &[&ExecutionRecord]) -> Vec<Result<u64, RepositoryError>> {
        bump(&self.ops.pg_writes);
        self.inner.store_batch(records).await
    }

    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
        bump(&self.ops.pg_reads);
        self.inner.load(id).await
    }

    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
        bump(&self.ops.pg_writes);
        self.inner.delete(id).await
    }

    async fn mark_published(&self, id: Uuid, version: u64) -> Result<bool, RepositoryError> {
        bump(&self.ops.pg_writes);
        self.inner.mark_published(id, version).await
    }

    async fn list_recoverable(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, RepositoryError> {
        bump(&self.ops.pg_reads);
        self.inner.list_recoverable(after, limit).await
    }

    async fn list_by_status(&self, status: SagaStatus) -> Result<Vec<Uuid>, RepositoryError> {
        bump(&self.ops.pg_reads);
        self.inner.list_by_status(status).await
    }

    async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError> {
        bump(&self.ops.pg_reads);
        self.inner.list_by_saga(saga).await
    }

    async fn delete_finished_before(&self, updated_before_ms: u64) -> Result<u64, RepositoryError> {
        bump(&self.ops.pg_writes);
        self.inner.delete_finished_before(updated_before_ms).await
    }
}

struct CountingStore {
    inner: Arc<PostgresParticipantStore>,
    ops: Arc<Ops>,
}

#[async_trait]
impl ParticipantStore for CountingStore {
    async fn stage(
        &self,
        transaction: Uuid,
        command: Uuid,
        effects: &[StagedEffect],
        answer: &CommandAnswer,
    ) -> Result<Staging, ParticipantStoreError> {
        bump(&self.ops.pg_writes);
        self.inner
            .stage(transaction, command, effects, answer)
            .await
    }

    async fn answered(
        &self,
        command: Uuid,
    ) -> Result<Option<CommandAnswer>, ParticipantStoreError> {
        bump(&self.ops.pg_reads);
        self.inner.answered(command).await
    }

    async fn forget_answers(&self, before: SystemTime) -> Result<u64, ParticipantStoreError> {
        bump(&self.ops.pg_writes);
        self.inner.forget_answers(before).await
    }

    async fn reserve(&self, transaction: Uuid) -> Result<(), ParticipantStoreError> {
        bump(&self.ops.pg_writes);
        self.inner.reserve(transaction).await
    }

    async fn staged(&self, transaction: Uuid) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        bump(&self.ops.pg_reads);
        self.inner.staged(transaction).await
    }

    async fn expired_reservations(
        &self,
        before: SystemTime,
    ) -> Result<Vec<Uuid>, ParticipantStoreError> {
        bump(&self.ops.pg_reads);
        self.inner.expired_reservations(before).await
    }

    async fn decide(
        &self,
        transaction: Uuid,
        outcome: Outcome,
    ) -> Result<Outcome, ParticipantStoreError> {
        bump(&self.ops.pg_writes);
        self.inner.decide(transaction, outcome).await
    }

    async fn outcome(&self, transaction: Uuid) -> Result<Option<Outcome>, ParticipantStoreError> {
        bump(&self.ops.pg_reads);
        self.inner.outcome(transaction).await
    }

    async fn remove_settled(
        &self,
        transaction: Uuid,
        count: usize,
    ) -> Result<usize, ParticipantStoreError> {
        bump(&self.ops.pg_writes);
        self.inner.remove_settled(transaction, count).await
    }

    async fn unfinished(
        &self,
        before: SystemTime,
    ) -> Result<Vec<(Uuid, Outcome)>, ParticipantStoreError> {
        bump(&self.ops.pg_reads);
        self.inner.unfinished(before).await
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// How long each row runs (SAGA_BENCH_SECONDS, or 5 s).
fn row_duration() -> Duration {
    std::env::var("SAGA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

/// The warm-up before each row: a fifth of it, at most 1 s.
fn warm_up(duration: Duration) -> Duration {
    (duration / 5).min(Duration::from_secs(1))
}

/// What a row measured: how many calls completed, in how long, and each one's latency.
struct Sample {
    count: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile latency in milliseconds.
    fn percentile_ms(&self, p: usize) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index = (self.latencies.len() * p / 100).min(self.latencies.len() - 1);
        self.latencies[index].as_secs_f64() * 1e3
    }
}

/// Runs `run(worker, i)` in `workers` loops for a warm-up, calls `reset`, then again for
/// `duration`; returns what the second round measured.
async fn measure<F, Fut>(workers: usize, duration: Duration, reset: impl FnOnce(), run: F) -> Sample
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let run = Arc::new(run);
    let _ = run_loops(workers, warm_up(duration), Arc::clone(&run), 0).await;
    reset();
    run_loops(workers, duration, run, 1 << 32).await
}

async fn run_loops<F, Fut>(workers: usize, duration: Duration, run: Arc<F>, first: u64) -> Sample
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let run = Arc::clone(&run);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = first;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    run(worker, i).await;
                    latencies.push(began.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("bench task"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Sample {
        count: latencies.len() as u64,
        elapsed,
        latencies,
    }
}

// ---------------------------------------------------------------------------------------------
// Raw rates.

/// A saga command as the broker sends it (`CreatePayment`), encoded: the raw publishes are this
/// size.
fn command_json() -> Vec<u8> {
    let id = Uuid::new_v4();
    let message = BrokerMessage::new(
        "CreatePayment",
        json!({ "order_id": Uuid::new_v4(), "amount_cents": 4_200 }),
    )
    .with_header(header::SAGA, id.to_string())
    .with_header(header::TRANSACTION, id.to_string())
    .with_reply_to("orderReply");
    serde_json::to_vec(&message).expect("encodes")
}

/// A stream of its own, configured as the broker's (work queue, file storage, 2 min duplicate
/// window), for the raw rows.
async fn raw_stream(nats: &TestNats) -> stream::Stream {
    let name = format!("{}_raw", nats.prefix());
    nats.jetstream()
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("creates the raw stream")
}

/// JetStream publishes awaiting their ack, `in_flight` at a time on one connection, to the raw
/// stream, with a `Nats-Msg-Id` as the broker sends them.
async fn nats_publish(
    nats: &TestNats,
    in_flight: usize,
    payload: &[u8],
    duration: Duration,
) -> Sample {
    let jetstream = nats.jetstream().clone();
    let subject = format!("{}_raw.publish", nats.prefix());
    let payload = Arc::new(payload.to_vec());
    measure(
        in_flight,
        duration,
        || {},
        move |_, _| {
            let (jetstream, subject, payload) =
                (jetstream.clone(), subject.clone(), Arc::clone(&payload));
            async move {
                let mut headers = HeaderMap::new();
                headers.insert(NATS_MESSAGE_ID, Uuid::new_v4().to_string().as_str());
                jetstream
                    .publish_with_headers(subject, headers, payload.to_vec().into())
                    .await
                    .expect("publishes")
                    .await
                    .expect("the stream stores it");
            }
        },
    )
    .await
}

/// What the committer's private reply topic costs per commit phase, as the broker does it: an
/// ephemeral pull consumer created on a subject of its own, then deleted and its subject purged
/// (three JetStream API round trips), `in_flight` at a time.
async fn nats_private_consumer(
    stream: &stream::Stream,
    in_flight: usize,
    duration: Duration,
) -> Sample {
    let (stream, prefix) = (stream.clone(), stream.cached_info().config.name.clone());
    measure(
        in_flight,
        duration,
        || {},
        move |_, _| {
            let (stream, subject) = (
                stream.clone(),
                format!("{prefix}.reply{}", Uuid::new_v4().simple()),
            );
            async move {
                let consumer: PullConsumer = stream
                    .create_consumer(pull::Config {
                        filter_subject: subject.clone(),
                        ack_policy: AckPolicy::Explicit,
                        deliver_policy: DeliverPolicy::All,
                        inactive_threshold: Duration::from_secs(60),
                        ..Default::default()
                    })
                    .await
                    .expect("creates the consumer");
                let name = consumer.cached_info().name.clone();
                stream
                    .delete_consumer(&name)
                    .await
                    .expect("deletes the consumer");
                stream
                    .purge()
                    .filter(subject)
                    .await
                    .expect("purges the subject");
            }
        },
    )
    .await
}

/// The raw upsert: a three-column table.
const RAW_UPSERT: &str = "INSERT INTO bench_raw (id, body, version) VALUES ($1, $2, 1) \
     ON CONFLICT (id) DO UPDATE SET body = excluded.body, version = bench_raw.version + 1";

/// Single-row upsert commits on `connections` connections, each upserting its own rows (every other
/// upsert inserts a row, the next one updates it), in the schema of `db`.
async fn postgres_raw(db: &TestDatabase, connections: usize, duration: Duration) -> Sample {
    let schema = db.schema().to_owned();
    let pool = PgPoolOptions::new()
        .max_connections(connections as u32)
        .after_connect(move |connection, _| {
            let schema = schema.clone();
            Box::pin(async move {
                sqlx::query(&format!("SET search_path TO {schema}"))
                    .execute(connection)
                    .await
                    .map(drop)
            })
        })
        .connect(db.url())
        .await
        .expect("connects to PostgreSQL");
    sqlx::query("DROP TABLE IF EXISTS bench_raw")
        .execute(&pool)
        .await
        .expect("drops the old table");
    sqlx::query(
        "CREATE TABLE bench_raw (id TEXT PRIMARY KEY, body TEXT NOT NULL, version BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("creates the table");
    let body: Arc<str> = Arc::from("x".repeat(200));
    let pool_ = pool.clone();
    let sample = measure(
        connections,
        duration,
        || {},
        move |worker, i| {
            let (pool, body) = (pool_.clone(), Arc::clone(&body));
            async move {
                sqlx::query(RAW_UPSERT)
                    .bind(format!("row-{worker}-{}", i / 2))
                    .bind(&*body)
                    .execute(&pool)
                    .await
                    .expect("upserts");
            }
        },
    )
    .await;
    pool.close().await;
    sample
}

// ---------------------------------------------------------------------------------------------
// The services.

/// The three services and what they stand on.
struct Shop {
    order: SagaService,
    payment: SagaService,
    stock: SagaService,
    repository: PostgresRepository,
    stores: Vec<Arc<PostgresParticipantStore>>,
    ops: Arc<Ops>,
}

impl Shop {
    async fn start(nats: &TestNats, dbs: &[TestDatabase; 3]) -> Self {
        let ops = Arc::new(Ops::default());
        let mut stores = Vec::new();
        let mut parts = Vec::new();
        for (name, db) in ["order", "payment", "stock"].into_iter().zip(dbs) {
            let broker = NatsBroker::builder(nats.url())
                .prefix(nats.prefix())
                .connect()
                .await
                .expect("the broker connects");
            let store = Arc::new(db.participant_store().await);
            stores.push(Arc::clone(&store));
            let service = SagaService::builder(name)
                .broker(CountingBroker {
                    inner: broker,
                    ops: Arc::clone(&ops),
                })
                .participant_store(CountingStore {
                    inner: store,
                    ops: Arc::clone(&ops),
                })
                .registry(Registry::empty())
                .commands(|_| false);
            parts.push(service);
        }
        let repository = dbs[0].repository().await;
        let [order, payment, stock] = <[_; 3]>::try_from(parts).ok().expect("three services");
        let order = order
            .repository(CountingRepository {
                inner: repository.clone(),
                ops: Arc::clone(&ops),
            })
            .start()
            .await
            .expect("order starts");
        let payment = payment
            .participant(|participant| {
                participant
                    .command("CreatePayment", create_payment)
                    .command("RefundPayment", refund)
            })
            .start()
            .await
            .expect("payment starts");
        let stock = stock
            .participant(|participant| {
                participant
                    .command("ReserveStock", reserve)
                    .command("ReleaseStock", release)
            })
            .start()
            .await
            .expect("stock starts");
        Self {
            order,
            payment,
            stock,
            repository,
            stores,
            ops,
        }
    }

    async fn shutdown(self) {
        for service in [&self.order, &self.payment, &self.stock] {
            service.shutdown().await;
        }
        drop((self.order, self.payment, self.stock));
        // The private consumers are deleted in the background once dropped.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.repository.close().await;
        for store in self.stores {
            store.close().await;
        }
    }
}

/// One level of sagas in flight.
struct SagaRow {
    in_flight: usize,
    sample: Sample,
    failed: u64,
    counts: Counts,
}

async fn run_sagas(shop: &Shop, in_flight: usize, duration: Duration) -> SagaRow {
    let manager = shop.order.manager().clone();
    let saga = create_order();
    let failed = Arc::new(AtomicU64::new(0));
    let (failed_, ops) = (Arc::clone(&failed), Arc::clone(&shop.ops));
    let sample = measure(
        in_flight,
        duration,
        move || {
            ops.take();
            failed_.store(0, Ordering::Relaxed);
        },
        {
            let failed = Arc::clone(&failed);
            move |_, i| {
                let (manager, saga, failed) =
                    (manager.clone(), Arc::clone(&saga), Arc::clone(&failed));
                async move {
                    match manager.run(saga, order(i), RunOptions::default()).await {
                        Ok(outcome) => {
                            let status = outcome.execution().map(|execution| execution.status());
                            if status != Some(SagaStatus::Finished) {
                                eprintln!("a saga ended {status:?}");
                                bump(&failed);
                            }
                        }
                        Err(error) => {
                            eprintln!("a saga failed: {error}");
                            bump(&failed);
                        }
                    }
                }
            }
        },
    )
    .await;
    SagaRow {
        in_flight,
        failed: failed.load(Ordering::Relaxed),
        counts: shop.ops.take(),
        sample,
    }
}

// ---------------------------------------------------------------------------------------------
// The tables.

struct Raw {
    nats: [(usize, Sample); 2],
    private: [(usize, Sample); 2],
    postgres: [(usize, Sample); 2],
}

impl Raw {
    /// The JetStream publish-ack rate nearest `in_flight` (1 or 64 in flight).
    fn nats(&self, in_flight: usize) -> f64 {
        if in_flight == 1 {
            self.nats[0].1.rate()
        } else {
            self.nats[1].1.rate()
        }
    }

    /// The private consumer cycle rate nearest `in_flight` (1 or 64 in flight).
    fn private(&self, in_flight: usize) -> f64 {
        if in_flight == 1 {
            self.private[0].1.rate()
        } else {
            self.private[1].1.rate()
        }
    }

    /// The PostgreSQL commit rate nearest `in_flight` (1 or 8 connections).
    fn postgres(&self, in_flight: usize) -> f64 {
        if in_flight == 1 {
            self.postgres[0].1.rate()
        } else {
            self.postgres[1].1.rate()
        }
    }
}

fn print_raw(raw: &Raw) {
    println!(
        "{:<28} {:>6} {:>10} {:>9} {:>9}",
        "raw", "in fl", "ops/s", "p50 ms", "p99 ms"
    );
    let rows = raw
        .nats
        .iter()
        .map(|row| ("JetStream publish + ack", row))
        .chain(
            raw.private
                .iter()
                .map(|row| ("JetStream private consumer", row)),
        )
        .chain(
            raw.postgres
                .iter()
                .map(|row| ("PostgreSQL upsert commit", row)),
        );
    for (what, (in_flight, sample)) in rows {
        println!(
            "{:<28} {:>6} {:>10.0} {:>9.3} {:>9.3}",
            what,
            in_flight,
            sample.rate(),
            sample.percentile_ms(50),
            sample.percentile_ms(99),
        );
    }
}

fn print_sagas(rows: &[SagaRow], raw: &Raw) {
    println!(
        "{:>5} {:>8} {:>8} {:>8} {:>6} {:>14} {:>8} {:>8} {:>6} {:>7} {:>6} {:>7} {:>6} {:>6} {:>6}",
        "in fl",
        "sagas/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "pub/ack/priv",
        "pg wr/rd",
        "pub+ack/s",
        "÷raw",
        "priv/s",
        "÷raw",
        "pg c/s",
        "÷raw",
        "floor",
        "p50/fl",
    );
    for row in rows {
        let sagas = row.sample.count.max(1) as f64;
        let per = |count: u64| count as f64 / sagas;
        let counts = row.counts;
        let seconds = row.sample.elapsed.as_secs_f64();
        let per_second = |count: u64| count as f64 / seconds;
        let round_trips = counts.publishes + counts.deliveries;
        // The saga's round trips one after another at the raw single-flight rates.
        let floor_ms = 1e3
            * (per(round_trips) / raw.nats(1)
                + per(counts.private) / raw.private(1)
                + per(counts.pg_writes + counts.pg_reads) / raw.postgres(1));
        println!(
            "{:>5} {:>8.1} {:>8.2} {:>8.2} {:>6} {:>14} {:>8} {:>8.0} {:>6.3} {:>7.1} {:>6.2} {:>7.0} {:>6.2} {:>6.2} {:>6.1}",
            row.in_flight,
            row.sample.rate(),
            row.sample.percentile_ms(50),
            row.sample.percentile_ms(99),
            row.failed,
            format!(
                "{:.1}/{:.1}/{:.1}",
                per(counts.publishes),
                per(counts.deliveries),
                per(counts.private)
            ),
            format!("{:.1}/{:.1}", per(counts.pg_writes), per(counts.pg_reads)),
            per_second(round_trips),
            per_second(round_trips) / raw.nats(row.in_flight),
            per_second(counts.private),
            per_second(counts.private) / raw.private(row.in_flight),
            per_second(counts.pg_writes),
            per_second(counts.pg_writes) / raw.postgres(row.in_flight),
            floor_ms,
            row.sample.percentile_ms(50) / floor_ms,
        );
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let missing: Vec<_> = ["SAGA_TEST_POSTGRES_URL", "SAGA_TEST_NATS_URL"]
        .into_iter()
        .filter(|name| std::env::var(name).map_or(true, |url| url.is_empty()))
        .collect();
    if !missing.is_empty() {
        println!(
            "services bench: skipped; set {} (e.g. SAGA_TEST_POSTGRES_URL=\
             postgres://postgres@127.0.0.1:5432/test SAGA_TEST_NATS_URL=nats://127.0.0.1:4222)",
            missing.join(" and ")
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let duration = row_duration();
    let Some(nats) = TestNats::connect().await else {
        println!("services bench: skipped (no NATS server, see above)");
        return;
    };
    let mut dbs = Vec::new();
    for _ in 0..4 {
        let Some(db) = TestDatabase::connect().await else {
            println!("services bench: skipped (no PostgreSQL server, see above)");
            return;
        };
        dbs.push(db);
    }
    let raw_db = dbs.pop().expect("four schemas");
    let dbs = <[TestDatabase; 3]>::try_from(dbs).expect("three schemas");
    let payload = command_json();
    println!(
        "saga-tests services bench (cargo bench -p saga-tests --bench services): {} cores, {:?} per \
         row after a {:?} warm-up, NATS {} (stream {}), PostgreSQL {} (schemas {}, {}, {}), raw \
         publishes of {} bytes (a saga command's JSON)",
        std::thread::available_parallelism().map_or(1, usize::from),
        duration,
        warm_up(duration),
        nats.url(),
        nats.prefix(),
        dbs[0].url(),
        dbs[0].schema(),
        dbs[1].schema(),
        dbs[2].schema(),
        payload.len(),
    );

    let stream = raw_stream(&nats).await;
    let raw = Raw {
        nats: [
            (1, nats_publish(&nats, 1, &payload, duration).await),
            (64, nats_publish(&nats, 64, &payload, duration).await),
        ],
        private: [
            (1, nats_private_consumer(&stream, 1, duration).await),
            (64, nats_private_consumer(&stream, 64, duration).await),
        ],
        postgres: [
            (1, postgres_raw(&raw_db, 1, duration).await),
            (8, postgres_raw(&raw_db, 8, duration).await),
        ],
    };
    nats.jetstream()
        .delete_stream(&stream.cached_info().config.name)
        .await
        .expect("deletes the raw stream");

    let shop = Shop::start(&nats, &dbs).await;
    let mut rows = Vec::new();
    for in_flight in [1, 8, 64] {
        rows.push(run_sagas(&shop, in_flight, duration).await);
    }
    shop.shutdown().await;

    println!();
    print_raw(&raw);
    println!();
    print_sagas(&rows, &raw);
    println!();
    println!(
        "pub/ack/priv: JetStream publishes, delivery acks (each confirmed by the server) and private \
         reply consumers per saga; pg wr/rd: PostgreSQL writes (each a commit) and reads per saga; \
         pub+ack/s, priv/s, pg c/s: the rates the sagas drove, ÷raw: beside the raw rate (1 in \
         flight beside 1, more beside 64 in flight or 8 connections); floor: ms per saga if its \
         round trips ran one after another at the raw single-flight rates"
    );

    for db in dbs {
        db.drop().await;
    }
    raw_db.drop().await;
    nats.drop().await;
}
