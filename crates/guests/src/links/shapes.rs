//! What a component imports and exports, read from its bytes with the
//! parser composition uses (wac's): checking a link needs types, not code,
//! so nothing is compiled for it, and a component registered with links is
//! compiled once, composed.

use std::collections::HashSet;

use wac_graph::types::{
    DefinedType, FuncType, FuncTypeId, ItemKind, Package, SubtypeChecker, Types, ValueType, WorldId,
};
use wasmatic_api::NodeError;

use super::offered_by_node;

/// An import the node does not define.
pub struct ForeignImport {
    /// Its full name, `acme:cipher/audit-log@0.1.0`.
    pub name: String,
    /// Its functions, or `None` when it is not an interface (a bare
    /// function or a type), which no link can provide.
    pub funcs: Option<Vec<(String, FuncTypeId)>>,
}

/// The types of the components read so far: a guest and the providers it
/// is checked against share one collection, so their types compare.
#[derive(Default)]
pub struct Shapes {
    types: Types,
}

impl Shapes {
    /// Reads the component `bytes`; `name` only labels errors.
    pub fn read(&mut self, name: &str, bytes: &[u8]) -> Result<WorldId, NodeError> {
        Package::from_bytes("wasmatic:read", None, bytes, &mut self.types)
            .map(|package| package.ty())
            .map_err(|e| NodeError::Invalid(format!("cannot read the types of `{name}`: {e:#}")))
    }

    /// The imports of `world` the node does not define.
    pub fn foreign_imports(&self, world: WorldId) -> Vec<ForeignImport> {
        self.types[world]
            .imports
            .iter()
            .filter(|(name, _)| !offered_by_node(name))
            .map(|(name, item)| ForeignImport {
                name: name.clone(),
                funcs: match item {
                    ItemKind::Instance(interface) => Some(
                        self.types[*interface]
                            .exports
                            .iter()
                            .filter_map(|(func, item)| match item {
                                ItemKind::Func(id) => Some((func.clone(), *id)),
                                _ => None,
                            })
                            .collect(),
                    ),
                    _ => None,
                },
            })
            .collect()
    }

    /// Whether `provider` (registered as `provider_name`) exports the
    /// interface `import` with every function it imports, of the same
    /// types; the error names the function.
    pub fn provides(
        &self,
        import: &ForeignImport,
        provider_name: &str,
        provider: WorldId,
    ) -> Result<(), String> {
        let Some(funcs) = &import.funcs else {
            return Err(format!(
                "`{}` is not an interface: only imported interfaces can be linked",
                import.name
            ));
        };
        let Some(ItemKind::Instance(interface)) = self.types[provider].exports.get(&import.name)
        else {
            return Err(format!(
                "`{provider_name}` does not export `{}`",
                import.name
            ));
        };
        for (func, wanted) in funcs {
            let Some(ItemKind::Func(given)) = self.types[*interface].exports.get(func) else {
                return Err(format!(
                    "`{provider_name}` does not export function `{func}` of `{}`",
                    import.name
                ));
            };
            if let Some(kind) = self.handle_in(&self.types[*wanted]) {
                return Err(format!(
                    "function `{func}` of `{}` passes a {kind}: links carry values only",
                    import.name
                ));
            }
            if !self.same(ItemKind::Func(*wanted), ItemKind::Func(*given)) {
                return Err(format!(
                    "function `{func}` of `{}`: the component imports `{}` but `{provider_name}` exports `{}`",
                    import.name,
                    self.signature(func, &self.types[*wanted]),
                    self.signature(func, &self.types[*given]),
                ));
            }
        }
        Ok(())
    }

    /// Whether `a` and `b` are the same type: each a subtype of the other.
    fn same(&self, a: ItemKind, b: ItemKind) -> bool {
        let mut cache = HashSet::new();
        let mut checker = SubtypeChecker::new(&mut cache);
        checker.is_subtype(a, &self.types, b, &self.types).is_ok()
            && checker.is_subtype(b, &self.types, a, &self.types).is_ok()
    }

