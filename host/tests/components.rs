//! Components of any world, called by export name with JSON arguments, and
//! the capabilities the node offers every guest (audit log, configuration).

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::{component_bytes, Node, NodeBuilder};

fn start(dir: &Path) -> Node {
    NodeBuilder::new(dir, &["up", "--call-timeout", "2s"])
        .env("WASMATIC_PORT", "0")
        .start()
}

fn register(node: &Node, query: &str, bytes: &[u8]) -> Value {
    let response = node.post(&format!("/register?{query}"), bytes);
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()
}

fn call(node: &Node, path: &str, args: Value) -> support::Response {
    node.post(path, args.to_string().as_bytes())
}

/// The `result` of a successful call.
fn result(node: &Node, path: &str, args: Value) -> Value {
    let response = call(node, path, args.clone());
    assert_eq!(response.status, 200, "{path} {args}: {}", response.text());
    let answer = response.json();
    assert_eq!(
        answer.as_object().map(|o| o.len()),
        Some(1),
        "only `result`: {answer}"
    );
    answer["result"].clone()
}

fn runs(node: &Node, name: &str) -> Vec<Value> {
    let response = node.get(&format!("/handlers/{name}/runs"));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json().as_array().cloned().expect("array of runs")
}

#[test]
fn the_cipher_round_trips_with_its_configured_shift_and_audit_records() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let caesar = component_bytes("caesar.wasm");

    let info = register(&node, "name=caesar&env=SHIFT_AMOUNT=5", &caesar);
    assert_eq!(info["kind"], "component");
    assert_eq!(info["config_keys"], json!(["SHIFT_AMOUNT"]));
    assert_eq!(
        info["exports"],
        json!([
            { "name": "encrypt", "signature": "encrypt(text: string) -> string" },
            { "name": "decrypt", "signature": "decrypt(text: string) -> string" },
        ])
    );
    // Configuration values may be secrets: they are never shown.
    assert!(!node
        .get("/handlers/caesar")
        .text()
        .contains("SHIFT_AMOUNT=5"));

    let secret = result(&node, "/call/caesar/encrypt", json!(["Hello, World! xyz"]));
    assert_eq!(secret, "Mjqqt, Btwqi! cde");
    let plain = result(&node, "/call/caesar/decrypt", json!([secret]));
    assert_eq!(plain, "Hello, World! xyz");

    let recorded = runs(&node, "caesar");
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0]["function"], "decrypt");
    assert_eq!(recorded[0]["output"], "\"Hello, World! xyz\"");
    assert_eq!(
        recorded[0]["audit"],
        json!([{ "level": "info", "message": "decrypt: 17 characters, shift 5" }])
    );
    assert_eq!(recorded[1]["function"], "encrypt");
    assert_eq!(
        recorded[1]["audit"],
        json!([{ "level": "info", "message": "encrypt: 17 characters, shift 5" }])
    );
    assert!(
        node.log().contains("encrypt: 17 characters, shift 5"),
        "audit entries reach the node's log:\n{}",
        node.log()
    );

    // The configuration survives a restart.
    assert!(node.terminate().success());
    let node = start(dir.path());
    assert_eq!(result(&node, "/call/caesar/encrypt", json!(["abc"])), "fgh");

    // Registering again replaces the configuration: none means the default
    // shift, a bad one fails the call with the cipher's own words.
    register(&node, "name=caesar", &caesar);
    assert_eq!(result(&node, "/call/caesar/encrypt", json!(["abc"])), "def");
    register(&node, "name=caesar&env=SHIFT_AMOUNT=99", &caesar);
    let message = call(&node, "/call/caesar/encrypt", json!(["abc"])).error(500);
    assert!(
        message.contains("SHIFT_AMOUNT=\"99\" is not a number from 0 to 25"),
        "{message}"
    );
    let failed = &runs(&node, "caesar")[0];
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["audit"][0]["level"], "error");
}

