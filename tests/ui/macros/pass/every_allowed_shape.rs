// Every shape the macros accept: local and remote steps with and without each handler, handlers
// with parameters, `params` on a step, `name` overrides, conditionals with several `if_then` and
// an `else_then`, a condition with parameters, a saga of conditional steps only with
// `context = ...`.
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
    log: Vec<String>,
}

/// Fixed parameters of a handler.
struct Retry {
    attempts: u32,
}

#[local_step]
async fn plain_local(order: &mut Order) -> Result<(), StepError> {
    order.log.push("plain_local".into());
    Ok(())
}

#[local_step(on_failure = undo)]
async fn local_with_compensation(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[local_step(on_failure = (undo_with, Retry { attempts: 2 }))]
async fn local_with_compensation_params(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[local_step(params = Retry { attempts: 3 }, name = "local-with-params")]
async fn local_with_params(order: &mut Order, retry: &Retry) -> Result<(), StepError> {
    order.amount += u64::from(retry.attempts);
    Ok(())
}

async fn undo(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

async fn undo_with(_order: &mut Order, retry: &Retry) -> Result<(), StepError> {
    let _ = retry.attempts;
    Ok(())
}

#[remote_step]
async fn plain_remote(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Plain", &order.amount)
}

#[remote_step(on_success = done)]
async fn remote_on_success(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("OnSuccess", &order.amount)
}

#[remote_step(on_error = refused)]
async fn remote_on_error(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("OnError", &order.amount)
}

#[remote_step(on_failure = compensate)]
async fn remote_on_failure(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("OnFailure", &order.amount)
}

#[remote_step(on_success = done, on_error = refused, on_failure = compensate, name = "remote:all")]
async fn remote_all(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("All", &order.amount)
}

#[remote_step(
    params = String::from("Topic"),
    on_success = (done_with, 1_u8),
    on_error = (refused_with, 2_u8),
    on_failure = (compensate_with, String::from("Undo")),
)]
async fn remote_with_params(order: &Order, topic: &String) -> Result<SagaRequest, StepError> {
    SagaRequest::new(topic.as_str(), &order.amount)
}

async fn done(order: &mut Order, _reply: SagaResponse) -> Result<(), StepError> {
    order.log.push("done".into());
    Ok(())
}

async fn done_with(_order: &mut Order, _reply: SagaResponse, code: &u8) -> Result<(), StepError> {
    let _ = code;
    Ok(())
}

async fn refused(_order: &mut Order, _reply: SagaResponse) -> Result<(), StepError> {
    Ok(())
}

async fn refused_with(
    _order: &mut Order,
    _reply: SagaResponse,
    code: &u8,
) -> Result<(), StepError> {
    let _ = code;
    Ok(())
}

async fn compensate(order: &Order) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Compensate", &order.amount)
}

async fn compensate_with(order: &Order, topic: &String) -> Result<SagaRequest, StepError> {
    SagaRequest::new(topic.as_str(), &order.amount)
}

async fn is_big(order: &Order) -> Result<bool, StepError> {
    Ok(order.amount > 100)
}

async fn is_small(order: &Order) -> Result<bool, StepError> {
    Ok(order.amount < 10)
}

async fn above(order: &Order, threshold: &u64) -> Result<bool, StepError> {
    Ok(*threshold < order.amount)
}

#[saga(steps = [plain_local])]
struct BigOrder;

#[saga(name = "small-order", steps = [plain_remote])]
struct SmallOrder;

#[saga(
    name = "every-shape",
    steps = [
        plain_local,
        local_with_compensation,
        local_with_compensation_params,
        local_with_params,
        plain_remote,
        remote_on_success,
        remote_on_error,
        remote_on_failure,
        remote_all,
        remote_with_params,
        route = conditional(if_then(is_big, BigOrder), if_then(is_small, SmallOrder), else_then(BigOrder)),
        "only-else" = conditional(else_then(SmallOrder)),
        by_threshold = conditional(if_then((above, 1_000_u64), BigOrder), if_then(is_small, SmallOrder), else_then(SmallOrder)),
    ],
)]
struct EveryShape;

#[saga(context = crate::Order, steps = [route = conditional(if_then(is_big, BigOrder))])]
struct OnlyConditional;

fn main() {
    let definition = EveryShape::definition();
    assert_eq!(definition.name(), "every-shape");
    let names: Vec<&str> = definition.steps().iter().map(|step| step.name()).collect();
    assert_eq!(
        names,
        [
            "plain_local",
            "local_with_compensation",
            "local_with_compensation_params",
            "local-with-params",
            "plain_remote",
            "remote_on_success",
            "remote_on_error",
            "remote_on_failure",
            "remote:all",
            "remote_with_params",
            "route",
            "only-else",
            "by_threshold",
        ]
    );
    let by_threshold = definition.steps().last().expect("steps");
    assert_eq!(by_threshold.kind(), saga_runtime::definition::StepKind::Conditional);
    assert_eq!(
        by_threshold.handlers(),
        [("if_then", "above"), ("if_then", "is_small")]
    );
    assert!(
        format!("{by_threshold:?}").contains(
            r#"if_then: ["big-order", "small-order"], else_then: Some("small-order")"#
        ),
        "{by_threshold:?}"
    );
    assert_eq!(BigOrder::definition().name(), "big-order");
    assert_eq!(SmallOrder::definition().name(), "small-order");
    assert_eq!(OnlyConditional::definition().steps().len(), 1);
    let registry = Registry::from_inventory().expect("unique names");
    assert_eq!(
        registry.names().collect::<Vec<_>>(),
        [
            "big-order",
            "every-shape",
            "only-conditional",
            "small-order"
        ]
    );
}
