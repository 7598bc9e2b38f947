//! An event watcher, the handler of a chain trigger (`POST /triggers`).
//!
//! The node runs it once per new block (input: `{"chain_id", "number",
//! "hash", "timestamp", "input"}`) or once per matching log (input:
//! `{"chain_id", "block_number", "transaction_hash", "log_index", "address",
//! "topics", "data", …}`). It answers a one-line summary that the run
//! history keeps, `{"event": "block"|"log", "block": N, "log_index"?: I,
//! "value"?: V}` (for a log, `value` is its first data word as a number,
//! when it fits 64 bits), and writes the same to its audit log.

use serde_json::{json, Value};

wit_bindgen::generate!({
    path: "../../wit/handler",
    world: "wasmatic:handler/handler",
    generate_all,
});

use wasmatic::guest::audit::{self, Level};

struct Watcher;

impl Guest for Watcher {
    fn handler(input: String) -> String {
        let event: Value = match serde_json::from_str(&input) {
            Ok(event) => event,
            Err(e) => panic!("watcher: the input is not a chain event: {e}"),
        };
        let summary = if let Some(block) = event.get("number") {
            json!({"event": "block", "block": block})
        } else {
            let value = event["data"].as_str().and_then(first_word);
            json!({
                "event": "log",
                "block": event["block_number"],
                "log_index": event["log_index"],
                "value": value,
            })
        };
        audit::log(Level::Info, &summary.to_string());
        summary.to_string()
    }
}

/// The first 32-byte word of a log's data, if it fits 64 bits.
fn first_word(data: &str) -> Option<u64> {
    let word = data.strip_prefix("0x")?.get(..64)?;
    let (high, low) = word.split_at(48);
    if high.bytes().all(|b| b == b'0') {
        u64::from_str_radix(low, 16).ok()
    } else {
        None
    }
}

export!(Watcher);
