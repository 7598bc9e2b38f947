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
    let result = tokio::time::timeout(timeout, call).await;
    let stdout = String::from_utf8_lossy(&stdout.contents()).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.contents()).into_owned();
    let result = match result {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(describe_failure(e, &stderr)),
        Err(_) => Err(CallError::TimedOut(Timeout(timeout).to_string())),
    };
    CallOutcome {
        result,
        stdout,
        stderr,
        duration: start.elapsed(),
    }
}

/// One line saying why a call failed: the trap, and what the guest said
/// about it on stderr (a Rust panic's message, say), not a wasm backtrace.
fn describe_failure(e: wasmtime::Error, stderr: &str) -> CallError {
    if let Some(timeout) = e.downcast_ref::<Timeout>() {
        return CallError::TimedOut(timeout.to_string());
    }
    let cause = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => anyhow::Error::from(e)
            .root_cause()
            .to_string()
            .lines()
            .next()
            .unwrap_or("unknown error")
            .to_string(),
    };
    match last_words(stderr) {
        Some(words) => CallError::Trapped(format!("{words} ({cause})")),
        None => CallError::Trapped(cause),
    }
}

/// The guest's last meaningful line on stderr: for a Rust panic, its message.
fn last_words(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .filter(|l| !(l.starts_with("thread '") && l.contains("panicked at")))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::last_words;

    #[test]
    fn last_words_of_a_rust_panic() {
        let stderr = "\nthread '<unnamed>' (1) panicked at src/lib.rs:39:23:\ngecko: request failed\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(last_words(stderr), Some("gecko: request failed"));
        assert_eq!(last_words("one\ntwo\n\n"), Some("two"));
        assert_eq!(last_words(""), None);
    }
}
