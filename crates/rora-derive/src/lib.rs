//! `#[derive(LoraModel)]`: the traversal rora needs to attach adapters to a burn model.
//!
//! The derive implements `LoraModel::map_lora_layers` (the trait provides `map_lora_linears` on it) by
//! passing every field through the same method with the field's name joined to the path
//! prefix — the same names, in the same order, that burn's `#[derive(Module)]` gives its
//! module visitor. `LoraLinear` and `LoraEmbedding` are the leaves (they hand themselves to
//! the callback or the `LoraLayerMapper`); `Vec<T>`, `[T; N]`
//! and `Option<T>` recurse as burn does (elements are named by their index, an `Option`
//! adds no path component); burn's own layers and primitive fields pass through unchanged.
//!
//! Fields are skipped (passed through, no `LoraModel` bound needed) when they are of a
//! primitive type (burn's rule: `usize`, `f64`, `String`, …, and containers of them), when
//! burn skips them (`#[module(skip)]`), or when marked `#[lora(skip)]`. Any other field's
//! type must implement `LoraModel` (derive it, or mark the field `#[lora(skip)]`).
//!
//! Enums are supported the way burn supports them: every variant holds one module, and the
//! variant's name is a path component.
//!
//! The generated code names the trait through the crate that the user depends on:
//! `rora-core` if it is a dependency, otherwise `rora` (as `rora::core`); override with
//! `#[lora(crate = "path::to::rora_core")]` on the type.
//!
//! Use it through `rora` or `rora-core`, which re-export it; see `rora_core::LoraModel` for
//! examples.

use proc_macro::TokenStream;
use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{Data, DeriveInput, Fields, Ident, Type, parse_macro_input, spanned::Spanned};

