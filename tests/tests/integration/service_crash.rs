//! `kill -9` of whole services: the shop's order, payment and stock services run as processes of
//! the child `service-child` over the NATS server named by `SAGA_TEST_NATS_URL` and the PostgreSQL
//! server named by `SAGA_TEST_POSTGRES_URL` (skipped without them outside CI), each service in a
//! schema of its own. The order service starts 200 sagas (a local step, a command to payment, a
//! command to stock; stock refuses every fifth, so those compensate and are rejected), and while
//! they run:
//!
//! - the order and payment processes are killed with SIGKILL; payment is restarted, then order
//!   (same instance name: it takes over its executions at once), which exits once every saga ended;
//! - or the payment process is killed while sagas are committing, and restarted at once.
//!
//! Then:
//!
//! - there is one execution per planned saga, terminal with the status its plan says (`finished`,
//!   or `errored` for the refused ones; a saga planned to finish may also end `errored` after all
//!   its steps succeeded, when its reservation went unanswered past the commit timeout), its
//!   transaction committed or rejected accordingly, at rest;
//! - for every finished saga, payment and stock journaled `commit` of its transaction (at least
//!   once: the callbacks are at-least-once across a crash) and never `reject`; for every errored
//!   saga, payment journaled `reject` and never `commit`, and stock `reject` and never `commit`
//!   (nothing at all when it refused: it staged nothing);
//! - no participant store (order's own included) holds a reservation or a staged effect.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use saga_runtime::execution::TransactionState;
use saga_runtime::prelude::*;
use saga_runtime::transactional::{ParticipantStore, PostgresParticipantStore};
use saga_runtime::wiring::*;
use saga_tests::{TestDatabase, TestNats};
use uuid::Uuid;

/// How many sagas the order service starts.
const COUNT: i64 = 200;
/// The saga's persisted name in the child.
const SAGA: &str = "service-crash";
/// How long the restarted order service may take to end every saga.
const END_WITHIN: Duration = Duration::from_secs(120);

/// Whether stock refuses planned saga `n` (the child's rule).
fn refused(n: i64) -> bool {
    n % 5 == 4
}

/// The child's context, as far as the test reads it.
#[derive(Debug, Deserialize)]
struct Order {
    n: i64,
}

/// Everything the children wrote to their standard error, prefixed by their role.
#[derive(Debug, Clone, Default)]
struct Logs(Arc<Mutex<String>>);

impl Logs {
    fn push(&self, line: &str) {
        let mut logs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        logs.push_str(line);
        logs.push('\n');
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The running children: killed when the test ends early, their logs printed if it panicked.
struct Children {
    running: Vec<(String, Child)>,
    logs: Logs,
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- children's logs\n{}", self.logs.text());
        }
    }
}

/// Where the three services keep their state, and the broker they share.
struct Shop {
    order: TestDatabase,
    payment: TestDatabase,
    stock: TestDatabase,
    nats: TestNats,
}

impl Shop {
    async fn connect() -> Option<Self> {
        let nats = TestNats::connect().await?;
        let order = TestDatabase::connect().await?;
        let payment = TestDatabase::connect().await?;
        let stock = TestDatabase::connect().await?;
        Some(Self {
            order,
            payment,
            stock,
            nats,
        })
    }

    fn database(&self, role: &str) -> &TestDatabase {
        match role {
            "order" => &self.order,
            "payment" => &self.payment,
            "stock" => &self.stock,
            other => panic!("unknown role {other}"),
        }
    }

