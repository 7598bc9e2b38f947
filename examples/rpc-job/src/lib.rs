//! A job for `POST /wasm/run` in the WASM system's shape: a wasip1 core
//! module exporting `run`, `alloc` and `dealloc`, reading one JSON line from
//! stdin and printing `{"ok": true, "result": …}` or `{"ok": false,
//! "error": …}`.
//!
//! Input: `{"method": "eth_…", "params": […], "chainId"?: N, "repeat"?: N}`
//! (no chain: the node's default; `repeat` makes the same call N times and
//! answers the last, for the benchmark). It makes that call through the node's
//! `wasmatic:eth.call` core import (ABI in the host's `chain/core.rs`): the
//! node writes its answer into memory the job's own `alloc` gives, and the
//! job frees it with `dealloc`.

use std::io::BufRead;

use serde_json::{json, Value};

#[link(wasm_import_module = "wasmatic:eth")]
extern "C" {
    /// Answers `ptr << 32 | len` of a JSON answer in memory from `alloc`.
    #[link_name = "call"]
    fn eth_call(
        chain: i64,
        method_ptr: *const u8,
        method_len: usize,
        params_ptr: *const u8,
        params_len: usize,
    ) -> i64;
}

/// Room for `len` bytes, for the node to write an answer into.
#[no_mangle]
pub extern "C" fn alloc(len: usize) -> *mut u8 {
    let mut buffer = Vec::<u8>::with_capacity(len.max(1));
    let ptr = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    ptr
}

/// Frees what `alloc` gave.
///
/// # Safety
/// `ptr` and `len` must be an answer of `alloc(len)` not freed before.
#[no_mangle]
pub unsafe extern "C" fn dealloc(ptr: *mut u8, len: usize) {
    drop(Vec::from_raw_parts(ptr, 0, len.max(1)));
}

/// One call to the node's chain RPC; answers its JSON envelope.
fn rpc(chain: u64, method: &str, params: &str) -> Value {
    // SAFETY: the node reads the two strings within their lengths and
    // answers room from `alloc` holding `len` bytes, which is freed here.
    let answer = unsafe {
        let packed = eth_call(
            chain as i64,
            method.as_ptr(),
            method.len(),
            params.as_ptr(),
            params.len(),
        ) as u64;
        let (ptr, len) = (
            (packed >> 32) as usize as *mut u8,
            (packed & 0xffff_ffff) as usize,
        );
        let bytes = std::slice::from_raw_parts(ptr, len).to_vec();
        dealloc(ptr, len);
        bytes
    };
    serde_json::from_slice(&answer).unwrap_or_else(
        |e| json!({"ok": false, "error": format!("the node's answer is not JSON: {e}")}),
    )
}

#[no_mangle]
pub extern "C" fn run() {
    let mut line = String::new();
    let answer = match std::io::stdin().lock().read_line(&mut line) {
        Err(e) => json!({"ok": false, "error": format!("cannot read stdin: {e}")}),
        Ok(_) => match serde_json::from_str::<Value>(&line) {
            Err(e) => json!({"ok": false, "error": format!("input is not JSON: {e}")}),
            Ok(input) => {
                let chain = input.get("chainId").and_then(Value::as_u64).unwrap_or(0);
                let method = input.get("method").and_then(Value::as_str).unwrap_or("");
                let params = input
                    .get("params")
                    .cloned()
                    .unwrap_or(json!([]))
                    .to_string();
                let repeat = input.get("repeat").and_then(Value::as_u64).unwrap_or(1);
                let mut answer = rpc(chain, method, &params);
                for _ in 1..repeat {
                    answer = rpc(chain, method, &params);
                }
                answer
            }
        },
    };
    println!("{answer}");
}
