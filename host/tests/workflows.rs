//! JSON workflows against a real local chain (anvil): a balance read, a
//! validation job by hash and a handler that formats the answer, run on
//! request, by cron and on new blocks; a failing step stops the rest;
//! bad definitions are refused naming the step; all of it survives a
//! restart.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::anvil::{Anvil, DEV_ACCOUNT};
use support::{base64, component_bytes, sha256_hex, wait_for, FakeApi, Node, NodeBuilder};

const CHAIN: u64 = 31337;

fn post(node: &Node, path: &str, body: &Value) -> support::Response {
    node.post(path, body.to_string().as_bytes())
}

/// Runs the validation job once, so that the node knows it by hash.
fn job_hash(node: &Node) -> String {
    let wasm = component_bytes("json-job.wasm");
    let ran = post(
        node,
        "/wasm/run",
        &json!({ "jobId": "seed", "wasmB64": base64(&wasm), "timeoutMs": 5000, "input": { "n": 1 } }),
    );
    assert_eq!(ran.status, 200, "{}", ran.text());
    sha256_hex(&wasm)
}

/// The three steps: the balance of `{{ trigger.address }}` (the dev
/// account when the trigger has none), whether it holds `min` wei, and a
/// line formatted by the `echo` handler.
fn balance_check(hash: &str, min: &str, trigger: Option<Value>) -> Value {
    let address = format!("{{{{ trigger.address | default('{DEV_ACCOUNT}') }}}}");
    let mut workflow = json!({
        "name": "balance-check",
        "steps": [
            { "id": "bal", "type": "eth", "chain_id": CHAIN, "method": "eth_getBalance",
              "params": [address, "latest"] },
            { "id": "ok", "type": "wasm_validation", "wasmHash": hash, "timeout": 5000,
              "input": { "address": address, "balance": "{{ steps.bal.output }}", "minBalance": min } },
            { "id": "fmt", "type": "run", "handler": "echo",
              "input": "{{ workflow.name }}: {{ steps.bal.output }} wei, valid: {{ steps.ok.output.valid }}" },
        ],
    });
    if let Some(trigger) = trigger {
        workflow["trigger"] = trigger;
    }
    workflow
}

fn runs(node: &Node) -> Vec<Value> {
    let response = node.get("/workflows/balance-check/runs?limit=100");
    assert_eq!(response.status, 200, "{}", response.text());
    response.json().as_array().cloned().expect("runs")
}

/// The newest finished run of `cause`, if any (a run in progress is listed
/// with `"running": true`).
fn finished(node: &Node, cause: &str) -> Option<Value> {
    runs(node)
        .into_iter()
        .find(|r| r["cause"] == cause && r["running"] != true)
}

