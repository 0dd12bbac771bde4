//! Handler shapes: the async function signatures each handler slot accepts, and their type-erased form.
//!
//! A handler is an `async fn` (or anything callable the same way) that borrows the saga's context.
//! Because the returned future borrows the context, plain `Fn(&mut C) -> Fut` bounds cannot express
//! it; each shape is therefore a trait generic over the borrow's lifetime, implemented for every
//! matching callable and required for all lifetimes (`for<'a> LocalFn<'a, C>`). Handlers are stored
//! erased behind one boxed call so that a definition holds steps of any function type.

use std::future::Future;
use std::pin::Pin;

use crate::error::StepError;
use crate::message::{SagaRequest, SagaResponse};

/// A boxed, `Send` future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

macro_rules! handler_shape {
    (
        $(#[$doc:meta])*
        $plain:ident, $with:ident, $erased:ident,
        ($ctx:ident : $ctx_ty:ty $(, $arg:ident : $arg_ty:ty)*) -> $out:ty
    ) => {
        $(#[$doc])*
        pub trait $plain<'a, C: 'a>: Send + Sync + 'static {
            /// The future the handler returns.
            type Fut: Future<Output = $out> + Send + 'a;
            /// Calls the handler.
            fn call(&self, $ctx: $ctx_ty $(, $arg: $arg_ty)*) -> Self::Fut;
        }

        impl<'a, C: 'a, F, Fut> $plain<'a, C> for F
        where
            F: Fn($ctx_ty $(, $arg_ty)*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = $out> + Send + 'a,
        {
            type Fut = Fut;
            fn call(&self, $ctx: $ctx_ty $(, $arg: $arg_ty)*) -> Fut {
                self($ctx $(, $arg)*)
            }
        }

        /// The same handler shape with fixed parameters `&P` given at definition time.
        pub trait $with<'a, C: 'a, P: 'a>: Send + Sync + 'static {
            /// The future the handler returns.
            type Fut: Future<Output = $out> + Send + 'a;
            /// Calls the handler.
            fn call(&self, $ctx: $ctx_ty $(, $arg: $arg_ty)*, params: &'a P) -> Self::Fut;
        }

        impl<'a, C: 'a, P: 'a, F, Fut> $with<'a, C, P> for F
        where
            F: Fn($ctx_ty $(, $arg_ty)*, &'a P) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = $out> + Send + 'a,
        {
            type Fut = Fut;
            fn call(&self, $ctx: $ctx_ty $(, $arg: $arg_ty)*, params: &'a P) -> Fut {
                self($ctx $(, $arg)*, params)
            }
        }

        /// The erased form stored in a definition.
        pub(crate) trait $erased<C>: Send + Sync {
            fn call<'a>(&'a self, $ctx: $ctx_ty $(, $arg: $arg_ty)*) -> BoxFuture<'a, $out>
            where
                C: 'a;
        }

        impl<C: 'static, F> $erased<C> for Plain<F>
        where
            F: for<'a> $plain<'a, C>,
        {
            fn call<'a>(&'a self, $ctx: $ctx_ty $(, $arg: $arg_ty)*) -> BoxFuture<'a, $out>
            where
                C: 'a,
            {
                Box::pin(self.0.call($ctx $(, $arg)*))
            }
        }

        impl<C: 'static, P: Send + Sync + 'static, F> $erased<C> for WithParams<F, P>
        where
            F: for<'a> $with<'a, C, P>,
        {
            fn call<'a>(&'a self, $ctx: $ctx_ty $(, $arg: $arg_ty)*) -> BoxFuture<'a, $out>
            where
                C: 'a,
            {
                Box::pin(self.0.call($ctx $(, $arg)*, &self.1))
            }
        }
    };
}

/// A callable without parameters.
pub(crate) struct Plain<F>(pub(crate) F);

/// A callable with its fixed parameters.
pub(crate) struct WithParams<F, P>(pub(crate) F, pub(crate) P);

handler_shape!(
    /// A local step's `on_execute` / `on_failure`: `async fn(&mut C) -> Result<(), StepError>`.
    LocalFn, LocalFnWith, LocalCall,
    (ctx: &'a mut C) -> Result<(), StepError>
);

handler_shape!(
    /// A remote step's `on_execute` / `on_failure`: `async fn(&C) -> Result<SagaRequest, StepError>`.
    RequestFn, RequestFnWith, RequestCall,
    (ctx: &'a C) -> Result<SagaRequest, StepError>
);

handler_shape!(
    /// A remote step's `on_success` / `on_error`:
    /// `async fn(&mut C, SagaResponse) -> Result<(), StepError>`.
    ReplyFn, ReplyFnWith, ReplyCall,
    (ctx: &'a mut C, reply: SagaResponse) -> Result<(), StepError>
);

handler_shape!(
    /// A conditional alternative's condition: `async fn(&C) -> Result<bool, StepError>`.
    ConditionFn, ConditionFnWith, ConditionCall,
    (ctx: &'a C) -> Result<bool, StepError>
);

/// A stored handler: its erased call and a display name (the function's type name).
pub(crate) struct Handler<H: ?Sized> {
    pub(crate) name: &'static str,
    pub(crate) call: Box<H>,
}

impl<H: ?Sized> Handler<H> {
    /// The short display name of a function type: the last path segment of its type name.
    pub(crate) fn name_of<F>() -> &'static str {
        let full = std::any::type_name::<F>();
        let without_generics = full.split('<').next().unwrap_or(full);
        without_generics
            .rsplit("::")
            .next()
            .unwrap_or(without_generics)
    }
}

// The bounds the builder puts on each handler slot: one trait per slot over the higher-ranked shape,
// so that a wrong handler is reported with the signature it should have, not as an unsatisfied
// `for<'a>` bound (diagnostics are not read through higher-ranked bounds).

/// A local step's `on_execute` / `on_failure` handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a local step handler",
    label = "expected `async fn(&mut {C}) -> Result<(), StepError>`"
)]
pub trait LocalHandler<C>: for<'a> LocalFn<'a, C> {}

impl<C: 'static, F: for<'a> LocalFn<'a, C>> LocalHandler<C> for F {}

/// A remote step's `on_execute` / `on_failure` handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a remote step's request handler",
    label = "expected `async fn(&{C}) -> Result<SagaRequest, StepError>`"
)]
pub trait RequestHandler<C>: for<'a> RequestFn<'a, C> {}

impl<C: 'static, F: for<'a> RequestFn<'a, C>> RequestHandler<C> for F {}

/// A remote step's `on_success` / `on_error` handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a reply handler",
    label = "expected `async fn(&mut {C}, SagaResponse) -> Result<(), StepError>`"
)]
pub trait ReplyHandler<C>: for<'a> ReplyFn<'a, C> {}

impl<C: 'static, F: for<'a> ReplyFn<'a, C>> ReplyHandler<C> for F {}

/// A conditional alternative's condition.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a condition",
    label = "expected `async fn(&{C}) -> Result<bool, StepError>`"
)]
pub trait ConditionHandler<C>: for<'a> ConditionFn<'a, C> {}

impl<C: 'static, F: for<'a> ConditionFn<'a, C>> ConditionHandler<C> for F {}
