//! Replies that do not fit (unknown execution, duplicate, ended execution, unknown command), two
//! replies racing for one paused step, and what the reply listener does with garbage and valid
//! replies arriving through the broker.

use std::sync::Arc;

use saga_runtime::broker::Broker;
use saga_runtime::broker::{BrokerMessage, header};
use saga_runtime::execution::{ExecutionRecord, ReplyRejection};
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::{Harness, ReplyCounts, eventually, reply_to};
use serde_json::json;
use uuid::Uuid;

/// The context of the sagas below: how often each reply handler ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Counts {
    successes: u32,
    errors: u32,
    last: Option<String>,
}

async fn create_ticket(_counts: &Counts) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateTicket", &json!({"seat": "7C"}))
}

async fn create_payment(_counts: &Counts) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreatePayment", &json!({"amount": 5}))
}

async fn succeeded(counts: &mut Counts, reply: SagaResponse) -> Result<(), StepError> {
    counts.successes += 1;
    counts.last = Some(reply.content()?);
    Ok(())
}

async fn refused(counts: &mut Counts, reply: SagaResponse) -> Result<(), StepError> {
    counts.errors += 1;
    counts.last = Some(reply.content()?);
    Ok(())
}

/// `ticket` (CreateTicket) then `payment` (CreatePayment), both counting their replies.
fn two_step_saga() -> Arc<SagaDefinition<Counts>> {
    Arc::new(
        Saga::new("two-steps")
            .remote_step("ticket")
            .on_execute(create_ticket)
            .on_success(succeeded)
            .on_error(refused)
            .remote_step("payment")
            .on_execute(create_payment)
            .on_success(succeeded)
            .on_error(refused)
            .commit()
            .expect("a valid saga"),
    )
}

/// `ticket` (CreateTicket), counting its replies.
fn one_step_saga() -> Arc<SagaDefinition<Counts>> {
    Arc::new(
        Saga::new("one-step")
            .remote_step("ticket")
            .on_execute(create_ticket)
            .on_success(succeeded)
            .on_error(refused)
            .commit()
            .expect("a valid saga"),
    )
}

/// Starts `saga` paused on disk and returns its id.
async fn start_paused(
    harness: &Harness,
    saga: &Arc<SagaDefinition<Counts>>,
    options: RunOptions,
) -> Uuid {
    let execution = harness
        .manager
        .run(
            Arc::clone(saga),
            Counts::default(),
            options.pause_on_disk(true),
        )
        .await
        .expect("the saga pauses")
        .execution()
        .expect("the execution is returned");
    assert_eq!(execution.status(), SagaStatus::Paused);
    execution.id()
}

/// The commands sent on `topic`, in order.
fn commands(harness: &Harness, topic: &str) -> Vec<BrokerMessage> {
    harness
        .sent()
        .into_iter()
        .filter(|message| message.topic == topic)
        .collect()
}

fn only_command(harness: &Harness, topic: &str) -> BrokerMessage {
    let mut found = commands(harness, topic);
    assert_eq!(found.len(), 1, "exactly one `{topic}` command was sent");
    found.remove(0)
}

fn stored(harness: &Harness, id: Uuid) -> ExecutionRecord {
    let json = harness.repository.raw(id).expect("the execution is stored");
    ExecutionRecord::from_json(&json).expect("a stored record decodes")
}

/// The stored context of execution `id`, decoded through the manager.
async fn stored_counts(harness: &Harness, saga: &Arc<SagaDefinition<Counts>>, id: Uuid) -> Counts {
    harness
        .manager
        .load(Arc::clone(saga), id)
        .await
        .expect("the execution loads")
        .into_context()
}

fn counts(successes: u32, errors: u32, last: Option<&str>) -> Counts {
    Counts {
        successes,
        errors,
        last: last.map(str::to_owned),
    }
}

fn success(command: &BrokerMessage, content: &str) -> SagaResponse {
    reply_to(
        command,
        SagaResponseStatus::Success,
        json!(content),
        &["ticket"],
    )
}

#[tokio::test]
async fn a_reply_for_an_unknown_execution_is_ignored() {
    let harness = Harness::new().await;
    let saga_id = Uuid::new_v4();
    let reply = SagaResponse::new(
        saga_id,
        Uuid::new_v4(),
        SagaResponseStatus::Success,
        &json!("x"),
    )
    .expect("JSON content encodes");

    let outcome = harness
        .manager
        .resume(reply)
        .await
        .expect("the reply is handled");

    assert_eq!(
        outcome,
        ReplyOutcome::Ignored {
            id: saga_id,
            reason: ReplyRejection::UnknownExecution,
        }
    );
    assert!(harness.repository.is_empty());
    assert!(harness.sent().is_empty());
}

