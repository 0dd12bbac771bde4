//! The participant side of the two-phase commit: `TransactionalParticipant` stages the effects of
//! its commands under the command's innermost transaction and applies them (`on_commit`) or drops
//! them (`on_reject`) when the saga's committer settles the transaction; conflicting reservations,
//! panicking handlers, unsettled reservations, garbage messages and the SQLite store.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use saga_runtime::broker::Subscription;
use saga_runtime::committer::{Phase, TransactionCommitter};
use saga_runtime::message::{BrokerMessage, header};
use saga_runtime::prelude::*;
use saga_runtime::transactional::{
    CommandContext, CommandError, InMemoryParticipantStore, ParticipantStore,
    ParticipantStoreError, Settled, SqliteParticipantStore, StagedEffect, TransactionalParticipant,
    TransactionalParticipantBuilder,
};
use saga_tests::{Harness, eventually};
use serde_json::{Value, json};
use uuid::Uuid;

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
    let builder = TransactionalParticipant::builder("flight", harness.shared_broker(), store)
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
    let builder = TransactionalParticipant::builder("hotel", harness.shared_broker(), store)
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
    flight_store: Arc<InMemoryParticipantStore>,
    hotel_store: Arc<InMemoryParticipantStore>,
    journal: Journal,
    cancelled: Arc<Mutex<u32>>,
    /// The saga's own service, taking part in its transactions.
    _order: Vec<saga_runtime::participant::InProcessParticipant>,
}

async fn services(harness: &Harness) -> Services {
    let journal = Journal::default();
    let cancelled = Arc::new(Mutex::new(0));
    let flight_store = Arc::new(InMemoryParticipantStore::new());
    let hotel_store = Arc::new(InMemoryParticipantStore::new());
    Services {
        flight: flight(harness, flight_store.clone(), &journal)
            .spawn()
            .await
            .expect("flight starts"),
        hotel: hotel(harness, hotel_store.clone(), &journal, &cancelled)
            .spawn()
            .await
            .expect("hotel starts"),
        flight_store,
        hotel_store,
        journal,
        cancelled,
        _order: harness.accepting(&["order"]).await,
    }
}

