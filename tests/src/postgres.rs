//! A fresh schema on the PostgreSQL server named by `SAGA_TEST_POSTGRES_URL`, one per test.

use std::str::FromStr;
use std::time::Duration;

use saga_runtime::repository::{PostgresBuilder, PostgresRepository};
use saga_runtime::transactional::PostgresParticipantStore;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use uuid::Uuid;

/// The variable that names the test server, e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub(crate) const URL_VARIABLE: &str = "SAGA_TEST_POSTGRES_URL";

/// A schema of its own on the test server (`saga_test_<uuid>`), so that tests running at the same
/// time, or earlier runs, never see each other's rows.
///
/// Without a server (the variable unset, or the server unreachable), [`connect`](Self::connect)
/// prints `skipped: <why>` and returns `None`, and the test returns early; when the variable `CI`
/// is set, it panics instead: in CI a missing server is a failure. A server that answers but
/// refuses the connection (an unknown role or database) is always a failure.
///
/// ```no_run
/// # async fn test() {
/// use saga_tests::TestDatabase;
///
/// let Some(db) = TestDatabase::connect().await else { return };
/// let repository = db.repository().await;
/// // ...
/// db.drop().await;
/// # }
/// ```
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    schema: String,
    pool: PgPool,
}

impl TestDatabase {
    /// Creates a fresh schema on the test server, or returns `None` (after printing why) when
    /// there is no server to test against outside CI.
    pub async fn connect() -> Option<Self> {
        let Some(url) = std::env::var(URL_VARIABLE)
            .ok()
            .filter(|url| !url.is_empty())
        else {
            return unavailable(&format!("{URL_VARIABLE} is not set"));
        };
        let schema = format!("saga_test_{}", Uuid::new_v4().simple());
        let options = match PgConnectOptions::from_str(&url) {
            Ok(options) => options.options([("search_path", &schema)]),
            Err(error) => panic!("{URL_VARIABLE} is not a PostgreSQL URL: {error}"),
        };
        // One direct connection first: a refused or failed connection is reported as it is, not as
        // the pool's timeout.
        let probe =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options));
        match probe.await {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
            }
            // The server answered, and refused (an unknown role or database): the variable is
            // wrong, which is a failure, not a missing server.
            Ok(Err(sqlx::Error::Database(error))) => {
                panic!("the PostgreSQL server in {URL_VARIABLE} refuses the connection: {error}")
            }
            Ok(Err(error)) => {
                return unavailable(&format!(
                    "the PostgreSQL server in {URL_VARIABLE} is unreachable: {error}"
                ));
            }
            Err(_) => {
                return unavailable(&format!(
                    "the PostgreSQL server in {URL_VARIABLE} did not answer within 5 s"
                ));
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .unwrap_or_else(|error| panic!("the test pool connects: {error}"));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .unwrap_or_else(|error| panic!("the test schema {schema} is created: {error}"));
        Some(Self { url, schema, pool })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The test's schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A repository builder on the test's schema.
    pub fn builder(&self) -> PostgresBuilder<PostgresRepository> {
        PostgresRepository::builder(&self.url).schema(&self.schema)
    }

    /// A new repository on the test's schema (its tables are created by the first one).
    pub async fn repository(&self) -> PostgresRepository {
        self.builder()
            .connect()
            .await
            .expect("the repository connects to the test schema")
    }

    /// A participant store builder on the test's schema.
    pub fn participant_builder(&self) -> PostgresBuilder<PostgresParticipantStore> {
        PostgresParticipantStore::builder(&self.url).schema(&self.schema)
    }

    /// A new participant store on the test's schema (its tables are created by the first store or
    /// repository).
    pub async fn participant_store(&self) -> PostgresParticipantStore {
        self.participant_builder()
            .connect()
            .await
            .expect("the participant store connects to the test schema")
    }

    /// A plain pool on the test's schema, beside the repositories, to inspect or damage rows.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Drops the test's schema and everything in it; call it at the end of the test. A test that
    /// fails before leaves its schema behind, to look at.
    pub async fn drop(self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|error| panic!("the test schema {} is dropped: {error}", self.schema));
        self.pool.close().await;
    }
}

/// No server to test against: a failure in CI, a skip elsewhere.
fn unavailable(why: &str) -> Option<TestDatabase> {
    if std::env::var_os("CI").is_some() {
        panic!("PostgreSQL tests must run in CI (CI is set), but {why}");
    }
    eprintln!("skipped: {why}");
    None
}
