//! Two `#[saga]` types in one crate that claim one persisted name: gathering the sagas with
//! `Registry::from_inventory` at start-up fails with an error that names both types and where each
//! is declared, before any manager is built. This file is its own test binary, so its inventory
//! holds exactly the two sagas below.

use std::any::type_name;
use std::sync::atomic::{AtomicBool, Ordering};

use saga_runtime::error::RegistryError;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;

/// The sagas' state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Order {
    accepted: bool,
    archived: bool,
}

#[local_step]
async fn accept(order: &mut Order) -> Result<(), StepError> {
    order.accepted = true;
    Ok(())
}

#[local_step]
async fn archive(order: &mut Order) -> Result<(), StepError> {
    order.archived = true;
    Ok(())
}

/// The line of the first saga's attribute.
const ACCEPT_LINE: u32 = line!() + 1;
#[saga(name = "same", steps = [accept])]
struct AcceptOrder;

/// The line of the second saga's attribute.
const ARCHIVE_LINE: u32 = line!() + 1;
#[saga(name = "same", steps = [archive])]
struct ArchiveOrder;

/// Set once the start-up below gets past the registry.
static MANAGER_BUILDER_REACHED: AtomicBool = AtomicBool::new(false);

/// What a service does at start-up: gather its sagas, then build its manager with them.
async fn start_up() -> Result<SagaManager, Box<dyn std::error::Error + Send + Sync>> {
    let registry = Registry::from_inventory()?;
    MANAGER_BUILDER_REACHED.store(true, Ordering::SeqCst);
    Ok(SagaManager::builder("order")
        .registry(registry)
        .build()
        .await?)
}

#[tokio::test]
async fn two_sagas_with_one_name_stop_the_start_up_and_both_are_named_with_their_places() {
    let error = start_up().await.expect_err("the two sagas share a name");

    assert!(
        !MANAGER_BUILDER_REACHED.load(Ordering::SeqCst),
        "the manager builder must not be reached"
    );
    let error = error
        .downcast::<RegistryError>()
        .unwrap_or_else(|other| panic!("expected a registry error, got {other:?}"));
    let message = error.to_string();
    match *error {
        RegistryError::DuplicateName {
            name,
            first,
            second,
        } => {
            assert_eq!(name, "same");
            // `inventory` yields the sagas in an unspecified order: either may come first.
            let mut named = [first, second];
            named.sort();
            let mut expected = [
                format!(
                    "{} at {}:{ACCEPT_LINE}",
                    type_name::<AcceptOrder>(),
                    file!()
                ),
                format!(
                    "{} at {}:{ARCHIVE_LINE}",
                    type_name::<ArchiveOrder>(),
                    file!()
                ),
            ];
            expected.sort();
            assert_eq!(named, expected);
            assert!(message.contains("two sagas are named `same`"), "{message}");
            for place in &expected {
                assert!(message.contains(place.as_str()), "{message}");
            }
        }
        other => panic!("expected a duplicate name, got {other:?}"),
    }
}

#[test]
fn each_saga_alone_is_valid_and_a_registry_by_hand_refuses_the_second() {
    assert_eq!(AcceptOrder::definition().name(), "same");
    assert_eq!(ArchiveOrder::definition().name(), "same");
    let registry = Registry::empty()
        .with::<AcceptOrder>()
        .expect("one saga named `same`");
    assert_eq!(registry.names().collect::<Vec<_>>(), ["same"]);

    let error = registry
        .with::<ArchiveOrder>()
        .expect_err("a second saga named `same`");
    match error {
        RegistryError::DuplicateName {
            name,
            first,
            second,
        } => {
            assert_eq!(name, "same");
            assert!(first.contains(type_name::<AcceptOrder>()), "{first}");
            assert!(second.contains(type_name::<ArchiveOrder>()), "{second}");
        }
        other => panic!("expected a duplicate name, got {other:?}"),
    }
}
