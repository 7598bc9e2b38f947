//! Chain RPC for jobs (`POST /wasm/run`), against a real local chain
//! (anvil): core modules through the `wasmatic:eth.call` import, and jobs
//! written for the WASM system's file protocol, unchanged.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::anvil::{Anvil, DEV_ACCOUNT, RUNTIME_CODE};
use support::{up, Node};

fn wasip1(file: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm32-wasip1/release")
            .join(file),
    )
    .unwrap_or_else(|e| panic!("{file}: {e}; run `make components`"))
}

/// Runs a job; answers the node's JSON answer.
fn run(node: &Node, wasm: &str, input: Value, extra: Value) -> Value {
    let mut body = json!({"jobId": "j", "wasmB64": wasm, "timeoutMs": 10000, "input": input});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let response = node.post("/wasm/run", body.to_string().as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// Standard base64, as `POST /wasm/run` takes a job's module.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_core_module_job_reads_the_contract_through_the_core_import() {
    let anvil = Anvil::start(31337);
    let contract = anvil.deploy();
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--rpc", &anvil.rpc_flag()]);
    let job = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip1/release/rpc_job.wasm"),
    )
    .expect("rpc_job.wasm: run `make components`");
    let wasm = base64(&job);
    let run = |input: Value| {
        let body = json!({"jobId": "j", "wasmB64": wasm, "timeoutMs": 5000, "input": input});
        let response = node.post("/wasm/run", body.to_string().as_bytes());
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    };
    // No chainId: the node's only chain.
    let cases = contract_reads(&contract);
    for (method, params, expected) in cases {
        let done = run(json!({"method": method, "params": params}));
        assert_eq!(done["ok"], true, "{method}: {done}");
        assert_eq!(done["result"], expected, "{method}");
    }
    let named = run(json!({"chainId": 31337, "method": "eth_chainId"}));
    assert_eq!(named["result"], "0x7a69");

    // Refused, never forwarded: the job learns why.
    let refused = run(json!({"method": "eth_sendTransaction", "params": [{"from": DEV_ACCOUNT}]}));
    assert_eq!(refused["ok"], false);
    let error: Value = serde_json::from_str(refused["error"].as_str().unwrap()).unwrap();
    assert_eq!(error["kind"], "method-not-allowed", "{refused}");
    assert_eq!(
        anvil.asked("eth_sendTransaction"),
        1,
        "only the test's deployment"
    );
    let unknown = run(json!({"chainId": 5, "method": "eth_chainId"}));
    assert!(unknown["error"].as_str().unwrap().contains("unknown-chain"));

    // A module that imports the call but has no `alloc` to receive the
    // answer fails, and says why; the node keeps serving.
    let no_alloc = wat::parse_str(
        r#"(module
             (import "wasmatic:eth" "call" (func $call (param i64 i32 i32 i32 i32) (result i64)))
             (memory (export "memory") 1)
             (data (i32.const 0) "eth_chainId")
             (func (export "run")
               (drop (call $call (i64.const 0) (i32.const 0) (i32.const 11) (i32.const 0) (i32.const 0)))))"#,
    )
    .unwrap();
    let body = json!({"jobId": "n", "wasmB64": base64(&no_alloc), "timeoutMs": 5000, "input": {}});
    let failed = node.post("/wasm/run", body.to_string().as_bytes()).json();
    assert_eq!(failed["ok"], false);
    assert!(
        failed["error"].as_str().unwrap().contains("alloc"),
        "{failed}"
    );
    assert_eq!(node.get("/health").status, 200);
}

#[test]
fn a_file_protocol_job_reads_the_contract_and_its_work_dir_is_removed() {
    let one = Anvil::start(31337);
    let two = Anvil::start(31338);
    let contract = one.deploy();
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &["--rpc", &one.rpc_flag(), "--rpc", &two.rpc_flag()],
    );
    let wasm = base64(&wasip1("file-rpc-job.wasm"));
    let work_dirs = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("wasmatic-job-{}-", node.pid()))
            })
            .count()
    };
    // Two chains: the job request's chainId picks one.
    let on_one = json!({"chainId": 31337});
    let cases = contract_reads(&contract);
    for (method, params, expected) in cases {
        let done = run(
            &node,
            &wasm,
            json!({"method": method, "params": params}),
            on_one.clone(),
        );
        assert_eq!(done["ok"], true, "{method}: {done}");
        assert_eq!(done["result"], expected, "{method}");
    }
    let other = run(
        &node,
        &wasm,
        json!({"method": "eth_chainId"}),
        json!({"chainId": 31338}),
    );
    assert_eq!(other["result"], "0x7a6a", "{other}");
    // A request may name its own chain.
    let named = run(
        &node,
        &wasm,
        json!({"method": "eth_chainId", "chainId": 31337}),
        json!({"chainId": 31338}),
    );
    assert_eq!(named["result"], "0x7a69", "{named}");
    // No chainId with two chains: mainnet, which this node does not know.
    let unknown = run(&node, &wasm, json!({"method": "eth_chainId"}), json!({}));
    assert_eq!(unknown["ok"], false);
    assert!(
        unknown["error"].as_str().unwrap().contains("chain 1"),
        "{unknown}"
    );

    // Refused with JSON-RPC's "method not found", never forwarded.
    let refused = run(
        &node,
        &wasm,
        json!({"method": "eth_sendTransaction", "params": [{"from": DEV_ACCOUNT}]}),
        on_one,
    );
    let error: Value = serde_json::from_str(refused["error"].as_str().unwrap()).unwrap();
    assert_eq!(error["code"], -32601, "{refused}");
    assert_eq!(
        one.asked("eth_sendTransaction"),
        1,
        "only the test's deployment"
    );

    // Every job's work directory is gone once it has answered.
    assert_eq!(work_dirs(), 0);
}

#[test]
fn a_job_that_fills_its_work_dir_is_stopped() {
    let anvil = Anvil::start(31337);
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--rpc", &anvil.rpc_flag()]);
    // Opens `big` in its work directory (fd 3, preopened as `.`) and
    // writes 64 KiB to it, forever.
    let filler = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "path_open"
               (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "fd_write"
               (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 2)
             (data (i32.const 0) "big")
             (data (i32.const 16) "\00\04\00\00\00\00\01\00")
             (func (export "_start")
               (local $fd i32)
               (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 3)
                     (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 32))
                 (then unreachable))
               (local.set $fd (i32.load (i32.const 32)))
               (loop $again
                 (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 40)))
                 (br $again))))"#,
    )
    .unwrap();
    let done = run(&node, &base64(&filler), json!({}), json!({}));
    assert_eq!(done["ok"], false);
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("work directory"), "{done}");
    assert_eq!(node.get("/health").status, 200);
}

/// The three reads of the deployed contract, with what each answers: its
/// code, its slot 0 (42), and a call that returns slot 0.
fn contract_reads(contract: &str) -> [(&'static str, Value, Value); 3] {
    [
        (
            "eth_getCode",
            json!([contract, "latest"]),
            json!(RUNTIME_CODE),
        ),
        (
            "eth_getStorageAt",
            json!([contract, "0x0", "latest"]),
            json!(format!("0x{:064x}", 42)),
        ),
        (
            "eth_call",
            json!([{"to": contract}, "latest"]),
            json!(format!("0x{:064x}", 42)),
        ),
    ]
}
