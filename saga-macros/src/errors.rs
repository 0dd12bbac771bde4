//! An error accumulator: every mistake of one macro invocation is reported in one build.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

/// Collected errors.
#[derive(Default)]
pub(crate) struct Errors {
    errors: Option<syn::Error>,
}

impl Errors {
    /// Records an error at `span`.
    pub(crate) fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.add(syn::Error::new(span, message));
    }

    /// Records an error spanning `tokens`.
    pub(crate) fn push_spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.add(syn::Error::new_spanned(tokens, message));
    }

    /// Records a parse error.
    pub(crate) fn add(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(errors) => errors.combine(error),
            None => self.errors = Some(error),
        }
    }

    /// How many errors were recorded.
    pub(crate) fn len(&self) -> usize {
        self.errors
            .as_ref()
            .map_or(0, |errors| errors.into_iter().count())
    }

    /// The errors as `compile_error!` invocations, where an item is expected.
    ///
    /// They are placed in a block of their own: rustc stops reporting unresolved names in a module
    /// that contains `compile_error!` (right for a macro that then generates nothing), but these
    /// macros always generate their items, so a name that does not resolve (a listed step, a
    /// handler) is a mistake of its own and must be reported in the same build.
    pub(crate) fn to_compile_errors(&self) -> TokenStream {
        match &self.errors {
            None => TokenStream::new(),
            Some(errors) => {
                let errors = errors.to_compile_error();
                quote::quote! {
                    const _: () = {
                        #[allow(dead_code)]
                        struct __SagaErrors;
                        #errors
                    };
                }
            }
        }
    }

    /// The errors as `compile_error!` invocations, where an associated item is expected (inside
    /// an `impl`).
    pub(crate) fn to_associated_compile_errors(&self) -> TokenStream {
        self.errors
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}

/// The messages of the `compile_error!` invocations in `output`, in order (for tests).
#[cfg(test)]
pub(crate) fn messages(output: &str) -> Vec<String> {
    output
        .split("compile_error !")
        .skip(1)
        .map(|rest| {
            let start = rest.find('"').expect("a message") + 1;
            let end = start + rest[start..].find('"').expect("a message");
            rest[start..end].to_owned()
        })
        .collect()
}
