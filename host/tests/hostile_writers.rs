//! Writers (with the token, or anyone on a node without one) whose
//! definitions try to stall the node, smuggle headers, leave runs hanging,
//! forge log lines or fill the node with components.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{component_bytes, post_json, up, wait_for, Node};

/// CPU time (user and system) the process has used, from the kernel.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The fields after the command name, which is in parentheses.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

const NEVER: &str = "0 0 0 31 2,4,6,9,11 *";

#[test]
fn cron_lines_that_never_fire_are_refused_and_restarts_stay_cheap() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let r = node.post("/register?name=echo", &component_bytes("echo.wasm"));
    assert_eq!(r.status, 201, "{}", r.text());
    let refused = post_json(&node, "/sched", json!({"name": "echo", "cron": NEVER}));
    let message = refused.error(400);
    assert!(message.contains("never fires"), "{message}");
    let workflow = json!({
        "name": "never", "trigger": {"cron": NEVER},
        "steps": [{"id": "a", "type": "run", "handler": "echo", "input": "x"}],
    });
    let refused = post_json(&node, "/workflows", workflow);
    assert!(
        refused.error(400).contains("never fires"),
        "{}",
        refused.text()
    );
    // A rare line is fine: February 29th.
    let leap = post_json(
        &node,
        "/sched",
        json!({"name": "echo", "cron": "0 0 0 29 2 *"}),
    );
    assert_eq!(leap.status, 201, "{}", leap.text());
    node.kill();

    // Schedules stored before such lines were refused are restored without
    // searching millennia for their next time.
    let db = rusqlite::Connection::open(dir.path().join(".wasmatic/state.db")).unwrap();
    for i in 0..96 {
        db.execute(
            "INSERT INTO jobs (id, name, cron, input, created_at) VALUES (?1, 'echo', ?2, '', 0)",
            (format!("never-{i}"), NEVER),
        )
        .unwrap();
    }
    drop(db);
    let node = up(dir.path(), &[]);
    let jobs = wait_for(
        Duration::from_secs(60),
        "the schedules to be restored",
        || {
            let jobs: Value = node.get("/sched").json();
            (jobs.as_array()?.len() == 97).then_some(jobs)
        },
    );
    let never = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "never-0")
        .unwrap();
    assert_eq!(never["next"], Value::Null, "{never}");
    // Starting (the operator's compiled code is cached by now) took the
    // node well under the seconds 96 unbounded searches cost.
    let spent = cpu_time(node.pid());
    assert!(spent < Duration::from_secs(8), "{spent:?} of CPU to start");
}

fn http_workflow(headers: Value) -> Value {
    json!({
        "name": "caller",
        "steps": [{"id": "a", "type": "http", "method": "GET",
                   "url": "http://api.example/x", "headers": headers}],
    })
}

#[test]
fn workflow_http_steps_cannot_set_the_headers_the_node_sets() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    for name in ["Host", "transfer-encoding", "Connection", "content-length"] {
        let refused = post_json(&node, "/workflows", http_workflow(json!({name: "x"})));
        let message = refused.error(400);
        assert!(
            message.contains(&format!("{name:?}")) && message.contains("set by the node"),
            "{name}: {message}"
        );
    }
    let fine = post_json(
        &node,
        "/workflows",
        http_workflow(json!({"x-api-key": "k"})),
    );
    assert_eq!(fine.status, 201, "{}", fine.text());
}

/// The runs of workflow `name`, newest first.
fn workflow_runs(node: &Node, name: &str) -> Vec<Value> {
    let runs: Value = node.get(&format!("/workflows/{name}/runs")).json();
    runs.as_array().cloned().unwrap_or_default()
}

