//! The conformance suite every repository passes: one call checks an implementation against the
//! contract of [`SagaExecutionRepository`] (the original library's repository test case).
//!
//! ```
//! # tokio_test_block_on(async {
//! use saga_runtime::repository::InMemoryRepository;
//! use saga_testkit::conformance;
//! conformance::repository::check(&InMemoryRepository::new()).await;
//! # });
//! # fn tokio_test_block_on(future: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
//! # }
//! ```

use std::collections::BTreeSet;

use uuid::Uuid;

use saga_runtime::broker::BrokerMessage;
use saga_runtime::error::RepositoryError;
use saga_runtime::execution::{ExecutionRecord, SagaStatus, TransactionState};
use saga_runtime::repository::SagaExecutionRepository;
use serde_json::json;

/// Runs every check against `repository`, panicking with the broken rule on the first violation.
/// It stores, updates and deletes executions with fresh ids, so it may run against a repository in
/// use.
pub async fn check(repository: &dyn SagaExecutionRepository) {
    stores_and_loads_a_new_execution(repository).await;
    every_store_is_a_compare_and_set_on_the_version(repository).await;
    a_missing_execution_is_not_found(repository).await;
    delete_removes_and_is_idempotent(repository).await;
    executions_are_independent(repository).await;
    a_batch_stores_each_record_as_store_would(repository).await;
    pending_messages_are_cleared_only_for_their_version(repository).await;
    recovery_lists_the_executions_it_has_work_on(repository).await;
    listings_by_status_and_saga_oldest_first(repository).await;
    retention_deletes_only_old_finished_executions(repository).await;
}

/// A record as the engine writes it: paused at its second step (`charge`, a remote step waiting for
/// its reply), with a pending command, an owner and a lease.
pub fn sample_record(id: Uuid) -> ExecutionRecord {
    // Built from its stored form: the step and settings fields are the engine's own, and a
    // repository must keep whatever the engine writes, byte for byte.
    record_from_json(json!({
        "id": id,
        "saga": "conformance",
        "fingerprint": "0123456789abcdef",
        "status": "paused",
        "context": { "amount": 42, "owner": "ada" },
        "steps": [
            { "name": "reserve", "kind": "local", "status": "finished",
              "already_rollback": false, "related_services": ["order"] },
            { "name": "charge", "kind": "remote", "status": "paused-by-on-execute",
              "already_rollback": false, "related_services": ["order"],
              "request_id": Uuid::new_v4() },
        ],
        "paused_step": "charge",
        "already_rollback": false,
        "user": "ada",
        "headers": { "hello": "world" },
        "settings": { "autocommit": true },
        "deadline_ms": 1_700_000_000_000_u64,
        "transaction": "open",
        "version": 0,
        "created_at_ms": 1_700_000_000_000_u64,
        "updated_at_ms": 1_700_000_000_001_u64,
        "pending": [
            BrokerMessage::new("ChargeCard", json!({ "amount": 42 }))
                .with_reply_to("conformanceReply"),
        ],
        "owner": "instance-1",
        "lease_until_ms": 1_700_000_030_000_u64,
    }))
}

fn record_from_json(value: serde_json::Value) -> ExecutionRecord {
    ExecutionRecord::from_json(&value.to_string()).expect("the sample is a valid stored record")
}

/// A record at rest: finished, nothing pending, no owner.
fn finished_record(id: Uuid, saga: &str) -> ExecutionRecord {
    let mut record = serde_json::to_value(sample_record(id)).expect("records encode");
    record["saga"] = json!(saga);
    record["status"] = json!("finished");
    record["steps"][1]["status"] = json!("finished");
    for field in ["paused_step", "deadline_ms", "owner", "lease_until_ms"] {
        record[field] = serde_json::Value::Null;
    }
    record["pending"] = json!([]);
    record_from_json(record)
}

