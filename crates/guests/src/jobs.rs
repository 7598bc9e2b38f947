//! WASI command jobs (the "WASM system" job API): a `wasm32-wasip1` core
//! module exporting `run` or `_start`, or a wasip2 command component, gets
//! its input as one JSON line on stdin and must write one JSON object,
//! `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`, to stdout.
//! No network, no filesystem, no host environment; a core module may read
//! the node's chains through the `wasmatic:eth` import ([`wasmatic_chain::core`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Linker, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use wasmatic_api::NodeError;
use wasmatic_chain::files::WorkDir;
use wasmatic_chain::Chains;
use wasmatic_chain::RunRpc;
use wasmatic_sandbox::cache::ByteCache;
use wasmatic_sandbox::compile::{CompileError, Compiler};
use wasmatic_sandbox::engine::GuestEngines;
use wasmatic_sandbox::engine::{self, GuestFailure, WasmKind};
use wasmatic_sandbox::flags::RuntimeFlags;
use wasmatic_sandbox::limits::GuestLimiter;
use wasmatic_sandbox::output::{CapturedOutput, StreamOf};

/// Longest a job may run, whatever it asks for.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a job's stdout, and of its stderr, the node keeps at most,
/// whatever `maxStdoutBytes`/`maxStderrBytes` ask: the client chooses within
/// the node's bound, not the bound. Larger asks are lowered silently (the
/// truncation note in `stderr`, or the error for stdout, names the bound that
/// applied), so that a client asking for 1.5 GB gets what the node gives
/// rather than a refusal it cannot act on.
pub const MAX_JOB_OUTPUT: usize = 4 << 20;
/// Bytes of WebAssembly of the jobs run lately, kept for `wasmHash`-only
/// requests. Their compiled code is the compiler's to keep (one cache for
/// the node's compiled code, bounded in bytes).
const RECENT_JOB_BYTES: usize = 64 << 20;

pub struct JobRequest {
    pub job_id: String,
    pub wasm: Option<Vec<u8>>,
    pub wasm_hash: Option<String>,
    pub timeout: Duration,
    pub input: String,
    pub max_stdout: usize,
    pub max_stderr: usize,
    /// The chain its RPC calls go to unless they name one (default: the
    /// node's only chain, else 1).
    pub chain_id: Option<u64>,
}

pub struct JobResult {
    pub job_id: String,
    pub ok: bool,
    /// The JSON text of the job's `result`, when `ok`.
    pub result: Option<String>,
    pub error: Option<String>,
    pub stderr: String,
    pub duration_ms: u64,
}

/// The store data of a component job.
struct ComponentJob {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
}

impl WasiView for ComponentJob {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The store data of a core-module job.
struct ModuleJob {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
    rpc: RunRpc,
    chain: u64,
}

impl wasmatic_chain::core::HasRpc for ModuleJob {
    fn rpc(&mut self) -> &mut RunRpc {
        &mut self.rpc
    }

