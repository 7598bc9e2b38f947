//! What a node runner watches a node with: request ids (answered, logged on
//! every line of the request, quoted by errors), JSON log lines, and
//! `GET /metrics` read back with prometheus-client's OpenMetrics parser
//! (`make checks` installs it).

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{component_bytes, operator_node, register, up, wait_for, Node, NodeBuilder};

/// The log lines that name request `id` (the text format writes the span as
/// `request{request_id=ID}`).
fn lines_of(node: &Node, id: &str) -> Vec<String> {
    let tag = format!("request{{request_id={id}}}");
    node.log()
        .lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_string)
        .collect()
}

#[test]
fn request_ids_are_kept_or_made_and_name_the_request_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));

    // A well-formed id is kept, and every log line of the request carries
    // it: the host's, and the node's for the guest it ran.
    let mine = [("x-request-id", "trace-7f3A.b_9")];
    let run = node.request("POST", "/run/echo", &mine, b"hi");
    assert_eq!(run.text(), "hi");
    assert_eq!(run.header("x-request-id"), Some("trace-7f3A.b_9"));
    let lines = wait_for(Duration::from_secs(5), "the request's log lines", || {
        let lines = lines_of(&node, "trace-7f3A.b_9");
        (lines.len() >= 2).then_some(lines)
    });
    assert!(lines.iter().any(|l| l.contains("guest ran")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("uri=/run/echo")),
        "{lines:?}"
    );

    // Anything else is replaced by an id of the node's own, unique.
    let mut seen = Vec::new();
    for bad in ["", "two words", "x\"y", &"a".repeat(65)] {
        let answer = node.request("GET", "/health", &[("x-request-id", bad)], b"");
        let id = answer.header("x-request-id").expect("an id").to_string();
        assert_ne!(id, bad);
        assert!(
            id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{id}"
        );
        assert!(!seen.contains(&id));
        seen.push(id);
    }

    // Errors quote the id: the operator's and the host's own.
    let missing = node.request("POST", "/run/nobody", &mine, b"");
    missing.error(404);
    assert_eq!(missing.json()["request_id"], "trace-7f3A.b_9");
    let foreign = [("origin", "https://elsewhere.example")];
    let refused = node.request("POST", "/run/echo", &foreign, b"hi");
    refused.error(403);
    assert_eq!(
        refused.json()["request_id"].as_str(),
        refused.header("x-request-id")
    );
}

#[test]
fn the_operators_output_is_logged_under_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let node = operator_node(dir.path(), &[]).start();
    let said = node.request("GET", "/say/hello-log", &[("x-request-id", "said-1")], b"");
    assert_eq!(said.status, 200, "{}", said.text());
    let lines = wait_for(Duration::from_secs(5), "the operator's lines", || {
        let lines: Vec<String> = lines_of(&node, "said-1")
            .into_iter()
            .filter(|l| l.contains("hello-log") && l.contains(" operator: "))
            .collect();
        (lines.len() == 2).then_some(lines)
    });
    assert!(lines.iter().any(|l| l.contains("stream=\"stdout\"")));
    assert!(lines.iter().any(|l| l.contains("stream=\"stderr\"")));
}

#[test]
fn json_log_lines_parse_and_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--log-format", "json"]);
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    let run = node.request("POST", "/run/echo", &[("x-request-id", "json-1")], b"hi");
    assert_eq!(run.status, 200);
    let events = wait_for(Duration::from_secs(5), "the request's events", || {
        let events: Vec<serde_json::Value> = node
            .log()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .filter(|e: &serde_json::Value| e["span"]["request_id"] == "json-1")
            .collect();
        (events.len() >= 2).then_some(events)
    });
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default())
        .collect();
    assert!(messages.contains(&"guest ran"), "{messages:?}");
    let request = events
        .iter()
        .find(|e| e["message"] == "request")
        .expect("the request's own line");
    assert_eq!(request["status"], 200);
    assert_eq!(request["level"], "INFO");
}

/// Reads OpenMetrics text on stdin, strictly (it must end in `# EOF`,
/// each sample belong to a declared family of the right type), and writes
/// its samples as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = [
    {"name": s.name, "labels": s.labels, "value": s.value, "type": family.type}
    for family in text_string_to_metric_families(sys.stdin.read())
    for s in family.samples
]
json.dump(samples, sys.stdout)
"#;

