//! What the generic SQL code needs of an sqlx driver, each bound proved once.
//!
//! Code generic over `DB: sqlx::Database` must show, in every function, that `&mut DB::Connection`
//! is an [`Executor`] and that each type it binds or reads is [`Encode`] or [`Decode`], and
//! [`Type`], for `DB`. Those are higher-ranked `where` clauses whose subject is not `DB`, and Rust
//! does not carry a trait's `where` clauses to the code bounded by the trait: they would be
//! repeated on every function. Here each is stated once, in the blanket impl of a helper trait whose
//! subject is the database itself ([`Bind`], [`Get`], [`Run`]). Those helpers are supertraits of
//! [`Backend`](super::Backend), and supertraits are implied, so generic code asks for `B: Backend`
//! alone, and the compiler checks the bounds once per database, where the impl applies.

use futures_util::future::BoxFuture;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

/// A statement of database `DB`, with the values bound so far.
pub(crate) type Statement<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// The database binds a `T` to a placeholder.
pub(crate) trait Bind<'q, T>: Database {
    /// `statement` with `value` bound to its next placeholder.
    fn bind(statement: Statement<'q, Self>, value: T) -> Statement<'q, Self>;
}

impl<'q, DB: Database, T: 'q + Encode<'q, DB> + Type<DB>> Bind<'q, T> for DB {
    fn bind(statement: Statement<'q, Self>, value: T) -> Statement<'q, Self> {
        statement.bind(value)
    }
}

/// The database reads a `T` from a column.
pub(crate) trait Get<T>: Database {
    /// Column `column` of `row`, as a `T`.
    fn get(row: &Self::Row, column: &str) -> Result<T, sqlx::Error>;
}

impl<DB: Database, T> Get<T> for DB
where
    T: for<'r> Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    fn get(row: &DB::Row, column: &str) -> Result<T, sqlx::Error> {
        row.try_get(column)
    }
}

/// The database runs statements on one of its connections (a pooled one, or a transaction's).
pub(crate) trait Run: Database {
    /// Runs `statement`.
    fn execute<'c, 'q: 'c>(
        statement: Statement<'q, Self>,
        connection: &'c mut Self::Connection,
    ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>>;

    /// Runs `statement` for its first row, if any.
    fn fetch_optional<'c, 'q: 'c>(
        statement: Statement<'q, Self>,
        connection: &'c mut Self::Connection,
    ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>>;

    /// Runs `statement` for all its rows.
    fn fetch_all<'c, 'q: 'c>(
        statement: Statement<'q, Self>,
        connection: &'c mut Self::Connection,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>>;
}

impl<DB: Database> Run for DB
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    fn execute<'c, 'q: 'c>(
        statement: Statement<'q, Self>,
        connection: &'c mut Self::Connection,
    ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>> {
        connection.execute(statement)
    }

    fn fetch_optional<'c, 'q: 'c>(
        statement: Statement<'q, Self>,
        connection: &'c mut Self::Connection,
    ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>> {
        connection.fetch_optional(statement)
    }

    fn fetch_all<'c, 'q: 'c>(
        statement: Statement<'q, Self>,
        connection: &'c mut Self::Connection,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>> {
        connection.fetch_all(statement)
    }
}