#[tokio::test]
async fn a_duplicate_of_an_applied_reply_is_ignored() {
    let harness = Harness::new().await;
    let saga = two_step_saga();
    let id = start_paused(&harness, &saga, RunOptions::new()).await;
    let ticket = only_command(&harness, "CreateTicket");

    let first = harness
        .manager
        .resume(success(&ticket, "T-1"))
        .await
        .expect("the reply is handled");
    assert_eq!(
        first,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Paused
        }
    );
    let before = stored(&harness, id);
    assert_eq!(before.paused_step.as_deref(), Some("payment"));

    // The same reply again, and another reply to the same (answered) command.
    for duplicate in [
        success(&ticket, "T-1"),
        reply_to(&ticket, SagaResponseStatus::Error, json!("T-2"), &[]),
    ] {
        let outcome = harness
            .manager
            .resume(duplicate)
            .await
            .expect("the duplicate is handled");
        assert_eq!(
            outcome,
            ReplyOutcome::Ignored {
                id,
                reason: ReplyRejection::Duplicate,
            }
        );
    }
    let after = stored(&harness, id);
    assert_eq!(after, before, "the duplicates changed nothing");
    assert_eq!(
        stored_counts(&harness, &saga, id).await,
        counts(1, 0, Some("T-1"))
    );
    assert_eq!(harness.sent_topics(), vec!["CreateTicket", "CreatePayment"]);
}

#[tokio::test]
async fn a_reply_for_an_errored_execution_is_ignored() {
    let harness = Harness::new().await;
    let saga = one_step_saga();
    let id = start_paused(&harness, &saga, RunOptions::new().autocommit(false)).await;
    let ticket = only_command(&harness, "CreateTicket");

    // SYSTEM_ERROR fails the step: the saga errors.
    let outcome = harness
        .manager
        .resume(reply_to(
            &ticket,
            SagaResponseStatus::SystemError,
            json!("boom"),
            &["ticket"],
        ))
        .await
        .expect("the reply is handled");
    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Errored
        }
    );
    let before = stored(&harness, id);
    assert_eq!(before.status, SagaStatus::Errored);

    for late in [
        success(&ticket, "T-1"),
        SagaResponse::new(
            id,
            Uuid::new_v4(),
            SagaResponseStatus::Success,
            &json!("T-2"),
        )
        .expect("JSON content encodes"),
    ] {
        let outcome = harness
            .manager
            .resume(late)
            .await
            .expect("the reply is handled");
        assert_eq!(
            outcome,
            ReplyOutcome::Ignored {
                id,
                reason: ReplyRejection::ExecutionEnded(SagaStatus::Errored),
            }
        );
    }
    assert_eq!(stored(&harness, id), before);
    assert_eq!(stored_counts(&harness, &saga, id).await, counts(0, 0, None));
    assert_eq!(harness.sent_topics(), vec!["CreateTicket"]);
}

