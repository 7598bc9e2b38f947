//! Components built elsewhere: imports the node does not define, linked at
//! registration to a registered provider (`link=IFACE=PROVIDER`), with the
//! component model's async ABI on both sides.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::{component_bytes, register, up, Node};

const CIPHER_LINK: &str = "link=acme:cipher/audit-log=auditor";

fn start(dir: &Path) -> Node {
    up(dir, &["--call-timeout", "5s"])
}

/// The `result` of `POST /call/NAME/FUNC` with `args`.
fn call(node: &Node, path: &str, args: Value) -> Value {
    let response = node.post(path, args.to_string().as_bytes());
    assert_eq!(response.status, 200, "{path} {args}: {}", response.text());
    response.json()["result"].clone()
}

/// The audit messages of `name`'s runs, newest run first.
fn audits(node: &Node, name: &str) -> Vec<Vec<String>> {
    let runs = node.get(&format!("/handlers/{name}/runs")).json();
    runs.as_array()
        .expect("runs")
        .iter()
        .map(|run| {
            assert_eq!(run["ok"], true, "{run}");
            run["audit"]
                .as_array()
                .expect("audit")
                .iter()
                .map(|e| e["message"].as_str().expect("message").to_string())
                .collect()
        })
        .collect()
}

/// A component (WAT) that exports `acme:cipher/audit-log@0.1.0` with
/// `auditrecord` of the type `params`, a function that does nothing.
fn provider_with(func: &str, params: &str, core_params: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            (core module $m
                (memory (export "memory") 1)
                (func (export "f") {core_params})
                (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))
            (core instance $i (instantiate $m))
            (func $f {params}
                (canon lift (core func $i "f") (memory (core memory $i "memory"))
                    (realloc (core func $i "realloc"))))
            (instance $iface (export "{func}" (func $f)))
            (export "acme:cipher/audit-log@0.1.0" (instance $iface)))"#
    ))
    .expect("valid component text")
}

