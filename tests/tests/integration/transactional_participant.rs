//! The participant side of the two-phase commit: `TransactionalParticipant` stages the effects of
//! its commands under the command's innermost transaction and applies them (`on_commit`) or drops
//! them (`on_reject`) when the saga's committer settles the transaction; conflicting reservations,
//! panicking handlers, unsettled reservations, garbage messages, redelivered commands and graceful
//! shutdown. The tests of the participant run on every store (in memory, SQLite, PostgreSQL, the
//! last against the server named by `SAGA_TEST_POSTGRES_URL`, skipped without one outside CI); the
//! durable stores also keep their state across reopening, and PostgreSQL stores sharing one schema
//! stay consistent when they reserve or stage at once.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::FutureExt;
use saga_runtime::broker::{Acknowledge, Delivery, DeliverySource, Subscription};
use saga_runtime::broker::{BrokerMessage, header};
use saga_runtime::committer::{Phase, TransactionCommitter};
use saga_runtime::error::BrokerError;
use saga_runtime::prelude::*;
use saga_runtime::transactional::{
    CommandAnswer, CommandContext, CommandError, InMemoryParticipantStore, Outcome,
    ParticipantStore, ParticipantStoreError, PostgresParticipantStore, Settled,
    SqliteParticipantStore, StagedEffect, Staging, TransactionalParticipant,
    TransactionalParticipantBuilder,
};
use saga_runtime::wiring::*;
use saga_tests::{Harness, TestDatabase, eventually, wait_until};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use uuid::Uuid;

/// The stores the tests run on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// The tests `sqlite` and `postgres` of test body `name(backend)`, inside its module.
macro_rules! durable_store_tests {
    ($name:ident) => {
        #[tokio::test]
        async fn sqlite() {
            super::$name(super::Backend::Sqlite).await;
        }

        #[tokio::test]
        async fn postgres() {
            super::$name(super::Backend::Postgres).await;
        }
    };
}

/// Runs each test body `name(backend)` on every store, as the tests `name::in_memory`,
/// `name::sqlite` and `name::postgres`.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn in_memory() {
                super::$name(super::Backend::Memory).await;
            }

            durable_store_tests!($name);
        }
    )*};
}

/// Runs each test body `name(backend)` on the stores that outlive the process, as the tests
/// `name::sqlite` and `name::postgres`.
macro_rules! on_durable_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            durable_store_tests!($name);
        }
    )*};
}

/// Where one service's store lives: a store opened on it again finds what the earlier ones kept.
pub(super) enum Place {
    Memory(Arc<InMemoryParticipantStore>),
    Sqlite(PathBuf),
    Postgres(TestDatabase),
}

/// A store opened on a [`Place`].
#[derive(Clone)]
pub(super) enum Store {
    Memory(Arc<InMemoryParticipantStore>),
    Sqlite(Arc<SqliteParticipantStore>),
    Postgres(Arc<PostgresParticipantStore>),
}

impl Place {
    /// A fresh place; `None` (the test returns) when there is no PostgreSQL server outside CI.
    pub(super) async fn new(backend: Backend) -> Option<Self> {
        Some(match backend {
            Backend::Memory => Self::Memory(Arc::new(InMemoryParticipantStore::new())),
            Backend::Sqlite => Self::Sqlite(temporary_file("participant-store")),
            Backend::Postgres => Self::Postgres(TestDatabase::connect().await?),
        })
    }

    /// A store on it: the same one in memory, a new connection to the file or the schema otherwise.
    pub(super) async fn open(&self) -> Store {
        match self {
            Self::Memory(store) => Store::Memory(Arc::clone(store)),
            Self::Sqlite(path) => Store::Sqlite(Arc::new(
                SqliteParticipantStore::open(path).await.expect("opens"),
            )),
            Self::Postgres(db) => Store::Postgres(Arc::new(db.participant_store().await)),
        }
    }

    /// Deletes the file or drops the schema.
    pub(super) async fn remove(self) {
        match self {
            Self::Memory(_) => {}
            Self::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Self::Postgres(db) => db.drop().await,
        }
    }
}

impl Store {
    fn shared(&self) -> Arc<dyn ParticipantStore> {
        match self {
            Self::Memory(store) => store.clone(),
            Self::Sqlite(store) => store.clone(),
            Self::Postgres(store) => store.clone(),
        }
    }

    /// Removes `transaction`'s staged effects and reservation, returning the effects, without
    /// recording a decision.
    async fn take(&self, transaction: Uuid) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        let effects = self.staged(transaction).await?;
        self.remove_settled(transaction, effects.len()).await?;
        Ok(effects)
    }

    /// Settles `transaction` as `outcome` with nobody called: the decision, then the removal.
    async fn settle(
        &self,
        transaction: Uuid,
        outcome: Outcome,
    ) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        self.decide(transaction, outcome).await?;
        self.take(transaction).await
    }

    /// Closes its connections (nothing in memory).
    pub(super) async fn close(&self) {
        match self {
            Self::Memory(_) => {}
            Self::Sqlite(store) => store.close().await,
            Self::Postgres(store) => store.close().await,
        }
    }
}

impl Deref for Store {
    type Target = dyn ParticipantStore;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Memory(store) => &**store,
            Self::Sqlite(store) => &**store,
            Self::Postgres(store) => &**store,
        }
    }
}

fn temporary_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{name}-{}.db", Uuid::new_v4().simple()))
}

/// The saga's state: a trip booked with the `flight` and `hotel` services.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Trip {
    seat: String,
    room: String,
    /// What the last step charges; the flight service refuses more than 100.
    amount: u64,
    flight_booking: Option<String>,
    hotel_booking: Option<String>,
}

async fn book_flight(trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("BookFlight", &json!({ "seat": trip.seat }))
}

async fn flight_booked(trip: &mut Trip, reply: SagaResponse) -> Result<(), StepError> {
    trip.flight_booking = Some(reply.content()?);
    Ok(())
}

async fn book_hotel(trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("BookHotel", &json!({ "room": trip.room }))
}

async fn hotel_booked(trip: &mut Trip, reply: SagaResponse) -> Result<(), StepError> {
    trip.hotel_booking = Some(reply.content()?);
    Ok(())
}

async fn cancel_hotel(trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CancelHotel", &json!({ "room": trip.room }))
}

async fn charge(trip: &Trip) -> Result<SagaRequest, StepError> {
    SagaRequest::new("ChargeCard", &json!({ "amount": trip.amount }))
}

/// `flight` (BookFlight), `hotel` (BookHotel, compensated by CancelHotel), `charge` (ChargeCard on
/// the flight service).
fn trip_saga() -> Arc<SagaDefinition<Trip>> {
    Arc::new(
        Saga::new("book-trip")
            .remote_step("flight")
            .on_execute(book_flight)
            .on_success(flight_booked)
            .remote_step("hotel")
            .on_execute(book_hotel)
            .on_success(hotel_booked)
            .on_failure(cancel_hotel)
            .remote_step("charge")
            .on_execute(charge)
            .commit()
            .expect("a valid saga"),
    )
}

