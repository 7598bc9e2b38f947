//! Read-only chain RPC for components, against real local chains (anvil):
//! a contract deployed by the test is read back through the node, every
//! allowed method answers as anvil does, refused methods never reach anvil,
//! two chains are routed at once, and the RPC URL never shows.

mod support;

use serde_json::{json, Value};
use support::anvil::{Anvil, DEV_ACCOUNT, RUNTIME_CODE};
use support::{component_bytes, up, Node, NodeBuilder};

fn register(node: &Node, name: &str, file: &str) {
    let response = node.post(&format!("/register?name={name}"), &component_bytes(file));
    assert_eq!(response.status, 201, "{}", response.text());
}

/// What `eth-query` answers for one call.
fn query(node: &Node, chain: u64, method: &str, params: Value) -> Value {
    let input = json!({"chain_id": chain, "method": method, "params": params});
    let response = node.post("/run/query", input.to_string().as_bytes());
    assert_eq!(response.status, 200, "{method}: {}", response.text());
    serde_json::from_str(&response.text()).expect("eth-query answers JSON")
}

fn result(node: &Node, chain: u64, method: &str, params: Value) -> Value {
    let answer = query(node, chain, method, params);
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

#[test]
fn a_component_reads_a_deployed_contract_and_every_allowed_method_answers_as_anvil_does() {
    let anvil = Anvil::start(31337);
    let contract = anvil.deploy();
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--rpc", &anvil.rpc_flag()]);
    register(&node, "query", "eth_query.wasm");
    let id = anvil.chain_id;

    // The contract the test deployed, read back through the node.
    let code = result(&node, id, "eth_getCode", json!([contract, "latest"]));
    assert_eq!(code, RUNTIME_CODE);
    let slot = result(
        &node,
        id,
        "eth_getStorageAt",
        json!([contract, "0x0", "latest"]),
    );
    assert_eq!(slot, format!("0x{:064x}", 42));
    let called = result(&node, id, "eth_call", json!([{"to": contract}, "latest"]));
    assert_eq!(called, format!("0x{:064x}", 42));

    // Every allowed method answers what anvil answers directly.
    let block = anvil.call("eth_getBlockByNumber", json!(["latest", false]));
    let cases = [
        ("eth_blockNumber", json!([])),
        ("eth_chainId", json!([])),
        ("eth_getBalance", json!([DEV_ACCOUNT, "latest"])),
        ("eth_getTransactionCount", json!([DEV_ACCOUNT, "latest"])),
        ("eth_getCode", json!([contract, "latest"])),
        ("eth_getStorageAt", json!([contract, "0x0", "latest"])),
        ("eth_call", json!([{"to": contract}, "latest"])),
        (
            "eth_estimateGas",
            json!([{"from": DEV_ACCOUNT, "to": contract}]),
        ),
        ("eth_getBlockByNumber", json!(["0x1", true])),
        ("eth_getBlockByHash", json!([block["hash"], false])),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x1"}]),
        ),
        ("net_version", json!([])),
        ("web3_clientVersion", json!([])),
    ];
    for (method, params) in cases {
        let direct = anvil.call(method, params.clone());
        assert_eq!(result(&node, id, method, params), direct, "{method}");
    }

    // The chain's own errors come back typed, with its code and message.
    let reverted = query(&node, id, "eth_getBlockByNumber", json!(["nonsense"]));
    let error = &reverted["error"]["node-error"];
    assert!(
        error["code"].is_i64() && error["message"].is_string(),
        "{reverted}"
    );

    // The run record lists the calls: method, duration, ok.
    let runs = node.get("/handlers/query/runs?limit=1").json();
    let calls = runs[0]["rpc"].as_array().expect("rpc calls in the run");
    assert_eq!(calls.len(), 1, "{runs}");
    assert_eq!(calls[0]["method"], "eth_getBlockByNumber");
    assert_eq!(calls[0]["chain"], id);
    assert_eq!(calls[0]["ok"], false);
    assert!(calls[0]["duration_us"].is_u64());

    // The URL is the runner's: not in the log, not in any run.
    let all_runs = node.get("/handlers/query/runs?limit=100").text();
    let address = anvil.addr.to_string();
    assert!(!node.log().contains(&address) && !all_runs.contains(&address));
}

