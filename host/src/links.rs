//! Links: imports the node does not define, provided by registered
//! components.
//!
//! A component built elsewhere often imports a capability of its own
//! package (`acme:cipher/audit-log`) rather than `wasmatic:guest`.
//! Registered with `link=acme:cipher/audit-log=auditor`, its calls to that
//! interface go to the exports of the registered component `auditor`,
//! without changing either.
//!
//! How: linking at run time, not composition at registration. The linked
//! component gets a linker of its own: the node's, plus each linked
//! function as a host function that calls the provider's export. Before a
//! fresh instance of the component is made, its providers are instantiated
//! in the same store (see `handler::call`), so one budget covers them all
//! and the provider's stdout, stderr and audit entries are the caller's
//! run's. Values cross as `Val`s, which is why the types are checked here at
//! registration, function by function, and why a link carries values but
//! no resources, streams or futures. A provider is named, not copied: a new
//! version of it serves the next fresh instance, once it is checked to
//! still provide what its dependents import.

use std::collections::HashSet;
use std::sync::Arc;

use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use crate::error::NodeError;
use crate::handler::HandlerState;
use crate::state::Link;
use crate::values::signature;

/// Most links one component may have.
pub const MAX_LINKS: usize = 16;

/// Longest chain of links from a component to the last provider it needs.
pub const MAX_DEPTH: usize = 8;

/// Whether the node itself provides the import `name` (or would refuse it
/// for what it is, not for a missing link).
pub fn offered_by_node(name: &str) -> bool {
    name.starts_with("wasi:") || name.starts_with("wasmatic:")
}

/// An import the node does not define.
pub struct ForeignImport {
    /// Its full name, `acme:cipher/audit-log@0.1.0`.
    pub name: String,
    /// Its functions, or `None` when it is not an interface (a bare
    /// function or a type), which no link can provide.
    pub funcs: Option<Vec<(String, ComponentFunc)>>,
}

