//! Sagas declared with the attribute macros: the same definitions and fingerprints as the builder,
//! the same behaviour at run time, registration with `inventory`.

use std::sync::Arc;

use saga_runtime::definition::Branch;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::{Harness, module_registry};
use serde_json::json;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Order {
    amount: u64,
    validated: bool,
    payment: Option<String>,
    big: bool,
    log: Vec<String>,
}

#[local_step(on_failure = cancel)]
async fn validate(order: &mut Order) -> Result<(), StepError> {
    order.validated = true;
    order.log.push("validate".into());
    Ok(())
}

async fn cancel(order: &mut Order) -> Result<(), StepError> {
    order.log.push("cancel".into());
    Ok(())
}

#[remote_step(on_success = charged, on_failure = refund)]
async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charge", &order.amount)
}

async fn charged(order: &mut Order, reply: SagaResponse) -> Result<(), StepError> {
    order.payment = Some(reply.content()?);
    Ok(())
}

async fn refund(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Refund", &order.payment)
}

#[local_step]
async fn flag_big(order: &mut Order) -> Result<(), StepError> {
    order.big = true;
    Ok(())
}

async fn is_big(order: &Order) -> Result<bool, StepError> {
    Ok(order.amount > 100)
}

#[saga(name = "big-order", steps = [flag_big])]
struct BigOrder;

#[saga(steps = [validate, charge, route = conditional(if_then(is_big, BigOrder))])]
struct CreateOrder;

/// A condition with fixed parameters: the threshold is given in the saga's declaration.
async fn above(order: &Order, threshold: &u64) -> Result<bool, StepError> {
    Ok(*threshold < order.amount)
}

#[local_step]
async fn note_small(order: &mut Order) -> Result<(), StepError> {
    order.log.push("small".into());
    Ok(())
}

#[saga(name = "small-order", steps = [note_small])]
struct SmallOrder;

#[saga(steps = [validate, route = conditional(if_then((above, 1_000_u64), BigOrder), else_then(SmallOrder))])]
struct RouteByThreshold;

#[test]
fn a_macro_saga_matches_the_builder_saga() {
    let big = Saga::<Order>::new("big-order")
        .local_step("flag_big")
        .on_execute(flag_big::call)
        .commit()
        .expect("valid");
    let built = Saga::<Order>::new("create-order")
        .local_step("validate")
        .on_execute(validate::call)
        .on_failure(cancel)
        .remote_step("charge")
        .on_execute(charge::call)
        .on_success(charged)
        .on_failure(refund)
        .conditional_step("route")
        .if_then(is_big, big)
        .commit()
        .expect("valid");
    let declared = CreateOrder::definition();
    assert_eq!(declared.name(), "create-order");
    assert_eq!(declared.fingerprint(), built.fingerprint());
    assert_eq!(
        declared
            .steps()
            .iter()
            .map(|step| (step.name(), step.kind()))
            .collect::<Vec<_>>(),
        built
            .steps()
            .iter()
            .map(|step| (step.name(), step.kind()))
            .collect::<Vec<_>>()
    );
    assert!(Arc::ptr_eq(&declared, &CreateOrder::definition()));
}

#[tokio::test]
async fn a_macro_saga_runs_like_the_builder_saga() {
    let harness = Harness::new().await;
    let _payment = harness
        .participant("payment")
        .command("Charge", |_| (SagaResponseStatus::Success, json!("pay-1")))
        .spawn()
        .await
        .expect("starts");
    let execution = harness
        .manager
        .run_saga::<CreateOrder>(
            Order {
                amount: 500,
                ..Order::default()
            },
            RunOptions::new().autocommit(false),
        )
        .await
        .expect("runs")
        .execution()
        .expect("returned");
    assert_eq!(execution.status(), SagaStatus::Finished);
    assert_eq!(execution.context().payment.as_deref(), Some("pay-1"));
    assert!(execution.context().big);
}

#[tokio::test]
async fn a_macro_condition_gets_its_parameters() {
    let harness = Harness::new().await;
    // 500 is big for `is_big` (over 100) but not over the threshold of 1000 given to `above`.
    for (amount, branch, big, log) in [
        (5_000, Branch::If(0), true, vec!["validate"]),
        (500, Branch::Else, false, vec!["validate", "small"]),
    ] {
        let execution = harness
            .manager
            .run_saga::<RouteByThreshold>(
                Order {
                    amount,
                    ..Order::default()
                },
                RunOptions::new().autocommit(false),
            )
            .await
            .expect("runs")
            .execution()
            .expect("returned");
        assert_eq!(execution.status(), SagaStatus::Finished, "{amount}");
        let route = &execution.steps()[1];
        assert_eq!(route.name(), "route");
        assert_eq!(route.branch(), Some(branch), "{amount}");
        assert_eq!(execution.context().big, big, "{amount}");
        assert_eq!(execution.context().log, log, "{amount}");
    }
}

#[test]
fn macro_sagas_register_themselves() {
    let registry = module_registry(module_path!()).expect("unique names");
    assert_eq!(
        registry.names().collect::<Vec<_>>(),
        [
            "big-order",
            "create-order",
            "route-by-threshold",
            "small-order"
        ]
    );
}