/// How many times the node looked for compiled code on disk and had to
/// compile: a compile is first such a miss.
fn compiles(node: &Node) -> u64 {
    let text = node.get("/metrics").text();
    text.lines()
        .filter(|l| l.starts_with("wasmatic_compile_cache_total{"))
        .find(|l| l.contains(r#"cache="disk""#) && l.contains(r#"result="miss""#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_async_cipher_calls_its_linked_auditor_and_keeps_its_links_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let before = compiles(&node);
    let auditor = register(
        &node,
        "/register?name=auditor",
        &component_bytes("auditor.wasm"),
    );
    // An async component is tried on the sync engine first, which refuses
    // it before compiling: both are lookups of the cache.
    let one_compile = compiles(&node) - before;
    assert!(one_compile >= 1);
    assert_eq!(
        auditor["exports"][0]["signature"],
        "async auditrecord(action: string, detail: string)"
    );

    let compiled_before = compiles(&node);
    let cipher = register(
        &node,
        &format!("/register?name=cipher&env=SHIFT_AMOUNT=5&{CIPHER_LINK}"),
        &component_bytes("cipher.wasm"),
    );
    assert_eq!(
        compiles(&node) - compiled_before,
        one_compile,
        "a component registered with links is compiled once, composed (its types are read, not compiled)"
    );
    assert_eq!(
        cipher["links"],
        json!([{
            "interface": "acme:cipher/audit-log@0.1.0",
            "provider": "auditor",
            "runs_with": "the caller's configuration, outbound rules and limits, not the provider's own",
        }]),
        "the interface is named in full, as imported, and what the provider runs with is said"
    );
    assert_eq!(
        cipher["exports"],
        json!([
            { "name": "encr", "signature": "async encr(input: string) -> string" },
            { "name": "decr", "signature": "async decr(input: string) -> string" },
        ])
    );

    let secret = call(&node, "/call/cipher/encr", json!(["Hello, World"]));
    assert_eq!(secret, "Mjqqt, Btwqi");
    assert_eq!(
        call(&node, "/call/cipher/decr", json!([secret])),
        "Hello, World"
    );
    // The provider's records are the caller's: two per call, in its runs.
    assert_eq!(
        audits(&node, "cipher"),
        vec![
            vec!["decr: 12 characters, shift 5", "decr: done: 12 bytes"],
            vec!["encr: 12 characters, shift 5", "encr: done: 12 bytes"],
        ]
    );
    assert_eq!(
        node.get("/handlers/auditor/runs").json(),
        json!([]),
        "the provider ran within the cipher's calls, not on its own"
    );

    // Links survive a restart (the provider is loaded first).
    assert!(node.terminate().success());
    let node = start(dir.path());
    assert_eq!(
        node.get("/handlers/cipher").json()["links"],
        cipher["links"]
    );
    assert_eq!(call(&node, "/call/cipher/encr", json!(["abc"])), "fgh");
    assert_eq!(audits(&node, "cipher")[0].len(), 2);

    // A provider others link to stays until they are gone; then it goes.
    let refused = node.delete("/handlers/auditor");
    assert_eq!(refused.status, 409, "{}", refused.text());
    let message = refused.error(409);
    assert!(message.contains("`cipher`"), "{message}");
    assert_eq!(call(&node, "/call/cipher/decr", json!(["fgh"])), "abc");
    assert_eq!(node.delete("/handlers/cipher").status, 204);
    assert_eq!(node.delete("/handlers/auditor").status, 204);
}

#[test]
fn links_that_cannot_work_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let cipher = component_bytes("cipher.wasm");
    let refused = |query: &str, bytes: &[u8], status: u16| -> String {
        let response = node.post(&format!("/register?{query}"), bytes);
        response.error(status)
    };

    // An import the node does not define, unlinked.
    let message = refused("name=cipher", &cipher, 400);
    assert!(
        message.contains("`acme:cipher/audit-log@0.1.0`") && message.contains("link="),
        "{message}"
    );
    // A provider that is not registered.
    let message = refused(&format!("name=cipher&{CIPHER_LINK}"), &cipher, 404);
    assert!(message.contains("no component `auditor`"), "{message}");

    // A provider without the interface.
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    let message = refused("name=cipher&link=acme:cipher/audit-log=echo", &cipher, 400);
    assert!(
        message.contains("`echo` does not export `acme:cipher/audit-log@0.1.0`"),
        "{message}"
    );
    // A provider whose function has other types, or another name.
    register(
        &node,
        "/register?name=narrow",
        &provider_with("auditrecord", "(param \"action\" u32)", "(param i32)"),
    );
    let message = refused(
        "name=cipher&link=acme:cipher/audit-log=narrow",
        &cipher,
        400,
    );
    assert!(
        message.contains("function `auditrecord`")
            && message.contains("auditrecord(action: string, detail: string)")
            && message.contains("auditrecord(action: u32)"),
        "{message}"
    );
    register(
        &node,
        "/register?name=misnamed",
        &provider_with(
            "record",
            "(param \"action\" string) (param \"detail\" string)",
            "(param i32 i32 i32 i32)",
        ),
    );
    let message = refused(
        "name=cipher&link=acme:cipher/audit-log=misnamed",
        &cipher,
        400,
    );
    assert!(
        message.contains("does not export function `auditrecord`"),
        "{message}"
    );

    // Links to what the component does not import, or to what the node
    // provides itself, or twice; and a malformed link.
    register(
        &node,
        "/register?name=auditor",
        &component_bytes("auditor.wasm"),
    );
    let message = refused(
        &format!("name=cipher&{CIPHER_LINK}&link=acme:other/thing=auditor"),
        &cipher,
        400,
    );
    assert!(message.contains("does not import it"), "{message}");
    let message = refused(
        "name=gecko&link=wasi:http/outgoing-handler=auditor",
        &component_bytes("gecko.wasm"),
        400,
    );
    assert!(message.contains("provided by the node itself"), "{message}");
    let message = refused(
        &format!("name=cipher&{CIPHER_LINK}&link=acme:cipher/audit-log@0.1.0=auditor"),
        &cipher,
        400,
    );
    assert!(message.contains("linked twice"), "{message}");
    let message = refused("name=cipher&link=auditor", &cipher, 400);
    assert!(message.contains("INTERFACE=PROVIDER"), "{message}");

    // A new version of a provider must still provide what is linked to it.
    register(
        &node,
        &format!("/register?name=cipher&{CIPHER_LINK}"),
        &cipher,
    );
    let message = refused("name=auditor", &component_bytes("echo.wasm"), 409);
    assert!(
        message.contains("`cipher` is linked to `auditor`"),
        "{message}"
    );
    // Nothing was lost: the cipher still runs with its auditor.
    assert_eq!(call(&node, "/call/cipher/encr", json!(["abc"])), "def");
    assert_eq!(node.get("/health").status, 200);
}

#[test]
fn links_that_would_form_a_cycle_are_refused() {
    // `ping` imports acme:loop/pong and exports acme:loop/ping; `pong` the
    // other way round; `base` exports acme:loop/pong with no imports.
    let component = |import: &str, export: &str| -> Vec<u8> {
        wat::parse_str(format!(
            r#"(component
                (import "acme:loop/{import}@0.1.0" (instance $in (export "go" (func))))
                (core module $m (func (export "go")))
                (core instance $i (instantiate $m))
                (func $go (canon lift (core func $i "go")))
                (instance $out (export "go" (func $go)))
                (export "acme:loop/{export}@0.1.0" (instance $out)))"#
        ))
        .expect("valid component text")
    };
    let base = wat::parse_str(
        r#"(component
            (core module $m (func (export "go")))
            (core instance $i (instantiate $m))
            (func $go (canon lift (core func $i "go")))
            (instance $out (export "go" (func $go)))
            (export "acme:loop/pong@0.1.0" (instance $out)))"#,
    )
    .expect("valid component text");
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    register(&node, "/register?name=base", &base);
    register(
        &node,
        "/register?name=ping&link=acme:loop/pong=base",
        &component("pong", "ping"),
    );
    register(
        &node,
        "/register?name=pong&link=acme:loop/ping=ping",
        &component("ping", "pong"),
    );
    // ping → pong → ping.
    let refused = node.post(
        "/register?name=ping&link=acme:loop/pong=pong",
        &component("pong", "ping"),
    );
    let message = refused.error(400);
    assert!(message.contains("cycle: ping → pong → ping"), "{message}");
    // A component cannot provide to itself.
    register(&node, "/register?name=loop", &base);
    let refused = node.post(
        "/register?name=loop&link=acme:loop/pong=loop",
        &component("pong", "pong"),
    );
    assert!(refused.error(400).contains("to itself"));
    // The chain that was accepted still resolves: ping's base is intact.
    assert_eq!(
        node.get("/handlers/ping").json()["links"],
        json!([{ "interface": "acme:loop/pong@0.1.0", "provider": "base",
                 "runs_with": "the caller's configuration, outbound rules and limits, not the provider's own" }])
    );
}

