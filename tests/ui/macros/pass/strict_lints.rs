//! A user crate under `#![deny(missing_docs, unreachable_pub)]` using every macro form: nothing the
//! macros generate is undocumented or needlessly public.
#![deny(missing_docs, unreachable_pub)]

/// The sagas of the crate.
pub mod sagas {
    use saga_runtime::prelude::*;

    /// The saga's state.
    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct Order {
        /// The amount.
        pub amount: u64,
    }

    /// Validates the order.
    #[local_step(on_failure = cancel)]
    pub async fn validate(_order: &mut Order) -> Result<(), StepError> {
        Ok(())
    }

    /// Applies a discount.
    #[local_step(params = 5_u64, name = "discount", on_failure = (restore, 5_u64))]
    pub async fn discount(order: &mut Order, percent: &u64) -> Result<(), StepError> {
        order.amount -= order.amount * percent / 100;
        Ok(())
    }

    async fn cancel(_order: &mut Order) -> Result<(), StepError> {
        Ok(())
    }

    async fn restore(_order: &mut Order, _percent: &u64) -> Result<(), StepError> {
        Ok(())
    }

    /// Charges the payment service.
    #[remote_step(on_success = charged, on_error = refused, on_failure = refund)]
    pub async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
        SagaRequest::new("Charge", &order.amount)
    }

    async fn charged(_order: &mut Order, _reply: SagaResponse) -> Result<(), StepError> {
        Ok(())
    }

    async fn refused(_order: &mut Order, _reply: SagaResponse) -> Result<(), StepError> {
        Ok(())
    }

    async fn refund(order: &Order) -> Result<SagaRequest, StepError> {
        SagaRequest::new("Refund", &order.amount)
    }

    // A step that stays private to the module.
    #[local_step]
    async fn audit(_order: &mut Order) -> Result<(), StepError> {
        Ok(())
    }

    async fn is_big(order: &Order) -> Result<bool, StepError> {
        Ok(order.amount > 100)
    }

    /// The saga run for big orders.
    #[saga(name = "big-order", steps = [audit])]
    pub struct BigOrder;

    /// The order saga.
    #[saga(steps = [validate, discount, charge, route = conditional(if_then(is_big, BigOrder), else_then(BigOrder))])]
    pub struct CreateOrder;

    /// A saga of conditional steps only.
    #[saga(context = Order, steps = [route = conditional(if_then(is_big, BigOrder))])]
    pub struct Routed;

    // A saga that stays private to the module.
    #[saga(steps = [audit])]
    struct Audit;
}

fn main() {
    use saga_runtime::SagaType;
    assert_eq!(sagas::CreateOrder::definition().steps().len(), 4);
    assert_eq!(sagas::Routed::definition().steps().len(), 1);
}
