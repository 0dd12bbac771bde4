//! `#[transactional_command]`: registers an `async fn(CommandContext, Request) -> Result<Response,
//! CommandError>` as the handler of a command topic of a transactional participant, with its
//! `on_commit` / `on_reject` callbacks, through `inventory`.
//!
//! The function is kept as written. Next to it, a hidden registration adds it to a participant
//! builder (`TransactionalParticipant::from_inventory`); the handler and the callbacks are checked
//! there by the builder's bounds, at their paths.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, FnArg, ItemFn, LitStr, Path, ReturnType};

use crate::attr::{self, Args};
use crate::errors::Errors;
use crate::paths::Runtime;

const ARGS: &[&str] = &["topic", "on_commit", "on_reject", "crate"];

#[derive(Default)]
struct CommandArgs {
    topic: Option<LitStr>,
    on_commit: Option<Path>,
    on_reject: Option<Path>,
    krate: Option<Path>,
}

fn callback(value: &Expr, key: &str, errors: &mut Errors) -> Option<Path> {
    match value {
        Expr::Path(path) if path.qself.is_none() => Some(path.path.clone()),
        other => {
            errors.push_spanned(
                other,
                format!("`{key}` names an `async fn(Settled)` by its path"),
            );
            None
        }
    }
}

fn topic(value: &Expr, errors: &mut Errors) -> Option<LitStr> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(literal),
            ..
        }) if !literal.value().trim().is_empty() => Some(literal.clone()),
        other => {
            errors.push_spanned(
                other,
                "`topic` must be a non-empty string literal, e.g. `topic = \"BookFlight\"`",
            );
            None
        }
    }
}

fn parse_args(args: TokenStream, errors: &mut Errors) -> (CommandArgs, bool) {
    let args = match syn::parse2::<Args>(args) {
        Ok(args) => args,
        Err(error) => {
            errors.add(error);
            return (CommandArgs::default(), false);
        }
    };
    let mut out = CommandArgs::default();
    let mut topic_given = false;
    for arg in attr::accept(args, "transactional_command", ARGS, &[], errors) {
        match arg.key.to_string().as_str() {
            "topic" => {
                topic_given = true;
                out.topic = topic(&arg.value, errors);
            }
            "on_commit" => out.on_commit = callback(&arg.value, "on_commit", errors),
            "on_reject" => out.on_reject = callback(&arg.value, "on_reject", errors),
            "crate" => out.krate = attr::crate_path(&arg.value, errors),
            _ => {}
        }
    }
    (out, topic_given)
}

/// Checks the handler's shape: a free `async fn` of two parameters that returns something.
fn check_signature(function: &ItemFn, errors: &mut Errors) {
    let signature = &function.sig;
    if signature.asyncness.is_none() {
        errors.push(
            signature.fn_token.span,
            "a transactional command handler must be an `async fn`",
        );
    }
    if !signature.generics.params.is_empty() {
        errors.push_spanned(
            &signature.generics,
            "a transactional command handler cannot be generic",
        );
    }
    if let Some(receiver) = signature.inputs.iter().find_map(|input| match input {
        FnArg::Receiver(receiver) => Some(receiver),
        FnArg::Typed(_) => None,
    }) {
        errors.push_spanned(
            receiver,
            "a transactional command handler is a free function, not a method",
        );
    } else if signature.inputs.len() != 2 {
        let span = if signature.inputs.is_empty() {
            signature.paren_token.span.join()
        } else {
            signature.inputs.span()
        };
        errors.push(
            span,
            format!(
                "a transactional command handler takes 2 parameters, `(CommandContext, Request)`, \
                 not {}",
                signature.inputs.len()
            ),
        );
    }
    if matches!(signature.output, ReturnType::Default) {
        errors.push(
            signature.ident.span(),
            "a transactional command handler returns `Result<Response, CommandError>`",
        );
    }
}

/// Expands `#[transactional_command(...)]` on `item`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let (args, topic_given) = parse_args(args, &mut errors);
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            errors.push_spanned(
                &item,
                "`#[transactional_command]` goes on an `async fn(CommandContext, Request)`",
            );
            let errors = errors.to_compile_errors();
            return quote!(#item #errors);
        }
    };
    if !topic_given && errors.len() == 0 {
        errors.push(
            proc_macro2::Span::call_site(),
            "`#[transactional_command]` needs the command's `topic = \"...\"`",
        );
    }
    let before = errors.len();
    check_signature(&function, &mut errors);
    let signature_ok = errors.len() == before;

    let registration = match (&args.topic, signature_ok) {
        (Some(topic), true) => {
            let runtime = Runtime::new(args.krate.as_ref());
            let private = runtime.private();
            let name = &function.sig.ident;
            let on_commit = args
                .on_commit
                .iter()
                .map(|path| quote_spanned!(path.span()=> .on_commit_of(#topic, #path)));
            let on_reject = args
                .on_reject
                .iter()
                .map(|path| quote_spanned!(path.span()=> .on_reject_of(#topic, #path)));
            quote! {
                const _: () = {
                    fn __register(
                        builder: #private::TransactionalParticipantBuilder,
                    ) -> #private::TransactionalParticipantBuilder {
                        builder.command(#topic, #name) #(#on_commit)* #(#on_reject)*
                    }
                    #private::inventory::submit! {
                        #private::CommandRegistration::new(
                            #topic,
                            ::core::concat!(::core::file!(), ":", ::core::line!()),
                            __register,
                        )
                        .in_module(::core::module_path!())
                    }
                };
            }
        }
        _ => TokenStream::new(),
    };
    let errors = errors.to_compile_errors();
    quote! {
        #function
        #registration
        #errors
    }
}