#[test]
fn refused_methods_never_reach_the_chain_and_bounds_hold() {
    let anvil = Anvil::start(31337);
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &[
            "--rpc",
            &anvil.rpc_flag(),
            "--rpc-max-calls",
            "3",
            "--rpc-max-response",
            "600",
            "--rpc-max-log-range",
            "10",
        ],
    );
    register(&node, "query", "eth_query.wasm");
    let id = anvil.chain_id;

    let refused = [
        "eth_sendTransaction",
        "eth_sendRawTransaction",
        "eth_sign",
        "eth_signTypedData_v4",
        "personal_sign",
        "debug_traceTransaction",
        "anvil_mine",
        "anvil_setBalance",
        "evm_mine",
        "eth_subscribe",
        "eth_accounts",
    ];
    for method in refused {
        let params = json!([{"from": DEV_ACCOUNT, "to": DEV_ACCOUNT}]);
        let answer = query(&node, id, method, params);
        assert_eq!(answer, json!({"error": {"method-not-allowed": method}}));
        assert_eq!(anvil.asked(method), 0, "{method} reached anvil");
    }
    assert_eq!(anvil.call("eth_blockNumber", json!([])), "0x0");

    // A chain the node does not know, params that are not an array, and an
    // eth_getLogs range past the bound are refused before anvil too.
    let unknown = query(&node, 999, "eth_blockNumber", json!([]));
    assert_eq!(unknown, json!({"error": {"unknown-chain": 999}}));
    let not_array = query(&node, id, "eth_blockNumber", json!({"a": 1}));
    assert!(
        not_array["error"]["invalid-params"].is_string(),
        "{not_array}"
    );
    let wide = query(
        &node,
        id,
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "0x20"}]),
    );
    assert!(
        wide["error"]["invalid-params"]
            .as_str()
            .unwrap()
            .contains("10 blocks"),
        "{wide}"
    );
    assert_eq!(anvil.asked("eth_getLogs"), 0);

    // An answer past --rpc-max-response is refused, not handed over.
    let big = query(&node, id, "eth_getBlockByNumber", json!(["latest", true]));
    assert_eq!(big, json!({"error": {"too-large": 600}}));

    // A run may make --rpc-max-calls calls; the next ones are refused.
    let input = json!({"chain_id": id, "method": "eth_chainId", "params": [], "repeat": 5});
    let answer = node.post("/run/query", input.to_string().as_bytes()).text();
    assert_eq!(answer, json!({"error": {"too-many-calls": 3}}).to_string());
    let runs = node.get("/handlers/query/runs?limit=1").json();
    assert_eq!(runs[0]["rpc"].as_array().unwrap().len(), 3);
    assert_eq!(node.get("/health").status, 200);
}

#[test]
fn two_chains_at_once_with_balance_check_and_the_environment() {
    let one = Anvil::start(31337);
    let two = Anvil::start(31338);
    let rich = "0x1000000000000000000000000000000000000001";
    one.call("anvil_setBalance", json!([rich, "0x3e8"]));
    two.call("anvil_setBalance", json!([rich, "0x5"]));
    let dir = tempfile::tempdir().unwrap();
    // One chain from the environment, one from --rpc; the flag wins over
    // a variable of the same chain (that one points nowhere).
    let node = NodeBuilder::new(dir.path(), &["up", "--rpc", &two.rpc_flag()])
        .env("WASMATIC_PORT", "0")
        .env("RPC_URL_31337", &one.url())
        .env("RPC_URL_31338", "http://127.0.0.1:9/nowhere")
        .start();
    register(&node, "balance", "balance_check.wasm");
    let check = |input: Value| {
        let response = node.post("/run/balance", input.to_string().as_bytes());
        (response.status, response.text())
    };
    let (status, text) = check(json!({"address": rich, "minBalance": 100, "chain_id": 31337}));
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, json!({"ok": true, "balance": "1000"}).to_string());
    let (status, text) = check(json!({"address": rich, "minBalance": "100", "chain_id": 31338}));
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, json!({"ok": false, "balance": "5"}).to_string());
    // With two chains and none named, the default is mainnet, which this
    // node does not know: the run fails and says so.
    let (status, text) = check(json!({"address": rich, "minBalance": 1}));
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("UnknownChain(1)"), "{text}");
    let (status, text) = check(json!({"address": rich}));
    assert_eq!(status, 500);
    assert!(text.contains("minBalance"), "{text}");
}

#[test]
fn a_chain_id_mismatch_refuses_to_start_and_an_unreachable_endpoint_only_warns() {
    let anvil = Anvil::start(31337);
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("http://{}/?key=SECRETKEY", anvil.addr);
    let (_, log) = NodeBuilder::new(dir.path(), &["up", "--rpc", &format!("5={secret}")])
        .env("WASMATIC_PORT", "0")
        .fail();
    assert!(log.contains("chain 5") && log.contains("31337"), "{log}");
    assert!(!log.contains("SECRETKEY"), "{log}");
    let (_, log) = NodeBuilder::new(dir.path(), &["up", "--rpc", "5=gopher://SECRETKEY"])
        .env("WASMATIC_PORT", "0")
        .fail();
    assert!(
        log.contains("chain 5") && !log.contains("SECRETKEY"),
        "{log}"
    );

    // Nothing listens there: the node starts, warns, and calls say so.
    let port = support::free_port();
    let nowhere = format!("77=http://127.0.0.1:{port}/SECRETKEY");
    let node = up(dir.path(), &["--rpc", &nowhere]);
    assert!(node.log().contains("chain 77"), "{}", node.log());
    register(&node, "query", "eth_query.wasm");
    let answer = query(&node, 77, "eth_blockNumber", json!([]));
    assert!(answer["error"]["unavailable"].is_string(), "{answer}");
    assert!(!node.log().contains("SECRETKEY"));
    let runs = node.get("/handlers/query/runs").text();
    assert!(!runs.contains("SECRETKEY") && !runs.contains(&port.to_string()));
}

#[test]
fn a_silent_endpoint_times_out_and_the_node_keeps_serving() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let rpc = format!("9=http://{addr}/");
    let node = up(dir.path(), &["--rpc", &rpc, "--rpc-timeout", "300ms"]);
    assert!(node.log().contains("chain 9"), "{}", node.log());
    register(&node, "query", "eth_query.wasm");
    let answer = query(&node, 9, "eth_blockNumber", json!([]));
    assert_eq!(answer, json!({"error": "timeout"}));
    assert_eq!(node.get("/health").status, 200);
}