#[tokio::test]
async fn a_reply_to_a_command_never_sent_is_ignored() {
    let harness = Harness::new().await;
    let saga = one_step_saga();
    let id = start_paused(&harness, &saga, RunOptions::new()).await;
    let before = stored(&harness, id);

    let stranger = SagaResponse::new(
        id,
        Uuid::new_v4(),
        SagaResponseStatus::Success,
        &json!("T-1"),
    )
    .expect("JSON content encodes");
    let outcome = harness
        .manager
        .resume(stranger)
        .await
        .expect("the reply is handled");

    assert_eq!(
        outcome,
        ReplyOutcome::Ignored {
            id,
            reason: ReplyRejection::UnknownRequest,
        }
    );
    assert_eq!(stored(&harness, id), before);
    assert_eq!(before.status, SagaStatus::Paused);
    assert_eq!(harness.sent_topics(), vec!["CreateTicket"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_replies_for_one_paused_step_apply_once() {
    let harness = Harness::new().await;
    let saga = one_step_saga();
    for round in 0..20 {
        harness.clear();
        let id = start_paused(&harness, &saga, RunOptions::new().autocommit(false)).await;
        let ticket = only_command(&harness, "CreateTicket");
        let ok = success(&ticket, "yes");
        let no = reply_to(&ticket, SagaResponseStatus::Error, json!("no"), &["ticket"]);

        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let spawn = |reply: SagaResponse| {
            let manager = harness.manager.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                manager.resume(reply).await
            })
        };
        let first = spawn(ok);
        let second = spawn(no);
        let ok_outcome = first
            .await
            .expect("the task does not panic")
            .expect("the reply is handled");
        let no_outcome = second
            .await
            .expect("the task does not panic")
            .expect("the reply is handled");

        let applied = ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished,
        };
        let ignored = ReplyOutcome::Ignored {
            id,
            reason: ReplyRejection::ExecutionEnded(SagaStatus::Finished),
        };
        let record = stored(&harness, id);
        assert_eq!(record.status, SagaStatus::Finished, "round {round}");
        if ok_outcome == applied {
            assert_eq!(no_outcome, ignored, "round {round}");
            assert_eq!(
                stored_counts(&harness, &saga, id).await,
                counts(1, 0, Some("yes")),
                "round {round}"
            );
        } else {
            assert_eq!(ok_outcome, ignored, "round {round}");
            assert_eq!(no_outcome, applied, "round {round}");
            assert_eq!(
                stored_counts(&harness, &saga, id).await,
                counts(0, 1, Some("no")),
                "round {round}"
            );
        }
        assert_eq!(harness.sent_topics(), vec!["CreateTicket"], "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_replies_through_the_broker_apply_once() {
    let harness = Harness::new().await;
    let saga = two_step_saga();
    let id = start_paused(&harness, &saga, RunOptions::new()).await;
    let ticket = only_command(&harness, "CreateTicket");
    let ok = ticket
        .reply("ticket", SagaResponseStatus::Success, json!("yes"))
        .expect("the command names its reply topic");
    let no = ticket
        .reply("ticket", SagaResponseStatus::Error, json!("no"))
        .expect("the command names its reply topic");
    assert_eq!(ok.topic, "orderReply");

    harness.broker.publish(ok).await.expect("published");
    harness.broker.publish(no).await.expect("published");

    eventually(|| {
        let stats = harness.manager.reply_stats();
        stats.applied + stats.ignored == 2
    })
    .await;
    assert_eq!(
        ReplyCounts::from(harness.manager.reply_stats()),
        ReplyCounts {
            applied: 1,
            ignored: 1,
            unknown: 0,
            malformed: 0,
            failed: 0,
            dead_lettered: 0,
        }
    );
    let record = stored(&harness, id);
    assert_eq!(record.status, SagaStatus::Paused);
    assert_eq!(record.paused_step.as_deref(), Some("payment"));
    let applied = stored_counts(&harness, &saga, id).await;
    assert!(
        applied == counts(1, 0, Some("yes")) || applied == counts(0, 1, Some("no")),
        "exactly one reply was applied: {applied:?}"
    );
    assert_eq!(harness.sent_topics(), vec!["CreateTicket", "CreatePayment"]);
}

#[tokio::test]
async fn garbage_on_the_reply_topic_is_dead_lettered_and_counted_as_malformed() {
    let harness = Harness::new().await;
    let saga = one_step_saga();
    let id = start_paused(&harness, &saga, RunOptions::new()).await;
    let ticket = only_command(&harness, "CreateTicket");
    let valid = ticket
        .reply("ticket", SagaResponseStatus::Success, json!("T-1"))
        .expect("the command names its reply topic");
    assert_eq!(valid.topic, "orderReply");

    let mut without_saga = valid.clone();
    without_saga.id = Uuid::new_v4();
    without_saga.headers.remove(header::SAGA);
    let mut bad_saga = valid.clone();
    bad_saga.id = Uuid::new_v4();
    bad_saga
        .headers
        .insert(header::SAGA.to_owned(), "not-a-uuid".to_owned());
    let mut without_correlation = valid.clone();
    without_correlation.id = Uuid::new_v4();
    without_correlation.correlation_id = None;
    let mut without_status = valid.clone();
    without_status.id = Uuid::new_v4();
    without_status.status = None;
    let mut plain = BrokerMessage::new("orderReply", json!({"hello": "world"}));
    plain.headers.insert("hello".to_owned(), "world".to_owned());

    let garbage = [
        without_saga,
        bad_saga,
        without_correlation,
        without_status,
        plain,
    ];
    let count = garbage.len() as u64;
    let mut garbage_ids: Vec<Uuid> = garbage.iter().map(|message| message.id).collect();
    for message in garbage {
        harness.broker.publish(message).await.expect("published");
    }
    // Counted as dead-lettered once set aside, after being counted as malformed.
    eventually(|| harness.manager.reply_stats().dead_lettered == count).await;
    assert_eq!(
        ReplyCounts::from(harness.manager.reply_stats()),
        ReplyCounts {
            applied: 0,
            ignored: 0,
            unknown: 0,
            malformed: count,
            failed: 0,
            dead_lettered: count,
        }
    );
    let letters = harness.broker.dead_letters("orderReply");
    let mut dead: Vec<Uuid> = letters
        .iter()
        .filter_map(|letter| letter.message().map(|message| message.id))
        .collect();
    dead.sort();
    garbage_ids.sort();
    assert_eq!(dead, garbage_ids, "{letters:?}");
    for letter in &letters {
        assert!(
            letter.reason.starts_with("message on `orderReply`"),
            "{}",
            letter.reason
        );
    }
    // Nothing changed, and the listener still works.
    assert_eq!(stored(&harness, id).status, SagaStatus::Paused);

    let _participants = harness.accepting(&["order", "ticket"]).await;
    harness.broker.publish(valid).await.expect("published");
    eventually(|| harness.manager.reply_stats().applied == 1).await;
    assert_eq!(
        ReplyCounts::from(harness.manager.reply_stats()),
        ReplyCounts {
            applied: 1,
            ignored: 0,
            unknown: 0,
            malformed: count,
            failed: 0,
            dead_lettered: count,
        }
    );
    let record = stored(&harness, id);
    assert_eq!(record.status, SagaStatus::Finished);
    assert_eq!(
        stored_counts(&harness, &saga, id).await,
        counts(1, 0, Some("T-1"))
    );
    // What the saga sent (the garbage published above by this test left out).
    let saga_topics: Vec<String> = harness
        .sent_topics()
        .into_iter()
        .filter(|topic| topic != "orderReply")
        .collect();
    assert_eq!(
        saga_topics,
        vec![
            "CreateTicket",
            "_ReserveOrderTransaction",
            "_ReserveTicketTransaction",
            "_CommitOrderTransaction",
            "_CommitTicketTransaction",
        ]
    );
}

#[tokio::test]
async fn a_valid_reply_through_the_broker_is_applied_by_the_listener() {
    let harness = Harness::new().await;
    let _participants = harness.accepting(&["order", "ticket"]).await;
    let saga = two_step_saga();
    let id = start_paused(&harness, &saga, RunOptions::new()).await;
    let ticket = only_command(&harness, "CreateTicket");

    harness
        .broker
        .publish(
            ticket
                .reply("ticket", SagaResponseStatus::Success, json!("T-1"))
                .expect("the command names its reply topic"),
        )
        .await
        .expect("published");
    eventually(|| harness.manager.reply_stats().applied == 1).await;
    let record = stored(&harness, id);
    assert_eq!(record.status, SagaStatus::Paused);
    assert_eq!(record.paused_step.as_deref(), Some("payment"));
    assert!(record.steps[0].related_services().contains("ticket"));

    let payment = only_command(&harness, "CreatePayment");
    harness
        .broker
        .publish(
            payment
                .reply("ticket", SagaResponseStatus::Error, json!("P-0"))
                .expect("the command names its reply topic"),
        )
        .await
        .expect("published");
    eventually(|| harness.manager.reply_stats().applied == 2).await;
    let record = stored(&harness, id);
    assert_eq!(record.status, SagaStatus::Finished);
    assert_eq!(
        stored_counts(&harness, &saga, id).await,
        counts(1, 1, Some("P-0"))
    );
    // A duplicate through the broker is counted as ignored.
    harness
        .broker
        .publish(
            payment
                .reply("ticket", SagaResponseStatus::Success, json!("P-1"))
                .expect("the command names its reply topic"),
        )
        .await
        .expect("published");
    eventually(|| harness.manager.reply_stats().ignored == 1).await;
    assert_eq!(
        ReplyCounts::from(harness.manager.reply_stats()),
        ReplyCounts {
            applied: 2,
            ignored: 1,
            unknown: 0,
            malformed: 0,
            failed: 0,
            dead_lettered: 0,
        }
    );
    assert_eq!(stored(&harness, id), record);
}

#[tokio::test]
async fn handle_reply_refuses_a_message_without_the_saga_header() {
    let harness = Harness::new().await;
    let saga = one_step_saga();
    let id = start_paused(&harness, &saga, RunOptions::new()).await;
    let ticket = only_command(&harness, "CreateTicket");
    let mut message = ticket
        .reply("ticket", SagaResponseStatus::Success, json!("T-1"))
        .expect("the command names its reply topic");
    message.headers.remove(header::SAGA);

    let error = harness
        .manager
        .handle_reply(&message)
        .await
        .expect_err("not a saga reply");
    match error {
        SagaError::Message(saga_runtime::error::MessageError::MissingHeader { topic, header }) => {
            assert_eq!(topic, "orderReply");
            assert_eq!(header, "saga");
        }
        other => panic!("expected a message error, got {other:?}"),
    }
    assert_eq!(stored(&harness, id).status, SagaStatus::Paused);

    // The same message with its header is applied.
    message
        .headers
        .insert(header::SAGA.to_owned(), id.to_string());
    let _participants = harness.accepting(&["order", "ticket"]).await;
    let outcome = harness
        .manager
        .handle_reply(&message)
        .await
        .expect("a saga reply");
    assert_eq!(
        outcome,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
}
