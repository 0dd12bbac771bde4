//! What differs between the databases, named: the [`Backend`] trait, and the binding of values to
//! a statement on top of it ([`Values`]).

use futures_util::future::BoxFuture;
use sqlx::{Pool, Transaction};
use uuid::Uuid;

use super::driver::{Bind, Get, Run, Statement};

/// A database the SQL stores run on: SQLite or PostgreSQL (each in its own file of this module).
///
/// The supertraits are the column types the generic code binds and reads (see [`super::driver`]);
/// the items are what the two databases do differently.
pub(crate) trait Backend:
    Run
    + for<'q> Bind<'q, &'q str>
    + for<'q> Bind<'q, Option<&'q str>>
    + for<'q> Bind<'q, String>
    + for<'q> Bind<'q, i64>
    + for<'q> Bind<'q, Option<i64>>
    + for<'q> Bind<'q, bool>
    + Get<String>
    + Get<Option<String>>
    + Get<i64>
    + Get<Option<i64>>
{
    /// The condition of the partial index of the executions recovery has work on, spelled exactly
    /// as the index declares it: SQLite's planner uses a partial index only for a query that
    /// repeats its condition word for word.
    const RECOVERABLE: &'static str;

    /// `statement` with execution or transaction id `id` bound to its next placeholder.
    fn bind_id(statement: Statement<'_, Self>, id: Option<Uuid>) -> Statement<'_, Self>;

    /// The id in column `column` of `row` (`None` for NULL).
    fn id(row: &Self::Row, column: &str) -> Result<Option<Uuid>, sqlx::Error>;

    /// The boolean in column `column` of `row`.
    fn flag(row: &Self::Row, column: &str) -> Result<bool, sqlx::Error>;

    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// A transaction that will write, begun so that a check it reads first is not stale by the
    /// time it writes.
    fn begin_write(
        pool: &Pool<Self>,
    ) -> BoxFuture<'_, Result<Transaction<'static, Self>, sqlx::Error>>;

    /// Takes, in the write transaction on `connection`, the lock that serializes the reservations
    /// of every store sharing the tables, until the transaction ends.
    fn lock_reservations(
        connection: &mut Self::Connection,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>>;
}

/// Binding values to a statement of a [`Backend`], one placeholder after the other (sqlx's own
/// `bind` asks of each value the bounds that [`Backend`] states once).
pub(crate) trait Values<'q, B: Backend> {
    /// The statement with `value` bound next.
    fn value<T>(self, value: T) -> Self
    where
        B: Bind<'q, T>;

    /// The statement with id `id` bound next.
    fn id(self, id: Uuid) -> Self;

    /// The statement with id `id`, or NULL, bound next.
    fn optional_id(self, id: Option<Uuid>) -> Self;
}

impl<'q, B: Backend> Values<'q, B> for Statement<'q, B> {
    fn value<T>(self, value: T) -> Self
    where
        B: Bind<'q, T>,
    {
        B::bind(self, value)
    }

    fn id(self, id: Uuid) -> Self {
        B::bind_id(self, Some(id))
    }

    fn optional_id(self, id: Option<Uuid>) -> Self {
        B::bind_id(self, id)
    }
}
