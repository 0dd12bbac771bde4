//! A three-service shop over NATS and PostgreSQL, for the tests of [`SagaService`] at scale:
//! service `order` runs saga `scale-order` (a local step, a remote step to `payment`, a remote step
//! to `stock`), `payment` and `stock` answer its commands as transactional participants. Each
//! service keeps its staged effects in a PostgreSQL schema of its own (the transaction id is shared
//! by every service of a saga), and every handler and callback counts what it did in process-wide
//! tallies keyed by the order or the transaction, so that a test can check that each ran exactly
//! once.
//!
//! The handlers are plain functions: [`payment_handlers`] and [`stock_handlers`] register them on a
//! participant builder, or a test wraps them in `#[transactional_command]` handlers of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use saga_runtime::broker::{Broker, NatsBrokerBuilder};
use saga_runtime::execution::TransactionState;
use saga_runtime::prelude::*;
use saga_runtime::transactional::{
    CommandContext, CommandError, ParticipantStore, Settled, TransactionalParticipantBuilder,
};
use saga_runtime::wiring::SagaService;
use saga_runtime::wiring::SagaServiceBuilder;
use saga_runtime::wiring::*;
use serde_json::json;

use crate::wait_until;
use uuid::Uuid;

use crate::{TestDatabase, TestNats};

/// The saga's persisted name.
pub const SAGA: &str = "scale-order";

/// The order saga's context.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Order {
    /// Names the order in the tallies.
    pub key: Uuid,
    /// The stock service refuses it (the saga compensates and its transaction is rejected).
    pub refuse: bool,
    /// The payment service's answer.
    pub payment: Option<String>,
    /// The stock service's answer.
    pub reservation: Option<String>,
}

impl Order {
    /// A new order with a fresh key; with `refuse`, the stock service refuses it.
    pub fn new(refuse: bool) -> Self {
        Self {
            key: Uuid::new_v4(),
            refuse,
            ..Self::default()
        }
    }
}

/// The `CreatePayment` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    /// The order.
    pub key: Uuid,
}

/// The `ReserveStock` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reserve {
    /// The order.
    pub key: Uuid,
    /// Refuse it.
    pub refuse: bool,
}

type Tally<K> = Mutex<BTreeMap<K, u32>>;

/// Local step effects: (order key, "validate" or "cancel").
static LOCAL: Tally<(Uuid, &'static str)> = Mutex::new(BTreeMap::new());
/// Settlement callbacks: (service, transaction, "commit" or "reject").
static SETTLED: Tally<(&'static str, Uuid, &'static str)> = Mutex::new(BTreeMap::new());

fn bump<K: Ord>(tally: &Tally<K>, key: K) {
    *tally
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default() += 1;
}

fn read<K: Ord>(tally: &Tally<K>, key: &K) -> u32 {
    tally
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
        .copied()
        .unwrap_or(0)
}

/// How many times the local effect `what` (`validate`, or its compensation `cancel`) ran for order
/// `key`.
pub fn local_effects(key: Uuid, what: &'static str) -> u32 {
    read(&LOCAL, &(key, what))
}

/// How many times `service`'s `phase` callback (`commit` or `reject`) ran for `transaction`.
pub fn settlements(service: &'static str, transaction: Uuid, phase: &'static str) -> u32 {
    read(&SETTLED, &(service, transaction, phase))
}

async fn validate(order: &mut Order) -> Result<(), StepError> {
    bump(&LOCAL, (order.key, "validate"));
    Ok(())
}

async fn cancel(order: &mut Order) -> Result<(), StepError> {
    bump(&LOCAL, (order.key, "cancel"));
    Ok(())
}

async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreatePayment", &Charge { key: order.key })
}

async fn charged(order: &mut Order, reply: SagaResponse) -> Result<(), StepError> {
    order.payment = Some(reply.content()?);
    Ok(())
}

async fn refund(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("RefundPayment", &order.key)
}

async fn reserve(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new(
        "ReserveStock",
        &Reserve {
            key: order.key,
            refuse: order.refuse,
        },
    )
}

async fn reserved(order: &mut Order, reply: SagaResponse) -> Result<(), StepError> {
    order.reservation = Some(reply.content()?);
    Ok(())
}

async fn release(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("ReleaseStock", &order.key)
}

/// `scale-order`: `validate` (local, compensated by `cancel`), `payment` (`CreatePayment`,
/// compensated by `RefundPayment`), `stock` (`ReserveStock`, compensated by `ReleaseStock`).
pub fn order_saga() -> Arc<SagaDefinition<Order>> {
    Arc::new(
        Saga::new(SAGA)
            .local_step("validate")
            .on_execute(validate)
            .on_failure(cancel)
            .remote_step("payment")
            .on_execute(charge)
            .on_success(charged)
            .on_failure(refund)
            .remote_step("stock")
            .on_execute(reserve)
            .on_success(reserved)
            .on_failure(release)
            .commit()
            .expect("a valid saga"),
    )
}

