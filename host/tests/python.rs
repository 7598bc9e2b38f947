//! Handlers written in Python (componentize-py) and JavaScript
//! (componentize-js), built by `make python js` from examples/python and
//! examples/js: registered under the node's default limits, run against a
//! local API, scheduled, and loaded again from the compiled cache after a
//! restart. The cipher shape in Python (async exports, its own `audit-log`
//! import) runs linked to the auditor example. They are large (about 18
//! and 13 MiB): compiling them is most of this test's time, so it
//! registers each once, on one node.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::built::{built_bytes, compiled_file, post_patiently};
use support::{component_bytes, wait_for, FakeApi, Node, NodeBuilder};

const API_BODY: &str = r#"{"hello":"from the api"}"#;

/// A node with default limits whose handlers may call `api`.
fn start_node(dir: &Path, api: &FakeApi) -> Node {
    let allow = api.addr.to_string();
    NodeBuilder::new(dir, &["up", "--allow-outbound", &allow])
        .env("WASMATIC_PORT", "0")
        .start()
}

/// Registers `bytes` as `name`, configured with the API's URL and a
/// greeting; the registration's JSON.
fn register(node: &Node, name: &str, bytes: &[u8], api: &FakeApi) -> Value {
    let path = format!(
        "/register?name={name}&env=URL=http://{}/greeting&env=GREETING=hi",
        api.addr
    );
    let started = Instant::now();
    // Within the node's default --request-timeout (60s), which bounds it.
    let response = post_patiently(node.addr, &path, bytes, Duration::from_secs(90));
    assert_eq!(response.status, 201, "{}", response.text());
    eprintln!(
        "{name}: {} bytes registered (compiled) in {:?}",
        bytes.len(),
        started.elapsed()
    );
    response.json()
}

/// The newest run of `name`, which must have succeeded.
fn last_run(node: &Node, name: &str) -> Value {
    let runs = node.get(&format!("/handlers/{name}/runs?limit=1")).json();
    let run = runs[0].clone();
    assert_eq!(run["ok"], true, "{run}");
    run
}

/// What the example handlers answer for `input`.
fn check_output(output: &str, input: &str) {
    let answer: Value = serde_json::from_str(output).expect("the handler answers JSON");
    assert_eq!(
        answer,
        json!({ "greeting": "hi", "input": input, "status": 200, "body": API_BODY })
    );
}

/// The two audit entries the example handlers write around their call.
fn check_audit(run: &Value, api: &FakeApi) {
    let url = format!("http://{}/greeting", api.addr);
    assert_eq!(
        run["audit"],
        json!([
            { "level": "info", "message": format!("GET {url}") },
            {
                "level": "info",
                "message": format!("{url} answered 200 with {} bytes", API_BODY.len())
            },
        ]),
        "{run}"
    );
}

/// Runs `name` with `input`: checks the answer, the run's audit entries,
/// and that the API was called once.
fn run_once(node: &Node, name: &str, input: &str, api: &FakeApi) {
    let before = api.hits();
    let ran = node.post(&format!("/run/{name}"), input.as_bytes());
    assert_eq!(ran.status, 200, "{}", ran.text());
    check_output(&ran.text(), input);
    assert_eq!(api.hits(), before + 1, "one outbound call per run");
    let run = last_run(node, name);
    assert_eq!(run["output"], ran.text());
    check_audit(&run, api);
}

