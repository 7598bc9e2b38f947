//! A WASI command job for `POST /wasm/run`, built both as a wasip2 command
//! component and as a wasip1 core module. It reads one JSON line from stdin
//! and writes one JSON object to stdout, `{"ok": true, "result": …}` or
//! `{"ok": false, "error": "…"}`. Its input picks what it does:
//!
//! - `{"n": 21}` answers `{"ok": true, "result": {"doubled": 42}}`;
//! - `{"mode": "fail"}` answers `{"ok": false, "error": "asked to fail"}`;
//! - `{"mode": "spin"}` never ends; `{"mode": "flood"}` writes 8 MiB;
//! - `{"mode": "garbage"}` writes something that is not JSON;
//! - `{"mode": "stderr"}` writes to stderr, then answers;
//! - `{"balance": WEI, "minBalance": WEI}` validates, as a workflow's
//!   `wasm_validation` step expects: `{"ok": true, "result": {"valid": …}}`,
//!   with a `reason` when not valid (amounts decimal or `0x` hex strings).

use std::io::{BufRead, Write};

use serde_json::{json, Value};

fn main() {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        println!("{}", json!({ "ok": false, "error": "cannot read stdin" }));
        return;
    }
    let input: Value = match serde_json::from_str(&line) {
        Ok(input) => input,
        Err(e) => {
            println!(
                "{}",
                json!({ "ok": false, "error": format!("input is not JSON: {e}") })
            );
            return;
        }
    };
    let answer = match input.get("mode").and_then(Value::as_str) {
        Some("fail") => json!({ "ok": false, "error": "asked to fail" }),
        Some("spin") => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Some("flood") => {
            let mut out = std::io::stdout().lock();
            let chunk = "z".repeat(64 * 1024);
            for _ in 0..128 {
                let _ = out.write_all(chunk.as_bytes());
            }
            return;
        }
        Some("garbage") => {
            println!("hello, this is not JSON");
            return;
        }
        Some("stderr") => {
            eprintln!("working on it");
            json!({ "ok": true, "result": "done" })
        }
        _ if input.get("minBalance").is_some() => validate(&input),
        _ => match input.get("n").and_then(Value::as_i64) {
            Some(n) => json!({ "ok": true, "result": { "doubled": n * 2 } }),
            None => json!({ "ok": false, "error": "expected {\"n\": NUMBER} or {\"mode\": …}" }),
        },
    };
    println!("{answer}");
}

/// Whether `balance` is at least `minBalance`.
fn validate(input: &Value) -> Value {
    let amount = |key: &str| -> Option<u128> {
        let value = input.get(key)?;
        match value {
            Value::String(s) => match s.strip_prefix("0x") {
                Some(hex) => u128::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            },
            Value::Number(n) => n.as_u64().map(u128::from),
            _ => None,
        }
    };
    match (amount("balance"), amount("minBalance")) {
        (Some(balance), Some(min)) if balance >= min => {
            json!({ "ok": true, "result": { "valid": true, "balance": balance.to_string() } })
        }
        (Some(balance), Some(min)) => json!({ "ok": true, "result": {
            "valid": false,
            "reason": format!("balance {balance} is below {min}"),
        } }),
        _ => {
            json!({ "ok": false, "error": "expected {\"balance\", \"minBalance\"} as amounts of wei" })
        }
    }
}
