//! Recovery after a stop: each rule of the recovery (see `saga_runtime::manager::RecoveryReport`
//! and the manual's "Durability and recovery") on an execution left in the state a stop at that
//! point leaves, plus leases between instances, reloading after a lost race, the storage back-off
//! and executions that cannot be recovered.
//!
//! A stop is simulated in process by a repository that "dies" after a number of stores: every
//! later store fails, so the manager stores nothing more, exactly as if the process had stopped
//! just before that store (no compensation runs without its intent stored first). A new manager on
//! the surviving repository is the restarted process. The real `kill -9` runs are in
//! `crash_matrix.rs`.

use std::sync::Arc;
use std::time::Duration;

use saga_runtime::broker::Broker;
use saga_runtime::broker::BrokerMessage;
use saga_runtime::committer::Phase;
use saga_runtime::error::LoadError;
use saga_runtime::execution::ExecutionRecord;
use saga_runtime::manager::{RecoveryReport, ReplyOutcome};
use saga_runtime::prelude::*;
use saga_runtime::repository::SqliteRepository;
use saga_runtime::wiring::*;
use saga_testkit::ParticipantEvent;
use saga_tests::faulty::{DyingRepository, Outage};
use saga_tests::jobs::{Job, count, effect, effects, job, local_saga, remote_saga, ticket};
use saga_tests::{eventually, reply_to};
use serde_json::json;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Set-up

struct World {
    broker: InProcessBroker,
    repository: Arc<dyn SagaExecutionRepository>,
}

impl World {
    fn new() -> Self {
        Self {
            broker: InProcessBroker::with_history(),
            repository: Arc::new(InMemoryRepository::new()),
        }
    }

    fn registry() -> Registry {
        Registry::empty()
            .with_definition(local_saga())
            .and_then(|registry| registry.with_definition(remote_saga()))
            .expect("distinct names")
    }

    /// A manager named `instance` on `repository`, without start-up recovery (the tests call
    /// `recover` themselves, to look at its report) and without storage retries.
    async fn manager_on(
        &self,
        repository: Arc<dyn SagaExecutionRepository>,
        instance: &str,
    ) -> SagaManager {
        SagaManager::builder("order")
            .broker(Arc::new(self.broker.clone()))
            .repository(repository)
            .registry(Self::registry())
            .instance(instance)
            .recover_on_start(false)
            .storage_retry(Duration::ZERO)
            .commit_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("the manager starts")
    }

    /// A manager whose repository dies after `stores` stores.
    async fn dying_after(&self, stores: usize) -> SagaManager {
        let dying = DyingRepository::new(Arc::clone(&self.repository), stores);
        self.manager_on(dying, "order-1").await
    }

    /// The restarted process: same instance name, healthy repository.
    async fn restarted(&self) -> SagaManager {
        self.manager_on(Arc::clone(&self.repository), "order-1")
            .await
    }

    async fn record(&self, id: Uuid) -> ExecutionRecord {
        self.repository.load(id).await.expect("stored")
    }

    /// The only execution of saga `saga`.
    async fn only(&self, saga: &str) -> Uuid {
        let ids = self.repository.list_by_saga(saga).await.expect("lists");
        assert_eq!(ids.len(), 1, "one execution of {saga}");
        ids[0]
    }

    fn commands(&self, topic: &str) -> Vec<BrokerMessage> {
        self.broker
            .history()
            .into_iter()
            .filter(|message| message.topic == topic)
            .collect()
    }
}

fn no_autocommit() -> RunOptions {
    RunOptions::new().autocommit(false).raise_on_error(false)
}

fn assert_at_rest(record: &ExecutionRecord) {
    assert_eq!(record.owner, None, "no instance holds it");
    assert!(record.pending.is_empty(), "nothing is left to publish");
    assert!(!record.needs_recovery(), "recovery has nothing left to do");
}

// ---------------------------------------------------------------------------------------------
// Rule 3: forward

#[tokio::test]
async fn a_run_whose_claim_was_never_stored_says_the_saga_did_not_start() {
    let world = World::new();
    let dying = world.dying_after(0).await; // not even the claim is stored
    let error = dying
        .run(local_saga(), job(false), no_autocommit())
        .await
        .expect_err("the claim fails");
    assert!(matches!(error, SagaError::Repository(_)), "{error}");
    assert_eq!(error.may_still_finish(), None, "nothing to wait for");
    let stored = world.repository.list_by_saga("recovery-local").await;
    assert!(stored.expect("lists").is_empty());
}

