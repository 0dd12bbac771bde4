// SagaNotCommitted: executions are made from a `SagaDefinition`, which only `commit()` returns.
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;

async fn step(_: &mut SagaContext) -> Result<(), StepError> {
    Ok(())
}

fn register(manager: &SagaManager) {
    let builder = Saga::<SagaContext>::new("order").local_step("validate").on_execute(step);
    let _ = manager.register(builder);
}

fn main() {}