/// The imports of `component` the node does not define.
pub fn foreign_imports(engine: &Engine, component: &Component) -> Vec<ForeignImport> {
    component
        .component_type()
        .imports(engine)
        .filter(|(name, _)| !offered_by_node(name))
        .map(|(name, item)| ForeignImport {
            name: name.to_string(),
            funcs: match item.ty {
                ComponentItem::ComponentInstance(instance) => Some(
                    instance
                        .exports(engine)
                        .filter_map(|(func, item)| match item.ty {
                            ComponentItem::ComponentFunc(f) => Some((func.to_string(), f)),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            },
        })
        .collect()
}

/// Whether the link interface `given` names the import `import`: in full,
/// or without its `@version`.
fn names(given: &str, import: &str) -> bool {
    given == import
        || (!given.contains('@') && import.split_once('@').map(|(n, _)| n) == Some(given))
}

/// Who provides what, as far as checking links goes: the registered
/// components by name, with their own links.
pub trait Providers {
    /// The component registered as `name`, and its links.
    fn provider(&self, name: &str) -> Option<(Component, Vec<Link>)>;
}

/// Checks the links of a component to be registered as `name` (empty when
/// it is only staged) and answers them with each interface named in full,
/// as the component imports it. Every foreign import needs exactly one
/// link; every link names a foreign import, a registered provider that
/// exports that interface with the same function types, and forms no cycle.
pub fn check(
    engine: &Engine,
    name: &str,
    component: &Component,
    links: &[Link],
    providers: &impl Providers,
) -> Result<Vec<Link>, NodeError> {
    if links.len() > MAX_LINKS {
        return Err(NodeError::Invalid(format!(
            "{} links; a component may have at most {MAX_LINKS}",
            links.len()
        )));
    }
    let foreign = foreign_imports(engine, component);
    let all_imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(n, _)| n.to_string())
        .collect();
    let mut resolved: Vec<Link> = Vec::new();
    for link in links {
        let Some(import) = foreign.iter().find(|f| names(&link.interface, &f.name)) else {
            return Err(unknown_link(&link.interface, &all_imports, &foreign));
        };
        if resolved.iter().any(|r| r.interface == import.name) {
            return Err(NodeError::Invalid(format!(
                "`{}` is linked twice: give one provider per interface",
                import.name
            )));
        }
        if link.provider == name {
            return Err(NodeError::Invalid(format!(
                "`{name}` cannot provide `{}` to itself",
                import.name
            )));
        }
        let (provider, _) = providers.provider(&link.provider).ok_or_else(|| {
            NodeError::NotFound(format!(
                "link `{}={}`: no component `{}` is registered; register the provider first",
                link.interface, link.provider, link.provider
            ))
        })?;
        provides(engine, import, &link.provider, &provider).map_err(NodeError::Invalid)?;
        resolved.push(Link {
            interface: import.name.clone(),
            provider: link.provider.clone(),
        });
    }
    let unlinked: Vec<&str> = foreign
        .iter()
        .filter(|f| !resolved.iter().any(|r| r.interface == f.name))
        .map(|f| f.name.as_str())
        .collect();
    if let Some(first) = unlinked.first() {
        return Err(NodeError::Invalid(format!(
            "the component imports {}, which the node does not offer (it offers WASI 0.2, wasi:http, wasmatic:guest and wasmatic:eth): link each to a registered component that exports it, e.g. `link={}=PROVIDER`",
            unlinked.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
            first.split_once('@').map_or(*first, |(n, _)| n),
        )));
    }
    if !name.is_empty() {
        check_chains(name, &resolved, providers)?;
    }
    Ok(resolved)
}

/// The error for a link that names no foreign import of the component.
fn unknown_link(given: &str, all: &[String], foreign: &[ForeignImport]) -> NodeError {
    if let Some(own) = all.iter().find(|i| names(given, i)) {
        return NodeError::Invalid(format!(
            "`{own}` is provided by the node itself; only imports the node does not offer can be linked"
        ));
    }
    let linkable: Vec<String> = foreign.iter().map(|f| format!("`{}`", f.name)).collect();
    NodeError::Invalid(format!(
        "link `{given}`: the component does not import it; it imports {} that the node does not offer",
        if linkable.is_empty() {
            "nothing".to_string()
        } else {
            linkable.join(", ")
        }
    ))
}

/// Whether `provider` (registered as `provider_name`) exports the interface
/// `import` with every function it imports, of the same types; the error
/// names the function.
pub fn provides(
    engine: &Engine,
    import: &ForeignImport,
    provider_name: &str,
    provider: &Component,
) -> Result<(), String> {
    let Some(funcs) = &import.funcs else {
        return Err(format!(
            "`{}` is not an interface: only imported interfaces can be linked",
            import.name
        ));
    };
    let exported = provider
        .component_type()
        .exports(engine)
        .find(|(n, _)| *n == import.name)
        .map(|(_, item)| item.ty);
    let Some(ComponentItem::ComponentInstance(instance)) = exported else {
        return Err(format!(
            "`{provider_name}` does not export `{}`",
            import.name
        ));
    };
    for (func, wanted) in funcs {
        let found = instance
            .exports(engine)
            .find(|(n, _)| n == func)
            .map(|(_, item)| item.ty);
        let Some(ComponentItem::ComponentFunc(given)) = found else {
            return Err(format!(
                "`{provider_name}` does not export function `{func}` of `{}`",
                import.name
            ));
        };
        if let Some(kind) = handle_in(wanted) {
            return Err(format!(
                "function `{func}` of `{}` passes a {kind}: links carry values only",
                import.name
            ));
        }
        let same = wanted.params().len() == given.params().len()
            && wanted
                .params()
                .zip(given.params())
                .all(|((_, a), (_, b))| a == b)
            && wanted.results().len() == given.results().len()
            && wanted.results().zip(given.results()).all(|(a, b)| a == b);
        if !same {
            return Err(format!(
                "function `{func}` of `{}`: the component imports `{}` but `{provider_name}` exports `{}`",
                import.name,
                signature(func, wanted),
                signature(func, &given),
            ));
        }
    }
    Ok(())
}

/// The first resource, stream, future or error context a function's
/// parameters or results hold, by kind.
fn handle_in(func: &ComponentFunc) -> Option<&'static str> {
    func.params()
        .map(|(_, ty)| ty)
        .chain(func.results())
        .find_map(|ty| handle_kind(&ty))
}

fn handle_kind(ty: &Type) -> Option<&'static str> {
    match ty {
        Type::Own(_) | Type::Borrow(_) => Some("resource"),
        Type::Future(_) => Some("future"),
        Type::Stream(_) => Some("stream"),
        Type::ErrorContext => Some("error-context"),
        Type::List(l) => handle_kind(&l.ty()),
        Type::FixedLengthList(l) => handle_kind(&l.ty()),
        Type::Map(m) => handle_kind(&m.key()).or_else(|| handle_kind(&m.value())),
        Type::Record(r) => r.fields().find_map(|f| handle_kind(&f.ty)),
        Type::Tuple(t) => t.types().find_map(|t| handle_kind(&t)),
        Type::Variant(v) => v.cases().find_map(|c| c.ty.and_then(|t| handle_kind(&t))),
        Type::Option(o) => handle_kind(&o.ty()),
        Type::Result(r) => r
            .ok()
            .and_then(|t| handle_kind(&t))
            .or_else(|| r.err().and_then(|t| handle_kind(&t))),
        _ => None,
    }
}

