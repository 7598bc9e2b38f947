//! Handlers: register, run, schedule and keep them, through the default
//! operator's HTTP API.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::{component_bytes, sha256_hex, tree, wait_for, FakeApi, Node, NodeBuilder};

const PRICE: &str = r#"{"bitcoin":{"usd":12345.67}}"#;

/// A node whose handlers may call the tests' local servers.
fn start_node(dir: &Path) -> Node {
    NodeBuilder::new(dir, &["up", "--allow-outbound", "127.0.0.1"])
        .env("WASMATIC_PORT", "0")
        .start()
}

fn register(node: &Node, name: &str, bytes: &[u8]) -> Value {
    let response = node.post(&format!("/register?name={name}"), bytes);
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()
}

fn schedule(node: &Node, body: Value) -> Value {
    let response = node.post("/sched", body.to_string().as_bytes());
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()
}

fn runs(node: &Node, path: &str) -> Vec<Value> {
    let response = node.get(path);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json().as_array().cloned().expect("array of runs")
}

fn price_json() -> Value {
    json!({ "coin": "bitcoin", "vs": "usd", "price": 12345.67 })
}

#[test]
fn register_run_and_list_a_handler() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let echo = component_bytes("echo.wasm");

    let info = register(&node, "echo", &echo);
    assert_eq!(info["name"], "echo");
    assert_eq!(info["digest"], sha256_hex(&echo));
    assert_eq!(info["size"], echo.len());
    // The node keeps the bytes itself; the upload's file is gone.
    assert_eq!(
        tree(&dir.path().join("registered"), &[]),
        Vec::<String>::new()
    );

    let ran = node.post("/run/echo", "hello, handler".as_bytes());
    assert_eq!(ran.status, 200);
    assert_eq!(ran.text(), "hello, handler");
    assert!(ran
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));

    let list = node.get("/handlers").json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["digest"], info["digest"]);
    assert_eq!(node.get("/handlers/echo").json()["size"], echo.len());
    assert!(node.get("/handlers/nope").error(404).contains("nope"));

    let runs = runs(&node, "/handlers/echo/runs?limit=5");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["ok"], true);
    assert_eq!(runs[0]["output"], "hello, handler");
    assert!(runs[0]["started_at"].as_u64().unwrap() > 0);
    assert!(runs[0].get("job_id").is_none());
    assert!(runs[0].get("error").is_none());
}

#[test]
fn gecko_runs_on_request_and_on_schedule_and_survives_a_restart() {
    let api = FakeApi::start(PRICE, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    register(&node, "gecko", &component_bytes("gecko.wasm"));

    let ran = node.post("/run/gecko", api.price_url().as_bytes());
    assert_eq!(ran.status, 200, "{}", ran.text());
    assert_eq!(
        serde_json::from_str::<Value>(&ran.text()).unwrap(),
        price_json()
    );
    // The JSON form of the input works too.
    let query = json!({ "url": api.price_url(), "coin": "bitcoin", "vs": "usd" }).to_string();
    assert_eq!(node.post("/run/gecko", query.as_bytes()).status, 200);

    let job = schedule(
        &node,
        json!({ "name": "gecko", "cron": "* * * * * *", "input": api.price_url() }),
    );
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["name"], "gecko");
    assert_eq!(job["cron"], "* * * * * *");
    assert!(
        job["next"].as_u64().unwrap().is_multiple_of(1000),
        "fires on the second: {job}"
    );

    let job_runs = format!("/sched/{id}/runs?limit=100");
    let fired = wait_for(Duration::from_secs(10), "two scheduled runs", || {
        let runs = runs(&node, &job_runs);
        (runs.len() >= 2).then_some(runs)
    });
    for run in &fired {
        assert_eq!(run["ok"], true, "{run}");
        assert_eq!(run["job_id"], id.as_str());
        assert_eq!(
            serde_json::from_str::<Value>(run["output"].as_str().unwrap()).unwrap(),
            price_json()
        );
        assert_eq!(run["scheduled_for"].as_u64().unwrap() % 1000, 0);
    }
    assert!(runs(&node, "/handlers/gecko/runs?limit=100").len() >= 4);
    assert_eq!(node.get("/sched").json()[0]["id"], id.as_str());

    // A clean stop, then a restart on the same directory.
    assert!(node.terminate().success());
    let restarted_at = wasmatic_state::now_ms();
    let node = start_node(dir.path());
    assert_eq!(node.get("/handlers/gecko").json()["name"], "gecko");
    assert_eq!(node.get("/sched").json()[0]["id"], id.as_str());
    wait_for(
        Duration::from_secs(10),
        "two runs after the restart",
        || {
            let after = runs(&node, &job_runs)
                .iter()
                .filter(|r| r["ok"] == true && r["started_at"].as_u64().unwrap() >= restarted_at)
                .count();
            (after >= 2).then_some(())
        },
    );
    assert!(node.log().contains("component loaded"), "{}", node.log());
}

