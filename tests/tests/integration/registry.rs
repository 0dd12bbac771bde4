//! The registry: saga types gathered with `inventory` or added by hand, sorted by name, duplicates
//! refused with both places named; a manager resumes stored executions of the sagas it registers;
//! and the Mermaid rendering of a definition.

use std::sync::{Arc, OnceLock};

use saga_runtime::__private::{SagaRegistration, inventory};
use saga_runtime::error::LoadError;
use saga_runtime::error::RegistryError;
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::{Harness, module_registry, reply_to};
use serde_json::json;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ticket {
    booked: bool,
    number: Option<String>,
}

async fn book(_: &Ticket) -> Result<SagaRequest, StepError> {
    Ok(SagaRequest::empty("BookTicket"))
}

async fn booked(ticket: &mut Ticket, reply: SagaResponse) -> Result<(), StepError> {
    ticket.number = Some(reply.content()?);
    ticket.booked = true;
    Ok(())
}

async fn check(_: &mut Ticket) -> Result<(), StepError> {
    Ok(())
}

async fn uncheck(_: &mut Ticket) -> Result<(), StepError> {
    Ok(())
}

async fn cancel(_: &Ticket) -> Result<SagaRequest, StepError> {
    Ok(SagaRequest::empty("CancelTicket"))
}

async fn is_vip(_: &Ticket) -> Result<bool, StepError> {
    Ok(false)
}

/// A saga type written by hand, as `#[saga]` would generate it.
struct BookTicket;

impl SagaType for BookTicket {
    type Context = Ticket;

    fn definition() -> Arc<SagaDefinition<Ticket>> {
        static DEFINITION: OnceLock<Arc<SagaDefinition<Ticket>>> = OnceLock::new();
        Arc::clone(DEFINITION.get_or_init(|| {
            Arc::new(
                Saga::new("book-ticket")
                    .remote_step("book")
                    .on_execute(book)
                    .on_success(booked)
                    .commit()
                    .expect("a valid saga"),
            )
        }))
    }
}

/// Another saga type, sorted before `book-ticket`.
struct AuditTicket;

impl SagaType for AuditTicket {
    type Context = Ticket;

    fn definition() -> Arc<SagaDefinition<Ticket>> {
        static DEFINITION: OnceLock<Arc<SagaDefinition<Ticket>>> = OnceLock::new();
        Arc::clone(DEFINITION.get_or_init(|| {
            Arc::new(
                Saga::new("audit-ticket")
                    .local_step("check")
                    .on_execute(check)
                    .commit()
                    .expect("a valid saga"),
            )
        }))
    }
}

/// A different saga that claims `book-ticket` too.
struct BookTicketAgain;

impl SagaType for BookTicketAgain {
    type Context = Ticket;

    fn definition() -> Arc<SagaDefinition<Ticket>> {
        Arc::new(
            Saga::new("book-ticket")
                .local_step("check")
                .on_execute(check)
                .commit()
                .expect("a valid saga"),
        )
    }
}

inventory::submit! { SagaRegistration::new::<BookTicket>("tests/tests/integration/registry.rs:book") }
inventory::submit! { SagaRegistration::new::<AuditTicket>("tests/tests/integration/registry.rs:audit") }

#[test]
fn the_inventory_registry_holds_every_submitted_saga_sorted_by_name() {
    let registry = module_registry(module_path!()).expect("no duplicate names");
    assert_eq!(
        registry.names().collect::<Vec<_>>(),
        ["audit-ticket", "book-ticket"]
    );
    assert_eq!(registry.len(), 2);
    assert_eq!(
        registry.fingerprint("book-ticket"),
        Some(BookTicket::definition().fingerprint())
    );
    assert_eq!(registry.fingerprint("missing"), None);
}