/// `CreatePayment`: stages the charge under the order's key.
pub async fn create_payment(
    context: CommandContext,
    charge: Charge,
) -> Result<String, CommandError> {
    context.stage(
        format!("payment:{}", charge.key),
        json!({ "key": charge.key }),
    );
    Ok(format!("pay-{}", charge.key.simple()))
}

/// `RefundPayment`: nothing to stage (the rejected transaction voids the charge).
pub async fn refund_payment(_context: CommandContext, _key: Uuid) -> Result<(), CommandError> {
    Ok(())
}

/// `ReserveStock`: refuses the orders that ask for it, stages the reservation of the others under
/// the order's key.
pub async fn reserve_stock(
    context: CommandContext,
    reserve: Reserve,
) -> Result<String, CommandError> {
    if reserve.refuse {
        return Err(CommandError::business("out of stock"));
    }
    context.stage(
        format!("stock:{}", reserve.key),
        json!({ "key": reserve.key }),
    );
    Ok(format!("res-{}", reserve.key.simple()))
}

/// `ReleaseStock`: nothing was staged by a refused reservation.
pub async fn release_stock(_context: CommandContext, _key: Uuid) -> Result<(), CommandError> {
    Ok(())
}

/// Payment's commit callback.
pub async fn payment_committed(settled: Settled) {
    bump(&SETTLED, ("payment", settled.transaction, "commit"));
}

/// Payment's reject callback.
pub async fn payment_rejected(settled: Settled) {
    bump(&SETTLED, ("payment", settled.transaction, "reject"));
}

/// Stock's commit callback.
pub async fn stock_committed(settled: Settled) {
    bump(&SETTLED, ("stock", settled.transaction, "commit"));
}

/// Stock's reject callback.
pub async fn stock_rejected(settled: Settled) {
    bump(&SETTLED, ("stock", settled.transaction, "reject"));
}

/// The payment service's handlers and callbacks.
pub fn payment_handlers(
    builder: TransactionalParticipantBuilder,
) -> TransactionalParticipantBuilder {
    builder
        .command("CreatePayment", create_payment)
        .command("RefundPayment", refund_payment)
        .on_commit(payment_committed)
        .on_reject(payment_rejected)
}

/// The stock service's handlers and callbacks.
pub fn stock_handlers(builder: TransactionalParticipantBuilder) -> TransactionalParticipantBuilder {
    builder
        .command("ReserveStock", reserve_stock)
        .command("ReleaseStock", release_stock)
        .on_commit(stock_committed)
        .on_reject(stock_rejected)
}

/// The servers of a shop: one NATS prefix, and one PostgreSQL schema per service.
pub struct Shop {
    /// The NATS prefix every service speaks on.
    pub nats: TestNats,
    /// Service `order`: its executions and its staged effects.
    pub order: TestDatabase,
    /// Service `payment`: its staged effects.
    pub payment: TestDatabase,
    /// Service `stock`: its staged effects.
    pub stock: TestDatabase,
}

impl Shop {
    /// A fresh prefix and three fresh schemas, or `None` (after printing why) without servers
    /// outside CI.
    pub async fn connect() -> Option<Self> {
        let nats = TestNats::connect().await?;
        let order = TestDatabase::connect().await?;
        let payment = TestDatabase::connect().await?;
        let stock = TestDatabase::connect().await?;
        Some(Self {
            nats,
            order,
            payment,
            stock,
        })
    }

    /// The schema of service `name`.
    pub fn database(&self, name: &str) -> &TestDatabase {
        match name {
            "order" => &self.order,
            "payment" => &self.payment,
            "stock" => &self.stock,
            other => panic!("no service {other}"),
        }
    }

    /// A broker of its own on the shop's prefix, `configure`d (the test defaults: 1 s ack wait,
    /// 100 ms redelivery delay).
    pub async fn broker(
        &self,
        configure: impl FnOnce(NatsBrokerBuilder) -> NatsBrokerBuilder,
    ) -> Arc<dyn Broker> {
        Arc::new(
            configure(self.nats.builder())
                .connect()
                .await
                .expect("the broker connects"),
        )
    }

    /// The participant store of service `name`, in its own schema.
    pub async fn participant_store(&self, name: &str) -> Arc<dyn ParticipantStore> {
        Arc::new(self.database(name).participant_store().await)
    }

    /// The shared repository of service `order`.
    pub async fn repository(&self) -> Arc<dyn SagaExecutionRepository> {
        Arc::new(self.order.repository().await)
    }