#[test]
fn a_three_step_workflow_runs_on_request_by_cron_and_on_new_blocks_and_survives_a_restart() {
    let anvil = Anvil::start(CHAIN);
    let dir = tempfile::tempdir().unwrap();
    let node = anvil.node(dir.path(), &[]);
    support::register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    let hash = job_hash(&node);
    let balance = anvil.call("eth_getBalance", json!([DEV_ACCOUNT, "latest"]));

    let stored = post(
        &node,
        "/workflows",
        &balance_check(&hash, "1000000000000000000", None),
    );
    assert_eq!(stored.status, 201, "{}", stored.text());
    assert_eq!(stored.json()["steps"][1]["wasmHash"], hash.as_str());

    // On request: every step's output, and the result (the last output).
    let ran = post(
        &node,
        "/workflows/balance-check/run",
        &json!({ "address": DEV_ACCOUNT }),
    );
    assert_eq!(ran.status, 200, "{}", ran.text());
    let run = ran.json();
    assert_eq!(run["ok"], true, "{run}");
    assert_eq!(run["steps"][0]["output"], balance);
    assert_eq!(run["steps"][1]["output"]["valid"], true);
    let line = format!(
        "balance-check: {} wei, valid: true",
        balance.as_str().unwrap()
    );
    assert_eq!(run["steps"][2]["output"], line.as_str());
    assert_eq!(run["result"], line.as_str());
    for step in run["steps"].as_array().unwrap() {
        assert!(step["duration_ms"].is_u64(), "{step}");
    }
    assert_eq!(runs(&node)[0]["run_id"], run["run_id"]);

    // A failing middle step stops the rest, saying why.
    let strict = balance_check(&hash, "1000000000000000000000000000", None);
    assert_eq!(post(&node, "/workflows", &strict).status, 201);
    let failed = post(&node, "/workflows/balance-check/run", &json!({})).json();
    assert_eq!(failed["ok"], false, "{failed}");
    assert_eq!(failed["steps"][0]["ok"], true);
    assert_eq!(failed["steps"][1]["ok"], false);
    let why = failed["steps"][1]["error"].as_str().unwrap();
    assert!(
        why.contains("not valid: balance") && why.contains("is below"),
        "{why}"
    );
    assert_eq!(failed["steps"][2]["not_run"], true, "{failed}");
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .contains("step `ok` failed"));
    assert_eq!(failed["result"], Value::Null);

    // By cron: every second, recorded with their cause.
    let cron = balance_check(&hash, "1", Some(json!({ "cron": "* * * * * *" })));
    assert_eq!(post(&node, "/workflows", &cron).status, 201);
    let ticked = wait_for(Duration::from_secs(10), "a cron run", || {
        finished(&node, "cron")
    });
    assert_eq!(ticked["ok"], true, "{ticked}");
    assert!(ticked["trigger"]["scheduled_for"].is_u64());
    assert!(
        node.get("/sched").json().as_array().unwrap().is_empty(),
        "a workflow's timer is not a handler schedule"
    );

    // On every new block: the chain event is the trigger.
    let chained = balance_check(
        &hash,
        "1",
        Some(json!({ "chain": { "chain_id": CHAIN, "on": "block" } })),
    );
    assert_eq!(post(&node, "/workflows", &chained).status, 201);
    anvil.mine(2);
    let on_block = wait_for(Duration::from_secs(10), "a run on a block", || {
        finished(&node, "chain")
    });
    assert_eq!(on_block["ok"], true, "{on_block}");
    assert!(on_block["trigger"].is_object(), "{on_block}");

    // A restart keeps the workflow, its history and its job by hash.
    let before = runs(&node).len();
    assert!(node.terminate().success());
    let node = anvil.node(dir.path(), &[]);
    assert_eq!(node.get("/workflows").json()[0]["name"], "balance-check");
    assert!(runs(&node).len() >= before);
    let again = post(&node, "/workflows/balance-check/run", &json!({})).json();
    assert_eq!(again["ok"], true, "{again}");

    // Deleting it stops its trigger and forgets its history.
    assert_eq!(node.delete("/workflows/balance-check").status, 204);
    assert_eq!(node.get("/workflows/balance-check").status, 404);
    assert_eq!(node.get("/workflows/balance-check/runs").status, 404);
    assert_eq!(
        post(&node, "/workflows/balance-check/run", &json!({})).status,
        404
    );
}

