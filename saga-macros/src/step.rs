//! `#[local_step]` and `#[remote_step]`: parse the arguments and the function, check its shape,
//! and expand it into a unit type of the same name that adds the step to a saga.
//!
//! The expansion keeps working when something is wrong, so that one mistake gives one error: the
//! unit type and its `StepDef` implementation are emitted whenever the function is a free
//! function (a saga that lists the step then checks the rest of itself), the function's own
//! handler check is left out when its signature was already reported, and a context type that
//! cannot be known becomes an error type. Handlers are checked where they are named, by the
//! bounds of a generic builder function, so each wrong handler is reported once, at its path.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Pat, ReturnType, Type};

use crate::attr::{self, Args, Handler};
use crate::errors::Errors;
use crate::paths::{self, Runtime};

/// Which step attribute.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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

    fn adjective(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Remote => "remote",
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

const LOCAL_ARGS: &[&str] = &["name", "on_failure", "params", "crate"];
const REMOTE_ARGS: &[&str] = &[
    "name",
    "on_success",
    "on_error",
    "on_failure",
    "params",
    "crate",
];
const REPLY_ONLY: &str =
    "only a remote step gets a reply; a local step's code is the function itself";

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
            LOCAL_ARGS,
            &[("on_success", REPLY_ONLY), ("on_error", REPLY_ONLY)],
        ),
        Kind::Remote => (REMOTE_ARGS, &[]),
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

/// What the signature check found.
struct Signature {
    /// The context type, or the error that explains why it cannot be known (rendered as an error
    /// type, so that it is reported once and nothing depending on it is).
    context: Result<Type, syn::Error>,
    /// Whether the function itself can be checked as the step's handler (its signature was not
    /// already reported).
    usable: bool,
}