async fn stores_and_loads_a_new_execution(repository: &dyn SagaExecutionRepository) {
    let record = sample_record(Uuid::new_v4());
    let version = repository
        .store(&record)
        .await
        .expect("rule: a new execution (version 0) is stored");
    assert_eq!(version, 1, "rule: the first store gives version 1");
    let loaded = repository
        .load(record.id)
        .await
        .expect("rule: a stored execution loads");
    assert_eq!(loaded.version, 1, "rule: load returns the stored version");
    let mut expected = record.clone();
    expected.version = 1;
    assert_eq!(
        loaded, expected,
        "rule: load returns exactly what was stored (every field, the context verbatim)"
    );
}

async fn every_store_is_a_compare_and_set_on_the_version(repository: &dyn SagaExecutionRepository) {
    let mut record = sample_record(Uuid::new_v4());
    record.version = repository.store(&record).await.expect("stored");

    let mut finished = record.clone();
    finished.status = SagaStatus::Finished;
    finished.paused_step = None;
    let version = repository
        .store(&finished)
        .await
        .expect("rule: a store from the current version succeeds");
    assert_eq!(version, 2, "rule: each store increments the version");

    // `record` still has version 1: whoever holds it lost the race.
    match repository.store(&record).await {
        Err(RepositoryError::Conflict {
            id,
            expected,
            found,
        }) => {
            assert_eq!(id, record.id);
            assert_eq!(
                (expected, found),
                (1, 2),
                "rule: a conflict names both versions"
            );
        }
        other => panic!("rule: a store from a stale version is a Conflict, got {other:?}"),
    }
    let new_again = sample_record(record.id);
    assert!(
        matches!(
            repository.store(&new_again).await,
            Err(RepositoryError::Conflict {
                expected: 0,
                found: 2,
                ..
            })
        ),
        "rule: storing a new execution (version 0) over an existing one is a Conflict"
    );
    let loaded = repository.load(record.id).await.expect("loads");
    assert_eq!(
        (loaded.status, loaded.version),
        (SagaStatus::Finished, 2),
        "rule: a refused store changes nothing"
    );
}

async fn a_missing_execution_is_not_found(repository: &dyn SagaExecutionRepository) {
    let id = Uuid::new_v4();
    assert!(
        matches!(repository.load(id).await, Err(RepositoryError::NotFound { id: missing }) if missing == id),
        "rule: loading an unknown id is NotFound naming it"
    );
}

async fn delete_removes_and_is_idempotent(repository: &dyn SagaExecutionRepository) {
    let record = sample_record(Uuid::new_v4());
    repository.store(&record).await.expect("stored");
    repository
        .delete(record.id)
        .await
        .expect("rule: delete works");
    assert!(
        matches!(
            repository.load(record.id).await,
            Err(RepositoryError::NotFound { .. })
        ),
        "rule: a deleted execution is gone"
    );
    repository
        .delete(record.id)
        .await
        .expect("rule: deleting a missing execution is not an error");
    assert_eq!(
        repository.store(&record).await.expect("stored again"),
        1,
        "rule: after a delete the id starts again at version 1"
    );
}

async fn executions_are_independent(repository: &dyn SagaExecutionRepository) {
    let first = sample_record(Uuid::new_v4());
    let mut second = sample_record(Uuid::new_v4());
    second.user = Some("bob".to_owned());
    repository.store(&first).await.expect("stored");
    repository.store(&second).await.expect("stored");
    repository.delete(first.id).await.expect("deleted");
    let loaded = repository
        .load(second.id)
        .await
        .expect("rule: other executions are untouched");
    assert_eq!(loaded.user.as_deref(), Some("bob"));
}