#[test]
fn a_scheduled_run_is_told_its_tick() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    register(&node, "misbehave", &component_bytes("misbehave.wasm"));
    let job = schedule(
        &node,
        json!({ "name": "misbehave", "cron": "* * * * * *", "input": "env" }),
    );
    let id = job["id"].as_str().unwrap().to_string();
    let run = wait_for(Duration::from_secs(10), "a scheduled run", || {
        runs(&node, &format!("/sched/{id}/runs")).into_iter().next()
    });
    let output = run["output"].as_str().unwrap();
    assert!(
        output.contains(&format!("WASMATIC_JOB_ID={id}\n")),
        "{output}"
    );
    let tick = run["scheduled_for"].as_u64().unwrap();
    assert!(
        output.contains(&format!("WASMATIC_SCHEDULED_FOR={tick}\n")),
        "{output}"
    );
}

#[test]
fn five_field_cron_lines_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    register(&node, "echo", &component_bytes("echo.wasm"));
    let job = schedule(&node, json!({ "name": "echo", "cron": "*/5 * * * *" }));
    let next = job["next"].as_u64().unwrap();
    assert_eq!(next % 300_000, 0, "every five minutes on the minute: {job}");
    assert_eq!(
        node.delete(&format!("/sched/{}", job["id"].as_str().unwrap()))
            .status,
        204
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let echo = component_bytes("echo.wasm");

    let long = "a".repeat(65);
    let bad_names = [
        "..%2Fx", "../x", "a%2Fb", "a/b", "", &long, "Echo", "a%00b", "%2E%2E", "a%zz",
    ];
    for name in bad_names {
        let message = node
            .post(&format!("/register?name={name}"), &echo)
            .error(400);
        assert!(!message.is_empty(), "{name}");
    }
    assert!(node.post("/register", &echo).error(400).contains("name"));

    let core_module = b"\0asm\x01\0\0\0";
    let cases: [(&[u8], &str); 3] = [
        (b"definitely not wasm", "not a WebAssembly binary"),
        (core_module, "core WebAssembly module"),
        (b"", "empty"),
    ];
    for (bytes, expected) in cases {
        let message = node.post("/register?name=bad", bytes).error(400);
        assert!(
            message.contains(expected),
            "expected `{expected}` in `{message}`"
        );
    }
    assert!(node.get("/handlers/bad").error(404).contains("bad"));

    // Over the handler limit (64 MiB), and over the request limit (72 MiB).
    let big = vec![0u8; 64 * 1024 * 1024 + 1];
    assert!(node
        .post("/register?name=big", &big)
        .error(413)
        .contains("at most"));
    let huge = vec![0u8; 72 * 1024 * 1024 + 1];
    assert!(node
        .post("/register?name=huge", &huge)
        .error(413)
        .contains("larger than"));

    register(&node, "echo", &echo);
    let sched_cases: [(&str, u16); 6] = [
        (r#"{"name": "echo", "cron": "not a cron line"}"#, 400),
        (r#"{"name": "echo", "cron": "* * * *"}"#, 400),
        (r#"{"name": "echo", "cron": "99 * * * *"}"#, 400),
        (r#"{"name": "echo""#, 400),
        (r#"{"name": "echo"}"#, 400),
        (r#"{"name": "nope", "cron": "* * * * *"}"#, 404),
    ];
    for (body, status) in sched_cases {
        node.post("/sched", body.as_bytes()).error(status);
    }
    assert!(node.post("/run/nope", b"x").error(404).contains("nope"));
    node.post("/run/Bad%2Fname", b"x").error(400);
    node.get("/handlers/echo/runs?limit=zero").error(400);
    node.get("/sched/nope/runs").error(404);
    node.delete("/sched/nope").error(404);

    assert_eq!(node.get("/health").status, 200, "still serving");
    assert_eq!(node.get("/sched").json(), json!([]));
    assert_eq!(
        tree(dir.path(), &[".wasmatic", "node.log"]),
        vec!["registered"],
        "no file is left behind: the node keeps registered bytes in its state"
    );
}

#[test]
fn a_failed_reregister_keeps_the_old_version_and_a_good_one_replaces_it() {
    let api = FakeApi::start(PRICE, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let echo = component_bytes("echo.wasm");
    let first = register(&node, "x", &echo);

    // A schedule of x keeps running whatever happens to x's registration.
    let job = schedule(
        &node,
        json!({ "name": "x", "cron": "* * * * * *", "input": api.price_url() }),
    );
    let job_runs = format!("/sched/{}/runs?limit=100", job["id"].as_str().unwrap());
    wait_for(Duration::from_secs(10), "a run of the echo version", || {
        runs(&node, &job_runs)
            .iter()
            .any(|r| r["output"] == api.price_url().as_str())
            .then_some(())
    });

    for bad in [&b"garbage"[..], b"\0asm\x01\0\0\0"] {
        node.post("/register?name=x", bad).error(400);
        assert_eq!(node.get("/handlers/x").json()["digest"], first["digest"]);
        assert_eq!(node.post("/run/x", b"still here").text(), "still here");
    }

    let second = register(&node, "x", &component_bytes("gecko.wasm"));
    assert_ne!(second["digest"], first["digest"]);
    let ran = node.post("/run/x", api.price_url().as_bytes());
    assert_eq!(
        serde_json::from_str::<Value>(&ran.text()).unwrap(),
        price_json()
    );
    wait_for(
        Duration::from_secs(10),
        "a scheduled run of the new version",
        || {
            runs(&node, &job_runs)
                .iter()
                .any(|r| r["output"].as_str().is_some_and(|o| o.contains("12345.67")))
                .then_some(())
        },
    );
}

#[test]
fn delete_removes_the_handler_its_file_and_its_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    register(&node, "echo", &component_bytes("echo.wasm"));
    let job = schedule(&node, json!({ "name": "echo", "cron": "0 0 1 1 *" }));
    let other = schedule(
        &node,
        json!({ "name": "echo", "cron": "0 0 1 1 *", "input": {"a": 1} }),
    );
    assert_eq!(
        other["input"], r#"{"a":1}"#,
        "non-string input is passed as JSON text"
    );

    assert_eq!(
        node.delete(&format!("/sched/{}", other["id"].as_str().unwrap()))
            .status,
        204
    );
    node.delete(&format!("/sched/{}", other["id"].as_str().unwrap()))
        .error(404);
    assert_eq!(node.get("/sched").json().as_array().unwrap().len(), 1);

    assert_eq!(node.delete("/handlers/echo").status, 204);
    assert!(!dir.path().join("registered/echo.wasm").exists());
    node.get("/handlers/echo").error(404);
    node.post("/run/echo", b"").error(404);
    assert_eq!(
        node.get("/sched").json(),
        json!([]),
        "its schedules went with it"
    );
    node.delete(&format!("/sched/{}", job["id"].as_str().unwrap()))
        .error(404);
    node.delete("/handlers/echo").error(404);
}

#[test]
fn a_failing_handler_gets_500_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    register(&node, "gecko", &component_bytes("gecko.wasm"));
    register(&node, "echo", &component_bytes("echo.wasm"));

    // Nothing listens on port 1.
    let message = node.post("/run/gecko", b"http://127.0.0.1:1/").error(500);
    assert!(message.contains("gecko"), "{message}");
    assert_eq!(node.post("/run/echo", b"fine").text(), "fine");

    let runs = runs(&node, "/handlers/gecko/runs");
    assert_eq!(runs[0]["ok"], false);
    assert!(
        runs[0]["error"].as_str().unwrap().contains("gecko"),
        "{}",
        runs[0]
    );
    assert!(
        runs[0]["stderr"].as_str().unwrap().contains("gecko:"),
        "{}",
        runs[0]
    );
}

#[test]
fn a_tick_that_finds_the_previous_run_going_is_skipped_and_recorded() {
    let slow_api = FakeApi::start(PRICE, Duration::from_millis(2500));
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    register(&node, "gecko", &component_bytes("gecko.wasm"));
    let job = schedule(
        &node,
        json!({ "name": "gecko", "cron": "* * * * * *", "input": slow_api.price_url() }),
    );
    let job_runs = format!("/sched/{}/runs?limit=100", job["id"].as_str().unwrap());
    let runs = wait_for(
        Duration::from_secs(15),
        "a skipped and a finished run",
        || {
            let runs = runs(&node, &job_runs);
            let skipped = runs.iter().any(|r| {
                r["ok"] == false && r["error"].as_str().is_some_and(|e| e.contains("skipped"))
            });
            let finished = runs.iter().any(|r| r["ok"] == true);
            (skipped && finished).then_some(runs)
        },
    );
    let finished = runs.iter().filter(|r| r["ok"] == true).count();
    assert!(
        slow_api.hits() <= finished + 1,
        "no overlapping runs: {} calls",
        slow_api.hits()
    );
}

#[test]
fn start_cleans_interrupted_uploads_and_survives_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let registered = dir.path().join("registered");
    std::fs::create_dir(&registered).unwrap();
    std::fs::write(registered.join(".upload-echo-0123.tmp"), b"half an upl").unwrap();
    std::fs::write(registered.join("broken.wasm"), b"not wasm").unwrap();
    std::fs::write(registered.join("echo.wasm"), component_bytes("echo.wasm")).unwrap();

    let node = start_node(dir.path());
    assert!(!registered.join(".upload-echo-0123.tmp").exists());
    let names: Vec<Value> = node
        .get("/handlers")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("echo")]);
    // An older node's component file is imported into the state and goes;
    // one that cannot be imported is logged and left alone.
    assert!(!registered.join("echo.wasm").exists());
    assert!(registered.join("broken.wasm").exists());
    assert!(node.log().contains("broken"), "{}", node.log());
    node.delete("/handlers/broken").error(404);
    assert!(node.terminate().success());
    let node = start_node(dir.path());
    assert_eq!(node.post("/run/echo", b"kept").text(), "kept");
}

#[test]
fn the_state_directory_must_lie_outside_every_granted_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = NodeBuilder::new(dir.path(), &["up", "--state-dir", "registered/state"])
        .env("WASMATIC_PORT", "0")
        .fail();
    assert!(stderr.contains("lies inside"), "{stderr}");
}

#[test]
fn a_stopping_node_finishes_and_records_its_scheduled_run_and_starts_none() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    register(&node, "nap", &component_bytes("misbehave.wasm"));
    let job = schedule(
        &node,
        json!({ "name": "nap", "cron": "* * * * * *", "input": "nap" }),
    );
    let job_runs = format!("/sched/{}/runs?limit=100", job["id"].as_str().unwrap());
    // Ticks fall on whole seconds and a run naps 2 s: 1.5 s after the
    // schedule was added, its first run is going and none has ended.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        runs(&node, &job_runs).iter().all(|r| r["ok"] != true),
        "no run has ended yet"
    );
    let stopped_at = wasmatic_state::now_ms();
    assert!(node.terminate().success());

    let node = start_node(dir.path());
    let recorded = runs(&node, &job_runs);
    let napped: Vec<&Value> = recorded
        .iter()
        .filter(|r| r["output"] == "napped")
        .collect();
    assert_eq!(
        napped.len(),
        1,
        "the run going at SIGTERM ended and was recorded: {recorded:?}"
    );
    assert!(napped[0]["started_at"].as_u64().unwrap() < stopped_at);
    assert!(
        recorded
            .iter()
            .all(|r| r["scheduled_for"].as_u64().unwrap() < stopped_at),
        "no tick after SIGTERM ran or was recorded: {recorded:?}"
    );
}

