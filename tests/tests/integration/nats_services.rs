//! `SagaService` over NATS JetStream and PostgreSQL: the shop's three services (`order` runs the
//! saga, `payment` and `stock` answer it as transactional participants), end to end and at scale
//! with two `order` instances sharing one repository and one reply consumer; and how a service is
//! named and refused. Skipped (with a printed note) without `SAGA_TEST_NATS_URL` and
//! `SAGA_TEST_POSTGRES_URL` outside CI.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use saga_runtime::transactional::CommandRegistration;
use saga_runtime::wiring::SagaService;
use saga_runtime::wiring::*;
use saga_runtime::wiring::{SERVICE_NAME_VARIABLE, ServiceError};
use saga_tests::module_registry;
use saga_tests::shop::{self, Order, Shop, order_saga};

/// The payment service's handlers, as `#[transactional_command]` declares them.
mod payment {
    use saga_runtime::prelude::*;
    use saga_runtime::transactional::{CommandContext, CommandError};
    use saga_tests::shop;
    use uuid::Uuid;

    #[transactional_command(
        topic = "CreatePayment",
        on_commit = shop::payment_committed,
        on_reject = shop::payment_rejected
    )]
    async fn create_payment(
        context: CommandContext,
        charge: shop::Charge,
    ) -> Result<String, CommandError> {
        shop::create_payment(context, charge).await
    }

    #[transactional_command(topic = "RefundPayment")]
    async fn refund_payment(context: CommandContext, key: Uuid) -> Result<(), CommandError> {
        shop::refund_payment(context, key).await
    }
}

/// The stock service's handlers, as `#[transactional_command]` declares them.
mod stock {
    use saga_runtime::prelude::*;
    use saga_runtime::transactional::{CommandContext, CommandError};
    use saga_tests::shop;
    use uuid::Uuid;

    #[transactional_command(
        topic = "ReserveStock",
        on_commit = shop::stock_committed,
        on_reject = shop::stock_rejected
    )]
    async fn reserve_stock(
        context: CommandContext,
        reserve: shop::Reserve,
    ) -> Result<String, CommandError> {
        shop::reserve_stock(context, reserve).await
    }

    #[transactional_command(topic = "ReleaseStock")]
    async fn release_stock(context: CommandContext, key: Uuid) -> Result<(), CommandError> {
        shop::release_stock(context, key).await
    }
}

/// Two handlers of one topic: a service that picks both is refused. No other test picks them.
mod twice {
    use saga_runtime::prelude::*;
    use saga_runtime::transactional::{CommandContext, CommandError};

    #[transactional_command(topic = "Twice")]
    async fn first(_context: CommandContext, _request: u32) -> Result<(), CommandError> {
        Ok(())
    }

    #[transactional_command(topic = "Twice")]
    async fn second(_context: CommandContext, _request: u32) -> Result<(), CommandError> {
        Ok(())
    }
}

/// The sagas declared in this file, as a service in a binary of its own would find them.
fn sagas() -> Registry {
    module_registry(module_path!()).expect("unique saga names")
}

/// The name the test harness knows test `name` of this file by (its path without the crate).
fn test_path(name: &str) -> String {
    let module = module_path!()
        .split_once("::")
        .map_or("", |(_, module)| module);
    format!("{module}::{name}")
}

