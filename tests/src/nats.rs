//! A stream of its own on the NATS server named by `SAGA_TEST_NATS_URL`, one per test.

use std::time::Duration;

use saga_runtime::broker::{NatsBroker, NatsBrokerBuilder};
use uuid::Uuid;

/// The variable that names the test server, e.g. `nats://127.0.0.1:4222`.
pub(crate) const URL_VARIABLE: &str = "SAGA_TEST_NATS_URL";

/// A subject prefix of its own on the test server (`saga_test_<uuid>`, which also names the
/// test's stream), so that tests running at the same time, or earlier runs, never see each other's
/// messages.
///
/// Without a server (the variable unset, or the server unreachable), [`connect`](Self::connect)
/// prints `skipped: <why>` and returns `None`, and the test returns early; when the variable `CI`
/// is set, it panics instead: in CI a missing server is a failure.
///
/// ```no_run
/// # async fn test() {
/// use saga_tests::TestNats;
///
/// let Some(nats) = TestNats::connect().await else { return };
/// let broker = nats.broker().await;
/// // ...
/// nats.drop().await;
/// # }
/// ```
#[derive(Debug)]
pub struct TestNats {
    url: String,
    prefix: String,
    admin: async_nats::jetstream::Context,
}

impl TestNats {
    /// Connects to the test server with a fresh prefix, or returns `None` (after printing why)
    /// when there is no server to test against outside CI.
    pub async fn connect() -> Option<Self> {
        let Some(url) = std::env::var(URL_VARIABLE)
            .ok()
            .filter(|url| !url.is_empty())
        else {
            return unavailable(&format!("{URL_VARIABLE} is not set"));
        };
        let client =
            match tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url.as_str()))
                .await
            {
                Ok(Ok(client)) => client,
                Ok(Err(error)) => {
                    return unavailable(&format!(
                        "the NATS server in {URL_VARIABLE} is unreachable: {error}"
                    ));
                }
                Err(_) => {
                    return unavailable(&format!(
                        "the NATS server in {URL_VARIABLE} did not answer within 5 s"
                    ));
                }
            };
        // A server without JetStream answers, but the broker fails to create its stream: a
        // failure, not a skip.
        let admin = async_nats::jetstream::new(client);
        let prefix = format!("saga_test_{}", Uuid::new_v4().simple());
        Some(Self { url, prefix, admin })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The test's prefix (and stream name).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A broker builder on the test's prefix, with short waits for tests: a 1 s ack wait and a
    /// 100 ms redelivery delay.
    pub fn builder(&self) -> NatsBrokerBuilder {
        NatsBroker::builder(&self.url)
            .prefix(&self.prefix)
            .ack_wait(Duration::from_secs(1))
            .redelivery_delay(Duration::from_millis(100))
    }

    /// A new broker on the test's prefix (the stream is created by the first one).
    pub async fn broker(&self) -> NatsBroker {
        self.builder()
            .connect()
            .await
            .expect("the broker connects to the test server")
    }

    /// A JetStream context beside the brokers, to publish raw messages.
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.admin
    }

    /// Deletes the test's stream and its consumers; call it at the end of the test. A test that
    /// fails before leaves its stream behind, to look at.
    pub async fn drop(self) {
        self.admin
            .delete_stream(&self.prefix)
            .await
            .unwrap_or_else(|error| panic!("the test stream {} is deleted: {error}", self.prefix));
    }
}

/// No server to test against: a failure in CI, a skip elsewhere.
fn unavailable(why: &str) -> Option<TestNats> {
    if std::env::var_os("CI").is_some() {
        panic!("NATS tests must run in CI (CI is set), but {why}");
    }
    eprintln!("skipped: {why}");
    None
}
