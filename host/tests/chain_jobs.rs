//! Chain RPC for jobs (`POST /wasm/run`), against a real local chain
//! (anvil): core modules through the `wasmatic:eth.call` import, and jobs
//! written for the WASM system's file protocol, unchanged.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::anvil::{Anvil, DEV_ACCOUNT, RUNTIME_CODE};
use support::{base64, up, Node};

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

/// A job that makes `link` in its work directory a symbolic link to
/// `target` (relative, so the sandbox lets it be made), writes a request
/// for `eth_chainId` unless `link` is the request file itself, waits for
/// the answer and prints `{"ok": true, "result": ANSWER}`.
fn link_job(target: &str, link: &str) -> Vec<u8> {
    let request = if link == "wasm_rpc_request.json" {
        ""
    } else {
        r#"
               (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 21)
                     (i32.const 9) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 140))
                 (then unreachable))
               (local.set $fd (i32.load (i32.const 140)))
               (drop (call $fd_write (local.get $fd) (i32.const 128) (i32.const 1) (i32.const 136)))
               (drop (call $fd_close (local.get $fd)))"#
    };
    let wat = format!(
        r#"(module
             (import "wasi_snapshot_preview1" "path_symlink"
               (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "path_open"
               (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "fd_write"
               (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "fd_read"
               (func $fd_read (param i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "fd_close"
               (func $fd_close (param i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 0) "wasm_rpc_request.json")
             (data (i32.const 64) "wasm_rpc_response.json")
             (data (i32.const 96) "{{\"method\":\"eth_chainId\"}}")
             (data (i32.const 128) "\60\00\00\00\18\00\00\00")
             (data (i32.const 160) "{{\"ok\":true,\"result\":")
             (data (i32.const 192) "}}")
             (data (i32.const 256) "{target}")
             (data (i32.const 512) "{link}")
             (func (export "_start")
               (local $fd i32)
               (if (call $path_symlink (i32.const 256) (i32.const {target_len}) (i32.const 3)
                     (i32.const 512) (i32.const {link_len}))
                 (then unreachable))
               {request}
               (loop $wait
                 (br_if $wait (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 22)
                   (i32.const 0) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 140))))
               (local.set $fd (i32.load (i32.const 140)))
               ;; iovecs at 1024: the prefix, the answer read to 2048, the suffix
               (i32.store (i32.const 1024) (i32.const 160))
               (i32.store (i32.const 1028) (i32.const 20))
               (i32.store (i32.const 1032) (i32.const 2048))
               (i32.store (i32.const 1036) (i32.const 4096))
               (i32.store (i32.const 1040) (i32.const 192))
               (i32.store (i32.const 1044) (i32.const 1))
               (drop (call $fd_read (local.get $fd) (i32.const 1032) (i32.const 1) (i32.const 1036)))
               ;; one buffer a call: a write may take only the first
               (drop (call $fd_write (i32.const 1) (i32.const 1024) (i32.const 1) (i32.const 136)))
               (drop (call $fd_write (i32.const 1) (i32.const 1032) (i32.const 1) (i32.const 136)))
               (drop (call $fd_write (i32.const 1) (i32.const 1040) (i32.const 1) (i32.const 136)))))"#,
        target_len = target.len(),
        link_len = link.len(),
    );
    wat::parse_str(&wat).unwrap()
}

/// The path from a job's work directory (a fresh directory of the temp
/// directory) to `path`, going up to the root first.
fn from_work_dir(path: &Path) -> String {
    let root = "../".repeat(std::env::temp_dir().components().count() + 4);
    format!("{root}{}", path.strip_prefix("/").unwrap().display())
}

#[test]
fn a_job_cannot_make_the_node_write_through_a_link() {
    let anvil = Anvil::start(31337);
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--rpc", &anvil.rpc_flag()]);
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "the node runner's file").unwrap();
    // The answer is written under this name first, then renamed into place.
    for link in [".wasm_rpc_response.json.partial", "wasm_rpc_response.json"] {
        let job = link_job(&from_work_dir(&victim), link);
        let done = run(&node, &base64(&job), json!({}), json!({}));
        assert_eq!(done["ok"], true, "{link}: {done}");
        // The job got its answer, in a file of its own directory.
        assert_eq!(done["result"]["result"], "0x7a69", "{link}: {done}");
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "the node runner's file",
            "{link}"
        );
    }
    assert_eq!(node.get("/health").status, 200);
}

#[test]
fn a_job_cannot_make_the_node_read_a_device_or_a_file_outside() {
    let anvil = Anvil::start(31337);
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--rpc", &anvil.rpc_flag()]);
    let before = support::rss_bytes(node.pid());
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.json");
    std::fs::write(&secret, r#"{"method":"eth_chainId","id":"the secret"}"#).unwrap();
    for target in [Path::new("/dev/urandom"), Path::new("/dev/zero"), &secret] {
        let job = link_job(&from_work_dir(target), "wasm_rpc_request.json");
        let done = run(&node, &base64(&job), json!({}), json!({}));
        assert_eq!(done["ok"], true, "{}: {done}", target.display());
        let answer = &done["result"];
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("link"),
            "{answer}"
        );
        assert!(answer.get("result").is_none(), "{answer}");
    }
    // Nothing was read without end: the node is where it was.
    let after = support::rss_bytes(node.pid());
    assert!(
        after < before + (64 << 20),
        "RSS {} MiB before, {} MiB after",
        before >> 20,
        after >> 20
    );
    assert_eq!(node.get("/health").status, 200);
}
