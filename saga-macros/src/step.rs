//! `#[local_step]` and `#[remote_step]`: parse the arguments and the function, check its shape,
//! and expand it into a unit type of the same name that adds the step to a saga.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Pat, Type};

use crate::attr::{self, Args, Handler};
use crate::errors::Errors;
use crate::paths::Runtime;

/// Which step attribute.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Local,
    Remote,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Self::Local => "local_step",
            Self::Remote => "remote_step",
        }
    }
}

/// The checked arguments of a step attribute.
#[derive(Default)]
struct StepArgs {
    name: Option<LitStr>,
    on_success: Option<Handler>,
    on_error: Option<Handler>,
    on_failure: Option<Handler>,
    params: Option<syn::Expr>,
    krate: Option<syn::Path>,
}

fn parse_args(kind: Kind, args: TokenStream, errors: &mut Errors) -> StepArgs {
    let args = match syn::parse2::<Args>(args) {
        Ok(args) => args,
        Err(error) => {
            errors.add(error);
            return StepArgs::default();
        }
    };
    let (valid, misplaced): (&[&str], &[(&str, &str)]) = match kind {
        Kind::Local => (
            &["name", "on_failure", "params", "crate"],
            &[
                (
                    "on_success",
                    "only a remote step gets a reply; a local step's code is the function itself",
                ),
                (
                    "on_error",
                    "only a remote step gets a reply; a local step's code is the function itself",
                ),
            ],
        ),
        Kind::Remote => (
            &[
                "name",
                "on_success",
                "on_error",
                "on_failure",
                "params",
                "crate",
            ],
            &[],
        ),
    };
    let mut out = StepArgs::default();
    for arg in attr::accept(args, kind.attribute(), valid, misplaced, errors) {
        match arg.key.to_string().as_str() {
            "name" => out.name = attr::persisted_name(&arg.value, errors),
            "on_success" => out.on_success = attr::handler(&arg.value, "on_success", errors),
            "on_error" => out.on_error = attr::handler(&arg.value, "on_error", errors),
            "on_failure" => out.on_failure = attr::handler(&arg.value, "on_failure", errors),
            "params" => out.params = Some(arg.value),
            "crate" => out.krate = attr::crate_path(&arg.value, errors),
            _ => {}
        }
    }
    out
}

/// The context type of the step's first parameter, after checking the function's shape.
fn check_signature(
    kind: Kind,
    function: &ItemFn,
    params: bool,
    errors: &mut Errors,
) -> Option<Type> {
    let signature = &function.sig;
    if signature.asyncness.is_none() {
        errors.push(
            signature.fn_token.span,
            "a saga step must be an `async fn`: its handlers are awaited",
        );
    }
    if !signature.generics.params.is_empty() || signature.generics.where_clause.is_some() {
        errors.push_spanned(
            &signature.generics,
            "a saga step cannot be generic: its context type and handlers are fixed when the saga is defined",
        );
    }
    let mut context = None;
    let mut typed = Vec::new();
    for input in &signature.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.push_spanned(
                receiver,
                "a saga step is a free function: it cannot take `self`",
            ),
            FnArg::Typed(argument) => typed.push(argument),
        }
    }
    let expected = if params { 2 } else { 1 };
    let shape = match (kind, params) {
        (Kind::Local, false) => "`async fn(context: &mut Context)`",
        (Kind::Local, true) => "`async fn(context: &mut Context, params: &Params)`",
        (Kind::Remote, false) => "`async fn(context: &Context)`",
        (Kind::Remote, true) => "`async fn(context: &Context, params: &Params)`",
    };
    if typed.len() != expected
        && signature
            .inputs
            .iter()
            .all(|input| matches!(input, FnArg::Typed(_)))
    {
        let span = if signature.inputs.is_empty() {
            signature.paren_token.span.join()
        } else {
            signature.inputs.span()
        };
        errors.push(
            span,
            format!(
                "a {} step takes {expected} parameter{}: {shape}",
                if kind == Kind::Local {
                    "local"
                } else {
                    "remote"
                },
                if expected == 1 { "" } else { "s" }
            ),
        );
    }
    if let Some(first) = typed.first() {
        if let Pat::Ident(_) | Pat::Wild(_) = &*first.pat {
        } else {
            errors.push_spanned(
                &first.pat,
                "name the context parameter with a plain identifier",
            );
        }
        match (&*first.ty, kind) {
            (Type::Reference(reference), Kind::Local) if reference.mutability.is_some() => {
                context = Some((*reference.elem).clone());
            }
            (Type::Reference(reference), Kind::Local) => errors.push_spanned(
                reference,
                "a local step changes its context: take it as `&mut` (`context: &mut Context`)",
            ),
            (Type::Reference(reference), Kind::Remote) if reference.mutability.is_none() => {
                context = Some((*reference.elem).clone());
            }
            (Type::Reference(reference), Kind::Remote) => errors.push_spanned(
                reference,
                "a remote step builds its request from a shared reference (`context: &Context`); its reply handlers change the context",
            ),
            (other, _) => errors.push_spanned(
                other,
                format!("the context parameter is a reference to the saga's context: {shape}"),
            ),
        }
    }
    if params {
        if let Some(second) = typed.get(1) {
            if !matches!(&*second.ty, Type::Reference(_)) {
                errors.push_spanned(
                    &second.ty,
                    "the parameters are passed by reference: `params: &Params`",
                );
            }
        }
    }
    context
}

