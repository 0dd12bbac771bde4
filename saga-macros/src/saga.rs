//! `#[saga]`: parse `name`, `steps = [...]` (with conditional steps, whose conditions may take
//! fixed parameters: `if_then((condition, PARAMS), SubSaga)`) and `context`, check the list, and
//! expand into a `SagaType` implementation, its `inventory` registration and the compile-time
//! checks of every listed step.
//!
//! Each listed step is named once in the expansion, in value position, by a constant that checks it
//! (`StepDef`, same context as the saga) and holds its name and the function that adds it; the
//! definition and the check of unique names use that constant. A listed item that is not a step
//! is therefore reported once, with `StepDef`'s message; a step on another context once, with the
//! message of a check trait declared in the expansion. The expansion is emitted even when the
//! arguments have mistakes, from the entries that are right, so every mistake shows in one build.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Expr, Fields, Item, LitStr, Path, Type};

use crate::attr::{self, Args, Handler};
use crate::errors::Errors;
use crate::paths::{self, Runtime};
use crate::step;

/// One entry of `steps = [...]`.
enum Entry {
    /// A step function annotated with `#[local_step]` or `#[remote_step]`.
    Step(Path),
    /// `name = conditional(if_then(condition, Saga), ..., else_then(Saga))`.
    Conditional {
        name: LitStr,
        alternatives: Vec<Alternative>,
        otherwise: Option<Path>,
    },
}

/// One `if_then(condition, Saga)` or `if_then((condition, PARAMS), Saga)`.
struct Alternative {
    /// `None` when the condition was malformed (and reported): the sub-saga is still checked.
    condition: Option<Handler>,
    saga: Path,
}

/// How `if_then` is written, for the messages about it.
const IF_THEN_SHAPE: &str = "`if_then` takes a condition function and a `#[saga]` type: `if_then(is_vip, VipBooking)`, or `if_then((above, 100), BigOrder)` for a condition with fixed parameters";

#[derive(Default)]
struct SagaArgs {
    name: Option<LitStr>,
    steps: Vec<Entry>,
    /// Why there are no steps (`steps` missing, not a list or empty), kept to stand for the
    /// context type when nothing else gives it.
    steps_error: Option<syn::Error>,
    context: Option<Type>,
    krate: Option<Path>,
}

const VALID: &[&str] = &["name", "steps", "context", "crate"];

fn parse_args(args: TokenStream, errors: &mut Errors) -> (SagaArgs, bool) {
    let args = match syn::parse2::<Args>(args) {
        Ok(args) => args,
        Err(error) => {
            errors.add(error);
            return (SagaArgs::default(), false);
        }
    };
    let mut out = SagaArgs::default();
    let mut has_steps = false;
    for arg in attr::accept(args, "saga", VALID, &[], errors) {
        match arg.key.to_string().as_str() {
            "name" => out.name = attr::persisted_name(&arg.value, errors),
            "steps" => {
                has_steps = true;
                match parse_steps(&arg.value, errors) {
                    Ok(steps) => out.steps = steps,
                    Err(error) => out.steps_error = Some(error),
                }
            }
            "context" => match syn::parse2::<Type>(arg.value.to_token_stream()) {
                Ok(context) => out.context = Some(context),
                Err(_) => {
                    errors.push_spanned(&arg.value, "`context` names the saga's context type")
                }
            },
            "crate" => out.krate = attr::crate_path(&arg.value, errors),
            _ => {}
        }
    }
    (out, has_steps)
}