#[tokio::test]
async fn a_stop_before_the_first_store_after_the_claim_runs_the_local_steps_again() {
    let world = World::new();
    let job = job(false);
    let dying = world.dying_after(1).await; // the claim is stored; the end is not
    let error = dying
        .run(local_saga(), job.clone(), no_autocommit())
        .await
        .expect_err("the final store fails");
    // Stored before it failed: the caller is told the saga may still finish.
    let SagaError::MayStillFinish { cause, .. } = &error else {
        panic!("expected MayStillFinish, got {error}");
    };
    assert!(matches!(**cause, SagaError::Repository(_)), "{error}");
    let id = world.only("recovery-local").await;
    assert_eq!(error.may_still_finish(), Some(id));
    let stored = world.record(id).await;
    assert_eq!(stored.status, SagaStatus::Created);
    assert_eq!(stored.owner.as_deref(), Some("order-1"));
    assert!(stored.needs_recovery());

    let report = world.restarted().await.recover().await;
    assert_eq!(report.resumed, 1, "{report}");
    assert!(report.failures.is_empty(), "{report:?}");
    let record = world.record(id).await;
    assert_eq!(record.status, SagaStatus::Finished);
    assert_at_rest(&record);
    // At least once: the steps ran before the stop and again after it.
    assert_eq!(
        effects(&job.tag),
        ["do a", "do b", "do c", "do a", "do b", "do c"]
    );
}

#[tokio::test]
async fn a_recovery_sweep_changes_nothing_on_executions_at_rest() {
    let world = World::new();
    let manager = world.restarted().await;
    let job = job(false);
    manager
        .run(local_saga(), job.clone(), no_autocommit())
        .await
        .expect("runs");
    let id = world.only("recovery-local").await;
    let before = world.record(id).await;
    assert_at_rest(&before);
    let report = manager.recover().await;
    assert!(report.is_empty(), "{report}");
    assert_eq!(world.record(id).await, before);
    assert_eq!(effects(&job.tag), ["do a", "do b", "do c"]);
}

// ---------------------------------------------------------------------------------------------
// Rule 2: compensation at most once

#[tokio::test]
async fn a_stop_in_the_middle_of_compensation_never_runs_a_compensation_twice() {
    let world = World::new();
    let job = job(true);
    // Stores: the claim, the intent to undo b; the intent to undo a fails (the stop).
    let dying = world.dying_after(2).await;
    let _ = dying.run(local_saga(), job.clone(), no_autocommit()).await;
    assert_eq!(effects(&job.tag), ["do a", "do b", "do c", "undo b"]);
    let id = world.only("recovery-local").await;
    let stored = world.record(id).await;
    assert_eq!(stored.status, SagaStatus::Running);
    assert_eq!(stored.steps[1].status(), StepStatus::RunningOnFailure);

    let report = world.restarted().await.recover().await;
    assert_eq!(report.compensated, 1, "{report}");
    assert_eq!(report.interrupted_compensations, vec![(id, "b".to_owned())]);
    let record = world.record(id).await;
    assert_eq!(record.status, SagaStatus::Errored);
    assert_at_rest(&record);
    // b's compensation may have run (it did): not again; a's runs once, after it.
    assert_eq!(
        effects(&job.tag),
        ["do a", "do b", "do c", "undo b", "undo a"]
    );
    let b = &record.steps[1];
    assert_eq!(b.status(), StepStatus::ErroredOnFailure);
    assert!(b.already_rollback());
    assert!(
        b.error()
            .is_some_and(|error| error.contains("not run again")),
        "{:?}",
        b.error()
    );
    assert!(record.steps[0].already_rollback());
}

#[tokio::test]
async fn a_stop_before_any_compensation_intent_runs_forward_again_and_compensates_once() {
    let world = World::new();
    let job = job(true);
    let dying = world.dying_after(1).await; // only the claim
    let _ = dying.run(local_saga(), job.clone(), no_autocommit()).await;
    // No intent could be stored, so no compensation ran.
    assert_eq!(effects(&job.tag), ["do a", "do b", "do c"]);

    let report = world.restarted().await.recover().await;
    assert_eq!(report.resumed, 1, "{report}");
    let id = world.only("recovery-local").await;
    let record = world.record(id).await;
    assert_eq!(record.status, SagaStatus::Errored);
    assert_at_rest(&record);
    assert_eq!(
        effects(&job.tag),
        [
            "do a", "do b", "do c", "do a", "do b", "do c", "undo b", "undo a"
        ]
    );
}

#[tokio::test]
async fn a_stop_after_the_last_compensation_ran_finishes_without_running_it_again() {
    let world = World::new();
    let job = job(true);
    // The claim and both intents are stored; the final store fails.
    let dying = world.dying_after(3).await;
    let _ = dying.run(local_saga(), job.clone(), no_autocommit()).await;
    assert_eq!(
        effects(&job.tag),
        ["do a", "do b", "do c", "undo b", "undo a"]
    );
    let report = world.restarted().await.recover().await;
    assert_eq!(report.compensated, 1, "{report}");
    let id = world.only("recovery-local").await;
    assert_eq!(report.interrupted_compensations, vec![(id, "a".to_owned())]);
    let record = world.record(id).await;
    assert_eq!(record.status, SagaStatus::Errored);
    assert_at_rest(&record);
    assert_eq!(
        effects(&job.tag),
        ["do a", "do b", "do c", "undo b", "undo a"],
        "nothing ran twice"
    );
}

