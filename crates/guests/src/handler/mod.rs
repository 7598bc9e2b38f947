//! Running one call of a registered component: a fresh, sandboxed `Store`
//! per call, whether it runs a handler or calls an export by name.
//!
//! Guests get WASI with nothing of the host's (no preopens, no sockets, no
//! inherited stdio: stdout and stderr are captured into the run record,
//! truncated past a limit; the environment is their own configuration),
//! outgoing HTTP through the node's outbound policy, and the node's own
//! capabilities (`wasmatic:guest`: audit log, configuration; and
//! `wasmatic:eth/rpc`, in `eth`), under memory and time limits.

mod eth;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{
    ComponentExportIndex, HasSelf, Instance, InstancePre, Linker, ResourceTable, Val,
};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use crate::audit_log::AuditEntry;
use crate::audit_log::{log_safe, AuditLog};
use wasmatic_api::show_size;
use wasmatic_chain::{Chains, RunRpc};
use wasmatic_net::{Policy, Rule};
use wasmatic_sandbox::engine::{self, GuestFailure};
use wasmatic_sandbox::flags::RuntimeFlags;
use wasmatic_sandbox::limits::GuestLimiter;
use wasmatic_sandbox::outbound::OutboundHooks;
use wasmatic_sandbox::output::{CapturedOutput, StreamOf};
use wasmatic_sandbox::pool::WarmPool;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/handler",
        world: "wasmatic:handler/handler",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub(crate) use bindings::wasmatic::eth::rpc as eth_rpc;
use bindings::wasmatic::guest::{audit, config};
pub use bindings::HandlerIndices;

/// The data of a guest's `Store`.
pub struct HandlerState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    table: ResourceTable,
    limiter: GuestLimiter,
    guest: Arc<Guest>,
    /// What this call adds to the configuration: a scheduled run's tick.
    call_env: Vec<(String, String)>,
    audit: AuditLog,
    /// The call's RPC calls (`wasmatic:eth/rpc`), counted and listed.
    pub(crate) rpc: RunRpc,
}

/// Who a call runs as: the registered name and its configuration.
#[derive(Debug, Default)]
pub struct Guest {
    pub name: String,
    /// Sorted by key.
    pub config: Vec<(String, String)>,
}

/// A component compiled and linked, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    /// Ready to instantiate. A component that imports what the node does
    /// not define traps on those imports here: it runs only as composed
    /// with its links (`Registry::link`).
    pub pre: InstancePre<HandlerState>,
    /// Set when the component is of the handler world.
    pub handler: Option<HandlerIndices>,
    /// The functions it exports.
    pub exports: Vec<wasmatic_sandbox::values::ExportInfo>,
}

/// What a call runs.
pub enum Entry {
    /// The handler world's `handler(input)`.
    Handler(String),
    /// An exported function, with its arguments; `results` is how many
    /// values it returns.
    Export {
        index: ComponentExportIndex,
        args: Vec<Val>,
        results: usize,
    },
}

impl audit::Host for HandlerState {
    async fn log(&mut self, level: audit::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            audit::Level::Debug => "debug",
            audit::Level::Info => "info",
            audit::Level::Warn => "warn",
            audit::Level::Error => "error",
        };
        let name = &self.guest.name;
        // The node's log is read by people and parsed by tools: what a guest
        // writes to it must neither forge lines nor drive a terminal.
        let line = log_safe(&message);
        match level {
            "error" => tracing::error!(target: "wasmatic::audit", guest = %name, "{line}"),
            "warn" => tracing::warn!(target: "wasmatic::audit", guest = %name, "{line}"),
            "debug" => tracing::debug!(target: "wasmatic::audit", guest = %name, "{line}"),
            _ => tracing::info!(target: "wasmatic::audit", guest = %name, "{line}"),
        }
        self.audit.push(AuditEntry {
            level: level.to_string(),
            message,
        });
        Ok(())
    }
}

impl config::Host for HandlerState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .call_env
            .iter()
            .chain(&self.guest.config)
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        let mut all = self.call_env.clone();
        all.extend(self.guest.config.iter().cloned());
        all.sort();
        Ok(all)
    }
}

