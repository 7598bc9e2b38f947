//! Bad code and bad input never take the node down: limits, the outbound
//! policy, the token, and what a `kill -9` leaves behind.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{
    component_bytes, register, request_chunked, up, FakeApi, Heartbeat, Node, NodeBuilder,
};

const PRICE: &str = r#"{"bitcoin":{"usd":12345.67}}"#;

fn last_run(node: &Node, name: &str) -> Value {
    node.get(&format!("/handlers/{name}/runs?limit=1")).json()[0].clone()
}

#[test]
fn misbehaving_handlers_get_clear_errors_while_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--call-timeout", "1s"]);
    register(
        &node,
        "/register?name=misbehave",
        &component_bytes("misbehave.wasm"),
    );
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));

    let heartbeat = Heartbeat::start(node.addr);
    let cases = [
        ("trap", 500, "unreachable"),
        ("loop", 504, "timed out after 1s"),
        ("grow", 500, "out of memory"),
        ("recurse", 500, "stack overflow"),
        ("sleep", 504, "timed out after 1s"),
        ("big", 500, "at most 1MiB"),
    ];
    for (input, status, expected) in cases {
        let message = node.post("/run/misbehave", input.as_bytes()).error(status);
        assert!(
            message.contains(expected),
            "{input}: expected `{expected}` in `{message}`"
        );
        let run = last_run(&node, "misbehave");
        assert_eq!(run["ok"], false, "{input}: {run}");
        assert!(
            run["error"].as_str().unwrap().contains(expected),
            "{input}: {run}"
        );
    }

    // Megabytes of output: the run succeeds, its record keeps 256KiB of each
    // stream and says what it dropped.
    let printed = node.post("/run/misbehave", b"print");
    assert_eq!(printed.text(), "printed");
    let run = last_run(&node, "misbehave");
    for stream in ["stdout", "stderr"] {
        let text = run[stream].as_str().unwrap();
        assert!(
            text.len() < 256 * 1024 + 200,
            "{stream} kept {} bytes",
            text.len()
        );
        assert!(
            text.len() >= 256 * 1024,
            "{stream} kept only {} bytes",
            text.len()
        );
        assert!(
            text.contains("output truncated after 256KiB"),
            "{stream} says nothing of the rest"
        );
    }

    let (ok, failed) = heartbeat.stop();
    assert!(
        failed.is_empty(),
        "healthy calls failed during the faults: {failed:?}"
    );
    assert!(
        ok >= 20,
        "only {ok} healthy calls went through during the faults"
    );
    assert_eq!(node.get("/health").status, 200);
}

#[test]
fn handlers_see_no_host_environment_files_or_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path(), &["up"])
        .env("WASMATIC_PORT", "0")
        .env("NODE_SECRET", "do not leak")
        .start();
    register(
        &node,
        "/register?name=misbehave",
        &component_bytes("misbehave.wasm"),
    );
    assert_eq!(node.post("/run/misbehave", b"env").text(), "");
    assert_eq!(
        node.post("/run/misbehave", b"files").text(),
        "/: false\n.: false\nregistered: false\n/etc: false\n"
    );
}

#[test]
fn calls_beyond_the_concurrency_limit_get_503_not_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &["--max-concurrent-calls", "1", "--call-timeout", "2s"],
    );
    register(
        &node,
        "/register?name=misbehave",
        &component_bytes("misbehave.wasm"),
    );
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));

    let addr = node.addr;
    let sleeper =
        std::thread::spawn(move || support::request(addr, "POST", "/run/misbehave", &[], b"sleep"));
    std::thread::sleep(Duration::from_millis(500));
    let busy = node.post("/run/echo", b"x");
    assert!(busy.error(503).contains("--max-concurrent-calls"));
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(sleeper.join().unwrap().status, 504);
    assert_eq!(
        node.post("/run/echo", b"x").text(),
        "x",
        "the permit came back"
    );
}