async fn a_batch_stores_each_record_as_store_would(repository: &dyn SagaExecutionRepository) {
    let mut existing = sample_record(Uuid::new_v4());
    existing.version = repository.store(&existing).await.expect("stored");
    let new = sample_record(Uuid::new_v4());
    let stale = sample_record(existing.id); // version 0 over an existing row
    let mut update = existing.clone();
    update.status = SagaStatus::Finished;
    let results = repository.store_batch(&[&new, &stale, &update]).await;
    assert_eq!(
        results.len(),
        3,
        "rule: a batch gives one result per record"
    );
    assert_eq!(
        results[0].as_ref().ok(),
        Some(&1),
        "rule: a new record in a batch is stored"
    );
    assert!(
        matches!(
            results[1],
            Err(RepositoryError::Conflict { expected: 0, .. })
        ),
        "rule: a conflicting record in a batch is a Conflict, got {:?}",
        results[1]
    );
    assert_eq!(
        results[2].as_ref().ok(),
        Some(&2),
        "rule: a conflict in a batch does not undo the other records"
    );
    assert_eq!(repository.load(new.id).await.expect("loads").version, 1);
    assert_eq!(
        repository.load(existing.id).await.expect("loads").status,
        SagaStatus::Finished
    );
    assert!(
        repository.store_batch(&[]).await.is_empty(),
        "rule: an empty batch is fine"
    );
}

async fn pending_messages_are_cleared_only_for_their_version(
    repository: &dyn SagaExecutionRepository,
) {
    let mut record = sample_record(Uuid::new_v4());
    record.version = repository.store(&record).await.expect("stored");
    let mut next = record.clone();
    next.pending = vec![BrokerMessage::new("Refund", serde_json::json!(1))];
    next.version = repository.store(&next).await.expect("stored");
    assert!(
        !repository
            .mark_published(record.id, record.version)
            .await
            .expect("rule: mark_published works"),
        "rule: mark_published of an old version does nothing"
    );
    assert_eq!(
        repository.load(record.id).await.expect("loads").pending,
        next.pending,
        "rule: the newer version keeps its pending messages"
    );
    assert!(
        repository
            .mark_published(record.id, next.version)
            .await
            .expect("rule: mark_published works"),
        "rule: mark_published of the stored version clears"
    );
    let loaded = repository.load(record.id).await.expect("loads");
    assert!(
        loaded.pending.is_empty(),
        "rule: published messages are cleared"
    );
    assert_eq!(
        loaded.version, next.version,
        "rule: mark_published does not change the version"
    );
    assert!(
        !repository
            .mark_published(Uuid::new_v4(), 1)
            .await
            .expect("rule: mark_published of a missing execution is not an error"),
    );
}

async fn recovery_lists_the_executions_it_has_work_on(repository: &dyn SagaExecutionRepository) {
    let saga = format!("conformance-recovery-{}", Uuid::new_v4());
    let mut running = finished_record(Uuid::new_v4(), &saga);
    running.status = SagaStatus::Running;
    let mut committing = finished_record(Uuid::new_v4(), &saga);
    committing.transaction = TransactionState::Committing;
    let mut unpublished = finished_record(Uuid::new_v4(), &saga);
    unpublished.pending = vec![BrokerMessage::new("Refund", serde_json::json!(1))];
    let waiting_with_deadline = sample_record(Uuid::new_v4());
    let mut waiting = sample_record(Uuid::new_v4());
    waiting.deadline_ms = None;
    waiting.pending.clear();
    waiting.owner = None;
    waiting.lease_until_ms = None;
    let mut held = finished_record(Uuid::new_v4(), &saga);
    held.owner = Some("instance-2".to_owned());
    held.lease_until_ms = Some(1_700_000_030_000);
    let at_rest = finished_record(Uuid::new_v4(), &saga);
    let mut expected = BTreeSet::new();
    for record in [
        &running,
        &committing,
        &unpublished,
        &waiting_with_deadline,
        &held,
    ] {
        repository.store(record).await.expect("stored");
        assert!(record.needs_recovery());
        expected.insert(record.id);
    }
    for record in [&waiting, &at_rest] {
        repository.store(record).await.expect("stored");
        assert!(!record.needs_recovery());
    }

    // Page through everything, two at a time, as recovery does.
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = repository
            .list_recoverable(after, 2)
            .await
            .expect("rule: list_recoverable works");
        assert!(page.len() <= 2, "rule: a page holds at most `limit` ids");
        let Some(last) = page.last().copied() else {
            break;
        };
        listed.extend(page);
        after = Some(last);
    }
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        listed, sorted,
        "rule: pages come in id order, without repeats"
    );
    let listed: BTreeSet<Uuid> = listed.into_iter().collect();
    assert!(
        expected.is_subset(&listed),
        "rule: running, committing, unpublished, deadline-bound and held executions are listed"
    );
    assert!(
        !listed.contains(&waiting.id) && !listed.contains(&at_rest.id),
        "rule: executions at rest are not listed"
    );

    repository
        .mark_published(unpublished.id, 1)
        .await
        .expect("marked");
    let after_publish: BTreeSet<Uuid> = repository
        .list_recoverable(None, usize::MAX / 2)
        .await
        .expect("lists")
        .into_iter()
        .collect();
    assert!(
        !after_publish.contains(&unpublished.id),
        "rule: once its messages are published, a finished execution is no longer listed"
    );
    assert!(after_publish.contains(&running.id));
}

