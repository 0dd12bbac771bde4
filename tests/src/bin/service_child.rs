//! The child process of the service crash test (`tests/integration/service_crash.rs`): one of three services
//! of a shop, each a [`SagaService`] over NATS JetStream and PostgreSQL.
//!
//! Usage: `service-child order start <count>`, `service-child order recover`, `service-child
//! payment`, `service-child stock`. The environment names the servers and where the service keeps
//! its state:
//!
//! - `SAGA_CHILD_POSTGRES_URL`, `SAGA_CHILD_SCHEMA`: the PostgreSQL server and the service's own
//!   schema (the services of a saga share its transaction id, so each needs its own participant
//!   store; the order service keeps its repository there too);
//! - `SAGA_CHILD_NATS_URL`, `SAGA_CHILD_NATS_PREFIX`: the NATS server and the subject prefix.
//!
//! **order** runs the saga `service-crash`: a local step, a remote step to payment
//! (`CreatePayment`, compensated by `RefundPayment`) and one to stock (`ReserveStock`, compensated
//! by `ReleaseStock`), with autocommit. Its instance name is fixed, so that a restart takes over
//! its executions at once, and its lease (also the period of the recovery sweeps) is short.
//! `start <count>` records the plan (`service_plan`), then both `start` and `recover` start the
//! planned sagas that have no execution yet (each context carries its planned index `n`), several at
//! once and without waiting for them (`pause_on_disk`), wait until every planned saga has one execution, terminal,
//! settled (transaction committed or rejected) and at rest (no owner, nothing pending), and exit 0.
//!
//! **payment** and **stock** answer their commands with a transactional participant on a
//! PostgreSQL participant store: each command stages an effect keyed by the saga's planned index;
//! stock refuses saga `n` when [`refused`] says so (the saga then compensates and is rejected). The
//! `on_commit` / `on_reject` callbacks append `(service, transaction, phase)` to the table
//! `journal` of the service's schema, each row committed by itself (plain sqlx). A participant
//! prints `ready` once it listens and runs until its standard input closes, then stops gracefully.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use saga_runtime::broker::NatsBroker;
use saga_runtime::prelude::*;
use saga_runtime::repository::PostgresRepository;
use saga_runtime::transactional::{
    CommandContext, CommandError, PostgresParticipantStore, Settled,
};
use saga_runtime::wiring::SagaService;
use saga_runtime::wiring::*;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::io::AsyncReadExt;

/// The saga's persisted name.
const SAGA: &str = "service-crash";
/// The order service's instance name, the same on every start.
const INSTANCE: &str = "service-child-order";
/// The order manager's lease, also the period of its recovery sweeps.
const LEASE: Duration = Duration::from_secs(2);
/// How many sagas the order service starts at once.
const STARTING: usize = 16;
/// What a participant prints once it listens.
const READY: &str = "ready";

/// Whether stock refuses planned saga `n` (every fifth saga).
fn refused(n: i64) -> bool {
    n % 5 == 4
}

/// The context: which planned saga this execution is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Order {
    n: i64,
    validated: bool,
    paid: bool,
    reserved: bool,
}

/// The command payload of every step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Planned {
    n: i64,
}

async fn validate(order: &mut Order) -> Result<(), StepError> {
    order.validated = true;
    Ok(())
}

async fn invalidate(order: &mut Order) -> Result<(), StepError> {
    order.validated = false;
    Ok(())
}

async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreatePayment", &Planned { n: order.n })
}

async fn charged(order: &mut Order, _reply: SagaResponse) -> Result<(), StepError> {
    order.paid = true;
    Ok(())
}

async fn refund(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("RefundPayment", &Planned { n: order.n })
}

async fn reserve(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("ReserveStock", &Planned { n: order.n })
}

async fn reserved(order: &mut Order, _reply: SagaResponse) -> Result<(), StepError> {
    order.reserved = true;
    Ok(())
}

async fn release(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("ReleaseStock", &Planned { n: order.n })
}