/// Refuses links of `name` that would form a cycle, or a chain of providers
/// deeper than [`MAX_DEPTH`].
fn check_chains(name: &str, links: &[Link], providers: &impl Providers) -> Result<(), NodeError> {
    // Depth-first over providers, with the path so far for the message.
    let mut stack: Vec<Vec<String>> = links
        .iter()
        .map(|l| vec![name.to_string(), l.provider.clone()])
        .collect();
    while let Some(path) = stack.pop() {
        if path.len() > MAX_DEPTH + 1 {
            return Err(NodeError::Invalid(format!(
                "links chain deeper than {MAX_DEPTH}: {}",
                path.join(" → ")
            )));
        }
        let Some(last) = path.last() else { continue };
        let Some((_, next)) = providers.provider(last) else {
            continue;
        };
        for link in next {
            let mut longer = path.clone();
            longer.push(link.provider.clone());
            if link.provider == name {
                return Err(NodeError::Invalid(format!(
                    "links would form a cycle: {}",
                    longer.join(" → ")
                )));
            }
            stack.push(longer);
        }
    }
    Ok(())
}

/// The linker of a component with `links` (checked by [`check`]): the
/// node's, plus each linked function as a call to the provider's export
/// in the caller's store.
pub fn linker(
    engine: &Engine,
    base: &Linker<HandlerState>,
    component: &Component,
    links: &[Link],
) -> wasmtime::Result<Linker<HandlerState>> {
    let mut linker = base.clone();
    for import in foreign_imports(engine, component) {
        let Some(link) = links.iter().find(|l| l.interface == import.name) else {
            continue;
        };
        let provider: Arc<str> = link.provider.as_str().into();
        let interface: Arc<str> = import.name.as_str().into();
        let mut instance = linker.instance(&import.name)?;
        for (func, _) in import.funcs.unwrap_or_default() {
            let (provider, interface, name): (Arc<str>, Arc<str>, Arc<str>) =
                (provider.clone(), interface.clone(), func.as_str().into());
            instance.func_new_concurrent(&func, move |accessor, _ty, params, results| {
                let (provider, interface, name) =
                    (provider.clone(), interface.clone(), name.clone());
                Box::pin(async move {
                    let target = accessor.with(|mut access| {
                        let instance = access.data_mut().linked(&provider).ok_or_else(|| {
                            wasmtime::Error::msg(format!(
                                "the provider `{provider}` of `{interface}` is not instantiated"
                            ))
                        })?;
                        let export = instance
                            .get_export_index(&mut access, None, &interface)
                            .and_then(|i| instance.get_export_index(&mut access, Some(&i), &name))
                            .and_then(|i| instance.get_func(&mut access, i));
                        export.ok_or_else(|| {
                            wasmtime::Error::msg(format!(
                                "`{provider}` no longer exports `{interface}.{name}`"
                            ))
                        })
                    })?;
                    target.call_concurrent(accessor, params, results).await
                })
            })?;
        }
    }
    Ok(linker)
}

/// The providers a component with `links` needs instantiated before it,
/// each after those it needs itself: a depth-first walk, each provider
/// once. `links_of` answers a provider's own links.
pub fn instantiation_order(
    links: &[Link],
    links_of: impl Fn(&str) -> Option<Vec<Link>>,
) -> Result<Vec<String>, String> {
    let mut order: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    // (provider, depth, whether its own providers are already pushed)
    let mut stack: Vec<(String, usize, bool)> = links
        .iter()
        .rev()
        .map(|l| (l.provider.clone(), 1, false))
        .collect();
    while let Some((name, depth, expanded)) = stack.pop() {
        if seen.contains(&name) {
            continue;
        }
        if expanded {
            seen.insert(name.clone());
            order.push(name);
            continue;
        }
        if depth > MAX_DEPTH {
            return Err(format!("links chain deeper than {MAX_DEPTH} at `{name}`"));
        }
        let own =
            links_of(&name).ok_or_else(|| format!("the provider `{name}` is not registered"))?;
        stack.push((name, depth, true));
        for link in own.iter().rev() {
            if !seen.contains(&link.provider) {
                stack.push((link.provider.clone(), depth + 1, false));
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(interface: &str, provider: &str) -> Link {
        Link {
            interface: interface.into(),
            provider: provider.into(),
        }
    }

    #[test]
    fn interface_names_with_or_without_version() {
        assert!(names(
            "acme:cipher/audit-log",
            "acme:cipher/audit-log@0.1.0"
        ));
        assert!(names(
            "acme:cipher/audit-log@0.1.0",
            "acme:cipher/audit-log@0.1.0"
        ));
        assert!(!names(
            "acme:cipher/audit-log@0.2.0",
            "acme:cipher/audit-log@0.1.0"
        ));
        assert!(!names("acme:cipher/audit", "acme:cipher/audit-log@0.1.0"));
    }

    #[test]
    fn providers_come_before_those_that_need_them() {
        // a needs b and c; b needs c; c needs nothing.
        let of = |name: &str| match name {
            "b" => Some(vec![link("x:y/c", "c")]),
            "c" => Some(vec![]),
            _ => None,
        };
        let order = instantiation_order(&[link("x:y/b", "b"), link("x:y/c", "c")], of);
        assert_eq!(order, Ok(vec!["c".to_string(), "b".to_string()]));
        assert!(instantiation_order(&[link("x:y/z", "missing")], of).is_err());
    }
}
