//! The node: `wasmatic up` and `wasmatic wasm` serving HTTP through an
//! operator component.

mod support;

use std::time::{Duration, Instant};

use support::{component, component_bytes, free_port, operator_node, NodeBuilder};

#[test]
fn up_serves_the_embedded_operator_on_wasmatic_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let node = NodeBuilder::new(dir.path(), &["up"])
        .env("WASMATIC_PORT", &port.to_string())
        .start();
    assert_eq!(node.addr.port(), port);

    let health = node.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({ "ok": true }));
    assert_eq!(health.header("content-type"), Some("application/json"));

    let missing = node.get("/no/such/route");
    assert!(missing.error(404).contains("/no/such/route"));
    assert!(node
        .request("PUT", "/health", &[], b"")
        .error(405)
        .contains("PUT"));

    assert!(
        dir.path().join("registered").is_dir(),
        "up creates ./registered"
    );
    assert!(
        node.log().contains("GET"),
        "requests are logged:\n{}",
        node.log()
    );
}

#[test]
fn up_port_flag_wins_over_wasmatic_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let node = NodeBuilder::new(dir.path(), &["up", "--port", &port.to_string()])
        .env("WASMATIC_PORT", "1")
        .start();
    assert_eq!(node.addr.port(), port);
    assert_eq!(node.get("/health").status, 200);
}

#[test]
fn up_runs_the_operator_named_by_wasmatic() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path(), &["up"])
        .env(
            "WASMATIC",
            component("custom_operator.wasm").to_str().unwrap(),
        )
        .env("WASMATIC_PORT", "0")
        .start();
    let hello = node.get("/");
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "hello from a custom operator\n");
    // Its routes, not the default operator's.
    assert_eq!(node.get("/health").status, 404);
}

#[test]
fn wasm_grants_dirs_and_env_to_a_custom_operator() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("host-data");
    std::fs::create_dir(&data).unwrap();
    let data_flag = format!("{}::data", data.display());
    let operator = component("custom_operator.wasm");
    let node = NodeBuilder::new(
        dir.path(),
        &[
            "wasm",
            "--dir",
            &data_flag,
            "--env",
            "GREETING=hello there",
            "--env",
            "INHERITED",
            "-S",
            "common",
            "-S",
            "http",
            "--addr",
            "127.0.0.1:0",
            operator.to_str().unwrap(),
        ],
    )
    .env("INHERITED", "from the host")
    .start();

    let stored = node.request("PUT", "/files/note.txt", &[], b"written by the operator");
    assert_eq!(stored.status, 201, "{}", stored.text());
    let read = node.get("/files/note.txt");
    assert_eq!(read.status, 200);
    assert_eq!(read.text(), "written by the operator");
    assert_eq!(
        std::fs::read_to_string(data.join("note.txt")).unwrap(),
        "written by the operator",
        "the file is on the host side of the mapping"
    );

    assert_eq!(node.get("/env/GREETING").text(), "hello there");
    assert_eq!(node.get("/env/INHERITED").text(), "from the host");
    assert_eq!(
        node.get("/env/HOME").status,
        404,
        "the host's environment is not leaked"
    );
}

#[test]
fn wasm_runs_the_seed_command_as_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("registered")).unwrap();
    std::fs::write(
        dir.path().join("proxy.wasm"),
        component_bytes("wasmatic_operator.wasm"),
    )
    .unwrap();
    let node = NodeBuilder::new(
        dir.path(),
        &[
            "wasm",
            "--dir",
            "registered::registered",
            "-S",
            "common",
            "-S",
            "http",
            "proxy.wasm",
        ],
    )
    .env("WASMATIC_PORT", "0")
    .start();
    assert_eq!(
        node.get("/health").json(),
        serde_json::json!({ "ok": true })
    );
    assert_eq!(node.get("/handlers").json(), serde_json::json!([]));
}

#[test]
fn wasm_takes_the_operator_from_wasmatic() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path(), &["wasm", "--addr", "127.0.0.1:0"])
        .env(
            "WASMATIC",
            component("custom_operator.wasm").to_str().unwrap(),
        )
        .start();
    assert_eq!(node.get("/").status, 200);
}

