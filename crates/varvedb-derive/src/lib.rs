//! `#[derive(varvedb::Event)]`: implements `varvedb::Event` with an event's type name and schema
//! version. Use it through `varvedb` (which re-exports it), not on its own.
//!
//! ```text
//! #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
//! #[event(name = "OrderPlaced", version = 2)]   // optional: the type's ident, version 1
//! struct OrderPlaced { order: u64 }
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
//! enum BankEvent {                              // an enum of events: one type for a whole log
//!     Deposited { amount: u64 },                // stored as type "Deposited", version 1
//!     #[event(name = "Withdrawn", version = 2)]
//!     WithdrawnV2 { amount: u64, fee: u64 },
//! }
//! ```

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{Attribute, Data, DeriveInput, Ident, LitInt, LitStr, parse_macro_input};

/// Implements `varvedb::Event`. See the crate docs.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The `#[event(name = "..", version = N)]` of an item or a variant.
struct Naming {
    name: String,
    version: u16,
}

fn naming(attrs: &[Attribute], ident: &Ident) -> syn::Result<Naming> {
    let mut naming = Naming {
        name: ident.to_string(),
        version: 1,
    };
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let name: LitStr = meta.value()?.parse()?;
                let value = name.value();
                if value.is_empty() || value.len() > 255 {
                    return Err(meta.error("an event name is 1 to 255 bytes long"));
                }
                naming.name = value;
                Ok(())
            } else if meta.path.is_ident("version") {
                let version: LitInt = meta.value()?.parse()?;
                let value: u16 = version.base10_parse()?;
                if value == 0 {
                    return Err(meta.error("event versions start at 1"));
                }
                naming.version = value;
                Ok(())
            } else {
                Err(meta.error("expected `name = \"..\"` or `version = N`"))
            }
        })?;
    }
    Ok(naming)
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let body = match &input.data {
        Data::Struct(_) => {
            let Naming { name, version } = naming(&input.attrs, ident)?;
            quote! {
                const CONTAINER: &'static str = "";
                const TYPES: &'static [::varvedb::EventType] =
                    &[::varvedb::EventType::new(#name, #version)];
                fn event_type(&self) -> &'static str { #name }
                fn event_version(&self) -> u16 { #version }
            }
        }
        Data::Enum(data) => {
            let container = naming(&input.attrs, ident)?.name;
            if data.variants.is_empty() {
                return Err(syn::Error::new(
                    Span::call_site(),
                    "an enum of events needs at least one variant",
                ));
            }
            let mut types = Vec::new();
            let mut names = Vec::new();
            let mut versions = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for variant in &data.variants {
                let Naming { name, version } = naming(&variant.attrs, &variant.ident)?;
                if !seen.insert((name.clone(), version)) {
                    return Err(syn::Error::new_spanned(
                        variant,
                        format!("two variants are both event {name:?} version {version}"),
                    ));
                }
                let v = &variant.ident;
                types.push(quote! { ::varvedb::EventType::new(#name, #version) });
                names.push(quote! { Self::#v { .. } => #name });
                versions.push(quote! { Self::#v { .. } => #version });
            }
            quote! {
                const CONTAINER: &'static str = #container;
                const TYPES: &'static [::varvedb::EventType] = &[#(#types),*];
                fn event_type(&self) -> &'static str { match self { #(#names),* } }
                fn event_version(&self) -> u16 { match self { #(#versions),* } }
            }
        }
        Data::Union(_) => {
            return Err(syn::Error::new(
                Span::call_site(),
                "#[derive(Event)] supports structs and enums",
            ));
        }
    };
    Ok(quote! {
        impl #impl_generics ::varvedb::Event for #ident #ty_generics #where_clause {
            #body
        }
    })
}
