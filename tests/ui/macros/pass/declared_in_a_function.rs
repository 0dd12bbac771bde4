// Steps and sagas declared inside a function body (as in a test), public or not, with `cfg`
// attributes on a step.
use saga_runtime::prelude::*;

fn main() {
    #[derive(Default, Serialize, Deserialize)]
    pub struct Order {
        amount: u64,
    }

    #[local_step]
    #[cfg(all())]
    /// Validates the order.
    async fn validate(_order: &mut Order) -> Result<(), StepError> {
        Ok(())
    }

    #[remote_step(on_failure = refund)]
    async fn charge(order: &Order) -> Result<SagaRequest, StepError> {
        SagaRequest::new("Charge", &order.amount)
    }

    async fn refund(order: &Order) -> Result<SagaRequest, StepError> {
        SagaRequest::new("Refund", &order.amount)
    }

    async fn is_big(order: &Order) -> Result<bool, StepError> {
        Ok(order.amount > 100)
    }

    #[saga(steps = [validate])]
    struct Big;

    #[saga(steps = [validate, charge, route = conditional(if_then(is_big, Big))])]
    pub struct CreateOrder;

    assert_eq!(CreateOrder::definition().steps().len(), 3);
    assert_eq!(Big::definition().name(), "big");
}
