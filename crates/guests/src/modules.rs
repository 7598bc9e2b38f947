//! Plain core WebAssembly modules, called by export name with JSON values.
//!
//! A module may import functions of other registered modules by their name
//! (`host_modules`); those are instantiated first, in the same store, each
//! once per call however many modules link to it. Parameters are typed from
//! the export's own signature: `2` for an i32 or i64, `1.5` for an f32 or f64.
//!
//! Everything a call instantiates shares one store and so one budget
//! ([`GuestLimiter`]): memory summed over every module, counted instances.
//! Links are resolved with an explicit worklist, never by recursion, so no
//! chain of modules can overflow the stack of the fiber the call runs on;
//! chains deeper than [`MAX_LINK_DEPTH`] and calls linking more than
//! [`MAX_LINKED_MODULES`] modules are refused before anything runs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use std::time::Duration;

use serde_json::Value;
use wasmtime::{Engine, Func, Instance, Linker, Module, Store, Val, ValType};

use wasmatic_api::NodeError;
use wasmatic_sandbox::compile::{CompileError, Compiler};
use wasmatic_sandbox::engine::{self, GuestFailure, WasmKind};
use wasmatic_sandbox::flags::RuntimeFlags;
use wasmatic_sandbox::limits::GuestLimiter;
use wasmatic_state::ModuleRecord;

/// Longest chain of `host_modules` links a call may follow.
pub const MAX_LINK_DEPTH: usize = 16;
/// Most distinct modules one call may link, besides the one it calls.
pub const MAX_LINKED_MODULES: usize = 64;

/// A registered module: compiled, with the modules it links against.
#[derive(Clone)]
pub struct RegisteredModule {
    pub module: Module,
    pub host_modules: Vec<String>,
}

pub struct Modules {
    engine: Engine,
    flags: RuntimeFlags,
    registered: RwLock<HashMap<String, RegisteredModule>>,
    /// Compiles, and keeps compiled by digest: a client of `POST /` sends the
    /// same module with every call.
    compiler: Arc<Compiler>,
}

impl Modules {
    pub fn new(engine: Engine, flags: RuntimeFlags, compiler: Arc<Compiler>) -> Self {
        Modules {
            compiler,
            engine,
            flags,
            registered: RwLock::new(HashMap::new()),
        }
    }

    /// Compiles `wasm` and checks that its imports can be linked.
    pub fn compile(&self, wasm: &[u8], host_modules: &[String]) -> Result<Module, NodeError> {
        let module = self.compile_only(wasm)?;
        self.check_links(&module, host_modules, &self.read())?;
        Ok(module)
    }

    /// Compiles `wasm`, or finds it compiled, linking nothing.
    pub fn compile_only(&self, wasm: &[u8]) -> Result<Module, NodeError> {
        if engine::wasm_kind(wasm) != WasmKind::CoreModule {
            return Err(NodeError::Invalid(
                "not a core WebAssembly module (no `\\0asm` version 1 header)".into(),
            ));
        }
        let digest = hex::encode(Sha256::digest(wasm));
        self.compiler
            .module_now(&digest, wasm)
            .map_err(|e| match e {
                CompileError::Invalid(m) => NodeError::Invalid(m),
                CompileError::Internal(m) => NodeError::Internal(m),
            })
    }

    /// Checks that every import of `module` names a module in `host_modules`
    /// that is registered.
    fn check_links(
        &self,
        module: &Module,
        host_modules: &[String],
        registered: &HashMap<String, RegisteredModule>,
    ) -> Result<(), NodeError> {
        let distinct: HashSet<&String> = host_modules.iter().collect();
        if distinct.len() > MAX_LINKED_MODULES {
            return Err(NodeError::Invalid(format!(
                "host_modules names {} modules; a module may link at most {MAX_LINKED_MODULES}",
                distinct.len()
            )));
        }
        for import in module.imports() {
            let from = import.module();
            if !host_modules.iter().any(|m| m == from) {
                return Err(NodeError::Invalid(format!(
                    "the module imports `{from}.{}`; list `{from}` in host_modules",
                    import.name()
                )));
            }
            if !registered.contains_key(from) {
                return Err(NodeError::Invalid(format!(
                    "the module imports from `{from}`, which is not a registered module"
                )));
            }
        }
        Ok(())
    }

