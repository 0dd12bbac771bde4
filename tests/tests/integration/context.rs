//! The dynamic `SagaContext`: its map-like API never panics, and it works as any saga's context,
//! with the builder and with the macros.

use std::sync::Arc;

use saga_runtime::error::ContextError;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::Harness;
use serde_json::json;

#[test]
fn a_saga_context_is_a_map_that_reads_typed_values() {
    let mut context = SagaContext::new();
    assert!(context.is_empty());
    assert_eq!(context.insert("amount", &42_u64), Ok(None));
    assert_eq!(context.insert("owner", "ada"), Ok(None));
    assert_eq!(context.insert("amount", &43_u64), Ok(Some(json!(42))));
    assert!(context.contains("amount"));
    assert!(!context.contains("missing"));
    assert_eq!(context.len(), 2);
    assert_eq!(context.keys().collect::<Vec<_>>(), ["amount", "owner"]);
    assert_eq!(context.get::<u64>("amount"), Ok(43));
    assert_eq!(context.get::<String>("owner"), Ok("ada".to_owned()));
    assert_eq!(context.get_raw("owner"), Some(&json!("ada")));
    assert_eq!(context.remove::<u64>("amount"), Ok(43));
    assert!(!context.contains("amount"));
    assert_eq!(
        serde_json::to_value(&context).expect("encodes"),
        json!({ "owner": "ada" })
    );
}

#[test]
fn reading_a_missing_key_or_another_type_is_an_error() {
    let context = SagaContext::new()
        .with("owner", "ada")
        .expect("a string encodes");
    assert_eq!(
        context.get::<u64>("missing"),
        Err(ContextError::MissingKey("missing".to_owned()))
    );
    match context.get::<u64>("owner") {
        Err(ContextError::WrongType { key, expected, .. }) => {
            assert_eq!(key, "owner");
            assert_eq!(expected, "u64");
        }
        other => panic!("expected a wrong-type error, got {other:?}"),
    }
    let mut context = context;
    assert_eq!(
        context.remove::<u64>("missing"),
        Err(ContextError::MissingKey("missing".to_owned()))
    );
    // A failed typed removal still removes: the value is gone either way, as with a map.
    assert!(matches!(
        context.remove::<u64>("owner"),
        Err(ContextError::WrongType { .. })
    ));
    let error = SagaContext::new()
        .get::<u64>("amount")
        .expect_err("missing");
    assert_eq!(error.to_string(), "the saga context has no key `amount`");
}

async fn reserve(context: &mut SagaContext) -> Result<(), StepError> {
    let amount: u64 = context.get("amount")?;
    context.insert("reserved", &amount)?;
    Ok(())
}

async fn charge(context: &SagaContext) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charge", &context.get::<u64>("reserved")?)
}

async fn charged(context: &mut SagaContext, reply: SagaResponse) -> Result<(), StepError> {
    context.insert("payment", &reply.content::<String>()?)?;
    Ok(())
}

fn dynamic_saga() -> Arc<SagaDefinition<SagaContext>> {
    Arc::new(
        Saga::new("dynamic")
            .local_step("reserve")
            .on_execute(reserve)
            .remote_step("charge")
            .on_execute(charge)
            .on_success(charged)
            .commit()
            .expect("a valid saga"),
    )
}

#[tokio::test]
async fn a_saga_runs_on_the_dynamic_context() {
    let harness = Harness::new().await;
    let _payment = harness
        .participant("payment")
        .command("Charge", |message| {
            assert_eq!(message.payload, json!(7));
            (SagaResponseStatus::Success, json!("pay-7"))
        })
        .spawn()
        .await
        .expect("starts");
    let context = SagaContext::new().with("amount", &7_u64).expect("encodes");
    let execution = harness
        .manager
        .run(dynamic_saga(), context, RunOptions::new().autocommit(false))
        .await
        .expect("runs")
        .execution()
        .expect("returned");
    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(execution.context().get::<u64>("reserved"), Ok(7));
    assert_eq!(
        execution.context().get::<String>("payment"),
        Ok("pay-7".to_owned())
    );
}

#[tokio::test]
async fn a_missing_context_key_fails_the_step_instead_of_panicking() {
    let harness = Harness::new().await;
    let result = harness
        .manager
        .run(
            dynamic_saga(),
            SagaContext::new(),
            RunOptions::new().autocommit(false).raise_on_error(false),
        )
        .await
        .expect("the run itself works")
        .execution()
        .expect("returned");
    assert_eq!(result.status(), SagaStatus::Errored);
    let step = result.step("reserve").expect("started");
    assert_eq!(step.status(), StepStatus::ErroredOnExecute);
    assert_eq!(step.error(), Some("the saga context has no key `amount`"));
    assert!(harness.sent().is_empty());
}

#[local_step]
async fn reserve_dynamic(context: &mut SagaContext) -> Result<(), StepError> {
    reserve(context).await
}

#[remote_step(on_success = charged)]
async fn charge_dynamic(context: &SagaContext) -> Result<SagaRequest, StepError> {
    charge(context).await
}

/// The dynamic saga above, declared with the macros.
#[saga(name = "dynamic", steps = [reserve_dynamic, charge_dynamic])]
struct DynamicSaga;

#[tokio::test]
async fn the_macros_take_the_dynamic_context_too() {
    let harness = Harness::new().await;
    let _payment = harness
        .participant("payment")
        .command("Charge", |_| (SagaResponseStatus::Success, json!("pay-9")))
        .spawn()
        .await
        .expect("starts");
    let context = SagaContext::new().with("amount", &9_u64).expect("encodes");
    let execution = harness
        .manager
        .run_saga::<DynamicSaga>(context, RunOptions::new().autocommit(false))
        .await
        .expect("runs")
        .execution()
        .expect("returned");
    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(execution.context().get::<u64>("reserved"), Ok(9));
    assert_eq!(
        execution.context().get::<String>("payment"),
        Ok("pay-9".to_owned())
    );
    assert_eq!(
        execution
            .steps()
            .iter()
            .map(|step| step.name())
            .collect::<Vec<_>>(),
        ["reserve_dynamic", "charge_dynamic"]
    );
}