fn trip(seat: &str, amount: u64) -> Trip {
    Trip {
        seat: seat.to_owned(),
        room: format!("room-for-{seat}"),
        amount,
        ..Trip::default()
    }
}

/// What the callbacks saw: (service, "commit" or "reject", the settled transaction).
type Journal = Arc<Mutex<Vec<(String, &'static str, Settled)>>>;

fn entries(journal: &Journal) -> Vec<(String, &'static str, Settled)> {
    journal
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Adds callbacks that record every commit and reject of `service` in `journal`.
fn journaled(
    builder: TransactionalParticipantBuilder,
    service: &str,
    journal: &Journal,
) -> TransactionalParticipantBuilder {
    let (committed, rejected) = (Arc::clone(journal), Arc::clone(journal));
    let (on_commit, on_reject) = (service.to_owned(), service.to_owned());
    builder
        .on_commit(move |settled| {
            let (journal, service) = (Arc::clone(&committed), on_commit.clone());
            async move {
                journal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((service, "commit", settled));
            }
        })
        .on_reject(move |settled| {
            let (journal, service) = (Arc::clone(&rejected), on_reject.clone());
            async move {
                journal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((service, "reject", settled));
            }
        })
}

#[derive(Debug, Deserialize)]
struct SeatRequest {
    seat: String,
}

/// The flight service: BookFlight stages `seat:{seat}`, ChargeCard stages `card` and refuses more
/// than 100, Explode panics.
fn flight(
    harness: &Harness,
    store: Arc<dyn ParticipantStore>,
    journal: &Journal,
) -> TransactionalParticipantBuilder {
    let builder = TransactionalParticipant::builder("flight", harness.broker(), store)
        .command(
            "BookFlight",
            |context: CommandContext, request: SeatRequest| async move {
                context.stage(
                    format!("seat:{}", request.seat),
                    json!({ "book": request.seat }),
                );
                Ok::<_, CommandError>(format!("F-{}", request.seat))
            },
        )
        .command(
            "ChargeCard",
            |context: CommandContext, request: Value| async move {
                let amount = request["amount"].as_u64().unwrap_or_default();
                if amount > 100 {
                    return Err(CommandError::business(format!(
                        "{amount} is over the limit"
                    )));
                }
                context.stage("card", json!({ "charge": amount }));
                Ok(Value::Null)
            },
        )
        .command(
            "Explode",
            |_context: CommandContext, request: Value| async move {
                if request["explode"] == json!(true) {
                    panic!("the flight service exploded");
                }
                Ok::<_, CommandError>(Value::Null)
            },
        );
    journaled(builder, "flight", journal)
}

/// The hotel service: BookHotel stages `room:{room}`; CancelHotel counts in `cancelled`.
fn hotel(
    harness: &Harness,
    store: Arc<dyn ParticipantStore>,
    journal: &Journal,
    cancelled: &Arc<Mutex<u32>>,
) -> TransactionalParticipantBuilder {
    let cancelled = Arc::clone(cancelled);
    let builder = TransactionalParticipant::builder("hotel", harness.broker(), store)
        .command(
            "BookHotel",
            |context: CommandContext, request: Value| async move {
                let room = request["room"].as_str().unwrap_or_default().to_owned();
                context.stage(format!("room:{room}"), json!({ "book": room }));
                Ok::<_, CommandError>(format!("H-{room}"))
            },
        )
        .command(
            "CancelHotel",
            move |_context: CommandContext, _request: Value| {
                let cancelled = Arc::clone(&cancelled);
                async move {
                    *cancelled.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    Ok::<_, CommandError>(Value::Null)
                }
            },
        );
    journaled(builder, "hotel", journal)
}

struct Services {
    flight: TransactionalParticipant,
    hotel: TransactionalParticipant,
    flight_store: Store,
    hotel_store: Store,
    /// Where the stores live: one place per service.
    places: Vec<Place>,
    journal: Journal,
    cancelled: Arc<Mutex<u32>>,
    /// The saga's own service, taking part in its transactions.
    _order: Vec<saga_testkit::ScriptedParticipant>,
}

/// The flight and hotel services, each with a store of its own on `backend`; `None` when the
/// backend is missing (the test returns).
async fn services(harness: &Harness, backend: Backend) -> Option<Services> {
    let journal = Journal::default();
    let cancelled = Arc::new(Mutex::new(0));
    let places = vec![Place::new(backend).await?, Place::new(backend).await?];
    let flight_store = places[0].open().await;
    let hotel_store = places[1].open().await;
    Some(Services {
        flight: flight(harness, flight_store.shared(), &journal)
            .spawn()
            .await
            .expect("flight starts"),
        hotel: hotel(harness, hotel_store.shared(), &journal, &cancelled)
            .spawn()
            .await
            .expect("hotel starts"),
        flight_store,
        hotel_store,
        places,
        journal,
        cancelled,
        _order: harness.accepting(&["order"]).await,
    })
}

impl Services {
    /// Stops the services and removes their stores.
    async fn finish(self) {
        self.flight.shutdown().await;
        self.hotel.shutdown().await;
        self.flight_store.close().await;
        self.hotel_store.close().await;
        for place in self.places {
            place.remove().await;
        }
    }
}

pub(super) fn effect(topic: &str, key: &str, effect: Value) -> StagedEffect {
    StagedEffect {
        topic: topic.to_owned(),
        key: key.to_owned(),
        effect,
    }
}

fn settled(transaction: Uuid, effects: Vec<StagedEffect>) -> Settled {
    Settled {
        transaction,
        effects,
    }
}

async fn run(harness: &Harness, trip: Trip, options: RunOptions) -> SagaExecution<Trip> {
    harness
        .manager
        .run(trip_saga(), trip, options.raise_on_error(false))
        .await
        .expect("the saga runs")
        .execution()
        .expect("the execution is returned")
}

fn sorted(
    mut journal: Vec<(String, &'static str, Settled)>,
) -> Vec<(String, &'static str, Settled)> {
    journal.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    journal
}

async fn a_finished_saga_commits_the_staged_effects_of_both_participants_once(backend: Backend) {
    let harness = Harness::new().await;
    let Some(services) = services(&harness, backend).await else {
        return;
    };

    let execution = run(&harness, trip("12A", 40), RunOptions::new()).await;

    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(execution.context().flight_booking.as_deref(), Some("F-12A"));
    assert_eq!(
        execution.context().hotel_booking.as_deref(),
        Some("H-room-for-12A")
    );
    let id = execution.id();
    // The commit replies were awaited by the manager: the callbacks already ran.
    assert_eq!(
        sorted(entries(&services.journal)),
        [
            (
                "flight".to_owned(),
                "commit",
                settled(
                    id,
                    vec![
                        effect("BookFlight", "seat:12A", json!({ "book": "12A" })),
                        effect("ChargeCard", "card", json!({ "charge": 40 })),
                    ]
                )
            ),
            (
                "hotel".to_owned(),
                "commit",
                settled(
                    id,
                    vec![effect(
                        "BookHotel",
                        "room:room-for-12A",
                        json!({ "book": "room-for-12A" })
                    )]
                )
            ),
        ]
    );
    for store in [&services.flight_store, &services.hotel_store] {
        assert!(store.staged(id).await.expect("readable").is_empty());
    }
    // A redelivered commit applies nothing twice.
    let committer = committer(&harness);
    let report = committer
        .phase(
            Phase::Commit,
            &[(id, "flight".to_owned()), (id, "hotel".to_owned())],
        )
        .await
        .expect("the broker works");
    assert!(report.all_accepted(), "{report:?}");
    assert_eq!(entries(&services.journal).len(), 2);
    assert_eq!(services.flight.stats().committed, 1);
    assert_eq!(services.hotel.stats().committed, 1);
    assert_eq!(services.flight.stats().rejected, 0);
    services.finish().await;
}

async fn a_refused_step_compensates_and_both_participants_reject(backend: Backend) {
    let harness = Harness::new().await;
    let Some(services) = services(&harness, backend).await else {
        return;
    };

    let execution = run(&harness, trip("14C", 500), RunOptions::new()).await;

    assert_eq!(execution.status(), SagaStatus::Errored);
    let id = execution.id();
    eventually(|| {
        *services
            .cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            == 1
    })
    .await;
    eventually(|| entries(&services.journal).len() == 2).await;
    assert_eq!(
        sorted(entries(&services.journal)),
        [
            (
                "flight".to_owned(),
                "reject",
                // The refused charge staged nothing.
                settled(
                    id,
                    vec![effect("BookFlight", "seat:14C", json!({ "book": "14C" }))]
                )
            ),
            (
                "hotel".to_owned(),
                "reject",
                settled(
                    id,
                    vec![effect(
                        "BookHotel",
                        "room:room-for-14C",
                        json!({ "book": "room-for-14C" })
                    )]
                )
            ),
        ]
    );
    for store in [&services.flight_store, &services.hotel_store] {
        assert!(store.staged(id).await.expect("readable").is_empty());
    }
    assert_eq!(services.flight.stats().committed, 0);
    assert_eq!(services.hotel.stats().committed, 0);
    services.finish().await;
}

async fn a_conflicting_reservation_rejects_the_second_saga_and_the_first_commits(backend: Backend) {
    let harness = Harness::new().await;
    let Some(services) = services(&harness, backend).await else {
        return;
    };
    let first = run(
        &harness,
        trip("1A", 10),
        RunOptions::new().autocommit(false),
    )
    .await;
    let second = run(
        &harness,
        trip("1A", 20),
        RunOptions::new().autocommit(false),
    )
    .await;
    assert_eq!(first.status(), SagaStatus::Finished);
    assert_eq!(second.status(), SagaStatus::Finished);
    assert!(entries(&services.journal).is_empty(), "nothing settled yet");
    // The first saga's flight reservation is held while the second commits.
    let committer = committer(&harness);
    let held = committer
        .phase(Phase::Reserve, &[(first.id(), "flight".to_owned())])
        .await
        .expect("the broker works");
    assert!(held.all_accepted(), "{held:?}");

    let error = harness
        .manager
        .commit(second.id())
        .await
        .expect_err("the reservation conflicts");

    assert!(
        matches!(
            &error,
            SagaError::Execution(ExecutionError::CommitFailed { .. })
        ),
        "{error:?}"
    );
    assert_eq!(services.flight.stats().refused, 1);
    let rejected = sorted(entries(&services.journal));
    assert_eq!(
        rejected
            .iter()
            .map(|(service, phase, settled)| (service.as_str(), *phase, settled.transaction))
            .collect::<Vec<_>>(),
        [
            ("flight", "reject", second.id()),
            ("hotel", "reject", second.id()),
        ]
    );
    assert_eq!(
        *services
            .cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
        1,
        "the second saga was compensated"
    );

    // The first saga reserves again (answered as before) and commits.
    assert_eq!(
        harness.manager.commit(first.id()).await.expect("commits"),
        SagaStatus::Finished
    );
    let committed = entries(&services.journal)
        .into_iter()
        .filter(|(_, phase, _)| *phase == "commit")
        .map(|(service, _, settled)| (service, settled.transaction, settled.effects.len()))
        .collect::<Vec<_>>();
    let mut committed = committed;
    committed.sort();
    assert_eq!(
        committed,
        [
            ("flight".to_owned(), first.id(), 2),
            ("hotel".to_owned(), first.id(), 1),
        ]
    );
    assert_eq!(services.flight.stats().reserved, 2, "held, then repeated");
    services.finish().await;
}

/// Subscribes to a private reply topic.
async fn probe(harness: &Harness) -> (String, Subscription) {
    let topic = format!("probeReply.{}", Uuid::new_v4().simple());
    let subscription = harness
        .broker()
        .subscribe(&topic)
        .await
        .expect("subscribes");
    (topic, subscription)
}

async fn next_reply(subscription: &mut Subscription) -> BrokerMessage {
    let delivery = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("a reply within 5 s")
        .expect("the subscription is open");
    let message = delivery.message().clone();
    delivery.ack().await.expect("acknowledged");
    message
}

/// Books `seat` on the flight service in `transaction` (answers on `reply_topic`, read from
/// `replies`), and checks that it succeeded.
async fn book_seat(
    harness: &Harness,
    reply_topic: &str,
    replies: &mut Subscription,
    transaction: Uuid,
    seat: &str,
) {
    let command = command_to(
        "BookFlight",
        &transaction.to_string(),
        reply_topic,
        json!({ "seat": seat }),
    );
    harness.broker.publish(command).await.expect("published");
    assert_eq!(
        next_reply(replies).await.status,
        Some(SagaResponseStatus::Success)
    );
}

/// The `order` service's committer on the harness's broker (2 s per phase).
fn committer(harness: &Harness) -> TransactionCommitter {
    TransactionCommitter::new(harness.broker(), "order", Duration::from_secs(2))
}

fn command_to(topic: &str, transactions: &str, reply_to: &str, payload: Value) -> BrokerMessage {
    BrokerMessage::new(topic, payload)
        .with_header(header::TRANSACTIONS, transactions)
        .with_header(header::SAGA, Uuid::new_v4().to_string())
        .with_header(header::RELATED_SERVICES, "order")
        .with_reply_to(reply_to)
}

async fn a_panicking_handler_replies_system_error_and_the_participant_goes_on(backend: Backend) {
    let harness = Harness::new().await;
    let Some(services) = services(&harness, backend).await else {
        return;
    };
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4();
    let command = command_to(
        "Explode",
        &transaction.to_string(),
        &reply_topic,
        json!({ "explode": true }),
    );

    harness
        .broker
        .publish(command.clone())
        .await
        .expect("published");

    let reply = next_reply(&mut replies).await;
    assert_eq!(reply.status, Some(SagaResponseStatus::SystemError));
    assert_eq!(reply.correlation_id, Some(command.id));
    assert_eq!(
        reply.headers.get(header::SAGA),
        command.headers.get(header::SAGA)
    );
    assert_eq!(
        reply
            .headers
            .get(header::RELATED_SERVICES)
            .map(String::as_str),
        Some("flight,order")
    );
    assert!(
        reply
            .payload
            .as_str()
            .is_some_and(|text| text.contains("exploded")),
        "{:?}",
        reply.payload
    );
    assert!(
        services
            .flight_store
            .staged(transaction)
            .await
            .expect("readable")
            .is_empty()
    );

    // The same topic task still answers.
    let execution = run(&harness, trip("2B", 10), RunOptions::new()).await;
    assert_eq!(execution.status(), SagaStatus::Finished);
    services.finish().await;
}

async fn an_unsettled_reservation_is_rejected_after_the_timeout(backend: Backend) {
    let harness = Harness::new().await;
    let journal = Journal::default();
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let store = place.open().await;
    let flight = flight(&harness, store.shared(), &journal)
        .reservation_timeout(Duration::from_secs(1))
        .spawn()
        .await
        .expect("flight starts");
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4();
    book_seat(&harness, &reply_topic, &mut replies, transaction, "3C").await;
    let committer = committer(&harness);
    let reserved = committer
        .phase(Phase::Reserve, &[(transaction, "flight".to_owned())])
        .await
        .expect("the broker works");
    assert!(reserved.all_accepted(), "{reserved:?}");
    assert!(entries(&journal).is_empty(), "not yet expired");

    eventually(|| flight.stats().expired == 1).await;

    assert_eq!(
        entries(&journal),
        [(
            "flight".to_owned(),
            "reject",
            settled(
                transaction,
                vec![effect("BookFlight", "seat:3C", json!({ "book": "3C" }))]
            )
        )]
    );
    assert!(
        store
            .staged(transaction)
            .await
            .expect("readable")
            .is_empty()
    );
    // A commit that comes too late applies nothing, and says so.
    let late = committer
        .phase(Phase::Commit, &[(transaction, "flight".to_owned())])
        .await
        .expect("the broker works");
    assert_eq!(late.refused, ["flight"], "{late:?}");
    assert_eq!(entries(&journal).len(), 1);
    assert_eq!(flight.stats().committed, 0);
    flight.shutdown().await;
    store.close().await;
    place.remove().await;
}

async fn a_reserve_redelivered_after_the_commit_leaves_no_reservation(backend: Backend) {
    let harness = Harness::new().await;
    let journal = Journal::default();
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let store = place.open().await;
    let flight = flight(&harness, store.shared(), &journal)
        .spawn()
        .await
        .expect("flight starts");
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4();
    book_seat(&harness, &reply_topic, &mut replies, transaction, "7A").await;
    let committer = committer(&harness);
    let services = [(transaction, "flight".to_owned())];
    for phase in [Phase::Reserve, Phase::Commit, Phase::Reserve] {
        let report = committer
            .phase(phase, &services)
            .await
            .expect("the broker works");
        assert!(report.all_accepted(), "{phase:?}: {report:?}");
    }
    // The late reserve (a redelivery whose first delivery was answered before the commit) finds
    // nothing staged: nothing is reserved, so nothing is left for the sweeper to reject.
    assert!(
        store
            .expired_reservations(SystemTime::now() + Duration::from_secs(3600))
            .await
            .expect("readable")
            .is_empty()
    );
    assert_eq!(entries(&journal).len(), 1, "committed once");
    let stats = flight.stats();
    assert_eq!((stats.committed, stats.expired), (1, 0), "{stats:?}");
    flight.shutdown().await;
    store.close().await;
    place.remove().await;
}

async fn a_nested_command_joins_the_innermost_transaction(backend: Backend) {
    let harness = Harness::new().await;
    let Some(services) = services(&harness, backend).await else {
        return;
    };
    let (reply_topic, mut replies) = probe(&harness).await;
    let (outer, inner) = (Uuid::new_v4(), Uuid::new_v4());
    let command = command_to(
        "BookFlight",
        &format!("{outer},{inner}"),
        &reply_topic,
        json!({ "seat": "4D" }),
    );
    harness.broker.publish(command).await.expect("published");
    let reply = next_reply(&mut replies).await;
    assert_eq!(reply.status, Some(SagaResponseStatus::Success));
    assert_eq!(reply.payload, json!("F-4D"));

    assert!(
        services
            .flight_store
            .staged(outer)
            .await
            .expect("readable")
            .is_empty()
    );
    assert_eq!(
        services.flight_store.staged(inner).await.expect("readable"),
        [effect("BookFlight", "seat:4D", json!({ "book": "4D" }))]
    );
    let committer = committer(&harness);
    committer
        .commit(&[(outer, "flight".to_owned())])
        .await
        .expect("the outer transaction commits");
    assert!(
        entries(&services.journal).is_empty(),
        "the outer one staged nothing"
    );
    committer
        .commit(&[(inner, "flight".to_owned())])
        .await
        .expect("the inner transaction commits");
    assert_eq!(
        entries(&services.journal),
        [(
            "flight".to_owned(),
            "commit",
            settled(
                inner,
                vec![effect("BookFlight", "seat:4D", json!({ "book": "4D" }))]
            )
        )]
    );
    services.finish().await;
}

async fn garbage_messages_are_acknowledged_and_change_nothing(backend: Backend) {
    let harness = Harness::new().await;
    let Some(services) = services(&harness, backend).await else {
        return;
    };
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4();
    let garbage = [
        // No `transactions` header.
        BrokerMessage::new("BookFlight", json!({ "seat": "5E" })).with_reply_to(&reply_topic),
        // A malformed one.
        command_to(
            "BookFlight",
            "not-a-uuid",
            &reply_topic,
            json!({ "seat": "5E" }),
        ),
        // A payload the request type does not decode.
        command_to(
            "BookFlight",
            &transaction.to_string(),
            &reply_topic,
            json!({ "row": 5 }),
        ),
        // Transaction messages naming no transaction.
        BrokerMessage::new("_ReserveFlightTransaction", json!(42)).with_reply_to(&reply_topic),
        BrokerMessage::new("_CommitFlightTransaction", json!("nope"))
            .with_header(header::TRANSACTION, "nope")
            .with_reply_to(&reply_topic),
    ];
    for message in garbage {
        harness.broker.publish(message).await.expect("published");
    }
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(next_reply(&mut replies).await.status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            Some(SagaResponseStatus::Error),
            Some(SagaResponseStatus::Error),
            Some(SagaResponseStatus::SystemError),
            Some(SagaResponseStatus::SystemError),
            Some(SagaResponseStatus::SystemError),
        ]
    );
    // Without a reply topic, garbage is still acknowledged and counted.
    harness
        .broker
        .publish(BrokerMessage::new("_RejectFlightTransaction", Value::Null))
        .await
        .expect("published");
    eventually(|| services.flight.stats().undecodable == 6).await;

    assert!(
        services
            .flight_store
            .staged(transaction)
            .await
            .expect("readable")
            .is_empty()
    );
    assert!(entries(&services.journal).is_empty());
    let stats = services.flight.stats();
    assert_eq!((stats.reserved, stats.committed, stats.rejected), (0, 0, 0));
    // And the participant still works.
    let execution = run(&harness, trip("5E", 10), RunOptions::new()).await;
    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(entries(&services.journal).len(), 2);
    services.finish().await;
}

pub(super) fn answer(content: Value) -> CommandAnswer {
    CommandAnswer {
        content,
        related_services: None,
    }
}

async fn a_durable_store_keeps_staged_effects_and_reservations_across_reopening(backend: Backend) {
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let (booked, charged) = (Uuid::new_v4(), Uuid::new_v4());
    let seat = effect("BookFlight", "seat:6F", json!({ "book": "6F" }));
    let card = effect("ChargeCard", "card", json!({ "charge": 5 }));
    let remembered = CommandAnswer {
        content: json!("F-6F"),
        related_services: Some("car,flight,order".to_owned()),
    };
    {
        let store = place.open().await;
        let staging = store
            .stage(first, booked, &[seat.clone(), card.clone()], &remembered)
            .await
            .expect("stages");
        assert_eq!(staging, Staging::Staged);
        let staging = store
            .stage(
                second,
                charged,
                std::slice::from_ref(&seat),
                &answer(Value::Null),
            )
            .await
            .expect("stages");
        assert_eq!(staging, Staging::Staged);
        store.reserve(first).await.expect("reserves");
        store.close().await;
    }
    let store = place.open().await;
    assert_eq!(
        store.staged(first).await.expect("readable"),
        [seat.clone(), card.clone()]
    );
    assert_eq!(
        store.answered(booked).await.expect("readable"),
        Some(remembered.clone())
    );
    store.reserve(first).await.expect("answers as before");
    match store.reserve(second).await {
        Err(ParticipantStoreError::Conflict { key, holder }) => {
            assert_eq!((key.as_str(), holder), ("seat:6F", first));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut expired = store
        .expired_reservations(SystemTime::now() + Duration::from_secs(1))
        .await
        .expect("readable");
    expired.sort();
    let mut both = vec![first, second];
    both.sort();
    assert_eq!(expired, both, "refused reservations expire too");
    assert!(
        store
            .expired_reservations(SystemTime::now() - Duration::from_secs(60))
            .await
            .expect("readable")
            .is_empty()
    );
    assert_eq!(
        store.take(first).await.expect("takes"),
        [seat.clone(), card]
    );
    assert!(store.take(first).await.expect("takes").is_empty());
    // Once the holder settled, the refusal stays the remembered answer until it is settled too.
    assert!(store.reserve(second).await.is_err());
    assert_eq!(store.take(second).await.expect("takes"), [seat]);
    store.close().await;

    let store = place.open().await;
    assert!(store.staged(first).await.expect("readable").is_empty());
    assert!(store.staged(second).await.expect("readable").is_empty());
    assert!(
        store
            .expired_reservations(SystemTime::now() + Duration::from_secs(1))
            .await
            .expect("readable")
            .is_empty()
    );
    // The answers outlive the settlement.
    assert_eq!(
        store.answered(booked).await.expect("readable"),
        Some(remembered)
    );
    store.close().await;
    place.remove().await;
}

async fn a_participant_commits_what_it_staged_before_a_restart(backend: Backend) {
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let harness = Harness::new().await;
    let journal = Journal::default();
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4();
    {
        let store = place.open().await;
        let participant = flight(&harness, store.shared(), &journal)
            .spawn()
            .await
            .expect("flight starts");
        book_seat(&harness, &reply_topic, &mut replies, transaction, "7G").await;
        drop(participant);
        store.close().await;
    }
    let store = place.open().await;
    let participant = flight(&harness, store.shared(), &journal)
        .spawn()
        .await
        .expect("flight starts again");
    let committer = committer(&harness);
    committer
        .commit(&[(transaction, "flight".to_owned())])
        .await
        .expect("commits");
    assert_eq!(
        entries(&journal),
        [(
            "flight".to_owned(),
            "commit",
            settled(
                transaction,
                vec![effect("BookFlight", "seat:7G", json!({ "book": "7G" }))]
            )
        )]
    );
    assert!(
        store
            .staged(transaction)
            .await
            .expect("readable")
            .is_empty()
    );
    participant.shutdown().await;
    store.close().await;
    place.remove().await;
}

/// The store contract of the answers: staging records the command's answer with its effects, once;
/// a second staging of the same command stages nothing and gets the first answer; answers outlive
/// the settlement and are forgotten by age.
async fn a_store_records_each_command_once_and_forgets_old_answers(backend: Backend) {
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let store = place.open().await;
    let (transaction, command, quiet) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let seat = effect("BookFlight", "seat:9J", json!({ "book": "9J" }));
    assert_eq!(store.answered(command).await.expect("readable"), None);

    let first = store
        .stage(
            transaction,
            command,
            std::slice::from_ref(&seat),
            &answer(json!("F-9J")),
        )
        .await
        .expect("stages");
    let again = store
        .stage(
            transaction,
            command,
            &[effect("BookFlight", "seat:9K", json!({ "book": "9K" }))],
            &answer(json!("F-9K")),
        )
        .await
        .expect("answers");
    // A command that stages nothing is remembered too.
    let nothing = store
        .stage(transaction, quiet, &[], &answer(json!({ "quiet": true })))
        .await
        .expect("stages");

    assert_eq!(first, Staging::Staged);
    assert_eq!(again, Staging::Answered(answer(json!("F-9J"))));
    assert_eq!(nothing, Staging::Staged);
    assert_eq!(
        store.staged(transaction).await.expect("readable"),
        std::slice::from_ref(&seat)
    );
    assert_eq!(store.take(transaction).await.expect("takes"), [seat]);
    assert_eq!(
        store.answered(command).await.expect("readable"),
        Some(answer(json!("F-9J"))),
        "kept after the transaction settled"
    );
    assert_eq!(
        store
            .forget_answers(SystemTime::now() - Duration::from_secs(60))
            .await
            .expect("forgets"),
        0,
        "nothing is that old"
    );
    assert_eq!(
        store
            .forget_answers(SystemTime::now() + Duration::from_secs(1))
            .await
            .expect("forgets"),
        2
    );
    assert_eq!(store.answered(command).await.expect("readable"), None);
    assert_eq!(store.answered(quiet).await.expect("readable"), None);
    store.close().await;
    place.remove().await;
}

async fn a_store_remembers_how_each_transaction_settled_until_it_forgets_old_answers(
    backend: Backend,
) {
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let store = place.open().await;
    let (committed, rejected, taken) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let seat = effect("BookFlight", "seat:4D", json!({ "book": "4D" }));
    let staged = store
        .stage(
            committed,
            Uuid::new_v4(),
            std::slice::from_ref(&seat),
            &answer(json!("F-4D")),
        )
        .await
        .expect("stages");
    assert_eq!(staged, Staging::Staged);
    store.reserve(committed).await.expect("reserves");
    assert_eq!(store.outcome(committed).await.expect("readable"), None);

    assert_eq!(
        store
            .settle(committed, Outcome::Committed)
            .await
            .expect("settles"),
        [seat]
    );
    assert!(
        store
            .settle(rejected, Outcome::Rejected)
            .await
            .expect("settles")
            .is_empty(),
        "a transaction that staged nothing settles too"
    );
    assert!(store.take(taken).await.expect("takes").is_empty());
    assert_eq!(
        store.outcome(committed).await.expect("readable"),
        Some(Outcome::Committed)
    );
    assert_eq!(
        store.outcome(rejected).await.expect("readable"),
        Some(Outcome::Rejected)
    );
    assert_eq!(
        store.outcome(taken).await.expect("readable"),
        None,
        "`take` records no outcome"
    );
    assert!(
        store
            .expired_reservations(SystemTime::now() + Duration::from_secs(60))
            .await
            .expect("readable")
            .is_empty()
    );
    // A second settlement keeps the first outcome.
    store
        .settle(committed, Outcome::Rejected)
        .await
        .expect("settles");
    assert_eq!(
        store.outcome(committed).await.expect("readable"),
        Some(Outcome::Committed)
    );

    store
        .forget_answers(SystemTime::now() - Duration::from_secs(60))
        .await
        .expect("forgets");
    assert_eq!(
        store.outcome(rejected).await.expect("readable"),
        Some(Outcome::Rejected),
        "nothing is that old"
    );
    store
        .forget_answers(SystemTime::now() + Duration::from_secs(1))
        .await
        .expect("forgets");
    assert_eq!(store.outcome(committed).await.expect("readable"), None);
    assert_eq!(store.outcome(rejected).await.expect("readable"), None);
    store.close().await;
    place.remove().await;
}

/// A compensation command sent with the reject of its transaction may be handled after the reject
/// (they travel on different topics): its effects are rejected at once instead of staying staged
/// for a settlement that already passed. A reserve redelivered after the commit reserves nothing
/// anew, and the effects of a command handled after the commit are dropped (never applied twice).
async fn a_command_or_reserve_after_its_transaction_settled_leaves_nothing_staged_or_reserved(
    backend: Backend,
) {
    let harness = Harness::new().await;
    let journal = Journal::default();
    let Some(place) = Place::new(backend).await else {
        return;
    };
    let store = place.open().await;
    let flight = flight(&harness, store.shared(), &journal)
        .spawn()
        .await
        .expect("flight starts");
    let (reply_topic, mut replies) = probe(&harness).await;
    let committer = committer(&harness);
    let book = |transaction: Uuid, seat: &str| {
        command_to(
            "BookFlight",
            &transaction.to_string(),
            &reply_topic,
            json!({ "seat": seat }),
        )
    };

    // Rejected (it staged nothing yet), then a command of it comes.
    let rejected = Uuid::new_v4();
    let report = committer
        .phase(Phase::Reject, &[(rejected, "flight".to_owned())])
        .await
        .expect("the broker works");
    assert!(report.all_accepted(), "{report:?}");
    harness
        .broker
        .publish(book(rejected, "5E"))
        .await
        .expect("published");
    assert_eq!(
        next_reply(&mut replies).await.status,
        Some(SagaResponseStatus::Success)
    );
    assert_eq!(
        entries(&journal),
        [(
            "flight".to_owned(),
            "reject",
            settled(
                rejected,
                vec![effect("BookFlight", "seat:5E", json!({ "book": "5E" }))]
            )
        )]
    );
    assert!(store.staged(rejected).await.expect("readable").is_empty());

    // Committed, then its reserve comes again, and a late command.
    let committed = Uuid::new_v4();
    harness
        .broker
        .publish(book(committed, "6F"))
        .await
        .expect("published");
    assert_eq!(
        next_reply(&mut replies).await.status,
        Some(SagaResponseStatus::Success)
    );
    for phase in [Phase::Reserve, Phase::Commit, Phase::Reserve] {
        let report = committer
            .phase(phase, &[(committed, "flight".to_owned())])
            .await
            .expect("the broker works");
        assert!(report.all_accepted(), "{phase:?}: {report:?}");
    }
    harness
        .broker
        .publish(book(committed, "7G"))
        .await
        .expect("published");
    assert_eq!(
        next_reply(&mut replies).await.status,
        Some(SagaResponseStatus::Success)
    );
    assert_eq!(entries(&journal).len(), 2, "{:?}", entries(&journal));
    assert_eq!(
        entries(&journal)[1],
        (
            "flight".to_owned(),
            "commit",
            settled(
                committed,
                vec![effect("BookFlight", "seat:6F", json!({ "book": "6F" }))]
            )
        )
    );
    assert!(store.staged(committed).await.expect("readable").is_empty());
    assert!(
        store
            .expired_reservations(SystemTime::now() + Duration::from_secs(3600))
            .await
            .expect("readable")
            .is_empty(),
        "a reserve after the settlement reserved nothing"
    );
    flight.shutdown().await;
    store.close().await;
    place.remove().await;
}

/// A command delivered twice (its reply sent, its acknowledgement lost) is answered the same both
/// times and stages its effects once; so is a redelivery after its transaction committed.
async fn a_redelivered_command_is_answered_again_without_staging_twice(backend: Backend) {
    let harness = Harness::new().await;
    let Some(services) = services(&harness, backend).await else {
        return;
    };
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4();
    let command = command_to(
        "BookFlight",
        &transaction.to_string(),
        &reply_topic,
        json!({ "seat": "8H" }),
    );

    let mut answers = Vec::new();
    for _ in 0..2 {
        harness
            .broker
            .publish(command.clone())
            .await
            .expect("published");
        answers.push(next_reply(&mut replies).await);
    }

    for reply in &answers {
        assert_eq!(reply.status, Some(SagaResponseStatus::Success));
        assert_eq!(reply.correlation_id, Some(command.id));
        assert_eq!(reply.payload, json!("F-8H"));
        assert_eq!(
            reply
                .headers
                .get(header::RELATED_SERVICES)
                .map(String::as_str),
            Some("flight,order")
        );
    }
    assert_eq!(
        services
            .flight_store
            .staged(transaction)
            .await
            .expect("readable"),
        [effect("BookFlight", "seat:8H", json!({ "book": "8H" }))],
        "staged once"
    );
    let stats = services.flight.stats();
    assert_eq!((stats.commands, stats.duplicates), (2, 1));

    // After the commit, a late redelivery is answered the same and stages nothing.
    let committer = committer(&harness);
    committer
        .commit(&[(transaction, "flight".to_owned())])
        .await
        .expect("commits");
    harness
        .broker
        .publish(command.clone())
        .await
        .expect("published");
    let late = next_reply(&mut replies).await;
    assert_eq!(late.status, Some(SagaResponseStatus::Success));
    assert_eq!(late.payload, json!("F-8H"));
    assert!(
        services
            .flight_store
            .staged(transaction)
            .await
            .expect("readable")
            .is_empty()
    );
    assert_eq!(
        entries(&services.journal),
        [(
            "flight".to_owned(),
            "commit",
            settled(
                transaction,
                vec![effect("BookFlight", "seat:8H", json!({ "book": "8H" }))]
            )
        )]
    );
    assert_eq!(services.flight.stats().duplicates, 2);
    services.finish().await;
}

on_every_store!(
    a_finished_saga_commits_the_staged_effects_of_both_participants_once,
    a_refused_step_compensates_and_both_participants_reject,
    a_conflicting_reservation_rejects_the_second_saga_and_the_first_commits,
    a_panicking_handler_replies_system_error_and_the_participant_goes_on,
    an_unsettled_reservation_is_rejected_after_the_timeout,
    a_reserve_redelivered_after_the_commit_leaves_no_reservation,
    a_nested_command_joins_the_innermost_transaction,
    garbage_messages_are_acknowledged_and_change_nothing,
    a_store_records_each_command_once_and_forgets_old_answers,
    a_redelivered_command_is_answered_again_without_staging_twice,
    a_store_remembers_how_each_transaction_settled_until_it_forgets_old_answers,
    a_command_or_reserve_after_its_transaction_settled_leaves_nothing_staged_or_reserved,
);

on_durable_stores!(
    a_durable_store_keeps_staged_effects_and_reservations_across_reopening,
    a_participant_commits_what_it_staged_before_a_restart,
);

/// Waits (up to 5 s) until `condition` holds, polling every 10 ms.
async fn eventually_async<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition did not hold within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_sweeper_forgets_answers_past_their_retention_and_a_later_redelivery_runs_again() {
    let harness = Harness::new().await;
    let journal = Journal::default();
    let store = Arc::new(InMemoryParticipantStore::new());
    let flight = flight(&harness, store.clone(), &journal)
        .reservation_timeout(Duration::from_millis(100))
        .answer_retention(Duration::ZERO)
        .spawn()
        .await
        .expect("flight starts");
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4();
    let command = command_to(
        "BookFlight",
        &transaction.to_string(),
        &reply_topic,
        json!({ "seat": "10K" }),
    );
    harness
        .broker
        .publish(command.clone())
        .await
        .expect("published");
    assert_eq!(
        next_reply(&mut replies).await.status,
        Some(SagaResponseStatus::Success)
    );

    eventually_async(|| {
        let store = Arc::clone(&store);
        async move {
            store
                .answered(command.id)
                .await
                .expect("readable")
                .is_none()
        }
    })
    .await;
    harness
        .broker
        .publish(command.clone())
        .await
        .expect("published");
    assert_eq!(
        next_reply(&mut replies).await.status,
        Some(SagaResponseStatus::Success)
    );

    assert_eq!(flight.stats().duplicates, 0);
    assert_eq!(
        store.staged(transaction).await.expect("readable").len(),
        2,
        "a forgotten command runs again"
    );
}

/// Several PostgreSQL stores on one schema (the instances of one service): of transactions holding
/// one key reserved at once on different instances, exactly one is granted, and the others are
/// refused naming it, round after round; every instance then remembers the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_sharing_a_schema_grant_exactly_one_of_conflicting_reservations() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let stores = [db.participant_store().await, db.participant_store().await];
    for round in 0..25 {
        let key = format!("seat:{round}");
        let transactions = [Uuid::new_v4(), Uuid::new_v4()];
        for (store, transaction) in stores.iter().zip(transactions) {
            let staging = store
                .stage(
                    transaction,
                    Uuid::new_v4(),
                    &[effect("BookFlight", &key, json!(round))],
                    &answer(Value::Null),
                )
                .await
                .expect("stages");
            assert_eq!(staging, Staging::Staged);
        }
        let barrier = Arc::new(Barrier::new(2));
        let racers = stores.iter().zip(transactions).map(|(store, transaction)| {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.reserve(transaction).await
            })
        });
        let mut outcomes = Vec::new();
        for racer in racers.collect::<Vec<_>>() {
            outcomes.push(racer.await.expect("the reserve does not panic"));
        }

        let winners = transactions
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(transaction, _)| *transaction)
            .collect::<Vec<_>>();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        for outcome in &outcomes {
            match outcome {
                Ok(()) => {}
                Err(ParticipantStoreError::Conflict { key: held, holder }) => {
                    assert_eq!((held, *holder), (&key, winners[0]), "round {round}");
                }
                Err(error) => panic!("round {round}: {error}"),
            }
        }
        // Each instance answers as the other did.
        for (index, transaction) in transactions.iter().enumerate() {
            let again = stores[1 - index].reserve(*transaction).await;
            assert_eq!(
                again.is_ok(),
                outcomes[index].is_ok(),
                "round {round}: {again:?}"
            );
        }
    }
    for store in &stores {
        store.close().await;
    }
    db.drop().await;
}

