//! Guests that use the component model's async ABI run like any other:
//! registered as handlers, run, called by export name, reused, scheduled and
//! held to the same limits.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{component_bytes, register, up, wait_for, Heartbeat};

#[test]
fn an_async_handler_runs_is_reused_scheduled_and_limited_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--call-timeout", "1s"]);
    let info = register(
        &node,
        "/register?name=async-echo&reuse=3",
        &component_bytes("async_echo.wasm"),
    );
    assert_eq!(info["kind"], "handler", "{info}");
    assert_eq!(
        info["exports"],
        json!([{ "name": "handler", "signature": "async handler(input: string) -> string" }])
    );

    // Run, with its audit entry in the run; called by export name too.
    let ran = node.post("/run/async-echo", b"hello");
    assert_eq!((ran.status, ran.text().as_str()), (200, "async: hello"));
    let run = &node.get("/handlers/async-echo/runs?limit=1").json()[0];
    assert_eq!(run["audit"][0]["message"], "async-echo: hello", "{run}");
    let called = node.post("/call/async-echo/handler", br#"["x"]"#);
    assert_eq!(called.json(), json!({ "result": "async: x" }));
    let yielded = node.post("/run/async-echo", b"yield");
    assert_eq!(yielded.text(), "yielded 100 times");

    // Reuse: three calls per instance, then a fresh one. The three above
    // used up the first instance.
    let counts: Vec<String> = (0..4)
        .map(|_| node.post("/run/async-echo", b"count").text())
        .collect();
    assert_eq!(counts, ["1", "2", "3", "1"]);

    // Limits: time, memory and a trap, each the call's own error, while
    // the node keeps answering.
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    let heartbeat = Heartbeat::start(node.addr);
    for (input, status, expected) in [
        ("loop", 504, "timed out after 1s"),
        ("grow", 500, "out of memory"),
        ("trap", 500, "async-echo: asked to trap"),
    ] {
        let message = node.post("/run/async-echo", input.as_bytes()).error(status);
        assert!(message.contains(expected), "{input}: `{message}`");
    }
    let (beats, failures) = heartbeat.stop();
    assert!(beats > 0 && failures.is_empty(), "{failures:?}");
    assert_eq!(
        node.post("/run/async-echo", b"after").text(),
        "async: after"
    );

    // Scheduled: every second, recorded as the schedule's runs.
    let job = node.post(
        "/sched",
        json!({ "name": "async-echo", "cron": "* * * * * *", "input": "tick" })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(job.status, 201, "{}", job.text());
    let id = job.json()["id"].as_str().expect("id").to_string();
    let fired: Vec<Value> = wait_for(Duration::from_secs(10), "a scheduled run", || {
        let runs = node.get(&format!("/sched/{id}/runs")).json();
        let runs = runs.as_array().cloned().unwrap_or_default();
        (!runs.is_empty()).then_some(runs)
    });
    assert_eq!(fired[0]["ok"], true, "{}", fired[0]);
    assert_eq!(fired[0]["output"], "async: tick");
}
