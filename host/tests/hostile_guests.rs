//! Guests and clients that try to take the node down: one budget per call
//! whatever the call links, bounded link chains, client-chosen sizes within
//! the node's bounds, and wasmtime flags that are honoured or refused.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{base64, component_bytes, post_json, rss_bytes, up, wat_hex, Node, NodeBuilder};

fn assert_healthy(node: &Node) {
    let r = node.get("/health");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A module whose one memory is 64 MiB, all of it touched by its start
/// function, so that every instance of it costs the node 64 MiB.
const BIG: &str = r#"(module
  (memory 1024)
  (func $touch (memory.fill (i32.const 0) (i32.const 1) (i32.const 67108864)))
  (start $touch)
  (func (export "noop")))"#;

/// Calls `big.noop`; `own_memory` gives it one page of its own.
fn exporter(own_memory: bool) -> String {
    let memory = if own_memory { "(memory 1)" } else { "" };
    wat_hex(&format!(
        r#"(module
          (import "big" "noop" (func $noop))
          {memory}
          (func (export "run") (result i32) (call $noop) (i32.const 1)))"#
    ))
}

#[test]
fn a_call_linking_one_big_module_twenty_times_has_one_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--handler-memory", "64MiB"]);
    let r = post_json(
        &node,
        "/register",
        json!({ "module_name": "big", "wasm_hex": wat_hex(BIG) }),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    let twenty = vec!["big"; 20];
    // Named twenty times, `big` is linked once: 64 MiB, within the budget.
    let r = post_json(
        &node,
        "/",
        json!({ "wasm_hex": exporter(false), "function_name": "run", "params": [], "host_modules": twenty }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "results": [1] }));

    // One page more, in the caller's own memory, is past the call's budget:
    // memory is summed over every module the call instantiates.
    for _ in 0..3 {
        let r = post_json(
            &node,
            "/",
            json!({ "wasm_hex": exporter(true), "function_name": "run", "params": [], "host_modules": twenty }),
        );
        assert!(r.status >= 400, "{} {}", r.status, r.text());
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("out of memory"), "{error}");
        assert!(error.contains("limit of 64MiB"), "{error}");
        assert_healthy(&node);
    }
    let rss = rss_bytes(node.pid());
    assert!(rss < 512 << 20, "the node holds {} MiB", rss >> 20);
}

/// Module `c{i}` of a chain: it calls `f` of the next one, the last answers 7.
fn chain_link(i: usize, len: usize) -> String {
    if i + 1 == len {
        return wat_hex(r#"(module (func (export "f") (result i32) (i32.const 7)))"#);
    }
    wat_hex(&format!(
        r#"(module
          (import "c{:05}" "f" (func $next (result i32)))
          (func (export "f") (result i32) (call $next)))"#,
        i + 1
    ))
}

/// Registers the chain `c00000` → `c00001` → … → `c{len-1}`, last link
/// first, so each one's import is registered; the names sort against that
/// order, which a restore must not depend on.
fn register_chain(node: &Node, len: usize) {
    for i in (0..len).rev() {
        let mut body = json!({ "module_name": format!("c{i:05}"), "wasm_hex": chain_link(i, len) });
        if i + 1 < len {
            body["host_modules"] = json!([format!("c{:05}", i + 1)]);
        }
        let r = post_json(node, "/register", body);
        assert_eq!(r.status, 201, "c{i:05}: {}", r.text());
    }
}

/// The head of a long chain is refused as too deep, without overflowing
/// anything; a chain within the bound runs.
fn check_chain(node: &Node, len: usize) {
    let r = post_json(node, "/call/c00000/f", json!([]));
    let error = r.error(400);
    assert!(error.contains("deeper than 16"), "{error}");
    assert_healthy(node);
    // 10 modules, 9 links.
    let r = post_json(node, &format!("/call/c{:05}/f", len - 10), json!([]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "results": [7] }));
}

const CHAIN: usize = 3000;

