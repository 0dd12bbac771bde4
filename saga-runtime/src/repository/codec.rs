//! The column encodings shared by the SQL repositories: JSON columns, unit variants stored by their
//! serde names, unsigned integers in signed columns, and the errors that name the bad column.

use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::definition::Fingerprint;
use crate::error::RepositoryError;

/// The JSON encoding of a record field.
pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("record fields hold only JSON-encodable data")
}

/// A record field decoded from the JSON in column `name`.
pub(super) fn decode<T: DeserializeOwned>(
    id: Uuid,
    name: &'static str,
    json: &str,
) -> Result<T, RepositoryError> {
    serde_json::from_str(json).map_err(|error| corrupt(id, name, error))
}

/// The serde name of a unit variant (`"committing"`).
pub(super) fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => panic!("a unit variant serializes as a string, got {other:?}"),
    }
}

/// The unit variant named `name`, read from column `column`.
pub(super) fn from_name<T: DeserializeOwned>(
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

/// The fingerprint stored in column `fingerprint`: exactly 16 hex digits.
pub(super) fn fingerprint(id: Uuid, text: String) -> Result<Fingerprint, RepositoryError> {
    let hex = text.len() == 16 && text.bytes().all(|byte| byte.is_ascii_hexdigit());
    hex.then(|| Fingerprint::from_str(&text).ok())
        .flatten()
        .ok_or_else(|| corrupt(id, "fingerprint", format!("{text:?} is not 16 hex digits")))
}

/// A row of execution `id` whose column `column` does not decode.
pub(super) fn corrupt(id: Uuid, column: &str, reason: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Corrupt {
        id,
        reason: format!("column `{column}`: {reason}"),
    }
}

/// A failure of the database driver.
pub(super) fn storage(error: impl std::error::Error + Send + Sync + 'static) -> RepositoryError {
    RepositoryError::Storage(Box::new(error))
}