#[test]
fn a_handler_of_two_mib_of_code_registers_runs_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let wat_check = component_bytes("wat_check.wasm");
    let info = register(&node, "wat", &wat_check);
    assert_eq!(info["kind"], "handler");
    // The same bytes again are found by digest.
    assert_eq!(register(&node, "wat", &wat_check)["digest"], info["digest"]);
    let module = r#"(module (func (export "inc") (param i32) (result i32) local.get 0 i32.const 1 i32.add))"#;
    let checked = node.post("/run/wat", module.as_bytes());
    assert_eq!(checked.status, 200, "{}", checked.text());
    let checked = checked.json();
    assert_eq!(checked["bytes"], 40);
    let printed = checked["wat"].as_str().unwrap();
    assert!(printed.contains("(export \"inc\" (func 0))"), "{printed}");
    assert!(printed.contains("i32.add"), "{printed}");
    let invalid = node.post("/run/wat", b"(module (func (result i32) i64.const 1))");
    assert_eq!(invalid.status, 200);
    let error = invalid.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("type mismatch"), "{error}");
}

/// `bytes` with a custom section `name` holding `payload` appended: the same
/// component, other bytes.
fn with_custom_section(bytes: &[u8], payload: &[u8]) -> Vec<u8> {
    let name = b"wasmatic-test";
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "one LEB128 byte of size");
    let mut out = bytes.to_vec();
    out.extend_from_slice(&[0, size as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

#[test]
fn the_same_bytes_again_keep_their_digest_and_other_bytes_of_that_length_get_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let echo = component_bytes("echo.wasm");
    let (a, b) = (
        with_custom_section(&echo, b"aaaa"),
        with_custom_section(&echo, b"bbbb"),
    );
    assert_eq!(a.len(), b.len());
    let first = register(&node, "a", &a);
    assert_eq!(first["digest"], sha256_hex(&a));
    // Found among the kept copies, under its name and under another one.
    assert_eq!(register(&node, "a", &a)["digest"], first["digest"]);
    assert_eq!(register(&node, "a2", &a)["digest"], first["digest"]);
    // As long, not the same: hashed, and its own.
    let other = register(&node, "b", &b);
    assert_eq!(other["digest"], sha256_hex(&b));
    assert_ne!(other["digest"], first["digest"]);
    assert_eq!(node.post("/run/b", b"both run").text(), "both run");
    assert_eq!(node.post("/run/a2", b"both run").text(), "both run");
}
