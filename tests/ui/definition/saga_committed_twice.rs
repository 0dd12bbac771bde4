// AlreadyCommitted: a saga is committed once; the builder is gone after the first `commit()`.
use saga_runtime::prelude::*;

async fn step(_: &mut SagaContext) -> Result<(), StepError> {
    Ok(())
}

fn main() {
    let builder = Saga::<SagaContext>::new("order").local_step("validate").on_execute(step);
    let _first = builder.commit();
    let _second = builder.commit();
}
