//! The conformance suite every repository passes: one call checks an implementation against the
//! contract of [`SagaExecutionRepository`] (the original library's repository test case).
//!
//! ```
//! # tokio_test_block_on(async {
//! use saga_runtime::repository::{InMemoryRepository, conformance};
//! conformance::check(&InMemoryRepository::new()).await;
//! # });
//! # fn tokio_test_block_on(future: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
//! # }
//! ```

use std::collections::BTreeSet;

use serde_json::value::to_raw_value;
use uuid::Uuid;

use super::SagaExecutionRepository;
use crate::definition::Fingerprint;
use crate::error::RepositoryError;
use crate::execution::{ExecutionRecord, SagaStatus, StepExecution, StepStatus};

/// Runs every check against `repository`, panicking with the broken rule on the first violation.
/// It stores, updates and deletes executions with fresh ids, so it may run against a repository in
/// use.
pub async fn check(repository: &dyn SagaExecutionRepository) {
    stores_and_loads_a_new_execution(repository).await;
    every_store_is_a_compare_and_set_on_the_version(repository).await;
    a_missing_execution_is_not_found(repository).await;
    delete_removes_and_is_idempotent(repository).await;
    executions_are_independent(repository).await;
}

/// A record as the engine writes it: paused at its second step.
pub fn sample_record(id: Uuid) -> ExecutionRecord {
    let mut first = StepExecution::new("reserve", crate::definition::StepKind::Local);
    first.status = StepStatus::Finished;
    first.related_services = BTreeSet::from(["order".to_owned()]);
    let mut second = StepExecution::new("charge", crate::definition::StepKind::Remote);
    second.status = StepStatus::PausedByOnExecute;
    second.related_services = BTreeSet::from(["order".to_owned()]);
    second.request_id = Some(Uuid::new_v4());
    ExecutionRecord {
        id,
        saga: "conformance".to_owned(),
        fingerprint: Fingerprint::from_value(0x0123_4567_89ab_cdef),
        status: SagaStatus::Paused,
        context: to_raw_value(&serde_json::json!({ "amount": 42, "owner": "ada" }))
            .expect("JSON encodes"),
        steps: vec![first, second],
        paused_step: Some("charge".to_owned()),
        already_rollback: false,
        user: Some("ada".to_owned()),
        headers: [("hello".to_owned(), "world".to_owned())].into(),
        settings: Default::default(),
        deadline_ms: Some(1_700_000_000_000),
        transaction: Default::default(),
        version: 0,
        created_at_ms: 1_700_000_000_000,
        updated_at_ms: 1_700_000_000_001,
    }
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
    let expected = ExecutionRecord {
        version: 1,
        ..record.clone()
    };
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