#[test]
fn a_chain_of_3000_modules_is_refused_as_too_deep() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    register_chain(&node, CHAIN);
    check_chain(&node, CHAIN);
    // Its middle too, twice: the node does not keep what a refusal built.
    for _ in 0..2 {
        post_json(&node, "/call/c01500/f", json!([])).error(400);
    }
    assert_healthy(&node);
}

#[test]
fn a_chain_of_3000_modules_is_restored_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    register_chain(&node, CHAIN);
    assert!(node.terminate().success());
    // A liveness bound, not a speed requirement: restoring in dependency
    // order is linear; retrying every pending module per pass took minutes.
    let started = Instant::now();
    let node = up(dir.path(), &[]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the node took {:?} to restore and listen",
        started.elapsed()
    );
    check_chain(&node, CHAIN);
}

/// A wasip1 job that writes 64 KiB to stderr, forever.
const STDERR_FLOOD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    ;; one iovec at 0: 64 KiB from offset 16
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $again
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $again))))"#;

#[test]
fn a_job_asking_to_keep_gigabytes_of_output_gets_the_node_bound() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let wasm = wat::parse_str(STDERR_FLOOD).expect("valid WAT");
    let r = post_json(
        &node,
        "/wasm/run",
        json!({
            "jobId": "flood",
            "wasmB64": base64(&wasm),
            "timeoutMs": 3000,
            "input": {},
            "maxStderrBytes": 1_500_000_000u64,
            "maxStdoutBytes": 1_500_000_000u64,
        }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{answer}"
    );
    let stderr = answer["stderr"].as_str().unwrap_or_default();
    assert!(
        stderr.len() <= (4 << 20) + 256,
        "{} bytes of stderr kept",
        stderr.len()
    );
    assert!(
        stderr.contains("[wasmatic: output truncated after 4MiB"),
        "{}",
        &stderr[stderr.len().saturating_sub(200)..]
    );
    let rss = rss_bytes(node.pid());
    assert!(rss < 512 << 20, "the node holds {} MiB", rss >> 20);
    assert_healthy(&node);
}

#[test]
fn wasmtime_flags_the_node_would_ignore_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, named) in [
        (&["-S", "config"][..], "-S config"),
        (&["-S", "tcp=y"][..], "-S tcp"),
        (
            &["-W", "unknown-imports-trap"][..],
            "-W unknown-imports-trap",
        ),
        (&["-D", "logging"][..], "-D logging"),
        (&["-W", "epoch-interruption=n"][..], "-W epoch-interruption"),
    ] {
        let mut args = vec!["up"];
        args.extend_from_slice(flags);
        let (code, stderr) = NodeBuilder::new(dir.path(), &args)
            .env("WASMATIC_PORT", "0")
            .fail();
        assert_eq!(code, Some(1), "{flags:?}: {stderr}");
        assert!(stderr.contains(named), "{flags:?}: {stderr}");
    }
}

/// Spins forever: only fuel or a deadline stops it.
const SPIN: &str = r#"(module (func (export "spin") (loop $l (br $l))))"#;

/// Grows its memory by `pages` and answers what `memory.grow` said.
const GROW: &str = r#"(module
  (memory 1)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#;

