// A local step gets no reply: `on_success` and `on_error` belong to `#[remote_step]`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

async fn done(_order: &mut Order, _reply: SagaResponse) -> Result<(), StepError> {
    Ok(())
}

#[local_step(on_success = done, on_error = done)]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