    /// Starts `service-child <args>`; a participant is waited for until it prints `ready`.
    fn spawn(&self, children: &mut Children, args: &[&str]) {
        let role = args[0];
        let db = self.database(role);
        let label = format!("{}#{}", args.join(" "), children.running.len());
        let mut child = Command::new(env!("CARGO_BIN_EXE_service-child"))
            .args(args)
            .env("SAGA_CHILD_POSTGRES_URL", db.url())
            .env("SAGA_CHILD_SCHEMA", db.schema())
            .env("SAGA_CHILD_NATS_URL", self.nats.url())
            .env("SAGA_CHILD_NATS_PREFIX", self.nats.prefix())
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the child starts");
        let stderr = child.stderr.take().expect("piped");
        let logs = children.logs.clone();
        let prefix = label.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                logs.push(&format!("[{prefix}] {line}"));
            }
        });
        let stdout = child.stdout.take().expect("piped");
        let (ready, is_ready) = mpsc::channel();
        let logs = children.logs.clone();
        let prefix = label.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready.send(());
                }
                logs.push(&format!("[{prefix}] stdout: {line}"));
            }
        });
        children.running.push((label.clone(), child));
        if role != "order" {
            is_ready
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{label} did not get ready within 60 s"));
        }
    }
}

/// Takes the child started as `args[0]`'s latest instance out of `children`.
fn take(children: &mut Children, role: &str) -> (String, Child) {
    let index = children
        .running
        .iter()
        .rposition(|(label, _)| label.starts_with(role))
        .unwrap_or_else(|| panic!("no {role} child"));
    children.running.remove(index)
}

/// Kills `child` with SIGKILL.
fn kill(children: &mut Children, role: &str) {
    let (label, mut child) = take(children, role);
    child.kill().expect("the child is killed");
    let status = child.wait().expect("the killed child is reaped");
    children.logs.push(&format!("[{label}] killed: {status}"));
}

/// Waits (up to `within`) for `child` to exit.
async fn wait(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("the child is polled") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Staged effects and reservations left in a participant's schema.
async fn unsettled(db: &TestDatabase) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM participant_effects) \
         + (SELECT COUNT(*) FROM participant_reservations)",
    )
    .fetch_one(db.pool())
    .await
    .expect("the unsettled rows are counted")
}

/// The journal of a participant: by transaction, the phases in order.
async fn journal(db: &TestDatabase) -> BTreeMap<Uuid, Vec<String>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT transaction_id, phase FROM journal ORDER BY seq")
            .fetch_all(db.pool())
            .await
            .expect("the journal is read");
    let mut journal = BTreeMap::<Uuid, Vec<String>>::new();
    for (transaction, phase) in rows {
        let transaction = Uuid::parse_str(&transaction).expect("a transaction id");
        journal.entry(transaction).or_default().push(phase);
    }
    journal
}

/// Asserts that `store` holds no reservation and no staged effect of `transactions`.
async fn assert_settled(service: &str, store: &PostgresParticipantStore, transactions: &[Uuid]) {
    let far_future = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
    let reserved = store
        .expired_reservations(far_future)
        .await
        .expect("the reservations are listed");
    assert!(
        reserved.is_empty(),
        "{service} still holds reservations: {reserved:?}"
    );
    for transaction in transactions {
        let staged = store
            .staged(*transaction)
            .await
            .expect("the staged effects are read");
        assert!(
            staged.is_empty(),
            "{service} still stages effects of {transaction}: {staged:?}"
        );
    }
}

/// Where the test kills services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// The order and payment processes, once some sagas ended; payment is restarted, then order
    /// with `recover`.
    OrderAndPayment,
    /// The payment process, while some sagas are committing; it is restarted at once, and the order
    /// process (never killed) ends the sagas.
    PaymentMidCommit,
}

/// Counts of executions in the order schema.
#[derive(Debug, Clone, Copy)]
struct Progress {
    stored: i64,
    terminal: i64,
    committing: i64,
}

async fn progress(db: &TestDatabase) -> Progress {
    let (stored, terminal, committing) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE status IN ('finished', 'errored')), \
         COUNT(*) FILTER (WHERE transaction_state = 'committing') \
         FROM saga_executions WHERE saga = $1",
    )
    .bind(SAGA)
    .fetch_one(db.pool())
    .await
    .expect("the executions are counted");
    Progress {
        stored,
        terminal,
        committing,
    }
}

