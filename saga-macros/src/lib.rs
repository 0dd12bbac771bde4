//! Attribute macros of the saga framework: `#[saga]`, `#[local_step]`, `#[remote_step]`.
//!
//! Depend on `saga-runtime`, which re-exports them (feature `macros`, on by default) with their
//! documentation. Generated code reaches the runtime through `::saga_runtime::__private` (or the
//! path given with `crate = ...`). Each macro parses its arguments, checks them and the item it is
//! on, reports every mistake with a span on the offending token, and expands.

mod attr;
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