#[test]
fn bodies_and_handlers_over_their_limits_get_413() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &["--max-request-body", "1MiB", "--max-handler-size", "100KiB"],
    );
    let two_mib = vec![7u8; 2 << 20];
    assert!(node
        .post("/register?name=big", &two_mib)
        .error(413)
        .contains("1MiB"));
    // Without a declared length the body is cut off at the limit.
    let chunked = request_chunked(node.addr, "POST", "/register?name=big", &two_mib);
    assert!(chunked.error(413).contains("larger than"));
    // gecko is about 200KiB.
    let message = node
        .post("/register?name=gecko", &component_bytes("gecko.wasm"))
        .error(413);
    assert!(message.contains("at most 100KiB"), "{message}");
    assert!(node.get("/handlers").json().as_array().unwrap().is_empty());
    // Bodies within the limit still go through, chunked or not.
    let echo = component_bytes("echo.wasm");
    assert_eq!(
        request_chunked(node.addr, "POST", "/register?name=echo", &echo).status,
        201
    );
    assert_eq!(node.post("/run/echo", b"fine").text(), "fine");
}

#[test]
fn outbound_calls_to_loopback_are_refused_unless_named() {
    let api = FakeApi::start(PRICE, Duration::ZERO);
    let gecko = component_bytes("gecko.wasm");
    let port = api.addr.port();
    let by_ip =
        format!("http://127.0.0.1:{port}/api/v3/simple/price?ids=bitcoin&vs_currencies=usd");
    let by_name =
        format!("http://localhost:{port}/api/v3/simple/price?ids=bitcoin&vs_currencies=usd");

    for flags in [vec![], vec!["--allow-outbound", "*"]] {
        let dir = tempfile::tempdir().unwrap();
        let node = up(dir.path(), &flags);
        register(&node, "/register?name=gecko", &gecko);
        for url in [&by_ip, &by_name] {
            let message = node.post("/run/gecko", url.as_bytes()).error(500);
            assert!(
                message.contains("HttpRequestDenied"),
                "{flags:?} {url}: {message}"
            );
            let stderr = last_run(&node, "gecko")["stderr"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                stderr.contains("outbound request refused") && stderr.contains("loopback"),
                "{stderr}"
            );
        }
    }
    assert_eq!(api.hits(), 0, "no refused request reached the server");

    // Named exactly (host and port), loopback is allowed.
    let dir = tempfile::tempdir().unwrap();
    let allowed = format!("127.0.0.1:{port}");
    let node = up(
        dir.path(),
        &[
            "--allow-outbound",
            &allowed,
            "--allow-outbound",
            "*.coingecko.com",
        ],
    );
    register(&node, "/register?name=gecko", &gecko);
    let ran = node.post("/run/gecko", by_ip.as_bytes());
    assert_eq!(ran.status, 200, "{}", ran.text());
    assert_eq!(api.hits(), 1);
    // `localhost` is not the name the rule gives.
    node.post("/run/gecko", by_name.as_bytes()).error(500);

    // A handler can be narrowed at registration, and that survives a restart.
    let narrowed = register(
        &node,
        "/register?name=narrow&allow=api.coingecko.com",
        &gecko,
    );
    assert_eq!(narrowed["allow_outbound"], json!(["api.coingecko.com"]));
    node.post("/run/narrow", by_ip.as_bytes()).error(500);
    assert!(last_run(&node, "narrow")["stderr"]
        .as_str()
        .unwrap()
        .contains("this handler's allow list"));
    assert!(node.terminate().success());
    let node = up(dir.path(), &["--allow-outbound", &allowed]);
    assert_eq!(
        node.get("/handlers/narrow").json()["allow_outbound"],
        json!(["api.coingecko.com"])
    );
    node.post("/run/narrow", by_ip.as_bytes()).error(500);
    assert_eq!(node.post("/run/gecko", by_ip.as_bytes()).status, 200);
    assert_eq!(api.hits(), 2);
    // A bad rule is refused at registration.
    assert!(node
        .post("/register?name=bad&allow=a/b", &gecko)
        .error(400)
        .contains("outbound rule"));
}

