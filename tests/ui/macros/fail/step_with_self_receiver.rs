// A step is a free function: a method taking `self` cannot be one.
use saga_runtime::prelude::*;

#[derive(Default, Serialize, Deserialize)]
struct Order {
    amount: u64,
}

struct Service;

impl Service {
    #[local_step]
    async fn validate(&self, _order: &mut Order) -> Result<(), StepError> {
        Ok(())
    }
}

fn main() {}
