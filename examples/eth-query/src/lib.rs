//! Makes one read-only JSON-RPC call through the node's `wasmatic:eth/rpc`
//! and answers what came back, the way a guest sees it.
//!
//! Input: `{"chain_id": N, "method": "eth_…", "params": […], "repeat"?: N}`
//! (`repeat` makes the same call N times, to try the node's calls-per-run
//! cap, and answers the last). Output:
//! `{"result": …}`, or `{"error": …}` with the typed error the node gave
//! (unknown chain, method not allowed, the chain's own error…). Handy to try
//! a node's chains from the command line.

use serde_json::{json, Value};

wit_bindgen::generate!({
    path: "../../wit/handler",
    world: "wasmatic:handler/handler",
    generate_all,
});

use wasmatic::eth::rpc::{self, RpcError};

struct EthQuery;

impl Guest for EthQuery {
    fn handler(input: String) -> String {
        let input: Value = match serde_json::from_str(&input) {
            Ok(input) => input,
            Err(e) => panic!("eth-query: the input is not JSON: {e}"),
        };
        let chain = input.get("chain_id").and_then(Value::as_u64).unwrap_or(1);
        let method = input.get("method").and_then(Value::as_str).unwrap_or("");
        let params = input.get("params").cloned().unwrap_or(json!([]));
        let repeat = input.get("repeat").and_then(Value::as_u64).unwrap_or(1);
        let params = params.to_string();
        let mut last = rpc::call(chain, method, &params);
        for _ in 1..repeat {
            last = rpc::call(chain, method, &params);
        }
        let answer = match last {
            Ok(result) => {
                json!({"result": serde_json::from_str::<Value>(&result).unwrap_or(Value::Null)})
            }
            Err(e) => json!({"error": describe(e)}),
        };
        answer.to_string()
    }
}

fn describe(e: RpcError) -> Value {
    match e {
        RpcError::UnknownChain(id) => json!({"unknown-chain": id}),
        RpcError::MethodNotAllowed(m) => json!({"method-not-allowed": m}),
        RpcError::InvalidParams(m) => json!({"invalid-params": m}),
        RpcError::NodeError(e) => {
            json!({"node-error": {"code": e.code, "message": e.message, "data": e.data}})
        }
        RpcError::Timeout => json!("timeout"),
        RpcError::TooLarge(n) => json!({"too-large": n}),
        RpcError::TooManyCalls(n) => json!({"too-many-calls": n}),
        RpcError::Unavailable(m) => json!({"unavailable": m}),
    }
}

export!(EthQuery);