#[test]
fn a_registry_built_by_hand_refuses_a_second_saga_with_the_same_name() {
    let registry = Registry::empty()
        .with::<BookTicket>()
        .expect("first")
        .with::<BookTicket>()
        .expect("the same type twice is the same saga");
    assert_eq!(registry.names().collect::<Vec<_>>(), ["book-ticket"]);

    let error = registry
        .with::<BookTicketAgain>()
        .expect_err("a second saga named book-ticket");
    match &error {
        RegistryError::DuplicateName {
            name,
            first,
            second,
        } => {
            assert_eq!(name, "book-ticket");
            assert!(first.ends_with("BookTicket"), "{first}");
            assert!(second.ends_with("BookTicketAgain"), "{second}");
        }
        other => panic!("expected a duplicate name, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("two sagas are named `book-ticket`"),
        "{message}"
    );
    assert!(message.contains("BookTicketAgain"), "{message}");
}

#[tokio::test]
async fn a_manager_resumes_stored_executions_of_the_sagas_in_its_registry() {
    // One instance starts the saga and pauses on disk ...
    let first = Harness::new().await;
    let outcome = first
        .manager
        .run_saga::<BookTicket>(
            Ticket::default(),
            RunOptions::new().pause_on_disk(true).autocommit(false),
        )
        .await
        .expect("starts");
    let id = outcome.id();
    let command = first.sent().pop().expect("BookTicket was sent");
    assert_eq!(command.topic, "BookTicket");
    let reply = reply_to(
        &command,
        SagaResponseStatus::Success,
        json!("T-1"),
        &["ticket"],
    );

    // ... another one, sharing its storage, that never ran it, resumes it through the registry.
    let resumer = SagaManager::builder("order")
        .repository(first.repository.clone())
        .registry(module_registry(module_path!()).expect("registry"))
        .build()
        .await
        .expect("starts");
    assert_eq!(
        resumer.resume(reply.clone()).await.expect("resumes"),
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
    let stored = resumer
        .load(BookTicket::definition(), id)
        .await
        .expect("stored");
    assert_eq!(stored.context().number.as_deref(), Some("T-1"));

    // Without the registry, the stored execution names a saga it does not know.
    let stranger = SagaManager::builder("order")
        .repository(first.repository.clone())
        .build()
        .await
        .expect("starts");
    let error = stranger.resume(reply).await.expect_err("unknown saga");
    assert!(
        matches!(
            &error,
            SagaError::Load(LoadError::UnknownSaga { saga, .. }) if saga == "book-ticket"
        ),
        "{error:?}"
    );
}

#[test]
fn a_definition_renders_as_a_mermaid_flowchart() {
    let vip = Saga::<Ticket>::new("vip")
        .remote_step("book")
        .on_execute(book)
        .on_failure(cancel)
        .commit()
        .expect("valid");
    let saga = Saga::new("ticketing")
        .local_step("check")
        .on_execute(check)
        .on_failure(uncheck)
        .conditional_step("route")
        .if_then(is_vip, vip)
        .local_step("done")
        .on_execute(check)
        .commit()
        .expect("valid");
    assert_eq!(
        saga.to_mermaid(),
        r#"flowchart TD
    start(["ticketing"])
    s1["check<br/><i>local</i>"]
    start --> s1
    s1_undo["uncheck"]
    s1 -. compensate .-> s1_undo
    s2{"route"}
    s1 --> s2
    subgraph s2_if1_["vip"]
        s2_if1_0((" "))
        s2_if1_1[/"book<br/><i>remote</i>"/]
        s2_if1_0 --> s2_if1_1
        s2_if1_1_undo[/"cancel"/]
        s2_if1_1 -. compensate .-> s2_if1_1_undo
    end
    s2 -- is_vip --> s2_if1_0
    s2_if1_1 --> s2_join
    s2 -- otherwise --> s2_join
    s2_join((" "))
    s3["done<br/><i>local</i>"]
    s2_join --> s3
    s3 --> finish(["end"])
"#
    );
    let registry = Registry::empty()
        .with_definition(Arc::new(saga))
        .expect("registers");
    assert!(
        registry
            .to_mermaid("ticketing")
            .is_some_and(|chart| chart.starts_with("flowchart TD"))
    );
}
