//! A command the broker can never take (it refuses it for good, as too large): the step that waits
//! for its reply fails at once and the saga compensates, instead of staying paused with the
//! command pending, republished by every recovery sweep and refused every time.

use std::sync::Arc;

use super::advance::Advanced;
use super::persist::{Hold, Saver, Stored};
use super::{Inner, SagaError};
use crate::execution::{ErasedExecution, Outbox};

impl Inner {
    /// Publishes what a paused `execution` stored (`stored`). When the broker refuses for good
    /// the command its waiting step sent, that step fails (nobody received the command), the
    /// saga compensates and the result is concluded like any advance; the other messages refused
    /// with it stay queued and go out with the next store.
    pub(super) async fn publish_paused(
        self: &Arc<Self>,
        execution: &mut dyn ErasedExecution,
        outbox: &mut Outbox,
        stored: Stored,
        reject_on_failure: bool,
        advanced: &mut Advanced,
    ) -> Result<(), SagaError> {
        let Err((error, mut unpublished)) = self.try_publish(stored).await else {
            return Ok(());
        };
        let refused = unpublished.first().map(|message| message.id);
        let request = execution.waiting_request();
        if !error.is_permanent() || refused.is_none() || refused != request {
            return Err(SagaError::Broker(error));
        }
        let (Some(request), reason) = (request, error.to_string()) else {
            return Err(SagaError::Broker(error));
        };
        tracing::error!(saga.id = %execution.id(), %reason, "the waiting step's command can never be published: the step fails");
        // The refused command is dropped: the next store keeps only what follows it.
        outbox.restore(unpublished.split_off(1));
        // Claimed again before the compensations run (the pause released it).
        let claimed = self.store(execution, outbox, Hold::Keep).await?;
        self.publish(claimed).await?;
        let result = execution
            .fail_unpublishable(
                request,
                reason,
                &self.env,
                outbox,
                &mut Saver { inner: self },
            )
            .await;
        Box::pin(self.conclude(execution, outbox, result, reject_on_failure, advanced)).await
    }
}
