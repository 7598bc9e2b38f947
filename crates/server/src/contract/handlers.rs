//! `wasmatic:operator/handlers`: registered components.

use super::bindings::wasmatic::operator::handlers as wit;
use super::bindings::wasmatic::operator::types::Error;
use super::OperatorState;
use wasmatic_guests::registry::HandlerInfo;
use wasmatic_node::FileKind;
use wasmatic_sandbox::values::ExportInfo;
use wasmatic_state::{HandlerSettings, Link};

impl wit::Host for OperatorState {
    async fn stage(
        &mut self,
        file: String,
        options: wit::LoadOptions,
    ) -> Result<wit::HandlerInfo, Error> {
        Ok(self
            .node()?
            .components()
            .stage(&file, options.into())
            .await?
            .into())
    }

    async fn stage_bytes(
        &mut self,
        wasm: Vec<u8>,
        options: wit::LoadOptions,
    ) -> Result<wit::HandlerInfo, Error> {
        Ok(self
            .node()?
            .components()
            .stage_bytes(wasm, options.into())
            .await?
            .into())
    }

    async fn commit(
        &mut self,
        name: String,
        digest: String,
        options: wit::LoadOptions,
    ) -> Result<wit::HandlerInfo, Error> {
        Ok(self
            .node()?
            .components()
            .commit(&name, &digest, options.into())
            .await?
            .into())
    }

    async fn register(
        &mut self,
        name: String,
        wasm: Vec<u8>,
        options: wit::LoadOptions,
    ) -> Result<wit::HandlerInfo, Error> {
        Ok(self
            .node()?
            .components()
            .register(&name, wasm, options.into())
            .await?
            .into())
    }

    async fn remove(&mut self, name: String) -> Result<(), Error> {
        Ok(self.node()?.components().remove(&name).await?)
    }

    async fn list(&mut self) -> Vec<wit::HandlerInfo> {
        match &self.node {
            Some(node) => node
                .components()
                .handlers()
                .into_iter()
                .map(Into::into)
                .collect(),
            None => Vec::new(),
        }
    }

    async fn get(&mut self, name: String) -> Option<wit::HandlerInfo> {
        self.node
            .as_ref()?
            .components()
            .handler(&name)
            .map(Into::into)
    }

    async fn invoke(&mut self, name: String, input: String) -> Result<String, Error> {
        Ok(self.node()?.components().invoke(&name, &input).await?)
    }

    async fn inspect(&mut self, wasm: Vec<u8>) -> Result<wit::Inspection, Error> {
        let found = self.node()?.components().inspect(wasm).await?;
        Ok(wit::Inspection {
            kind: match found.kind {
                FileKind::Module => wit::FileKind::Module,
                FileKind::Job => wit::FileKind::Job,
                FileKind::Handler => wit::FileKind::Handler,
                FileKind::Component => wit::FileKind::Component,
                FileKind::Command => wit::FileKind::Command,
            },
            exports: found.exports.into_iter().map(export_info).collect(),
            imports: found.imports,
        })
    }

    async fn call(
        &mut self,
        name: String,
        function: String,
        args: String,
    ) -> Result<String, Error> {
        Ok(self
            .node()?
            .components()
            .call_component(&name, &function, &args)
            .await?)
    }
}

impl From<wit::LoadOptions> for HandlerSettings {
    fn from(options: wit::LoadOptions) -> Self {
        HandlerSettings {
            allow: options.allow_outbound,
            config: options.config,
            reuse: options.reuse.unwrap_or(1),
            links: options
                .links
                .into_iter()
                .map(|l| Link {
                    interface: l.interface,
                    provider: l.provider,
                })
                .collect(),
        }
    }
}

impl From<HandlerInfo> for wit::HandlerInfo {
    fn from(h: HandlerInfo) -> Self {
        wit::HandlerInfo {
            name: h.name,
            digest: h.digest,
            size: h.size,
            loaded_at: h.loaded_at,
            allow_outbound: h.allow_outbound,
            kind: if h.is_handler {
                wit::ComponentKind::Handler
            } else {
                wit::ComponentKind::Component
            },
            exports: h.exports.into_iter().map(export_info).collect(),
            config_keys: h.config_keys,
            reuse: h.reuse,
            links: h
                .links
                .into_iter()
                .map(|l| wit::Link {
                    interface: l.interface,
                    provider: l.provider,
                })
                .collect(),
        }
    }
}

fn export_info(e: ExportInfo) -> wit::ExportInfo {
    wit::ExportInfo {
        name: e.name,
        signature: e.signature,
    }
}