fn effect(topic: &str, key: &str, effect: Value) -> StagedEffect {
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

#[tokio::test]
async fn a_finished_saga_commits_the_staged_effects_of_both_participants_once() {
    let harness = Harness::new().await;
    let services = services(&harness).await;

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
    let committer =
        TransactionCommitter::new(harness.shared_broker(), "order", Duration::from_secs(2));
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
}

#[tokio::test]
async fn a_refused_step_compensates_and_both_participants_reject() {
    let harness = Harness::new().await;
    let services = services(&harness).await;

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
}

#[tokio::test]
async fn a_conflicting_reservation_rejects_the_second_saga_and_the_first_commits() {
    let harness = Harness::new().await;
    let services = services(&harness).await;
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
    let committer =
        TransactionCommitter::new(harness.shared_broker(), "order", Duration::from_secs(2));
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
}

/// Subscribes to a private reply topic.
async fn probe(harness: &Harness) -> (String, Subscription) {
    let topic = format!("probeReply.{}", Uuid::new_v4().simple());
    let subscription = harness
        .shared_broker()
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

fn command_to(topic: &str, transactions: &str, reply_to: &str, payload: Value) -> BrokerMessage {
    BrokerMessage::new(topic, payload)
        .with_header(header::TRANSACTIONS, transactions)
        .with_header(header::SAGA, Uuid::new_v4().to_string())
        .with_header(header::RELATED_SERVICES, "order")
        .with_reply_to(reply_to)
}

#[tokio::test]
async fn a_panicking_handler_replies_system_error_and_the_participant_goes_on() {
    let harness = Harness::new().await;
    let services = services(&harness).await;
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
}

#[tokio::test]
async fn an_unsettled_reservation_is_rejected_after_the_timeout() {
    let harness = Harness::new().await;
    let journal = Journal::default();
    let store = Arc::new(InMemoryParticipantStore::new());
    let flight = flight(&harness, store.clone(), &journal)
        .reservation_timeout(Duration::from_secs(1))
        .spawn()
        .await
        .expect("flight starts");
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4();
    harness
        .broker
        .publish(command_to(
            "BookFlight",
            &transaction.to_string(),
            &reply_topic,
            json!({ "seat": "3C" }),
        ))
        .await
        .expect("published");
    assert_eq!(
        next_reply(&mut replies).await.status,
        Some(SagaResponseStatus::Success)
    );
    let committer =
        TransactionCommitter::new(harness.shared_broker(), "order", Duration::from_secs(2));
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
    // A commit that comes too late finds nothing to apply.
    let late = committer
        .phase(Phase::Commit, &[(transaction, "flight".to_owned())])
        .await
        .expect("the broker works");
    assert!(late.all_accepted(), "{late:?}");
    assert_eq!(entries(&journal).len(), 1);
    assert_eq!(flight.stats().committed, 0);
}

#[tokio::test]
async fn a_nested_command_joins_the_innermost_transaction() {
    let harness = Harness::new().await;
    let services = services(&harness).await;
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
    let committer =
        TransactionCommitter::new(harness.shared_broker(), "order", Duration::from_secs(2));
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
}

#[tokio::test]
async fn garbage_messages_are_acknowledged_and_change_nothing() {
    let harness = Harness::new().await;
    let services = services(&harness).await;
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
}

fn temporary_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{name}-{}.db", Uuid::new_v4().simple()))
}

#[tokio::test]
async fn the_sqlite_store_keeps_staged_effects_and_reservations_across_reopening() {
    let path = temporary_file("participant-store");
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let seat = effect("BookFlight", "seat:6F", json!({ "book": "6F" }));
    let card = effect("ChargeCard", "card", json!({ "charge": 5 }));
    {
        let store = SqliteParticipantStore::open(&path).await.expect("opens");
        store
            .stage(first, &[seat.clone(), card.clone()])
            .await
            .expect("stages");
        store
            .stage(second, std::slice::from_ref(&seat))
            .await
            .expect("stages");
        store.reserve(first).await.expect("reserves");
        store.close().await;
    }
    let store = SqliteParticipantStore::open(&path).await.expect("reopens");
    assert_eq!(
        store.staged(first).await.expect("readable"),
        [seat.clone(), card.clone()]
    );
    store.reserve(first).await.expect("answers as before");
    match store.reserve(second).await {
        Err(ParticipantStoreError::Conflict { key, holder }) => {
            assert_eq!((key.as_str(), holder), ("seat:6F", first));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut expired = store
        .expired_reservations(std::time::SystemTime::now() + Duration::from_secs(1))
        .await
        .expect("readable");
    expired.sort();
    let mut both = vec![first, second];
    both.sort();
    assert_eq!(expired, both, "refused reservations expire too");
    assert!(
        store
            .expired_reservations(std::time::SystemTime::now() - Duration::from_secs(60))
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

    let store = SqliteParticipantStore::open(&path).await.expect("reopens");
    assert!(store.staged(first).await.expect("readable").is_empty());
    assert!(store.staged(second).await.expect("readable").is_empty());
    assert!(
        store
            .expired_reservations(std::time::SystemTime::now() + Duration::from_secs(1))
            .await
            .expect("readable")
            .is_empty()
    );
    store.close().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_participant_on_sqlite_commits_what_it_staged_before_a_restart() {
    let path = temporary_file("participant-restart");
    let harness = Harness::new().await;
    let journal = Journal::default();
    let (reply_topic, mut replies) = probe(&harness).await;
    let transaction = Uuid::new_v4();
    {
        let store = Arc::new(SqliteParticipantStore::open(&path).await.expect("opens"));
        let participant = flight(&harness, store.clone(), &journal)
            .spawn()
            .await
            .expect("flight starts");
        harness
            .broker
            .publish(command_to(
                "BookFlight",
                &transaction.to_string(),
                &reply_topic,
                json!({ "seat": "7G" }),
            ))
            .await
            .expect("published");
        assert_eq!(
            next_reply(&mut replies).await.status,
            Some(SagaResponseStatus::Success)
        );
        drop(participant);
        store.close().await;
    }
    let store = Arc::new(SqliteParticipantStore::open(&path).await.expect("reopens"));
    let _participant = flight(&harness, store.clone(), &journal)
        .spawn()
        .await
        .expect("flight starts again");
    let committer =
        TransactionCommitter::new(harness.shared_broker(), "order", Duration::from_secs(2));
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
    store.close().await;
    let _ = std::fs::remove_file(&path);
}