/// Checks the function's shape, reporting every mistake.
fn check_signature(kind: Kind, function: &ItemFn, params: bool, errors: &mut Errors) -> Signature {
    let signature = &function.sig;
    let reported = errors.len();
    if signature.asyncness.is_none() {
        errors.push(
            signature.fn_token.span,
            "a saga step must be an `async fn`: its handlers are awaited",
        );
    }
    if let Some(constness) = &signature.constness {
        errors.push(constness.span, "a saga step cannot be a `const fn`");
    }
    let expected = if params { 2 } else { 1 };
    let shape = match (kind, params) {
        (Kind::Local, false) => "`async fn(context: &mut Context) -> Result<(), StepError>`",
        (Kind::Local, true) => {
            "`async fn(context: &mut Context, params: &Params) -> Result<(), StepError>`"
        }
        (Kind::Remote, false) => "`async fn(context: &Context) -> Result<SagaRequest, StepError>`",
        (Kind::Remote, true) => {
            "`async fn(context: &Context, params: &Params) -> Result<SagaRequest, StepError>`"
        }
    };
    let typed: Vec<_> = signature
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(argument) => Some(argument),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let mut count_error = (typed.len() != expected).then(|| {
        let span = if signature.inputs.is_empty() {
            signature.paren_token.span.join()
        } else if typed.len() > expected {
            typed[expected].span()
        } else {
            signature.inputs.span()
        };
        let hint = if params {
            ""
        } else {
            " (fixed parameters come with `params = ...` in the attribute)"
        };
        syn::Error::new(
            span,
            format!(
                "a {} step takes {expected} parameter{}: {shape}{hint}",
                kind.adjective(),
                if expected == 1 { "" } else { "s" },
            ),
        )
    });
    if let Some(first) = typed.first() {
        if !matches!(&*first.pat, Pat::Ident(_) | Pat::Wild(_)) {
            errors.push_spanned(
                &first.pat,
                "name the context parameter with a plain identifier",
            );
        }
        match (&*first.ty, kind) {
            (Type::Reference(reference), Kind::Local) if reference.mutability.is_none() => errors
                .push_spanned(
                    reference,
                    "a local step changes its context: take it as `&mut` (`context: &mut Context`)",
                ),
            (Type::Reference(reference), Kind::Remote) if reference.mutability.is_some() => errors
                .push_spanned(
                    reference,
                    "a remote step builds its request from a shared reference (`context: &Context`); its reply handlers change the context",
                ),
            (Type::Reference(_), _) => {}
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
    if let ReturnType::Default = signature.output {
        let returns = match kind {
            Kind::Local => "`Result<(), StepError>`",
            Kind::Remote => "`Result<SagaRequest, StepError>`",
        };
        errors.push(
            signature.ident.span(),
            format!(
                "a {} step returns {returns}: add the return type",
                kind.adjective()
            ),
        );
    }
    let generic =
        !signature.generics.params.is_empty() || signature.generics.where_clause.is_some();
    let context = if generic {
        // The context type may name the function's generic parameters: the error stands for it.
        Err(syn::Error::new_spanned(
            &signature.generics,
            "a saga step cannot be generic: its context type and handlers are fixed when the saga is defined",
        ))
    } else {
        match typed.first() {
            Some(first) => Ok(match &*first.ty {
                Type::Reference(reference) => (*reference.elem).clone(),
                other => other.clone(),
            }),
            // No parameter: the count error stands for the context type.
            None => Err(count_error.take().expect("no parameter is a wrong count")),
        }
    };
    if let Some(error) = count_error {
        errors.add(error);
    }
    Signature {
        usable: context.is_ok() && errors.len() == reported,
        context,
    }
}

/// Expands a step attribute.
pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse_args(kind, args, &mut errors);
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let span = match syn::parse2::<syn::Item>(item.clone()) {
                Ok(syn::Item::Struct(item)) => item.struct_token.span,
                Ok(syn::Item::Enum(item)) => item.enum_token.span,
                Ok(other) => other.span(),
                Err(_) => Span::call_site(),
            };
            errors.push(
                span,
                format!("`#[{}]` goes on an `async fn`", kind.attribute()),
            );
            let compile_errors = errors.to_compile_errors();
            return quote!(#compile_errors #item);
        }
    };
    if let Some(FnArg::Receiver(receiver)) = function
        .sig
        .inputs
        .iter()
        .find(|input| matches!(input, FnArg::Receiver(_)))
    {
        // A method: leave it as it is (a unit type cannot be declared inside an `impl`).
        errors.push_spanned(
            receiver,
            "a saga step is a free function: it cannot take `self`",
        );
        let compile_errors = errors.to_associated_compile_errors();
        return quote!(#compile_errors #function);
    }
    let signature = check_signature(kind, &function, args.params.is_some(), &mut errors);
    let default_name = function.sig.ident.unraw().to_string();
    if args.name.is_none() && !attr::is_valid_name(&default_name) {
        errors.push(
            function.sig.ident.span(),
            format!(
                "`{default_name}` is not a valid persisted name (a step is persisted under its function's name): give it one with `name = \"...\"`"
            ),
        );
    }
    let compile_errors = errors.to_compile_errors();
    let generated = generate(kind, &args, &function, &signature);
    quote!(#compile_errors #generated)
}

/// The unit type, its `call`, and its `StepDef` implementation.
fn generate(kind: Kind, args: &StepArgs, function: &ItemFn, signature: &Signature) -> TokenStream {
    let runtime = Runtime::new(args.krate.as_ref());
    let private = runtime.private();
    let ident = &function.sig.ident;
    let vis = &function.vis;
    let attrs = &function.attrs;
    let mut call = function.sig.clone();
    call.ident = format_ident!("call", span = ident.span());
    let block = &function.block;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&ident.unraw().to_string(), ident.span()));
    let doc = format!(
        "The code of saga step `{}`: the function as written.",
        name.value()
    );
    // When the context type cannot be known, the error stands for it, once, inside the
    // implementation (an error at module level would hide unresolved names around it).
    let (context, alias_target) = match &signature.context {
        Ok(context) => (quote!(#context), quote!(#context)),
        Err(error) => (
            paths::error_type(error),
            quote!(<#ident as #private::StepDef>::Context),
        ),
    };

    let mut add = Add::new(kind, &runtime);
    if signature.usable {
        // Checked at the return type (or the name): that is where a wrong output or a future that
        // is not `Send` shows.
        let span = match &function.sig.output {
            ReturnType::Type(_, ty) => ty.span(),
            ReturnType::Default => ident.span(),
        };
        let mut step = ident.clone();
        step.set_span(span);
        let code = quote_spanned!(span=> #step::call);
        let slot = match kind {
            Kind::Local => Slot::Local,
            Kind::Remote => Slot::Request,
        };
        add.slot("on_execute", slot, span, code, args.params.as_ref());
    }
    match kind {
        Kind::Local => add.handler("on_failure", Slot::Local, args.on_failure.as_ref()),
        Kind::Remote => {
            add.handler("on_success", Slot::Reply, args.on_success.as_ref());
            add.handler("on_error", Slot::Reply, args.on_error.as_ref());
            add.handler("on_failure", Slot::Request, args.on_failure.as_ref());
        }
    }
    let (helpers, body) = add.finish();
    // The implementation is placed at the function's name, where rustc shows it when it lists
    // the steps it knows.
    let implementation = quote_spanned!(ident.span()=> #[automatically_derived] impl);
    let step_trait = runtime.private_at(ident.span());

    let items = quote! {
        type Context = #context;
        const NAME: &'static str = #name;
        fn add(
            saga: #private::Saga<<Self as #private::StepDef>::Context>,
        ) -> #private::Saga<<Self as #private::StepDef>::Context> {
            #body
        }
    };
    let items = paths::braced(items, ident.span());

    // `cfg` attributes apply to everything generated; the others go on the type.
    let (cfgs, attrs): (Vec<_>, Vec<_>) =
        attrs.iter().partition(|attr| attr.path().is_ident("cfg"));
    let context_alias = context_alias(ident);
    quote! {
        #(#cfgs)*
        #(#attrs)*
        #[allow(non_camel_case_types)]
        #vis struct #ident;

        #(#cfgs)*
        impl #ident {
            #[doc = #doc]
            #vis #call #block
        }

        // The context type under a name derived from the step's: a public saga that takes its
        // context from a private step names it so (`<step as StepDef>::Context` would expose the
        // private step in the saga's public `SagaType` implementation, E0446).
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis type #context_alias = #alias_target;

        #(#cfgs)*
        const _: () = {
            #helpers

            #implementation #step_trait::StepDef for #ident #items
        };
    }
}

/// The name of the alias of a step's context type: `__saga_context_of_<step>_<hash of step>`.
/// The hash keeps the aliases of two steps far apart, so that when a listed item is not a step,
/// rustc does not suggest the alias of another step in its place.
pub(crate) fn context_alias(step: &syn::Ident) -> syn::Ident {
    let name = step.unraw().to_string();
    // FNV-1a: stable across builds and platforms.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format_ident!(
        "__saga_context_of_{}_{:016x}",
        name,
        hash,
        span = step.span()
    )
}

/// A handler slot's signature.
#[derive(Clone, Copy)]
enum Slot {
    /// `async fn(&mut C) -> Result<(), StepError>`
    Local,
    /// `async fn(&C) -> Result<SagaRequest, StepError>`
    Request,
    /// `async fn(&mut C, SagaResponse) -> Result<(), StepError>`
    Reply,
}

impl Slot {
    fn checked(self) -> &'static str {
        match self {
            Self::Local => "LocalHandler",
            Self::Request => "RequestHandler",
            Self::Reply => "ReplyHandler",
        }
    }

    fn with_params(self) -> &'static str {
        match self {
            Self::Local => "LocalFnWith",
            Self::Request => "RequestFnWith",
            Self::Reply => "ReplyFnWith",
        }
    }
}

