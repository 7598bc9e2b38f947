//! The clean edges of a node open to hostile clients: web origins, the
//! token and start-up settings, error bodies that name a request and no
//! internals, and the operator's own outbound calls under the node's policy.

mod support;

use std::path::Path;
use std::time::Duration;

use std::io::Read;

use support::{
    component, component_bytes, operator_node, up, wait_for, Node, NodeBuilder, Response,
};

#[test]
fn foreign_origins_cannot_change_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &[
            "--allow-origin",
            "https://good.example",
            "--request-timeout",
            "10m",
        ],
    );
    let echo = component_bytes("echo.wasm");
    let evil = [("origin", "https://evil.example")];
    let refused = node.request("POST", "/register?name=echo", &evil, &echo);
    let message = refused.error(403);
    assert!(
        message.contains("--allow-origin https://evil.example"),
        "{message}"
    );
    assert!(refused.header("x-request-id").is_some());
    assert_eq!(
        node.request("DELETE", "/handlers/echo", &evil, b"").status,
        403
    );
    assert!(!dir.path().join("registered/echo.wasm").exists());
    // Reading is not refused; the operator's answers carry a request id too.
    let health = node.request("GET", "/health", &evil, b"");
    assert_eq!(health.status, 200);
    assert!(health.header("x-request-id").is_some());

    let good = [("origin", "https://good.example")];
    let r = node.request("POST", "/register?name=echo", &good, &echo);
    assert_eq!(r.status, 201, "{}", r.text());
    let own_origin = format!("http://{}", node.addr);
    let own = [("origin", own_origin.as_str())];
    assert_eq!(
        node.request("POST", "/run/echo", &own, b"mine").text(),
        "mine"
    );
    assert_eq!(node.post("/run/echo", b"no origin").text(), "no origin");

    // The operator's compiled code is cached in the state directory, keyed
    // by its digest and its engine.
    let cached: Vec<_> = std::fs::read_dir(dir.path().join(".wasmatic/operator"))
        .expect("operator cache")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached.len() == 1 && cached[0].starts_with("operator-") && cached[0].ends_with(".cwasm"),
        "{cached:?}"
    );

    // No token on a public address: said once, at start.
    let warnings = node.log().matches("no $WASMATIC_TOKEN set").count();
    assert_eq!(warnings, 1, "{}", node.log());
}

/// A `wasi:http/proxy` component whose handler traps, or spins forever.
fn broken_operator(dir: &Path, body: &str) -> String {
    let wat = format!(
        r#"(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $req))
  (alias export $types "response-outparam" (type $out))
  (core module $m (func (export "handle") (param i32 i32) {body}))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $req)) (param "response-out" (own $out))
    (canon lift (core func $i "handle")))
  (instance $h (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $h)))"#
    );
    let path = dir.join("broken.wasm");
    std::fs::write(&path, wat::parse_str(&wat).expect("valid component")).unwrap();
    path.to_str().unwrap().to_string()
}

fn broken_node(dir: &Path, body: &str) -> Node {
    let operator = broken_operator(dir, body);
    NodeBuilder::new(
        dir,
        &[
            "wasm",
            "--addr",
            "127.0.0.1:0",
            "--request-timeout",
            "1s",
            &operator,
        ],
    )
    .start()
}

/// The node log's entries, each with its continuation lines.
fn log_entries(log: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for line in log.lines() {
        match entries.last_mut() {
            // Entries start with their timestamp; the rest continues one.
            Some(entry) if !line.starts_with("20") => {
                entry.push('\n');
                entry.push_str(line);
            }
            _ => entries.push(line.to_string()),
        }
    }
    entries
}

/// The request id a response names in its header.
fn request_id(r: &Response) -> String {
    r.header("x-request-id").expect("x-request-id").to_string()
}