#[test]
fn json_becomes_component_values_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    register(&node, "name=typed", &component_bytes("typed.wasm"));
    let t = |func: &str, args: Value| result(&node, &format!("/call/typed/{func}"), args);

    assert_eq!(t("add", json!([2, 3])), json!(5));
    assert_eq!(t("add", json!([-7, 2])), json!(-5));
    assert_eq!(t("greet", json!([null])), json!("hello, stranger"));
    assert_eq!(t("greet", json!(["Ann"])), json!("hello, Ann"));
    assert_eq!(t("stats", json!([[1, 2, 3.5]])), json!([6.5, 6.5 / 3.0, 3]));
    assert_eq!(t("find", json!([["a", "b"], "b"])), json!(1));
    assert_eq!(t("find", json!([["a"], "z"])), Value::Null);
    assert_eq!(t("divide", json!([7, 2])), json!({ "ok": 3 }));
    assert_eq!(
        t("divide", json!([1, 0])),
        json!({ "err": "cannot divide 1 by 0" })
    );
    assert_eq!(t("initial", json!(["élan"])), json!("é"));
    assert_eq!(t("initial", json!([""])), Value::Null);
    assert_eq!(t("negate", json!([true])), json!(false));
    assert_eq!(t("widest", json!([])), json!(u64::MAX));
    assert_eq!(t("bytes", json!(["hi"])), json!([104, 105]));
    assert_eq!(t("nothing", json!([])), Value::Null);

    // Inside an exported interface: by its short name or its full name
    // (percent-encoded, as it holds a `/`).
    assert_eq!(
        t("shapes.area", json!([{ "rect": { "x": 2, "y": 3 } }])),
        json!(6.0)
    );
    assert_eq!(t("shapes.area", json!(["empty"])), json!(0.0));
    assert_eq!(
        t("shapes.mirror", json!([{ "x": 1, "y": 2.5 }])),
        json!({ "x": 2.5, "y": 1.0 })
    );
    assert_eq!(
        t("shapes.parse", json!(["circle 2"])),
        json!({ "ok": { "circle": 2.0 } })
    );
    assert_eq!(
        t("shapes.parse", json!(["empty"])),
        json!({ "ok": "empty" })
    );
    assert_eq!(
        t("shapes.parse", json!(["hexagon"])),
        json!({ "err": "not a shape: \"hexagon\"" })
    );
    assert_eq!(t("shapes.complement", json!(["blue"])), json!("red"));
    assert_eq!(
        t("shapes.grant", json!([["read"], ["exec", "read"]])),
        json!(["read", "exec"])
    );
    assert_eq!(t("shapes.grant", json!([[], []])), json!([]));
    assert_eq!(
        t(
            "example:typed%2Fshapes@0.1.0.describe",
            json!([{ "text": "hi", "color": "green", "at": { "x": 1, "y": -2 } }])
        ),
        json!("green \"hi\" at (1, -2)")
    );
    // A missing optional field is none.
    assert_eq!(
        t("shapes.describe", json!([{ "text": "hi", "color": "red" }])),
        json!("red \"hi\"")
    );
}

#[test]
fn wrong_arguments_name_the_signature_and_unknown_exports_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    register(&node, "name=typed", &component_bytes("typed.wasm"));
    let add = "`add(a: s32, b: s32) -> s32`";
    let cases = [
        ("add", json!([1]), add, "takes 2 arguments, got 1"),
        ("add", json!([1, "x"]), add, "b: expected s32, got a string"),
        ("add", json!([3_000_000_000u64, 1]), add, "a: expected s32"),
        ("add", json!([1.5, 1]), add, "a: expected s32"),
        (
            "shapes.complement",
            json!(["purple"]),
            "complement(color: enum { red, green, blue })",
            "expected enum",
        ),
        (
            "shapes.area",
            json!([{ "square": 1 }]),
            "area(shape: variant { circle(f64), rect(record { x: f64, y: f64 }), empty }) -> f64",
            "got an object",
        ),
        (
            "shapes.mirror",
            json!([{ "x": 1 }]),
            "mirror(p: record",
            "p.y: expected f64, got nothing",
        ),
        (
            "shapes.describe",
            json!([{ "text": "a", "colour": "red" }]),
            "describe(label: record",
            "label.colour",
        ),
        (
            "shapes.grant",
            json!([["read"], ["fly"]]),
            "grant(have: flags { read, write, exec }",
            "add: expected flags",
        ),
        (
            "initial",
            json!([7]),
            "initial(word: string)",
            "expected string",
        ),
    ];
    for (func, args, signature, problem) in cases {
        let message = call(&node, &format!("/call/typed/{func}"), args.clone()).error(400);
        assert!(
            message.contains(signature) && message.contains(problem),
            "{func} {args}: `{signature}` and `{problem}` expected in `{message}`"
        );
    }
    assert!(node
        .post("/call/typed/add", b"{\"a\": 1}")
        .error(400)
        .contains("JSON array"));

    for missing in ["nope", "shapes.nope", "nope.area", "shapes"] {
        let message = call(&node, &format!("/call/typed/{missing}"), json!([])).error(404);
        assert!(
            message.contains(missing) && message.contains("example:typed/shapes@0.1.0.area"),
            "{message}"
        );
    }
    assert!(call(&node, "/call/nothing-here/f", json!([]))
        .error(404)
        .contains("nothing-here"));
    // Bad calls are not runs.
    assert!(runs(&node, "typed").is_empty());
}

