//! The NATS server restarted in the middle of a thousand sagas through the shop's three services
//! (`order`, `payment`, `stock`, over NATS JetStream and PostgreSQL): every saga still ends, each
//! once, its participants settle it once, and nothing stays staged or reserved.
//!
//! It restarts the shared NATS server, so it runs only with `SAGA_TEST_NATS_RESTART=1` (CI sets
//! it), as the only test of its binary; the server must be the Debian one, started as
//! `nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server`. Skipped (with a printed note)
//! otherwise, and without `SAGA_TEST_NATS_URL` and `SAGA_TEST_POSTGRES_URL` outside CI.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use saga_tests::shop::{self, Order, Plan, Shop};

const SAGAS: usize = 1_000;
const IN_FLIGHT: usize = 64;
/// The server is restarted once this many sagas are terminal.
const RESTART_AFTER: usize = 200;
const SERVER: &str = "/usr/sbin/nats-server";
const ADDRESS: &str = "127.0.0.1:4222";

fn start_stop_daemon(args: &[&str]) {
    let status = Command::new("start-stop-daemon")
        .args(args)
        .status()
        .expect("start-stop-daemon runs");
    assert!(status.success(), "start-stop-daemon {args:?}: {status}");
}

fn stop_server() {
    start_stop_daemon(&["--stop", "--oknodo", "--retry", "10", "--exec", SERVER]);
}

/// Starts the server (nothing happens when it runs) and waits until it accepts connections.
fn start_server() {
    start_stop_daemon(&[
        "--start",
        "--oknodo",
        "--background",
        "--exec",
        SERVER,
        "--",
        "-a",
        "127.0.0.1",
        "-p",
        "4222",
        "-js",
        "-sd",
        "/var/lib/nats-server",
        "-l",
        "/var/log/nats-server.log",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(ADDRESS).is_err() {
        assert!(
            Instant::now() < deadline,
            "the NATS server accepts connections within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the server again when dropped, however the test ends: it must never be left down.
struct KeepsNatsRunning;

impl Drop for KeepsNatsRunning {
    fn drop(&mut self) {
        start_server();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sagas_ride_out_a_nats_server_restart() {
    if std::env::var("SAGA_TEST_NATS_RESTART").as_deref() != Ok("1") {
        eprintln!("skipped: set SAGA_TEST_NATS_RESTART=1 to restart the NATS server in a test");
        return;
    }
    let Some(shop) = Shop::connect().await else {
        return;
    };
    let _running = KeepsNatsRunning;
    let started = Instant::now();
    // Quick redeliveries: an unacknowledged delivery comes again after 2 s, a nacked one after
    // 200 ms. The lease is also the recovery period: every 2 s, recovery publishes what is still
    // unpublished and sends the commands of paused executions again.
    let broker = || {
        shop.broker(|broker| {
            broker
                .ack_wait(Duration::from_secs(2))
                .redelivery_delay(Duration::from_millis(200))
        })
    };
    let payment = shop
        .service("payment", broker().await, None)
        .await
        .participant(shop::payment_handlers)
        .start()
        .await
        .expect("payment starts");
    let stock = shop
        .service("stock", broker().await, None)
        .await
        .participant(shop::stock_handlers)
        .start()
        .await
        .expect("stock starts");
    let repository = shop.repository().await;
    let order = shop
        .service("order", broker().await, Some(Arc::clone(&repository)))
        .await
        .manager(|manager| manager.lease(Duration::from_secs(2)))
        .start()
        .await
        .expect("order starts");

    // Every fifth order is refused by stock.
    let planned: Vec<Order> = (0..SAGAS).map(|n| Order::new(n % 5 == 3)).collect();
    let plan: BTreeMap<_, _> = planned
        .iter()
        .map(|order| (order.key, order.refuse))
        .collect();
    let launcher = {
        let (manager, repository) = (order.manager().clone(), Arc::clone(&repository));
        tokio::spawn(
            async move { shop::launch(&[manager], &repository, &planned, IN_FLIGHT).await },
        )
    };

    saga_tests::wait_until(
        Duration::from_secs(300),
        "sagas terminal before the restart",
        || async { shop::terminal(&repository).await >= RESTART_AFTER },
    )
    .await;
    let before = shop::terminal(&repository).await;
    tokio::task::spawn_blocking(|| {
        stop_server();
        start_server();
    })
    .await
    .expect("the restart does not panic");
    eprintln!(
        "restarted the NATS server after {before} terminal sagas, {:?} in",
        started.elapsed()
    );

    let failures = tokio::time::timeout(Duration::from_secs(600), launcher)
        .await
        .expect("every saga starts within 600 s")
        .expect("the launcher does not panic");
    shop::wait_for_the_end(&plan, &repository, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    let failed_commits = shop::check_outcomes(
        &plan,
        Plan::CommitMayFail,
        &repository,
        payment.participant().store(),
        stock.participant().store(),
    )
    .await;
    eprintln!(
        "{SAGAS} sagas across a NATS restart in {elapsed:?}: {} runs returned an error while the \
         server was away ({failures:?}), {failed_commits} accepted orders rejected at their \
         commit; replies {:?}; payment {:?}; stock {:?}",
        failures.len(),
        order.manager().reply_stats(),
        payment.participant().stats(),
        stock.participant().stats(),
    );

    for service in [&order, &payment, &stock] {
        service.shutdown().await;
    }
    drop((order, payment, stock));
    shop.drop().await;
}