/// Waits for the order process to exit 0 within [`END_WITHIN`].
async fn wait_for_order(shop: &Shop, children: &mut Children) {
    let (label, mut order) = take(children, "order");
    let status = wait(&mut order, END_WITHIN).await;
    children.running.push((label.clone(), order));
    let Some(status) = status else {
        panic!(
            "{label} did not end within {END_WITHIN:?}: {:?}",
            progress(&shop.order).await
        )
    };
    assert!(status.success(), "{label} failed: {status}");
}

/// Runs the shop's 200 sagas, kills services as `crash` says, and checks what they left.
async fn scenario(crash: Crash) {
    let Some(shop) = Shop::connect().await else {
        return;
    };
    let started = Instant::now();
    // The tables first, so that the children and the test never create them at once.
    let repository = shop.order.repository().await;
    let stores = [
        ("order", shop.order.participant_store().await),
        ("payment", shop.payment.participant_store().await),
        ("stock", shop.stock.participant_store().await),
    ];

    let mut children = Children {
        running: Vec::new(),
        logs: Logs::default(),
    };
    shop.spawn(&mut children, &["payment"]);
    shop.spawn(&mut children, &["stock"]);
    shop.spawn(&mut children, &["order", "start", &COUNT.to_string()]);

    // Wait for the moment to kill: some sagas ended (or are committing), not all of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let now = progress(&shop.order).await;
        let due = match crash {
            Crash::OrderAndPayment => now.stored >= COUNT / 2 && now.terminal >= 40,
            Crash::PaymentMidCommit => now.terminal >= 40 && now.committing >= 3,
        };
        if due {
            break now;
        }
        assert!(
            now.terminal < COUNT,
            "every saga ended before the kill: the test killed nothing"
        );
        assert!(
            Instant::now() < deadline,
            "no moment to kill within 60 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    match crash {
        Crash::OrderAndPayment => {
            kill(&mut children, "order");
            kill(&mut children, "payment");
            eprintln!(
                "killed order and payment at {at_kill:?}, {:?} after",
                progress(&shop.order).await
            );
            shop.spawn(&mut children, &["payment"]);
            shop.spawn(&mut children, &["order", "recover"]);
        }
        Crash::PaymentMidCommit => {
            kill(&mut children, "payment");
            eprintln!(
                "killed payment at {at_kill:?}, {:?} after",
                progress(&shop.order).await
            );
            shop.spawn(&mut children, &["payment"]);
        }
    }
    wait_for_order(&shop, &mut children).await;

    // The commit and reject messages may still be with the participants: wait until they settled.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = unsettled(&shop.payment).await + unsettled(&shop.stock).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} effects or reservations still unsettled 30 s after the order service ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The participants stop gracefully once their standard input closes.
    for role in ["stock", "payment"] {
        let (label, mut child) = take(&mut children, role);
        drop(child.stdin.take());
        let status = wait(&mut child, Duration::from_secs(30)).await;
        children.running.push((label.clone(), child));
        let status = status.unwrap_or_else(|| panic!("{label} did not stop within 30 s"));
        assert!(status.success(), "{label} failed: {status}");
    }

    // One execution per planned saga, ended as planned, at rest. A saga whose reservation went
    // unanswered for longer than the commit timeout (a participant down, or too slow on a loaded
    // machine) is rejected after all its steps succeeded, as a refusal would reject it: that is the
    // only way a saga planned to finish may end errored.
    let mut executions = BTreeMap::<i64, (Uuid, SagaStatus)>::new();
    for id in repository.list_by_saga(SAGA).await.expect("listed") {
        let record = repository.load(id).await.expect("loaded");
        let n = record.context::<Order>().expect("the context decodes").n;
        let planned = if refused(n) {
            SagaStatus::Errored
        } else {
            SagaStatus::Finished
        };
        let status = record.status;
        let commit_failed = record
            .steps
            .iter()
            .all(|step| step.status() == StepStatus::Finished);
        if !(planned == SagaStatus::Finished && status == SagaStatus::Errored && commit_failed) {
            assert_eq!(
                status, planned,
                "saga {n} ({id})'s status: {:?}",
                record.steps
            );
        }
        let transaction = if status == SagaStatus::Finished {
            TransactionState::Committed
        } else {
            TransactionState::Rejected
        };
        assert_eq!(
            record.transaction, transaction,
            "saga {n} ({id}, {status})'s transaction"
        );
        assert_eq!(record.owner, None, "saga {n} ({id}) is still held");
        assert!(
            record.pending.is_empty(),
            "saga {n} ({id}) has pending messages"
        );
        assert!(
            executions.insert(n, (id, status)).is_none(),
            "saga {n} has two executions"
        );
    }
    assert_eq!(
        executions.keys().copied().collect::<Vec<_>>(),
        (0..COUNT).collect::<Vec<_>>(),
        "one execution per planned saga"
    );

    // Every participant transaction committed or rejected, never both.
    let payments = journal(&shop.payment).await;
    let stocks = journal(&shop.stock).await;
    let known: BTreeSet<Uuid> = executions.values().map(|(id, _)| *id).collect();
    for (service, journal) in [("payment", &payments), ("stock", &stocks)] {
        for transaction in journal.keys() {
            assert!(
                known.contains(transaction),
                "{service} journaled an unknown transaction {transaction}"
            );
        }
    }
    let phases = |journal: &BTreeMap<Uuid, Vec<String>>, id: &Uuid, phase: &str| {
        journal
            .get(id)
            .map_or(0, |phases| phases.iter().filter(|p| *p == phase).count())
    };
    let (mut repeated, mut unplanned) = (0, 0);
    for (n, (id, status)) in &executions {
        let payment = (
            phases(&payments, id, "commit"),
            phases(&payments, id, "reject"),
        );
        let stock = (phases(&stocks, id, "commit"), phases(&stocks, id, "reject"));
        if *status == SagaStatus::Finished {
            assert!(
                payment.0 >= 1 && payment.1 == 0,
                "finished saga {n} ({id}): payment journaled {:?}",
                payments.get(id)
            );
            assert!(
                stock.0 >= 1 && stock.1 == 0,
                "finished saga {n} ({id}): stock journaled {:?}",
                stocks.get(id)
            );
            repeated += payment.0 - 1 + stock.0 - 1;
        } else {
            assert!(
                payment.0 == 0 && payment.1 >= 1,
                "errored saga {n} ({id}): payment journaled {:?}",
                payments.get(id)
            );
            repeated += payment.1 - 1;
            if refused(*n) {
                // Stock refused: it staged nothing, so it has nothing to reject.
                assert_eq!(
                    stock,
                    (0, 0),
                    "refused saga {n} ({id}): stock journaled {:?}",
                    stocks.get(id)
                );
            } else {
                unplanned += 1;
                assert!(
                    stock.0 == 0 && stock.1 >= 1,
                    "errored saga {n} ({id}): stock journaled {:?}",
                    stocks.get(id)
                );
                repeated += stock.1 - 1;
            }
        }
    }

    // Nothing reserved or staged anywhere.
    let transactions: Vec<Uuid> = known.iter().copied().collect();
    for (service, store) in &stores {
        assert_settled(service, store, &transactions).await;
        store.close().await;
    }

    eprintln!(
        "{crash:?}: {COUNT} sagas ended in {:?}; {repeated} callbacks repeated across the crash, \
         {unplanned} sagas rejected at their commit (a participant down or slow)",
        started.elapsed()
    );
    drop(children);
    let Shop {
        order,
        payment,
        stock,
        nats,
    } = shop;
    drop(repository);
    for db in [order, payment, stock] {
        db.drop().await;
    }
    nats.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_order_and_payment_services_mid_run_loses_and_doubles_nothing() {
    scenario(Crash::OrderAndPayment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_payment_service_mid_commit_loses_and_doubles_nothing() {
    scenario(Crash::PaymentMidCommit).await;
}