#[test]
fn bad_definitions_are_refused_naming_the_step_and_the_problem() {
    let anvil = Anvil::start(CHAIN);
    let dir = tempfile::tempdir().unwrap();
    let node = anvil.node(dir.path(), &[]);
    support::register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    let hash = job_hash(&node);
    let good = balance_check(&hash, "1", None);
    let refused = |change: &dyn Fn(&mut Value), expected: &[&str]| {
        let mut workflow = good.clone();
        change(&mut workflow);
        let response = post(&node, "/workflows", &workflow);
        let message = response.error(400);
        for part in expected {
            assert!(message.contains(part), "expected `{part}` in `{message}`");
        }
    };
    refused(
        &|w| w["steps"][0]["type"] = json!("teleport"),
        &["bal", "teleport"],
    );
    refused(
        &|w| w["steps"][2]["handler"] = json!("nobody"),
        &["fmt", "nobody"],
    );
    refused(
        &|w| w["steps"][1]["wasmHash"] = json!("ab".repeat(32)),
        &["ok", "wasmHash"],
    );
    refused(&|w| w["steps"][1]["id"] = json!("bal"), &["bal"]);
    refused(
        &|w| {
            w["steps"][2].as_object_mut().unwrap().remove("id");
        },
        &["id"],
    );
    refused(
        &|w| w["steps"][2]["input"] = json!("{{ steps.bal.output "),
        &["fmt"],
    );
    refused(
        &|w| w["steps"][0]["params"][0] = json!("{{ steps.fmt.output }}"),
        &["bal", "fmt"],
    );
    refused(
        &|w| w["steps"][0]["method"] = json!("eth_sendTransaction"),
        &["bal", "eth_sendTransaction"],
    );
    refused(
        &|w| w["trigger"] = json!({ "cron": "every day" }),
        &["cron"],
    );
    refused(&|w| w["steps"] = json!([]), &["step"]);
    let not_json = node.post("/workflows", b"{ not json");
    assert!(not_json.error(400).contains("JSON"));
    let bad_trigger = node.post("/workflows/balance-check/run", b"{ nope");
    assert_eq!(bad_trigger.status, 400);
    // Nothing was stored, and the node serves on.
    assert_eq!(node.get("/workflows").json(), json!([]));
    assert_eq!(node.get("/health").status, 200);

    // A chain trigger whose chain does not answer: 503, and nothing stored.
    drop(anvil);
    let on_blocks = balance_check(
        &hash,
        "1",
        Some(json!({ "chain": { "chain_id": CHAIN, "on": "block" } })),
    );
    let refused = post(&node, "/workflows", &on_blocks);
    assert!(
        refused.error(503).contains("cannot read the head"),
        "{}",
        refused.text()
    );
    assert_eq!(node.get("/workflows").json(), json!([]));
}