#[test]
fn components_of_other_worlds_are_registered_with_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());

    let echo = register(&node, "name=echo", &component_bytes("echo.wasm"));
    assert_eq!(echo["kind"], "handler");
    assert_eq!(
        echo["exports"],
        json!([{ "name": "handler", "signature": "handler(input: string) -> string" }])
    );
    // A handler's export can be called by name too.
    assert_eq!(
        result(&node, "/call/echo/handler", json!(["by name"])),
        "by name"
    );

    // An HTTP proxy is a component of another world: it can be kept, its
    // exports listed, but not run or scheduled as a handler.
    let proxy = register(&node, "name=proxy", &component_bytes("hello_proxy.wasm"));
    assert_eq!(proxy["kind"], "component");
    assert_eq!(
        proxy["exports"][0]["name"],
        "wasi:http/incoming-handler@0.2.12.handle"
    );
    let listed = node.get("/handlers/proxy").json();
    assert_eq!(listed["exports"], proxy["exports"]);
    let message = node.post("/run/proxy", b"x").error(400);
    assert!(message.contains("not of the handler world"), "{message}");
    let message = node
        .post(
            "/sched",
            json!({ "name": "proxy", "cron": "* * * * *" })
                .to_string()
                .as_bytes(),
        )
        .error(400);
    assert!(message.contains("not of the handler world"), "{message}");
    // Its export takes resources, which JSON cannot give.
    let message = call(&node, "/call/proxy/incoming-handler.handle", json!([1, 2])).error(400);
    assert!(message.contains("resource"), "{message}");

    let kinds: Vec<(String, String)> = node
        .get("/handlers")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().into(),
                h["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("echo".to_string(), "handler".to_string()),
            ("proxy".to_string(), "component".to_string())
        ]
    );
}

#[test]
fn a_guest_importing_what_the_node_does_not_offer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let vault = wat::parse_str(
        r#"(component
             (import "acme:vault/secrets@1.0.0" (instance
               (export "open" (func (param "name" string) (result string)))))
           )"#,
    )
    .unwrap();
    let message = node.post("/register?name=vault", &vault).error(400);
    assert!(message.contains("acme:vault/secrets@1.0.0"), "{message}");
    node.get("/handlers/vault").error(404);
    assert!(!dir.path().join("registered/vault.wasm").exists());
    support::assert_no_uploads_left(dir.path());

    // Bad configuration is refused before anything is kept.
    let caesar = component_bytes("caesar.wasm");
    for (query, problem) in [
        ("env=SHIFT", "KEY=VALUE"),
        ("env==5", "KEY=VALUE"),
        ("env=A=1&env=A=2", "given twice"),
    ] {
        let message = node
            .post(&format!("/register?name=caesar&{query}"), &caesar)
            .error(400);
        assert!(message.contains(problem), "{query}: {message}");
    }
    node.get("/handlers/caesar").error(404);
    assert!(!dir.path().join("registered/caesar.wasm").exists());
    support::assert_no_uploads_left(dir.path());
    assert_eq!(node.get("/health").status, 200);
}

