//! `#[saga]`: parse `name`, `steps = [...]` (with conditional steps) and `context`, check the list,
//! and expand into a `SagaType` implementation, its `inventory` registration and the compile-time
//! checks of every listed step.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, Fields, Item, LitStr, Path, Type};

use crate::attr::{self, Args};
use crate::errors::Errors;
use crate::paths::Runtime;

/// One entry of `steps = [...]`.
enum Entry {
    /// A step function annotated with `#[local_step]` or `#[remote_step]`.
    Step(Path),
    /// `name = conditional(if_then(condition, Saga), ..., else_then(Saga))`.
    Conditional {
        name: LitStr,
        alternatives: Vec<(Path, Path)>,
        otherwise: Option<Path>,
    },
}

#[derive(Default)]
struct SagaArgs {
    name: Option<LitStr>,
    steps: Vec<Entry>,
    steps_span: Option<Span>,
    context: Option<Type>,
    krate: Option<Path>,
}

const VALID: &[&str] = &["name", "steps", "context", "crate"];

fn parse_args(args: TokenStream, errors: &mut Errors) -> SagaArgs {
    let args = match syn::parse2::<Args>(args) {
        Ok(args) => args,
        Err(error) => {
            errors.add(error);
            return SagaArgs::default();
        }
    };
    let mut out = SagaArgs::default();
    for arg in attr::accept(args, "saga", VALID, &[], errors) {
        match arg.key.to_string().as_str() {
            "name" => out.name = attr::persisted_name(&arg.value, errors),
            "steps" => {
                out.steps_span = Some(arg.value.span());
                out.steps = parse_steps(&arg.value, errors);
            }
            "context" => match syn::parse2::<Type>(expr_tokens(&arg.value)) {
                Ok(context) => out.context = Some(context),
                Err(_) => {
                    errors.push_spanned(&arg.value, "`context` names the saga's context type")
                }
            },
            "crate" => out.krate = attr::crate_path(&arg.value, errors),
            _ => {}
        }
    }
    out
}

