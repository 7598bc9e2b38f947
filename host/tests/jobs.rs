//! WASI command jobs: `POST /wasm/run` of the "WASM system" job API.

mod support;

use serde_json::{json, Value};
use support::{base64, component_bytes, sha256_hex, up, Node};

/// The job built as a wasip1 core module, and as a wasip2 command component.
fn builds() -> [(&'static str, Vec<u8>); 2] {
    let p1 = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip1/release/json-job.wasm");
    let p1 = std::fs::read(&p1)
        .unwrap_or_else(|_| panic!("{} is missing: run `make components`", p1.display()));
    [
        ("wasip1 module", p1),
        ("wasip2 component", component_bytes("json-job.wasm")),
    ]
}

fn run(node: &Node, body: Value) -> Value {
    let r = node.post("/wasm/run", body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn jobs_read_json_input_and_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    assert_eq!(node.get("/wasm/health").json(), json!({ "ok": true }));
    for (kind, wasm) in builds() {
        let job = |input: Value, extra: Value| {
            let mut body = json!({ "jobId": kind, "wasmB64": base64(&wasm), "timeoutMs": 1000, "input": input });
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            run(&node, body)
        };
        let done = job(json!({ "n": 21 }), json!({}));
        assert_eq!(done["ok"], true, "{kind}: {done}");
        assert_eq!(done["result"], json!({ "doubled": 42 }), "{kind}");
        assert_eq!(done["jobId"], kind);
        assert!(done["durationMs"].is_u64());

        let failed = job(json!({ "mode": "fail" }), json!({}));
        assert_eq!(
            (failed["ok"].clone(), failed["error"].clone()),
            (json!(false), json!("asked to fail")),
            "{kind}"
        );

        let spun = job(json!({ "mode": "spin" }), json!({ "timeoutMs": 300 }));
        assert_eq!(spun["ok"], false, "{kind}");
        assert!(
            spun["error"]
                .as_str()
                .unwrap()
                .contains("timed out after 300ms"),
            "{kind}: {spun}"
        );

        let flooded = job(
            json!({ "mode": "flood" }),
            json!({ "maxStdoutBytes": 4096 }),
        );
        assert_eq!(flooded["ok"], false, "{kind}");
        assert!(
            flooded["error"]
                .as_str()
                .unwrap()
                .contains("maxStdoutBytes (4096)"),
            "{kind}: {flooded}"
        );

        let garbage = job(json!({ "mode": "garbage" }), json!({}));
        assert_eq!(garbage["ok"], false, "{kind}");
        assert!(
            garbage["error"]
                .as_str()
                .unwrap()
                .contains("not one JSON object"),
            "{kind}: {garbage}"
        );

        let chatty = job(json!({ "mode": "stderr" }), json!({}));
        assert_eq!(chatty["result"], "done");
        assert_eq!(chatty["stderr"], "working on it\n", "{kind}");
    }
}

#[test]
fn a_job_sent_once_can_be_run_again_by_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let [(_, wasm), _] = builds();
    let hash = sha256_hex(&wasm);
    let unknown = node.post(
        "/wasm/run",
        json!({ "jobId": "a", "wasmHash": hash, "timeoutMs": 1000, "input": { "n": 1 } })
            .to_string()
            .as_bytes(),
    );
    assert!(unknown.error(404).contains("send wasmB64 once"));

    let first = run(
        &node,
        json!({ "jobId": "b", "wasmB64": base64(&wasm), "wasmHash": hash, "timeoutMs": 1000, "input": { "n": 1 } }),
    );
    assert_eq!(first["result"], json!({ "doubled": 2 }));
    let again = run(
        &node,
        json!({ "jobId": "c", "wasmHash": hash.to_uppercase(), "timeoutMs": 1000, "input": { "n": 2 } }),
    );
    assert_eq!(again["result"], json!({ "doubled": 4 }));

    let wrong = node.post(
        "/wasm/run",
        json!({ "jobId": "d", "wasmB64": base64(&wasm), "wasmHash": "00".repeat(32), "timeoutMs": 1000, "input": {} })
            .to_string()
            .as_bytes(),
    );
    assert!(wrong.error(400).contains("sha256"));
}

#[test]
fn requests_the_node_cannot_run_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let post = |body: Value| node.post("/wasm/run", body.to_string().as_bytes());
    post(json!({ "jobId": "x", "timeoutMs": 100 })).error(400);
    post(json!({ "jobId": "x", "wasmB64": "!!!", "timeoutMs": 100 })).error(400);
    assert!(
        post(json!({ "jobId": "x", "wasmB64": base64(b"not wasm"), "timeoutMs": 100 }))
            .error(400)
            .contains("\\0asm")
    );
    let no_entry = base64(b"\0asm\x01\0\0\0");
    assert!(
        post(json!({ "jobId": "x", "wasmB64": no_entry, "timeoutMs": 100 }))
            .error(400)
            .contains("_start")
    );
    let handler = base64(&component_bytes("echo.wasm"));
    assert!(
        post(json!({ "jobId": "x", "wasmB64": handler, "timeoutMs": 100 }))
            .error(400)
            .contains("wasi:cli/run")
    );
    node.post("/wasm/run", b"{not json").error(400);
    assert_eq!(node.get("/health").status, 200);
}