impl WasiView for HandlerState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HandlerState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The linker for registered components: every WASI 0.2 interface,
/// sandboxed, `wasi:http`, `wasmatic:guest` and `wasmatic:eth`. WASI is linked for every
/// 0.2.x version, so components built against older releases link too.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HandlerState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    audit::add_to_linker::<HandlerState, HasSelf<HandlerState>>(&mut linker, |s| s)?;
    config::add_to_linker::<HandlerState, HasSelf<HandlerState>>(&mut linker, |s| s)?;
    eth_rpc::add_to_linker::<HandlerState, HasSelf<HandlerState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// What a call may use.
#[derive(Clone)]
pub struct CallLimits {
    pub timeout: Duration,
    pub memory: usize,
    pub max_captured_output: usize,
    pub max_result: usize,
    pub policy: Arc<Policy>,
    /// The handler's own narrowing of the node's outbound policy.
    pub rules: Option<Arc<Vec<Rule>>>,
    /// The per-store limits of wasmtime's flags.
    pub flags: RuntimeFlags,
    /// The chains the guest may call (`wasmatic:eth/rpc`).
    pub chains: Arc<Chains>,
}

/// What one call produced. The result is the handler's output, or the JSON
/// text of an export's result.
pub struct CallOutcome {
    pub result: Result<String, CallError>,
    pub stdout: String,
    pub stderr: String,
    pub audit: Vec<AuditEntry>,
    /// The RPC calls the guest made, in order.
    pub rpc: Vec<wasmatic_chain::RpcCall>,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    TimedOut(String),
    #[error("{0}")]
    Failed(String),
}

impl CallOutcome {
    /// How the node's metrics count this call.
    pub fn metric(&self) -> wasmatic_metrics::Outcome {
        match &self.result {
            Ok(_) => wasmatic_metrics::Outcome::Ok,
            Err(CallError::TimedOut(_)) => wasmatic_metrics::Outcome::TimedOut,
            Err(CallError::Failed(_)) => wasmatic_metrics::Outcome::Failed,
        }
    }
}

