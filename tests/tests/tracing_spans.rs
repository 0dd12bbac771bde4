//! The tracing spans every execution and step opens. Alone in its test binary: `tracing` caches,
//! per call site and for the whole process, whether anyone listens, so a test on another thread
//! without a subscriber would hide the spans from this one.

use std::sync::{Arc, Mutex};

use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::Harness;
use serde_json::json;

async fn reserve(context: &mut SagaContext) -> Result<(), StepError> {
    let amount: u64 = context.get("amount")?;
    context.insert("reserved", &amount)?;
    Ok(())
}

async fn charge(context: &SagaContext) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charge", &context.get::<u64>("reserved")?)
}

fn dynamic_saga() -> Arc<SagaDefinition<SagaContext>> {
    Arc::new(
        Saga::new("dynamic")
            .local_step("reserve")
            .on_execute(reserve)
            .remote_step("charge")
            .on_execute(charge)
            .commit()
            .expect("a valid saga"),
    )
}

/// A writer that keeps what the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_execution_and_step_opens_a_span_with_stable_fields() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();

    let harness = Harness::new().await;
    let _payment = harness
        .participant("payment")
        .command("Charge", |_| (SagaResponseStatus::Success, json!("pay-1")))
        .spawn()
        .await
        .expect("starts");
    let context = SagaContext::new().with("amount", &1_u64).expect("encodes");
    let outcome = harness
        .manager
        .run(
            dynamic_saga(),
            context,
            RunOptions::new().autocommit(false).pause_on_disk(true),
        )
        .await
        .expect("runs");
    let id = outcome.id();

    let text = String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("UTF-8");
    let run = format!("saga.run{{saga.name=dynamic saga.id={id}}}");
    assert!(text.contains(&run), "no `{run}` in:\n{text}");
    for step in [
        "saga.step{saga.step=reserve saga.kind=local saga.phase=\"forward\"}",
        "saga.step{saga.step=charge saga.kind=remote saga.phase=\"forward\"}",
    ] {
        assert!(text.contains(step), "no `{step}` in:\n{text}");
    }
}
