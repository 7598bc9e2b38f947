//! The operator's `Store` data, and the host interface
//! (`wasmatic:operator/host`) it imports: a thin translation between WIT and
//! [`Node`].

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::Engine;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::limits::GuestLimiter;
use crate::node::{Node, NodeError};
use crate::outbound::OutboundHooks;
use crate::registry::HandlerInfo;
use crate::scheduler::Job;
use crate::state::{HandlerSettings, RunRecord};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/operator",
        interfaces: "import wasmatic:operator/host@0.2.0;",
        imports: { default: async },
    });
}

use bindings::wasmatic::operator::host;
use bindings::wasmatic::operator::types;

/// The data of the operator's per-request `Store`.
pub struct OperatorState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    /// The node's outbound policy, applied to the operator's own requests.
    pub hooks: OutboundHooks,
    pub table: ResourceTable,
    pub limiter: GuestLimiter,
    /// `None` when no directory is mapped to the guest path `registered`:
    /// the operator is then a plain proxy and host calls fail.
    pub node: Option<Arc<Node>>,
}

impl WasiView for OperatorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for OperatorState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The operator's linker: WASI (all of it when `full_wasi`, else only what
/// `wasi:http/proxy` imports), `wasi:http` and the host interface.
pub fn linker(engine: &Engine, full_wasi: bool) -> anyhow::Result<Linker<OperatorState>> {
    let mut linker = Linker::new(engine);
    if full_wasi {
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    } else {
        wasmtime_wasi_http::p2::add_to_linker_async(&mut linker)?;
    }
    host::add_to_linker::<OperatorState, HasSelf<OperatorState>>(&mut linker, |s| s)?;
    Ok(linker)
}

impl OperatorState {
    fn node(&self) -> Result<Arc<Node>, types::Error> {
        self.node.clone().ok_or_else(|| {
            types::Error::Internal(
                "this node has no directory mapped to the guest path `registered`".into(),
            )
        })
    }
}

impl types::Host for OperatorState {}

impl host::Host for OperatorState {
    async fn check(
        &mut self,
        file: String,
        options: types::LoadOptions,
    ) -> Result<types::HandlerInfo, types::Error> {
        Ok(self.node()?.check(&file, options.into()).await?.into())
    }

    async fn load(
        &mut self,
        name: String,
        options: types::LoadOptions,
    ) -> Result<types::HandlerInfo, types::Error> {
        Ok(self.node()?.load(&name, options.into()).await?.into())
    }

    async fn unload(&mut self, name: String) -> Result<(), types::Error> {
        Ok(self.node()?.unload(&name).await?)
    }

    async fn handlers(&mut self) -> Vec<types::HandlerInfo> {
        match &self.node {
            Some(node) => node.handlers().into_iter().map(Into::into).collect(),
            None => Vec::new(),
        }
    }

    async fn handler(&mut self, name: String) -> Option<types::HandlerInfo> {
        self.node.as_ref()?.handler(&name).map(Into::into)
    }

    async fn invoke(&mut self, name: String, input: String) -> Result<String, types::Error> {
        Ok(self.node()?.invoke(&name, &input, None).await?)
    }

    async fn call(
        &mut self,
        name: String,
        export: String,
        args: String,
    ) -> Result<String, types::Error> {
        Ok(self.node()?.call_component(&name, &export, &args).await?)
    }

    async fn schedule(
        &mut self,
        name: String,
        cron: String,
        input: String,
    ) -> Result<types::Job, types::Error> {
        Ok(self.node()?.schedule(&name, &cron, &input).await?.into())
    }

    async fn unschedule(&mut self, id: String) -> Result<(), types::Error> {
        Ok(self.node()?.unschedule(&id).await?)
    }

    async fn jobs(&mut self) -> Vec<types::Job> {
        match &self.node {
            Some(node) => node.jobs().into_iter().map(Into::into).collect(),
            None => Vec::new(),
        }
    }

    async fn handler_runs(
        &mut self,
        name: String,
        limit: u32,
    ) -> Result<Vec<types::Run>, types::Error> {
        let runs = self.node()?.handler_runs(&name, limit).await?;
        Ok(runs.into_iter().map(Into::into).collect())
    }

    async fn register_module(
        &mut self,
        name: String,
        wasm: Vec<u8>,
        host_modules: Vec<String>,
    ) -> Result<types::ModuleInfo, types::Error> {
        Ok(self
            .node()?
            .register_module(&name, wasm, host_modules)
            .await?
            .into())
    }