/// The node's metrics, parsed as Prometheus would.
fn scrape(node: &Node, headers: &[(&str, &str)]) -> Vec<Value> {
    let answer = node.request("GET", "/metrics", headers, b"");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/checks-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make checks`",
        python.display()
    );
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&answer.body)
        .expect("write the metrics");
    let output = child.wait_with_output().expect("the parser's answer");
    assert!(
        output.status.success(),
        "not OpenMetrics: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        answer.text()
    );
    let samples: Value = serde_json::from_slice(&output.stdout).expect("JSON samples");
    samples.as_array().expect("samples").clone()
}

/// The sum of the samples `name` whose labels include `labels` (0 when
/// there is none yet).
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().expect("a number"))
        .sum()
}

#[test]
fn metrics_move_with_what_the_node_does() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let calls = |s: &[Value], outcome| {
        value(
            s,
            "wasmatic_handler_calls_total",
            &[("name", "echo"), ("outcome", outcome)],
        )
    };
    let runs = |s: &[Value], status| {
        value(
            s,
            "wasmatic_http_requests_total",
            &[("route", "/run/{name}"), ("status", status)],
        )
    };

    let before = scrape(&node, &[]);
    let misses = value(
        &before,
        "wasmatic_compile_cache_total",
        &[("cache", "memory"), ("result", "miss")],
    );
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    for _ in 0..3 {
        assert_eq!(node.post("/run/echo", b"hi").status, 200);
    }
    node.post("/run/nobody", b"").error(404);
    node.get("/no/such/route").error(404);
    // Reading runs waits until the run log has written them: its queue is
    // empty then.
    assert_eq!(node.get("/handlers/echo/runs").status, 200);

    let after = scrape(&node, &[]);
    assert_eq!(calls(&after, "ok") - calls(&before, "ok"), 3.0);
    assert_eq!(runs(&after, "200") - runs(&before, "200"), 3.0);
    assert_eq!(runs(&after, "404") - runs(&before, "404"), 1.0);
    // Unknown paths are counted under one label, never by their path.
    assert!(
        value(
            &after,
            "wasmatic_http_requests_total",
            &[("route", "other")]
        ) >= 1.0
    );
    assert!(!after
        .iter()
        .any(|s| s["labels"]["route"] == "/no/such/route"));
    assert_eq!(
        value(
            &after,
            "wasmatic_handler_call_duration_seconds_count",
            &[("name", "echo")]
        ),
        calls(&after, "ok"),
        "one duration per call"
    );
    assert!(
        value(
            &after,
            "wasmatic_compile_cache_total",
            &[("cache", "memory"), ("result", "miss")]
        ) > misses
    );
    // The scrape itself is an operator instance in use; the gauges exist.
    assert!(
        value(
            &after,
            "wasmatic_instances",
            &[("pool", "operator"), ("state", "in_use")]
        ) >= 1.0
    );
    assert_eq!(
        value(&after, "wasmatic_run_log_queue", &[]),
        0.0,
        "{after:?}"
    );

    // Removing the component drops its series.
    assert_eq!(node.delete("/handlers/echo").status, 204);
    let gone = scrape(&node, &[]);
    assert!(!gone.iter().any(|s| s["labels"]["name"] == "echo"));
}

#[test]
fn a_metrics_token_guards_the_metrics_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path(), &["up"])
        .env("WASMATIC_PORT", "0")
        .env("WASMATIC_METRICS_TOKEN", "m3trics")
        .start();
    let none = node.get("/metrics");
    assert!(none.error(401).contains("metrics token"));
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert!(none.json()["request_id"].is_string());
    let wrong = node.request("GET", "/metrics", &[("authorization", "Bearer nope")], b"");
    assert!(wrong.error(401).contains("wrong"));
    scrape(&node, &[("authorization", "Bearer m3trics")]);
    // The node itself stays open (no node token is set).
    assert_eq!(node.get("/health").status, 200);
    assert_eq!(node.get("/handlers").status, 200);
    drop(node);

    // Given on the command line, an empty token is refused.
    let (code, log) = NodeBuilder::new(dir.path(), &["up", "--metrics-token", ""])
        .env("WASMATIC_PORT", "0")
        .fail();
    assert_eq!(code, Some(1));
    assert!(log.contains("--metrics-token is empty"), "{log}");
}
