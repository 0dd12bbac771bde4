// `#[saga]` goes on a unit struct, not on an enum.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

#[saga(steps = [validate])]
enum CreateOrder {
    Small,
    Big,
}

fn main() {}
