//! The repository conformance suite passes on the in-memory repository and catches a repository
//! that breaks the contract.

use std::sync::Mutex;

use async_trait::async_trait;
use saga_runtime::error::RepositoryError;
use saga_runtime::execution::{ExecutionRecord, SagaStatus};
use saga_runtime::repository::{InMemoryRepository, SagaExecutionRepository};
use saga_testkit::conformance::repository as conformance;
use uuid::Uuid;

#[tokio::test]
async fn the_in_memory_repository_conforms() {
    conformance::check(&InMemoryRepository::new()).await;
}

/// A repository whose last writer wins: it ignores versions.
#[derive(Default)]
struct LastWriterWins {
    rows: Mutex<Vec<(Uuid, String, u64)>>,
}

#[async_trait]
impl SagaExecutionRepository for LastWriterWins {
    async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        let mut rows = self.rows.lock().expect("not poisoned");
        let version = rows
            .iter()
            .find(|(id, ..)| *id == record.id)
            .map_or(0, |(.., version)| *version)
            + 1;
        rows.retain(|(id, ..)| *id != record.id);
        rows.push((record.id, record.to_json(), version));
        Ok(version)
    }

    async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
        let rows = self.rows.lock().expect("not poisoned");
        let (_, json, version) = rows
            .iter()
            .find(|(row, ..)| *row == id)
            .ok_or(RepositoryError::NotFound { id })?;
        let mut record =
            ExecutionRecord::from_json(json).map_err(|error| RepositoryError::Corrupt {
                id,
                reason: error.to_string(),
            })?;
        record.version = *version;
        Ok(record)
    }

    async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
        self.rows
            .lock()
            .expect("not poisoned")
            .retain(|(row, ..)| *row != id);
        Ok(())
    }

    // The rest is irrelevant here: the suite fails at compare-and-set before it gets there.
    async fn mark_published(&self, _: Uuid, _: u64) -> Result<bool, RepositoryError> {
        Ok(false)
    }

    async fn list_recoverable(
        &self,
        _: Option<Uuid>,
        _: usize,
    ) -> Result<Vec<Uuid>, RepositoryError> {
        Ok(Vec::new())
    }

    async fn list_by_status(&self, _: SagaStatus) -> Result<Vec<Uuid>, RepositoryError> {
        Ok(Vec::new())
    }

    async fn list_by_saga(&self, _: &str) -> Result<Vec<Uuid>, RepositoryError> {
        Ok(Vec::new())
    }

    async fn delete_finished_before(&self, _: u64) -> Result<u64, RepositoryError> {
        Ok(0)
    }
}

#[tokio::test]
async fn a_repository_without_compare_and_set_fails_the_suite() {
    let outcome = tokio::spawn(async {
        conformance::check(&LastWriterWins::default()).await;
    })
    .await;
    let panic = outcome.expect_err("the suite must fail").into_panic();
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_default();
    assert!(
        message.contains("rule: a store from a stale version is a Conflict"),
        "{message}"
    );
}