fn definition() -> Result<Arc<SagaDefinition<Order>>, DefinitionError> {
    Ok(Arc::new(
        Saga::new(SAGA)
            .local_step("validate")
            .on_execute(validate)
            .on_failure(invalidate)
            .remote_step("charge")
            .on_execute(charge)
            .on_success(charged)
            .on_failure(refund)
            .remote_step("reserve")
            .on_execute(reserve)
            .on_success(reserved)
            .on_failure(release)
            .commit()?,
    ))
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Where the service runs.
struct Settings {
    postgres: String,
    schema: String,
    nats: String,
    prefix: String,
}

impl Settings {
    fn from_env() -> Result<Self, Failure> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.is_empty())
                .ok_or_else(|| format!("{name} is not set"))
        };
        Ok(Self {
            postgres: var("SAGA_CHILD_POSTGRES_URL")?,
            schema: var("SAGA_CHILD_SCHEMA")?,
            nats: var("SAGA_CHILD_NATS_URL")?,
            prefix: var("SAGA_CHILD_NATS_PREFIX")?,
        })
    }

    async fn broker(&self) -> Result<NatsBroker, Failure> {
        Ok(NatsBroker::builder(&self.nats)
            .prefix(&self.prefix)
            .ack_wait(Duration::from_secs(2))
            .redelivery_delay(Duration::from_millis(200))
            .connect()
            .await?)
    }

    async fn store(&self) -> Result<PostgresParticipantStore, Failure> {
        Ok(PostgresParticipantStore::builder(&self.postgres)
            .schema(&self.schema)
            .max_connections(4)
            .connect()
            .await?)
    }

    /// A plain pool on the service's schema (created by the store or repository first).
    async fn pool(&self) -> Result<PgPool, Failure> {
        let options =
            PgConnectOptions::from_str(&self.postgres)?.options([("search_path", &self.schema)]);
        Ok(PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?)
    }
}

// ---- order ----

/// Records the plan (once: a restart keeps the first) and returns how many sagas it holds.
async fn plan(pool: &PgPool, count: Option<i64>) -> Result<i64, Failure> {
    sqlx::query("CREATE TABLE IF NOT EXISTS service_plan (count BIGINT NOT NULL)")
        .execute(pool)
        .await?;
    if let Some(count) = count {
        let mut transaction = pool.begin().await?;
        sqlx::query("LOCK TABLE service_plan")
            .execute(&mut *transaction)
            .await?;
        let planned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM service_plan")
            .fetch_one(&mut *transaction)
            .await?;
        if planned == 0 {
            sqlx::query("INSERT INTO service_plan (count) VALUES ($1)")
                .bind(count)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
    }
    let count: Option<i64> = sqlx::query_scalar("SELECT count FROM service_plan")
        .fetch_optional(pool)
        .await?;
    count.ok_or_else(|| "no plan: run `order start <count>` first".into())
}

/// The planned indices of the stored executions.
async fn started(repository: &Arc<dyn SagaExecutionRepository>) -> Result<Vec<i64>, Failure> {
    let mut started = Vec::new();
    for id in repository.list_by_saga(SAGA).await? {
        let record = repository.load(id).await?;
        started.push(record.context::<Order>()?.n);
    }
    Ok(started)
}

/// How many executions are settled and at rest.
async fn settled(pool: &PgPool) -> Result<(i64, i64), Failure> {
    let (total, settled): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE status IN ('finished', 'errored') \
         AND transaction_state IN ('committed', 'rejected') AND owner IS NULL \
         AND pending = '[]') FROM saga_executions WHERE saga = $1",
    )
    .bind(SAGA)
    .fetch_one(pool)
    .await?;
    Ok((total, settled))
}

