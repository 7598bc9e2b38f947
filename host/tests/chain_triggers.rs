//! Chain triggers against a real local chain (anvil): a handler run once
//! per block and once per matching log, in chain order, each exactly once
//! across a `kill -9` and a restart of the node in the middle of the stream.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::anvil::{Anvil, DEV_ACCOUNT};
use support::{component_bytes, Node};

/// The topic the emitter logs with.
const TOPIC: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

/// Init code of a contract whose every call logs `TOPIC` with the call's
/// first 32 bytes as data: `LOG1(mem[0..32] = calldata[0..32], TOPIC)`.
fn emitter_init_code() -> String {
    let runtime = format!("6000356000527f{}602060", &TOPIC[2..]) + "00a100";
    assert_eq!(runtime.len() / 2, 0x2d);
    format!("0x602d600c600039602d6000f3{runtime}")
}

fn add_trigger(node: &Node, body: Value) -> Value {
    let response = node.post("/triggers", body.to_string().as_bytes());
    assert_eq!(response.status, 201, "{body}: {}", response.text());
    response.json()
}

/// The outputs of a trigger's runs, oldest first, and how many failed.
fn runs(node: &Node, id: &str) -> (Vec<Value>, usize) {
    let response = node.get(&format!("/triggers/{id}/runs?limit=1000"));
    assert_eq!(response.status, 200, "{}", response.text());
    let runs = response.json().as_array().cloned().unwrap();
    let failed = runs.iter().filter(|r| r["ok"] == false).count();
    let outputs = runs
        .iter()
        .rev()
        .filter_map(|r| r["output"].as_str())
        .map(|o| serde_json::from_str(o).expect("the watcher answers JSON"))
        .collect();
    (outputs, failed)
}