/// Two PostgreSQL stores on one schema staging the same command at once (a redelivery handled by
/// two instances): one stages it, the other stages nothing and gets the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_sharing_a_schema_stage_a_command_once() {
    let Some(db) = TestDatabase::connect().await else {
        return;
    };
    let stores = [db.participant_store().await, db.participant_store().await];
    for round in 0..10 {
        let (transaction, command) = (Uuid::new_v4(), Uuid::new_v4());
        let barrier = Arc::new(Barrier::new(2));
        let racers = stores.iter().enumerate().map(|(index, store)| {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let staged = [effect("BookFlight", "seat", json!(index))];
                store
                    .stage(transaction, command, &staged, &answer(json!(index)))
                    .await
            })
        });
        let mut outcomes = Vec::new();
        for racer in racers.collect::<Vec<_>>() {
            outcomes.push(
                racer
                    .await
                    .expect("staging does not panic")
                    .expect("stages"),
            );
        }

        let winner = match &outcomes[..] {
            [Staging::Staged, Staging::Answered(earlier)] => {
                assert_eq!(earlier, &answer(json!(0)), "round {round}");
                0
            }
            [Staging::Answered(earlier), Staging::Staged] => {
                assert_eq!(earlier, &answer(json!(1)), "round {round}");
                1
            }
            other => panic!("round {round}: exactly one stages, got {other:?}"),
        };
        assert_eq!(
            stores[0].staged(transaction).await.expect("readable"),
            [effect("BookFlight", "seat", json!(winner))],
            "round {round}"
        );
        assert_eq!(
            stores[1].answered(command).await.expect("readable"),
            Some(answer(json!(winner)))
        );
    }
    for store in &stores {
        store.close().await;
    }
    db.drop().await;
}

