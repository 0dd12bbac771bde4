//! Fixtures of the crate's unit tests: a small context, sagas of a local and a remote step, and
//! replies to the commands they send.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ExecutionEnv, SagaExecution};
use crate::definition::{Saga, SagaDefinition};
use crate::error::StepError;
use crate::message::{SagaRequest, SagaResponse, SagaResponseStatus};

/// The context: which handlers ran, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Trail {
    pub(crate) log: Vec<String>,
}

/// The environment of service `order`.
pub(crate) fn env() -> ExecutionEnv {
    ExecutionEnv::new("order")
}

async fn reserve(trail: &mut Trail) -> Result<(), StepError> {
    trail.log.push("reserve".to_owned());
    Ok(())
}

async fn release(trail: &mut Trail) -> Result<(), StepError> {
    trail.log.push("release".to_owned());
    Ok(())
}

async fn pay(_: &Trail) -> Result<SagaRequest, StepError> {
    Ok(SagaRequest::empty("Pay"))
}

async fn paid(trail: &mut Trail, _: SagaResponse) -> Result<(), StepError> {
    trail.log.push("paid".to_owned());
    Ok(())
}

async fn refund(_: &Trail) -> Result<SagaRequest, StepError> {
    Ok(SagaRequest::empty("Refund"))
}

/// `reserve` (local, undone by `release`), then `pay` (remote, undone by a `Refund` command).
pub(crate) fn remote_saga() -> Arc<SagaDefinition<Trail>> {
    Arc::new(
        Saga::new("checkout")
            .local_step("reserve")
            .on_execute(reserve)
            .on_failure(release)
            .remote_step("pay")
            .on_execute(pay)
            .on_success(paid)
            .on_failure(refund)
            .commit()
            .expect("a valid saga"),
    )
}

/// `reserve` alone.
pub(crate) fn local_saga() -> Arc<SagaDefinition<Trail>> {
    Arc::new(
        Saga::new("reserve-only")
            .local_step("reserve")
            .on_execute(reserve)
            .on_failure(release)
            .commit()
            .expect("a valid saga"),
    )
}

/// Why `charge` fails.
#[derive(Debug, thiserror::Error)]
#[error("card declined")]
pub(crate) struct Declined;

async fn charge(_: &mut Trail) -> Result<(), StepError> {
    Err(Declined.into())
}

/// `reserve` (local, undone by `release`), then `charge`, which fails with [`Declined`].
pub(crate) fn failing_saga() -> Arc<SagaDefinition<Trail>> {
    Arc::new(
        Saga::new("declined")
            .local_step("reserve")
            .on_execute(reserve)
            .on_failure(release)
            .local_step("charge")
            .on_execute(charge)
            .commit()
            .expect("a valid saga"),
    )
}

/// The reply with `status` to the command `execution` waits for.
pub(crate) fn reply_to(
    execution: &SagaExecution<Trail>,
    status: SagaResponseStatus,
) -> SagaResponse {
    let request = execution.waiting_request().expect("the execution waits");
    SagaResponse::new(execution.id(), request, status, &serde_json::Value::Null).expect("encodes")
}
