//! What a file is, before anyone registers it: a core module to call by
//! export name, a WASI command job, a handler, or a component of another
//! world, with what it exports and imports. A console shows this when a
//! person picks a `.wasm`, so that it can offer the right form and the right
//! route; nothing is registered, staged or written to `registered/`. The
//! compiled code lands in the compile caches by digest like any other,
//! which makes a registration that follows quicker.

use wasmtime::component::types::ComponentItem;
use wasmtime::ExternType;

use super::Components;
use wasmatic_api::NodeError;
use wasmatic_guests::modules::func_signature;
use wasmatic_sandbox::engine::{self, WasmKind};
use wasmatic_sandbox::values::ExportInfo;

/// Module names of WASI preview 1: a core module importing them is a job.
const WASI_P1_MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// The interface a WASI command component exports.
const CLI_RUN: &str = "wasi:cli/run@";

/// What kind of file it is, which decides how it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A core module: its exports are called with `POST /` (or by name once
    /// registered), parameters typed from its own signature.
    Module,
    /// A WASI preview 1 command (core module): `POST /wasm/run`.
    Job,
    /// A component of the handler world: registered, then run.
    Handler,
    /// A component of any other world: registered, then its exports called.
    Component,
    /// A WASI command component (it exports `wasi:cli/run`): `POST /wasm/run`.
    Command,
}

/// What [`Components::inspect`](super::Components::inspect) finds.
#[derive(Clone, Debug)]
pub struct Inspection {
    pub kind: FileKind,
    /// Every exported function with its signature: WIT for a component,
    /// core types (`add(i32, i32) -> (i32)`) for a module.
    pub exports: Vec<ExportInfo>,
    /// What it imports: `module.name` for a core module, interface names
    /// for a component.
    pub imports: Vec<String>,
}

impl Components {
    /// Validates and compiles `wasm` and says what it is, keeping nothing
    /// but the compiled code in the caches.
    pub async fn inspect(&self, wasm: Vec<u8>) -> Result<Inspection, NodeError> {
        match engine::wasm_kind(&wasm) {
            WasmKind::CoreModule => self.inspect_module(&wasm),
            WasmKind::Component => self.inspect_component(wasm).await,
            WasmKind::NotBinary => Err(NodeError::Invalid(
                "not a WebAssembly binary (no `\\0asm` header)".into(),
            )),
        }
    }

    fn inspect_module(&self, wasm: &[u8]) -> Result<Inspection, NodeError> {
        if wasm.len() as u64 > self.core.limits.max_handler_size {
            return Err(NodeError::TooLarge(format!(
                "the module has {} bytes; at most {} may be inspected",
                wasm.len(),
                wasmatic_api::show_size(self.core.limits.max_handler_size)
            )));
        }
        let module = self.core.modules.compile_only(wasm)?;
        let exports = module
            .exports()
            .filter_map(|e| match e.ty() {
                ExternType::Func(ty) => Some(ExportInfo {
                    name: e.name().to_string(),
                    signature: func_signature(e.name(), &ty),
                }),
                _ => None,
            })
            .collect::<Vec<_>>();
        let imports: Vec<String> = module
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        let wasi = module
            .imports()
            .any(|i| WASI_P1_MODULES.contains(&i.module()));
        let command = module.get_export("_start").is_some();
        Ok(Inspection {
            kind: if wasi || command {
                FileKind::Job
            } else {
                FileKind::Module
            },
            exports,
            imports,
        })
    }

    async fn inspect_component(&self, wasm: Vec<u8>) -> Result<Inspection, NodeError> {
        let staged = self.core.registry.compile_bytes(wasm).await?;
        let component = staged.compiled.pre.component();
        let engine = component.engine();
        let ty = component.component_type();
        let command = ty.exports(engine).any(|(name, item)| {
            name.starts_with(CLI_RUN) && matches!(item.ty, ComponentItem::ComponentInstance(_))
        });
        let kind = if staged.compiled.handler.is_some() {
            FileKind::Handler
        } else if command {
            FileKind::Command
        } else {
            FileKind::Component
        };
        Ok(Inspection {
            kind,
            exports: staged.compiled.exports.clone(),
            imports: ty
                .imports(engine)
                .map(|(name, _)| name.to_string())
                .collect(),
        })
    }
}