/// The in-process broker, recording the ids of the deliveries acknowledged through it.
#[derive(Clone)]
struct AckRecorder {
    broker: InProcessBroker,
    acked: Arc<Mutex<Vec<Uuid>>>,
}

impl AckRecorder {
    fn acked(&self) -> Vec<Uuid> {
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl Broker for AckRecorder {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        self.broker.publish(message).await
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        Ok(Subscription::new(RecordedSource {
            subscription: self.broker.subscribe(topic).await?,
            acked: Arc::clone(&self.acked),
        }))
    }
}

struct RecordedSource {
    subscription: Subscription,
    acked: Arc<Mutex<Vec<Uuid>>>,
}

#[async_trait]
impl DeliverySource for RecordedSource {
    async fn next(&mut self) -> Option<Delivery> {
        let delivery = self.subscription.next().await?;
        let message = delivery.message().clone();
        let recorded = RecordedAck {
            delivery,
            acked: Arc::clone(&self.acked),
        };
        Some(Delivery::with_acknowledge(message, Box::new(recorded)))
    }
}

struct RecordedAck {
    delivery: Delivery,
    acked: Arc<Mutex<Vec<Uuid>>>,
}

#[async_trait]
impl Acknowledge for RecordedAck {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        let id = self.delivery.message().id;
        self.delivery.ack().await?;
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
        Ok(())
    }