/// `encr` then `decr` of the Python cipher (shift 5) give the input back,
/// each call with the two records it writes to its linked audit log.
fn cipher_round_trip(node: &Node) {
    let call = |func: &str, text: &str| -> Value {
        let response = node.post(
            &format!("/call/pycipher/{func}"),
            json!([text]).to_string().as_bytes(),
        );
        assert_eq!(response.status, 200, "{func}: {}", response.text());
        response.json()["result"].clone()
    };
    assert_eq!(call("encr", "Hello, World"), "Mjqqt, Btwqi");
    assert_eq!(call("decr", "Mjqqt, Btwqi"), "Hello, World");
    let runs = node.get("/handlers/pycipher/runs?limit=2").json();
    let audits: Vec<Value> = runs
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| run["audit"].clone())
        .collect();
    let entry = |message: &str| json!({ "level": "info", "message": message });
    assert_eq!(
        audits,
        [
            json!([
                entry("decr: shift 5, 12 characters in"),
                entry("decr: 12 characters out")
            ]),
            json!([
                entry("encr: shift 5, 12 characters in"),
                entry("encr: 12 characters out")
            ]),
        ]
    );
}

/// The example handlers: name on the node, and file under `target/`.
const HANDLERS: [(&str, &str); 2] = [("py", "python/handler.wasm"), ("js", "js/handler.wasm")];

#[test]
fn python_and_javascript_handlers_call_out_audit_run_on_schedule_and_after_a_restart() {
    let api = FakeApi::start(API_BODY, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), &api);

    // One node for both: compiling them is the cost, and two compiles at
    // once on a small machine only slow each other down. Default size and
    // memory limits take both.
    let mut digests = Vec::new();
    for (name, file) in HANDLERS {
        let info = register(&node, name, &built_bytes(file), &api);
        assert_eq!(info["kind"], "handler");
        assert_eq!(info["config_keys"], json!(["GREETING", "URL"]));
        run_once(&node, name, "ping", &api);
        digests.push(info["digest"].as_str().unwrap().to_string());
    }

    // The cipher shape: the guest's own import linked to a provider, its
    // setting read when called.
    let auditor = node.post("/register?name=auditor", &component_bytes("auditor.wasm"));
    assert_eq!(auditor.status, 201, "{}", auditor.text());
    let cipher = post_patiently(
        node.addr,
        "/register?name=pycipher&env=SHIFT_AMOUNT=5&link=acme:cipher/audit-log=auditor",
        &built_bytes("python/cipher.wasm"),
        Duration::from_secs(120),
    );
    assert_eq!(cipher.status, 201, "{}", cipher.text());
    cipher_round_trip(&node);

    // On a schedule: each tick is a run with the schedule's input.
    let sched = node.post(
        "/sched",
        json!({ "name": "py", "cron": "* * * * * *", "input": "tick" })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(sched.status, 201, "{}", sched.text());
    let id = sched.json()["id"].as_str().unwrap().to_string();
    let fired = wait_for(Duration::from_secs(10), "a scheduled run", || {
        let runs = node.get(&format!("/sched/{id}/runs?limit=1")).json();
        runs.as_array().and_then(|runs| runs.first().cloned())
    });
    assert_eq!(fired["ok"], true, "{fired}");
    assert_eq!(fired["job_id"], id.as_str());
    check_output(fired["output"].as_str().unwrap(), "tick");
    check_audit(&fired, &api);
    assert_eq!(node.delete(&format!("/sched/{id}")).status, 204);

    // A restart on the same state loads the compiled code from the cache:
    // the files written at registration are the ones still there, untouched.
    let state = dir.path().join(".wasmatic");
    let cached: Vec<_> = digests
        .iter()
        .map(|digest| {
            let file = compiled_file(&state, digest).expect("compiled code kept on disk");
            let written = std::fs::metadata(&file).unwrap().modified().unwrap();
            (digest, file, written)
        })
        .collect();
    assert!(node.terminate().success());
    let started = Instant::now();
    let node = start_node(dir.path(), &api);
    eprintln!(
        "restart with both handlers: ready in {:?}",
        started.elapsed()
    );
    for (name, _) in HANDLERS {
        run_once(&node, name, "again", &api);
    }
    cipher_round_trip(&node);
    for (digest, file, written) in cached {
        assert_eq!(compiled_file(&state, digest).as_ref(), Some(&file));
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            written,
            "the restart compiled {digest} again instead of loading it"
        );
    }
}
