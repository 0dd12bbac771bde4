//! The registry: every saga a service knows, by persisted name, so that a stored execution is
//! resumed with the definition it was made from.

mod erased;

use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) use erased::{ErasedSaga, Typed};

use crate::context::Context;
use crate::definition::{Fingerprint, SagaDefinition};

/// A saga known by its type: its definition is built once and shared.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a saga type",
    label = "a sub-saga must be a `#[saga]` type",
    note = "annotate `{Self}` with `#[saga(...)]`, or implement `SagaType` for it"
)]
pub trait SagaType: 'static {
    /// The saga's context type.
    type Context: Context;

    /// The definition (built once; every call returns the same one).
    fn definition() -> Arc<SagaDefinition<Self::Context>>;
}

/// A saga type as `inventory` collects it: where it was declared and how to build its definition.
///
/// Generated code submits one per `#[saga]` type; by hand:
/// `inventory::submit! { SagaRegistration::new::<MySaga>(concat!(file!(), ":", line!())) }`
/// (with `inventory` taken from `saga_runtime::__private`).
pub struct SagaRegistration {
    location: &'static str,
    type_name: fn() -> &'static str,
    erase: fn() -> Arc<dyn ErasedSaga>,
}

impl SagaRegistration {
    /// The registration of saga type `T`, declared at `location` (`file:line`).
    pub const fn new<T: SagaType>(location: &'static str) -> Self {
        Self {
            location,
            type_name: std::any::type_name::<T>,
            erase: erase::<T>,
        }
    }

    /// The saga type's path (`crate::module::Type`).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    /// Where the type was declared (`file:line`).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn location(&self) -> &'static str {
        self.location
    }
}

impl std::fmt::Debug for SagaRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRegistration")
            .field("type", &(self.type_name)())
            .field("location", &self.location)
            .finish()
    }
}

inventory::collect!(SagaRegistration);

fn erase<T: SagaType>() -> Arc<dyn ErasedSaga> {
    Arc::new(Typed(T::definition()))
}

/// Two sagas claim one persisted name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Stored executions find their saga by name, so names must be unique.
    #[error(
        "two sagas are named `{name}`: `{first}` and `{second}`; stored executions find their saga by name, so rename one (`#[saga(name = \"...\")]`)"
    )]
    DuplicateName {
        /// The name.
        name: String,
        /// The first saga (type and place).
        first: String,
        /// The second saga (type and place).
        second: String,
    },
}

struct Entry {
    saga: Arc<dyn ErasedSaga>,
    origin: String,
}

/// The sagas a service knows, sorted by persisted name.
///
/// Saga types ([`SagaType`], what `#[saga]` implements) are submitted with `inventory` at compile
/// time and gathered by [`Registry::from_inventory`] at start-up. The order `inventory` yields them
/// in is unspecified, so the registry sorts them by name; two sagas with one name are an error that
/// names both places. [`Registry::empty`] with [`Registry::with`] builds one by hand, for tests and
/// for targets where `inventory` cannot run.
///
/// Linking caveat: `inventory` only sees crates that are linked into the binary. A crate of sagas
/// that the binary never references by name must be named with `use my_sagas as _;`.
#[derive(Default)]
pub struct Registry {
    sagas: BTreeMap<String, Entry>,
}

impl Registry {
    /// A registry with no sagas.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every saga type submitted with `inventory` in the crates linked into this binary.
    pub fn from_inventory() -> Result<Self, RegistryError> {
        Self::from_inventory_where(|_| true)
    }

    /// As [`from_inventory`](Self::from_inventory), with only the submitted sagas `filter` accepts
    /// (for a binary that holds the sagas of several services, e.g. by
    /// [`type_name`](SagaRegistration::type_name) prefix). Two accepted sagas with one name are
    /// refused.
    pub fn from_inventory_where(
        filter: impl Fn(&SagaRegistration) -> bool,
    ) -> Result<Self, RegistryError> {
        let mut registry = Self::empty();
        for registration in inventory::iter::<SagaRegistration>
            .into_iter()
            .filter(|r| filter(r))
        {
            let origin = format!("{} at {}", registration.type_name(), registration.location);
            registry.insert((registration.erase)(), origin)?;
        }
        Ok(registry)
    }

    /// Adds saga type `T`.
    pub fn with<T: SagaType>(mut self) -> Result<Self, RegistryError> {
        let origin = std::any::type_name::<T>().to_owned();
        self.insert(erase::<T>(), origin)?;
        Ok(self)
    }

    /// Adds a saga assembled at run time.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn with_definition<C: Context>(
        mut self,
        definition: Arc<SagaDefinition<C>>,
    ) -> Result<Self, RegistryError> {
        let origin = format!("a definition of `{}`", std::any::type_name::<C>());
        self.insert(Arc::new(Typed(definition)), origin)?;
        Ok(self)
    }

    /// The persisted names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sagas.keys().map(String::as_str)
    }

    /// The number of sagas.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn len(&self) -> usize {
        self.sagas.len()
    }

    /// Whether there are none.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn is_empty(&self) -> bool {
        self.sagas.is_empty()
    }

    /// The fingerprint of saga `name`.
    pub fn fingerprint(&self, name: &str) -> Option<Fingerprint> {
        self.sagas.get(name).map(|entry| entry.saga.fingerprint())
    }

    /// Saga `name` as a Mermaid flowchart.
    pub fn to_mermaid(&self, name: &str) -> Option<String> {
        self.sagas.get(name).map(|entry| entry.saga.to_mermaid())
    }

    /// The sagas, for the manager.
    pub(crate) fn erased(&self) -> impl Iterator<Item = Arc<dyn ErasedSaga>> + '_ {
        self.sagas.values().map(|entry| Arc::clone(&entry.saga))
    }

    fn insert(&mut self, saga: Arc<dyn ErasedSaga>, origin: String) -> Result<(), RegistryError> {
        if let Some(known) = self.sagas.get(saga.name()) {
            // The same saga reached twice (a type added by hand and by inventory) is not a clash.
            if known.saga.fingerprint() == saga.fingerprint() && known.origin == origin {
                return Ok(());
            }
            return Err(RegistryError::DuplicateName {
                name: saga.name().to_owned(),
                first: known.origin.clone(),
                second: origin,
            });
        }
        self.sagas
            .insert(saga.name().to_owned(), Entry { saga, origin });
        Ok(())
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.sagas
                    .iter()
                    .map(|(name, entry)| (name, entry.saga.fingerprint())),
            )
            .finish()
    }
}