    /// The first resource, stream, future or error context a function's
    /// parameters or result hold, by kind.
    fn handle_in(&self, func: &FuncType) -> Option<&'static str> {
        func.params
            .values()
            .chain(func.result.as_ref())
            .find_map(|ty| self.handle_kind(ty))
    }

    fn handle_kind(&self, ty: &ValueType) -> Option<&'static str> {
        let inner = |ty: &Option<ValueType>| ty.as_ref().and_then(|t| self.handle_kind(t));
        match ty {
            ValueType::Own(_) | ValueType::Borrow(_) => Some("resource"),
            ValueType::Primitive(p) if p.desc() == "error-context" => Some("error-context"),
            ValueType::Primitive(_) => None,
            ValueType::Defined(id) => match &self.types[*id] {
                DefinedType::Future(_) => Some("future"),
                DefinedType::Stream(_) => Some("stream"),
                DefinedType::List(t) | DefinedType::FixedSizeList(t, _) => self.handle_kind(t),
                DefinedType::Option(t) | DefinedType::Alias(t) => self.handle_kind(t),
                DefinedType::Map(k, v) => self.handle_kind(k).or_else(|| self.handle_kind(v)),
                DefinedType::Tuple(ts) => ts.iter().find_map(|t| self.handle_kind(t)),
                DefinedType::Record(r) => r.fields.values().find_map(|t| self.handle_kind(t)),
                DefinedType::Variant(v) => v.cases.values().find_map(inner),
                DefinedType::Result { ok, err } => inner(ok).or_else(|| inner(err)),
                DefinedType::Flags(_) | DefinedType::Enum(_) => None,
            },
        }
    }

    /// `name(a: u32, b: string) -> list<string>`, as WIT writes it.
    fn signature(&self, name: &str, func: &FuncType) -> String {
        let params: Vec<String> = func
            .params
            .iter()
            .map(|(param, ty)| format!("{param}: {}", self.type_name(ty)))
            .collect();
        let name = if func.is_async {
            format!("async {name}")
        } else {
            name.to_string()
        };
        match &func.result {
            None => format!("{name}({})", params.join(", ")),
            Some(result) => format!(
                "{name}({}) -> {}",
                params.join(", "),
                self.type_name(result)
            ),
        }
    }

    /// A type as WIT writes it, records and variants spelled out (the
    /// component model keeps no type names).
    fn type_name(&self, ty: &ValueType) -> String {
        let list = |tys: &mut dyn Iterator<Item = String>| tys.collect::<Vec<_>>().join(", ");
        let optional = |ty: &Option<ValueType>| ty.as_ref().map(|t| self.type_name(t));
        match ty {
            ValueType::Primitive(p) => p.desc().to_string(),
            ValueType::Own(_) => "own<resource>".into(),
            ValueType::Borrow(_) => "borrow<resource>".into(),
            ValueType::Defined(id) => match &self.types[*id] {
                DefinedType::Alias(t) => self.type_name(t),
                DefinedType::List(t) => format!("list<{}>", self.type_name(t)),
                DefinedType::FixedSizeList(t, n) => format!("list<{}, {n}>", self.type_name(t)),
                DefinedType::Map(k, v) => {
                    format!("map<{}, {}>", self.type_name(k), self.type_name(v))
                }
                DefinedType::Option(t) => format!("option<{}>", self.type_name(t)),
                DefinedType::Tuple(ts) => {
                    format!("tuple<{}>", list(&mut ts.iter().map(|t| self.type_name(t))))
                }
                DefinedType::Record(r) => format!(
                    "record {{ {} }}",
                    list(
                        &mut r
                            .fields
                            .iter()
                            .map(|(n, t)| format!("{n}: {}", self.type_name(t)))
                    )
                ),
                DefinedType::Variant(v) => format!(
                    "variant {{ {} }}",
                    list(&mut v.cases.iter().map(|(n, t)| match optional(t) {
                        Some(t) => format!("{n}({t})"),
                        None => n.clone(),
                    }))
                ),
                DefinedType::Enum(e) => format!("enum {{ {} }}", list(&mut e.0.iter().cloned())),
                DefinedType::Flags(f) => format!("flags {{ {} }}", list(&mut f.0.iter().cloned())),
                DefinedType::Result { ok, err } => match (optional(ok), optional(err)) {
                    (None, None) => "result".into(),
                    (Some(ok), None) => format!("result<{ok}>"),
                    (None, Some(err)) => format!("result<_, {err}>"),
                    (Some(ok), Some(err)) => format!("result<{ok}, {err}>"),
                },
                DefinedType::Stream(t) => match optional(t) {
                    Some(t) => format!("stream<{t}>"),
                    None => "stream".into(),
                },
                DefinedType::Future(t) => match optional(t) {
                    Some(t) => format!("future<{t}>"),
                    None => "future".into(),
                },
            },
        }
    }
}

/// The names a component imports, read from its outermost import section
/// without validating the rest: enough to tell whether it needs links at
/// all before anything heavier is done.
pub fn import_names(bytes: &[u8]) -> Result<Vec<String>, NodeError> {
    use wasmparser::{Parser, Payload};
    let mut names = Vec::new();
    // Each nested module or component starts with a version header and
    // ends with an end; the outermost component is depth 1.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload =
            payload.map_err(|e| NodeError::Invalid(format!("not a valid component: {e}")))?;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 1 => {
                for import in imports {
                    let import = import
                        .map_err(|e| NodeError::Invalid(format!("not a valid component: {e}")))?;
                    names.push(import.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}
