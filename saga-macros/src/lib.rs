//! Attribute macros of the saga framework: `#[saga]`, `#[local_step]`, `#[remote_step]`,
//! `#[transactional_command]`.
//!
//! Depend on `saga-runtime`, which re-exports them (feature `macros`, on by default) with their
//! documentation. Generated code reaches the runtime through `::saga_runtime::__private` (or the
//! path given with `crate = ...`); every path it names is built in `paths`.
//!
//! Each macro parses its arguments (`attr`), checks them and the item it is on, and expands
//! (`step`, `saga`). Diagnostics are the product:
//!
//! - every mistake is collected (`errors`) and reported in one build, with a span on the
//!   offending token; the expansion is still emitted from what is right, so that the compiler's
//!   own checks (a listed item that is not a step, a handler with the wrong signature) run in the
//!   same build and nothing that depends on a reported mistake cascades;
//! - type-level rules are checked where the user named the thing: each listed step once, in value
//!   position (the runtime's `StepDef` message), each handler by the bound of a generic function
//!   called at its path, a step on another context by a check trait the expansion declares with
//!   its own message; a type that cannot be known is replaced by the error that explains it.
//!
//! UI tests of every rule: `tests/ui/macros`, the `saga-ui-tests` package.

mod attr;
mod command;
mod errors;
mod paths;
mod saga;
mod step;

use proc_macro::TokenStream;

/// Turns an `async fn(&mut Context) -> Result<(), StepError>` into a local saga step.
///
/// `#[local_step]`, `#[local_step(on_failure = undo, name = "persisted-name", params = EXPR)]`.
/// The function's name is the step's persisted name unless `name` is given. `on_failure` names the
/// compensation, `async fn(&mut Context) -> Result<(), StepError>` (or `(function, parameters)`
/// for a handler with fixed parameters `async fn(&mut Context, &Params)`). `params` gives the step
/// function itself fixed parameters (it then takes `(&mut Context, &Params)`).
///
/// What it generates: the function becomes a unit struct of the same name (so that
/// `#[saga(steps = [...])]` can list it and check it) whose associated function `call` is the
/// function as written, an implementation of the hidden `StepDef` trait that adds the step with
/// its handlers to a saga builder, and a hidden alias of its context type
/// (`__saga_context_of_<name>_<hash>`, with the function's visibility) through which a saga names
/// the context. Handler signatures are checked where they are named.
/// Since the unit struct lives in the value namespace too, a step's name cannot also be used for a
/// local variable in the same module (`let validate_order = ..` would be read as the struct).
#[proc_macro_attribute]
pub fn local_step(args: TokenStream, item: TokenStream) -> TokenStream {
    step::expand(step::Kind::Local, args.into(), item.into()).into()
}

/// Turns an `async fn(&Context) -> Result<SagaRequest, StepError>` into a remote saga step.
///
/// `#[remote_step(on_success = done, on_error = refused, on_failure = undo, name = "...", params = EXPR)]`,
/// every argument optional. `on_success` / `on_error` are `async fn(&mut Context, SagaResponse) ->
/// Result<(), StepError>`; `on_failure` builds the compensating request like the step itself.
/// Without `on_error`, an ERROR reply fails the step.
///
/// What it generates: as `local_step`, a unit struct of the same name with the function as
/// `call`, and the hidden `StepDef` implementation.
#[proc_macro_attribute]
pub fn remote_step(args: TokenStream, item: TokenStream) -> TokenStream {
    step::expand(step::Kind::Remote, args.into(), item.into()).into()
}

/// Declares a saga on a unit struct.
///
/// `#[saga(name = "create-order", steps = [validate, charge, route = conditional(if_then(is_big,
/// BigOrder), else_then(SmallOrder)), reserve], context = Type, crate = path)]`. `steps` lists
/// functions annotated with `local_step` / `remote_step` in order; a conditional step is
/// `name = conditional(...)` with one or more `if_then(condition, SubSaga)` (condition: `async
/// fn(&Context) -> Result<bool, StepError>`, sub-saga: another `#[saga]` type) and at most one
/// `else_then(SubSaga)`. A condition with fixed parameters is written `if_then((condition, PARAMS),
/// SubSaga)` and takes them by reference (`async fn(&Context, &Params) -> Result<bool, StepError>`),
/// like a handler given as `(function, parameters)`. `name` defaults to the struct's name in kebab
/// case; `context` is needed only when every step is conditional; `crate` names the runtime when
/// it is re-exported.
///
/// What it generates: an implementation of `SagaType` whose definition is built once, an
/// `inventory` registration (see `Registry::from_inventory`), and compile-time checks: every
/// listed item is a step, every step works on the same context, every sub-saga is a saga on that
/// context, and no two steps share a persisted name.
#[proc_macro_attribute]
pub fn saga(args: TokenStream, item: TokenStream) -> TokenStream {
    saga::expand(args.into(), item.into()).into()
}

/// Registers an `async fn(CommandContext, Request) -> Result<Response, CommandError>` as the
/// handler of a command topic of a transactional participant.
///
/// `#[transactional_command(topic = "BookFlight", on_commit = apply, on_reject = discard)]`:
/// `topic` is required; `on_commit` / `on_reject` name `async fn(Settled)` callbacks that receive
/// the effects this topic's commands staged when their transaction commits or is rejected; `crate`
/// names the runtime when it is re-exported. The request and the response are serde types.
///
/// What it generates: the function is kept as written, and an `inventory` registration adds it
/// (with its callbacks) to the builder made by
/// `TransactionalParticipant::from_inventory`.
/// The handler and the callbacks are checked there, at their paths.
#[proc_macro_attribute]
pub fn transactional_command(args: TokenStream, item: TokenStream) -> TokenStream {
    command::expand(args.into(), item.into()).into()
}
