//! The saga executions table (`saga_executions`), on either database: the core of
//! `SqliteRepository` and `PostgresRepository`, every statement written once.

use sqlx::Pool;
use uuid::Uuid;

use super::backend::{Backend, Values};
use super::codec::{bind_record, decode_record, decoded, row_id, signed, storage, unsigned};
use super::driver::Statement;
use crate::error::RepositoryError;
use crate::execution::{ExecutionRecord, SagaStatus};

/// The columns `load` reads (decoded by `codec::decode_record`).
const SELECT_RECORD: &str = r#"SELECT saga, fingerprint, status, context, steps, paused_step,
    already_rollback, "user", headers, settings, deadline_ms, transaction_state, version,
    created_at_ms, updated_at_ms, pending, owner, lease_until_ms
    FROM saga_executions WHERE id = $1"#;

/// The first store of an execution: it is stored at the record's version (0) plus one.
const INSERT_RECORD: &str = r#"INSERT INTO saga_executions (id, saga, fingerprint, status,
    context, steps, paused_step, already_rollback, "user", headers, settings, deadline_ms,
    transaction_state, created_at_ms, updated_at_ms, version, pending, owner, lease_until_ms,
    recoverable)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 + 1, $17, $18,
    $19, $20)
    ON CONFLICT (id) DO NOTHING"#;

/// A later store: a compare-and-set on the version the record was read at.
const UPDATE_RECORD: &str = r#"UPDATE saga_executions SET saga = $2, fingerprint = $3,
    status = $4, context = $5, steps = $6, paused_step = $7, already_rollback = $8, "user" = $9,
    headers = $10, settings = $11, deadline_ms = $12, transaction_state = $13,
    created_at_ms = $14, updated_at_ms = $15, version = $16 + 1, pending = $17, owner = $18,
    lease_until_ms = $19, recoverable = $20
    WHERE id = $1 AND version = $16"#;

const SELECT_VERSION: &str = "SELECT version FROM saga_executions WHERE id = $1";

const DELETE_RECORD: &str = "DELETE FROM saga_executions WHERE id = $1";

/// `recoverable` is recomputed without the pending messages (see
/// `ExecutionRecord::needs_recovery_once_published`).
const MARK_PUBLISHED: &str = "UPDATE saga_executions SET pending = '[]', recoverable = \
    (status IN ('created', 'running') OR transaction_state = 'committing' \
     OR (status = 'paused' AND deadline_ms IS NOT NULL) OR owner IS NOT NULL) \
    WHERE id = $1 AND version = $2";

const LIST_BY_STATUS: &str =
    "SELECT id FROM saga_executions WHERE status = $1 ORDER BY created_at_ms, id";

const LIST_BY_SAGA: &str =
    "SELECT id FROM saga_executions WHERE saga = $1 ORDER BY created_at_ms, id";

const DELETE_FINISHED: &str = "DELETE FROM saga_executions \
    WHERE status = $1 AND updated_at_ms < $2 AND NOT recoverable";

/// The executions of one table, reached through a pool of `B`.
///
/// Every store is a compare-and-set on the version done by a single statement, so any number of
/// repositories (or processes) may share the table.
#[derive(Debug)]
pub(crate) struct Executions<B: Backend> {
    pool: Pool<B>,
}

impl<B: Backend> Clone for Executions<B> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<B: Backend> Executions<B> {
    /// The executions in the tables `pool` reaches (their schema already brought up to date).
    pub(crate) fn new(pool: Pool<B>) -> Self {
        Self { pool }
    }

