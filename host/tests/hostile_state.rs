//! Hostile input against the node's stored state: run history that cannot
//! grow without bound or be read all at once, schedules that cannot crowd
//! out clients, names that cannot be shared across kinds, and registrations
//! that cannot swap each other's code and settings.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{component_bytes, post_json, register, sha256_hex, up, wait_for, FakeApi};

/// `?limit=1000` of large runs answers a page bounded in bytes, with a
/// `Link` to the next; following the links reads every run exactly once.
#[test]
fn run_history_is_read_in_pages_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    let big = "x".repeat(900 * 1024);
    for i in 0..12 {
        let input = format!("{i:02}{big}");
        assert_eq!(node.post("/run/echo", input.as_bytes()).status, 200);
    }
    let mut path = "/handlers/echo/runs?limit=1000".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = node.get(&path);
        assert_eq!(page.status, 200, "{}", page.text());
        assert!(
            page.body.len() < 6 << 20,
            "a page holds {} bytes",
            page.body.len()
        );
        for run in page.json().as_array().unwrap() {
            seen.push(run["output"].as_str().unwrap()[..2].to_string());
        }
        pages += 1;
        let Some(link) = page.header("link") else {
            break;
        };
        let next = link
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(url, _)| url.to_string())
            .expect("a Link header of the form <URL>; rel=\"next\"");
        assert!(link.ends_with("rel=\"next\""), "{link}");
        path = next;
    }
    assert!(pages >= 3, "12 runs of 900KiB need several pages: {pages}");
    let expected: Vec<String> = (0..12).rev().map(|i| format!("{i:02}")).collect();
    assert_eq!(seen, expected, "newest first, each once");
    node.get("/handlers/echo/runs?limit=1001").error(400);
    node.get("/handlers/echo/runs?before=soon").error(400);
}

#[test]
fn run_history_is_bounded_in_all_and_goes_with_its_component() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--runs-total", "10", "--runs-kept", "6"]);
    register(&node, "/register?name=a", &component_bytes("echo.wasm"));
    register(&node, "/register?name=b", &component_bytes("echo.wasm"));
    for i in 0..8 {
        node.post("/run/a", format!("a{i}").as_bytes());
        node.post("/run/b", format!("b{i}").as_bytes());
    }
    let count = |name: &str| {
        node.get(&format!("/handlers/{name}/runs?limit=100"))
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    assert!(count("a") <= 6 && count("b") <= 6);
    assert!(
        count("a") + count("b") <= 10,
        "{} + {}",
        count("a"),
        count("b")
    );
    assert_eq!(
        node.get("/handlers/b/runs?limit=1").json()[0]["output"],
        "b7",
        "the newest stay"
    );

    // Removing a component removes its history: a new one of the same name
    // starts with none.
    assert_eq!(node.delete("/handlers/a").status, 204);
    node.get("/handlers/a/runs").error(404);
    register(&node, "/register?name=a", &component_bytes("echo.wasm"));
    assert_eq!(count("a"), 0);
}