#[test]
fn fuel_and_per_memory_flags_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &["-W", "fuel=100000000,max-memory-size=16777216"],
    );
    // The operator gets its fuel with every request, so it keeps serving.
    for _ in 0..3 {
        assert_healthy(&node);
    }
    let echo = component_bytes("echo.wasm");
    let r = node.post("/register?name=echo", &echo);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = node.post("/run/echo", b"hello, fuel");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("hello, fuel"), "{}", r.text());

    // A guest that spins runs out of its own fuel, well before the call's
    // deadline; the node keeps serving, and a second spin gets fresh fuel.
    for _ in 0..2 {
        let r = post_json(
            &node,
            "/",
            json!({ "wasm_hex": wat_hex(SPIN), "function_name": "spin", "params": [] }),
        );
        assert!(r.status >= 400, "{} {}", r.status, r.text());
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("out of fuel"), "{error}");
        assert_healthy(&node);
    }

    // -W max-memory-size bounds each memory: 256 pages (16 MiB) in all.
    let grow = |pages: i32| {
        let r = post_json(
            &node,
            "/",
            json!({ "wasm_hex": wat_hex(GROW), "function_name": "grow", "params": [pages] }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["results"][0].as_i64().unwrap_or_default()
    };
    assert_eq!(grow(255), 1);
    assert_eq!(grow(256), -1);
    assert_healthy(&node);
}

#[test]
fn a_handler_hoarding_http_fields_is_stopped_at_its_resource_bounds() {
    let dir = tempfile::tempdir().unwrap();
    // 250 000 host calls before the bound: time enough on a loaded machine.
    let node = up(dir.path(), &["--call-timeout", "30s"]);
    let misbehave = component_bytes("misbehave.wasm");
    let r = node.post("/register?name=misbehave", &misbehave);
    assert_eq!(r.status, 201, "{}", r.text());
    for _ in 0..2 {
        let message = node.post("/run/misbehave", b"fields").error(500);
        assert!(message.contains("resource table"), "{message}");
        assert_healthy(&node);
    }
    // 1 000 entries of at most 32 KiB each, not 1M entries of 128 KiB.
    let rss = rss_bytes(node.pid());
    assert!(rss < 1 << 30, "the node holds {} MiB", rss >> 20);

    // `-S max-http-fields-size` lowers the bound on one fields resource:
    // 24 KiB is past 16 KiB.
    assert!(node.terminate().success());
    let node = up(
        dir.path(),
        &["-S", "max-resources=100,max-http-fields-size=16384"],
    );
    let message = node.post("/run/misbehave", b"fields").error(500);
    assert!(message.contains("fields exceeds limit"), "{message}");
    assert_healthy(&node);
}

#[test]
fn the_wasmtime_timeout_bounds_every_guest_call() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--call-timeout", "5s", "-W", "timeout=1s"]);
    // The lower of the two limits applies, to a core module call…
    let r = post_json(
        &node,
        "/",
        json!({ "wasm_hex": wat_hex(SPIN), "function_name": "spin", "params": [] }),
    );
    let error = r.error(504);
    assert!(error.contains("timed out after 1s"), "{error}");
    // …and to a job that asks for more.
    let spin_job = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
    )
    .expect("valid WAT");
    let r = post_json(
        &node,
        "/wasm/run",
        json!({ "jobId": "spin", "wasmB64": base64(&spin_job), "timeoutMs": 5000, "input": {} }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["error"], "timed out after 1s", "{answer}");
    assert_healthy(&node);
}

#[test]
fn the_wasmtime_instance_count_bounds_each_call() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["-W", "max-instances=30"]);
    let leaf = wat_hex(r#"(module (func (export "f")))"#);
    let mut names = Vec::new();
    for i in 0..40 {
        let name = format!("leaf{i}");
        let r = post_json(
            &node,
            "/register",
            json!({ "module_name": name, "wasm_hex": leaf }),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        names.push(name);
    }
    // Calls a module linking the first `n` leaves: n + 1 instances in the
    // call's store.
    let call = |n: usize| {
        let links = &names[..n];
        let imports: String = links
            .iter()
            .map(|l| format!(r#"(import "{l}" "f" (func))"#))
            .collect();
        let wide = wat_hex(&format!(
            r#"(module {imports} (func (export "run") (result i32) (i32.const 1)))"#
        ));
        post_json(
            &node,
            "/",
            json!({ "wasm_hex": wide, "function_name": "run", "params": [], "host_modules": links }),
        )
    };
    let error = call(40).error(400);
    assert!(error.contains("instance count too high"), "{error}");
    let r = call(20);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "results": [1] }));
    assert_healthy(&node);
}
