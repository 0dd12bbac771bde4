//! What the macros of `order_saga.rs` generate, in essence, written out by hand for two of its
//! steps and the saga. The real expansion is longer: it routes every check through small generic
//! helpers spanned on the token they check (so that each mistake is reported once, where it is),
//! keeps generating from the parts that are right when some are wrong (so that one build reports
//! every mistake), and names a step's context through a hidden type alias
//! `__saga_context_of_<step>_<hash>` (so that a public saga may list private steps). This version
//! compiles and runs, so it stays true: `cargo run -p saga-examples --bin order-saga-expanded`.
//!
//! ```ignore
//! #[local_step(on_failure = cancel_order)]
//! async fn validate_order(order: &mut OrderState) -> Result<(), StepError> { .. }
//!
//! #[remote_step(on_success = payment_done, on_failure = refund_payment)]
//! async fn charge_payment(order: &OrderState) -> Result<SagaRequest, StepError> { .. }
//!
//! #[saga(name = "create-order", steps = [validate_order, charge_payment])]
//! struct CreateOrder;
//! ```

use saga_runtime::prelude::{
    Deserialize, SagaRequest, SagaResponse, SagaType, Serialize, StepError,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OrderState {
    amount_cents: u64,
    validated: bool,
    payment_id: Option<String>,
}

async fn cancel_order(order: &mut OrderState) -> Result<(), StepError> {
    order.validated = false;
    Ok(())
}

async fn payment_done(order: &mut OrderState, reply: SagaResponse) -> Result<(), StepError> {
    order.payment_id = Some(reply.content()?);
    Ok(())
}

async fn refund_payment(order: &OrderState) -> Result<SagaRequest, StepError> {
    SagaRequest::new("RefundPayment", &order.payment_id)
}

// The expansion checks each handler, and each listed step, with a generic function whose bound
// carries the diagnostic; it generates its own, spanned on the token it checks. Here, one of each.
fn local_handler<C, F: ::saga_runtime::__private::LocalHandler<C>>(handler: F) -> F {
    handler
}

fn request_handler<C, F: ::saga_runtime::__private::RequestHandler<C>>(handler: F) -> F {
    handler
}

fn reply_handler<C, F: ::saga_runtime::__private::ReplyHandler<C>>(handler: F) -> F {
    handler
}

const fn step_with_context<C, T: ::saga_runtime::__private::StepDef<Context = C>>(_: &T) {}

// `#[local_step(on_failure = cancel_order)] async fn validate_order(..)` becomes a unit struct of
// the same name, with the function as `call`, ...
#[allow(non_camel_case_types)]
struct validate_order;

impl validate_order {
    /// The code of saga step `validate_order`: the function as written.
    async fn call(order: &mut OrderState) -> Result<(), StepError> {
        order.validated = order.amount_cents > 0;
        Ok(())
    }
}

// ... and the step description a saga builder takes. The handler checks carry the diagnostics
// (`expected async fn(&mut OrderState) -> Result<(), StepError>`).
const _: () = {
    #[automatically_derived]
    impl ::saga_runtime::__private::StepDef for validate_order {
        type Context = OrderState;
        const NAME: &'static str = "validate_order";
        fn add(
            saga: ::saga_runtime::__private::Saga<OrderState>,
        ) -> ::saga_runtime::__private::Saga<OrderState> {
            saga.local_step(<Self as ::saga_runtime::__private::StepDef>::NAME)
                .on_execute(local_handler::<OrderState, _>(validate_order::call))
                .on_failure(local_handler::<OrderState, _>(cancel_order))
                .end_step()
        }
    }
};

// `#[remote_step(on_success = payment_done, on_failure = refund_payment)]`
#[allow(non_camel_case_types)]
struct charge_payment;

impl charge_payment {
    /// The code of saga step `charge_payment`: the function as written.
    async fn call(order: &OrderState) -> Result<SagaRequest, StepError> {
        SagaRequest::new("CreatePayment", &order.amount_cents)
    }
}

const _: () = {
    #[automatically_derived]
    impl ::saga_runtime::__private::StepDef for charge_payment {
        type Context = OrderState;
        const NAME: &'static str = "charge_payment";
        fn add(
            saga: ::saga_runtime::__private::Saga<OrderState>,
        ) -> ::saga_runtime::__private::Saga<OrderState> {
            saga.remote_step(<Self as ::saga_runtime::__private::StepDef>::NAME)
                .on_execute(request_handler::<OrderState, _>(charge_payment::call))
                .on_success(reply_handler::<OrderState, _>(payment_done))
                .on_failure(request_handler::<OrderState, _>(refund_payment))
                .end_step()
        }
    }
};

// `#[saga(name = "create-order", steps = [validate_order, charge_payment])] struct CreateOrder;`
struct CreateOrder;

const _: () = {
    #[automatically_derived]
    impl ::saga_runtime::__private::SagaType for CreateOrder {
        type Context = <validate_order as ::saga_runtime::__private::StepDef>::Context;

        fn definition() -> ::saga_runtime::__private::Arc<
            ::saga_runtime::__private::SagaDefinition<
                <validate_order as ::saga_runtime::__private::StepDef>::Context,
            >,
        > {
            static DEFINITION: ::saga_runtime::__private::OnceLock<
                ::saga_runtime::__private::Arc<
                    ::saga_runtime::__private::SagaDefinition<
                        <validate_order as ::saga_runtime::__private::StepDef>::Context,
                    >,
                >,
            > = ::saga_runtime::__private::OnceLock::new();
            ::saga_runtime::__private::Arc::clone(DEFINITION.get_or_init(|| {
                let saga = ::saga_runtime::__private::Saga::<
                    <validate_order as ::saga_runtime::__private::StepDef>::Context,
                >::new("create-order");
                let saga = <validate_order as ::saga_runtime::__private::StepDef>::add(saga);
                let saga = <charge_payment as ::saga_runtime::__private::StepDef>::add(saga);
                match saga.commit() {
                    ::core::result::Result::Ok(definition) => {
                        ::saga_runtime::__private::Arc::new(definition)
                    }
                    ::core::result::Result::Err(error) => ::core::panic!("{}", error),
                }
            }))
        }
    }

    // Found at start-up by `Registry::from_inventory()`.
    ::saga_runtime::__private::inventory::submit! {
        ::saga_runtime::__private::SagaRegistration::new::<CreateOrder>(
            ::core::concat!(::core::file!(), ":", ::core::line!())
        )
    }

    // Checked when it compiles: each listed item is a step on the saga's context ...
    const _: () = {
        step_with_context::<<validate_order as ::saga_runtime::__private::StepDef>::Context, _>(
            &validate_order,
        );
        step_with_context::<<validate_order as ::saga_runtime::__private::StepDef>::Context, _>(
            &charge_payment,
        );
        // ... and no two steps share a persisted name.
        ::core::assert!(
            !::saga_runtime::__private::same_name(
                <validate_order as ::saga_runtime::__private::StepDef>::NAME,
                <charge_payment as ::saga_runtime::__private::StepDef>::NAME,
            ),
            "two steps of saga `create-order` have the same persisted name"
        );
    };
};

fn main() {
    let definition = CreateOrder::definition();
    println!(
        "{} ({}): {:?}",
        definition.name(),
        definition.fingerprint(),
        definition
            .steps()
            .iter()
            .map(|step| (step.name(), step.kind()))
            .collect::<Vec<_>>()
    );
    print!("{}", definition.to_mermaid());
}