fn parse_steps(value: &Expr, errors: &mut Errors) -> Result<Vec<Entry>, syn::Error> {
    let Expr::Array(array) = value else {
        return Err(syn::Error::new_spanned(
            value,
            "`steps` is a list: `steps = [first_step, second_step]`",
        ));
    };
    if array.elems.is_empty() {
        return Err(syn::Error::new_spanned(
            array,
            "a saga needs at least one step: `steps = []` is empty",
        ));
    }
    let mut entries = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for element in &array.elems {
        let entry = match element {
            Expr::Path(path) if path.qself.is_none() => Some(Entry::Step(path.path.clone())),
            Expr::Assign(assign) => parse_conditional(&assign.left, &assign.right, errors),
            other => {
                errors.push_spanned(
                    other,
                    "expected a step function, or `name = conditional(if_then(condition, SubSaga), else_then(OtherSaga))`",
                );
                None
            }
        };
        let Some(entry) = entry else { continue };
        let (key, span) = match &entry {
            Entry::Step(path) => (display(path), path.span()),
            Entry::Conditional { name, .. } => (name.value(), name.span()),
        };
        if seen.contains(&key) {
            errors.push(
                span,
                format!(
                    "`{key}` is listed twice: each step of a saga needs its own persisted name"
                ),
            );
            continue;
        }
        seen.push(key);
        entries.push(entry);
    }
    Ok(entries)
}

/// A path as written, without the spaces of its token stream.
fn display(path: &Path) -> String {
    quote!(#path).to_string().replace(' ', "")
}

fn parse_conditional(left: &Expr, right: &Expr, errors: &mut Errors) -> Option<Entry> {
    // A wrong name is reported, and the alternatives are still checked.
    let name = match left {
        Expr::Path(path) if path.path.get_ident().is_some() => {
            let ident = path.path.get_ident().expect("checked");
            let name = ident.unraw().to_string();
            if attr::is_valid_name(&name) {
                Some(LitStr::new(&name, ident.span()))
            } else {
                errors.push(ident.span(), attr::invalid_name(&name));
                None
            }
        }
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(literal),
            ..
        }) => {
            if attr::is_valid_name(&literal.value()) {
                Some(literal.clone())
            } else {
                errors.push(literal.span(), attr::invalid_name(&literal.value()));
                None
            }
        }
        other => {
            errors.push_spanned(
                other,
                "a conditional step is named by an identifier: `route = conditional(...)`",
            );
            None
        }
    };
    let Expr::Call(call) = right else {
        errors.push_spanned(
            right,
            "expected `conditional(if_then(condition, SubSaga), else_then(OtherSaga))`",
        );
        return None;
    };
    if !matches!(&*call.func, Expr::Path(path) if path.path.is_ident("conditional")) {
        errors.push_spanned(&call.func, "expected `conditional(...)`");
        return None;
    }
    let mut alternatives = Vec::new();
    let mut otherwise: Option<Path> = None;
    for argument in &call.args {
        let Expr::Call(alternative) = argument else {
            errors.push_spanned(
                argument,
                "expected `if_then(condition, SubSaga)` or `else_then(SubSaga)`",
            );
            continue;
        };
        let is_if_then = match &*alternative.func {
            Expr::Path(path) if path.path.is_ident("if_then") => true,
            Expr::Path(path) if path.path.is_ident("else_then") => false,
            other => {
                errors.push_spanned(
                    other,
                    "expected `if_then(condition, SubSaga)` or `else_then(SubSaga)`",
                );
                continue;
            }
        };
        let arguments: Vec<&Expr> = alternative.args.iter().collect();
        if is_if_then {
            let [condition, saga] = arguments.as_slice() else {
                errors.push_spanned(alternative, IF_THEN_SHAPE);
                continue;
            };
            // Each argument is checked on its own: a malformed condition still has its sub-saga
            // checked by the expansion.
            let condition = parse_condition(condition, errors);
            match sub_saga(saga) {
                Some(saga) => alternatives.push(Alternative { condition, saga }),
                None => errors.push_spanned(
                    saga,
                    "the sub-saga of `if_then` is a `#[saga]` type: `if_then(is_vip, VipBooking)`",
                ),
            }
            continue;
        }
        let saga = match arguments.as_slice() {
            [saga] => sub_saga(saga),
            _ => None,
        };
        match saga {
            Some(_) if otherwise.is_some() => errors.push_spanned(
                &alternative.func,
                "a conditional step has at most one `else_then`",
            ),
            Some(saga) => otherwise = Some(saga),
            None => errors.push_spanned(
                alternative,
                "`else_then` takes a `#[saga]` type: `else_then(RegularBooking)`",
            ),
        }
    }
    if call.args.is_empty() {
        errors.push_spanned(
            &call.func,
            "a conditional step needs at least one alternative: `if_then(condition, SubSaga)` or `else_then(SubSaga)`",
        );
        return None;
    }
    if alternatives.is_empty() && otherwise.is_none() {
        // Every alternative was reported.
        return None;
    }
    Some(Entry::Conditional {
        name: name?,
        alternatives,
        otherwise,
    })
}