    fn default_chain(&self) -> u64 {
        self.chain
    }
}

enum Compiled {
    Component(CommandPre<ComponentJob>),
    Module(wasmtime::InstancePre<ModuleJob>),
}

pub struct Jobs {
    engine: Engine,
    flags: RuntimeFlags,
    /// The chains a job may call through its work directory.
    chains: Arc<Chains>,
    compiler: Arc<Compiler>,
    /// What a job gets, linked once: WASI (and, for a core module, the
    /// chain import).
    module_linker: Linker<ModuleJob>,
    component_linker: wasmtime::component::Linker<ComponentJob>,
    /// The bytes of jobs run lately, by hash.
    recent: Mutex<ByteCache<Arc<[u8]>>>,
    /// Jobs kept by hash for good (the ones workflows name).
    kept: Mutex<std::collections::HashMap<String, Arc<[u8]>>>,
}

impl Jobs {
    pub fn new(
        engines: &GuestEngines,
        compiler: Arc<Compiler>,
        chains: Arc<Chains>,
    ) -> anyhow::Result<Self> {
        let engine = engines.sync.clone();
        let mut module_linker: Linker<ModuleJob> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |job| &mut job.wasi)?;
        wasmatic_chain::core::add_to_linker(&mut module_linker)?;
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)?;
        Ok(Jobs {
            compiler,
            engine,
            flags: engines.flags,
            chains,
            module_linker,
            component_linker,
            recent: Mutex::new(ByteCache::new(RECENT_JOB_BYTES)),
            kept: Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByteCache<Arc<[u8]>>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_kept(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<[u8]>>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes of job `hash`, if it ran lately or is kept.
    pub fn bytes_of(&self, hash: &str) -> Option<Arc<[u8]>> {
        let hash = hash.to_ascii_lowercase();
        if let Some(bytes) = self.lock().get(&hash) {
            return Some(bytes);
        }
        self.lock_kept().get(&hash).cloned()
    }

    /// Whether a request naming only `hash` can run.
    pub fn knows(&self, hash: &str) -> bool {
        self.bytes_of(hash).is_some()
    }

    /// Keeps job `hash` runnable by hash whatever the cache drops.
    pub fn keep(&self, hash: &str, bytes: Arc<[u8]>) {
        self.lock_kept().insert(hash.to_ascii_lowercase(), bytes);
    }

    /// The job's code: its bytes sent now, or those of an earlier job by
    /// hash; compiled, or found compiled, by the node's compiler.
    async fn compiled(&self, request: &JobRequest) -> Result<Compiled, NodeError> {
        let wanted = request
            .wasm_hash
            .as_ref()
            .map(|h| h.trim().to_ascii_lowercase());
        let (digest, bytes) = match &request.wasm {
            None => {
                let hash = wanted.ok_or_else(|| {
                    NodeError::Invalid("send wasmB64, or the wasmHash of an earlier job".into())
                })?;
                let bytes = self.bytes_of(&hash).ok_or_else(|| {
                    NodeError::NotFound(format!(
                        "no job with wasmHash {hash} is cached; send wasmB64 once"
                    ))
                })?;
                (hash, bytes)
            }
            Some(wasm) => {
                let digest = hex::encode(Sha256::digest(wasm));
                if let Some(hash) = wanted {
                    if hash != digest {
                        return Err(NodeError::Invalid(format!(
                            "wasmHash is {hash}, but the sha256 of wasmB64 is {digest}"
                        )));
                    }
                }
                let bytes = match self.bytes_of(&digest) {
                    Some(bytes) => bytes,
                    None => Arc::from(wasm.as_slice()),
                };
                (digest, bytes)
            }
        };
        let compiled = self.compile(&digest, &bytes).await?;
        // Only a job that compiled is kept for a later `wasmHash`.
        self.lock().insert(digest, bytes.clone(), bytes.len());
        Ok(compiled)
    }

    async fn compile(&self, digest: &str, wasm: &Arc<[u8]>) -> Result<Compiled, NodeError> {
        let invalid = |what: &str, e: wasmtime::Error| {
            NodeError::Invalid(format!("{what}: {:#}", anyhow::Error::from(e)))
        };
        let compiled = |e: CompileError| match e {
            CompileError::Invalid(m) => NodeError::Invalid(m),
            CompileError::Internal(m) => NodeError::Internal(m),
        };
        match engine::wasm_kind(wasm) {
            WasmKind::CoreModule => {
                let module = self
                    .compiler
                    .module(digest.to_string(), wasm.clone())
                    .await
                    .map_err(compiled)?;
                if module.get_export("run").is_none() && module.get_export("_start").is_none() {
                    return Err(NodeError::Invalid(
                        "the module exports neither `run` nor `_start`".into(),
                    ));
                }
                let pre = self
                    .module_linker
                    .instantiate_pre(&module)
                    .map_err(|e| invalid("the module imports what a job does not get", e))?;
                Ok(Compiled::Module(pre))
            }
            WasmKind::Component => {
                let component = self
                    .compiler
                    .component(digest.to_string(), wasm.clone())
                    .await
                    .map_err(compiled)?;
                let pre = self
                    .component_linker
                    .instantiate_pre(&component)
                    .map_err(|e| invalid("the component imports what a job does not get", e))?;
                let pre = CommandPre::new(pre).map_err(|e| {
                    invalid("not a command component (it must export wasi:cli/run)", e)
                })?;
                Ok(Compiled::Component(pre))
            }
            _ => Err(NodeError::Invalid(
                "not WebAssembly (no `\\0asm` header)".into(),
            )),
        }
    }

    /// Runs one job; a job that fails is an answer with `ok: false`, a
    /// request the node cannot run is an error.
    pub async fn run(&self, request: JobRequest, memory: usize) -> Result<JobResult, NodeError> {
        let compiled = self.compiled(&request).await?;
        let timeout = self
            .flags
            .guest_timeout(request.timeout.min(MAX_JOB_TIMEOUT));
        let max_stdout = request.max_stdout.min(MAX_JOB_OUTPUT);
        let stdout = CapturedOutput::new(max_stdout);
        let stderr = CapturedOutput::new(request.max_stderr.min(MAX_JOB_OUTPUT));
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(format!("{}\n", request.input)))
            .stdout(StreamOf(stdout.clone()))
            .stderr(StreamOf(stderr.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        // On a node with chains, the job may use the file protocol: a
        // fresh work directory, removed when `work` drops after the job.
        let chains = self.chains.clone();
        let chain = request.chain_id.unwrap_or_else(|| chains.default_chain());
        let rpc = RunRpc::new(chains.clone());
        let work = if chains.ids().is_empty() {
            None
        } else {
            let work = WorkDir::start(rpc.clone(), chain).map_err(|e| {
                NodeError::Internal(format!("cannot create the job's work directory: {e}"))
            })?;
            wasi.preopened_dir(work.path(), ".", wasmtime_wasi::FsPerms::ReadWrite)
                .map_err(|e| {
                    NodeError::Internal(format!("cannot grant the job its work directory: {e:#}"))
                })?;
            for (name, value) in WorkDir::env() {
                wasi.env(name, value);
            }
            Some(work)
        };
        let started = Instant::now();
        let exit = match compiled {
            Compiled::Component(pre) => {
                let job = ComponentJob {
                    wasi: wasi.build(),
                    table: self.flags.resource_table(),
                    limiter: GuestLimiter::new(memory, self.flags),
                };
                let mut store = Store::new(&self.engine, job);
                store.limiter(|j| &mut j.limiter);
                let run = engine::with_deadline(&mut store, timeout, self.flags.fuel).run(async {
                    let command = pre.instantiate_async(&mut store).await?;
                    command.wasi_cli_run().call_run(&mut store).await
                });
                match guarded(run, work.as_ref()).await {
                    Err(overflow) => Err(overflow),
                    Ok(Ok(Ok(Ok(())))) => Ok(()),
                    Ok(Ok(Ok(Err(())))) => Err("the job's run returned an error".to_string()),
                    Ok(Ok(Err(e))) => Err(describe(e)),
                    Ok(Err(timeout)) => Err(timeout.to_string()),
                }
            }
            Compiled::Module(pre) => {
                let job = ModuleJob {
                    wasi: wasi.build_p1(),
                    limiter: GuestLimiter::new(memory, self.flags),
                    rpc,
                    chain,
                };
                let mut store = Store::new(&self.engine, job);
                store.limiter(|j| &mut j.limiter);
                let run = engine::with_deadline(&mut store, timeout, self.flags.fuel).run(async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let entry = match instance.get_typed_func::<(), ()>(&mut store, "run") {
                        Ok(run) => run,
                        Err(_) => instance.get_typed_func::<(), ()>(&mut store, "_start")?,
                    };
                    entry.call_async(&mut store, ()).await
                });
                match guarded(run, work.as_ref()).await {
                    Err(overflow) => Err(overflow),
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => match e.downcast_ref::<I32Exit>() {
                        Some(I32Exit(0)) => Ok(()),
                        Some(I32Exit(code)) => Err(format!("the job exited with code {code}")),
                        None => Err(describe(e)),
                    },
                    Ok(Err(timeout)) => Err(timeout.to_string()),
                }
            }
        };
        let (ok, result, error) = match exit {
            Ok(()) => verdict(&stdout, max_stdout),
            Err(why) => (false, None, Some(why)),
        };
        Ok(JobResult {
            job_id: request.job_id,
            ok,
            result,
            error,
            stderr: stderr.text(),
            duration_ms: {
                drop(work);
                started.elapsed().as_millis() as u64
            },
        })
    }
}

/// Runs `call` unless the job overfills its work directory first; then the
/// call is dropped, which stops the job where it is.
async fn guarded<F: std::future::Future>(
    call: F,
    work: Option<&WorkDir>,
) -> Result<F::Output, String> {
    let Some(work) = work else {
        return Ok(call.await);
    };
    tokio::select! {
        output = call => Ok(output),
        why = work.overflowed() => Err(why),
    }
}

fn describe(e: wasmtime::Error) -> String {
    match engine::guest_failure(e) {
        GuestFailure::TimedOut(m) => m,
        GuestFailure::Failed(m) => format!("the job failed: {m}"),
    }
}

/// Reads the job's answer from its stdout.
fn verdict(stdout: &CapturedOutput, max: usize) -> (bool, Option<String>, Option<String>) {
    if stdout.truncated() {
        return (
            false,
            None,
            Some(format!(
                "the job wrote more than maxStdoutBytes ({max}) to stdout"
            )),
        );
    }
    let text = stdout.text();
    let answer: Value = match serde_json::from_str(text.trim()) {
        Ok(answer) => answer,
        Err(e) => {
            let start: String = text.chars().take(80).collect();
            return (
                false,
                None,
                Some(format!("stdout is not one JSON object ({e}): {start:?}")),
            );
        }
    };
    match answer.get("ok").and_then(Value::as_bool) {
        Some(true) => {
            let result = answer.get("result").cloned().unwrap_or(Value::Null);
            (true, Some(result.to_string()), None)
        }
        Some(false) => {
            let error = match answer.get("error") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "the job failed without saying why".into(),
            };
            (false, None, Some(error))
        }
        None => (
            false,
            None,
            Some(format!("stdout has no boolean \"ok\": {answer}")),
        ),
    }
}