    /// Closes every connection, waiting for the ones in use.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// See `SagaExecutionRepository::store`.
    pub(crate) async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        let statement = store_statement::<B>(record)?;
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        let result = B::execute(statement, &mut connection)
            .await
            .map_err(storage)?;
        if B::rows_affected(&result) == 1 {
            return Ok(record.version + 1);
        }
        // Only on the failure path: tell the writer which version it raced with.
        Err(RepositoryError::Conflict {
            id: record.id,
            expected: record.version,
            found: current_version::<B>(&mut connection, record.id).await?,
        })
    }

    /// All records in one transaction: one commit for the batch (a single record is stored by its
    /// own statement). A record that conflicts is left out; the others are committed. If the
    /// transaction fails, nothing of the batch is stored and every record fails with
    /// [`RepositoryError::Storage`].
    pub(crate) async fn store_batch(
        &self,
        records: &[&ExecutionRecord],
    ) -> Vec<Result<u64, RepositoryError>> {
        if let [record] = records {
            // One statement is its own transaction: no BEGIN/COMMIT round trips.
            return vec![self.store(record).await];
        }
        match self.store_in_one_transaction(records).await {
            Ok(results) => results,
            Err(error) => {
                // The commit failed: every caller hears why.
                let message = error.to_string();
                records
                    .iter()
                    .map(|_| Err(RepositoryError::Storage(message.clone().into())))
                    .collect()
            }
        }
    }

    /// Stores `records` in one transaction; a record that conflicts is reported and left out.
    /// Rows are written in id order, so that concurrent batches lock them in the same order (a
    /// stable order: two records of one execution are stored in the order given).
    async fn store_in_one_transaction(
        &self,
        records: &[&ExecutionRecord],
    ) -> Result<Vec<Result<u64, RepositoryError>>, sqlx::Error> {
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by_key(|&index| records[index].id);
        let mut results: Vec<Option<Result<u64, RepositoryError>>> =
            std::iter::repeat_with(|| None)
                .take(records.len())
                .collect();
        let mut transaction = self.pool.begin().await?;
        for index in order {
            let record = records[index];
            let statement = match store_statement::<B>(record) {
                Ok(statement) => statement,
                Err(error) => {
                    results[index] = Some(Err(error));
                    continue;
                }
            };
            let result = B::execute(statement, &mut transaction).await?;
            results[index] = Some(if B::rows_affected(&result) == 1 {
                Ok(record.version + 1)
            } else {
                let found = stored_version::<B>(&mut transaction, record.id).await?;
                Err(RepositoryError::Conflict {
                    id: record.id,
                    expected: record.version,
                    found: found.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
                })
            });
        }
        transaction.commit().await?;
        Ok(results
            .into_iter()
            .map(|result| result.expect("every record has a result"))
            .collect())
    }

    /// See `SagaExecutionRepository::load`.
    pub(crate) async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
        let statement = sqlx::query::<B>(SELECT_RECORD).id(id);
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        let row = B::fetch_optional(statement, &mut connection)
            .await
            .map_err(storage)?
            .ok_or(RepositoryError::NotFound { id })?;
        decode_record::<B>(id, &row)
    }

    /// See `SagaExecutionRepository::delete`.
    pub(crate) async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
        self.execute(sqlx::query::<B>(DELETE_RECORD).id(id)).await?;
        Ok(())
    }

    /// See `SagaExecutionRepository::mark_published`.
    pub(crate) async fn mark_published(
        &self,
        id: Uuid,
        version: u64,
    ) -> Result<bool, RepositoryError> {
        let statement = sqlx::query::<B>(MARK_PUBLISHED)
            .id(id)
            .value(signed(version, "version")?);
        Ok(self.execute(statement).await? == 1)
    }

    /// See `SagaExecutionRepository::list_recoverable`.
    pub(crate) async fn list_recoverable(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, RepositoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let recoverable = B::RECOVERABLE;
        // The first page has no lower bound: no id sorts below every other in both databases.
        let text = match after {
            None => {
                format!("SELECT id FROM saga_executions WHERE {recoverable} ORDER BY id LIMIT $1")
            }
            Some(_) => format!(
                "SELECT id FROM saga_executions WHERE {recoverable} AND id > $2 \
                 ORDER BY id LIMIT $1"
            ),
        };
        let mut statement = sqlx::query::<B>(&text).value(limit);
        if let Some(after) = after {
            statement = statement.id(after);
        }
        self.list(statement).await
    }

    /// See `SagaExecutionRepository::list_by_status`.
    pub(crate) async fn list_by_status(
        &self,
        status: SagaStatus,
    ) -> Result<Vec<Uuid>, RepositoryError> {
        self.list(sqlx::query::<B>(LIST_BY_STATUS).value(status.as_str()))
            .await
    }

    /// See `SagaExecutionRepository::list_by_saga`.
    pub(crate) async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError> {
        self.list(sqlx::query::<B>(LIST_BY_SAGA).value(saga)).await
    }

    /// See `SagaExecutionRepository::delete_finished_before`.
    pub(crate) async fn delete_finished_before(
        &self,
        updated_before_ms: u64,
    ) -> Result<u64, RepositoryError> {
        let cutoff = i64::try_from(updated_before_ms).unwrap_or(i64::MAX);
        let statement = sqlx::query::<B>(DELETE_FINISHED)
            .value(SagaStatus::Finished.as_str())
            .value(cutoff);
        self.execute(statement).await
    }

    /// Runs `statement` on a pooled connection; returns how many rows it changed.
    async fn execute(&self, statement: Statement<'_, B>) -> Result<u64, RepositoryError> {
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        let result = B::execute(statement, &mut connection)
            .await
            .map_err(storage)?;
        Ok(B::rows_affected(&result))
    }

    /// The ids in the rows of the listing `statement`.
    async fn list(&self, statement: Statement<'_, B>) -> Result<Vec<Uuid>, RepositoryError> {
        let mut connection = self.pool.acquire().await.map_err(storage)?;
        let rows = B::fetch_all(statement, &mut connection)
            .await
            .map_err(storage)?;
        rows.iter().map(row_id::<B>).collect()
    }
}