fn expr_tokens(expr: &Expr) -> TokenStream {
    quote!(#expr)
}

fn parse_steps(value: &Expr, errors: &mut Errors) -> Vec<Entry> {
    let Expr::Array(array) = value else {
        errors.push_spanned(
            value,
            "`steps` is a list: `steps = [first_step, second_step]`",
        );
        return Vec::new();
    };
    if array.elems.is_empty() {
        errors.push_spanned(
            array,
            "a saga needs at least one step: `steps = []` is empty",
        );
        return Vec::new();
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
            Entry::Step(path) => (quote!(#path).to_string(), path.span()),
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
    entries
}

fn parse_conditional(left: &Expr, right: &Expr, errors: &mut Errors) -> Option<Entry> {
    let name = match left {
        Expr::Path(path) if path.path.get_ident().is_some() => {
            let ident = path.path.get_ident().expect("checked");
            let name = ident.to_string();
            if !attr::is_valid_name(&name) {
                errors.push(
                    ident.span(),
                    format!("`{name}` is not a valid persisted name"),
                );
                return None;
            }
            LitStr::new(&name, ident.span())
        }
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(literal),
            ..
        }) => {
            if !attr::is_valid_name(&literal.value()) {
                errors.push(
                    literal.span(),
                    format!("`{}` is not a valid persisted name", literal.value()),
                );
                return None;
            }
            literal.clone()
        }
        other => {
            errors.push_spanned(
                other,
                "a conditional step is named by an identifier: `route = conditional(...)`",
            );
            return None;
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
        let kind = match &*alternative.func {
            Expr::Path(path) if path.path.is_ident("if_then") => "if_then",
            Expr::Path(path) if path.path.is_ident("else_then") => "else_then",
            other => {
                errors.push_spanned(
                    other,
                    "expected `if_then(condition, SubSaga)` or `else_then(SubSaga)`",
                );
                continue;
            }
        };
        let paths: Vec<Option<Path>> = alternative
            .args
            .iter()
            .map(|argument| match argument {
                Expr::Path(path) if path.qself.is_none() => Some(path.path.clone()),
                _ => None,
            })
            .collect();
        match (kind, paths.as_slice()) {
            ("if_then", [Some(condition), Some(saga)]) => alternatives.push((condition.clone(), saga.clone())),
            ("if_then", _) => errors.push_spanned(
                alternative,
                "`if_then` takes a condition function and a `#[saga]` type: `if_then(is_vip, VipBooking)`",
            ),
            ("else_then", [Some(saga)]) => {
                if otherwise.is_some() {
                    errors.push_spanned(
                        &alternative.func,
                        "a conditional step has at most one `else_then`",
                    );
                } else {
                    otherwise = Some(saga.clone());
                }
            }
            _ => errors.push_spanned(
                alternative,
                "`else_then` takes a `#[saga]` type: `else_then(RegularBooking)`",
            ),
        }
    }
    if alternatives.is_empty() && otherwise.is_none() {
        errors.push_spanned(
            &call.func,
            "a conditional step needs at least one alternative: `if_then(condition, SubSaga)` or `else_then(SubSaga)`",
        );
        return None;
    }
    Some(Entry::Conditional {
        name,
        alternatives,
        otherwise,
    })
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
    let args = parse_args(args, &mut errors);
    let item_struct = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(item_struct)) => item_struct,
        Ok(other) => {
            let span = match &other {
                Item::Enum(item) => item.enum_token.span,
                Item::Fn(item) => item.sig.fn_token.span,
                Item::Union(item) => item.union_token.span,
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
    if !item_struct.generics.params.is_empty() {
        errors.push_spanned(&item_struct.generics, "a saga type cannot be generic");
    }
    if args.steps_span.is_none() {
        errors.push(
            attr::call_site(),
            "`#[saga]` needs its steps: `#[saga(steps = [first_step, second_step])]`",
        );
    }
    let ident = &item_struct.ident;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&kebab_case(&ident.to_string()), ident.span()));
    let runtime = Runtime::new(args.krate.as_ref());
    let private = runtime.private();

    let first_step = args.steps.iter().find_map(|entry| match entry {
        Entry::Step(path) => Some(path),
        Entry::Conditional { .. } => None,
    });
    let context = match (&args.context, first_step) {
        (Some(context), _) => quote!(#context),
        (None, Some(step)) => quote!(<#step as #private::StepDef>::Context),
        (None, None) => {
            if !args.steps.is_empty() {
                errors.push(
                    attr::call_site(),
                    "a saga whose steps are all conditional names its context type: `context = MyState`",
                );
            }
            quote!(())
        }
    };
    let compile_errors = errors.to_compile_errors();
    if !errors.is_empty() {
        return quote!(#compile_errors #item_struct);
    }

    let mut adds = Vec::new();
    let mut checks = Vec::new();
    let mut names = Vec::new();
    for entry in &args.steps {
        match entry {
            Entry::Step(path) => {
                adds.push(quote_spanned!(path.span()=> let saga = <#path as #private::StepDef>::add(saga);));
                checks.push(quote_spanned!(path.span()=> #private::step_with_context::<#context, _>(&#path);));
                names.push(quote!(<#path as #private::StepDef>::NAME));
            }
            Entry::Conditional {
                name,
                alternatives,
                otherwise,
            } => {
                let ifs = alternatives.iter().map(|(condition, saga)| {
                    let condition = quote_spanned!(condition.span()=> #private::condition::<#context, _>(#condition));
                    let saga = quote_spanned!(saga.span()=> #private::sub_saga::<#context, #saga>());
                    quote!(.if_then(#condition, #saga))
                });
                let otherwise = otherwise.iter().map(|saga| {
                    let saga =
                        quote_spanned!(saga.span()=> #private::sub_saga::<#context, #saga>());
                    quote!(.else_then(#saga))
                });
                adds.push(quote! {
                    let saga = saga.conditional_step(#name) #(#ifs)* #(#otherwise)* .end_step();
                });
                names.push(quote!(#name));
            }
        }
    }
    let mut name_checks = Vec::new();
    for (index, first) in names.iter().enumerate() {
        for second in &names[index + 1..] {
            name_checks.push(quote! {
                ::core::assert!(
                    !#private::same_name(#first, #second),
                    ::core::concat!("two steps of saga `", #name, "` have the same persisted name; rename one with `name = \"...\"`")
                );
            });
        }
    }
    quote! {
        #item_struct

        const _: () = {
            #[automatically_derived]
            impl #private::SagaType for #ident {
                type Context = #context;

                fn definition() -> #private::Arc<#private::SagaDefinition<#context>> {
                    static DEFINITION: #private::OnceLock<#private::Arc<#private::SagaDefinition<#context>>> =
                        #private::OnceLock::new();
                    #private::Arc::clone(DEFINITION.get_or_init(|| {
                        let saga = #private::Saga::<#context>::new(#name);
                        #(#adds)*
                        match saga.commit() {
                            ::core::result::Result::Ok(definition) => #private::Arc::new(definition),
                            ::core::result::Result::Err(error) => ::core::panic!("{}", error),
                        }
                    }))
                }
            }

            #private::inventory::submit! {
                #private::SagaRegistration::new::<#ident>(::core::concat!(::core::file!(), ":", ::core::line!()))
            }

            const _: () = {
                #(#checks)*
                #(#name_checks)*
            };
        };
    }
}

#[cfg(test)]
mod tests {
    use super::kebab_case;

    #[test]
    fn saga_names_are_kebab_case() {
        assert_eq!(kebab_case("CreateOrder"), "create-order");
        assert_eq!(kebab_case("Order2Ship"), "order2-ship");
        assert_eq!(kebab_case("refund"), "refund");
    }
}
