//! A command the broker can never take (too large): the step that sent it fails at once and the
//! saga compensates, whether the run meets the refusal or recovery does, and nothing stays pending
//! or paused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use saga_runtime::broker::{BrokerMessage, Subscription};
use saga_runtime::error::{BrokerError, ExecutionError};
use saga_runtime::execution::StepFailure;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_testkit::ScriptedParticipant;
use serde_json::json;

/// An in-process broker that refuses every message on topic `Huge`: for good (too large), or,
/// while `flaky` is set, as a transport failure that may pass.
struct Refusing {
    inner: InProcessBroker,
    flaky: AtomicBool,
}

impl Refusing {
    fn new(inner: &InProcessBroker, flaky: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: inner.clone(),
            flaky: AtomicBool::new(flaky),
        })
    }
}

#[async_trait]
impl Broker for Refusing {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        if message.topic != "Huge" {
            return self.inner.publish(message).await;
        }
        if self.flaky.load(Ordering::SeqCst) {
            return Err(BrokerError::Other("the connection dropped".into()));
        }
        Err(BrokerError::TooLarge {
            topic: message.topic,
            size: 5 << 20,
            limit: 1 << 20,
        })
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BrokerError> {
        self.inner.subscribe(topic).await
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Upload {
    reserved: bool,
}

async fn send_huge(_upload: &Upload) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Huge", &json!({ "bytes": "..." }))
}

/// `reserve` (local, undone by `release`, which counts in `releases`), then `upload` (a command on
/// `Huge`).
fn saga(releases: &Arc<AtomicU32>) -> Arc<SagaDefinition<Upload>> {
    let releases = Arc::clone(releases);
    let release = move |upload: &mut Upload| {
        releases.fetch_add(1, Ordering::SeqCst);
        upload.reserved = false;
        async { Ok(()) }
    };
    Arc::new(
        Saga::new("huge-upload")
            .local_step("reserve")
            .on_execute(|upload: &mut Upload| {
                upload.reserved = true;
                async { Ok(()) }
            })
            .on_failure(release)
            .remote_step("upload")
            .on_execute(send_huge)
            .commit()
            .expect("a valid saga"),
    )
}

/// Answers the `uploads` service's own transaction messages (the reject of a failed saga).
async fn own_participant(broker: &InProcessBroker) -> ScriptedParticipant {
    ScriptedParticipant::builder("uploads", Arc::new(broker.clone()))
        .spawn()
        .await
        .expect("the participant starts")
}

async fn manager(
    broker: Arc<dyn Broker>,
    repository: &Arc<InMemoryRepository>,
    definition: &Arc<SagaDefinition<Upload>>,
) -> SagaManager {
    let registry = Registry::empty()
        .with_definition(Arc::clone(definition))
        .expect("registers");
    SagaManager::builder("uploads")
        .broker(broker)
        .repository(Arc::clone(repository))
        .registry(registry)
        .recover_on_start(false)
        .build()
        .await
        .expect("the manager starts")
}

fn assert_compensated(record: &saga_runtime::execution::ExecutionRecord, releases: &AtomicU32) {
    assert_eq!(record.status, SagaStatus::Errored);
    assert!(record.pending.is_empty(), "nothing stays pending");
    let upload = record.steps.iter().find(|step| step.name() == "upload");
    let upload = upload.expect("the upload step");
    assert_eq!(upload.status(), StepStatus::ErroredOnExecute);
    assert!(
        upload
            .error()
            .is_some_and(|error| error.contains("cannot be published")),
        "{:?}",
        upload.error()
    );
    assert_eq!(
        releases.load(Ordering::SeqCst),
        1,
        "the reserve was undone once"
    );
}

#[tokio::test]
async fn a_command_the_broker_refuses_for_good_fails_its_step_and_the_saga_compensates() {
    let releases = Arc::new(AtomicU32::new(0));
    let definition = saga(&releases);
    let repository = Arc::new(InMemoryRepository::new());
    let broker = InProcessBroker::new();
    let _participant = own_participant(&broker).await;
    let manager = manager(Refusing::new(&broker, false), &repository, &definition).await;

    let error = manager
        .run(
            Arc::clone(&definition),
            Upload::default(),
            RunOptions::new(),
        )
        .await
        .expect_err("the step fails");
    let SagaError::Execution(ExecutionError::StepFailed { step, cause, .. }) = &error else {
        panic!("expected StepFailed, got {error}");
    };
    assert_eq!(step, "upload");
    assert!(
        matches!(**cause, StepFailure::Unpublishable { .. }),
        "{error}"
    );
    let id = repository.list_by_saga("huge-upload").await.expect("lists")[0];
    assert_compensated(&repository.load(id).await.expect("stored"), &releases);
    manager.shutdown().await;
}

#[tokio::test]
async fn recovery_that_meets_a_command_refused_for_good_fails_its_step_and_compensates() {
    let releases = Arc::new(AtomicU32::new(0));
    let definition = saga(&releases);
    let repository = Arc::new(InMemoryRepository::new());
    let broker = InProcessBroker::new();
    let _participant = own_participant(&broker).await;
    // The first attempt meets a transport failure: the command stays pending, paused.
    let first = manager(Refusing::new(&broker, true), &repository, &definition).await;
    let error = first
        .run(
            Arc::clone(&definition),
            Upload::default(),
            RunOptions::new().pause_on_disk(true),
        )
        .await
        .expect_err("the publish fails");
    let id = error
        .may_still_finish()
        .expect("stored, it may still finish");
    let stored = repository.load(id).await.expect("stored");
    assert_eq!(stored.status, SagaStatus::Paused);
    assert_eq!(stored.pending.len(), 1, "the command is pending");
    first.shutdown().await;

    // Recovery finds the broker refusing it for good.
    let second = manager(Refusing::new(&broker, false), &repository, &definition).await;
    let report = second.recover().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_compensated(&repository.load(id).await.expect("stored"), &releases);
    // A later sweep has nothing left to do.
    assert!(second.recover().await.is_empty());
    second.shutdown().await;
}