    /// A service builder for `name` on `broker`, with its own participant store, answering no
    /// `#[transactional_command]` handler (`.commands(..)` picks some, `.participant(..)` adds
    /// more); `order` runs [`order_saga`] on `repository`, the others run no saga.
    pub async fn service(
        &self,
        name: &'static str,
        broker: Arc<dyn Broker>,
        repository: Option<Arc<dyn SagaExecutionRepository>>,
    ) -> SagaServiceBuilder {
        let builder = SagaService::builder(name)
            .broker(broker)
            .participant_store(self.participant_store(name).await)
            .commands(|_| false);
        match repository {
            Some(repository) => builder.repository(repository).registry(
                Registry::empty()
                    .with_definition(order_saga())
                    .expect("one saga"),
            ),
            None => builder.registry(Registry::empty()),
        }
    }

    /// Deletes the stream and the schemas.
    pub async fn drop(self) {
        self.nats.drop().await;
        self.order.drop().await;
        self.payment.drop().await;
        self.stock.drop().await;
    }
}

/// The executions of [`SAGA`] in `repository`, by order key: (execution id, status, transaction
/// state, whether it rests: no owner, nothing pending, nothing for recovery to do).
pub async fn executions(
    repository: &Arc<dyn SagaExecutionRepository>,
) -> BTreeMap<Uuid, Vec<(Uuid, SagaStatus, TransactionState, bool)>> {
    let mut out: BTreeMap<Uuid, Vec<_>> = BTreeMap::new();
    for id in repository.list_by_saga(SAGA).await.expect("lists") {
        let record = repository.load(id).await.expect("loads");
        let order: Order = record.context().expect("an order context");
        out.entry(order.key).or_default().push((
            id,
            record.status,
            record.transaction,
            !record.needs_recovery(),
        ));
    }
    out
}

/// How many executions of [`SAGA`] are terminal in `repository` (finished or errored).
pub async fn terminal(repository: &Arc<dyn SagaExecutionRepository>) -> usize {
    let mut terminal = 0;
    for status in [SagaStatus::Finished, SagaStatus::Errored] {
        terminal += repository
            .list_by_status(status)
            .await
            .expect("lists")
            .len();
    }
    terminal
}

/// How strictly [`check_outcomes`] holds the orders to their plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Every order ends as planned: the refused ones errored, the others finished.
    Strict,
    /// The refused ones errored; an accepted one may have errored too, when its reservation
    /// could not be confirmed (the broker went away during the two-phase commit: the manager then
    /// rejects the transaction, so that nothing stays reserved), but then both participants
    /// rejected it.
    CommitMayFail,
}

/// What the participants must have done for an order that ended in `status` (`refuse`: stock
/// refused it, so it staged nothing): (payment phase, stock phase), `None` when that service
/// staged nothing and so settles nothing.
fn expected_settlements(status: SagaStatus, refuse: bool) -> (&'static str, Option<&'static str>) {
    match (status, refuse) {
        (SagaStatus::Finished, _) => ("commit", Some("commit")),
        (_, true) => ("reject", None),
        (_, false) => ("reject", Some("reject")),
    }
}