#[test]
fn operator_failures_name_the_request_not_the_internals() {
    let dir = tempfile::tempdir().unwrap();
    let node = broken_node(dir.path(), "unreachable");
    let r = node.get("/anything");
    let message = r.error(500);
    let id = request_id(&r);
    assert_eq!(
        message,
        format!("the operator failed (request {id}); see the node log")
    );
    // The log entry has the same id and the whole story (over several
    // lines: the wasm backtrace).
    let entry = wait_for(Duration::from_secs(5), "the failure logged", || {
        log_entries(&node.log())
            .into_iter()
            .find(|e| e.contains("ERROR") && e.contains(&format!("request{{request_id={id}}}")))
    });
    assert!(entry.contains("unreachable"), "{entry}");
    // Listening on loopback without a token: no warning.
    assert!(!node.log().contains("no $WASMATIC_TOKEN set"));
    drop(node);

    let dir = tempfile::tempdir().unwrap();
    let node = broken_node(dir.path(), "(loop br 0)");
    let r = node.get("/anything");
    let message = r.error(504);
    assert_eq!(
        message,
        format!(
            "the operator timed out after 1s (request {})",
            request_id(&r)
        )
    );
    assert_eq!(node.get("/again").status, 504, "the node keeps serving");
}

#[test]
fn bad_start_up_settings_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = NodeBuilder::new(dir.path(), &["up", "--port", "0"])
        .env("WASMATIC_TOKEN", "")
        .fail();
    assert_eq!(code, Some(1));
    assert!(log.contains("$WASMATIC_TOKEN is set but empty"), "{log}");

    let (code, log) = NodeBuilder::new(
        dir.path(),
        &["up", "--port", "0", "--request-timeout", "99999999999s"],
    )
    .fail();
    assert_ne!(code, Some(0));
    assert!(log.contains("at most 10m"), "{log}");

    let (code, log) = NodeBuilder::new(
        dir.path(),
        &["up", "--port", "0", "--max-buffered-bodies", "1MiB"],
    )
    .fail();
    assert_eq!(code, Some(1));
    assert!(
        log.contains("--max-buffered-bodies (1MiB) is less than --max-request-body (72MiB)"),
        "{log}"
    );

    // Not UTF-8: the support builder takes strings, so spawn directly.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wasmatic"))
            .args(["up", "--port", "0"])
            .current_dir(dir.path())
            .env("WASMATIC_TOKEN", std::ffi::OsStr::from_bytes(b"\xff\xfe"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run wasmatic");
        let status = support::wait_exit(
            &mut child,
            Duration::from_secs(30),
            "wasmatic started with a token that is not UTF-8",
        );
        assert_eq!(status.code(), Some(1));
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        assert!(
            stderr.contains("$WASMATIC_TOKEN is not valid UTF-8"),
            "{stderr}"
        );
    }
}

/// The operator's own outbound HTTP passes the node's policy, as guests'
/// does: a custom operator reaches a loopback server only when
/// `--allow-outbound` names it.
#[test]
fn the_operators_outbound_calls_obey_the_node_policy() {
    let api = support::FakeApi::start("from the api", Duration::ZERO);
    let operator = component("custom_operator.wasm");
    let operator = operator.to_str().unwrap();
    let fetch = format!("/fetch/{}", api.addr);
    let allow = api.addr.to_string();
    for (flags, allowed) in [
        (vec![], false),
        (vec!["--allow-outbound", allow.as_str()], true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["wasm"];
        args.extend(flags);
        args.push(operator);
        let node = NodeBuilder::new(dir.path(), &args)
            .env("WASMATIC_PORT", "0")
            .start();
        let hits = api.hits();
        let r = node.get(&fetch);
        if allowed {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.text(), "from the api");
            assert_eq!(api.hits(), hits + 1);
        } else {
            assert_eq!(r.status, 502, "{}", r.text());
            assert!(r.text().contains("HttpRequestDenied"), "{}", r.text());
            assert_eq!(api.hits(), hits, "refused before connecting");
        }
    }
}

/// A node without a token says so at start when it listens beyond loopback,
/// and not when it listens on loopback or has a token.
#[test]
fn a_node_open_to_the_network_without_a_token_warns() {
    let warning = "no $WASMATIC_TOKEN set";
    let dir = tempfile::tempdir().unwrap();
    let open = up(dir.path(), &[]);
    assert!(open.log().contains(warning), "{}", open.log());
    drop(open);

    let dir = tempfile::tempdir().unwrap();
    let guarded = NodeBuilder::new(dir.path(), &["up"])
        .env("WASMATIC_PORT", "0")
        .env("WASMATIC_TOKEN", "s3cret")
        .start();
    assert!(!guarded.log().contains(warning), "{}", guarded.log());
    drop(guarded);

    let dir = tempfile::tempdir().unwrap();
    let local = operator_node(dir.path(), &[]).start();
    assert_eq!(local.get("/").status, 200);
    assert!(!local.log().contains(warning), "{}", local.log());
}
