//! Which JSON-RPC methods a guest may call, and the bounds on their
//! parameters.
//!
//! The list is an allow-list, not a deny-list: a method a chain's node adds
//! later (or an `anvil_*`, `hardhat_*`, `debug_*` of a development node) is
//! refused until it is known to only read. Every method here reads state;
//! none signs, sends, subscribes or changes the endpoint.

use serde_json::Value;

use super::RpcError;

/// The methods forwarded to a chain's node.
pub const ALLOWED: &[&str] = &[
    "eth_blockNumber",
    "eth_chainId",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_call",
    "eth_estimateGas",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getLogs",
    "net_version",
    "web3_clientVersion",
];

/// Largest params forwarded: an `eth_call` with a large contract's input
/// fits many times over, and no guest can make the node send the runner's
/// endpoint megabytes per call.
pub const MAX_PARAMS: usize = 256 * 1024;

/// Checks that `method` may be forwarded with `params` (JSON text) and
/// returns the params as a JSON array. `max_log_range` bounds the blocks one
/// `eth_getLogs` may scan: an unbounded range makes the chain's node (and so
/// the runner's RPC bill) do work without limit.
pub fn check(method: &str, params: &str, max_log_range: u64) -> Result<Value, RpcError> {
    if !ALLOWED.contains(&method) {
        return Err(RpcError::MethodNotAllowed(method.to_string()));
    }
    if params.len() > MAX_PARAMS {
        return Err(RpcError::InvalidParams(format!(
            "params of {} bytes; at most {MAX_PARAMS}",
            params.len()
        )));
    }
    let params: Value = if params.trim().is_empty() {
        Value::Array(Vec::new())
    } else {
        serde_json::from_str(params)
            .map_err(|e| RpcError::InvalidParams(format!("params are not JSON: {e}")))?
    };
    if !params.is_array() {
        return Err(RpcError::InvalidParams(
            "params must be a JSON array (`[]` for none)".to_string(),
        ));
    }
    if method == "eth_getLogs" {
        check_log_range(&params, max_log_range)?;
    }
    Ok(params)
}

/// An `eth_getLogs` filter scans one block (`blockHash`, or no range: the
/// latest block), or a range given by two block numbers at most
/// `max_log_range` blocks wide. Tags such as `latest` at one end only would
/// make the width depend on the chain's head, so they are refused.
fn check_log_range(params: &Value, max_log_range: u64) -> Result<(), RpcError> {
    let filter = params
        .get(0)
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::InvalidParams("eth_getLogs takes one filter object".into()))?;
    if filter.contains_key("blockHash") {
        return Ok(());
    }
    let end = |key: &str| -> Result<Option<u64>, RpcError> {
        match filter.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s == "latest" => Ok(None),
            Some(Value::String(s)) => parse_quantity(s).map(Some).ok_or_else(|| {
                RpcError::InvalidParams(format!(
                    "eth_getLogs: {key} must be a block number (0x…) or latest, not {s}"
                ))
            }),
            Some(other) => Err(RpcError::InvalidParams(format!(
                "eth_getLogs: {key} must be a block number (0x…), not {other}"
            ))),
        }
    };
    match (end("fromBlock")?, end("toBlock")?) {
        (None, None) => Ok(()),
        (Some(from), Some(to)) if to >= from && to - from < max_log_range => Ok(()),
        (Some(from), Some(to)) if to < from => Err(RpcError::InvalidParams(format!(
            "eth_getLogs: toBlock ({to}) is before fromBlock ({from})"
        ))),
        (Some(_), Some(_)) => Err(RpcError::InvalidParams(format!(
            "eth_getLogs: a range may span at most {max_log_range} blocks"
        ))),
        _ => Err(RpcError::InvalidParams(
            "eth_getLogs: give both fromBlock and toBlock as block numbers, or blockHash"
                .to_string(),
        )),
    }
}

/// A JSON-RPC quantity: `0x` and hex digits.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_methods_pass() {
        assert!(check("eth_call", "[]", 10).is_ok());
        assert!(check("eth_blockNumber", "", 10).is_ok());
        for refused in [
            "eth_sendTransaction",
            "eth_sendRawTransaction",
            "eth_sign",
            "personal_unlockAccount",
            "debug_traceTransaction",
            "anvil_mine",
            "eth_subscribe",
        ] {
            assert!(
                matches!(check(refused, "[]", 10), Err(RpcError::MethodNotAllowed(m)) if m == refused)
            );
        }
        assert!(matches!(
            check("eth_call", "{}", 10),
            Err(RpcError::InvalidParams(_))
        ));
        let huge = format!("[\"0x{}\"]", "0".repeat(MAX_PARAMS));
        assert!(matches!(
            check("eth_call", &huge, 10),
            Err(RpcError::InvalidParams(_))
        ));
    }

    #[test]
    fn log_ranges_are_bounded() {
        let logs = |filter: &str| check("eth_getLogs", &format!("[{filter}]"), 100);
        assert!(logs(r#"{"fromBlock":"0x1","toBlock":"0x64"}"#).is_ok());
        assert!(logs(r#"{"fromBlock":"0x1","toBlock":"0x65"}"#).is_err());
        assert!(logs(r#"{"fromBlock":"0x5","toBlock":"0x4"}"#).is_err());
        assert!(logs(r#"{"fromBlock":"0x0"}"#).is_err());
        assert!(logs(r#"{"fromBlock":"earliest","toBlock":"0x1"}"#).is_err());
        assert!(logs(r#"{"blockHash":"0xab"}"#).is_ok());
        assert!(logs(r#"{}"#).is_ok());
        assert!(check("eth_getLogs", "[]", 100).is_err());
    }
}