// ---------------------------------------------------------------------------------------------
// Rules 1 and 4: messages

#[tokio::test]
async fn a_paused_execution_held_by_a_stopped_instance_gets_its_command_again() {
    let world = World::new();
    let job = job(false);
    // Stores: claim, pause; then the reply's claim; its final store fails.
    let dying = world.dying_after(3).await;
    let id = dying
        .run(
            remote_saga(),
            job.clone(),
            no_autocommit().pause_on_disk(true),
        )
        .await
        .expect("pauses")
        .id();
    let command = world.commands("CreateTicket").pop().expect("sent");
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-1"),
        &["ticket"],
    );
    dying.resume(reply.clone()).await.expect_err("the stop");
    drop(dying);
    assert_eq!(count(&job.tag, "ticket created"), 1);
    let stored = world.record(id).await;
    assert_eq!(stored.status, SagaStatus::Paused);
    assert_eq!(stored.owner.as_deref(), Some("order-1"));

    let manager = world.restarted().await;
    let report = manager.recover().await;
    assert_eq!((report.released, report.resent), (1, 1), "{report}");
    let sent = world.commands("CreateTicket");
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1].id, command.id,
        "the same command, for deduplication"
    );
    assert_eq!(sent[1].payload, command.payload);
    assert_at_rest(&world.record(id).await);

    // The participant answers the command again; the saga goes on from there.
    let outcome = manager.resume(reply).await.expect("applies");
    assert!(matches!(
        outcome,
        ReplyOutcome::Applied {
            status: SagaStatus::Finished,
            ..
        }
    ));
    // At least once: the reply's handler and `b` ran before the stop (whose store failed) and
    // again now.
    assert_eq!(count(&job.tag, "ticket created"), 2);
    assert_eq!(count(&job.tag, "do b"), 2);
    assert_eq!(
        count(&job.tag, "do a"),
        1,
        "a's completion was stored: it did not run again"
    );
}

#[tokio::test]
async fn messages_stored_but_not_marked_published_are_published_again() {
    let world = World::new();
    let job = job(false);
    // Claim and pause are stored; marking the command published fails (the stop).
    let dying = world.dying_after(2).await;
    let id = dying
        .run(
            remote_saga(),
            job.clone(),
            no_autocommit().pause_on_disk(true),
        )
        .await
        .expect("pauses")
        .id();
    let stored = world.record(id).await;
    assert_eq!(
        stored.pending.len(),
        1,
        "the command is kept with the state"
    );
    assert!(stored.needs_recovery());

    let report = world.restarted().await.recover().await;
    assert_eq!(report.republished, 1, "{report}");
    let sent = world.commands("CreateTicket");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], sent[1], "the same message, id included");
    assert_at_rest(&world.record(id).await);
}

// ---------------------------------------------------------------------------------------------
// Rule 5: deadlines

