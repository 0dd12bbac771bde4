// A remote step builds the command it sends: it returns `Result<SagaRequest, StepError>`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[remote_step]
async fn charge(_order: &Order) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
