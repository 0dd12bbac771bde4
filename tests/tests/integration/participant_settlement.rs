//! The participant store's part in settling a transaction exactly by its decision, on every store:
//! the first decision stands, only the effects handed to the callbacks are removed (an effect
//! staged meanwhile waits for the same decision), and a settlement cut short is listed with its
//! decision until it is finished.

use std::time::{Duration, SystemTime};

use saga_runtime::transactional::{Outcome, Staging};
use serde_json::json;
use uuid::Uuid;

use super::transactional_participant::{Backend, Place, Store, answer, effect};

/// Runs each test body `name(backend)` on every store, as `name::in_memory`, `name::sqlite` and
/// `name::postgres`.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn in_memory() {
                super::$name(super::Backend::Memory).await;
            }

            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    )*};
}

on_every_store!(
    the_first_decision_for_a_transaction_stands,
    only_the_effects_handed_to_the_callbacks_are_removed,
    a_settlement_cut_short_is_listed_with_its_decision_until_it_finishes,
);

/// Stages one effect under `key` in `transaction`, by a command of its own.
async fn stage(store: &Store, transaction: Uuid, key: &str) {
    let staged = store
        .stage(
            transaction,
            Uuid::new_v4(),
            &[effect("BookFlight", key, json!({ "book": key }))],
            &answer(json!(key)),
        )
        .await
        .expect("stages");
    assert_eq!(staged, Staging::Staged);
}

fn in_an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

async fn the_first_decision_for_a_transaction_stands(backend: Backend) {
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let store = place.open().await;
    let transaction = Uuid::new_v4();
    assert_eq!(store.outcome(transaction).await.expect("reads"), None);
    let first = store.decide(transaction, Outcome::Committed).await;
    assert_eq!(first.expect("decides"), Outcome::Committed);
    let second = store.decide(transaction, Outcome::Rejected).await;
    assert_eq!(
        second.expect("decides"),
        Outcome::Committed,
        "never the other way"
    );
    assert_eq!(
        store.outcome(transaction).await.expect("reads"),
        Some(Outcome::Committed)
    );
    store.close().await;
    place.remove().await;
}

async fn only_the_effects_handed_to_the_callbacks_are_removed(backend: Backend) {
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let store = place.open().await;
    let transaction = Uuid::new_v4();
    stage(&store, transaction, "seat:1A").await;
    store.reserve(transaction).await.expect("reserves");
    store
        .decide(transaction, Outcome::Rejected)
        .await
        .expect("decides");
    let handed = store.staged(transaction).await.expect("reads");
    // A command of the transaction handled while the callbacks run.
    stage(&store, transaction, "refund:1A").await;

    let left = store.remove_settled(transaction, handed.len()).await;
    assert_eq!(left.expect("removes"), 1);
    let waiting = store.staged(transaction).await.expect("reads");
    assert_eq!(
        waiting,
        [effect(
            "BookFlight",
            "refund:1A",
            json!({ "book": "refund:1A" })
        )]
    );
    let reserved = store
        .expired_reservations(in_an_hour())
        .await
        .expect("reads");
    assert_eq!(reserved, [transaction], "unfinished: the reservation stays");

    let left = store.remove_settled(transaction, waiting.len()).await;
    assert_eq!(left.expect("removes"), 0);
    assert!(store.staged(transaction).await.expect("reads").is_empty());
    let reserved = store
        .expired_reservations(in_an_hour())
        .await
        .expect("reads");
    assert!(reserved.is_empty(), "finished: the reservation is gone");
    store.close().await;
    place.remove().await;
}

async fn a_settlement_cut_short_is_listed_with_its_decision_until_it_finishes(backend: Backend) {
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let store = place.open().await;
    let (cut_short, reserved_only, finished) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    stage(&store, cut_short, "seat:2B").await;
    store.reserve(cut_short).await.expect("reserves");
    store
        .decide(cut_short, Outcome::Committed)
        .await
        .expect("decides");
    // Decided later (the stores keep the time to the millisecond); a reservation is all that is
    // left of it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.reserve(reserved_only).await.expect("reserves");
    store
        .decide(reserved_only, Outcome::Rejected)
        .await
        .expect("decides");
    store
        .decide(finished, Outcome::Rejected)
        .await
        .expect("decides");

    let unfinished = store.unfinished(in_an_hour()).await.expect("reads");
    assert_eq!(
        unfinished,
        [
            (cut_short, Outcome::Committed),
            (reserved_only, Outcome::Rejected)
        ],
        "oldest decision first; a transaction decided with nothing left is not listed"
    );
    let past = SystemTime::now() - Duration::from_secs(60);
    assert!(store.unfinished(past).await.expect("reads").is_empty());

    store.remove_settled(cut_short, 1).await.expect("removes");
    store
        .remove_settled(reserved_only, 0)
        .await
        .expect("removes");
    assert!(
        store
            .unfinished(in_an_hour())
            .await
            .expect("reads")
            .is_empty()
    );
    store.close().await;
    place.remove().await;
}
