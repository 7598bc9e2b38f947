//! Core modules (called by export name) and WASI command jobs: guests
//! sent with the request or kept by name, whose calls are not recorded as
//! runs.

use sha2::{Digest, Sha256};

use super::Components;
use crate::blocking;
use wasmatic_api::NodeError;
use wasmatic_guests::jobs::{JobRequest, JobResult};
use wasmatic_guests::modules::RegisteredModule;

/// A registered core module.
#[derive(Clone, Debug)]
pub struct ModuleInfo {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub exports: Vec<String>,
}

impl Components {
    /// Loads every stored module, each after the modules it links against.
    pub(crate) fn restore_modules(&self) -> anyhow::Result<()> {
        for (name, e) in self.core.modules.restore(self.core.state.modules()?) {
            tracing::error!(name, "module not restored: {e}");
        }
        Ok(())
    }

    /// Registers a core module under `name`, for `host_modules` lists and
    /// calls by name.
    pub async fn register_module(
        &self,
        name: &str,
        wasm: Vec<u8>,
        host_modules: Vec<String>,
    ) -> Result<ModuleInfo, NodeError> {
        if !wasmatic_api::is_valid_name(name) {
            return Err(NodeError::Invalid(format!(
                "`{name}` is not a module name: {}",
                wasmatic_api::NAME_RULE
            )));
        }
        if wasm.len() as u64 > self.core.limits.max_handler_size {
            return Err(NodeError::TooLarge(format!(
                "the module has {} bytes",
                wasm.len()
            )));
        }
        let _changes = self.core.changes.lock().await;
        if self.core.registry.get(name).is_some() {
            return Err(NodeError::Conflict(format!(
                "`{name}` is a registered component; remove it (DELETE /handlers/{name}) or choose another name"
            )));
        }
        let module = self.core.modules.compile(&wasm, &host_modules)?;
        let exports = module.exports().map(|e| e.name().to_string()).collect();
        let info = ModuleInfo {
            name: name.to_string(),
            digest: hex::encode(Sha256::digest(&wasm)),
            size: wasm.len() as u64,
            exports,
        };
        let state = self.core.state.clone();
        let (owned, links) = (name.to_string(), host_modules.clone());
        blocking(move || state.put_module(&owned, &wasm, &links)).await??;
        self.core.modules.insert(
            name,
            RegisteredModule {
                module,
                host_modules,
            },
        );
        tracing::info!(name, "module registered");
        Ok(info)
    }

    /// Runs a WASI command job.
    pub async fn run_job(&self, request: JobRequest) -> Result<JobResult, NodeError> {
        if request
            .wasm
            .as_ref()
            .is_some_and(|w| w.len() as u64 > self.core.limits.max_handler_size)
        {
            return Err(NodeError::TooLarge(
                "the job's module is larger than --max-handler-size".into(),
            ));
        }
        let _permit = self.core.client_slot()?;
        self.core
            .jobs
            .run(request, self.core.limits.handler_memory)
            .await
    }

    /// Compiles `wasm` and calls `function` with the JSON array `params`.
    pub async fn run_module(
        &self,
        wasm: &[u8],
        function: &str,
        params: &str,
        host_modules: Vec<String>,
    ) -> Result<String, NodeError> {
        if wasm.len() as u64 > self.core.limits.max_handler_size {
            return Err(NodeError::TooLarge(format!(
                "the module has {} bytes",
                wasm.len()
            )));
        }
        let module = self.core.modules.compile(wasm, &host_modules)?;
        self.call_registered(
            &RegisteredModule {
                module,
                host_modules,
            },
            function,
            params,
        )
        .await
    }

    /// Calls `function` of the registered module `name`.
    /// Whether a core module is registered under `name`.
    pub fn module_exists(&self, name: &str) -> bool {
        self.core.modules.get(name).is_some()
    }

    pub async fn call_module(
        &self,
        name: &str,
        function: &str,
        params: &str,
    ) -> Result<String, NodeError> {
        let module =
            self.core.modules.get(name).ok_or_else(|| {
                NodeError::NotFound(format!("no component or core module `{name}`"))
            })?;
        self.call_registered(&module, function, params).await
    }

    async fn call_registered(
        &self,
        module: &RegisteredModule,
        function: &str,
        params: &str,
    ) -> Result<String, NodeError> {
        let _permit = self.core.client_slot()?;
        let params = wasmatic_sandbox::values::parse_args(params).map_err(NodeError::Invalid)?;
        let results = self
            .core
            .modules
            .call(
                module,
                function,
                &params,
                self.core.limits.call_timeout,
                self.core.limits.handler_memory,
            )
            .await?;
        Ok(serde_json::Value::from(results).to_string())
    }

    /// Forgets module `name`; refused while another module links to it.
    pub async fn remove_module(&self, name: &str) -> Result<(), NodeError> {
        let _changes = self.core.changes.lock().await;
        let module = self.core.modules.remove(name)?;
        let state = self.core.state.clone();
        let owned = name.to_string();
        let removed = blocking(move || state.remove_module(&owned)).await;
        if let Err(e) = removed.and_then(|r| r.map_err(NodeError::from)) {
            // Not removed durably: not removed at all.
            self.core.modules.insert(name, module);
            return Err(e);
        }
        tracing::info!(name, "module removed");
        Ok(())
    }
}