#[tokio::test]
async fn a_deadline_that_passed_while_no_process_ran_expires_at_start_up() {
    let world = World::new();
    let job = job(false);
    let manager = world.restarted().await;
    let id = manager
        .run(
            remote_saga(),
            job.clone(),
            no_autocommit()
                .pause_on_disk(true)
                .timeout(Duration::from_millis(50)),
        )
        .await
        .expect("pauses")
        .id();
    drop(manager); // its timer dies with it
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(world.record(id).await.status, SagaStatus::Paused);

    let manager = world.restarted().await;
    let report = manager.recover().await;
    assert_eq!(report.timers, 1, "{report}");
    let repository = Arc::clone(&world.repository);
    let mut status = SagaStatus::Paused;
    for _ in 0..500 {
        status = repository.load(id).await.expect("stored").status;
        if status == SagaStatus::Errored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(status, SagaStatus::Errored, "the step timed out");
    assert_eq!(effects(&job.tag), ["do a", "undo a"]);
    assert_eq!(world.commands("CancelTicket").len(), 1);
    assert_at_rest(&world.record(id).await);
}

// ---------------------------------------------------------------------------------------------
// Rule 6: commit

#[tokio::test]
async fn a_commit_interrupted_after_committing_was_stored_is_committed_again() {
    let world = World::new();
    let shared: Arc<dyn Broker> = Arc::new(world.broker.clone());
    let mut participants = Vec::new();
    for service in ["order", "ticket"] {
        participants.push(
            saga_testkit::ScriptedParticipant::builder(service, Arc::clone(&shared))
                .spawn()
                .await
                .expect("starts"),
        );
    }
    let job = job(false);
    // Claim, pause, reply claim, `committing`; the decision (`committed`, stored with the commit
    // messages) fails to store, so nobody was told to commit.
    let dying = world.dying_after(4).await;
    let id = dying
        .run(
            remote_saga(),
            job.clone(),
            RunOptions::new().pause_on_disk(true),
        )
        .await
        .expect("pauses")
        .id();
    let command = world.commands("CreateTicket").pop().expect("sent");
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-1"),
        &["ticket"],
    );
    dying.resume(reply).await.expect_err("the stop");
    let stored = world.record(id).await;
    assert_eq!(
        stored.transaction,
        saga_runtime::execution::TransactionState::Committing
    );

    let report = world.restarted().await.recover().await;
    assert_eq!(report.committed, 1, "{report}");
    let record = world.record(id).await;
    assert_eq!(record.status, SagaStatus::Finished);
    assert_eq!(
        record.transaction,
        saga_runtime::execution::TransactionState::Committed
    );
    assert_at_rest(&record);
    assert_eq!(count(&job.tag, "do b"), 1, "the steps did not run again");
    let count_phase = |participant: &saga_testkit::ScriptedParticipant, wanted: Phase| {
        participant
            .log()
            .iter()
            .filter(|event| {
                matches!(event, ParticipantEvent::Transaction { phase, .. } if *phase == wanted)
            })
            .count()
    };
    for participant in &participants {
        assert_eq!(
            (
                count_phase(participant, Phase::Reserve),
                count_phase(participant, Phase::Commit)
            ),
            (2, 1),
            "reserved twice, committed once: {:?}",
            participant.log()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Executions that cannot be recovered

#[tokio::test]
async fn unrecoverable_executions_are_reported_left_untouched_and_do_not_stop_the_others() {
    let world = World::new();
    let memory = Arc::new(InMemoryRepository::new());
    let world = World {
        repository: memory.clone(),
        ..world
    };
    // A good execution left running.
    let job = job(false);
    let _ = world
        .dying_after(1)
        .await
        .run(local_saga(), job.clone(), no_autocommit())
        .await;
    let good = world.only("recovery-local").await;

    // A corrupt row.
    let corrupt = Uuid::new_v4();
    memory.put_raw(corrupt, "{\"id\": \"truncated");
    // An execution of a saga nobody registered.
    let mut unknown = world.record(good).await;
    unknown.id = Uuid::new_v4();
    unknown.saga = "no-such-saga".to_owned();
    unknown.version = 0;
    memory.store(&unknown).await.expect("stored");
    // An execution stored by an older definition of the saga.
    let mut changed = world.record(good).await;
    changed.id = Uuid::new_v4();
    changed.fingerprint = saga_runtime::definition::Fingerprint::from_value(42);
    changed.version = 0;
    memory.store(&changed).await.expect("stored");
    let untouched = [
        memory.raw(corrupt),
        memory.raw(unknown.id),
        memory.raw(changed.id),
    ];

    let manager = world.restarted().await;
    for sweep in 0..2 {
        let report = manager.recover().await;
        assert_eq!(report.resumed, usize::from(sweep == 0), "{report}");
        let failed: Vec<Uuid> = report.failures.iter().map(|(id, _)| *id).collect();
        assert_eq!(failed.len(), 3, "{report:?}");
        for id in [corrupt, unknown.id, changed.id] {
            assert!(failed.contains(&id), "{id} reported: {report:?}");
        }
        let reason = |id| {
            report
                .failures
                .iter()
                .find(|(failed, _)| *failed == id)
                .map(|(_, reason)| reason.clone())
                .unwrap_or_default()
        };
        assert!(
            reason(corrupt).contains(&corrupt.to_string()),
            "{}",
            reason(corrupt)
        );
        assert!(
            reason(unknown.id).contains("no-such-saga"),
            "{}",
            reason(unknown.id)
        );
        let mismatch = reason(changed.id);
        assert!(
            mismatch.contains("recovery-local")
                && mismatch.contains(&changed.fingerprint.to_string())
                && mismatch.contains(&local_saga().fingerprint().to_string()),
            "names the saga and both fingerprints: {mismatch}"
        );
        assert_eq!(
            [
                memory.raw(corrupt),
                memory.raw(unknown.id),
                memory.raw(changed.id)
            ],
            untouched,
            "left untouched"
        );
    }
    assert_eq!(world.record(good).await.status, SagaStatus::Finished);
}

#[tokio::test]
async fn a_reply_to_an_execution_of_a_changed_definition_is_an_error_that_changes_nothing() {
    let world = World::new();
    let manager = world.restarted().await;
    let id = manager
        .run(
            remote_saga(),
            job(false),
            no_autocommit().pause_on_disk(true),
        )
        .await
        .expect("pauses")
        .id();
    let command = world.commands("CreateTicket").pop().expect("sent");
    let mut record = world.record(id).await;
    let stored_fingerprint = saga_runtime::definition::Fingerprint::from_value(7);
    record.fingerprint = stored_fingerprint;
    record.version = world.repository.store(&record).await.expect("stored");
    let before = world.record(id).await;

    let error = manager
        .resume(reply_to(
            &command,
            SagaResponseStatus::Success,
            json!("T-1"),
            &["ticket"],
        ))
        .await
        .expect_err("the definition changed");
    match &error {
        SagaError::Load(LoadError::FingerprintMismatch {
            id: failed,
            saga,
            stored,
            registered,
        }) => {
            assert_eq!(*failed, id);
            assert_eq!(saga, "recovery-remote");
            assert_eq!(*stored, stored_fingerprint);
            assert_eq!(*registered, remote_saga().fingerprint());
        }
        other => panic!("expected a fingerprint mismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("recovery-remote") && message.contains(&stored_fingerprint.to_string())
    );
    assert_eq!(
        world.record(id).await,
        before,
        "the stored execution is left untouched"
    );
}

// ---------------------------------------------------------------------------------------------
// Several instances

#[tokio::test]
async fn an_execution_held_by_a_live_instance_is_left_to_it() {
    let world = World::new();
    let job = job(false);
    let dying = world.dying_after(3).await;
    let id = dying
        .run(
            remote_saga(),
            job.clone(),
            no_autocommit().pause_on_disk(true),
        )
        .await
        .expect("pauses")
        .id();
    let command = world.commands("CreateTicket").pop().expect("sent");
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-1"),
        &["ticket"],
    );
    dying.resume(reply.clone()).await.expect_err("the stop");
    let held = world.record(id).await;

    // Another instance, while order-1's lease runs (2 minutes by default).
    let other = world
        .manager_on(Arc::clone(&world.repository), "order-2")
        .await;
    let report = other.recover().await;
    assert_eq!(report.held_elsewhere, 1, "{report}");
    assert_eq!(world.record(id).await, held, "left alone");
    match other.resume(reply.clone()).await {
        Err(SagaError::Busy { id: busy, owner }) => {
            assert_eq!((busy, owner.as_str()), (id, "order-1"));
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(count(&job.tag, "ticket created"), 1);
}

#[tokio::test]
async fn an_instance_takes_over_an_execution_once_its_owner_lease_ran_out() {
    let world = World::new();
    let job = job(false);
    let dying = DyingRepository::new(Arc::clone(&world.repository), 3);
    let short_lease = SagaManager::builder("order")
        .broker(Arc::new(world.broker.clone()))
        .repository(dying)
        .registry(World::registry())
        .instance("order-1")
        .lease(Duration::from_millis(100))
        .recover_on_start(false)
        .storage_retry(Duration::ZERO)
        .build()
        .await
        .expect("starts");
    let id = short_lease
        .run(
            remote_saga(),
            job.clone(),
            no_autocommit().pause_on_disk(true),
        )
        .await
        .expect("pauses")
        .id();
    let command = world.commands("CreateTicket").pop().expect("sent");
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-1"),
        &["ticket"],
    );
    short_lease
        .resume(reply.clone())
        .await
        .expect_err("the stop");
    tokio::time::sleep(Duration::from_millis(150)).await;

    let other = world
        .manager_on(Arc::clone(&world.repository), "order-2")
        .await;
    let report = other.recover().await;
    assert_eq!((report.released, report.resent), (1, 1), "{report}");
    other.resume(reply).await.expect("applies");
    assert_eq!(world.record(id).await.status, SagaStatus::Finished);
}

#[tokio::test]
async fn two_instances_handed_the_same_reply_apply_it_once() {
    let db = std::env::temp_dir().join(format!("saga-recovery-{}.db", Uuid::new_v4()));
    let sqlite: Arc<dyn SagaExecutionRepository> =
        Arc::new(SqliteRepository::open(&db).await.expect("opens"));
    let world = World {
        broker: InProcessBroker::with_history(),
        repository: Arc::clone(&sqlite),
    };
    let first = world.manager_on(Arc::clone(&sqlite), "order-1").await;
    let second = world.manager_on(Arc::clone(&sqlite), "order-2").await;
    for _ in 0..20 {
        let job = job(false);
        let id = first
            .run(
                remote_saga(),
                job.clone(),
                no_autocommit().pause_on_disk(true),
            )
            .await
            .expect("pauses")
            .id();
        let command = world
            .commands("CreateTicket")
            .into_iter()
            .rfind(|message| message.saga_id().ok() == Some(id))
            .expect("sent");
        let reply = reply_to(
            &command,
            SagaResponseStatus::Success,
            json!("T-1"),
            &["ticket"],
        );
        let (a, b) = tokio::join!(first.resume(reply.clone()), second.resume(reply.clone()));
        let applied = [&a, &b]
            .iter()
            .filter(|outcome| matches!(outcome, Ok(ReplyOutcome::Applied { .. })))
            .count();
        for outcome in [&a, &b] {
            assert!(
                matches!(
                    outcome,
                    Ok(ReplyOutcome::Applied { .. } | ReplyOutcome::Ignored { .. })
                        | Err(SagaError::Busy { .. })
                ),
                "{outcome:?}"
            );
        }
        // A reply refused as Busy is redelivered in a real deployment: do that here.
        if applied == 0 {
            first.resume(reply).await.expect("applies");
        }
        assert_eq!(count(&job.tag, "ticket created"), 1, "{a:?} {b:?}");
        assert_eq!(count(&job.tag, "do b"), 1);
        assert_eq!(world.record(id).await.status, SagaStatus::Finished);
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

// ---------------------------------------------------------------------------------------------
// The database unavailable for a while

#[tokio::test]
async fn the_manager_backs_off_while_the_database_is_down_and_loses_nothing() {
    let world = World::new();
    let outage = Outage::new(Arc::clone(&world.repository));
    outage.set_down(true);
    let manager = SagaManager::builder("order")
        .broker(Arc::new(world.broker.clone()))
        .repository(outage.clone())
        .registry(World::registry())
        .recover_on_start(false)
        .build()
        .await
        .expect("starts");
    let job = job(false);
    let run = tokio::spawn({
        let job = job.clone();
        async move { manager.run(local_saga(), job, no_autocommit()).await }
    });
    eventually(|| outage.refused() >= 3).await;
    assert!(!run.is_finished(), "the run waits for the database");
    outage.set_down(false);
    let execution = run
        .await
        .expect("no panic")
        .expect("the run succeeds once the database is back")
        .execution()
        .expect("returned");
    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(
        effects(&job.tag),
        ["do a", "do b", "do c"],
        "each step ran once"
    );
    let record = world.record(execution.id()).await;
    assert_eq!(record.status, SagaStatus::Finished);
    assert_at_rest(&record);
}

#[tokio::test]
async fn a_locked_sqlite_file_delays_the_saga_and_loses_nothing() {
    let db = std::env::temp_dir().join(format!("saga-locked-{}.db", Uuid::new_v4()));
    let sqlite = SqliteRepository::builder(&db)
        .busy_timeout(Duration::from_millis(20))
        .open()
        .await
        .expect("opens");
    let world = World {
        broker: InProcessBroker::with_history(),
        repository: Arc::new(sqlite.clone()),
    };
    // Take the write lock with another connection and hold it for a while.
    let mut locker = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(&db),
    )
    .await
    .expect("connects");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .expect("locks");
    // Default storage retries (30 s): the manager backs off while the file is locked.
    let manager = SagaManager::builder("order")
        .broker(Arc::new(world.broker.clone()))
        .repository(Arc::new(sqlite.clone()))
        .registry(World::registry())
        .recover_on_start(false)
        .build()
        .await
        .expect("starts");
    let job = job(false);
    let run = tokio::spawn({
        let job = job.clone();
        async move { manager.run(local_saga(), job, no_autocommit()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!run.is_finished(), "the run waits for the lock");
    sqlx::query("COMMIT")
        .execute(&mut locker)
        .await
        .expect("unlocks");
    let execution = run
        .await
        .expect("no panic")
        .expect("the run succeeds once the lock is gone")
        .execution()
        .expect("returned");
    assert_eq!(effects(&job.tag), ["do a", "do b", "do c"]);
    assert_at_rest(&world.record(execution.id()).await);
    drop(locker);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// The report type is public and printable (what `build` logs).
#[test]
fn a_recovery_report_prints_its_counts() {
    let report = RecoveryReport::default();
    assert!(report.is_empty());
    assert!(report.to_string().contains("0 examined"));
}

#[tokio::test]
async fn the_retention_setting_deletes_old_finished_executions_and_keeps_the_others() {
    let world = World::new();
    let build = |retention| {
        SagaManager::builder("order")
            .broker(Arc::new(world.broker.clone()))
            .repository(Arc::clone(&world.repository))
            .registry(World::registry())
            .recover_on_start(false)
            .retention(retention)
            .build()
    };
    let keep_an_hour = build(Duration::from_secs(3600)).await.expect("starts");
    let finished = keep_an_hour
        .run(local_saga(), job(false), no_autocommit())
        .await
        .expect("runs")
        .id();
    let errored = keep_an_hour
        .run(local_saga(), job(true), no_autocommit())
        .await
        .expect("runs")
        .id();
    assert_eq!(
        keep_an_hour.recover().await.deleted,
        0,
        "not an hour old yet"
    );
    world.record(finished).await;

    tokio::time::sleep(Duration::from_millis(5)).await;
    let keep_none = build(Duration::ZERO).await.expect("starts");
    assert_eq!(keep_none.recover().await.deleted, 1);
    assert!(matches!(
        world.repository.load(finished).await,
        Err(saga_runtime::error::RepositoryError::NotFound { .. })
    ));
    assert_eq!(
        world.record(errored).await.status,
        SagaStatus::Errored,
        "an errored execution is kept however old"
    );
}

// ---------------------------------------------------------------------------------------------
// Messages never overwritten unpublished; stale in-memory copies; sagas registered late

/// Fails the next `failures` publishes on `topic`, then delegates.
struct FlakyBroker {
    inner: InProcessBroker,
    topic: &'static str,
    failures: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Broker for FlakyBroker {
    async fn publish(
        &self,
        message: BrokerMessage,
    ) -> Result<(), saga_runtime::error::BrokerError> {
        use std::sync::atomic::Ordering;
        if message.topic == self.topic
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
        {
            return Err(saga_runtime::error::BrokerError::Other(
                "the broker is unreachable".into(),
            ));
        }
        self.inner.publish(message).await
    }

    async fn subscribe(
        &self,
        topic: &str,
    ) -> Result<saga_runtime::broker::Subscription, saga_runtime::error::BrokerError> {
        self.inner.subscribe(topic).await
    }
}

#[tokio::test]
async fn a_command_whose_publish_failed_goes_out_with_the_next_advance_not_lost() {
    let world = World::new();
    let broker = Arc::new(FlakyBroker {
        inner: world.broker.clone(),
        topic: "CreateTicket",
        failures: 1.into(),
    });
    let manager = SagaManager::builder("order")
        .broker(broker)
        .repository(Arc::clone(&world.repository))
        .registry(World::registry())
        .recover_on_start(false)
        .build()
        .await
        .expect("starts");
    let job = job(false);
    let error = manager
        .run(
            remote_saga(),
            job.clone(),
            no_autocommit().pause_on_disk(true),
        )
        .await
        .expect_err("the publish fails");
    let SagaError::MayStillFinish { cause, .. } = &error else {
        panic!("expected MayStillFinish, got {error}");
    };
    assert!(matches!(**cause, SagaError::Broker(_)), "{error}");
    let id = world.only("recovery-remote").await;
    assert_eq!(error.may_still_finish(), Some(id));
    let stored = world.record(id).await;
    assert_eq!(stored.status, SagaStatus::Paused);
    assert_eq!(stored.pending.len(), 1, "the command stays pending");
    assert!(world.commands("CreateTicket").is_empty());

    // A rollback by hand: its claim must not overwrite the pending command unpublished.
    manager.rollback(id).await.expect("rolls back");
    let topics: Vec<String> = world
        .broker
        .history()
        .into_iter()
        .map(|message| message.topic)
        .collect();
    assert_eq!(topics, ["CreateTicket"], "the command went out first");
    let record = world.record(id).await;
    assert_eq!(record.status, SagaStatus::Errored);
    assert_at_rest(&record);
    assert_eq!(effects(&job.tag), ["do a", "undo a"]);
}

#[tokio::test]
async fn a_reply_to_an_in_memory_copy_made_stale_by_another_instance_is_applied_to_the_stored_one()
{
    let world = World::new();
    let a = world
        .manager_on(Arc::clone(&world.repository), "order-a")
        .await;
    let b = world
        .manager_on(Arc::clone(&world.repository), "order-b")
        .await;
    let two_tickets = Arc::new(
        Saga::new("two-tickets")
            .remote_step("first")
            .on_execute(ticket)
            .remote_step("second")
            .on_execute(ticket)
            .commit()
            .expect("a valid saga"),
    );
    // Instance a waits in memory.
    let run = tokio::spawn({
        let (a, saga) = (a.clone(), Arc::clone(&two_tickets));
        async move { a.run(saga, job(false), no_autocommit()).await }
    });
    eventually(|| world.commands("CreateTicket").len() == 1).await;
    let first = world.commands("CreateTicket")[0].clone();
    b.register(Arc::clone(&two_tickets)).expect("registers");
    // Instance b gets the first reply and advances the stored execution to the second step.
    b.resume(reply_to(
        &first,
        SagaResponseStatus::Success,
        json!("T-1"),
        &["ticket"],
    ))
    .await
    .expect("applies");
    let second = world.commands("CreateTicket")[1].clone();
    // The second reply reaches a, whose copy still waits for the first.
    let outcome = a
        .resume(reply_to(
            &second,
            SagaResponseStatus::Success,
            json!("T-2"),
            &["ticket"],
        ))
        .await
        .expect("applied to the stored copy");
    assert!(
        matches!(
            outcome,
            ReplyOutcome::Applied {
                status: SagaStatus::Finished,
                ..
            }
        ),
        "{outcome:?}"
    );
    let id = first.saga_id().expect("names its saga");
    assert_eq!(world.record(id).await.status, SagaStatus::Finished);
    match run.await.expect("no panic") {
        Err(SagaError::Interrupted { reason, .. }) => {
            assert!(reason.to_string().contains("another instance"));
        }
        other => panic!("the waiting run hears that it was advanced elsewhere, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reply_for_a_saga_this_instance_does_not_know_yet_is_redelivered_not_dropped() {
    let world = World::new();
    let starter = world.restarted().await;
    let id = starter
        .run(
            remote_saga(),
            job(false),
            no_autocommit().pause_on_disk(true),
        )
        .await
        .expect("pauses")
        .id();
    drop(starter);
    let command = world.commands("CreateTicket").pop().expect("sent");
    // An instance that has not registered the saga receives the reply.
    let late = SagaManager::builder("order")
        .broker(Arc::new(world.broker.clone()))
        .repository(Arc::clone(&world.repository))
        .recover_on_start(false)
        .build()
        .await
        .expect("starts");
    world
        .broker
        .publish(
            command
                .reply("ticket", SagaResponseStatus::Success, json!("T-1"))
                .expect("names its reply topic"),
        )
        .await
        .expect("published");
    eventually(|| late.reply_stats().failed >= 1).await;
    assert_eq!(world.record(id).await.status, SagaStatus::Paused);
    // Once it knows the saga, the redelivered reply is applied.
    late.register(remote_saga()).expect("registers");
    eventually(|| late.reply_stats().applied == 1).await;
    assert_eq!(world.record(id).await.status, SagaStatus::Finished);
}

// ---------------------------------------------------------------------------------------------
// Sub-sagas: their compensation is one unit behind one stored intent

async fn always(_job: &Job) -> Result<bool, StepError> {
    Ok(true)
}
async fn do_x(job: &mut Job) -> Result<(), StepError> {
    effect(job, "do x");
    Ok(())
}
async fn undo_x(job: &mut Job) -> Result<(), StepError> {
    effect(job, "undo x");
    Ok(())
}
async fn do_y(job: &mut Job) -> Result<(), StepError> {
    effect(job, "do y");
    Err(StepError::msg("y refuses"))
}
async fn do_a(job: &mut Job) -> Result<(), StepError> {
    effect(job, "do a");
    Ok(())
}
async fn undo_a(job: &mut Job) -> Result<(), StepError> {
    effect(job, "undo a");
    Ok(())
}

/// `a`, then `route`: a sub-saga `x` (compensable), `y` (fails).
fn sub_saga_failing() -> Arc<SagaDefinition<Job>> {
    let inner = Saga::new("recovery-inner")
        .local_step("x")
        .on_execute(do_x)
        .on_failure(undo_x)
        .local_step("y")
        .on_execute(do_y)
        .commit()
        .expect("a valid sub-saga");
    Arc::new(
        Saga::new("recovery-outer")
            .local_step("a")
            .on_execute(do_a)
            .on_failure(undo_a)
            .conditional_step("route")
            .if_then(always, inner)
            .commit()
            .expect("a valid saga"),
    )
}

#[tokio::test]
async fn a_failure_inside_a_sub_saga_is_compensated_behind_a_stored_intent_never_twice() {
    let world = World::new();
    let registry = || {
        Registry::empty()
            .with_definition(sub_saga_failing())
            .expect("one saga")
    };
    // Stores: the claim, the intent to compensate `route` (its sub-saga's `x` is undone behind
    // it); the intent for `a` fails: the stop.
    let dying = SagaManager::builder("order")
        .broker(Arc::new(world.broker.clone()))
        .repository(DyingRepository::new(Arc::clone(&world.repository), 2))
        .registry(registry())
        .instance("order-1")
        .recover_on_start(false)
        .storage_retry(Duration::ZERO)
        .build()
        .await
        .expect("starts");
    let job = job(false);
    let _ = dying
        .run(sub_saga_failing(), job.clone(), no_autocommit())
        .await;
    drop(dying);
    assert_eq!(effects(&job.tag), ["do a", "do x", "do y", "undo x"]);
    let id = world.only("recovery-outer").await;
    let stored = world.record(id).await;
    assert_eq!(stored.steps[1].status(), StepStatus::RunningOnFailure);

    let restarted = SagaManager::builder("order")
        .broker(Arc::new(world.broker.clone()))
        .repository(Arc::clone(&world.repository))
        .registry(registry())
        .instance("order-1")
        .recover_on_start(false)
        .build()
        .await
        .expect("starts");
    let report = restarted.recover().await;
    assert_eq!(
        report.interrupted_compensations,
        vec![(id, "route".to_owned())]
    );
    let record = world.record(id).await;
    assert_eq!(record.status, SagaStatus::Errored);
    assert_at_rest(&record);
    // The sub-saga's compensation ran once (before the stop) and not again; `a`'s once.
    assert_eq!(
        effects(&job.tag),
        ["do a", "do x", "do y", "undo x", "undo a"]
    );
}
