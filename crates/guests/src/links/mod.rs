//! Links: imports the node does not define, provided by registered
//! components.
//!
//! A component built elsewhere often imports a capability of its own
//! package (`acme:cipher/audit-log`) rather than `wasmatic:guest`.
//! Registered with `link=acme:cipher/audit-log=auditor`, its calls to that
//! interface go to the exports of the registered component `auditor`,
//! without changing either.
//!
//! How: composition at registration (`wac-graph`), not linking at run
//! time. The component and its providers become one component in which the
//! guest's import is wired to the provider's export; what that one imports
//! (WASI, `wasmatic:guest`, …) the node provides as usual. It runs as any
//! other component: in one store, so one budget covers the guest and its
//! providers, and the providers' stdout, stderr and audit entries are the
//! caller's run's; guest-to-guest calls are wasmtime's own, sync or async.
//! (Linking at run time through host functions cannot call a guest back
//! from a synchronous import while component-model async is on: the store
//! is held by the blocked caller.)
//!
//! The types are checked here first (read from the bytes, not compiled:
//! see `shapes.rs`), function by function, so that a
//! refusal names the function. A link carries values but no resources,
//! streams or futures: those belong to the instance that made them. A
//! provider is named, not copied into the record: a new version of it is
//! checked against what its dependents import, and they are composed again
//! with it (see `Components::commit` in the node crate); a restart composes each from its stored
//! bytes, and the compiled cache finds the same result.

mod shapes;

use std::sync::Arc;

use wasmatic_api::NodeError;
use wasmatic_state::Link;

pub use shapes::{import_names, ForeignImport, Shapes};

/// Most links one component may have.
pub const MAX_LINKS: usize = 16;

/// Longest chain of links from a component to the last provider it needs.
pub const MAX_DEPTH: usize = 8;

/// Most components one composition may hold: the guest and every component
/// its links reach, each once however many paths reach it (a graph of 16
/// links of 16 links is 33 components, not 273 copies). Counted before
/// composing.
pub const MAX_COMPOSED_COMPONENTS: usize = 64;

/// Most bytes one composition may hold, counted before composing.
pub const MAX_COMPOSED_BYTES: usize = 64 << 20;

/// Whether the node itself provides the import `name` (or would refuse it
/// for what it is, not for a missing link).
pub fn offered_by_node(name: &str) -> bool {
    name.starts_with("wasi:") || name.starts_with("wasmatic:")
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
    /// The bytes of the component registered as `name`, as registered,
    /// and its links.
    fn provider(&self, name: &str) -> Option<(Arc<[u8]>, Vec<Link>)>;
}

/// Checks the links of a component of `bytes` to be registered as `name`
/// (empty when it is only staged) and answers them with each interface
/// named in full, as the component imports it. Every foreign import needs
/// exactly one link; every link names a foreign import, a registered
/// provider that exports that interface with the same function types, and
/// forms no cycle. Only a component that imports something the node does
/// not define has its types read; none is compiled.
pub fn check(
    name: &str,
    bytes: &[u8],
    links: &[Link],
    providers: &impl Providers,
) -> Result<Vec<Link>, NodeError> {
    if links.len() > MAX_LINKS {
        return Err(NodeError::Invalid(format!(
            "{} links; a component may have at most {MAX_LINKS}",
            links.len()
        )));
    }
    let all_imports = import_names(bytes)?;
    let foreign_names: Vec<&String> = all_imports.iter().filter(|n| !offered_by_node(n)).collect();
    if let (None, Some(first)) = (links.first(), foreign_names.first()) {
        return Err(unlinked(&foreign_names, first));
    }
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let mut shapes = Shapes::default();
    let guest = shapes.read(
        if name.is_empty() {
            "the component"
        } else {
            name
        },
        bytes,
    )?;
    let foreign = shapes.foreign_imports(guest);
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
        let provider = shapes.read(&link.provider, &provider)?;
        shapes
            .provides(import, &link.provider, provider)
            .map_err(NodeError::Invalid)?;
        resolved.push(Link {
            interface: import.name.clone(),
            provider: link.provider.clone(),
        });
    }
    let unresolved: Vec<&String> = foreign_names
        .iter()
        .copied()
        .filter(|f| !resolved.iter().any(|r| &r.interface == *f))
        .collect();
    if let Some(first) = unresolved.first() {
        return Err(unlinked(&unresolved, first));
    }
    if !name.is_empty() {
        check_chains(name, &resolved, providers)?;
    }
    Ok(resolved)
}

