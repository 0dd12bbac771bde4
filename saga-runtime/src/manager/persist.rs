//! Storing an execution with the messages it emitted, then publishing them: the store is the
//! execution's outbox, so that no message goes out for a state that was not stored and none is
//! lost by a crash between the two (recovery publishes again what is still pending).

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Inner, SagaError};
use crate::definition::BoxFuture;
use crate::error::{BrokerError, RepositoryError};
use crate::execution::{Checkpoint, CheckpointError, ErasedExecution, ExecutionRecord, Outbox};
use crate::faults;
use crate::message::BrokerMessage;

/// Whether a store keeps this instance as the execution's owner (it goes on advancing it) or lets
/// the execution rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    Keep,
    Release,
}

/// What a store wrote: the version, and the messages stored with it, to publish next.
pub(super) struct Stored {
    pub(super) id: Uuid,
    pub(super) version: u64,
    pub(super) messages: Vec<BrokerMessage>,
}

impl Inner {
    /// Stores the execution with the messages queued in `outbox` (they leave the outbox and go into
    /// the stored row, to be published next) and, with [`Hold::Keep`], this instance as its owner.
    pub(super) async fn store(
        &self,
        execution: &mut dyn ErasedExecution,
        outbox: &mut Outbox,
        hold: Hold,
    ) -> Result<Stored, SagaError> {
        let messages = outbox.drain();
        let lease_until_ms = self.lease_until_ms();
        faults::reach("before-store");
        let mut record = match execution.lend_record() {
            Ok(record) => record,
            Err(error) => {
                outbox.restore(messages);
                return Err(SagaError::Encode(error));
            }
        };
        record.pending = messages;
        if hold == Hold::Keep {
            record.owner = Some(self.instance.clone());
            record.lease_until_ms = Some(lease_until_ms);
        }
        let result = self.store_record(&record).await;
        let messages = std::mem::take(&mut record.pending);
        execution.restore_lent(record);
        let version = match result {
            Ok(version) => version,
            Err(error) => {
                // Not stored: they stay queued for the next store.
                outbox.restore(messages);
                return Err(error.into());
            }
        };
        execution.set_version(version);
        faults::reach("after-store");
        Ok(Stored {
            id: execution.id(),
            version,
            messages,
        })
    }

    /// Stores `record`, retrying storage failures with exponential back-off for up to
    /// `storage_retry`. A retry after a failure whose outcome is unknown (the commit may have
    /// happened before the connection broke) can meet its own earlier write as a conflict: the
    /// stored copy is then compared with the record, and an identical one counts as stored.
    async fn store_record(&self, record: &ExecutionRecord) -> Result<u64, RepositoryError> {
        let give_up = Instant::now() + self.storage_retry;
        let mut delay = Duration::from_millis(10);
        let mut retried = false;
        loop {
            match self.repository.store(record).await {
                Ok(version) => return Ok(version),
                Err(RepositoryError::Storage(error)) if Instant::now() + delay < give_up => {
                    tracing::warn!(saga.id = %record.id, %error, ?delay, "storing failed; retrying");
                    retried = true;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(conflict @ RepositoryError::Conflict { found, .. })
                    if retried && found == record.version + 1 =>
                {
                    return match self.repository.load(record.id).await {
                        Ok(stored) if same_but_version(&stored, record) => Ok(found),
                        _ => Err(conflict),
                    };
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Publishes the messages of a store, then marks them published in the stored row (a crash
    /// before that mark makes recovery publish them again: receivers deduplicate by message id).
    pub(super) async fn publish(&self, stored: Stored) -> Result<(), SagaError> {
        self.try_publish(stored)
            .await
            .map_err(|(error, _)| SagaError::Broker(error))
    }

    /// [`publish`](Self::publish), handing back what was not published when the broker fails (it
    /// stays pending in the stored row).
    pub(super) async fn try_publish(
        &self,
        stored: Stored,
    ) -> Result<(), (BrokerError, Vec<BrokerMessage>)> {
        if stored.messages.is_empty() {
            return Ok(());
        }
        let mut messages = stored.messages.into_iter();
        while let Some(message) = messages.next() {
            if let Err(error) = self.broker.publish(message.clone()).await {
                let mut unpublished = vec![message];
                unpublished.extend(messages);
                return Err((error, unpublished));
            }
        }
        faults::reach("after-publish");
        if let Err(error) = self
            .repository
            .mark_published(stored.id, stored.version)
            .await
        {
            tracing::warn!(saga.id = %stored.id, %error, "marking messages published failed; recovery will publish them again");
        }
        Ok(())
    }
}

/// Whether `stored` is `record` as stored by an earlier attempt (all but the version equal).
fn same_but_version(stored: &ExecutionRecord, record: &ExecutionRecord) -> bool {
    let mut mine = record.clone();
    mine.version = stored.version;
    // Recovery elsewhere may have published and cleared the pending messages since.
    mine.pending.clone_from(&stored.pending);
    mine == *stored
}

/// The checkpoint of the manager's advances: stores the execution (held) with what it emitted so
/// far, and publishes that.
pub(super) struct Saver<'i> {
    pub(super) inner: &'i Inner,
}

impl Checkpoint for Saver<'_> {
    fn save<'a>(
        &'a mut self,
        execution: &'a mut dyn ErasedExecution,
        outbox: &'a mut Outbox,
    ) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(async move {
            let stored = self.inner.store(execution, outbox, Hold::Keep).await?;
            if let Err((error, unpublished)) = self.inner.try_publish(stored).await {
                // Kept queued, so that the next store keeps them pending (and they go out then or
                // through recovery); the compensation goes on.
                tracing::warn!(%error, "publishing at a checkpoint failed");
                outbox.restore(unpublished);
            }
            faults::reach("before-compensation");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::SagaExecution;
    use crate::execution::testing::{Trail, local_saga};

    fn record() -> ExecutionRecord {
        SagaExecution::new(local_saga(), Trail::default())
            .to_record()
            .expect("encodes")
    }

    #[test]
    fn an_earlier_write_of_the_same_record_counts_as_stored() {
        let mine = record();
        let mut stored = mine.clone();
        stored.version = mine.version + 1;
        assert!(same_but_version(&stored, &mine));
    }

    #[test]
    fn messages_published_since_do_not_tell_the_writes_apart() {
        let mut mine = record();
        mine.pending = vec![BrokerMessage::new("Pay", serde_json::Value::Null)];
        let mut stored = mine.clone();
        stored.version += 1;
        stored.pending.clear();
        assert!(same_but_version(&stored, &mine));
    }

    #[test]
    fn another_writer_s_record_is_a_real_conflict() {
        let mine = record();
        let mut stored = mine.clone();
        stored.version += 1;
        stored.owner = Some("another-instance".to_owned());
        assert!(!same_but_version(&stored, &mine));
    }
}