async fn run_order(settings: &Settings, count: Option<i64>) -> Result<(), Failure> {
    let saga = definition()?;
    let repository: Arc<dyn SagaExecutionRepository> = Arc::new(
        PostgresRepository::builder(&settings.postgres)
            .schema(&settings.schema)
            .max_connections(4)
            .connect()
            .await?,
    );
    let pool = settings.pool().await?;
    let planned = plan(&pool, count).await?;
    let service = SagaService::builder("order")
        .repository(Arc::clone(&repository))
        .broker(settings.broker().await?)
        .participant_store(settings.store().await?)
        .registry(Registry::empty().with_definition(Arc::clone(&saga))?)
        .commands(|_| false)
        .manager(|manager| {
            manager
                .instance(INSTANCE)
                .lease(LEASE)
                // Longer than a participant takes to restart and get its deliveries again.
                .commit_timeout(Duration::from_secs(15))
                .storage_retry(Duration::from_secs(10))
        })
        .start()
        .await?;

    let existing: BTreeSet<i64> = started(&repository).await?.into_iter().collect();
    eprintln!(
        "service-child order: {planned} planned, {} already started",
        existing.len()
    );
    let options = RunOptions::new()
        .pause_on_disk(true)
        .raise_on_error(false)
        .return_execution(false);
    // Started STARTING at a time, so that many are in flight at once.
    let mut starting = tokio::task::JoinSet::new();
    for n in (0..planned).filter(|n| !existing.contains(n)) {
        while starting.len() >= STARTING {
            starting.join_next().await.expect("a start")??;
        }
        let (manager, saga, options) = (
            service.manager().clone(),
            Arc::clone(&saga),
            options.clone(),
        );
        let order = Order {
            n,
            ..Order::default()
        };
        starting.spawn(async move { manager.run(saga, order, options).await.map(|_| ()) });
    }
    while let Some(started) = starting.join_next().await {
        started??;
    }
    eprintln!("service-child order: every planned saga started");

    loop {
        let (total, done) = settled(&pool).await?;
        if total >= planned && done == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut executions = started(&repository).await?;
    executions.sort_unstable();
    if executions != (0..planned).collect::<Vec<_>>() {
        return Err(format!("the executions are not one per planned saga: {executions:?}").into());
    }
    eprintln!("service-child order: every planned saga ended");
    service.shutdown().await;
    pool.close().await;
    Ok(())
}

// ---- payment, stock ----

/// The journal of the callbacks (set once, before the participant starts).
static JOURNAL: OnceLock<(&'static str, PgPool)> = OnceLock::new();

async fn journal(settled: Settled, phase: &'static str) {
    let Some((service, pool)) = JOURNAL.get() else {
        panic!("no journal");
    };
    // A callback that cannot record its effect panics: the participant then answers SYSTEM_ERROR
    // and keeps the effects staged, so the transaction settles again later.
    let topics: Vec<&str> = settled
        .effects
        .iter()
        .map(|effect| effect.topic.as_str())
        .collect();
    sqlx::query(
        "INSERT INTO journal (service, transaction_id, phase, topics) VALUES ($1, $2, $3, $4)",
    )
    .bind(*service)
    .bind(settled.transaction.to_string())
    .bind(phase)
    .bind(topics.join(","))
    .execute(pool)
    .await
    .unwrap_or_else(|error| panic!("journaling failed: {error}"));
}

async fn create_payment(context: CommandContext, planned: Planned) -> Result<String, CommandError> {
    context.stage(
        format!("payment:{}", planned.n),
        json!({ "n": planned.n, "charge": true }),
    );
    Ok(format!("pay-{}", planned.n))
}

async fn refund_payment(context: CommandContext, planned: Planned) -> Result<(), CommandError> {
    context.stage(
        format!("refund:{}", planned.n),
        json!({ "n": planned.n, "refund": true }),
    );
    Ok(())
}

async fn reserve_stock(context: CommandContext, planned: Planned) -> Result<String, CommandError> {
    if refused(planned.n) {
        return Err(CommandError::business(format!(
            "saga {}: out of stock",
            planned.n
        )));
    }
    context.stage(
        format!("stock:{}", planned.n),
        json!({ "n": planned.n, "reserve": true }),
    );
    Ok(format!("res-{}", planned.n))
}

async fn release_stock(_context: CommandContext, _planned: Planned) -> Result<(), CommandError> {
    Ok(())
}

async fn run_participant(settings: &Settings, name: &'static str) -> Result<(), Failure> {
    let store = settings.store().await?;
    let pool = settings.pool().await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS journal (seq BIGSERIAL PRIMARY KEY, service TEXT NOT NULL, \
         transaction_id TEXT NOT NULL, phase TEXT NOT NULL, topics TEXT NOT NULL)",
    )
    .execute(&pool)
    .await?;
    JOURNAL
        .set((name, pool))
        .map_err(|_| "the journal is set once")?;
    let service = SagaService::builder(name)
        .broker(settings.broker().await?)
        .participant_store(store)
        .registry(Registry::empty())
        .commands(|_| false)
        .participant(move |participant| {
            let participant = match name {
                "payment" => participant
                    .command("CreatePayment", create_payment)
                    .command("RefundPayment", refund_payment),
                _ => participant
                    .command("ReserveStock", reserve_stock)
                    .command("ReleaseStock", release_stock),
            };
            participant
                .on_commit(|settled| journal(settled, "commit"))
                .on_reject(|settled| journal(settled, "reject"))
        })
        .start()
        .await?;
    println!("{READY}");
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while !matches!(stdin.read(&mut sink).await, Ok(0) | Err(_)) {}
    service.shutdown().await;
    eprintln!(
        "service-child {name}: stopped; {:?}",
        service.participant().stats()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "saga_runtime=warn,saga_runtime::execution=error,saga_runtime::manager::recovery=info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("service-child: {error}");
            return ExitCode::from(64);
        }
    };
    let result = match args.as_slice() {
        ["order", "start", count] => match count.parse::<i64>() {
            Ok(count) => run_order(&settings, Some(count)).await,
            Err(error) => Err(format!("count `{count}`: {error}").into()),
        },
        ["order", "recover"] => run_order(&settings, None).await,
        ["payment"] => run_participant(&settings, "payment").await,
        ["stock"] => run_participant(&settings, "stock").await,
        _ => {
            eprintln!("usage: service-child order start <count> | order recover | payment | stock");
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("service-child {}: {error}", args.join(" "));
            ExitCode::FAILURE
        }
    }
}