/// A sub-saga argument: a path (that it names a `#[saga]` type is checked by the expansion).
fn sub_saga(argument: &Expr) -> Option<Path> {
    match argument {
        Expr::Path(path) if path.qself.is_none() => Some(path.path.clone()),
        _ => None,
    }
}

/// The condition of `if_then`: `condition` or `(condition, PARAMS)`. `None` when it is malformed
/// (reported where it is wrong): the sub-saga is then still checked.
fn parse_condition(value: &Expr, errors: &mut Errors) -> Option<Handler> {
    match value {
        Expr::Path(path) if path.qself.is_none() => Some(Handler::Plain(path.path.clone())),
        Expr::Tuple(tuple) if tuple.elems.len() == 2 => match &tuple.elems[0] {
            Expr::Path(path) if path.qself.is_none() => Some(Handler::WithParams(
                path.path.clone(),
                Box::new(tuple.elems[1].clone()),
            )),
            other => {
                errors.push_spanned(
                    other,
                    "a condition with parameters names the condition function by its path: `if_then((above, 100), BigOrder)`",
                );
                None
            }
        },
        Expr::Tuple(tuple) => {
            errors.push_spanned(
                tuple,
                "a condition with parameters is a pair `(condition, parameters)`: `if_then((above, 100), BigOrder)`",
            );
            None
        }
        other => {
            errors.push_spanned(
                other,
                "the condition of `if_then` is a function, or `(function, parameters)`: `if_then(is_vip, VipBooking)` or `if_then((above, 100), BigOrder)`",
            );
            None
        }
    }
}

/// `CreateOrder` -> `create-order`.
fn kebab_case(ident: &str) -> String {
    let mut out = String::new();
    let mut previous_lower = false;
    for ch in ident.chars() {
        if ch.is_uppercase() {
            if previous_lower {
                out.push('-');
            }
            out.extend(ch.to_lowercase());
            previous_lower = false;
        } else {
            out.push(if ch == '_' { '-' } else { ch });
            previous_lower = ch.is_lowercase() || ch.is_ascii_digit();
        }
    }
    out
}

