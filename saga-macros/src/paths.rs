//! Every path the generated code names, built in one place: the runtime is reached through its
//! hidden `__private` module, at `::saga_runtime` or at the path given with `crate = ...`.

use proc_macro2::TokenStream;
use quote::quote;

/// The runtime's hidden module for generated code.
pub(crate) struct Runtime {
    root: TokenStream,
}

impl Runtime {
    /// `::saga_runtime`, or the `crate = path` override.
    pub(crate) fn new(krate: Option<&syn::Path>) -> Self {
        let root = match krate {
            Some(path) => quote!(#path),
            None => quote!(::saga_runtime),
        };
        Self { root }
    }

    /// `<root>::__private`.
    pub(crate) fn private(&self) -> TokenStream {
        let root = &self.root;
        quote!(#root::__private)
    }
}
