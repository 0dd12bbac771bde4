//! Attribute arguments: `key = value` lists, parsed with every mistake collected.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Path, Token};

use crate::errors::Errors;

/// One `key = value` argument.
pub(crate) struct Arg {
    pub(crate) key: Ident,
    pub(crate) value: Expr,
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = if input.peek(Token![crate]) {
            let token: Token![crate] = input.parse()?;
            Ident::new("crate", token.span)
        } else {
            input.parse()?
        };
        input.parse::<Token![=]>()?;
        // A type is not an expression (`Vec<Order>`): `context` takes one, kept verbatim.
        let value = if key == "context" {
            let context: syn::Type = input.parse()?;
            Expr::Verbatim(quote::quote!(#context))
        } else {
            input.parse()?
        };
        Ok(Self { key, value })
    }
}

/// A comma-separated list of arguments.
pub(crate) struct Args(pub(crate) Vec<Arg>);

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let args = Punctuated::<Arg, Token![,]>::parse_terminated(input)?;
        Ok(Self(args.into_iter().collect()))
    }
}

/// Checks each key against `valid`, reporting unknown keys (with the valid ones listed) and
/// repeated keys (on the second occurrence); returns the accepted arguments.
pub(crate) fn accept(
    args: Args,
    attribute: &str,
    valid: &[&str],
    misplaced: &[(&str, &str)],
    errors: &mut Errors,
) -> Vec<Arg> {
    let mut seen: Vec<String> = Vec::new();
    let mut accepted = Vec::new();
    for arg in args.0 {
        let key = arg.key.to_string();
        if let Some((_, why)) = misplaced.iter().find(|(name, _)| *name == key) {
            errors.push(
                arg.key.span(),
                format!("`{key}` is not an argument of `#[{attribute}]`: {why}"),
            );
            continue;
        }
        if !valid.contains(&key.as_str()) {
            let list = valid
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ");
            errors.push(
                arg.key.span(),
                format!("unknown argument `{key}` of `#[{attribute}]`; valid arguments are {list}"),
            );
            continue;
        }
        if seen.contains(&key) {
            errors.push(arg.key.span(), format!("`{key}` is given twice"));
            continue;
        }
        seen.push(key);
        accepted.push(arg);
    }
    accepted
}

/// A `name = "..."` value: a non-empty string literal that is a valid persisted name.
pub(crate) fn persisted_name(value: &Expr, errors: &mut Errors) -> Option<LitStr> {
    let Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Str(literal),
        ..
    }) = value
    else {
        errors.push_spanned(
            value,
            "`name` must be a string literal, e.g. `name = \"create-order\"`",
        );
        return None;
    };
    let name = literal.value();
    if !is_valid_name(&name) {
        errors.push(literal.span(), invalid_name(&name));
        return None;
    }
    Some(literal.clone())
}

/// A `crate = path` value.
pub(crate) fn crate_path(value: &Expr, errors: &mut Errors) -> Option<Path> {
    match value {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            Some(path.path.clone())
        }
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(literal),
            ..
        }) => match literal.parse::<Path>() {
            Ok(path) => Some(path),
            Err(_) => {
                errors.push(
                    literal.span(),
                    "`crate` must be a path, e.g. `crate = my_crate::saga`",
                );
                None
            }
        },
        other => {
            errors.push_spanned(
                other,
                "`crate` must be a path, e.g. `crate = my_crate::saga`",
            );
            None
        }
    }
}

/// A handler value: a path, or `(path, parameters)`.
pub(crate) enum Handler {
    /// `f`
    Plain(Path),
    /// `(f, parameters)`
    WithParams(Path, Box<Expr>),
}

/// Reads a handler argument.
pub(crate) fn handler(value: &Expr, key: &str, errors: &mut Errors) -> Option<Handler> {
    match value {
        Expr::Path(path) if path.qself.is_none() => Some(Handler::Plain(path.path.clone())),
        Expr::Tuple(tuple) if tuple.elems.len() == 2 => match &tuple.elems[0] {
            Expr::Path(path) if path.qself.is_none() => Some(Handler::WithParams(
                path.path.clone(),
                Box::new(tuple.elems[1].clone()),
            )),
            other => {
                errors.push_spanned(other, format!("`{key}` names a function by its path"));
                None
            }
        },
        other => {
            errors.push_spanned(
                other,
                format!("`{key}` names a function by its path, or `(function, parameters)`"),
            );
            None
        }
    }
}

/// Why `name` cannot be persisted.
pub(crate) fn invalid_name(name: &str) -> String {
    const RULE: &str = "use 1 to 128 characters of `A-Z a-z 0-9 _ - . :`";
    if name.is_empty() {
        format!("a persisted name cannot be empty: {RULE}")
    } else {
        format!("`{name}` is not a valid persisted name: {RULE}")
    }
}

/// Whether `name` may be persisted (the runtime's rule).
pub(crate) fn is_valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}