    async fn nack(self: Box<Self>, _message: BrokerMessage) -> Result<(), BrokerError> {
        self.delivery.nack().await
    }
}

#[tokio::test]
async fn shutdown_finishes_the_command_in_hand_and_takes_no_new_one() {
    let harness = Harness::new().await;
    let broker = AckRecorder {
        broker: harness.broker.clone(),
        acked: Arc::default(),
    };
    let (started, mut running) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let handler = {
        let (release, calls) = (Arc::clone(&release), Arc::clone(&calls));
        move |context: CommandContext, request: Value| {
            let (started, release, calls) =
                (started.clone(), Arc::clone(&release), Arc::clone(&calls));
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = started.send(());
                // Holds the delivery until the test lets it go.
                release.acquire().await.expect("open").forget();
                context.stage("slow", request);
                Ok::<_, CommandError>(json!("done"))
            }
        }
    };
    let store = Arc::new(InMemoryParticipantStore::new());
    let participant = TransactionalParticipant::builder("slow", Arc::new(broker.clone()), store)
        .command("SlowCommand", handler)
        .spawn()
        .await
        .expect("slow starts");
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4().to_string();
    let first = command_to("SlowCommand", &transaction, &reply_topic, json!(1));
    let second = command_to("SlowCommand", &transaction, &reply_topic, json!(2));
    harness
        .broker
        .publish(first.clone())
        .await
        .expect("published");
    running.recv().await.expect("the handler runs");

    // Its first poll asks every loop to stop; the handler is still held, so it cannot finish.
    let shutdown = participant.shutdown();
    tokio::pin!(shutdown);
    assert!(
        shutdown.as_mut().now_or_never().is_none(),
        "a shutdown waits for the command in hand"
    );
    harness
        .broker
        .publish(second.clone())
        .await
        .expect("published");
    release.add_permits(1);
    shutdown.await;

    // The command in hand was answered and acknowledged.
    let reply = next_reply(&mut replies).await;
    assert_eq!(reply.correlation_id, Some(first.id));
    assert_eq!(reply.status, Some(SagaResponseStatus::Success));
    assert_eq!(reply.payload, json!("done"));
    assert_eq!(broker.acked(), [first.id]);
    // The next one was not taken: it waits on its topic for another instance.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(harness.broker.backlog("SlowCommand"), 1);
    assert_eq!(participant.stats().commands, 1);
    // Nor are transaction messages.
    harness
        .broker
        .publish(
            BrokerMessage::new("_ReserveSlowTransaction", Value::Null)
                .with_header(header::TRANSACTION, &transaction),
        )
        .await
        .expect("published");
    assert_eq!(harness.broker.backlog("_ReserveSlowTransaction"), 1);
    // Shutting down again changes nothing.
    participant.shutdown().await;
    let replies_to_probe = harness
        .broker
        .history()
        .into_iter()
        .filter(|message| message.topic == reply_topic)
        .count();
    assert_eq!(replies_to_probe, 1, "only the command in hand was answered");
    assert_eq!(broker.acked(), [first.id]);
}

