//! A job written for the WASM system's file protocol, as such jobs are:
//! it reads one JSON line from stdin, `{"method", "params"?, "chainId"?}`,
//! writes the JSON-RPC request to `$WASM_RPC_WORK_DIR/$WASM_RPC_REQUEST_FILE`,
//! polls with short sleeps (for up to 5 s) for
//! `$WASM_RPC_WORK_DIR/$WASM_RPC_RESPONSE_FILE`, and prints
//! `{"ok": true, "result": …}` or `{"ok": false, "error": …}`.
//!
//! Built for `wasm32-wasip1` (a command module, `_start`).

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn call(input: &Value) -> Result<Value, String> {
    let dir = PathBuf::from(var("WASM_RPC_WORK_DIR", "."));
    let request_file = dir.join(var("WASM_RPC_REQUEST_FILE", "wasm_rpc_request.json"));
    let response_file = dir.join(var("WASM_RPC_RESPONSE_FILE", "wasm_rpc_response.json"));
    let mut request = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": input["method"],
        "params": input.get("params").cloned().unwrap_or(json!([])),
    });
    if let Some(chain) = input.get("chainId") {
        request["chainId"] = chain.clone();
    }
    std::fs::write(&request_file, request.to_string())
        .map_err(|e| format!("cannot write the request: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(&response_file) {
            let _ = std::fs::remove_file(&response_file);
            let response: Value =
                serde_json::from_str(&text).map_err(|e| format!("a bad response: {e}"))?;
            return match response.get("error") {
                Some(error) => Err(error.to_string()),
                None => Ok(response["result"].clone()),
            };
        }
        if Instant::now() > deadline {
            return Err("no response within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let mut line = String::new();
    let answer = match std::io::stdin().lock().read_line(&mut line) {
        Err(e) => json!({"ok": false, "error": format!("cannot read stdin: {e}")}),
        Ok(_) => match serde_json::from_str::<Value>(&line) {
            Err(e) => json!({"ok": false, "error": format!("input is not JSON: {e}")}),
            Ok(input) => match call(&input) {
                Ok(result) => json!({"ok": true, "result": result}),
                Err(error) => json!({"ok": false, "error": error}),
            },
        },
    };
    println!("{answer}");
}