async fn listings_by_status_and_saga_oldest_first(repository: &dyn SagaExecutionRepository) {
    let saga = format!("conformance-listing-{}", Uuid::new_v4());
    let mut older = finished_record(Uuid::new_v4(), &saga);
    older.created_at_ms = 1_000;
    let mut newer = finished_record(Uuid::new_v4(), &saga);
    newer.created_at_ms = 2_000;
    let mut paused = sample_record(Uuid::new_v4());
    paused.saga = saga.clone();
    paused.created_at_ms = 3_000;
    for record in [&newer, &paused, &older] {
        repository.store(record).await.expect("stored");
    }
    assert_eq!(
        repository
            .list_by_saga(&saga)
            .await
            .expect("rule: list_by_saga works"),
        vec![older.id, newer.id, paused.id],
        "rule: list_by_saga lists the saga's executions, oldest first"
    );
    let finished = repository
        .list_by_status(SagaStatus::Finished)
        .await
        .expect("rule: list_by_status works");
    let position = |id| finished.iter().position(|listed| *listed == id);
    assert!(
        matches!((position(older.id), position(newer.id)), (Some(a), Some(b)) if a < b),
        "rule: list_by_status lists the executions in that status, oldest first"
    );
    assert_eq!(
        position(paused.id),
        None,
        "rule: other statuses are not listed"
    );
}

async fn retention_deletes_only_old_finished_executions(repository: &dyn SagaExecutionRepository) {
    let saga = format!("conformance-retention-{}", Uuid::new_v4());
    // Timestamps in 1970, so that no other execution in a shared repository is that old.
    let mut old_finished = finished_record(Uuid::new_v4(), &saga);
    old_finished.updated_at_ms = 1_000;
    let mut old_paused = sample_record(Uuid::new_v4());
    old_paused.updated_at_ms = 1_000;
    let mut recent_finished = finished_record(Uuid::new_v4(), &saga);
    recent_finished.updated_at_ms = 5_000;
    let mut old_unpublished = finished_record(Uuid::new_v4(), &saga);
    old_unpublished.updated_at_ms = 1_000;
    old_unpublished.pending = vec![BrokerMessage::new("Refund", serde_json::json!(1))];
    for record in [
        &old_finished,
        &old_paused,
        &recent_finished,
        &old_unpublished,
    ] {
        repository.store(record).await.expect("stored");
    }
    let deleted = repository
        .delete_finished_before(2_000)
        .await
        .expect("rule: delete_finished_before works");
    assert!(deleted >= 1, "rule: retention reports what it deleted");
    assert!(
        matches!(
            repository.load(old_finished.id).await,
            Err(RepositoryError::NotFound { .. })
        ),
        "rule: an old finished execution is deleted"
    );
    repository
        .load(old_paused.id)
        .await
        .expect("rule: an unfinished execution is kept however old");
    repository
        .load(recent_finished.id)
        .await
        .expect("rule: a recent finished execution is kept");
    repository
        .load(old_unpublished.id)
        .await
        .expect("rule: a finished execution recovery still has work on is kept however old");
}