    pub fn insert(&self, name: &str, module: RegisteredModule) {
        self.registered
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), module);
    }

    /// Forgets every module not named in `names` (another node of a fleet
    /// removed them).
    pub fn retain(&self, names: &std::collections::HashSet<String>) {
        self.registered
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| names.contains(name));
    }

    pub fn get(&self, name: &str) -> Option<RegisteredModule> {
        self.read().get(name).cloned()
    }

    /// Unregisters `name`. A module another registered module links to is
    /// kept, and the error names who links to it: removing it would break
    /// those modules now and fail their restore at the next start.
    pub fn remove(&self, name: &str) -> Result<RegisteredModule, NodeError> {
        let mut registered = self.registered.write().unwrap_or_else(|p| p.into_inner());
        if !registered.contains_key(name) {
            return Err(NodeError::NotFound(format!("no core module `{name}`")));
        }
        let mut users: Vec<&String> = registered
            .iter()
            .filter(|(other, m)| *other != name && m.host_modules.iter().any(|h| h == name))
            .map(|(other, _)| other)
            .collect();
        if !users.is_empty() {
            users.sort();
            let shown: Vec<String> = users.iter().take(5).map(|u| format!("`{u}`")).collect();
            return Err(NodeError::Conflict(format!(
                "`{name}` is linked by {}{}; delete those first",
                shown.join(", "),
                if users.len() > 5 { " and others" } else { "" }
            )));
        }
        registered
            .remove(name)
            .ok_or_else(|| NodeError::NotFound(format!("no core module `{name}`")))
    }

    /// Registers the stored modules, each after the modules it links to (a
    /// topological sort: linear in modules and links, whatever order they
    /// were stored in). Returns the modules that could not be restored, with
    /// why; a module whose links failed fails too, naming them.
    pub fn restore(&self, records: Vec<ModuleRecord>) -> Vec<(String, NodeError)> {
        let index: HashMap<&str, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        // For each module, how many of its stored links are not restored
        // yet, and which modules wait on it.
        let mut waiting_on = vec![0usize; records.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); records.len()];
        for (i, record) in records.iter().enumerate() {
            let links: HashSet<&String> = record.host_modules.iter().collect();
            for link in links {
                if let Some(&j) = index.get(link.as_str()) {
                    waiting_on[i] += 1;
                    dependents[j].push(i);
                }
            }
        }
        let mut ready: VecDeque<usize> =
            (0..records.len()).filter(|&i| waiting_on[i] == 0).collect();
        let mut restored = vec![false; records.len()];
        let mut refused = vec![false; records.len()];
        let mut failed = Vec::new();
        while let Some(i) = ready.pop_front() {
            let record = &records[i];
            match self.compile(&record.wasm, &record.host_modules) {
                Ok(module) => {
                    self.insert(
                        &record.name,
                        RegisteredModule {
                            module,
                            host_modules: record.host_modules.clone(),
                        },
                    );
                    restored[i] = true;
                    for &d in &dependents[i] {
                        waiting_on[d] -= 1;
                        if waiting_on[d] == 0 {
                            ready.push_back(d);
                        }
                    }
                }
                Err(e) => {
                    refused[i] = true;
                    failed.push((record.name.clone(), e));
                }
            }
        }
        // What is left waits on a module that failed, or on a cycle.
        for (i, record) in records.iter().enumerate() {
            if restored[i] || refused[i] {
                continue;
            }
            let missing: Vec<&str> = record
                .host_modules
                .iter()
                .filter(|h| index.get(h.as_str()).is_some_and(|&j| !restored[j]))
                .map(String::as_str)
                .collect();
            failed.push((
                record.name.clone(),
                NodeError::Invalid(format!(
                    "it links to {}, not restored (failed, or linking back to it)",
                    missing.join(", ")
                )),
            ));
        }
        failed
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, RegisteredModule>> {
        self.registered.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Instantiates `module` (and what it links to) in a fresh store and
    /// calls `function` with `params`.
    pub async fn call(
        &self,
        module: &RegisteredModule,
        function: &str,
        params: &[Value],
        timeout: Duration,
        memory: usize,
    ) -> Result<Vec<Value>, NodeError> {
        // Resolved before anything is instantiated: a chain too deep or too
        // wide is refused without spending a byte on it.
        let links = self.link_order(module)?;
        let mut store = Store::new(&self.engine, GuestLimiter::new(memory, self.flags));
        store.limiter(|l| l);
        let timeout = self.flags.guest_timeout(timeout);
        let call = engine::with_deadline(&mut store, timeout, self.flags.fuel).run(async {
            let instance = self.instantiate(&mut store, module, links).await?;
            let func = instance.get_func(&mut store, function).ok_or_else(|| {
                NodeError::NotFound(format!("the module exports no function `{function}`"))
            })?;
            let args = typed_params(&func, &store, function, params)?;
            let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
            func.call_async(&mut store, &args, &mut results)
                .await
                .map_err(|e| failure(e, function))?;
            results.iter().map(to_json).collect()
        });
        match call.await {
            Ok(result) => result,
            Err(timeout) => Err(NodeError::TimedOut(format!("`{function}` {timeout}"))),
        }
    }

    /// The modules `module` links to, transitively, each once, every one
    /// after the modules it links to (a depth-first walk with an explicit
    /// stack, so a chain of any length costs heap, not stack).
    fn link_order(
        &self,
        module: &RegisteredModule,
    ) -> Result<Vec<(String, RegisteredModule)>, NodeError> {
        enum Mark {
            /// On the current chain: meeting it again is a cycle.
            Linking,
            Linked,
        }
        struct Frame {
            name: Option<String>,
            module: RegisteredModule,
            next: usize,
        }
        let registered = self.read();
        let mut marks: HashMap<String, Mark> = HashMap::new();
        let mut order = Vec::new();
        let mut stack = vec![Frame {
            name: None,
            module: module.clone(),
            next: 0,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(link) = top.module.host_modules.get(top.next).cloned() else {
                let done = stack.pop();
                if let Some(Frame {
                    name: Some(name),
                    module,
                    ..
                }) = done
                {
                    marks.insert(name.clone(), Mark::Linked);
                    order.push((name, module));
                }
                continue;
            };
            top.next += 1;
            match marks.get(&link) {
                Some(Mark::Linked) => continue,
                Some(Mark::Linking) => {
                    return Err(NodeError::Invalid(format!(
                        "host module `{link}` imports itself through its host modules"
                    )))
                }
                None => {}
            }
            if stack.len() > MAX_LINK_DEPTH {
                return Err(NodeError::Invalid(format!(
                    "the chain of host_modules is deeper than {MAX_LINK_DEPTH} links (at `{link}`)"
                )));
            }
            if marks.len() >= MAX_LINKED_MODULES {
                return Err(NodeError::Invalid(format!(
                    "the call links more than {MAX_LINKED_MODULES} modules"
                )));
            }
            let dependency = registered
                .get(&link)
                .ok_or_else(|| NodeError::Invalid(format!("`{link}` is not a registered module")))?
                .clone();
            marks.insert(link.clone(), Mark::Linking);
            stack.push(Frame {
                name: Some(link),
                module: dependency,
                next: 0,
            });
        }
        Ok(order)
    }

    /// Instantiates `links` in order, then `module`, each linked to the
    /// instances of its host modules under their registered names.
    async fn instantiate(
        &self,
        store: &mut Store<GuestLimiter>,
        module: &RegisteredModule,
        links: Vec<(String, RegisteredModule)>,
    ) -> Result<Instance, NodeError> {
        let mut instances: HashMap<String, Instance> = HashMap::new();
        for (name, linked) in links {
            let instance = self.instantiate_one(store, &linked, &instances).await?;
            instances.insert(name, instance);
        }
        self.instantiate_one(store, module, &instances).await
    }

    async fn instantiate_one(
        &self,
        store: &mut Store<GuestLimiter>,
        module: &RegisteredModule,
        instances: &HashMap<String, Instance>,
    ) -> Result<Instance, NodeError> {
        let mut linker: Linker<GuestLimiter> = Linker::new(&self.engine);
        let mut linked = HashSet::new();
        for name in &module.host_modules {
            if !linked.insert(name) {
                continue;
            }
            let instance = instances.get(name).ok_or_else(|| {
                NodeError::Internal(format!("`{name}` was not instantiated before its user"))
            })?;
            linker.instance(&mut *store, name, *instance).map_err(|e| {
                NodeError::Internal(format!(
                    "cannot link `{name}`: {:#}",
                    anyhow::Error::from(e)
                ))
            })?;
        }
        linker
            .instantiate_async(&mut *store, &module.module)
            .await
            .map_err(|e| match engine::guest_failure(e) {
                GuestFailure::TimedOut(m) => NodeError::TimedOut(m),
                GuestFailure::Failed(m) => NodeError::Invalid(format!("cannot instantiate: {m}")),
            })
    }
}

/// The signature of `func`, as `name(i32, f64) -> (i32)`.
fn signature(func: &Func, store: &Store<GuestLimiter>, name: &str) -> String {
    func_signature(name, &func.ty(store))
}

/// A function type, as `name(i32, f64) -> (i32)`.
pub fn func_signature(name: &str, ty: &wasmtime::FuncType) -> String {
    let list = |types: &mut dyn Iterator<Item = ValType>| {
        types.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    };
    let params = list(&mut ty.params());
    let results = list(&mut ty.results());
    format!("{name}({params}) -> ({results})")
}

/// Converts JSON values to the export's parameter types.
fn typed_params(
    func: &Func,
    store: &Store<GuestLimiter>,
    name: &str,
    params: &[Value],
) -> Result<Vec<Val>, NodeError> {
    let ty = func.ty(store);
    let wrong = |why: String| {
        NodeError::Invalid(format!(
            "{why}; the signature is {}",
            signature(func, store, name)
        ))
    };
    if ty.params().len() != params.len() {
        return Err(wrong(format!(
            "{} parameters given, {} expected",
            params.len(),
            ty.params().len()
        )));
    }
    ty.params()
        .zip(params)
        .enumerate()
        .map(|(i, (ty, value))| {
            let bad = || wrong(format!("parameter {} is {value}, not an {ty}", i + 1));
            Ok(match ty {
                ValType::I32 => Val::I32(
                    value
                        .as_i64()
                        .and_then(|v| i32::try_from(v).ok())
                        .ok_or_else(bad)?,
                ),
                ValType::I64 => Val::I64(value.as_i64().ok_or_else(bad)?),
                ValType::F32 => Val::F32((value.as_f64().ok_or_else(bad)? as f32).to_bits()),
                ValType::F64 => Val::F64(value.as_f64().ok_or_else(bad)?.to_bits()),
                other => {
                    return Err(wrong(format!(
                        "parameter {} has type {other}, which JSON cannot give",
                        i + 1
                    )))
                }
            })
        })
        .collect()
}

fn to_json(value: &Val) -> Result<Value, NodeError> {
    Ok(match value {
        Val::I32(v) => Value::from(*v),
        Val::I64(v) => Value::from(*v),
        Val::F32(bits) => Value::from(f32::from_bits(*bits) as f64),
        Val::F64(bits) => Value::from(f64::from_bits(*bits)),
        _ => {
            return Err(NodeError::Invalid(
                "the function returns a reference or vector, which has no JSON form".into(),
            ))
        }
    })
}

fn failure(e: wasmtime::Error, function: &str) -> NodeError {
    match engine::guest_failure(e) {
        GuestFailure::TimedOut(m) => NodeError::TimedOut(format!("`{function}` {m}")),
        GuestFailure::Failed(m) => NodeError::Failed(format!("`{function}` failed: {m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module named `name` that imports `f` from each of `links`.
    fn record(name: &str, links: &[&str]) -> ModuleRecord {
        let imports: String = links
            .iter()
            .map(|l| format!("(import \"{l}\" \"f\" (func))"))
            .collect();
        ModuleRecord {
            name: name.to_string(),
            wasm: wat::parse_str(format!("(module {imports} (func (export \"f\")))"))
                .expect("valid WAT"),
            host_modules: links.iter().map(|l| l.to_string()).collect(),
        }
    }

    fn test_modules() -> Modules {
        let engine = Engine::default();
        let compiler = Arc::new(Compiler::new(&engine));
        Modules::new(engine, RuntimeFlags::default(), compiler)
    }

    fn names(failed: &[(String, NodeError)]) -> Vec<&str> {
        let mut names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn restore_follows_links_whatever_the_stored_order() {
        let modules = test_modules();
        // `a` links `b` links `c`, stored in name order; `x` and `y` link
        // each other; `z` links a module that is not stored.
        let failed = modules.restore(vec![
            record("a", &["b", "c"]),
            record("b", &["c"]),
            record("c", &[]),
            record("x", &["y"]),
            record("y", &["x"]),
            record("z", &["gone"]),
        ]);
        assert_eq!(names(&failed), ["x", "y", "z"]);
        for name in ["a", "b", "c"] {
            assert!(modules.get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn links_are_resolved_once_each_and_bounded_in_depth() {
        let modules = test_modules();
        let chain: Vec<ModuleRecord> = (0..=MAX_LINK_DEPTH + 1)
            .map(|i| {
                let next = format!("m{}", i + 1);
                let links: &[&str] = if i == MAX_LINK_DEPTH + 1 {
                    &[]
                } else {
                    &[&next]
                };
                record(&format!("m{i}"), links)
            })
            .collect();
        assert!(modules.restore(chain).is_empty());
        let head = modules.get("m0").expect("registered");
        let e = modules.link_order(&head).err().expect("too deep");
        assert!(e.to_string().contains("deeper than 16"), "{e}");
        // One link shorter is within the bound; every module comes after
        // the modules it links to.
        let within = modules.get("m1").expect("registered");
        let order: Vec<String> = modules
            .link_order(&within)
            .expect("within")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(order.len(), MAX_LINK_DEPTH);
        assert_eq!(order.first().map(String::as_str), Some("m17"));
        assert_eq!(order.last().map(String::as_str), Some("m2"));
        // A diamond's shared module, and a name listed twice, link once.
        assert!(modules
            .restore(vec![
                record("d", &[]),
                record("l", &["d"]),
                record("r", &["d", "d"]),
                record("top", &["l", "r", "l"]),
            ])
            .is_empty());
        let top = modules.get("top").expect("registered");
        let order = modules.link_order(&top).expect("links");
        let order: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(order, ["d", "l", "r"]);
    }

    #[test]
    fn a_module_others_link_to_is_not_removed() {
        let modules = test_modules();
        assert!(modules
            .restore(vec![record("base", &[]), record("user", &["base"])])
            .is_empty());
        let e = modules.remove("base").err().expect("refused");
        assert!(e.to_string().contains("linked by `user`"), "{e}");
        assert!(modules.remove("user").is_ok());
        assert!(modules.remove("base").is_ok());
        assert!(matches!(
            modules.remove("base"),
            Err(NodeError::NotFound(_))
        ));
    }
}
