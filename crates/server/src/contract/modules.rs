//! `wasmatic:operator/modules`: core modules called by export name.

use super::bindings::wasmatic::operator::modules as wit;
use super::bindings::wasmatic::operator::types::Error;
use super::OperatorState;
use wasmatic_node::ModuleInfo;

impl wit::Host for OperatorState {
    async fn register(
        &mut self,
        name: String,
        wasm: Vec<u8>,
        host_modules: Vec<String>,
    ) -> Result<wit::ModuleInfo, Error> {
        Ok(self
            .node()?
            .components()
            .register_module(&name, wasm, host_modules)
            .await?
            .into())
    }

    async fn remove(&mut self, name: String) -> Result<(), Error> {
        Ok(self.node()?.components().remove_module(&name).await?)
    }

    async fn run(
        &mut self,
        wasm: Vec<u8>,
        function: String,
        params: String,
        host_modules: Vec<String>,
    ) -> Result<String, Error> {
        Ok(self
            .node()?
            .components()
            .run_module(&wasm, &function, &params, host_modules)
            .await?)
    }

    async fn call(
        &mut self,
        name: String,
        function: String,
        params: String,
    ) -> Result<String, Error> {
        Ok(self
            .node()?
            .components()
            .call_module(&name, &function, &params)
            .await?)
    }

    async fn exists(&mut self, name: String) -> bool {
        self.node()
            .is_ok_and(|node| node.components().module_exists(&name))
    }
}

impl From<ModuleInfo> for wit::ModuleInfo {
    fn from(m: ModuleInfo) -> Self {
        wit::ModuleInfo {
            name: m.name,
            digest: m.digest,
            size: m.size,
            exports: m.exports,
        }
    }
}
