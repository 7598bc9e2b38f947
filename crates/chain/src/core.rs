//! Chain RPC for core-module jobs (`POST /wasm/run` with a wasip1 module):
//! one core import, for modules written in the WASM system's shape (they
//! export `alloc`, `dealloc` and `run`, and `memory`).
//!
//! ```text
//! (import "wasmatic:eth" "call"
//!   (func (param $chain i64)
//!         (param $method_ptr i32) (param $method_len i32)
//!         (param $params_ptr i32) (param $params_len i32)
//!         (result i64)))
//! ```
//!
//! `method` and `params` are UTF-8 in the module's memory; `params` is a
//! JSON array (`[]`, or empty for none). `chain` 0 means the job's chain:
//! its request's `chainId`, else the node's only chain, else 1. The
//! answer is JSON, always one of
//!
//! ```text
//! {"ok": true, "result": …}
//! {"ok": false, "error": {"kind": "method-not-allowed", "message": "…"}}
//! ```
//!
//! (`kind` is one of the WIT's `rpc-error` cases; a `node-error` also
//! carries `code` and `data`). The host asks the module's own
//! `alloc(len) -> ptr` for room, writes the answer there and returns
//! `ptr << 32 | len`; the module frees it with its `dealloc(ptr, len)`. Going
//! through the guest's allocator means the host never writes where the
//! guest did not say it may. A module that does not export `alloc` or
//! `memory`, or whose `alloc` answers room outside its memory, traps.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use wasmtime::{Caller, Extern, Linker};

use super::{RpcError, RunRpc};
use wasmatic_sandbox::engine::WasmContext;

/// The import's module name.
pub const MODULE: &str = "wasmatic:eth";

/// Longest method name read from a guest.
const MAX_METHOD: u32 = 64;
/// Largest params read from a guest.
const MAX_PARAMS: u32 = super::methods::MAX_PARAMS as u32;

/// Store data that carries a run's RPC budget.
pub trait HasRpc {
    fn rpc(&mut self) -> &mut RunRpc;
    /// The chain a call naming chain 0 goes to.
    fn default_chain(&self) -> u64;
}

/// Adds `wasmatic:eth.call` to a core linker.
pub fn add_to_linker<T: HasRpc + Send + 'static>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    linker.func_wrap_async(
        MODULE,
        "call",
        |mut caller: Caller<'_, T>,
         (chain, method_ptr, method_len, params_ptr, params_len): (i64, i32, i32, i32, i32)| {
            Box::new(async move {
                call(&mut caller, chain, method_ptr, method_len, params_ptr, params_len)
                    .await
                    .map_err(wasmtime::Error::from_anyhow)
            })
        },
    )?;
    Ok(())
}

/// The import's work; an error traps the module.
async fn call<T: HasRpc + Send>(
    caller: &mut Caller<'_, T>,
    chain: i64,
    method_ptr: i32,
    method_len: i32,
    params_ptr: i32,
    params_len: i32,
) -> anyhow::Result<i64> {
    let method = read(caller, method_ptr, method_len, MAX_METHOD)?;
    let params = read(caller, params_ptr, params_len, MAX_PARAMS)?;
    let chain = match u64::try_from(chain) {
        Ok(0) => caller.data().default_chain(),
        Ok(chain) => chain,
        Err(_) => bail!("wasmatic:eth.call: chain {chain} is negative"),
    };
    let answer = match (method, params) {
        (Ok(method), Ok(params)) => {
            let rpc = caller.data_mut().rpc().clone();
            envelope(rpc.call(chain, &method, &params).await)
        }
        (Err(why), _) | (_, Err(why)) => envelope(Err(RpcError::InvalidParams(why))),
    };
    hand_back(caller, answer.to_string().as_bytes()).await
}

/// The answer the module reads.
fn envelope(result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(value) => json!({"ok": true, "result": value}),
        Err(e) => {
            let mut error = json!({"kind": kind(&e), "message": e.to_string()});
            if let RpcError::Node(node) = &e {
                error["code"] = json!(node.code);
                error["data"] = json!(node.data);
            }
            json!({"ok": false, "error": error})
        }
    }
}

fn kind(e: &RpcError) -> &'static str {
    match e {
        RpcError::UnknownChain(_) => "unknown-chain",
        RpcError::MethodNotAllowed(_) => "method-not-allowed",
        RpcError::InvalidParams(_) => "invalid-params",
        RpcError::Node(_) => "node-error",
        RpcError::Timeout => "timeout",
        RpcError::TooLarge(_) => "too-large",
        RpcError::TooManyCalls(_) => "too-many-calls",
        RpcError::Unavailable(_) => "unavailable",
    }
}

fn memory<T>(caller: &mut Caller<'_, T>) -> anyhow::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => bail!("wasmatic:eth.call needs the module to export its `memory`"),
    }
}

/// UTF-8 text of the guest's memory; the outer error traps (the guest
/// pointed outside its memory), the inner one is answered.
fn read<T>(
    caller: &mut Caller<'_, T>,
    ptr: i32,
    len: i32,
    max: u32,
) -> anyhow::Result<Result<String, String>> {
    let (ptr, len) = (ptr as u32 as usize, len as u32);
    if len > max {
        return Ok(Err(format!("an argument of {len} bytes; at most {max}")));
    }
    let memory = memory(caller)?;
    let bytes = memory
        .data(&*caller)
        .get(ptr..ptr + len as usize)
        .context("wasmatic:eth.call: an argument lies outside the module's memory")?;
    Ok(String::from_utf8(bytes.to_vec()).map_err(|_| "an argument is not UTF-8".to_string()))
}

/// Writes `bytes` into room from the guest's own `alloc`.
async fn hand_back<T: Send>(caller: &mut Caller<'_, T>, bytes: &[u8]) -> anyhow::Result<i64> {
    let alloc = match caller.get_export("alloc") {
        Some(Extern::Func(f)) => f
            .typed::<i32, i32>(&*caller)
            .wasm_context("the module's `alloc` must be (i32) -> i32")?,
        _ => bail!("wasmatic:eth.call hands its answer back through `alloc`, which the module does not export"),
    };
    let len = i32::try_from(bytes.len()).context("the answer is too large")?;
    let ptr = alloc
        .call_async(&mut *caller, len)
        .await
        .map_err(anyhow::Error::from)?;
    let memory = memory(caller)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .context("the module's `alloc` answered room outside its memory")?;
    Ok((i64::from(ptr as u32) << 32) | i64::from(len as u32))
}
