// A struct is not a step: `steps` lists functions annotated with `#[local_step]` / `#[remote_step]`.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

#[local_step]
async fn validate(_order: &mut Order) -> Result<(), StepError> {
    Ok(())
}

struct Reserve;

#[saga(steps = [validate, Reserve])]
struct CreateOrder;

fn main() {}
