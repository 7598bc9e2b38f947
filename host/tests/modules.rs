//! Plain core modules called by export name (the wasm-exec-api and the
//! "WASM executor" APIs).

mod support;

use serde_json::{json, Value};
use support::{wat_hex, Node, NodeBuilder};

const DOUBLE: &str =
    "0061736d0100000001060160017f017f03020100070a0106646f75626c6500000a09010700200041026c0b";
const DOUBLE_TWICE: &str = "0061736d0100000001060160017f017f021001057574696c7306646f75626c650000030201000710010c646f75626c655f747769636500010a0a0108002000100010000b";

fn start(dir: &std::path::Path) -> Node {
    NodeBuilder::new(dir, &["up", "--call-timeout", "1s"])
        .env("WASMATIC_PORT", "0")
        .start()
}

fn post_json(node: &Node, path: &str, body: Value) -> support::Response {
    node.post(path, body.to_string().as_bytes())
}

#[test]
fn the_wasm_exec_api_requests_work_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let first = format!(r#"{{"wasm_hex": "{DOUBLE}", "function_name": "double", "params": [2]}}"#);
    let r = node.post("/", first.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "results": [4] }));

    let register = format!(r#"{{"module_name": "utils", "wasm_hex": "{DOUBLE}"}}"#);
    let r = node.post("/register", register.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["exports"], json!(["double"]));

    let second = format!(
        r#"{{"wasm_hex": "{DOUBLE_TWICE}", "function_name": "double_twice", "params": [2], "host_modules": ["utils"]}}"#
    );
    assert_eq!(
        node.post("/", second.as_bytes()).json(),
        json!({ "results": [8] })
    );
    assert_eq!(
        post_json(&node, "/call/utils/double", json!([21])).json(),
        json!({ "results": [42] })
    );

    // Registered modules survive a restart.
    assert!(node.terminate().success());
    let node = start(dir.path());
    assert_eq!(
        post_json(&node, "/call/utils/double", json!([5])).json(),
        json!({ "results": [10] })
    );
}

#[test]
fn modules_link_recursively_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let register = |name: &str, wasm_hex: &str, links: Value| {
        let r = post_json(
            &node,
            "/register",
            json!({ "module_name": name, "wasm_hex": wasm_hex, "host_modules": links }),
        );
        assert_eq!(r.status, 201, "{name}: {}", r.text());
    };
    register("utils", DOUBLE, json!([]));
    // `twice` imports utils.double; `quad` imports twice.double_twice.
    register("twice", DOUBLE_TWICE, json!(["utils"]));
    let quad = wat_hex(
        r#"(module
            (import "twice" "double_twice" (func $dt (param i32) (result i32)))
            (func (export "quad") (param i32) (result i32) local.get 0 call $dt call $dt))"#,
    );
    let r = post_json(
        &node,
        "/",
        json!({ "wasm_hex": quad, "function_name": "quad", "params": [3], "host_modules": ["twice"] }),
    );
    assert_eq!(r.json(), json!({ "results": [48] }), "3 × 4 × 4");

    let message = post_json(
        &node,
        "/",
        json!({ "wasm_hex": DOUBLE_TWICE, "function_name": "double_twice", "params": [2] }),
    )
    .error(400);
    assert!(
        message.contains("utils"),
        "the missing import is named: {message}"
    );
    let message = post_json(
        &node,
        "/",
        json!({ "wasm_hex": DOUBLE_TWICE, "function_name": "double_twice", "params": [2], "host_modules": ["utils", "nope"] }),
    )
    .error(400);
    assert!(
        message.contains("nope") || message.contains("utils"),
        "{message}"
    );
}

#[test]
fn params_are_typed_from_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let call = |function: &str, params: Value| {
        post_json(
            &node,
            "/",
            json!({ "wasm_hex": DOUBLE, "function_name": function, "params": params }),
        )
    };
    for (params, why) in [
        (json!(["2"]), "not an i32"),
        (json!([1.5]), "not an i32"),
        (json!([4294967296u64]), "not an i32"),
        (json!([1, 2]), "2 parameters given, 1 expected"),
        (json!([]), "0 parameters given"),
    ] {
        let message = call("double", params.clone()).error(400);
        assert!(message.contains(why), "{params}: {message}");
        assert!(
            message.contains("double(i32) -> (i32)"),
            "{params}: the signature is named: {message}"
        );
    }
    assert!(call("triple", json!([1])).error(404).contains("triple"));

    let half = wat_hex(
        r#"(module (func (export "half") (param f64) (result f64) local.get 0 f64.const 2 f64.div))"#,
    );
    let r = post_json(
        &node,
        "/",
        json!({ "wasm_hex": half, "function_name": "half", "params": [3] }),
    );
    assert_eq!(r.json(), json!({ "results": [1.5] }));
    let wide = wat_hex(
        r#"(module (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add))"#,
    );
    let r = post_json(
        &node,
        "/",
        json!({ "wasm_hex": wide, "function_name": "add", "params": [4000000000u64, 2] }),
    );
    assert_eq!(r.json(), json!({ "results": [4000000002u64] }));
    // Two i32 parameters and an i32 result, as the "WASM executor" sends.
    let sub = wat_hex(
        r#"(module (func (export "sub") (param i32 i32) (result i32) local.get 0 local.get 1 i32.sub))"#,
    );
    let r = post_json(
        &node,
        "/",
        json!({ "wasm_hex": sub, "function_name": "sub", "params": [7, 10] }),
    );
    assert_eq!(r.json(), json!({ "results": [-3] }));
}

#[test]
fn bad_modules_and_bad_calls_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let run = |wasm_hex: &str, function: &str| {
        post_json(
            &node,
            "/",
            json!({ "wasm_hex": wasm_hex, "function_name": function, "params": [] }),
        )
    };
    assert!(run("zz", "f").error(400).contains("hex"));
    assert!(run("00ff", "f")
        .error(400)
        .contains("core WebAssembly module"));
    node.post("/", b"{not json").error(400);
    let trap = wat_hex(r#"(module (func (export "boom") unreachable))"#);
    assert!(run(&trap, "boom").error(500).contains("unreachable"));
    let spin = wat_hex(r#"(module (func (export "spin") (loop br 0)))"#);
    assert!(run(&spin, "spin").error(504).contains("timed out after 1s"));
    post_json(
        &node,
        "/register",
        json!({ "module_name": "../x", "wasm_hex": DOUBLE }),
    )
    .error(400);
    post_json(&node, "/call/nope/double", json!([1])).error(404);
    assert_eq!(node.get("/health").status, 200);
}
