//! What a chain trigger runs on, checked, and the chain events after a
//! cursor, fetched in chain order.
//!
//! The node's own polling goes through the same allow-listed client as
//! guests' calls ([`super::Chains::forward`]), with the same bounded
//! `eth_getLogs` ranges.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::methods::parse_quantity;
use super::{Chains, RpcError};
use wasmatic_state::Cursor;

/// What a trigger runs on; its JSON is the `on` of `POST /triggers`:
/// `"block"` or `{"logs": {"address", "topics"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Block,
    Logs(LogFilter),
}

/// Logs of `address` whose topics match `topics` position by position
/// (`null` matches any).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogFilter {
    pub address: String,
    #[serde(default)]
    pub topics: Vec<Option<String>>,
}

/// Topics a log has at most.
const MAX_TOPICS: usize = 4;

/// Blocks a block trigger runs in one poll: a trigger far behind catches
/// up in steps, each committed, rather than in one unbounded batch.
const BLOCKS_PER_POLL: u64 = 100;

impl Event {
    /// The event with its address and topics checked and lowercased, or
    /// why it is not one.
    pub fn checked(self) -> Result<Event, String> {
        match self {
            Event::Block => Ok(Event::Block),
            Event::Logs(filter) => {
                let address = hex_of_len(&filter.address, 20).ok_or_else(|| {
                    format!(
                        "`{}` is not an address (0x and 40 hex digits)",
                        filter.address
                    )
                })?;
                if filter.topics.len() > MAX_TOPICS {
                    return Err(format!("a log has at most {MAX_TOPICS} topics"));
                }
                let topics = filter
                    .topics
                    .into_iter()
                    .map(|topic| match topic {
                        None => Ok(None),
                        Some(t) => hex_of_len(&t, 32)
                            .map(Some)
                            .ok_or_else(|| format!("`{t}` is not a topic (0x and 64 hex digits)")),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Event::Logs(LogFilter { address, topics }))
            }
        }
    }
}

/// `s` lowercased, if it is `0x` and `bytes` bytes of hex.
fn hex_of_len(s: &str, bytes: usize) -> Option<String> {
    let digits = s.strip_prefix("0x")?;
    (digits.len() == bytes * 2 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| s.to_ascii_lowercase())
}

/// One event for a trigger's handler: its input, and the cursor just past
/// it.
#[derive(Debug)]
pub struct ChainEvent {
    pub input: Value,
    pub after: Cursor,
}

/// The chain's latest block number.
pub async fn head(chains: &Chains, chain: u64) -> Result<u64, RpcError> {
    let value = chains.forward(chain, "eth_blockNumber", "[]").await?;
    quantity(&value, "eth_blockNumber")
}

/// Heads read within the last half poll interval, by chain.
static HEADS: Mutex<BTreeMap<u64, (Instant, u64)>> = Mutex::new(BTreeMap::new());

/// The chain's latest block number, read at most about twice per poll
/// interval: the triggers of one chain share it, so that a thousand of them
/// do not each ask the runner's endpoint every round.
pub async fn shared_head(chains: &Chains, chain: u64) -> Result<u64, RpcError> {
    let fresh = chains.limits.poll_interval / 2;
    let heads = || HEADS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, number)) = heads().get(&chain) {
        if at.elapsed() < fresh {
            return Ok(*number);
        }
    }
    let number = head(chains, chain).await?;
    heads().insert(chain, (Instant::now(), number));
    Ok(number)
}