#[test]
fn bad_operators_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("random.wasm"), b"this is not webassembly").unwrap();
    // A core module: the smallest one there is.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let handler = component("echo.wasm");
    let cases: &[(&[&str], &str)] = &[
        (&["wasm"], "no operator given"),
        (
            &["wasm", "missing.wasm"],
            "cannot read the operator missing.wasm",
        ),
        (&["wasm", "random.wasm"], "not a valid component"),
        (&["wasm", "core.wasm"], "core WebAssembly module"),
        (
            &["wasm", handler.to_str().unwrap()],
            "not a wasi:http/proxy component",
        ),
        (&["wasm", "--dir", "nowhere::x", "random.wasm"], "nowhere"),
        (
            &["wasm", "-S", "http=n", "random.wasm"],
            "wasi:http cannot be disabled",
        ),
        (
            &["wasm", "-W", "no-such-option", "random.wasm"],
            "no-such-option",
        ),
    ];
    for (args, expected) in cases {
        let mut all = args.to_vec();
        all.extend(["--addr", "127.0.0.1:0"]);
        let (code, stderr) = NodeBuilder::new(dir.path(), &all).fail();
        assert!(code.is_some_and(|c| c != 0), "{args:?}: exit code {code:?}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected `{expected}` in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
        let error_lines = stderr.lines().filter(|l| l.contains("error")).count();
        assert!(error_lines <= 2, "{args:?}: one clear line, not:\n{stderr}");
    }
}

#[test]
fn sigterm_and_ctrl_c_let_in_flight_requests_finish() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let node = operator_node(dir.path(), &[]).start();
        let addr = node.addr;
        let slow =
            std::thread::spawn(move || support::request(addr, "GET", "/sleep/1500", &[], b""));
        std::thread::sleep(Duration::from_millis(400));
        let start = Instant::now();
        let status = node.signal(signal);
        let response = slow.join().unwrap();
        assert_eq!(response.status, 200, "SIG{signal}");
        assert_eq!(response.text(), "slept 1500ms\n");
        assert!(status.success(), "SIG{signal}: clean exit, not {status:?}");
        assert!(start.elapsed() < Duration::from_secs(30));
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "SIG{signal}: no longer listening"
        );
    }
}

#[test]
fn an_operator_past_its_time_limit_gets_504_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = operator_node(dir.path(), &["--request-timeout", "500ms"]).start();
    let message = node.get("/sleep/3000").error(504);
    assert!(message.contains("timed out after 500ms"), "{message}");
    assert_eq!(node.get("/sleep/10").status, 200);
}

