//! Running one handler call: a fresh, sandboxed `Store` per call.
//!
//! Handlers get WASI with nothing of the host's (no preopens, no environment,
//! no sockets, no inherited stdio: stdout and stderr are captured into the
//! run record, truncated past a limit) and outgoing HTTP through the node's
//! outbound policy, under memory and time limits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::engine::{self, GuestFailure, Timeout};
use crate::limits::{show_size, GuestLimiter};
use crate::outbound::{OutboundHooks, Policy, Rule};

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

/// The data of a handler's `Store`.
pub struct HandlerState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    table: ResourceTable,
    limiter: GuestLimiter,
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

/// The linker for handlers: every WASI 0.2 interface, sandboxed, plus
/// `wasi:http`. Interfaces are linked for every 0.2.x version, so components
/// built against older WASI 0.2 releases link too.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HandlerState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
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
    Failed(String),
}

/// Instantiates the handler in a fresh store and calls `handler(input)`.
/// `env` is all the environment it sees (for a scheduled run, its tick).
pub async fn call(
    pre: &HandlerPre<HandlerState>,
    input: &str,
    env: &[(&str, String)],
    limits: &CallLimits,
) -> CallOutcome {
    let stdout = CapturedOutput::new(limits.max_captured_output);
    let stderr = CapturedOutput::new(limits.max_captured_output);
    let wasi = WasiCtxBuilder::new()
        .envs(env)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let mut store = Store::new(
        pre.engine(),
        HandlerState {
            wasi,
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                policy: limits.policy.clone(),
                handler_rules: limits.rules.clone(),
                stderr: stderr.clone(),
            },
            table: ResourceTable::new(),
            limiter: GuestLimiter::new(limits.memory),
        },
    );
    store.limiter(|s| &mut s.limiter);
    engine::set_deadline(&mut store, limits.timeout);

    let start = Instant::now();
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.call_handler(&mut store, input).await
    };
    // The epoch deadline stops a guest that computes; this one stops a guest
    // that waits (on a slow server, say).
    let result = tokio::time::timeout(limits.timeout, call).await;
    let stderr = stderr.text();
    let result = match result {
        Ok(Ok(output)) if output.len() > limits.max_result => Err(CallError::Failed(format!(
            "returned {} bytes; a handler may return at most {}",
            output.len(),
            show_size(limits.max_result as u64)
        ))),
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(describe_failure(e, &stderr)),
        Err(_) => Err(CallError::TimedOut(Timeout(limits.timeout).to_string())),
    };
    CallOutcome {
        result,
        stdout: stdout.text(),
        stderr,
        duration: start.elapsed(),
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
            || l.starts_with(TRUNCATED_MARK)
    };
    stderr.lines().map(str::trim).rfind(|l| !noise(l))
}

const TRUNCATED_MARK: &str = "[wasmatic: output truncated";

/// A guest's stdout or stderr: keeps the first `limit` bytes, counts the
/// rest and accepts all of it, so that a chatty guest is neither stopped nor
/// able to exhaust the host's memory.
#[derive(Clone)]
pub struct CapturedOutput(Arc<Mutex<Captured>>);

struct Captured {
    kept: Vec<u8>,
    dropped: u64,
    limit: usize,
}

impl CapturedOutput {
    pub fn new(limit: usize) -> Self {
        CapturedOutput(Arc::new(Mutex::new(Captured {
            kept: Vec::new(),
            dropped: 0,
            limit,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, bytes: &[u8]) {
        let mut c = self.lock();
        let room = c.limit.saturating_sub(c.kept.len());
        let (keep, drop) = bytes.split_at(room.min(bytes.len()));
        c.kept.extend_from_slice(keep);
        c.dropped += drop.len() as u64;
    }

    /// Adds a line of the host's own (an outbound refusal, say).
    pub fn write_line(&self, line: &str) {
        self.push(format!("{line}\n").as_bytes());
    }

    /// Whether anything was dropped.
    pub fn truncated(&self) -> bool {
        self.lock().dropped > 0
    }

    /// What was kept, with a last line saying how much was not.
    pub fn text(&self) -> String {
        let c = self.lock();
        let mut text = String::from_utf8_lossy(&c.kept).into_owned();
        if c.dropped > 0 {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "{TRUNCATED_MARK} after {}: {} more bytes dropped]\n",
                show_size(c.limit as u64),
                c.dropped
            ));
        }
        text
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
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

    #[test]
    fn captured_output_keeps_the_first_bytes_and_says_what_it_dropped() {
        let out = CapturedOutput::new(8);
        out.push(b"hello, ");
        out.push(b"world");
        assert_eq!(
            out.text(),
            "hello, w\n[wasmatic: output truncated after 8 bytes: 4 more bytes dropped]\n"
        );
        let quiet = CapturedOutput::new(8);
        quiet.push(b"hi");
        assert_eq!(quiet.text(), "hi");
    }
}
