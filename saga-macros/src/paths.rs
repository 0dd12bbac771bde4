//! Every path the generated code names, built in one place: the runtime is reached through its
//! hidden `__private` module (and its public `definition` module for the handler shapes with
//! parameters), at `::saga_runtime` or at the path given with `crate = ...`.

use proc_macro2::TokenStream;
use quote::quote;

/// The runtime, as generated code reaches it.
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

    /// `<root>::__private`: the items generated code relies on.
    pub(crate) fn private(&self) -> TokenStream {
        let root = &self.root;
        quote!(#root::__private)
    }

    /// `<root>::__private`, every token at `span` (for code whose errors belong there).
    pub(crate) fn private_at(&self, span: proc_macro2::Span) -> TokenStream {
        respan(self.private(), span)
    }

    /// `<root>::definition::<item>`: the builders and the handler shapes with fixed parameters
    /// (`LocalFnWith`, ...), which `__private` does not re-export.
    pub(crate) fn definition(&self, item: &str) -> TokenStream {
        let root = &self.root;
        let item = syn::Ident::new(item, proc_macro2::Span::call_site());
        quote!(#root::definition::#item)
    }
}

/// `{ tokens }`, the braces at `span` (an item's span ends with its closing brace).
pub(crate) fn braced(tokens: TokenStream, span: proc_macro2::Span) -> TokenStream {
    let mut group = proc_macro2::Group::new(proc_macro2::Delimiter::Brace, tokens);
    group.set_span(span);
    proc_macro2::TokenTree::Group(group).into()
}

/// `tokens`, every one at `span`.
pub(crate) fn respan(tokens: TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let proc_macro2::TokenTree::Group(group) = &token {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                token = proc_macro2::TokenTree::Group(inner);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// `::core::compile_error! { message }` at `error`'s span, usable where a type is expected: the
/// type becomes an error type, so nothing that depends on it reports a second error.
pub(crate) fn error_type(error: &syn::Error) -> TokenStream {
    error.to_compile_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_through_the_runtime_root() {
        let default = Runtime::new(None);
        assert_eq!(
            default.private().to_string(),
            ":: saga_runtime :: __private"
        );
        let renamed: syn::Path = syn::parse_quote!(my_crate::saga);
        let renamed = Runtime::new(Some(&renamed));
        assert_eq!(
            renamed.definition("LocalFnWith").to_string(),
            "my_crate :: saga :: definition :: LocalFnWith"
        );
    }
}