#[test]
fn schedules_are_capped_and_ticks_never_take_clients_slots() {
    let slow = FakeApi::start(r#"{"bitcoin":{"usd":1}}"#, Duration::from_millis(2500));
    let dir = tempfile::tempdir().unwrap();
    let allow = slow.addr.to_string();
    let node = up(
        dir.path(),
        &[
            "--allow-outbound",
            &allow,
            "--max-schedules",
            "2",
            "--max-concurrent-calls",
            "1",
            "--max-concurrent-ticks",
            "1",
        ],
    );
    register(
        &node,
        "/register?name=gecko",
        &component_bytes("gecko.wasm"),
    );
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let job = post_json(
            &node,
            "/sched",
            json!({ "name": "gecko", "cron": "* * * * * *", "input": slow.price_url() }),
        );
        assert_eq!(job.status, 201, "{}", job.text());
        ids.push(job.json()["id"].as_str().unwrap().to_string());
    }
    let third = post_json(
        &node,
        "/sched",
        json!({ "name": "echo", "cron": "* * * * * *" }),
    );
    assert!(third.error(503).contains("--max-schedules"));
    assert!(third.header("retry-after").is_some());

    // Both jobs hold or want the one tick slot for seconds at a time;
    // clients' calls still get theirs.
    wait_for(Duration::from_secs(10), "a slow tick under way", || {
        (slow.hits() >= 1).then_some(())
    });
    for i in 0..5 {
        let r = node.post("/run/echo", format!("client {i}").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // A tick that found no slot for a second is recorded as not run.
    let starved = wait_for(Duration::from_secs(15), "a starved tick recorded", || {
        ids.iter().find_map(|id| {
            node.get(&format!("/sched/{id}/runs?limit=50"))
                .json()
                .as_array()
                .unwrap()
                .iter()
                .find(|r| {
                    r["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("--max-concurrent-ticks"))
                })
                .cloned()
        })
    });
    assert_eq!(starved["ok"], false);
    assert_eq!(node.delete(&format!("/sched/{}", ids[0])).status, 204);
    let job = post_json(
        &node,
        "/sched",
        json!({ "name": "echo", "cron": "0 0 1 1 *" }),
    );
    assert_eq!(job.status, 201, "room again after a removal");
}

const DOUBLE: &str =
    "0061736d0100000001060160017f017f03020100070a0106646f75626c6500000a09010700200041026c0b";
const DOUBLE_TWICE: &str = "0061736d0100000001060160017f017f021001057574696c7306646f75626c650000030201000710010c646f75626c655f747769636500010a0a0108002000100010000b";

#[test]
fn modules_can_be_removed_and_names_are_not_shared_across_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let module = |name: &str, hex: &str, links: Value| {
        post_json(
            &node,
            "/register",
            json!({ "module_name": name, "wasm_hex": hex, "host_modules": links }),
        )
    };
    assert_eq!(module("utils", DOUBLE, json!([])).status, 201);
    assert_eq!(module("twice", DOUBLE_TWICE, json!(["utils"])).status, 201);

    // A component may not take a module's name, nor the other way round.
    let taken = node.post("/register?name=utils", &component_bytes("echo.wasm"));
    assert!(taken.error(409).contains("core module"));
    register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    assert!(module("echo", DOUBLE, json!([]))
        .error(409)
        .contains("component"));
    assert_eq!(node.post("/run/echo", b"still echo").text(), "still echo");

    // A module others link to stays until they go.
    assert!(node.delete("/modules/utils").error(409).contains("twice"));
    assert_eq!(node.delete("/modules/twice").status, 204);
    assert_eq!(node.delete("/modules/utils").status, 204);
    node.delete("/modules/utils").error(404);
    node.post("/call/utils/double", b"[2]").error(404);
    node.delete("/modules/Bad%20name").error(400);

    // Gone for good: not back after a restart.
    assert!(node.terminate().success());
    let node = up(dir.path(), &[]);
    node.post("/call/utils/double", b"[2]").error(404);
    let utils = json!({ "module_name": "utils", "wasm_hex": DOUBLE });
    assert_eq!(post_json(&node, "/register", utils).status, 201);
    assert_eq!(
        node.post("/call/utils/double", b"[21]").json(),
        json!({ "results": [42] })
    );
}

/// Two clients register the same name at once, each with its own code and
/// its own settings: whichever wins, the code and the settings are the same
/// registration's, in memory and after a restart.
#[test]
fn racing_registrations_never_mix_code_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let echo = component_bytes("echo.wasm");
    let gecko = component_bytes("gecko.wasm");
    let consistent = |info: &Value| {
        let keys = info["config_keys"].clone();
        if info["digest"] == sha256_hex(&echo) {
            keys == json!(["ECHO"])
        } else {
            info["digest"] == sha256_hex(&gecko) && keys == json!(["GECKO"])
        }
    };
    let addr = node.addr;
    for round in 0..8 {
        let threads: Vec<_> = [("ECHO", echo.clone()), ("GECKO", gecko.clone())]
            .into_iter()
            .map(|(key, bytes)| {
                std::thread::spawn(move || {
                    support::request(
                        addr,
                        "POST",
                        &format!("/register?name=racer&env={key}=1"),
                        &[],
                        &bytes,
                    )
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap().status, 201);
        }
        let info = node.get("/handlers/racer").json();
        assert!(consistent(&info), "round {round}: {info}");
    }
    let before = node.get("/handlers/racer").json();
    node.kill();
    let node = up(dir.path(), &[]);
    let after = node.get("/handlers/racer").json();
    assert!(consistent(&after), "{after}");
    assert_eq!(after["digest"], before["digest"]);
}