/// The statement that stores `record` (an insert for version 0, a compare-and-set update
/// otherwise), with its values bound.
fn store_statement<B: Backend>(
    record: &ExecutionRecord,
) -> Result<Statement<'_, B>, RepositoryError> {
    let text = if record.version == 0 {
        INSERT_RECORD
    } else {
        UPDATE_RECORD
    };
    bind_record(sqlx::query(text), record)
}

/// The version stored now for `id` (0: none), read on `connection` after a refused store.
async fn current_version<B: Backend>(
    connection: &mut B::Connection,
    id: Uuid,
) -> Result<u64, RepositoryError> {
    match decoded(id, "version", stored_version::<B>(connection, id).await)? {
        None => Ok(0),
        Some(version) => unsigned(id, "version", version),
    }
}

/// The version column of `id`'s row, if there is one.
async fn stored_version<B: Backend>(
    connection: &mut B::Connection,
    id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    let statement = sqlx::query::<B>(SELECT_VERSION).id(id);
    match B::fetch_optional(statement, connection).await? {
        None => Ok(None),
        Some(row) => B::get(&row, "version").map(Some),
    }
}

/// Implements `SagaExecutionRepository` for `$repository` by handing every call to its
/// [`Executions`] in field `$executions`.
macro_rules! forward_repository {
    ($repository:ty, $executions:ident) => {
        const _: () = {
            use uuid::Uuid;

            use $crate::error::RepositoryError;
            use $crate::execution::{ExecutionRecord, SagaStatus};
            use $crate::repository::SagaExecutionRepository;

            #[async_trait::async_trait]
            impl SagaExecutionRepository for $repository {
                async fn store(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
                    self.$executions.store(record).await
                }

                /// All records in one transaction: one commit for the batch. A record that
                /// conflicts is left out; the others are committed. If the transaction fails,
                /// nothing of the batch is stored and every record fails with
                /// [`RepositoryError::Storage`].
                async fn store_batch(
                    &self,
                    records: &[&ExecutionRecord],
                ) -> Vec<Result<u64, RepositoryError>> {
                    self.$executions.store_batch(records).await
                }

                async fn load(&self, id: Uuid) -> Result<ExecutionRecord, RepositoryError> {
                    self.$executions.load(id).await
                }

                async fn delete(&self, id: Uuid) -> Result<(), RepositoryError> {
                    self.$executions.delete(id).await
                }

                async fn mark_published(
                    &self,
                    id: Uuid,
                    version: u64,
                ) -> Result<bool, RepositoryError> {
                    self.$executions.mark_published(id, version).await
                }

                async fn list_recoverable(
                    &self,
                    after: Option<Uuid>,
                    limit: usize,
                ) -> Result<Vec<Uuid>, RepositoryError> {
                    self.$executions.list_recoverable(after, limit).await
                }

                async fn list_by_status(
                    &self,
                    status: SagaStatus,
                ) -> Result<Vec<Uuid>, RepositoryError> {
                    self.$executions.list_by_status(status).await
                }

                async fn list_by_saga(&self, saga: &str) -> Result<Vec<Uuid>, RepositoryError> {
                    self.$executions.list_by_saga(saga).await
                }

                async fn delete_finished_before(
                    &self,
                    updated_before_ms: u64,
                ) -> Result<u64, RepositoryError> {
                    self.$executions
                        .delete_finished_before(updated_before_ms)
                        .await
                }
            }
        };
    };
}

pub(crate) use forward_repository;