/// Derive `LoraModel` for a burn module (a struct with named fields, or an enum whose
/// variants each hold one module). See the crate documentation.
#[proc_macro_derive(LoraModel, attributes(lora))]
pub fn derive_lora_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let krate = crate_path(input)?;
    let name = &input.ident;
    let trait_path = quote!(#krate::LoraModel);
    let mapper = quote!(#krate::LoraLayerMapper);
    let join = quote!(#krate::join_path);

    let mut bounds: Vec<Type> = Vec::new();
    // `map_lora_layers` (every adaptable layer, through a `LoraLayerMapper`); the trait
    // provides `map_lora_linears` on top of it.
    let method = quote!(map_lora_layers);
    let arg = quote!(mapper);
    let layers_body = {
        match &input.data {
            Data::Struct(data) => {
                let Fields::Named(fields) = &data.fields else {
                    return Err(syn::Error::new(
                        data.fields.span(),
                        "LoraModel can be derived for structs with named fields (as burn's Module) \
                     and for enums",
                    ));
                };
                let mut pattern = Vec::new();
                let mut rebuild = Vec::new();
                for field in &fields.named {
                    let ident = field.ident.as_ref().expect("named field");
                    pattern.push(quote!(#ident));
                    if is_skipped(field)? {
                        rebuild.push(quote!(#ident));
                    } else {
                        let key = ident.to_string();
                        let key = key.strip_prefix("r#").unwrap_or(&key).to_string();
                        bounds.push(field.ty.clone());
                        rebuild.push(quote! {
                            #ident: #trait_path::#method(#ident, &#join(prefix, #key), #arg)
                        });
                    }
                }
                quote! {
                    let Self { #(#pattern),* } = self;
                    Self { #(#rebuild),* }
                }
            }
            Data::Enum(data) => {
                let mut arms = Vec::new();
                for variant in &data.variants {
                    let v = &variant.ident;
                    let key = v.to_string();
                    match &variant.fields {
                        Fields::Unnamed(f) if f.unnamed.len() == 1 => {
                            let field = f.unnamed.first().expect("one field");
                            if is_skipped(field)? {
                                arms.push(quote!(Self::#v(module) => Self::#v(module)));
                            } else {
                                bounds.push(field.ty.clone());
                                arms.push(quote! {
                                    Self::#v(module) => Self::#v(
                                        #trait_path::#method(module, &#join(prefix, #key), #arg)
                                    )
                                });
                            }
                        }
                        Fields::Unit => arms.push(quote!(Self::#v => Self::#v)),
                        other => {
                            return Err(syn::Error::new(
                                other.span(),
                                "LoraModel enum variants must hold exactly one module, as burn's \
                             Module derive requires",
                            ));
                        }
                    }
                }
                quote! {
                    match self {
                        #(#arms,)*
                    }
                }
            }
            Data::Union(u) => {
                return Err(syn::Error::new(
                    u.union_token.span,
                    "LoraModel cannot be derived for unions",
                ));
            }
        }
    };

    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut predicates: Vec<TokenStream2> = where_clause
        .map(|w| w.predicates.iter().map(|p| quote!(#p)).collect())
        .unwrap_or_default();
    // Bounds only where a field mentions a type parameter: concrete field types are checked
    // at the call, with an error naming the field's type.
    let params: Vec<&Ident> = input.generics.type_params().map(|p| &p.ident).collect();
    let mut seen = std::collections::BTreeSet::new();
    for ty in bounds.iter().filter(|ty| mentions_any(ty, &params)) {
        if seen.insert(quote!(#ty).to_string()) {
            predicates.push(quote!(#ty: #trait_path));
        }
    }
    let where_tokens = if predicates.is_empty() {
        quote!()
    } else {
        quote!(where #(#predicates),*)
    };

    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #trait_path for #name #ty_generics #where_tokens {
            #[allow(unused_variables)]
            fn map_lora_layers(
                self,
                prefix: &str,
                mapper: &mut dyn #mapper,
            ) -> Self {
                #layers_body
            }
        }
    })
}

/// The path of rora-core as the deriving crate sees it.
fn crate_path(input: &DeriveInput) -> syn::Result<TokenStream2> {
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("lora")) {
        let mut found = None;
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                found = Some(lit.parse::<syn::Path>()?);
                Ok(())
            } else {
                Err(meta.error("expected `crate = \"...\"`"))
            }
        })?;
        if let Some(path) = found {
            return Ok(quote!(#path));
        }
    }
    let ident = |name: &str| Ident::new(&name.replace('-', "_"), Span::call_site());
    if let Ok(found) = crate_name("rora-core") {
        return Ok(match found {
            FoundCrate::Itself => quote!(::rora_core),
            FoundCrate::Name(n) => {
                let n = ident(&n);
                quote!(::#n)
            }
        });
    }
    Ok(match crate_name("rora") {
        Ok(FoundCrate::Name(n)) => {
            let n = ident(&n);
            quote!(::#n::core)
        }
        _ => quote!(::rora::core),
    })
}

/// `#[lora(skip)]`, `#[module(skip)]`, or a primitive type (burn's constants).
fn is_skipped(field: &syn::Field) -> syn::Result<bool> {
    let mut skip = false;
    for attr in &field.attrs {
        if attr.path().is_ident("lora") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    skip = true;
                    Ok(())
                } else {
                    Err(meta.error("expected `#[lora(skip)]`"))
                }
            })?;
        } else if attr.path().is_ident("module") {
            // burn's own attribute; only `skip` exists. Other contents are burn's to reject.
            let _ = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    skip = true;
                }
                Ok(())
            });
        }
    }
    Ok(skip || is_primitive_type(&field.ty))
}

/// burn's rule (burn-derive 0.22, `is_primitive_type`): primitives, and known containers,
/// tuples, arrays and references of primitives, are constants, not modules.
fn is_primitive_type(ty: &Type) -> bool {
    match ty {
        Type::Path(tp) => {
            let Some(segment) = tp.path.segments.last() else {
                return false;
            };
            let ident = segment.ident.to_string();
            if matches!(
                ident.as_str(),
                "bool"
                    | "char"
                    | "u8"
                    | "u16"
                    | "u32"
                    | "u64"
                    | "u128"
                    | "usize"
                    | "i8"
                    | "i16"
                    | "i32"
                    | "i64"
                    | "i128"
                    | "isize"
                    | "f32"
                    | "f64"
                    | "String"
            ) {
                return true;
            }
            match &segment.arguments {
                syn::PathArguments::AngleBracketed(args)
                    if matches!(
                        ident.as_str(),
                        "Option"
                            | "Result"
                            | "Vec"
                            | "Box"
                            | "Arc"
                            | "Weak"
                            | "HashMap"
                            | "BTreeMap"
                            | "HashSet"
                            | "BTreeSet"
                            | "VecDeque"
                            | "LinkedList"
                    ) =>
                {
                    args.args.iter().all(|arg| match arg {
                        syn::GenericArgument::Type(inner) => is_primitive_type(inner),
                        _ => false,
                    })
                }
                _ => false,
            }
        }
        Type::Tuple(t) => t.elems.iter().all(is_primitive_type),
        Type::Array(a) => is_primitive_type(&a.elem),
        Type::Reference(r) => is_primitive_type(&r.elem),
        Type::Paren(p) => is_primitive_type(&p.elem),
        Type::Slice(s) => is_primitive_type(&s.elem),
        _ => false,
    }
}

/// Whether `ty` mentions any of `params` (as a path segment anywhere inside it).
fn mentions_any(ty: &Type, params: &[&Ident]) -> bool {
    if params.is_empty() {
        return false;
    }
    let tokens = quote!(#ty).to_string();
    tokens
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| params.iter().any(|p| *p == word))
}
