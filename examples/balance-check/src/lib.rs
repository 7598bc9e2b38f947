//! Checks that an account holds at least a minimum balance.
//!
//! Input: `{"address": "0x…", "minBalance": WEI, "chain_id"?: N}`, where
//! `minBalance` is a decimal number or string, or a `0x` hex string, and the
//! chain defaults to the node's only chain (else 1, mainnet). Output:
//! `{"ok": balance >= minBalance, "balance": "<wei, decimal>"}`.
//!
//! The balance comes from `eth_getBalance` through `wasmatic:eth/rpc`: the
//! guest names the chain by id and never sees the node's RPC URL. A bad
//! input or a failed call fails the run with the reason.

use serde_json::{json, Value};

wit_bindgen::generate!({
    path: "../../wit/handler",
    world: "wasmatic:handler/handler",
    generate_all,
});

use wasmatic::eth::rpc;

struct BalanceCheck;

impl Guest for BalanceCheck {
    fn handler(input: String) -> String {
        match check(&input) {
            Ok(answer) => answer.to_string(),
            Err(why) => panic!("balance-check: {why}"),
        }
    }
}

fn check(input: &str) -> Result<Value, String> {
    let input: Value =
        serde_json::from_str(input).map_err(|e| format!("the input is not JSON: {e}"))?;
    let address = input
        .get("address")
        .and_then(Value::as_str)
        .ok_or("the input needs \"address\": \"0x…\"")?;
    let min = amount(
        input
            .get("minBalance")
            .ok_or("the input needs \"minBalance\"")?,
    )?;
    let chain = match input.get("chain_id") {
        Some(id) => id.as_u64().ok_or("\"chain_id\" must be a number")?,
        None => match rpc::chains().as_slice() {
            [only] => *only,
            _ => 1,
        },
    };
    let params = json!([address, "latest"]).to_string();
    let answer = rpc::call(chain, "eth_getBalance", &params)
        .map_err(|e| format!("eth_getBalance on chain {chain}: {e:?}"))?;
    let balance: Value =
        serde_json::from_str(&answer).map_err(|e| format!("the node's answer: {e}"))?;
    let balance = amount(&balance)?;
    Ok(json!({"ok": balance >= min, "balance": balance.to_string()}))
}

/// Wei as JSON: a number, a decimal string or a `0x` hex quantity.
fn amount(value: &Value) -> Result<u128, String> {
    let parsed = match value {
        Value::Number(n) => n.as_u64().map(u128::from),
        Value::String(s) => match s.strip_prefix("0x") {
            Some(hex) => u128::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    };
    parsed.ok_or_else(|| format!("{value} is not an amount of wei"))
}

export!(BalanceCheck);