#[test]
fn a_handlers_configuration_is_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let misbehave = component_bytes("misbehave.wasm");
    let info = register(
        &node,
        "name=misbehave&env=GREETING=hello%20there&env=MODE=a%3Db",
        &misbehave,
    );
    assert_eq!(info["kind"], "handler");
    assert_eq!(info["config_keys"], json!(["GREETING", "MODE"]));
    let env = node.post("/run/misbehave", b"env");
    assert_eq!(env.status, 200, "{}", env.text());
    assert_eq!(env.text(), "GREETING=hello there\nMODE=a=b\n");

    // Registering without configuration clears it.
    register(&node, "name=misbehave", &misbehave);
    assert_eq!(node.post("/run/misbehave", b"env").text(), "");
}

#[test]
fn handlers_may_opt_in_to_instance_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(
        dir.path(),
        &[
            "up",
            "--call-timeout",
            "2s",
            "--idle-instance-timeout",
            "300ms",
        ],
    )
    .env("WASMATIC_PORT", "0")
    .start();
    let misbehave = component_bytes("misbehave.wasm");
    let count = || {
        let r = node.post("/run/misbehave", b"count");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    };

    // By default every call gets a fresh instance.
    let info = register(&node, "name=misbehave", &misbehave);
    assert_eq!(info["reuse"], 1);
    assert_eq!([count(), count(), count()], ["1", "1", "1"]);

    // With reuse=3 an instance serves three calls, then a fresh one comes.
    let info = register(&node, "name=misbehave&reuse=3", &misbehave);
    assert_eq!(info["reuse"], 3);
    let counts: Vec<String> = (0..5).map(|_| count()).collect();
    assert_eq!(counts, ["1", "2", "3", "1", "2"]);

    // Output is captured per call, not carried over.
    let printed = node.post("/run/misbehave", b"print");
    assert_eq!(printed.status, 200);
    assert_eq!(count(), "1", "rotated after three uses");
    let runs = runs(&node, "misbehave");
    assert_eq!(runs[0]["output"], "1");
    assert_eq!(runs[0]["stdout"], "");
    assert!(runs[1]["stdout"].as_str().unwrap().len() > 200_000);

    // An instance that trapped is never used again (it had served one call:
    // reused, it would answer 3).
    node.post("/run/misbehave", b"trap").error(500);
    assert_eq!(count(), "1");

    // Idle instances expire.
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(count(), "1");

    // The setting survives a restart.
    assert!(node.terminate().success());
    let node = start(dir.path());
    assert_eq!(node.get("/handlers/misbehave").json()["reuse"], 3);
    let again: Vec<String> = (0..2)
        .map(|_| node.post("/run/misbehave", b"count").text())
        .collect();
    assert_eq!(again, ["1", "2"]);

    for bad in ["0", "10001", "many", "-1"] {
        let message = node
            .post(&format!("/register?name=misbehave&reuse={bad}"), &misbehave)
            .error(400);
        assert!(message.contains("reuse"), "{bad}: {message}");
    }
    assert_eq!(node.get("/handlers/misbehave").json()["reuse"], 3);
}

#[test]
fn scheduled_runs_of_a_reused_handler_read_their_tick_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let misbehave = component_bytes("misbehave.wasm");
    register(&node, "name=fresh", &misbehave);
    register(&node, "name=reused&reuse=100", &misbehave);
    for name in ["fresh", "reused"] {
        let r = node.post(
            "/sched",
            json!({ "name": name, "cron": "* * * * * *", "input": "tick" })
                .to_string()
                .as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let enough = |name: &str| {
        support::wait_for(std::time::Duration::from_secs(10), "two ticks", || {
            let done = runs(&node, name);
            (done.len() >= 2).then_some(done)
        })
    };
    for run in enough("fresh") {
        let tick = run["scheduled_for"].as_u64().unwrap();
        assert_eq!(
            run["output"],
            format!("config Some(\"{tick}\"), env Some(\"{tick}\")")
        );
    }
    // A reused instance keeps the environment it started with, which holds
    // no tick; its configuration always has the current one.
    for run in enough("reused") {
        let tick = run["scheduled_for"].as_u64().unwrap();
        assert_eq!(run["output"], format!("config Some(\"{tick}\"), env None"));
    }
}