/// The error for foreign imports no link provides.
fn unlinked(names: &[&String], first: &str) -> NodeError {
    NodeError::Invalid(format!(
        "the component imports {}, which the node does not offer (it offers WASI 0.2, wasi:http, wasmatic:guest and wasmatic:eth): link each to a registered component that exports it, e.g. `link={}=PROVIDER`",
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        first.split_once('@').map_or(first, |(n, _)| n),
    ))
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

/// A provider in a composition: its bytes as registered and its own links.
pub struct Part {
    pub name: String,
    pub code: Arc<[u8]>,
    pub links: Vec<Link>,
}

/// Every provider a composition of a guest of `guest_bytes` with `links`
/// needs, each once however many paths reach it: the guest's providers, and
/// theirs. `provider` answers a registered component's bytes as registered
/// and its own links. Counted and sized before any work is done: past
/// [`MAX_COMPOSED_COMPONENTS`] or [`MAX_COMPOSED_BYTES`], `TooLarge`.
pub fn gather(
    links: &[Link],
    guest_bytes: usize,
    provider: impl Fn(&str) -> Option<(Arc<[u8]>, Vec<Link>)>,
) -> Result<Vec<Part>, NodeError> {
    let mut parts: Vec<Part> = Vec::new();
    let mut pending: Vec<String> = links.iter().map(|l| l.provider.clone()).collect();
    let mut bytes = guest_bytes;
    while let Some(name) = pending.pop() {
        if parts.iter().any(|p| p.name == name) {
            continue;
        }
        let (code, links) = provider(&name)
            .ok_or_else(|| NodeError::NotFound(format!("no component `{name}` is registered")))?;
        if 1 + parts.len() == MAX_COMPOSED_COMPONENTS {
            return Err(NodeError::TooLarge(format!(
                "composed with its links, the component would hold more than {MAX_COMPOSED_COMPONENTS} components (it and every component its links reach, each once)"
            )));
        }
        bytes += code.len();
        if bytes > MAX_COMPOSED_BYTES {
            return Err(NodeError::TooLarge(format!(
                "composed with its links, the component would be more than {MAX_COMPOSED_BYTES} bytes"
            )));
        }
        pending.extend(links.iter().map(|l| l.provider.clone()));
        parts.push(Part { name, code, links });
    }
    Ok(parts)
}

/// `guest` with each of its `links` satisfied by its provider, and each
/// provider's links by theirs: one component, whose remaining imports are
/// those the node provides. `parts` are every provider reached, each
/// instantiated once however many components link to it, so a graph costs
/// its distinct components, not its paths.
pub fn compose(guest: &[u8], links: &[Link], parts: &[Part]) -> anyhow::Result<Vec<u8>> {
    use wac_graph::types::Package;
    use wac_graph::{CompositionGraph, EncodeOptions};

    let mut graph = CompositionGraph::new();
    let package = Package::from_bytes("wasmatic:guest-linked", None, guest, graph.types_mut())?;
    let guest = graph.register_package(package)?;
    let instance = graph.instantiate(guest);
    let mut instances = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        // Package names only label the parts of the composition.
        let label = format!("wasmatic:provider{i}");
        let package = Package::from_bytes(&label, None, &part.code[..], graph.types_mut())
            .map_err(|e| e.context(format!("provider `{}`", part.name)))?;
        let package = graph.register_package(package)?;
        instances.push((part.name.as_str(), graph.instantiate(package)));
    }
    let find = |name: &str| {
        instances
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, id)| *id)
            .ok_or_else(|| anyhow::anyhow!("provider `{name}` is not part of the composition"))
    };
    let wiring = std::iter::once((instance, links)).chain(
        parts
            .iter()
            .zip(&instances)
            .map(|(part, (_, id))| (*id, part.links.as_slice())),
    );
    for (importer, its_links) in wiring.collect::<Vec<_>>() {
        for link in its_links {
            let export = graph.alias_instance_export(find(&link.provider)?, &link.interface)?;
            graph.set_instantiation_argument(importer, &link.interface, export)?;
        }
    }
    let exports: Vec<String> = graph.types()[graph[guest].ty()]
        .exports
        .keys()
        .cloned()
        .collect();
    for name in exports {
        let export = graph.alias_instance_export(instance, &name)?;
        graph.export(export, &name)?;
    }
    // wasmtime validates the result as it compiles it.
    Ok(graph.encode(EncodeOptions {
        validate: false,
        ..EncodeOptions::default()
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