/// Expands a step attribute.
pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse_args(kind, args, &mut errors);
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let mut errors = errors;
            errors.push(
                attr::call_site(),
                format!("`#[{}]` goes on an `async fn`", kind.attribute()),
            );
            let compile_errors = errors.to_compile_errors();
            return quote!(#compile_errors #item);
        }
    };
    let context = check_signature(kind, &function, args.params.is_some(), &mut errors);
    let runtime = Runtime::new(args.krate.as_ref());
    let private = runtime.private();

    let ident = &function.sig.ident;
    let vis = &function.vis;
    let attrs = &function.attrs;
    let mut signature = function.sig.clone();
    signature.ident = format_ident!("call", span = ident.span());
    let block = &function.block;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let doc = format!(
        "The code of saga step `{}`: the function as written.",
        name.value()
    );

    let compile_errors = errors.to_compile_errors();
    let step_type = quote! {
        #(#attrs)*
        #[allow(non_camel_case_types)]
        #vis struct #ident;

        impl #ident {
            #[doc = #doc]
            #vis #signature #block
        }
    };
    let Some(context) = context else {
        return quote!(#compile_errors #step_type);
    };
    if !errors.is_empty() {
        // Keep the type usable so that one mistake gives one error, not one per use.
        return quote! {
            #compile_errors
            #step_type
            const _: () = {
                #[automatically_derived]
                impl #private::StepDef for #ident {
                    type Context = #context;
                    const NAME: &'static str = #name;
                    fn add(saga: #private::Saga<#context>) -> #private::Saga<#context> {
                        saga
                    }
                }
            };
        };
    }

    let execute = match (&args.params, kind) {
        (Some(params), Kind::Local) => {
            quote_spanned!(ident.span()=> .on_execute_with(#ident::call, #params))
        }
        (Some(params), Kind::Remote) => {
            quote_spanned!(ident.span()=> .on_execute_with(#ident::call, #params))
        }
        (None, Kind::Local) => {
            quote_spanned!(ident.span()=> .on_execute(#private::local_handler::<#context, _>(#ident::call)))
        }
        (None, Kind::Remote) => {
            quote_spanned!(ident.span()=> .on_execute(#private::request_handler::<#context, _>(#ident::call)))
        }
    };
    let handler = |slot: &str, handler: &Option<Handler>, check: &str| -> TokenStream {
        let Some(handler) = handler else {
            return TokenStream::new();
        };
        let path = handler.path();
        let span = path.span();
        match handler {
            Handler::Plain(_) => {
                let method = format_ident!("{slot}", span = span);
                let check = format_ident!("{check}", span = span);
                quote_spanned!(span=> .#method(#private::#check::<#context, _>(#path)))
            }
            Handler::WithParams(_, params) => {
                let method = format_ident!("{slot}_with", span = span);
                quote_spanned!(span=> .#method(#path, #params))
            }
        }
    };
    let (start, handlers) = match kind {
        Kind::Local => (
            quote!(local_step),
            handler("on_failure", &args.on_failure, "local_handler"),
        ),
        Kind::Remote => {
            let mut handlers = handler("on_success", &args.on_success, "reply_handler");
            handlers.extend(handler("on_error", &args.on_error, "reply_handler"));
            handlers.extend(handler("on_failure", &args.on_failure, "request_handler"));
            (quote!(remote_step), handlers)
        }
    };
    quote! {
        #step_type
        const _: () = {
            #[automatically_derived]
            impl #private::StepDef for #ident {
                type Context = #context;
                const NAME: &'static str = #name;
                fn add(saga: #private::Saga<#context>) -> #private::Saga<#context> {
                    saga.#start(<Self as #private::StepDef>::NAME)
                        #execute
                        #handlers
                        .end_step()
                }
            }
        };
    }
}
