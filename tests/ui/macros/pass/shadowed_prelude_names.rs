// Generated code names everything by absolute path: a module that shadows the prelude's names
// (`Result`, `Option`, `Ok`, `Some`, `Box`, `Vec`, `String`, ...) still compiles.
#![allow(dead_code, non_snake_case)]

mod shadowing {
    use saga_runtime::{local_step, remote_step, saga};
    use serde::{Deserialize, Serialize};

    pub struct Result;
    pub struct Option;
    pub struct Box;
    pub struct Vec;
    pub struct String;
    pub struct Send;
    pub struct Sync;
    pub struct Sized;
    pub fn Ok() {}
    pub fn Err() {}
    pub fn Some() {}
    pub fn None() {}
    pub mod core {}
    pub mod std {}

    type StepResult<T> = ::core::result::Result<T, saga_runtime::StepError>;

    #[derive(Default, Serialize, Deserialize)]
    pub struct Order {
        amount: u64,
    }

    #[local_step(on_failure = (undo, 1_u8))]
    pub async fn validate(_order: &mut Order) -> StepResult<()> {
        ::core::result::Result::Ok(())
    }

    async fn undo(_order: &mut Order, _code: &u8) -> StepResult<()> {
        ::core::result::Result::Ok(())
    }

    #[remote_step(on_success = charged, on_failure = refund)]
    pub async fn charge(order: &Order) -> StepResult<saga_runtime::SagaRequest> {
        saga_runtime::SagaRequest::new("Charge", &order.amount)
    }

    async fn charged(_order: &mut Order, _reply: saga_runtime::SagaResponse) -> StepResult<()> {
        ::core::result::Result::Ok(())
    }

    async fn refund(order: &Order) -> StepResult<saga_runtime::SagaRequest> {
        saga_runtime::SagaRequest::new("Refund", &order.amount)
    }

    async fn is_big(order: &Order) -> StepResult<bool> {
        ::core::result::Result::Ok(order.amount > 100)
    }

    #[saga(steps = [validate])]
    pub struct Big;

    #[saga(steps = [validate, charge, route = conditional(if_then(is_big, Big), else_then(Big))])]
    pub struct CreateOrder;

    #[saga(context = Order, steps = [route = conditional(if_then(is_big, Big))])]
    pub struct Routed;
}

fn main() {
    use saga_runtime::SagaType;
    assert_eq!(shadowing::CreateOrder::definition().steps().len(), 3);
    assert_eq!(shadowing::Routed::definition().steps().len(), 1);
}
