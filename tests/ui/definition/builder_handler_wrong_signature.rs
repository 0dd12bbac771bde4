// A handler given to the builder by hand is checked like one named in a macro: the error names the
// signature its slot takes.
use saga_runtime::prelude::*;

async fn validate(_: &mut SagaContext, _: u32) -> Result<(), StepError> {
    Ok(())
}

async fn charged(_: &SagaContext) -> Result<SagaRequest, StepError> {
    SagaRequest::new("Charged", &())
}

fn main() {
    let _ = Saga::<SagaContext>::new("order").local_step("validate").on_execute(validate);
    let _ = Saga::<SagaContext>::new("order")
        .remote_step("charge")
        .on_success(charged);
}
