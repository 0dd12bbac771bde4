//! Saga contexts: the state a saga carries from step to step.
//!
//! Any serde type is a context (the typed default). [`SagaContext`] is the dynamic, map-like context of
//! the original library for callers who prefer it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a saga's state must be: serializable (it is stored at every pause) and shareable across tasks.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a saga context",
    label = "a saga context must implement `Serialize`, `DeserializeOwned`, `Send` and `Sync`",
    note = "derive `serde::Serialize` and `serde::Deserialize` on `{Self}`, or use `SagaContext`"
)]
pub trait Context: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Context for T {}

/// A dynamic context: string keys mapped to JSON values.
///
/// Reads never panic: a missing key or a value of another type is a [`ContextError`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SagaContext {
    values: Map<String, Value>,
}

/// A read of a [`SagaContext`] that could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The key is not in the context.
    #[error("the saga context has no key `{0}`")]
    MissingKey(String),
    /// The value under the key is not of the requested type.
    #[error("the saga context value `{key}` is not a `{expected}`: {reason}")]
    WrongType {
        /// The key.
        key: String,
        /// The requested type.
        expected: &'static str,
        /// Why it did not decode.
        reason: String,
    },
    /// The value to insert could not be serialized.
    #[error("the value for `{key}` cannot be stored in a saga context: {reason}")]
    NotSerializable {
        /// The key.
        key: String,
        /// Why it did not encode.
        reason: String,
    },
}

impl SagaContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under `key`, returning the previous raw value if there was one.
    pub fn insert<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<Option<Value>, ContextError> {
        let key = key.into();
        let value = serde_json::to_value(value).map_err(|error| ContextError::NotSerializable {
            key: key.clone(),
            reason: error.to_string(),
        })?;
        Ok(self.values.insert(key, value))
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with<T: Serialize + ?Sized>(
        mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<Self, ContextError> {
        self.insert(key, value)?;
        Ok(self)
    }

    /// Reads the value under `key` as a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T, ContextError> {
        let value = self
            .values
            .get(key)
            .ok_or_else(|| ContextError::MissingKey(key.to_owned()))?;
        T::deserialize(value).map_err(|error| ContextError::WrongType {
            key: key.to_owned(),
            expected: std::any::type_name::<T>(),
            reason: error.to_string(),
        })
    }

    /// The raw JSON value under `key`.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn get_raw(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Removes `key`, returning its value as a `T`.
    pub fn remove<T: DeserializeOwned>(&mut self, key: &str) -> Result<T, ContextError> {
        let value = self
            .values
            .remove(key)
            .ok_or_else(|| ContextError::MissingKey(key.to_owned()))?;
        T::deserialize(&value).map_err(|error| ContextError::WrongType {
            key: key.to_owned(),
            expected: std::any::type_name::<T>(),
            reason: error.to_string(),
        })
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the context is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}