#[test]
fn instances_are_reused_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let counts = |flags: &[&str], pause: Duration| {
        let node = operator_node(dir.path(), flags).start();
        (0..7)
            .map(|_| {
                std::thread::sleep(pause);
                node.get("/count").text()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(&[], Duration::ZERO),
        vec!["1"; 7],
        "a fresh instance per request by default"
    );
    assert_eq!(
        counts(&["--max-instance-reuse-count", "3"], Duration::ZERO),
        vec!["1", "2", "3", "1", "2", "3", "1"],
        "an instance answers at most 3 requests"
    );
    let idle = counts(
        &[
            "--max-instance-reuse-count",
            "100",
            "--idle-instance-timeout",
            "50ms",
        ],
        Duration::from_millis(120),
    );
    assert_eq!(idle, vec!["1"; 7], "idle instances expire");
}

/// `--pin-workers` (on by default) keeps each runtime worker on a core of
/// its own; `--pin-workers false` leaves every thread free to run anywhere.
/// Read from outside, in the kernel's view of the node's threads.
#[test]
fn workers_are_pinned_one_per_core_unless_told_not_to() {
    let allowed = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    if allowed.len() < 2 {
        eprintln!("fewer than two cores: nothing to pin");
        return;
    }
    // The runtime's threads (its workers and its blocking pool).
    let worker_cores = |pid: u32| -> Vec<Vec<usize>> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        tasks
            .filter_map(|task| {
                let dir = task.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                if name.trim_end() != "runtime" {
                    return None;
                }
                Some(cpus_allowed(
                    &std::fs::read_to_string(dir.join("status")).ok()?,
                ))
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let pinned = NodeBuilder::new(dir.path(), &["up", "--port", "0"]).start();
    assert_eq!(pinned.get("/health").status, 200);
    let cores = support::wait_for(Duration::from_secs(10), "pinned workers", || {
        let mut cores: Vec<usize> = worker_cores(pinned.pid())
            .into_iter()
            .filter(|cores| cores.len() == 1)
            .map(|cores| cores[0])
            .collect();
        cores.sort_unstable();
        cores.dedup();
        (cores.len() == allowed.len()).then_some(cores)
    });
    assert_eq!(cores, allowed, "one worker on each core");
    drop(pinned);

    let free =
        NodeBuilder::new(dir.path(), &["up", "--port", "0", "--pin-workers", "false"]).start();
    for _ in 0..20 {
        assert_eq!(free.get("/health").status, 200);
    }
    let workers = worker_cores(free.pid());
    assert!(!workers.is_empty(), "the node runs its runtime's threads");
    assert!(
        workers.iter().all(|cores| *cores == allowed),
        "no thread pinned: {workers:?}"
    );

    let refused = NodeBuilder::new(dir.path(), &["up", "--pin-workers", "maybe"]).fail();
    assert_eq!(refused.0, Some(2), "{}", refused.1);
    assert!(refused.1.contains("--pin-workers"), "{}", refused.1);
}

/// The cores in a `/proc/…/status`'s `Cpus_allowed_list` (`0-3,6`).
fn cpus_allowed(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc status");
    list.trim()
        .split(',')
        .flat_map(|range| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            first.parse::<usize>().unwrap()..=last.parse::<usize>().unwrap()
        })
        .collect()
}

#[test]
fn the_default_operator_answers_the_same_with_instance_reuse() {
    let echo = component_bytes("echo.wasm");
    let script = |flags: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["up"];
        args.extend_from_slice(flags);
        let node = NodeBuilder::new(dir.path(), &args)
            .env("WASMATIC_PORT", "0")
            .start();
        let requests: Vec<(&str, &str, &[u8])> = vec![
            ("GET", "/health", b""),
            ("POST", "/register?name=echo", &echo),
            ("POST", "/register?name=Bad", b"x"),
            ("POST", "/register?name=junk", b"not wasm"),
            ("POST", "/run/echo", b"first"),
            ("GET", "/handlers/junk", b""),
            ("POST", "/sched", b"{broken"),
            ("POST", "/run/echo", b"second"),
            ("GET", "/no/route", b""),
            ("DELETE", "/handlers/echo", b""),
            ("POST", "/run/echo", b"third"),
        ];
        requests
            .into_iter()
            .map(|(method, path, body)| {
                let r = node.request(method, path, &[], body);
                let mut json: serde_json::Value =
                    serde_json::from_slice(&r.body).unwrap_or_default();
                // What differs from node to node: times, request ids.
                if let Some(o) = json.as_object_mut() {
                    o.remove("loaded_at");
                    o.remove("request_id");
                }
                (
                    r.status,
                    if json.is_null() {
                        r.text()
                    } else {
                        json.to_string()
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    let fresh = script(&["--max-instance-reuse-count", "1"]);
    let reused = script(&[]); // `up` reuses instances by default
    let reused_often = script(&["--max-instance-reuse-count", "4"]);
    assert_eq!(reused, reused_often);
    assert_eq!(fresh, reused);
    assert_eq!(fresh[4], (200, "first".to_string()));
}

/// The committed operator is reproducible: it names no path of the machine
/// that built it (`make components` remaps them, see the Makefile), so any
/// checkout at any path with any CARGO_HOME builds the same bytes from
/// `operator/` and `wit/` with the pinned toolchain, and they are these.
#[test]
fn embedded_operator_is_current() {
    let embedded =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/proxy.wasm")).unwrap();
    let built = component_bytes("wasmatic_operator.wasm");
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate lies in the workspace");
    for (name, bytes) in [
        ("host/assets/proxy.wasm", &embedded),
        ("the built operator", &built),
    ] {
        if let Some(path) = machine_path(bytes, workspace) {
            panic!(
                "{name} names the build machine's path {path:?}: build it with `make components` \
                 (`make operator` to refresh the embedded copy), which remaps build paths"
            );
        }
    }
    assert!(
        built == embedded,
        "host/assets/proxy.wasm is stale against operator/ and wit/: run `make operator` and commit it"
    );
}

/// The first path in `bytes` that only the building machine has, as rustc
/// records paths for panic locations: a file of this checkout by its
/// absolute path (the operator's own files are recorded relative to it), or
/// a crate source under a CARGO_HOME (`…/registry/src/…`, `…/git/checkouts/…`).
fn machine_path(bytes: &[u8], workspace: &std::path::Path) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let workspace = workspace.to_string_lossy();
    let needles = [
        format!("{workspace}/operator/"),
        format!("{workspace}/crates/"),
        format!("{workspace}/wit/"),
        format!("{workspace}/target/"),
        "/registry/src/".to_string(),
        "/git/checkouts/".to_string(),
    ];
    needles.iter().find_map(|needle| {
        let at = text.find(needle.as_str())?;
        Some(
            text[at..]
                .chars()
                .take_while(|c| !c.is_control())
                .take(120)
                .collect(),
        )
    })
}