#[test]
fn a_token_guards_every_route_that_changes_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path(), &["up"])
        .env("WASMATIC_PORT", "0")
        .env("WASMATIC_TOKEN", "s3cret")
        .start();
    let echo = component_bytes("echo.wasm");
    let good = [("authorization", "Bearer s3cret")];
    let wrong = [("authorization", "Bearer guess")];

    let denied = node.post("/register?name=echo", &echo);
    assert!(denied.error(401).contains("Bearer"));
    assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
    assert!(node
        .request("POST", "/register?name=echo", &wrong, &echo)
        .error(401)
        .contains("wrong"));
    assert!(!dir.path().join("registered/echo.wasm").exists());
    assert_eq!(
        node.request("POST", "/register?name=echo", &good, &echo)
            .status,
        201
    );

    let job = json!({ "name": "echo", "cron": "0 0 1 1 *" }).to_string();
    node.post("/sched", job.as_bytes()).error(401);
    let created = node.request("POST", "/sched", &good, job.as_bytes());
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().unwrap().to_string();
    node.delete(&format!("/sched/{id}")).error(401);
    node.delete("/handlers/echo").error(401);

    // Reading and running need no token.
    assert_eq!(node.get("/handlers").json()[0]["name"], "echo");
    assert_eq!(node.post("/run/echo", b"open").text(), "open");

    assert_eq!(
        node.request("DELETE", &format!("/sched/{id}"), &good, b"")
            .status,
        204
    );
    assert_eq!(
        node.request("DELETE", "/handlers/echo", &good, b"").status,
        204
    );
}

#[test]
fn kill_9_during_registration_and_scheduling_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let addr = node.addr;
    let echo = component_bytes("echo.wasm");
    let gecko = component_bytes("gecko.wasm");

    // Writers register good and bad handlers and schedule the good ones
    // until the node dies under them.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (echo, gecko) = (echo.clone(), gecko.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new(); // (name, digest)
                let mut jobs = Vec::new();
                let mut refused = Vec::new();
                for i in 0..1000 {
                    let name = format!("w{w}-{i}");
                    let bytes: &[u8] = match i % 3 {
                        0 => &echo,
                        1 => &gecko,
                        _ => b"\0asm\x0d\0\x01\0 not a component",
                    };
                    let Some(r) =
                        try_request(addr, "POST", &format!("/register?name={name}"), bytes)
                    else {
                        break;
                    };
                    match r.status {
                        201 => acked.push((
                            name.clone(),
                            r.json()["digest"].as_str().unwrap().to_string(),
                        )),
                        400 => {
                            refused.push(name.clone());
                            continue;
                        }
                        s => panic!("unexpected {s}: {}", r.text()),
                    }
                    let job = json!({ "name": name, "cron": "0 0 1 1 *" }).to_string();
                    let Some(r) = try_request(addr, "POST", "/sched", job.as_bytes()) else {
                        break;
                    };
                    assert_eq!(r.status, 201, "{}", r.text());
                    jobs.push(r.json()["id"].as_str().unwrap().to_string());
                }
                (acked, jobs, refused)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    node.kill();
    let mut acked = Vec::new();
    let mut jobs = Vec::new();
    let mut refused = Vec::new();
    for writer in writers {
        let (a, j, r) = writer.join().unwrap();
        acked.extend(a);
        jobs.extend(j);
        refused.extend(r);
    }
    eprintln!(
        "before kill -9: {} registered, {} scheduled, {} refused",
        acked.len(),
        jobs.len(),
        refused.len()
    );
    assert!(
        acked.len() >= 3 && !refused.is_empty(),
        "too little happened: {} acked",
        acked.len()
    );

    let node = up(dir.path(), &[]);
    let handlers: Vec<Value> = node.get("/handlers").json().as_array().unwrap().clone();
    for (name, digest) in &acked {
        let found = handlers.iter().find(|h| h["name"] == name.as_str());
        assert_eq!(
            found.map(|h| h["digest"].clone()),
            Some(json!(digest)),
            "{name} was lost"
        );
    }
    for name in &refused {
        assert!(
            handlers.iter().all(|h| h["name"] != name.as_str()),
            "refused {name} is there"
        );
        assert!(!dir.path().join(format!("registered/{name}.wasm")).exists());
    }
    let scheduled: Vec<Value> = node.get("/sched").json().as_array().unwrap().clone();
    for id in &jobs {
        assert!(
            scheduled.iter().any(|j| j["id"] == id.as_str()),
            "schedule {id} was lost"
        );
    }
    support::assert_no_uploads_left(dir.path());
    let first_echo = &acked.iter().find(|(n, _)| n.ends_with("-0")).unwrap().0;
    assert_eq!(
        node.post(&format!("/run/{first_echo}"), b"after").text(),
        "after"
    );
}

/// One request, or `None` when the node is gone.
fn try_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<support::Response> {
    support::try_request(addr, method, path, &[], body).ok()
}
