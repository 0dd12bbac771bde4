// AlreadyCommitted: `commit()` consumes the builder, so nothing can be added to a committed saga.
use saga_runtime::prelude::*;

async fn step(_: &mut SagaContext) -> Result<(), StepError> {
    Ok(())
}

fn main() {
    let saga = Saga::<SagaContext>::new("order")
        .local_step("validate")
        .on_execute(step)
        .commit()
        .unwrap();
    let _ = saga.local_step("later");
}