#[test]
fn a_workflow_run_cut_off_with_its_request_still_finishes() {
    let dir = tempfile::tempdir().unwrap();
    // The operator's time is shorter than the workflow's step.
    let node = up(dir.path(), &["--request-timeout", "1s"]);
    let r = node.post(
        "/register?name=misbehave",
        &component_bytes("misbehave.wasm"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let workflow = json!({
        "name": "slow",
        "steps": [{"id": "nap", "type": "run", "handler": "misbehave", "input": "nap"}],
    });
    assert_eq!(post_json(&node, "/workflows", workflow).status, 201);
    let cut = node.post("/workflows/slow/run", b"{}");
    assert_eq!(cut.status, 504, "{}", cut.text());
    // The run goes on without the request, and is recorded as it ended.
    let run = wait_for(Duration::from_secs(60), "the run to finish", || {
        let runs = workflow_runs(&node, "slow");
        let run = runs.first()?.clone();
        (run["running"] != true).then_some(run)
    });
    assert_eq!(run["ok"], true, "{run}");
    assert_eq!(run["steps"][0]["output"], "napped", "{run}");
}

/// A WASI command job that prints `stdout` and exits.
fn printing_job(stdout: &str) -> Vec<u8> {
    let data: String = stdout.bytes().map(|b| format!("\\{b:02x}")).collect();
    wat::parse_str(format!(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write"
               (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 0) "\00\01\00\00{len}")
             (data (i32.const 256) "{data}")
             (func (export "_start")
               (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))"#,
        len = (stdout.len() as u32)
            .to_le_bytes()
            .iter()
            .map(|b| format!("\\{b:02x}"))
            .collect::<String>(),
    ))
    .unwrap()
}

#[test]
fn guest_text_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    // A job fails with text of its own choosing; as a workflow step with a
    // retry, its error is logged.
    let forged = "\n2026-01-01T00:00:00Z  INFO wasmatic: token accepted for admin\u{1b}[2J";
    let job = printing_job(&json!({"ok": false, "error": forged}).to_string());
    let seeded = post_json(
        &node,
        "/wasm/run",
        json!({"jobId": "seed", "wasmB64": support::base64(&job), "timeoutMs": 5000, "input": {}}),
    );
    assert_eq!(seeded.status, 200, "{}", seeded.text());
    assert!(seeded.json()["error"]
        .as_str()
        .unwrap()
        .contains("token accepted"));
    let workflow = json!({
        "name": "forger",
        "steps": [{"id": "a", "type": "job", "wasmHash": support::sha256_hex(&job),
                   "input": {}, "retries": 1}],
    });
    let stored = post_json(&node, "/workflows", workflow);
    assert_eq!(stored.status, 201, "{}", stored.text());
    let run = node.post("/workflows/forger/run", b"{}");
    assert_eq!(run.status, 200, "{}", run.text());
    assert_eq!(run.json()["ok"], false);
    let log = node.log();
    assert!(log.contains("workflow step failed, retrying"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
}

#[test]
fn the_number_of_components_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--max-components", "3"]);
    let echo = component_bytes("echo.wasm");
    for name in ["a", "b", "c"] {
        let r = node.post(&format!("/register?name={name}"), &echo);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let refused = node.post("/register?name=d", &echo);
    let message = refused.error(503);
    assert!(message.contains("--max-components"), "{message}");
    // Replacing one is not adding one; removing one makes room.
    assert_eq!(node.post("/register?name=a", &echo).status, 201);
    assert_eq!(node.delete("/handlers/b").status, 204);
    assert_eq!(node.post("/register?name=d", &echo).status, 201);
    let names: Vec<Value> = node.get("/handlers").json().as_array().unwrap().clone();
    assert_eq!(names.len(), 3);
}

#[test]
fn templates_over_a_large_trigger_are_cheap_and_leave_the_node_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let r = node.post("/register?name=echo", &component_bytes("echo.wasm"));
    assert_eq!(r.status, 201, "{}", r.text());
    // 63 conditions read the trigger, then one step uses it.
    let mut steps: Vec<Value> = (0..63)
        .map(|i| {
            json!({"id": format!("s{i}"), "type": "run", "handler": "echo",
                        "input": "x", "when": "{{ trigger.go and trigger.items | length > 1 }}"})
        })
        .collect();
    steps.push(json!({"id": "last", "type": "run", "handler": "echo",
                      "input": "{{ trigger.items | length }}"}));
    let stored = post_json(&node, "/workflows", json!({"name": "big", "steps": steps}));
    assert_eq!(stored.status, 201, "{}", stored.text());
    let items: Vec<Value> = (0..100_000)
        .map(|i| json!({"n": i, "s": "abcdefghijklmnopqrst"}))
        .collect();
    let trigger = json!({"go": false, "items": items}).to_string();
    assert!(trigger.len() > 3 << 20);

    let health = support::Heartbeat::start(node.addr);
    let before = cpu_time(node.pid());
    let run = node.post("/workflows/big/run", trigger.as_bytes());
    let spent = cpu_time(node.pid()) - before;
    let (ok, failures) = health.stop();
    assert_eq!(run.status, 200, "{}", run.text());
    let run = run.json();
    assert_eq!(run["ok"], true, "{run}");
    assert_eq!(run["result"], 100_000, "{}", run["result"]);
    assert!(failures.is_empty() && ok > 0, "{failures:?}");
    // The trigger is converted for the templates once, not 64 times.
    assert!(
        spent < Duration::from_secs(5),
        "{spent:?} of CPU for one run"
    );
}

#[test]
fn workflow_history_is_bounded_in_bytes_and_read_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--runs-bytes", "64MiB"]);
    let r = node.post("/register?name=echo", &component_bytes("echo.wasm"));
    assert_eq!(r.status, 201, "{}", r.text());
    let workflow = json!({
        "name": "w",
        "steps": [{"id": "a", "type": "run", "handler": "echo", "input": "hi"}],
    });
    assert_eq!(post_json(&node, "/workflows", workflow).status, 201);
    // 24 runs that keep a 4 MiB trigger each: 96 MiB, past the bound.
    let trigger = json!({"pad": "p".repeat(4 << 20)}).to_string();
    for _ in 0..24 {
        let run = node.post("/workflows/w/run", trigger.as_bytes());
        assert_eq!(run.status, 200, "{}", run.text());
    }
    // Two anonymous readers ask for everything at once: each page holds
    // one such run (4 MiB a page) and links to the next.
    let before = support::rss_bytes(node.pid());
    let peak = support::PeakRss::watch(node.pid());
    let addr = node.addr;
    let readers: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut path = "/workflows/w/runs?limit=1000".to_string();
                let mut runs = 0;
                loop {
                    let page = support::request(addr, "GET", &path, &[], b"");
                    assert_eq!(page.status, 200, "{}", page.text());
                    let listed = page.json().as_array().unwrap().len();
                    assert_eq!(listed, 1, "a page of 4 MiB holds one run");
                    runs += listed;
                    let Some(link) = page.header("link") else {
                        return runs;
                    };
                    path = link
                        .trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap()
                        .to_string();
                }
            })
        })
        .collect();
    for reader in readers {
        // 15 runs of a little over 4 MiB fit in 64 MiB; the oldest went.
        assert_eq!(reader.join().unwrap(), 15);
    }
    // Each reader holds a page a few times over (read, made JSON, handed to
    // the operator, answered); before, such listings took gigabytes.
    let peak = peak.stop();
    support::assert_rss_grew_less_than(before, peak, 256 << 20);
}
