//! The sagas a manager knows, by persisted name: those of its registry, and those its runs
//! started. A stored execution is resumed with the saga its name finds here.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use super::SagaError;
use crate::context::Context;
use crate::definition::SagaDefinition;
use crate::registry::{ErasedSaga, Typed};

/// The known sagas. A name, once known, keeps its saga: another definition under it is refused
/// unless it has the same fingerprint.
#[derive(Default)]
pub(super) struct KnownSagas {
    by_name: RwLock<HashMap<String, Arc<dyn ErasedSaga>>>,
}

impl KnownSagas {
    /// Makes `definition` known (every run does: the common case, already known, takes only the
    /// read lock).
    pub(super) fn register<C: Context>(
        &self,
        definition: Arc<SagaDefinition<C>>,
    ) -> Result<(), SagaError> {
        if self
            .get(definition.name())
            .is_some_and(|known| known.fingerprint() == definition.fingerprint())
        {
            return Ok(());
        }
        self.insert(Arc::new(Typed(definition)))
    }

    /// Makes `saga` known, unless a saga of another fingerprint has its name.
    pub(super) fn insert(&self, saga: Arc<dyn ErasedSaga>) -> Result<(), SagaError> {
        let mut sagas = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        match sagas.get(saga.name()) {
            Some(known) if known.fingerprint() == saga.fingerprint() => Ok(()),
            Some(known) => Err(SagaError::ConflictingDefinition {
                name: saga.name().to_owned(),
                registered: known.fingerprint(),
                offered: saga.fingerprint(),
            }),
            None => {
                sagas.insert(saga.name().to_owned(), saga);
                Ok(())
            }
        }
    }

    /// The saga named `name`.
    pub(super) fn get(&self, name: &str) -> Option<Arc<dyn ErasedSaga>> {
        self.by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StepError;
    use crate::definition::Saga;
    use crate::execution::testing::{Trail, local_saga};

    async fn other_step(_: &mut Trail) -> Result<(), StepError> {
        Ok(())
    }

    /// A saga with `local_saga`'s name and another step graph.
    fn changed() -> Arc<SagaDefinition<Trail>> {
        Arc::new(
            Saga::new("reserve-only")
                .local_step("reserve")
                .on_execute(other_step)
                .local_step("confirm")
                .on_execute(other_step)
                .commit()
                .expect("a valid saga"),
        )
    }

    #[test]
    fn a_registered_saga_is_found_by_name() {
        let sagas = KnownSagas::default();
        assert!(sagas.get("reserve-only").is_none());
        sagas.register(local_saga()).expect("registers");
        let known = sagas.get("reserve-only").expect("known");
        assert_eq!(known.fingerprint(), local_saga().fingerprint());
    }

    #[test]
    fn the_same_saga_registers_twice() {
        let sagas = KnownSagas::default();
        sagas.register(local_saga()).expect("registers");
        sagas.register(local_saga()).expect("registers again");
        sagas
            .insert(Arc::new(Typed(local_saga())))
            .expect("and erased");
    }

    #[test]
    fn another_step_graph_under_a_known_name_is_refused() {
        let sagas = KnownSagas::default();
        sagas.register(local_saga()).expect("registers");
        let error = sagas.register(changed()).expect_err("conflicts");
        assert!(
            matches!(
                &error,
                SagaError::ConflictingDefinition { name, registered, offered }
                    if name == "reserve-only"
                        && *registered == local_saga().fingerprint()
                        && *offered == changed().fingerprint()
            ),
            "{error:?}"
        );
        assert_eq!(
            sagas.get("reserve-only").expect("kept").fingerprint(),
            local_saga().fingerprint(),
            "the first saga keeps its name"
        );
    }
}