#[test]
fn every_step_type_runs_and_a_slow_cron_run_skips_the_next_tick() {
    let api = FakeApi::start(r#"{"greeting":"hi"}"#, Duration::ZERO);
    let slow = FakeApi::start("{}", Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path(), &["up", "--allow-outbound", "127.0.0.1"])
        .env("WASMATIC_PORT", "0")
        .start();
    support::register(&node, "/register?name=echo", &component_bytes("echo.wasm"));
    support::register(
        &node,
        "/register?name=caesar&env=SHIFT_AMOUNT=1",
        &component_bytes("caesar.wasm"),
    );
    let hash = job_hash(&node);

    let all = json!({
        "name": "all",
        "steps": [
            { "id": "h", "type": "http", "method": "GET", "url": format!("http://{}/greeting", api.addr) },
            { "id": "c", "type": "call", "component": "caesar", "function": "encrypt",
              "args": ["{{ steps.h.output.body.greeting }}"] },
            { "id": "j", "type": "job", "wasmHash": hash, "input": { "n": "{{ run.id }}" } },
            { "id": "skip", "type": "run", "handler": "echo", "input": "never",
              "when": "{{ steps.j.output.doubled > 1000000 }}" },
            { "id": "e", "type": "run", "handler": "echo",
              "input": "{{ steps.c.output }}, skipped: {{ steps.skip.skipped }}" },
        ],
        "result": "{{ steps.e.output }}",
    });
    assert_eq!(post(&node, "/workflows", &all).status, 201);
    let run = post(&node, "/workflows/all/run", &Value::Null).json();
    assert_eq!(run["ok"], true, "{run}");
    let steps = &run["steps"];
    assert_eq!(steps[0]["output"]["status"], 200);
    assert_eq!(steps[0]["output"]["body"], json!({ "greeting": "hi" }));
    assert_eq!(steps[1]["output"], "ij");
    assert_eq!(
        steps[2]["output"],
        json!({ "doubled": run["run_id"].as_u64().unwrap() * 2 })
    );
    assert_eq!(
        (steps[3]["skipped"].clone(), steps[3]["ok"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(run["result"], "ij, skipped: true");
    assert_eq!(api.hits(), 1);

    // Retries: a refused connection, tried three times, then the run stops.
    let closed = support::free_port();
    let retried = json!({
        "name": "retried",
        "steps": [{ "id": "h", "type": "http", "method": "GET", "retries": 2,
                    "url": format!("http://127.0.0.1:{closed}/") }],
    });
    assert_eq!(post(&node, "/workflows", &retried).status, 201);
    let failed = post(&node, "/workflows/retried/run", &json!({})).json();
    assert_eq!(failed["ok"], false);
    let why = failed["steps"][0]["error"].as_str().unwrap();
    assert!(
        why.contains("cannot connect") && why.contains("after 3 attempts"),
        "{why}"
    );

    // A cron run that outlasts its second: the next tick is skipped and
    // recorded as such.
    let slow_cron = json!({
        "name": "slow",
        "trigger": { "cron": "* * * * * *" },
        "steps": [{ "id": "wait", "type": "http", "method": "GET", "timeout": 5000,
                    "url": format!("http://{}/slow", slow.addr) }],
    });
    assert_eq!(post(&node, "/workflows", &slow_cron).status, 201);
    let skipped = wait_for(Duration::from_secs(10), "a skipped tick", || {
        let runs = node.get("/workflows/slow/runs?limit=100").json();
        runs.as_array()?
            .iter()
            .find(|r| r["error"].as_str().is_some_and(|e| e.contains("skipped")))
            .cloned()
    });
    assert_eq!(skipped["ok"], false);
    assert_eq!(skipped["cause"], "cron");
    assert_eq!(node.delete("/workflows/slow").status, 204);
    drop(node);

    // Cron triggers count against the node's schedules: past the cap, 503
    // and nothing stored.
    let dir = tempfile::tempdir().unwrap();
    let capped = NodeBuilder::new(dir.path(), &["up", "--max-schedules", "1"])
        .env("WASMATIC_PORT", "0")
        .start();
    let cron = |name: &str| {
        json!({ "name": name, "trigger": { "cron": "0 0 * * * *" },
                "steps": [{ "id": "a", "type": "http", "method": "GET", "url": "http://127.0.0.1:9/" }] })
    };
    assert_eq!(post(&capped, "/workflows", &cron("first")).status, 201);
    assert_eq!(
        post(&capped, "/workflows", &cron("first")).status,
        201,
        "replacing keeps its timer"
    );
    let refused = post(&capped, "/workflows", &cron("second"));
    assert!(refused.error(503).contains("--max-schedules"));
    assert_eq!(capped.get("/workflows/second").status, 404);
    drop(capped);

    // With a token, changing or running a workflow needs it, as for
    // schedules; reading does not.
    let dir = tempfile::tempdir().unwrap();
    let locked = NodeBuilder::new(dir.path(), &["up"])
        .env("WASMATIC_PORT", "0")
        .env("WASMATIC_TOKEN", "secret")
        .start();
    assert_eq!(post(&locked, "/workflows", &retried).status, 401);
    assert_eq!(
        post(&locked, "/workflows/retried/run", &json!({})).status,
        401
    );
    assert_eq!(locked.get("/workflows").status, 200);
}

/// A server on loopback that answers every request with a JSON body naming
/// the request's `Authorization` header, and keeps the heads it was sent.
fn echoing_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let auth = head
                .lines()
                .find_map(|l| l.strip_prefix("authorization: "))
                .unwrap_or("")
                .to_string();
            kept.lock().unwrap().push(head);
            let body = json!({ "seen": auth }).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, heads)
}

#[test]
fn secrets_are_set_with_the_token_sent_in_requests_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (api, heads) = echoing_server();
    let node = NodeBuilder::new(dir.path(), &["up", "--allow-outbound", "127.0.0.1"])
        .env("WASMATIC_PORT", "0")
        .env("WASMATIC_TOKEN", "t0ken")
        .start();
    let auth = [("authorization", "Bearer t0ken")];
    let secret = "sk_live_8f3a9c";

    // Only the node runner sets, lists and removes secrets.
    let anonymous = node.request("PUT", "/secrets/api_key", &[], secret.as_bytes());
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(node.get("/secrets").status, 401);
    let set = node.request("PUT", "/secrets/api_key", &auth, secret.as_bytes());
    assert_eq!(set.status, 201, "{}", set.text());
    let again = node.request("PUT", "/secrets/api_key", &auth, secret.as_bytes());
    assert_eq!(again.status, 204, "{}", again.text());
    let bad = node.request("PUT", "/secrets/api-key", &auth, b"x");
    assert!(bad.error(400).contains("secrets.NAME"), "{}", bad.text());
    let listed = node.request("GET", "/secrets", &auth, b"");
    assert_eq!(listed.json()[0]["name"], "api_key", "{}", listed.text());
    assert!(!listed.text().contains(secret));

    // A secret may be read only in what an http step sends.
    let echo = component_bytes("echo.wasm");
    let registered = node.request("POST", "/register?name=echo", &auth, &echo);
    assert_eq!(registered.status, 201, "{}", registered.text());
    let leaky = json!({"name": "leaky", "steps": [
        {"id": "a", "type": "run", "handler": "echo", "input": "{{ secrets.api_key }}"}]});
    let refused = node.request("POST", "/workflows", &auth, leaky.to_string().as_bytes());
    assert!(
        refused.error(400).contains("only in an `http` step"),
        "{}",
        refused.text()
    );
    let caller = json!({"name": "caller", "steps": [
        {"id": "call", "type": "http", "method": "GET", "url": format!("http://{api}/v1/price"),
         "headers": {"authorization": "Bearer {{ secrets.api_key }}"}}]});
    let stored = node.request("POST", "/workflows", &auth, caller.to_string().as_bytes());
    assert_eq!(stored.status, 201, "{}", stored.text());

    // The request carries it; the run, its record and the log do not.
    let run = node.request("POST", "/workflows/caller/run", &auth, b"{}");
    assert_eq!(run.status, 200, "{}", run.text());
    let run = run.json();
    assert_eq!(run["ok"], true, "{run}");
    let sent = heads.lock().unwrap().clone();
    assert!(
        sent.iter()
            .any(|h| h.contains(&format!("authorization: Bearer {secret}"))),
        "{sent:?}"
    );
    assert_eq!(
        run["steps"][0]["output"]["body"]["seen"], "Bearer [secret api_key]",
        "{run}"
    );
    for path in ["/workflows", "/workflows/caller", "/workflows/caller/runs"] {
        let read = node.get(path);
        assert_eq!(read.status, 200, "{path}");
        assert!(!read.text().contains(secret), "{path}: {}", read.text());
    }
    // An error that would carry it names it instead.
    let broken = json!({"name": "broken", "steps": [
        {"id": "call", "type": "http", "method": "GET", "url": "http://{{ secrets.api_key }}:99999/"}]});
    let stored = node.request("POST", "/workflows", &auth, broken.to_string().as_bytes());
    assert_eq!(stored.status, 201, "{}", stored.text());
    let failed = node
        .request("POST", "/workflows/broken/run", &auth, b"{}")
        .json();
    assert_eq!(failed["ok"], false, "{failed}");
    let error = failed["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("[secret api_key]") && !error.contains(secret),
        "{error}"
    );
    assert!(!node.log().contains(secret), "the log shows the secret");

    // Once removed, a step that reads it fails, naming it.
    let removed = node.request("DELETE", "/secrets/api_key", &auth, b"");
    assert_eq!(removed.status, 204, "{}", removed.text());
    let failed = node
        .request("POST", "/workflows/caller/run", &auth, b"{}")
        .json();
    let error = failed["steps"][0]["error"].as_str().unwrap();
    assert!(error.contains("no secret `api_key`"), "{error}");
    assert_eq!(
        node.request("DELETE", "/secrets/api_key", &auth, b"")
            .status,
        404
    );
}
