//! Sagas whose handlers record their effects outside the stored context (as a real side effect
//! would be), to count how often each ran across stops and restarts.

use std::sync::{Arc, Mutex};

use saga_runtime::prelude::*;
use serde_json::json;
use uuid::Uuid;

/// A job whose handlers log their effects to a process-wide log under its tag (outside the stored
/// context, as a real side effect would be).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Names the job's effects in [`effects`].
    pub tag: String,
    /// Step `c` fails.
    pub fail_c: bool,
}

static EFFECTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records effect `what` of `job`.
pub fn effect(job: &Job, what: &str) {
    EFFECTS
        .lock()
        .expect("not poisoned")
        .push(format!("{}:{what}", job.tag));
}

/// The effects of the job tagged `tag`, in order.
pub fn effects(tag: &str) -> Vec<String> {
    let prefix = format!("{tag}:");
    EFFECTS
        .lock()
        .expect("not poisoned")
        .iter()
        .filter_map(|entry| entry.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// How many times the job tagged `tag` had effect `what`.
pub fn count(tag: &str, what: &str) -> usize {
    effects(tag).iter().filter(|entry| *entry == what).count()
}

async fn do_a(job: &mut Job) -> Result<(), StepError> {
    effect(job, "do a");
    Ok(())
}
async fn undo_a(job: &mut Job) -> Result<(), StepError> {
    effect(job, "undo a");
    Ok(())
}
async fn do_b(job: &mut Job) -> Result<(), StepError> {
    effect(job, "do b");
    Ok(())
}
async fn undo_b(job: &mut Job) -> Result<(), StepError> {
    effect(job, "undo b");
    Ok(())
}
async fn do_c(job: &mut Job) -> Result<(), StepError> {
    effect(job, "do c");
    if job.fail_c {
        return Err(StepError::msg("c refuses"));
    }
    Ok(())
}

/// `recovery-local`: three local steps, `a` and `b` with compensations.
pub fn local_saga() -> Arc<SagaDefinition<Job>> {
    Arc::new(
        Saga::new("recovery-local")
            .local_step("a")
            .on_execute(do_a)
            .on_failure(undo_a)
            .local_step("b")
            .on_execute(do_b)
            .on_failure(undo_b)
            .local_step("c")
            .on_execute(do_c)
            .commit()
            .expect("a valid saga"),
    )
}

/// The request of a `CreateTicket` command.
pub async fn ticket(_job: &Job) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CreateTicket", &json!({ "seat": "12A" }))
}
async fn ticket_created(job: &mut Job, _reply: SagaResponse) -> Result<(), StepError> {
    effect(job, "ticket created");
    Ok(())
}
async fn cancel_ticket(_job: &Job) -> Result<SagaRequest, StepError> {
    SagaRequest::new("CancelTicket", &json!({ "seat": "12A" }))
}

/// `recovery-remote`: `a`, then a remote step `ticket` (command `CreateTicket`, compensated by
/// `CancelTicket`), then `b`.
pub fn remote_saga() -> Arc<SagaDefinition<Job>> {
    Arc::new(
        Saga::new("recovery-remote")
            .local_step("a")
            .on_execute(do_a)
            .on_failure(undo_a)
            .remote_step("ticket")
            .on_execute(ticket)
            .on_success(ticket_created)
            .on_failure(cancel_ticket)
            .local_step("b")
            .on_execute(do_b)
            .commit()
            .expect("a valid saga"),
    )
}

/// A new job with a fresh tag; with `fail_c`, step `c` fails.
pub fn job(fail_c: bool) -> Job {
    Job {
        tag: Uuid::new_v4().to_string(),
        fail_c,
    }
}
