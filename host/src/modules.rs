//! Plain core WebAssembly modules, called by export name with JSON values.
//!
//! A module may import functions of other registered modules by their name
//! (`host_modules`); those are instantiated first, in the same store,
//! recursively. Parameters are typed from the export's own signature: `2`
//! for an i32 or i64, `1.5` for an f32 or f64.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use sha2::{Digest, Sha256};
use std::time::Duration;

use serde_json::Value;
use wasmtime::{Engine, Func, Instance, Linker, Module, Store, Val, ValType};

use crate::engine::{self, GuestFailure, WasmKind};
use crate::error::NodeError;
use crate::limits::GuestLimiter;

/// A registered module: compiled, with the modules it links against.
#[derive(Clone)]
pub struct RegisteredModule {
    pub module: Module,
    pub host_modules: Vec<String>,
}

/// Compiled modules kept by digest: a client of `POST /` sends the same
/// module with every call.
const CACHED_MODULES: usize = 256;

pub struct Modules {
    engine: Engine,
    registered: RwLock<HashMap<String, RegisteredModule>>,
    compiled: Mutex<HashMap<String, Module>>,
}

impl Modules {
    pub fn new(engine: Engine) -> Self {
        Modules {
            engine,
            registered: RwLock::new(HashMap::new()),
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// Compiles `wasm` and checks that its imports can be linked.
    pub fn compile(&self, wasm: &[u8], host_modules: &[String]) -> Result<Module, NodeError> {
        if engine::wasm_kind(wasm) != WasmKind::CoreModule {
            return Err(NodeError::Invalid(
                "not a core WebAssembly module (no `\\0asm` version 1 header)".into(),
            ));
        }
        let digest = hex::encode(Sha256::digest(wasm));
        let cached = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        let module = match cached {
            Some(module) => module,
            None => {
                let module = Module::new(&self.engine, wasm).map_err(|e| {
                    NodeError::Invalid(format!("not a valid module: {:#}", anyhow::Error::from(e)))
                })?;
                let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
                if compiled.len() >= CACHED_MODULES {
                    compiled.clear();
                }
                compiled.insert(digest, module.clone());
                module
            }
        };
        let registered = self.read();
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
        Ok(module)
    }

    pub fn insert(&self, name: &str, module: RegisteredModule) {
        self.registered
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), module);
    }

    pub fn get(&self, name: &str) -> Option<RegisteredModule> {
        self.read().get(name).cloned()
    }

    /// Forgets module `name`.
    pub fn remove(&self, name: &str) {
        self.registered
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The registered modules that link to `name`, sorted.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, m)| m.host_modules.iter().any(|h| h == name))
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
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
        let mut store = Store::new(&self.engine, GuestLimiter::new(memory));
        store.limiter(|l| l);
        engine::set_deadline(&mut store, timeout);
        let call = async {
            let mut seen = HashSet::new();
            let instance = self.instantiate(&mut store, module, &mut seen).await?;
            let func = instance.get_func(&mut store, function).ok_or_else(|| {
                NodeError::NotFound(format!("the module exports no function `{function}`"))
            })?;
            let args = typed_params(&func, &store, function, params)?;
            let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
            func.call_async(&mut store, &args, &mut results)
                .await
                .map_err(|e| failure(e, function))?;
            results.iter().map(to_json).collect()
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(NodeError::TimedOut(format!(
                "`{function}` {}",
                engine::Timeout(timeout)
            ))),
        }
    }

    /// Instantiates `module` after the modules it imports from, each linked
    /// under its registered name.
    fn instantiate<'a>(
        &'a self,
        store: &'a mut Store<GuestLimiter>,
        module: &'a RegisteredModule,
        seen: &'a mut HashSet<String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Instance, NodeError>> + Send + 'a>>
    {
        Box::pin(async move {
            let mut linker: Linker<GuestLimiter> = Linker::new(&self.engine);
            for name in &module.host_modules {
                // `seen` is the chain of modules being linked: a name on it
                // again is a cycle.
                if !seen.insert(name.clone()) {
                    return Err(NodeError::Invalid(format!(
                        "host module `{name}` imports itself through its host modules"
                    )));
                }
                let dependency = self.get(name).ok_or_else(|| {
                    NodeError::Invalid(format!("`{name}` is not a registered module"))
                })?;
                let instance = self.instantiate(store, &dependency, seen).await?;
                seen.remove(name);
                linker.instance(&mut *store, name, instance).map_err(|e| {
                    NodeError::Internal(format!(
                        "cannot link `{name}`: {:#}",
                        anyhow::Error::from(e)
                    ))
                })?;
            }
            linker
                .instantiate_async(&mut *store, &module.module)
                .await
                .map_err(|e| {
                    NodeError::Invalid(format!("cannot instantiate: {:#}", anyhow::Error::from(e)))
                })
        })
    }
}

/// The signature of `func`, as `name(i32, f64) -> i32`.
fn signature(func: &Func, store: &Store<GuestLimiter>, name: &str) -> String {
    let ty = func.ty(store);
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