/// Checks the end of every planned order (`refuse` per key): exactly one execution, terminal and
/// resting, finished and committed or errored and rejected as `plan` allows; its local step ran
/// once, and its compensation once when it errored (never otherwise); each participant that staged
/// something for it committed (finished) or rejected (errored) its transaction exactly once and
/// never the other way; nothing is left staged or reserved by either participant. Returns how many
/// accepted orders errored (always 0 with [`Plan::Strict`]).
pub async fn check_outcomes(
    orders: &BTreeMap<Uuid, bool>,
    plan: Plan,
    repository: &Arc<dyn SagaExecutionRepository>,
    payment: &Arc<dyn ParticipantStore>,
    stock: &Arc<dyn ParticipantStore>,
) -> usize {
    let executions = executions(repository).await;
    assert_eq!(executions.len(), orders.len(), "one execution per order");
    let far_future = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
    for (service, store) in [("payment", payment), ("stock", stock)] {
        let left: Vec<_> = store
            .expired_reservations(far_future)
            .await
            .expect("lists the reservations")
            .into_iter()
            .map(|transaction| {
                let key = executions
                    .iter()
                    .find(|(_, found)| found.iter().any(|(id, ..)| *id == transaction));
                (
                    transaction,
                    key.map(|(key, found)| (orders.get(key), found.clone())),
                )
            })
            .collect();
        assert!(left.is_empty(), "{service}: left reserved: {left:?}");
    }
    let mut failed_commits = 0;
    for (key, refuse) in orders {
        let found = executions.get(key).map(Vec::as_slice).unwrap_or_default();
        let [(id, status, transaction, rests)] = found else {
            panic!("order {key}: expected one execution, found {found:?}");
        };
        let (id, status) = (*id, *status);
        assert!(rests, "order {key}: execution {id} still has work");
        match (status, *refuse, plan) {
            (SagaStatus::Finished, false, _) => {
                assert_eq!(
                    *transaction,
                    TransactionState::Committed,
                    "order {key} ({id})"
                );
            }
            (SagaStatus::Errored, true, _) => {
                assert_eq!(
                    *transaction,
                    TransactionState::Rejected,
                    "order {key} ({id})"
                );
            }
            (SagaStatus::Errored, false, Plan::CommitMayFail) => {
                assert_eq!(
                    *transaction,
                    TransactionState::Rejected,
                    "order {key} ({id})"
                );
                failed_commits += 1;
            }
            _ => panic!("order {key} ({id}, refused: {refuse}) ended {status} ({transaction:?})"),
        }
        assert_eq!(local_effects(*key, "validate"), 1, "order {key}: validate");
        let compensated = u32::from(status == SagaStatus::Errored);
        assert_eq!(
            local_effects(*key, "cancel"),
            compensated,
            "order {key}: cancel"
        );
        let (payment_phase, stock_phase) = expected_settlements(status, *refuse);
        for (service, phase) in [("payment", Some(payment_phase)), ("stock", stock_phase)] {
            for each in ["commit", "reject"] {
                assert_eq!(
                    settlements(service, id, each),
                    u32::from(phase == Some(each)),
                    "order {key} ({id}, {status}): {service} {each}"
                );
            }
        }
        for store in [payment, stock] {
            assert_eq!(
                store.staged(id).await.expect("reads").len(),
                0,
                "order {key}: nothing left staged"
            );
        }
    }
    failed_commits
}

/// Whether the participants of every execution in `executions` (terminal, of an order that stock
/// refused or not) have settled: the callbacks run after the execution is stored terminal, when
/// the commit or reject messages arrive.
fn all_settled(executions: &[(Uuid, SagaStatus, bool)]) -> bool {
    executions.iter().all(|(id, status, refuse)| {
        let (payment, stock) = expected_settlements(*status, *refuse);
        settlements("payment", *id, payment) > 0
            && stock.is_none_or(|phase| settlements("stock", *id, phase) > 0)
    })
}

/// Starts `orders` in turn on `managers` (round robin), each with `pause_on_disk(true)`, keeping at
/// most `in_flight` of them unfinished (not terminal in `repository`) at a time. Returns the runs
/// that failed to start, with why: their executions are stored before anything is published, so
/// recovery still takes them to their end.
pub async fn launch(
    managers: &[SagaManager],
    repository: &Arc<dyn SagaExecutionRepository>,
    orders: &[Order],
    in_flight: usize,
) -> Vec<String> {
    let mut started = 0;
    let mut failures = Vec::new();
    while started < orders.len() {
        let done = terminal(repository).await;
        let room = (done + in_flight)
            .saturating_sub(started)
            .min(orders.len() - started);
        if room == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let runs = orders[started..started + room]
            .iter()
            .enumerate()
            .map(|(offset, order)| {
                managers[(started + offset) % managers.len()].run(
                    order_saga(),
                    order.clone(),
                    RunOptions::new().pause_on_disk(true),
                )
            });
        for outcome in futures_util::future::join_all(runs).await {
            if let Err(error) = outcome {
                failures.push(error.to_string());
            }
        }
        started += room;
    }
    failures
}

/// Waits (up to `limit`) until every planned order (`refuse` per key) has an execution terminal in
/// `repository`, its participants' callbacks ran and it rests, then gives the participants a moment to show
/// a second settlement, if there were one.
pub async fn wait_for_the_end(
    plan: &BTreeMap<Uuid, bool>,
    repository: &Arc<dyn SagaExecutionRepository>,
    limit: Duration,
) {
    let total = plan.len();
    wait_until(limit, "every saga terminal", || async {
        terminal(repository).await >= total
    })
    .await;
    let ended: Vec<(Uuid, SagaStatus, bool)> = executions(repository)
        .await
        .into_iter()
        .flat_map(|(key, found)| {
            let refuse = plan.get(&key).copied().unwrap_or_default();
            found
                .into_iter()
                .map(move |(id, status, ..)| (id, status, refuse))
        })
        .collect();
    wait_until(limit, "every transaction settled", || async {
        all_settled(&ended)
    })
    .await;
    wait_until(limit, "every execution at rest", || async {
        executions(repository)
            .await
            .values()
            .flatten()
            .all(|(.., rests)| *rests)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}
