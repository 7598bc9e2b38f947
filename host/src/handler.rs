//! Running one handler call: a fresh, sandboxed `Store` per call.
//!
//! Handlers get WASI with nothing of the host's (no preopens, no environment,
//! no inherited stdio: stdout and stderr are captured into the run record)
//! and real outgoing HTTP.

use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::engine::{self, Timeout};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/handler",
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

pub use bindings::HandlerPre;

/// Bytes of stdout and of stderr kept per call.
pub const CAPTURED_OUTPUT_LIMIT: usize = 256 * 1024;

/// The data of a handler's `Store`.
pub struct HandlerState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
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
            hooks: Default::default(),
        }
    }
}

/// The linker for handlers: every WASI 0.2 interface, sandboxed, plus
/// `wasi:http`. Interfaces are linked for every 0.2.x version, so components
/// built against older WASI 0.2 releases link too.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HandlerState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// What one call produced.
pub struct CallOutcome {
    pub result: Result<String, CallError>,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    TimedOut(String),
    #[error("{0}")]
    Trapped(String),
}

/// Instantiates the handler in a fresh store and calls `handler(input)`,
/// stopping it after `timeout`.
pub async fn call(pre: &HandlerPre<HandlerState>, input: &str, timeout: Duration) -> CallOutcome {
    let stdout = MemoryOutputPipe::new(CAPTURED_OUTPUT_LIMIT);
    let stderr = MemoryOutputPipe::new(CAPTURED_OUTPUT_LIMIT);
    let wasi = WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .build();
    let mut store = Store::new(
        pre.engine(),
        HandlerState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        },
    );
    engine::set_deadline(&mut store, timeout);

    let start = Instant::now();
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.call_handler(&mut store, input).await
    };
    // The epoch deadline stops a guest that computes; this one stops a guest
    // that waits (on a slow server, say).
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(describe_trap(e)),
        Err(_) => Err(CallError::TimedOut(Timeout(timeout).to_string())),
    };
    CallOutcome {
        result,
        stdout: String::from_utf8_lossy(&stdout.contents()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.contents()).into_owned(),
        duration: start.elapsed(),
    }
}

fn describe_trap(e: wasmtime::Error) -> CallError {
    if let Some(timeout) = e.downcast_ref::<Timeout>() {
        return CallError::TimedOut(timeout.to_string());
    }
    let e = anyhow::Error::from(e);
    CallError::Trapped(format!("{e:#}"))
}