/// The body of `StepDef::add`: one call per handler, each to a function generic over the step
/// whose bound checks the handler (`F: LocalHandler<Context>`, ...), spanned at the handler so
/// that a wrong one is reported there, once. Being generic over the step, these functions rely
/// only on `StepDef::Context: Context`: a context type that is not a saga context is reported
/// once, at the step's `type Context`, and not again here.
struct Add<'a> {
    runtime: &'a Runtime,
    builder: TokenStream,
    start: TokenStream,
    helpers: Vec<TokenStream>,
    calls: Vec<TokenStream>,
}

impl<'a> Add<'a> {
    fn new(kind: Kind, runtime: &'a Runtime) -> Self {
        let (builder, start) = match kind {
            Kind::Local => (runtime.definition("LocalStepBuilder"), quote!(local_step)),
            Kind::Remote => (runtime.definition("RemoteStepBuilder"), quote!(remote_step)),
        };
        Self {
            runtime,
            builder,
            start,
            helpers: Vec::new(),
            calls: Vec::new(),
        }
    }

    fn handler(&mut self, method: &str, slot: Slot, handler: Option<&Handler>) {
        match handler {
            None => {}
            Some(Handler::Plain(path)) => {
                self.slot(method, slot, path.span(), quote!(#path), None);
            }
            Some(Handler::WithParams(path, params)) => {
                self.slot(method, slot, path.span(), quote!(#path), Some(params));
            }
        }
    }

    /// Adds `.method(handler)` (or `.method_with(handler, params)`), checked at `span`.
    fn slot(
        &mut self,
        method: &str,
        slot: Slot,
        span: Span,
        handler: TokenStream,
        params: Option<&syn::Expr>,
    ) {
        let private = self.runtime.private();
        let builder = &self.builder;
        let function = format_ident!("__saga_{}", method);
        let context = quote!(<T as #private::StepDef>::Context);
        let (helper, call) = match params {
            None => {
                let checked = format_ident!("{}", slot.checked());
                let method = format_ident!("{}", method);
                let helper = quote! {
                    fn #function<T: #private::StepDef, F: #private::#checked<#context>>(
                        step: #builder<#context>,
                        handler: F,
                    ) -> #builder<#context> {
                        step.#method(handler)
                    }
                };
                let call = quote_spanned!(span=> #function::<Self, _>(step, #handler));
                (helper, call)
            }
            Some(params) => {
                let shape = self.runtime.definition(slot.with_params());
                let method = format_ident!("{}_with", method);
                let helper = quote! {
                    fn #function<T, F, P>(
                        step: #builder<#context>,
                        handler: F,
                        params: P,
                    ) -> #builder<#context>
                    where
                        T: #private::StepDef,
                        F: for<'a> #shape<'a, #context, P>,
                        P: ::core::marker::Send + ::core::marker::Sync + 'static,
                    {
                        step.#method(handler, params)
                    }
                };
                let call = quote_spanned!(span=> #function::<Self, _, _>(step, #handler, #params));
                (helper, call)
            }
        };
        self.helpers.push(helper);
        self.calls.push(quote!(let step = #call;));
    }

    /// The helper functions, and the body of `add`.
    fn finish(self) -> (TokenStream, TokenStream) {
        let private = self.runtime.private();
        let Self {
            builder,
            start,
            helpers,
            calls,
            ..
        } = self;
        let context = quote!(<T as #private::StepDef>::Context);
        let helpers = quote! {
            fn __saga_start<T: #private::StepDef>(
                saga: #private::Saga<#context>,
            ) -> #builder<#context> {
                saga.#start(<T as #private::StepDef>::NAME)
            }

            #(#helpers)*

            fn __saga_end<T: #private::StepDef>(step: #builder<#context>) -> #private::Saga<#context> {
                step.end_step()
            }
        };
        let body = quote! {
            let step = __saga_start::<Self>(saga);
            #(#calls)*
            __saga_end::<Self>(step)
        };
        (helpers, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::messages;

    fn expand_str(kind: Kind, args: &str, item: &str) -> String {
        expand(
            kind,
            args.parse().expect("tokens"),
            item.parse().expect("tokens"),
        )
        .to_string()
    }

    #[test]
    fn a_valid_step_expands_without_errors() {
        let output = expand_str(
            Kind::Remote,
            "on_success = done, on_failure = (undo, 3)",
            "async fn charge(order: &Order) -> Result<SagaRequest, StepError> { todo!() }",
        );
        assert!(messages(&output).is_empty(), "{output}");
        assert!(output.contains("step . on_success (handler)"), "{output}");
        assert!(
            output.contains("step . on_failure_with (handler , params)"),
            "{output}"
        );
        assert!(output.contains("RequestFnWith"), "{output}");
    }

    #[test]
    fn every_mistake_of_a_step_is_reported() {
        let output = expand_str(
            Kind::Local,
            "on_success = done, retries = 3, on_failure = undo, on_failure = undo",
            "fn validate<C>(order: &C, extra: u8) -> Result<(), StepError> { Ok(()) }",
        );
        let messages = messages(&output);
        assert_eq!(messages.len(), 7, "{messages:#?}");
        assert!(messages[0].starts_with("`on_success` is not an argument of `#[local_step]`"));
        assert!(messages[1].starts_with("unknown argument `retries`"));
        assert!(messages[1].ends_with("`name`, `on_failure`, `params`, `crate`"));
        assert_eq!(messages[2], "`on_failure` is given twice");
        assert!(messages[3].starts_with("a saga step must be an `async fn`"));
        assert!(messages[4].starts_with("a local step changes its context"));
        assert!(messages[5].starts_with("a local step takes 1 parameter"));
        // The generic parameters make the context unknown: reported once, as the context type.
        assert!(messages[6].starts_with("a saga step cannot be generic"));
        // The step type is still generated, so a saga that lists it does not cascade.
        assert!(output.contains("impl :: saga_runtime :: __private :: StepDef for validate"));
    }

    #[test]
    fn a_function_name_that_cannot_be_persisted_needs_a_name() {
        let item = "async fn étape(order: &mut Order) -> Result<(), StepError> { Ok(()) }";
        let output = expand_str(Kind::Local, "", item);
        let messages = messages(&output);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].starts_with(
            "`étape` is not a valid persisted name (a step is persisted under its function's name)"
        ));
        let output = expand_str(Kind::Local, r#"name = "step""#, item);
        assert!(crate::errors::messages(&output).is_empty(), "{output}");
    }

    #[test]
    fn a_method_is_left_as_it_is() {
        let output = expand_str(
            Kind::Local,
            "",
            "async fn validate(&self, order: &mut Order) -> Result<(), StepError> { Ok(()) }",
        );
        assert_eq!(
            messages(&output),
            ["a saga step is a free function: it cannot take `self`"]
        );
        assert!(!output.contains("struct"), "{output}");
    }
}