/// Sends `per_block` calls to the emitter, then mines them into one block.
fn emit(anvil: &Anvil, emitter: &str, per_block: u64, first_value: u64) {
    for i in 0..per_block {
        let data = format!("0x{:064x}", first_value + i);
        anvil.call(
            "eth_sendTransaction",
            json!([{"from": DEV_ACCOUNT, "to": emitter, "data": data, "gas": "0x20000"}]),
        );
    }
    anvil.mine(1);
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn blocks_and_logs_run_exactly_once_across_a_kill_and_a_restart() {
    let anvil = Anvil::start(31337);
    let emitter = anvil.deploy_code(&emitter_init_code());
    // Several logs per block, so that a restart may land inside a block.
    anvil.call("evm_setAutomine", json!([false]));

    let dir = tempfile::tempdir().unwrap();
    let node = anvil.node(dir.path(), &[]);
    for (name, file) in [
        ("watcher", "watcher.wasm"),
        ("broken", "balance_check.wasm"),
    ] {
        let response = node.post(&format!("/register?name={name}"), &component_bytes(file));
        assert_eq!(response.status, 201, "{}", response.text());
    }
    let blocks = add_trigger(
        &node,
        json!({"name": "watcher", "chain_id": 31337, "on": "block", "input": {"tag": 7}}),
    );
    let logs = add_trigger(
        &node,
        json!({"name": "watcher", "chain_id": 31337,
               "on": {"logs": {"address": emitter, "topics": [TOPIC]}}}),
    );
    // Its handler fails on every block: it must hold up nothing.
    let broken = add_trigger(
        &node,
        json!({"name": "broken", "chain_id": 31337, "on": "block"}),
    );
    // It waits for two confirmations.
    let lagging = add_trigger(
        &node,
        json!({"name": "watcher", "chain_id": 31337, "on": "block", "confirmations": 2}),
    );
    let first_block = blocks["next_block"].as_u64().unwrap();
    assert_eq!(lagging["next_block"], first_block);
    assert_eq!(blocks["on"], "block");
    assert_eq!(logs["on"]["logs"]["topics"], json!([TOPIC]));
    let listed = node.get("/triggers").json();
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");

    let (block_id, log_id) = (blocks["id"].as_str().unwrap(), logs["id"].as_str().unwrap());
    let mut value = 0;
    for _ in 0..6 {
        emit(&anvil, &emitter, 3, value);
        value += 3;
    }
    wait_for("the first runs", || runs(&node, log_id).0.len() >= 4);
    // Killed mid-stream: some events of the last blocks may not have run.
    node.kill();
    for _ in 0..6 {
        emit(&anvil, &emitter, 3, value);
        value += 3;
    }
    anvil.mine(2);
    let node = anvil.node(dir.path(), &[]);
    for _ in 0..4 {
        emit(&anvil, &emitter, 2, value);
        value += 2;
    }
    let head = anvil
        .call("eth_blockNumber", json!([]))
        .as_str()
        .map(|h| u64::from_str_radix(&h[2..], 16).unwrap())
        .unwrap();
    let expected_blocks: Vec<u64> = (first_block..=head).collect();
    let direct = anvil.call(
        "eth_getLogs",
        json!([{"address": emitter, "topics": [TOPIC], "fromBlock": format!("0x{first_block:x}"), "toBlock": "latest"}]),
    );
    let expected_logs: Vec<(u64, u64)> = direct
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let n = |k: &str| u64::from_str_radix(&l[k].as_str().unwrap()[2..], 16).unwrap();
            (n("blockNumber"), n("logIndex"))
        })
        .collect();
    assert_eq!(expected_logs.len() as u64, value);

    wait_for("every block and log", || {
        runs(&node, block_id).0.len() >= expected_blocks.len()
            && runs(&node, log_id).0.len() >= expected_logs.len()
    });
    // Every block once, in chain order.
    let (block_runs, failed) = runs(&node, block_id);
    assert_eq!(failed, 0);
    let seen: Vec<u64> = block_runs
        .iter()
        .map(|r| r["block"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, expected_blocks);
    // Every log once, in chain order, with its data.
    let (log_runs, failed) = runs(&node, log_id);
    assert_eq!(failed, 0);
    let seen: Vec<(u64, u64)> = log_runs
        .iter()
        .map(|r| {
            (
                r["block"].as_u64().unwrap(),
                r["log_index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, expected_logs);
    let values: Vec<u64> = log_runs
        .iter()
        .map(|r| r["value"].as_u64().unwrap())
        .collect();
    assert_eq!(values, (0..value).collect::<Vec<_>>());

    // The confirmed trigger stops two blocks short of the head, and stays.
    let lagging_id = lagging["id"].as_str().unwrap();
    let confirmed = (expected_blocks.len() - 2) as u64;
    wait_for("the confirmed blocks", || {
        runs(&node, lagging_id).0.len() as u64 >= confirmed
    });
    std::thread::sleep(Duration::from_millis(400));
    let (lagging_runs, _) = runs(&node, lagging_id);
    let seen: Vec<u64> = lagging_runs
        .iter()
        .map(|r| r["block"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, expected_blocks[..expected_blocks.len() - 2]);

    // The failing trigger ran (and failed) on blocks too, recorded as such.
    let (_, failed) = runs(&node, broken["id"].as_str().unwrap());
    assert!(failed > 0);

    // Removed: it runs no more, its runs stay readable.
    assert_eq!(node.delete(&format!("/triggers/{block_id}")).status, 204);
    node.delete(&format!("/triggers/{block_id}")).error(404);
    std::thread::sleep(Duration::from_millis(300));
    anvil.mine(3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runs(&node, block_id).0.len(), expected_blocks.len());
    assert_eq!(node.get("/triggers").json().as_array().unwrap().len(), 3);
}

#[test]
fn bad_triggers_get_clear_errors() {
    let anvil = Anvil::start(31337);
    let dir = tempfile::tempdir().unwrap();
    let node = anvil.node(dir.path(), &[]);
    let response = node.post("/register?name=watcher", &component_bytes("watcher.wasm"));
    assert_eq!(response.status, 201);
    let address = format!("0x{}", "ab".repeat(20));
    let cases = [
        (
            json!({"name": "watcher", "chain_id": 5, "on": "block"}),
            400,
            "chain 5",
        ),
        (
            json!({"name": "nobody", "chain_id": 31337, "on": "block"}),
            404,
            "nobody",
        ),
        (
            json!({"name": "watcher", "chain_id": 31337, "on": {"logs": {"address": "0x12"}}}),
            400,
            "0x12",
        ),
        (
            json!({"name": "watcher", "chain_id": 31337, "on": {"logs": {"address": address, "topics": ["0xzz"]}}}),
            400,
            "0xzz",
        ),
        (
            json!({"name": "watcher", "chain_id": 31337, "on": "blocks"}),
            400,
            "on",
        ),
        (json!({"name": "watcher", "on": "block"}), 400, "chain_id"),
    ];
    for (body, status, mentions) in cases {
        let message = node
            .post("/triggers", body.to_string().as_bytes())
            .error(status);
        assert!(message.contains(mentions), "{body}: {message}");
    }
    node.delete("/triggers/t-nothing").error(404);
    node.get("/triggers/t-nothing/runs").error(404);
    assert_eq!(node.get("/triggers").json(), json!([]));

    // A handler's triggers go with it.
    add_trigger(
        &node,
        json!({"name": "watcher", "chain_id": 31337, "on": "block"}),
    );
    assert_eq!(node.get("/triggers").json().as_array().unwrap().len(), 1);
    assert_eq!(node.delete("/handlers/watcher").status, 204);
    assert_eq!(node.get("/triggers").json(), json!([]));
    assert_eq!(node.get("/health").status, 200);
}
