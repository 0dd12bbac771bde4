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

/// See `saga_runtime::local_step`.
#[proc_macro_attribute]
pub fn local_step(args: TokenStream, item: TokenStream) -> TokenStream {
    step::expand(step::Kind::Local, args.into(), item.into()).into()
}

/// See `saga_runtime::remote_step`.
#[proc_macro_attribute]
pub fn remote_step(args: TokenStream, item: TokenStream) -> TokenStream {
    step::expand(step::Kind::Remote, args.into(), item.into()).into()
}

/// See `saga_runtime::saga`.
#[proc_macro_attribute]
pub fn saga(args: TokenStream, item: TokenStream) -> TokenStream {
    saga::expand(args.into(), item.into()).into()
}

/// See `saga_runtime::transactional_command`.
#[proc_macro_attribute]
pub fn transactional_command(args: TokenStream, item: TokenStream) -> TokenStream {
    command::expand(args.into(), item.into()).into()
}