    async fn run_module(
        &mut self,
        wasm: Vec<u8>,
        function: String,
        params: String,
        host_modules: Vec<String>,
    ) -> Result<String, types::Error> {
        Ok(self
            .node()?
            .run_module(&wasm, &function, &params, host_modules)
            .await?)
    }

    async fn call_module(
        &mut self,
        name: String,
        function: String,
        params: String,
    ) -> Result<String, types::Error> {
        Ok(self.node()?.call_module(&name, &function, &params).await?)
    }

    async fn run_job(&mut self, job: types::JobRequest) -> Result<types::JobResult, types::Error> {
        /// Bytes of stdout and of stderr a job may write unless it says.
        const DEFAULT_OUTPUT: u32 = 1 << 20;
        let request = crate::jobs::JobRequest {
            job_id: job.job_id,
            wasm: job.wasm,
            wasm_hash: job.wasm_hash,
            timeout: std::time::Duration::from_millis(u64::from(job.timeout_ms.max(1))),
            input: job.input,
            max_stdout: job.max_stdout_bytes.unwrap_or(DEFAULT_OUTPUT) as usize,
            max_stderr: job.max_stderr_bytes.unwrap_or(DEFAULT_OUTPUT) as usize,
        };
        let result = self.node()?.run_job(request).await?;
        Ok(types::JobResult {
            job_id: result.job_id,
            ok: result.ok,
            result: result.result,
            error: result.error,
            stderr: result.stderr,
            duration_ms: result.duration_ms,
        })
    }

    async fn job_runs(&mut self, id: String, limit: u32) -> Result<Vec<types::Run>, types::Error> {
        let runs = self.node()?.job_runs(&id, limit).await?;
        Ok(runs.into_iter().map(Into::into).collect())
    }
}

impl From<crate::node::ModuleInfo> for types::ModuleInfo {
    fn from(m: crate::node::ModuleInfo) -> Self {
        types::ModuleInfo {
            name: m.name,
            digest: m.digest,
            size: m.size,
            exports: m.exports,
        }
    }
}

impl From<types::LoadOptions> for HandlerSettings {
    fn from(options: types::LoadOptions) -> Self {
        HandlerSettings {
            allow: options.allow_outbound,
            config: options.config,
            reuse: options.reuse.unwrap_or(1),
        }
    }
}

impl From<NodeError> for types::Error {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotFound(m) => types::Error::NotFound(m),
            NodeError::Invalid(m) => types::Error::Invalid(m),
            NodeError::TooLarge(m) => types::Error::TooLarge(m),
            NodeError::Failed(m) => types::Error::Failed(m),
            NodeError::TimedOut(m) => types::Error::TimedOut(m),
            NodeError::Busy(m) => types::Error::Busy(m),
            NodeError::Internal(m) => types::Error::Internal(m),
        }
    }
}

impl From<HandlerInfo> for types::HandlerInfo {
    fn from(h: HandlerInfo) -> Self {
        types::HandlerInfo {
            name: h.name,
            digest: h.digest,
            size: h.size,
            loaded_at: h.loaded_at,
            allow_outbound: h.allow_outbound,
            kind: if h.is_handler {
                types::ComponentKind::Handler
            } else {
                types::ComponentKind::Component
            },
            exports: h
                .exports
                .into_iter()
                .map(|e| types::ExportInfo {
                    name: e.name,
                    signature: e.signature,
                })
                .collect(),
            config_keys: h.config_keys,
            reuse: h.reuse,
        }
    }
}

impl From<Job> for types::Job {
    fn from(j: Job) -> Self {
        types::Job {
            id: j.id,
            name: j.name,
            cron: j.cron,
            input: j.input,
            next: j.next,
            created_at: j.created_at,
        }
    }
}

impl From<RunRecord> for types::Run {
    fn from(r: RunRecord) -> Self {
        types::Run {
            name: r.name,
            function: r.function,
            job_id: r.job_id,
            scheduled_for: r.scheduled_for,
            started_at: r.started_at,
            duration_ms: r.duration_ms,
            ok: r.ok,
            output: r.output,
            error: r.error,
            stdout: r.stdout,
            stderr: r.stderr,
            audit: r
                .audit
                .into_iter()
                .map(|a| types::AuditEntry {
                    level: a.level,
                    message: a.message,
                })
                .collect(),
        }
    }
}