/// A provider of `acme:cipher/audit-log@0.1.0` whose `auditrecord` (an
/// `async func`, lifted async with a callback) keeps nothing.
const SILENT_AUDITOR: &str = r#"(component
    (core func $task_return (canon task.return))
    (core module $m
        (import "" "task.return" (func $task_return))
        (memory (export "memory") 1)
        (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 64)
        (func (export "record") (param i32 i32 i32 i32) (result i32)
            call $task_return
            i32.const 0)
        (func (export "callback") (param i32 i32 i32) (result i32) unreachable))
    (core instance $i (instantiate $m
        (with "" (instance (export "task.return" (func $task_return))))))
    (type $record (func async (param "action" string) (param "detail" string)))
    (func $record (type $record)
        (canon lift (core func $i "record") async (callback (core func $i "callback"))
            (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
    (instance $iface (export "auditrecord" (func $record)))
    (export "acme:cipher/audit-log@0.1.0" (instance $iface)))"#;

#[test]
fn a_new_version_of_a_provider_serves_the_components_linked_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    register(
        &node,
        "/register?name=auditor",
        &component_bytes("auditor.wasm"),
    );
    register(
        &node,
        &format!("/register?name=cipher&{CIPHER_LINK}"),
        &component_bytes("cipher.wasm"),
    );
    assert_eq!(call(&node, "/call/cipher/encr", json!(["abc"])), "def");
    assert_eq!(audits(&node, "cipher")[0].len(), 2);

    // The silent auditor replaces it: the cipher is composed again with it.
    let silent = wat::parse_str(SILENT_AUDITOR).expect("valid component text");
    register(&node, "/register?name=auditor", &silent);
    assert_eq!(call(&node, "/call/cipher/encr", json!(["abc"])), "def");
    assert_eq!(audits(&node, "cipher")[0], Vec::<String>::new());

    // A restart composes it with the provider's current version too.
    assert!(node.terminate().success());
    let node = start(dir.path());
    assert_eq!(call(&node, "/call/cipher/decr", json!(["def"])), "abc");
    assert_eq!(audits(&node, "cipher")[0], Vec::<String>::new());
}

/// A component exporting the interfaces `test:fan/a0`…`a15`, each with
/// `f: func() -> u32`: made itself (`leaf`), or imported and passed on.
fn fan_component(leaf: bool) -> Vec<u8> {
    let mut wat = String::from("(component\n");
    if !leaf {
        // Each import is lowered and lifted again to be exported: a
        // component may not export an imported function as it is.
        wat.push_str(
            r#"(core module $pass (import "x" "f" (func $f (result i32))) (export "f" (func $f)))
            "#,
        );
    }
    if leaf {
        wat.push_str(
            r#"(core module $m (func (export "f") (result i32) i32.const 7))
               (core instance $i (instantiate $m))
               (func $f (result u32) (canon lift (core func $i "f")))
               (instance $one (export "f" (func $f)))
            "#,
        );
    }
    for i in 0..16 {
        if leaf {
            wat.push_str(&format!("(export \"test:fan/a{i}\" (instance $one))\n"));
        } else {
            wat.push_str(&format!(
                r#"(import "test:fan/a{i}" (instance $i{i} (export "f" (func (result u32)))))
                   (core func $low{i} (canon lower (func $i{i} "f")))
                   (core instance $c{i} (instantiate $pass (with "x" (instance (export "f" (func $low{i}))))))
                   (func $f{i} (result u32) (canon lift (core func $c{i} "f")))
                   (instance $e{i} (export "f" (func $f{i})))
                   (export "test:fan/a{i}" (instance $e{i}))
                "#
            ));
        }
    }
    wat.push(')');
    wat::parse_str(&wat).unwrap()
}

/// `POST /register` of `bytes` as `name`, its imports `a0`… linked to the
/// `providers` in turn (the last one for the rest).
fn register_fan(node: &Node, name: &str, providers: &[String], bytes: &[u8]) -> support::Response {
    let links: String = (0..16)
        .map(|i| {
            format!(
                "&link=test:fan/a{i}={}",
                providers[i.min(providers.len() - 1)]
            )
        })
        .collect();
    node.post(&format!("/register?name={name}{links}"), bytes)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn a_provider_reached_by_many_paths_is_composed_once_and_compositions_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let before = support::rss_bytes(node.pid());
    let peak = support::PeakRss::watch(node.pid());
    let (leaf, fan) = (fan_component(true), fan_component(false));
    for name in names("leaf", 64) {
        let r = node.post(&format!("/register?name={name}"), &leaf);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // 16 components each linked to 16 leaves (the first four to 16 of
    // their own, the rest to the same 16), and `top` linked to the twelve
    // that share their leaves: 193 paths, 29 components, each composed once.
    for (i, mid) in names("mid", 16).iter().enumerate() {
        let leaves = if i < 4 {
            names("leaf", 64)[i * 16..(i + 1) * 16].to_vec()
        } else {
            names("leaf", 16)
        };
        let r = register_fan(&node, mid, &leaves, &fan);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let top = register_fan(&node, "top", &names("mid", 16)[4..], &fan);
    assert_eq!(top.status, 201, "{}", top.text());
    assert_eq!(call(&node, "/call/top/test:fan%2Fa15.f", json!([])), 7);
    // One that reaches 64 leaves through 4 of them holds 69: refused before
    // anything is composed, naming the bound.
    let wide = register_fan(&node, "wide", &names("mid", 4), &fan);
    let message = wide.error(413);
    assert!(message.contains("more than 64 components"), "{message}");
    assert_eq!(node.get("/handlers/wide").status, 404);
    support::assert_rss_grew_less_than(before, peak.stop(), 512 << 20);
    assert_eq!(node.get("/health").status, 200);
}
