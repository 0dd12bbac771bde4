//! The row codec of the saga executions table: how an [`ExecutionRecord`] is bound to the statement
//! that stores it and rebuilt from the row that loads it (JSON columns, unit variants stored by
//! their serde names, unsigned integers in signed columns), and the errors that name the bad
//! column.

use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::backend::{Backend, Values};
use super::driver::{Get, Statement};
use crate::definition::Fingerprint;
use crate::error::RepositoryError;
use crate::execution::ExecutionRecord;

/// `statement` (an insert or a compare-and-set update of the whole row) with the values of
/// `record` bound to `$1` .. `$20`: `$1` the id, `$16` the version the record was read at.
pub(super) fn bind_record<'q, B: Backend>(
    statement: Statement<'q, B>,
    record: &'q ExecutionRecord,
) -> Result<Statement<'q, B>, RepositoryError> {
    Ok(statement
        .id(record.id)
        .value(record.saga.as_str())
        .value(record.fingerprint.to_string())
        .value(record.status.as_str())
        .value(record.context.get())
        .value(encode(&record.steps))
        .value(record.paused_step.as_deref())
        .value(record.already_rollback)
        .value(record.user.as_deref())
        .value(encode(&record.headers))
        .value(encode(&record.settings))
        .value(optional_signed(record.deadline_ms, "deadline_ms")?)
        .value(name_of(&record.transaction))
        .value(signed(record.created_at_ms, "created_at_ms")?)
        .value(signed(record.updated_at_ms, "updated_at_ms")?)
        .value(signed(record.version, "version")?)
        .value(encode(&record.pending))
        .value(record.owner.as_deref())
        .value(optional_signed(record.lease_until_ms, "lease_until_ms")?)
        .value(record.needs_recovery()))
}

/// Rebuilds execution `id` from its row; whatever does not decode is
/// `Corrupt`, naming the column.
pub(super) fn decode_record<B: Backend>(
    id: Uuid,
    row: &B::Row,
) -> Result<ExecutionRecord, RepositoryError> {
    let text = |name: &'static str| column::<B, String>(row, id, name);
    let optional_text = |name: &'static str| column::<B, Option<String>>(row, id, name);
    let integer = |name: &'static str| {
        column::<B, i64>(row, id, name).and_then(|value| unsigned(id, name, value))
    };
    let optional_integer = |name: &'static str| {
        column::<B, Option<i64>>(row, id, name)?
            .map(|value| unsigned(id, name, value))
            .transpose()
    };

    let fingerprint = fingerprint(id, text("fingerprint")?)?;
    let context =
        RawValue::from_string(text("context")?).map_err(|error| corrupt(id, "context", error))?;

    Ok(ExecutionRecord {
        id,
        saga: text("saga")?,
        fingerprint,
        status: from_name(id, "status", text("status")?)?,
        context,
        steps: decode(id, "steps", &text("steps")?)?,
        paused_step: optional_text("paused_step")?,
        already_rollback: decoded(id, "already_rollback", B::flag(row, "already_rollback"))?,
        user: optional_text("user")?,
        headers: decode(id, "headers", &text("headers")?)?,
        settings: decode(id, "settings", &text("settings")?)?,
        deadline_ms: optional_integer("deadline_ms")?,
        transaction: from_name(id, "transaction_state", text("transaction_state")?)?,
        version: integer("version")?,
        created_at_ms: integer("created_at_ms")?,
        updated_at_ms: integer("updated_at_ms")?,
        pending: decode(id, "pending", &text("pending")?)?,
        owner: optional_text("owner")?,
        lease_until_ms: optional_integer("lease_until_ms")?,
    })
}

/// The id in column `id` of a listing row.
pub(super) fn row_id<B: Backend>(row: &B::Row) -> Result<Uuid, RepositoryError> {
    decoded(Uuid::nil(), "id", B::id(row, "id"))?
        .ok_or_else(|| corrupt(Uuid::nil(), "id", "a listed execution has no id"))
}

/// Column `name` of the row of execution `id`, as a `T`; a value of another type is `Corrupt`.
fn column<B: Get<T>, T>(row: &B::Row, id: Uuid, name: &'static str) -> Result<T, RepositoryError> {
    decoded(id, name, B::get(row, name))
}

/// A column read from the row of execution `id`: one that does not decode is `Corrupt`, naming the
/// column; any other failure is the driver's.
pub(super) fn decoded<T>(
    id: Uuid,
    name: &'static str,
    read: Result<T, sqlx::Error>,
) -> Result<T, RepositoryError> {
    read.map_err(|error| match error {
        sqlx::Error::ColumnDecode { source, .. } => corrupt(id, name, source),
        other => storage(other),
    })
}

/// The JSON encoding of a record field.
fn encode<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("record fields hold only JSON-encodable data")
}

/// A record field decoded from the JSON in column `name`.
fn decode<T: DeserializeOwned>(
    id: Uuid,
    name: &'static str,
    json: &str,
) -> Result<T, RepositoryError> {
    serde_json::from_str(json).map_err(|error| corrupt(id, name, error))
}

/// The serde name of a unit variant (`"committing"`).
fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => panic!("a unit variant serializes as a string, got {other:?}"),
    }
}

/// The unit variant named `name`, read from column `column`.
fn from_name<T: DeserializeOwned>(
    id: Uuid,
    column: &'static str,
    name: String,
) -> Result<T, RepositoryError> {
    serde_json::from_value(serde_json::Value::String(name))
        .map_err(|error| corrupt(id, column, error))
}

/// A stored integer as the record's `u64`.
pub(super) fn unsigned(id: Uuid, column: &'static str, value: i64) -> Result<u64, RepositoryError> {
    u64::try_from(value).map_err(|_| corrupt(id, column, format!("{value} is negative")))
}

/// A record's `u64` as the signed 64-bit integer both databases store.
pub(super) fn signed(value: u64, field: &str) -> Result<i64, RepositoryError> {
    i64::try_from(value).map_err(|_| {
        RepositoryError::Storage(
            format!("`{field}` = {value} does not fit a 64-bit signed integer column").into(),
        )
    })
}

fn optional_signed(value: Option<u64>, field: &str) -> Result<Option<i64>, RepositoryError> {
    value.map(|value| signed(value, field)).transpose()
}

/// The fingerprint stored in column `fingerprint`: exactly 16 hex digits.
fn fingerprint(id: Uuid, text: String) -> Result<Fingerprint, RepositoryError> {
    let hex = text.len() == 16 && text.bytes().all(|byte| byte.is_ascii_hexdigit());
    hex.then(|| Fingerprint::from_str(&text).ok())
        .flatten()
        .ok_or_else(|| corrupt(id, "fingerprint", format!("{text:?} is not 16 hex digits")))
}

/// A row of execution `id` whose column `column` does not decode.
fn corrupt(id: Uuid, column: &str, reason: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Corrupt {
        id,
        reason: format!("column `{column}`: {reason}"),
    }
}

/// A failure of the database driver.
pub(super) fn storage(error: impl std::error::Error + Send + Sync + 'static) -> RepositoryError {
    RepositoryError::Storage(Box::new(error))
}
