// Steps run on a multi-threaded runtime: a step's future must be `Send` (no `Rc` across an await).
use std::rc::Rc;

use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

async fn audit() {}

#[local_step]
async fn validate(order: &mut Order) -> Result<(), StepError> {
    let amount = Rc::new(order.amount);
    audit().await;
    order.amount = *amount;
    Ok(())
}

fn main() {}