/// The handlers declared in module `name` of this file.
fn module(name: &'static str) -> impl Fn(&CommandRegistration) -> bool + Send + 'static {
    let path = format!("{}::{name}", module_path!());
    move |command| command.module_path() == path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_commit_an_order_and_compensate_one_the_stock_refuses() {
    let Some(shop) = Shop::connect().await else {
        return;
    };
    let started = Instant::now();
    let repository = shop.repository().await;
    let payment = shop
        .service("payment", shop.broker(|broker| broker).await, None)
        .await
        .commands(module("payment"))
        .start()
        .await
        .expect("payment starts");
    let stock = shop
        .service("stock", shop.broker(|broker| broker).await, None)
        .await
        .commands(module("stock"))
        .start()
        .await
        .expect("stock starts");
    let order = shop
        .service(
            "order",
            shop.broker(|broker| broker).await,
            Some(repository.clone()),
        )
        .await
        .start()
        .await
        .expect("order starts");

    let accepted = Order::new(false);
    let run = |context: Order| {
        order.manager().run(
            order_saga(),
            context,
            RunOptions::new().raise_on_error(false),
        )
    };
    let finished = tokio::time::timeout(Duration::from_secs(60), run(accepted.clone()))
        .await
        .expect("the saga ends within 60 s")
        .expect("runs")
        .execution()
        .expect("returned");
    assert_eq!(finished.status(), SagaStatus::Finished);
    let key = accepted.key.simple();
    assert_eq!(
        finished.context().payment.as_deref(),
        Some(format!("pay-{key}").as_str())
    );
    assert_eq!(
        finished.context().reservation.as_deref(),
        Some(format!("res-{key}").as_str())
    );

    let refused = Order::new(true);
    let errored = tokio::time::timeout(Duration::from_secs(60), run(refused.clone()))
        .await
        .expect("the saga ends within 60 s")
        .expect("runs")
        .execution()
        .expect("returned");
    assert_eq!(errored.status(), SagaStatus::Errored);
    assert!(errored.already_rollback(), "compensated");
    assert_eq!(errored.context().reservation, None);

    let plan = BTreeMap::from([(accepted.key, false), (refused.key, true)]);
    shop::wait_for_the_end(&plan, &repository, Duration::from_secs(60)).await;
    shop::check_outcomes(
        &plan,
        shop::Plan::Strict,
        &repository,
        payment.participant().store(),
        stock.participant().store(),
    )
    .await;
    let (payment_stats, stock_stats) = (payment.participant().stats(), stock.participant().stats());
    assert_eq!(
        (payment_stats.committed, payment_stats.rejected),
        (1, 1),
        "{payment_stats:?}"
    );
    assert_eq!(
        (stock_stats.committed, stock_stats.rejected),
        (1, 0),
        "{stock_stats:?}"
    );

    for service in [&order, &payment, &stock] {
        service.shutdown().await;
    }
    drop((order, payment, stock));
    shop.drop().await;
    eprintln!(
        "two sagas through three services in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_order_instances_share_a_repository_and_a_reply_consumer_through_a_thousand_sagas() {
    let Some(shop) = Shop::connect().await else {
        return;
    };
    const SAGAS: usize = 1_000;
    const IN_FLIGHT: usize = 64;
    let started = Instant::now();
    let payment = shop
        .service("payment", shop.broker(|broker| broker).await, None)
        .await
        .participant(shop::payment_handlers)
        .start()
        .await
        .expect("payment starts");
    let stock = shop
        .service("stock", shop.broker(|broker| broker).await, None)
        .await
        .participant(shop::stock_handlers)
        .start()
        .await
        .expect("stock starts");
    // Two instances of `order`, each with its own connections, on one schema and one prefix: they
    // share the durable consumer of `orderReply`, so a reply reaches either of them, whichever
    // started the saga.
    let mut orders = Vec::new();
    for instance in ["order-a", "order-b"] {
        let repository = shop.repository().await;
        orders.push(
            shop.service(
                "order",
                shop.broker(|broker| broker).await,
                Some(repository),
            )
            .await
            .manager(move |manager| manager.instance(instance))
            .start()
            .await
            .expect("order starts"),
        );
    }
    let repository = shop.repository().await;

    // Every fifth order is refused by stock.
    let planned: Vec<Order> = (0..SAGAS).map(|n| Order::new(n % 5 == 3)).collect();
    let plan: BTreeMap<_, _> = planned
        .iter()
        .map(|order| (order.key, order.refuse))
        .collect();
    let managers: Vec<SagaManager> = orders
        .iter()
        .map(|service| service.manager().clone())
        .collect();
    let failures = tokio::time::timeout(
        Duration::from_secs(300),
        shop::launch(&managers, &repository, &planned, IN_FLIGHT),
    )
    .await
    .expect("every saga starts within 300 s");
    assert_eq!(failures, Vec::<String>::new(), "every run started");
    shop::wait_for_the_end(&plan, &repository, Duration::from_secs(300)).await;
    let elapsed = started.elapsed();

    shop::check_outcomes(
        &plan,
        shop::Plan::Strict,
        &repository,
        payment.participant().store(),
        stock.participant().store(),
    )
    .await;
    let refused = plan.values().filter(|refuse| **refuse).count() as u64;
    let accepted = SAGAS as u64 - refused;
    let (payment_stats, stock_stats) = (payment.participant().stats(), stock.participant().stats());
    assert_eq!(
        (payment_stats.committed, payment_stats.rejected),
        (accepted, refused),
        "{payment_stats:?}"
    );
    assert_eq!(
        (stock_stats.committed, stock_stats.rejected),
        (accepted, 0),
        "{stock_stats:?}"
    );
    let replies: Vec<_> = orders
        .iter()
        .map(|service| service.manager().reply_stats())
        .collect();
    assert!(
        replies.iter().all(|stats| stats.applied > 0),
        "both instances applied replies: {replies:?}"
    );
    eprintln!(
        "{SAGAS} sagas through two order instances in {elapsed:?}; replies {replies:?}; \
         payment {payment_stats:?}; stock {stock_stats:?}"
    );

    for service in orders.iter().chain([&payment, &stock]) {
        service.shutdown().await;
    }
    drop((orders, payment, stock));
    shop.drop().await;
}

#[tokio::test]
async fn a_service_needs_a_name() {
    for name in ["", "  "] {
        match SagaService::builder(name).registry(sagas()).start().await {
            Err(ServiceError::MissingName) => {}
            other => panic!("expected MissingName for {name:?}, got {other:?}"),
        }
    }
    let service = SagaService::builder("billing")
        .registry(sagas())
        .commands(|_| false)
        .start()
        .await
        .expect("starts");
    assert_eq!(service.name(), "billing");
    assert_eq!(service.participant().service(), "billing");
    service.shutdown().await;
}

/// Run in this process, it checks whatever the environment says; run by
/// [`the_service_name_comes_from_the_environment`] as a child process, with the variable set to
/// what the parent chose and `SAGA_TEST_EXPECTED_NAME` the name it expects (empty: none).
#[tokio::test]
async fn from_env_reads_the_service_name() {
    let expected = match std::env::var("SAGA_TEST_EXPECTED_NAME") {
        Ok(expected) => Some(expected).filter(|expected| !expected.is_empty()),
        Err(_) => std::env::var(SERVICE_NAME_VARIABLE)
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty()),
    };
    match (SagaService::from_env(), expected) {
        (Err(ServiceError::MissingName), None) => {}
        (Ok(builder), Some(expected)) => {
            let service = builder
                .registry(sagas())
                .commands(|_| false)
                .start()
                .await
                .expect("starts");
            assert_eq!(service.name(), expected);
            service.shutdown().await;
        }
        (outcome, expected) => panic!(
            "expected {expected:?}, got {outcome:?}",
            outcome = outcome.map(|_| "a builder")
        ),
    }
}

#[test]
fn the_service_name_comes_from_the_environment() {
    let test = std::env::current_exe().expect("the test binary");
    for (value, expected) in [
        (Some(" payment "), "payment"),
        (Some("stock"), "stock"),
        (Some("   "), ""),
        (None, ""),
    ] {
        let mut child = std::process::Command::new(&test);
        child
            .args([
                "--exact",
                &test_path("from_env_reads_the_service_name"),
                "--quiet",
            ])
            .env("SAGA_TEST_EXPECTED_NAME", expected);
        match value {
            Some(value) => child.env(SERVICE_NAME_VARIABLE, value),
            None => child.env_remove(SERVICE_NAME_VARIABLE),
        };
        let output = child.output().expect("the child runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{value:?}: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn two_handlers_of_one_topic_are_refused() {
    match SagaService::builder("twice")
        .registry(sagas())
        .commands(module("twice"))
        .start()
        .await
    {
        Err(ServiceError::DuplicateTopic(duplicate)) => {
            assert_eq!(duplicate.topic, "Twice");
            assert_ne!(duplicate.first, duplicate.second);
        }
        other => panic!("expected DuplicateTopic, got {other:?}"),
    }
}
