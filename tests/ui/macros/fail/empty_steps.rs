// A saga must list at least one step: `steps = []` is empty.
use saga_runtime::prelude::*;

#[saga(steps = [])]
struct CreateOrder;

fn main() {}
