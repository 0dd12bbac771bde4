// A step is not generic: its context type and handlers are fixed when the saga is defined.
use saga_runtime::prelude::*;

#[local_step]
async fn validate<C: Context>(_context: &mut C) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