/// Expands `#[saga]`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let (mut args, has_steps) = parse_args(args, &mut errors);
    let item_struct = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(item_struct)) => item_struct,
        Ok(other) => {
            let span = match &other {
                Item::Enum(item) => item.enum_token.span,
                Item::Fn(item) => item.sig.fn_token.span,
                Item::Union(item) => item.union_token.span,
                Item::Type(item) => item.type_token.span,
                Item::Trait(item) => item.trait_token.span,
                _ => other.span(),
            };
            errors.push(
                span,
                "`#[saga]` goes on a unit struct, e.g. `pub struct CreateOrder;`",
            );
            let compile_errors = errors.to_compile_errors();
            return quote!(#compile_errors #item);
        }
        Err(error) => {
            errors.add(error);
            let compile_errors = errors.to_compile_errors();
            return quote!(#compile_errors #item);
        }
    };
    if !matches!(item_struct.fields, Fields::Unit) {
        errors.push_spanned(
            &item_struct.fields,
            "`#[saga]` goes on a unit struct: the saga has no fields, its state is the context",
        );
    }
    if !has_steps && args.steps_error.is_none() {
        args.steps_error = Some(syn::Error::new(
            Span::call_site(),
            "`#[saga]` needs its steps: `#[saga(steps = [first_step, second_step])]`",
        ));
    }
    if !item_struct.generics.params.is_empty() || item_struct.generics.where_clause.is_some() {
        errors.push_spanned(&item_struct.generics, "a saga type cannot be generic");
        if let Some(error) = args.steps_error.take() {
            errors.add(error);
        }
        let compile_errors = errors.to_compile_errors();
        return quote!(#compile_errors #item_struct);
    }
    let default_name = kebab_case(&item_struct.ident.unraw().to_string());
    if args.name.is_none() && !attr::is_valid_name(&default_name) {
        errors.push(
            item_struct.ident.span(),
            format!(
                "`{default_name}` is not a valid persisted name (a saga is persisted under its type's name in kebab case): give it one with `name = \"...\"`"
            ),
        );
    }
    let generated = generate(&mut args, &item_struct.ident, &item_struct.vis, &mut errors);
    let compile_errors = errors.to_compile_errors();
    quote! {
        #compile_errors
        #item_struct
        #generated
    }
}

/// The `SagaType` implementation, its registration and its checks.
fn generate(
    args: &mut SagaArgs,
    ident: &syn::Ident,
    vis: &syn::Visibility,
    errors: &mut Errors,
) -> TokenStream {
    let runtime = Runtime::new(args.krate.as_ref());
    let private = runtime.private();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&kebab_case(&ident.unraw().to_string()), ident.span()));

    let first_step = args.steps.iter().find_map(|entry| match entry {
        Entry::Step(path) => Some(path),
        Entry::Conditional { .. } => None,
    });
    // Code that depends on a context taken from the first step is spanned at that step: when it
    // is not a step, what cannot be derived from it is reported there, once.
    let context_span = match (&args.context, first_step) {
        (None, Some(step)) => step.span(),
        _ => Span::call_site(),
    };
    // The context type, or the error standing for it (reported once, as the type).
    let context = match (&args.context, first_step) {
        (Some(context), _) => {
            if let Some(error) = args.steps_error.take() {
                errors.add(error);
            }
            quote!(#context)
        }
        // A public saga names the context through the step's alias of it: the step may be
        // private, and a private type cannot appear in a public `SagaType` implementation
        // (E0446). When the item is not a step, rustc reports the missing alias at the item.
        (None, Some(step)) if !matches!(vis, syn::Visibility::Inherited) => {
            let mut alias = step.clone();
            if let Some(last) = alias.segments.last_mut() {
                last.ident = step::context_alias(&last.ident);
            }
            paths::respan(quote!(#alias), Span::call_site().located_at(step.span()))
        }
        (None, Some(step)) => {
            quote_spanned!(step.span()=> <#step as #private::StepDef>::Context)
        }
        (None, None) => paths::error_type(&args.steps_error.take().unwrap_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "a saga whose steps are all conditional names its context type: `context = MyState`",
            )
        })),
    };

    // Everything but `type Context` itself names the context through the saga type, so that the
    // type given (or the error standing for it) is written once.
    let private_at_context = runtime.private_at(context_span);
    let saga_context = quote_spanned!(context_span=>
        <#ident as #private_at_context::SagaType>::Context
    );

    let mut anchors = Vec::new();
    // The definition, built in order by calls to functions generic over the saga type.
    let mut statements = vec![quote_spanned!(context_span=> let saga = __saga_new::<Self>(#name);)];
    // (persisted name, as written, span) of every entry, for the check of unique names.
    let mut names: Vec<(TokenStream, String, Span)> = Vec::new();
    let mut uses = Uses::default();
    for (index, entry) in args.steps.iter().enumerate() {
        match entry {
            Entry::Step(path) => {
                let span = path.span();
                let anchor = format_ident!("__SAGA_STEP_{}", index, span = context_span);
                // The saga's context comes first, so that it is known before the step's is
                // compared with it.
                let marker =
                    quote_spanned!(context_span=> ::core::marker::PhantomData::<#saga_context>);
                let check = quote_spanned!(span=> __saga_step(#marker, &#path));
                // The value is converted to the constant's type at `context_span`.
                let value = quote_spanned!(context_span=> {
                    let step = #check;
                    step
                });
                anchors.push(quote_spanned! {context_span=>
                    const #anchor: __SagaStep<#saga_context> = #value;
                });
                statements.push(quote_spanned!(context_span=> let saga = (#anchor.add)(saga);));
                names.push((
                    quote_spanned!(context_span=> #anchor.name),
                    display(path),
                    span,
                ));
            }
            Entry::Conditional {
                name,
                alternatives,
                otherwise,
            } => {
                uses.conditional = true;
                statements.push(quote_spanned!(context_span=>
                    let step = __saga_conditional::<Self>(saga, #name);
                ));
                for Alternative { condition, saga } in alternatives {
                    let sub = quote_spanned!(saga.span()=> __saga_sub::<#saga_context, #saga>());
                    // Spanned at the condition, which the call checks.
                    statements.push(match condition {
                        Some(Handler::Plain(condition)) => {
                            uses.if_then = true;
                            quote_spanned!(condition.span()=>
                                let step = __saga_if_then::<Self, _>(step, #condition, #sub);
                            )
                        }
                        Some(Handler::WithParams(condition, params)) => {
                            uses.if_then_with = true;
                            quote_spanned!(condition.span()=>
                                let step = __saga_if_then_with::<Self, _, _>(
                                    step, #condition, #params, #sub,
                                );
                            )
                        }
                        // The condition was reported; the sub-saga is still checked.
                        None => quote_spanned!(saga.span()=> let _ = #sub;),
                    });
                }
                if let Some(saga) = otherwise {
                    uses.else_then = true;
                    let sub = quote_spanned!(saga.span()=> __saga_sub::<#saga_context, #saga>());
                    statements.push(quote_spanned!(context_span=>
                        let step = __saga_else_then::<Self>(step, #sub);
                    ));
                }
                statements.push(quote_spanned!(context_span=>
                    let saga = __saga_end_conditional::<Self>(step);
                ));
                names.push((quote!(#name), name.value(), name.span()));
            }
        }
    }
    statements.push(quote_spanned!(context_span=> __saga_commit::<Self>(saga)));

    let mut name_checks = Vec::new();
    for (index, (second, second_display, span)) in names.iter().enumerate() {
        for (first, first_display, _) in &names[..index] {
            let message = format!(
                "`{first_display}` and `{second_display}` of saga `{}` have the same persisted name; rename one with `name = \"...\"`",
                name.value()
            )
            .replace('{', "{{")
            .replace('}', "}}");
            name_checks.push(quote_spanned! {*span=>
                ::core::assert!(!#private::same_name(#first, #second), #message);
            });
        }
    }

    let helpers = helpers(&runtime, &uses);
    // The implementation is placed at the saga's name, where rustc shows it when it lists the
    // sagas it knows; what depends on the context, at `context_span`.
    let implementation = quote_spanned!(ident.span()=> #[automatically_derived] impl);
    let saga_trait = runtime.private_at(ident.span());
    let items = quote_spanned! {context_span=>
        type Context = #context;

        fn definition() -> #private_at_context::Arc<#private_at_context::SagaDefinition<Self::Context>> {
            static DEFINITION: #private_at_context::OnceLock<
                #private_at_context::Arc<#private_at_context::SagaDefinition<#saga_context>>,
            > = #private_at_context::OnceLock::new();
            #private_at_context::Arc::clone(DEFINITION.get_or_init(|| {
                #(#statements)*
            }))
        }
    };
    let items = paths::braced(items, ident.span());
    let saga_type = quote!(#implementation #saga_trait::SagaType for #ident #items);
    quote! {
        const _: () = {
            #helpers

            #(#anchors)*

            #saga_type

            #private::inventory::submit! {
                #private::SagaRegistration::new::<#ident>(
                    ::core::concat!(::core::file!(), ":", ::core::line!())
                )
            }

            const _: () = {
                #(#name_checks)*
            };
        };
    }
}

/// Which generic functions the definition calls.
#[derive(Default)]
struct Uses {
    conditional: bool,
    if_then: bool,
    if_then_with: bool,
    else_then: bool,
}

/// What the expansion declares for itself: a trait whose message explains a step or a sub-saga on
/// another context; the functions that check a listed step or sub-saga; and the functions, generic
/// over the saga type, that build the definition (they rely only on `SagaType::Context: Context`,
/// so a context type that is not a saga context is reported once, at `type Context`).
fn helpers(runtime: &Runtime, uses: &Uses) -> TokenStream {
    let private = runtime.private();
    let context = quote!(<S as #private::SagaType>::Context);
    let conditional = runtime.definition("ConditionalStepBuilder");
    let mut optional = Vec::new();
    if uses.conditional {
        optional.push(quote! {
            fn __saga_sub<C, T>() -> #private::Arc<#private::SagaDefinition<C>>
            where
                T: #private::SagaType,
                <T as #private::SagaType>::Context: __SagaSameContext<C>,
            {
                <<T as #private::SagaType>::Context as __SagaSameContext<C>>::sub_saga(
                    <T as #private::SagaType>::definition(),
                )
            }

            fn __saga_conditional<S: #private::SagaType>(
                saga: #private::Saga<#context>,
                name: &'static str,
            ) -> #conditional<#context> {
                saga.conditional_step(name)
            }

            fn __saga_end_conditional<S: #private::SagaType>(
                step: #conditional<#context>,
            ) -> #private::Saga<#context> {
                step.end_step()
            }
        });
    }
    if uses.if_then {
        optional.push(quote! {
            fn __saga_if_then<S: #private::SagaType, F: #private::ConditionHandler<#context>>(
                step: #conditional<#context>,
                condition: F,
                saga: #private::Arc<#private::SagaDefinition<#context>>,
            ) -> #conditional<#context> {
                step.if_then(condition, saga)
            }
        });
    }
    if uses.if_then_with {
        let shape = runtime.definition("ConditionFnWith");
        optional.push(quote! {
            fn __saga_if_then_with<S, F, P>(
                step: #conditional<#context>,
                condition: F,
                params: P,
                saga: #private::Arc<#private::SagaDefinition<#context>>,
            ) -> #conditional<#context>
            where
                S: #private::SagaType,
                F: for<'a> #shape<'a, #context, P>,
                P: ::core::marker::Send + ::core::marker::Sync + 'static,
            {
                step.if_then_with(condition, params, saga)
            }
        });
    }
    if uses.else_then {
        optional.push(quote! {
            fn __saga_else_then<S: #private::SagaType>(
                step: #conditional<#context>,
                saga: #private::Arc<#private::SagaDefinition<#context>>,
            ) -> #conditional<#context> {
                step.else_then(saga)
            }
        });
    }
    quote! {
        #[diagnostic::on_unimplemented(
            message = "this works on context `{Self}`, but the saga works on `{C}`",
            label = "works on `{Self}`, not on the saga's context `{C}`",
            note = "the steps and sub-sagas of a saga all work on the saga's context type"
        )]
        #[allow(dead_code)]
        trait __SagaSameContext<C>: ::core::marker::Sized {
            fn into_step(saga: #private::Saga<C>) -> #private::Saga<Self>;
            fn from_step(saga: #private::Saga<Self>) -> #private::Saga<C>;
            fn sub_saga(
                definition: #private::Arc<#private::SagaDefinition<Self>>,
            ) -> #private::Arc<#private::SagaDefinition<C>>;
        }

        impl<C> __SagaSameContext<C> for C {
            fn into_step(saga: #private::Saga<C>) -> #private::Saga<C> {
                saga
            }
            fn from_step(saga: #private::Saga<C>) -> #private::Saga<C> {
                saga
            }
            fn sub_saga(
                definition: #private::Arc<#private::SagaDefinition<C>>,
            ) -> #private::Arc<#private::SagaDefinition<C>> {
                definition
            }
        }

        /// A listed step: its persisted name and the function that adds it.
        #[allow(dead_code)]
        struct __SagaStep<C> {
            name: &'static str,
            add: fn(#private::Saga<C>) -> #private::Saga<C>,
        }

        const fn __saga_step<C, T>(_: ::core::marker::PhantomData<C>, _: &T) -> __SagaStep<C>
        where
            T: #private::StepDef,
            <T as #private::StepDef>::Context: __SagaSameContext<C>,
        {
            __SagaStep {
                name: <T as #private::StepDef>::NAME,
                add: __saga_add::<C, T>,
            }
        }

        fn __saga_add<C, T>(saga: #private::Saga<C>) -> #private::Saga<C>
        where
            T: #private::StepDef,
            <T as #private::StepDef>::Context: __SagaSameContext<C>,
        {
            <<T as #private::StepDef>::Context as __SagaSameContext<C>>::from_step(
                <T as #private::StepDef>::add(
                    <<T as #private::StepDef>::Context as __SagaSameContext<C>>::into_step(saga),
                ),
            )
        }

        fn __saga_new<S: #private::SagaType>(name: &'static str) -> #private::Saga<#context> {
            #private::Saga::new(name)
        }

        fn __saga_commit<S: #private::SagaType>(
            saga: #private::Saga<#context>,
        ) -> #private::Arc<#private::SagaDefinition<#context>> {
            match saga.commit() {
                ::core::result::Result::Ok(definition) => #private::Arc::new(definition),
                ::core::result::Result::Err(error) => ::core::panic!("{}", error),
            }
        }

        #(#optional)*
    }
}

#[cfg(test)]
mod tests {
    use super::{expand, kebab_case};
    use crate::errors::messages;

    fn expand_str(args: &str, item: &str) -> String {
        expand(args.parse().expect("tokens"), item.parse().expect("tokens")).to_string()
    }

    #[test]
    fn saga_names_are_kebab_case() {
        assert_eq!(kebab_case("CreateOrder"), "create-order");
        assert_eq!(kebab_case("Order2Ship"), "order2-ship");
        assert_eq!(kebab_case("refund"), "refund");
    }

    #[test]
    fn every_mistake_of_the_arguments_is_reported() {
        let output = expand_str(
            r#"name = "has space", timeout = 5, steps = [a, b, a, route = conditional(),
               "bad name" = conditional(else_then(X), else_then(Y)), 3]"#,
            "struct CreateOrder;",
        );
        assert_eq!(
            messages(&output),
            [
                "unknown argument `timeout` of `#[saga]`; valid arguments are `name`, `steps`, `context`, `crate`",
                "`has space` is not a valid persisted name: use 1 to 128 characters of `A-Z a-z 0-9 _ - . :`",
                "`a` is listed twice: each step of a saga needs its own persisted name",
                "a conditional step needs at least one alternative: `if_then(condition, SubSaga)` or `else_then(SubSaga)`",
                "`bad name` is not a valid persisted name: use 1 to 128 characters of `A-Z a-z 0-9 _ - . :`",
                "a conditional step has at most one `else_then`",
                "expected a step function, or `name = conditional(if_then(condition, SubSaga), else_then(OtherSaga))`",
            ]
        );
        // The entries that are right are still checked: `a` and `b` once each.
        assert!(
            output.contains("__saga_step (") && output.contains("& a"),
            "{output}"
        );
        assert_eq!(output.matches("& b").count(), 1, "{output}");
    }

    #[test]
    fn a_condition_takes_fixed_parameters() {
        let output = expand_str(
            "steps = [a, route = conditional(if_then((above, 100), Big), if_then(is_small, Small))]",
            "struct CreateOrder;",
        );
        assert!(messages(&output).is_empty(), "{output}");
        assert!(
            output.contains(
                "__saga_if_then_with :: < Self , _ , _ > (step , above , 100 , __saga_sub ::"
            ),
            "{output}"
        );
        assert!(
            output.contains("step . if_then_with (condition , params , saga)"),
            "{output}"
        );
        assert!(
            output.contains("__saga_if_then :: < Self , _ > (step , is_small ,"),
            "{output}"
        );
    }

    #[test]
    fn a_malformed_condition_is_reported_and_its_sub_saga_still_checked() {
        let output = expand_str(
            "steps = [a, route = conditional(if_then((above, 100, 3), Big), if_then((3, 4), Other), if_then(3, Third), if_then(is_big, 5))]",
            "struct CreateOrder;",
        );
        assert_eq!(
            messages(&output),
            [
                "a condition with parameters is a pair `(condition, parameters)`: `if_then((above, 100), BigOrder)`",
                "a condition with parameters names the condition function by its path: `if_then((above, 100), BigOrder)`",
                "the condition of `if_then` is a function, or `(function, parameters)`: `if_then(is_vip, VipBooking)` or `if_then((above, 100), BigOrder)`",
                "the sub-saga of `if_then` is a `#[saga]` type: `if_then(is_vip, VipBooking)`",
            ]
        );
        for saga in ["Big", "Other", "Third"] {
            assert!(
                output.contains(&format!("let _ = __saga_sub :: < < CreateOrder as :: saga_runtime :: __private :: SagaType > :: Context , {saga} > ()")),
                "{saga}: {output}"
            );
        }
        assert!(!output.contains("__saga_if_then"), "{output}");
    }

    #[test]
    fn missing_steps_stand_for_the_context_type() {
        let output = expand_str("steps = []", "struct CreateOrder;");
        assert_eq!(
            messages(&output),
            ["a saga needs at least one step: `steps = []` is empty"]
        );
        assert!(output.contains("type Context = :: core :: compile_error !"));
        let output = expand_str("context = Order", "struct CreateOrder;");
        assert_eq!(
            messages(&output),
            ["`#[saga]` needs its steps: `#[saga(steps = [first_step, second_step])]`"]
        );
    }

    #[test]
    fn a_public_saga_names_its_context_through_the_step_alias() {
        let private = expand_str("steps = [steps::validate]", "struct CreateOrder;");
        assert!(
            private.contains("type Context = < steps :: validate as :: saga_runtime :: __private :: StepDef > :: Context"),
            "{private}"
        );
        let public = expand_str("steps = [steps::validate]", "pub struct CreateOrder;");
        assert!(
            public.contains("type Context = steps :: __saga_context_of_validate_"),
            "{public}"
        );
        let explicit = expand_str(
            "steps = [steps::validate], context = Vec<Order>",
            "pub struct CreateOrder;",
        );
        assert!(
            explicit.contains("type Context = Vec < Order >"),
            "{explicit}"
        );
    }

    #[test]
    fn the_saga_goes_on_a_unit_struct() {
        let output = expand_str("steps = [a]", "enum CreateOrder { A }");
        assert_eq!(
            messages(&output),
            ["`#[saga]` goes on a unit struct, e.g. `pub struct CreateOrder;`"]
        );
        assert!(output.contains("enum CreateOrder"), "{output}");
    }
}