/// An instance with its store, ready for a call: fresh, or one that served
/// calls before (for components registered with `reuse=N`).
pub struct Ready {
    store: Store<HandlerState>,
    /// Set once instantiated.
    instance: Option<Instance>,
    /// The handler world's exports of `instance`, once looked up.
    handler: Option<bindings::Handler>,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

/// Idle instances of one component; it keeps none unless it opted in to
/// reuse.
pub type InstancePool = WarmPool<Ready>;

/// A store for one call, or for the calls of one reused instance.
fn new_store(
    compiled: &Compiled,
    guest: Arc<Guest>,
    env: &[(&str, String)],
    limits: &CallLimits,
) -> Ready {
    let stdout = CapturedOutput::new(limits.max_captured_output);
    let stderr = CapturedOutput::new(limits.max_captured_output);
    let wasi = WasiCtxBuilder::new()
        .envs(&guest.config)
        .envs(env)
        .stdout(StreamOf(stdout.clone()))
        .stderr(StreamOf(stderr.clone()))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let mut store = Store::new(
        compiled.pre.engine(),
        HandlerState {
            wasi,
            http: limits.flags.http_ctx(),
            hooks: OutboundHooks {
                policy: limits.policy.clone(),
                handler_rules: limits.rules.clone(),
                stderr: Some(stderr.clone()),
            },
            table: limits.flags.resource_table(),
            limiter: GuestLimiter::new(limits.memory, limits.flags),
            guest,
            call_env: Vec::new(),
            audit: AuditLog::default(),
            rpc: RunRpc::new(limits.chains.clone()),
        },
    );
    store.limiter(|s| &mut s.limiter);
    Ready {
        store,
        instance: None,
        handler: None,
        stdout,
        stderr,
    }
}

/// Runs `entry` in a fresh instance, or in an idle one from `pool`. The
/// guest's environment is its configuration plus `env` (for a scheduled run,
/// its tick); a reused instance keeps the environment it started with, so
/// it reads `env` through `wasmatic:guest/config` instead.
pub async fn call(
    compiled: &Compiled,
    pool: &InstancePool,
    entry: Entry,
    guest: Arc<Guest>,
    env: &[(&str, String)],
    limits: &CallLimits,
) -> CallOutcome {
    let (mut ready, uses) = match pool.take() {
        Some(warm) => warm,
        None if pool.reuses() => (new_store(compiled, guest, &[], limits), 0),
        None => (new_store(compiled, guest, env, limits), 0),
    };
    ready.store.data_mut().call_env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let timeout = limits.flags.guest_timeout(limits.timeout);

    let start = Instant::now();
    let result = engine::with_deadline(&mut ready.store, timeout, limits.flags.fuel)
        .run(run_entry(&mut ready, compiled, entry))
        .await;
    let stderr = ready.stderr.take_text();
    let stdout = ready.stdout.take_text();
    let audit = std::mem::take(&mut ready.store.data_mut().audit).into_entries();
    let rpc = ready.store.data().rpc.take_calls();
    let duration = start.elapsed();
    // An instance that trapped or was stopped may be in any state: only one
    // whose guest returned is used again.
    let returned = matches!(result, Ok(Ok(_)));
    let result = match result {
        Ok(Ok(Ok(output))) if output.len() > limits.max_result => Err(CallError::Failed(format!(
            "returned {} bytes; a call may return at most {}",
            output.len(),
            show_size(limits.max_result as u64)
        ))),
        Ok(Ok(Ok(output))) => Ok(output),
        Ok(Ok(Err(unusable))) => Err(CallError::Failed(unusable)),
        Ok(Err(e)) => Err(describe_failure(e, &stderr)),
        Err(timeout) => Err(CallError::TimedOut(timeout.to_string())),
    };
    if returned && pool.reuses() && ready.store.data().limiter.may_idle() {
        pool.give_back(ready, uses + 1);
    }
    CallOutcome {
        result,
        stdout,
        stderr,
        audit,
        rpc,
        duration,
    }
}

/// Instantiates (unless the instance is reused) and runs `entry`. The inner
/// error is a result the guest gave that cannot be answered.
async fn run_entry(
    ready: &mut Ready,
    compiled: &Compiled,
    entry: Entry,
) -> wasmtime::Result<Result<String, String>> {
    let instance = match ready.instance {
        Some(instance) => instance,
        None => {
            let instance = compiled.pre.instantiate_async(&mut ready.store).await?;
            *ready.instance.insert(instance)
        }
    };
    match entry {
        Entry::Handler(input) => {
            let Some(indices) = &compiled.handler else {
                return Ok(Err("not a handler".to_string()));
            };
            let handler = match &ready.handler {
                Some(handler) => handler,
                None => ready
                    .handler
                    .insert(indices.load(&mut ready.store, &instance)?),
            };
            Ok(Ok(handler.call_handler(&mut ready.store, &input).await?))
        }
        Entry::Export {
            index,
            args,
            results,
        } => {
            let Some(func) = instance.get_func(&mut ready.store, index) else {
                return Ok(Err("the export is not a function".to_string()));
            };
            let mut values = vec![Val::Bool(false); results];
            func.call_async(&mut ready.store, &args, &mut values)
                .await?;
            Ok(match values.first() {
                None => Ok("null".to_string()),
                Some(value) => {
                    wasmatic_sandbox::values::to_json(value).map(|json| json.to_string())
                }
            })
        }
    }
}

/// Why a call failed, with what the guest said about it on stderr (a Rust
/// panic's message, say).
fn describe_failure(e: wasmtime::Error, stderr: &str) -> CallError {
    match engine::guest_failure(e) {
        GuestFailure::TimedOut(m) => CallError::TimedOut(m),
        GuestFailure::Failed(cause) => match last_words(stderr) {
            Some(words) => CallError::Failed(format!("{words} ({cause})")),
            None => CallError::Failed(cause),
        },
    }
}

/// The guest's last meaningful line on stderr: for a Rust panic, its message.
fn last_words(stderr: &str) -> Option<&str> {
    let noise = |l: &str| {
        l.is_empty()
            || l.starts_with("note: run with `RUST_BACKTRACE")
            || (l.starts_with("thread '") && l.contains("panicked at"))
            || l.starts_with(wasmatic_sandbox::output::TRUNCATED_MARK)
    };
    stderr.lines().map(str::trim).rfind(|l| !noise(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_words_of_a_rust_panic() {
        let stderr = "\nthread '<unnamed>' (1) panicked at src/lib.rs:39:23:\ngecko: request failed\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(last_words(stderr), Some("gecko: request failed"));
        assert_eq!(last_words("one\ntwo\n\n"), Some("two"));
        assert_eq!(last_words(""), None);
    }
}
