//! SQLite (feature `sqlite`): a file in write-ahead-log mode, opened by [`SqliteOptions`], and what
//! its SQL does differently ([`Backend`] for [`Sqlite`]).

use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Pool, Row, Sqlite, SqliteConnection, Transaction};
use uuid::Uuid;

use super::backend::Backend;
use super::driver::Statement;

/// The schema, embedded in the binary and applied when a file is opened: the repository's table
/// and the transactional participant store's (`0100_participant_effects.sql`,
/// `0101_participant_commands.sql`, `0102_participant_outcomes.sql`, numbered apart), so a service
/// may keep both in one file; opening either brings both up to date.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How hard SQLite works to keep a stored execution once `store` has returned (its `synchronous`
/// setting; the journal is always a write-ahead log). It is never `OFF`: a saga's state must not be
/// lost once the command it sends may have left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = FULL`: every commit is synced to the disk before `store` returns, so a stored
    /// execution survives a power loss or an operating-system crash. The default.
    #[default]
    Full,
    /// `synchronous = NORMAL`: commits reach the write-ahead log without a sync; the log is synced at
    /// checkpoints. A stored execution survives a crash of the process, but the last commits may be
    /// lost (never corrupted) on a power loss or an operating-system crash. Faster.
    Normal,
}

impl Durability {
    fn synchronous(self) -> SqliteSynchronous {
        match self {
            Self::Full => SqliteSynchronous::Full,
            Self::Normal => SqliteSynchronous::Normal,
        }
    }
}

/// Options for opening a store `S` on a SQLite file: a
/// [`SqliteRepository`](crate::repository::SqliteRepository) or a
/// `SqliteParticipantStore` (the transactional participant's), made by the store's
/// `builder(path)` and finished by its `open()`. The repository and the participant store may share
/// one file.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct SqliteBuilder<S> {
    pub(crate) options: SqliteOptions,
    store: PhantomData<fn() -> S>,
}

impl<S> SqliteBuilder<S> {
    /// The defaults for the file at `path` ([`SqliteOptions::new`]).
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            options: SqliteOptions::new(path),
            store: PhantomData,
        }
    }

    /// How hard to keep what is stored (default: [`Durability::Full`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.options.durability = durability;
        self
    }

    /// The most connections kept open to the file (default 4, at least 1). Reads run in parallel;
    /// SQLite runs one write at a time.
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.options.max_connections = max_connections.max(1);
        self
    }

    /// How long a statement waits for another writer's lock before failing (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.options.busy_timeout = timeout;
        self
    }
}

/// How a SQLite store opens its file: what a [`SqliteBuilder`] sets.
#[derive(Debug, Clone)]
pub(crate) struct SqliteOptions {
    /// The file.
    pub(crate) path: PathBuf,
    /// Its `synchronous` setting.
    pub(crate) durability: Durability,
    /// The most connections kept open to the file (at least 1).
    pub(crate) max_connections: u32,
    /// How long a statement waits for another writer's lock before failing.
    pub(crate) busy_timeout: Duration,
}

impl SqliteOptions {
    /// The defaults for the file at `path`: [`Durability::Full`], 4 connections, a 5 s busy
    /// timeout.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            durability: Durability::default(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// Opens the file (creating it if it is missing) and brings its schema up to date.
    pub(crate) async fn open(&self) -> Result<Pool<Sqlite>, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(self.durability.synchronous())
            .busy_timeout(self.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(self.max_connections)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(pool)
    }
}

impl Backend for Sqlite {
    const RECOVERABLE: &'static str = "recoverable = 1";

    /// Ids are stored as their hyphenated text.
    fn bind_id(statement: Statement<'_, Self>, id: Option<Uuid>) -> Statement<'_, Self> {
        statement.bind(id.map(|id| id.to_string()))
    }

    fn id(row: &SqliteRow, column: &str) -> Result<Option<Uuid>, sqlx::Error> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|text| {
            Uuid::parse_str(&text).map_err(|error| sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: format!("{text:?} is not a UUID: {error}").into(),
            })
        })
        .transpose()
    }

    /// Flags are stored as the integers 0 and 1; anything else is a damaged row.
    fn flag(row: &SqliteRow, column: &str) -> Result<bool, sqlx::Error> {
        match row.try_get::<i64, _>(column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: format!("{other} is not 0 or 1").into(),
            }),
        }
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    /// `BEGIN IMMEDIATE`: the file's write lock from the start (waiting up to the busy timeout for
    /// it). A deferred transaction that reads before it writes could not upgrade its read to a
    /// write once another connection wrote in between (`SQLITE_BUSY`, which the busy timeout does
    /// not wait out), and the check it read would be stale anyway.
    fn begin_write(
        pool: &Pool<Self>,
    ) -> BoxFuture<'_, Result<Transaction<'static, Self>, sqlx::Error>> {
        Box::pin(pool.begin_with("BEGIN IMMEDIATE"))
    }

    /// Nothing to take: the write transaction already excludes every other writer of the file.
    fn lock_reservations(_: &mut SqliteConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(std::future::ready(Ok(())))
    }
}