/// The events of `event` from `cursor` up to block `last` (inclusive), in
/// chain order, at most one poll's worth; and the cursor once all of them
/// have run.
pub async fn events_after(
    chains: &Chains,
    chain: u64,
    event: &Event,
    cursor: Cursor,
    last: u64,
    input: Option<&Value>,
) -> Result<(Vec<ChainEvent>, Cursor), RpcError> {
    match event {
        Event::Block => {
            let to = last.min(cursor.block.saturating_add(BLOCKS_PER_POLL - 1));
            let mut events = Vec::new();
            for number in cursor.block..=to {
                let params = json!([format!("0x{number:x}"), false]).to_string();
                let block = chains
                    .forward(chain, "eth_getBlockByNumber", &params)
                    .await?;
                let timestamp = quantity(&block["timestamp"], "the block's timestamp")?;
                events.push(ChainEvent {
                    input: json!({
                        "chain_id": chain,
                        "number": number,
                        "hash": block["hash"],
                        "timestamp": timestamp,
                        "input": input,
                    }),
                    after: Cursor {
                        block: number + 1,
                        log: 0,
                    },
                });
            }
            Ok((
                events,
                Cursor {
                    block: to + 1,
                    log: 0,
                },
            ))
        }
        Event::Logs(filter) => {
            let span = chains.limits.max_log_range.max(1);
            let to = last.min(cursor.block.saturating_add(span - 1));
            let params = json!([{
                "address": filter.address,
                "topics": filter.topics,
                "fromBlock": format!("0x{:x}", cursor.block),
                "toBlock": format!("0x{to:x}"),
            }])
            .to_string();
            let logs = chains.forward(chain, "eth_getLogs", &params).await?;
            let logs = logs.as_array().cloned().unwrap_or_default();
            let mut events = Vec::with_capacity(logs.len());
            for log in logs {
                if log["removed"] == json!(true) {
                    continue;
                }
                let at = Cursor {
                    block: quantity(&log["blockNumber"], "a log's blockNumber")?,
                    log: quantity(&log["logIndex"], "a log's logIndex")?,
                };
                // The cursor may sit inside a block whose first logs ran
                // before a restart.
                if at < cursor {
                    continue;
                }
                events.push(ChainEvent {
                    input: json!({
                        "chain_id": chain,
                        "block_number": at.block,
                        "block_hash": log["blockHash"],
                        "transaction_hash": log["transactionHash"],
                        "log_index": at.log,
                        "address": log["address"],
                        "topics": log["topics"],
                        "data": log["data"],
                        "input": input,
                    }),
                    after: Cursor {
                        block: at.block,
                        log: at.log + 1,
                    },
                });
            }
            events.sort_by_key(|e| e.after);
            Ok((
                events,
                Cursor {
                    block: to + 1,
                    log: 0,
                },
            ))
        }
    }
}

fn quantity(value: &Value, what: &str) -> Result<u64, RpcError> {
    value
        .as_str()
        .and_then(parse_quantity)
        .ok_or_else(|| RpcError::Unavailable(format!("{what} is not a block quantity")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_are_checked() {
        let block: Event = serde_json::from_str(r#""block""#).unwrap();
        assert_eq!(block.checked(), Ok(Event::Block));
        let topic = format!("0x{}", "Ab".repeat(32));
        let logs: Event = serde_json::from_value(json!({"logs": {
            "address": format!("0x{}", "CD".repeat(20)),
            "topics": [topic, null],
        }}))
        .unwrap();
        let Ok(Event::Logs(filter)) = logs.checked() else {
            panic!("a valid filter")
        };
        assert_eq!(filter.address, format!("0x{}", "cd".repeat(20)));
        assert_eq!(filter.topics, vec![Some(topic.to_lowercase()), None]);
        let bad = |address: &str, topics: Vec<Option<String>>| {
            Event::Logs(LogFilter {
                address: address.into(),
                topics,
            })
            .checked()
            .is_err()
        };
        assert!(bad("0x12", vec![]));
        assert!(bad(&format!("0x{}", "zz".repeat(20)), vec![]));
        assert!(bad(
            &format!("0x{}", "00".repeat(20)),
            vec![Some("0x1".into())]
        ));
        assert!(bad(&format!("0x{}", "00".repeat(20)), vec![None; 5]));
    }
}