/// A participant whose handler holds every command until `held` of them run at once, with
/// `concurrency`; returns it, the harness, and how many ran.
async fn gathering_participant(
    concurrency: usize,
    held: usize,
) -> (Harness, TransactionalParticipant, Arc<AtomicU32>) {
    let harness = Harness::new().await;
    let running = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(tokio::sync::Barrier::new(held));
    let handler = {
        let running = Arc::clone(&running);
        move |context: CommandContext, request: Value| {
            let (running, gate) = (Arc::clone(&running), Arc::clone(&gate));
            async move {
                running.fetch_add(1, Ordering::SeqCst);
                gate.wait().await;
                context.stage(format!("key:{request}"), request);
                Ok::<_, CommandError>(json!("done"))
            }
        }
    };
    let participant = TransactionalParticipant::builder(
        "gathering",
        harness.broker(),
        Arc::new(InMemoryParticipantStore::new()),
    )
    .command("Gather", handler)
    .concurrency(concurrency)
    .spawn()
    .await
    .expect("starts");
    (harness, participant, running)
}

#[tokio::test]
async fn commands_of_one_topic_are_handled_concurrently_up_to_the_limit() {
    let (harness, participant, running) = gathering_participant(4, 3).await;
    let (reply_topic, mut replies) = probe(&harness).await;
    for n in 0..3 {
        let transaction = Uuid::new_v4().to_string();
        let command = command_to("Gather", &transaction, &reply_topic, json!(n));
        harness.broker.publish(command).await.expect("published");
    }
    // The three meet at the gate only if they run at once.
    for _ in 0..3 {
        let reply = next_reply(&mut replies).await;
        assert_eq!(reply.status, Some(SagaResponseStatus::Success));
    }
    assert_eq!(running.load(Ordering::SeqCst), 3);
    participant.shutdown().await;
}

#[tokio::test]
async fn a_concurrency_of_one_handles_a_topic_one_command_at_a_time() {
    let (harness, participant, running) = gathering_participant(1, 2).await;
    let (reply_topic, mut replies) = probe(&harness).await;
    for n in 0..2 {
        let transaction = Uuid::new_v4().to_string();
        let command = command_to("Gather", &transaction, &reply_topic, json!(n));
        harness.broker.publish(command).await.expect("published");
    }
    // The first waits at the gate for a second that is never taken.
    wait_until(Duration::from_secs(5), "the first command runs", || async {
        running.load(Ordering::SeqCst) == 1
    })
    .await;
    let quiet = tokio::time::timeout(Duration::from_millis(300), replies.next()).await;
    assert!(quiet.is_err(), "no command finished");
    assert_eq!(
        running.load(Ordering::SeqCst),
        1,
        "the second was not taken"
    );
    drop(participant);
}
