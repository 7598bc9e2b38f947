//! Read-only Ethereum JSON-RPC for guests: the chains the node knows, the
//! methods a guest may call on them, and the bounds of one run's calls.
//!
//! May depend on: `wasmatic-api`, `wasmatic-metrics`, `wasmatic-net` (the
//! one HTTP client), `wasmatic-sandbox` (a core job's store),
//! `wasmatic-state` (the run record's `RpcCall`).
//!
//! One implementation serves every way in (components through
//! `wasmatic:eth/rpc`, see `handler::eth`; core-module jobs through one core
//! import, see [`core`]): each goes through [`RunRpc::call`],
//! which checks the method against the allow-list ([`methods`]), counts the
//! call against the run's budget, forwards it ([`client`]) and records it.
//!
//! The RPC URLs are the node runner's own configuration, so they are
//! reachable wherever they point (loopback too: `--allow-outbound` governs
//! guests' own HTTP, not these), and they never appear in an error, a run
//! record or a log line: an endpoint is named by its chain id only.

mod client;
pub mod core;
pub mod files;
pub mod methods;
pub mod triggers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use client::Endpoint;

/// Environment variables `RPC_URL_<chainId>` name endpoints too; `--rpc`
/// wins over them for the same chain.
pub const ENV_PREFIX: &str = "RPC_URL_";

/// How long the start-up `eth_chainId` check waits for each endpoint.
const START_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The bounds of guests' RPC calls (flags of `up` and `wasm`).
#[derive(Clone, Debug)]
pub struct RpcLimits {
    /// How long one call may wait for its answer.
    pub timeout: Duration,
    /// Largest answer accepted, in bytes.
    pub max_response: usize,
    /// Calls one run may make.
    pub max_calls: u32,
    /// Blocks one `eth_getLogs` may span (guests' and the triggers').
    pub max_log_range: u64,
    /// How often chain triggers ask their chain for new blocks.
    pub poll_interval: Duration,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            timeout: Duration::from_secs(10),
            max_response: 4 << 20,
            max_calls: 100,
            max_log_range: 1000,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Why a call did not return a result; the same cases as the WIT's
/// `rpc-error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("chain {0} is not configured on this node")]
    UnknownChain(u64),
    #[error("method {0} is not allowed: guests may only call read-only methods")]
    MethodNotAllowed(String),
    #[error("invalid params: {0}")]
    InvalidParams(String),
    #[error("the chain's node answered error {}: {}", .0.code, .0.message)]
    Node(EndpointError),
    #[error("the chain's node did not answer in time")]
    Timeout,
    #[error("the answer is larger than {0} bytes")]
    TooLarge(u64),
    #[error("this run made {0} RPC calls, as many as one run may")]
    TooManyCalls(u32),
    #[error("the chain's node is unavailable: {0}")]
    Unavailable(String),
}

/// A JSON-RPC error object the chain's node answered with.
#[derive(Debug, Clone)]
pub struct EndpointError {
    pub code: i64,
    pub message: String,
    /// JSON text.
    pub data: Option<String>,
}

/// The chains the node knows and the bounds of guests' calls to them.
#[derive(Debug, Default)]
pub struct Chains {
    endpoints: BTreeMap<u64, Arc<Endpoint>>,
    pub limits: RpcLimits,
}

impl Chains {
    /// The endpoints of `flags` (`CHAIN_ID=URL`) and of the `RPC_URL_<id>`
    /// variables of `env`; a flag wins over a variable of the same chain.
    pub fn configure(
        flags: &[String],
        env: impl IntoIterator<Item = (String, String)>,
        limits: RpcLimits,
    ) -> Result<Chains> {
        let mut urls: BTreeMap<u64, (String, String)> = BTreeMap::new();
        for (name, url) in env {
            let Some(id) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            // The environment is shared with other programs, which may have
            // variables of their own with this prefix: one that names no
            // chain id is not the node's, and is left alone.
            let Ok(chain) = id.parse::<u64>() else {
                tracing::warn!("${name} is ignored: `{id}` is not a chain id");
                continue;
            };
            urls.insert(chain, (format!("${name}"), url));
        }
        for flag in flags {
            let (id, url) = flag.split_once('=').context("--rpc takes CHAIN_ID=URL")?;
            let chain: u64 = id
                .trim()
                .parse()
                .with_context(|| format!("--rpc: `{id}` is not a chain id"))?;
            urls.insert(chain, (format!("--rpc {chain}=…"), url.trim().to_string()));
        }
        let mut endpoints = BTreeMap::new();
        for (chain, (source, url)) in urls {
            // The error names where the URL came from, never the URL.
            let endpoint = Endpoint::parse(&url)
                .with_context(|| format!("the RPC URL of chain {chain} ({source})"))?;
            endpoints.insert(chain, endpoint);
        }
        Ok(Chains { endpoints, limits })
    }

    /// The configured chain ids, ascending.
    pub fn ids(&self) -> Vec<u64> {
        self.endpoints.keys().copied().collect()
    }

    /// The chain a job that names none reads: the only configured one,
    /// else mainnet.
    pub fn default_chain(&self) -> u64 {
        match self.ids().as_slice() {
            [only] => *only,
            _ => 1,
        }
    }

    /// Asks each endpoint for its `eth_chainId`. One that answers another
    /// chain is a misconfiguration that would send guests' reads to the
    /// wrong chain, so the node refuses to start; one that does not answer
    /// may be down for a while, so it is only a warning (calls retry it).
    pub async fn check_at_start(&self) -> Result<()> {
        // All at once: a node with several chains down waits one timeout,
        // not one per chain.
        let mut checks = tokio::task::JoinSet::new();
        for (&chain, endpoint) in &self.endpoints {
            let endpoint = endpoint.clone();
            let max_response = self.limits.max_response;
            checks.spawn(async move {
                let answer = endpoint
                    .call(
                        "eth_chainId",
                        serde_json::json!([]),
                        START_CHECK_TIMEOUT,
                        max_response,
                    )
                    .await;
                (chain, answer)
            });
        }
        let mut answers = checks.join_all().await;
        answers.sort_by_key(|(chain, _)| *chain);
        for (chain, answer) in answers {
            match answer {
                Ok(value) => {
                    let actual = value.as_str().and_then(methods::parse_quantity);
                    if actual != Some(chain) {
                        bail!(
                            "the RPC endpoint configured for chain {chain} serves chain {}; fix --rpc or ${ENV_PREFIX}{chain}",
                            actual.map_or_else(|| value.to_string(), |id| id.to_string())
                        );
                    }
                    tracing::info!("chain {chain}: RPC endpoint checked");
                }
                Err(e) => tracing::warn!(
                    "chain {chain}: the RPC endpoint did not answer eth_chainId ({e}); calls will retry it"
                ),
            }
        }
        Ok(())
    }

    /// Forwards one call, after the allow-list and parameter checks.
    pub async fn forward(
        &self,
        chain: u64,
        method: &str,
        params: &str,
    ) -> Result<serde_json::Value, RpcError> {
        let endpoint = self
            .endpoints
            .get(&chain)
            .ok_or(RpcError::UnknownChain(chain))?;
        let params = methods::check(method, params, self.limits.max_log_range)?;
        let answer = endpoint
            .call(
                method,
                params,
                self.limits.timeout,
                self.limits.max_response,
            )
            .await;
        wasmatic_metrics::rpc_call(chain, method, answer.is_ok());
        answer
    }
}

/// One RPC call of a run, as its run record lists it.
pub use wasmatic_state::RpcCall;

/// The RPC calls of one run: counted against `--rpc-max-calls` and listed.
/// Clones share the count, so a job's core import and its file protocol
/// draw on one budget.
#[derive(Debug, Clone)]
pub struct RunRpc {
    chains: Arc<Chains>,
    shared: Arc<std::sync::Mutex<RunCalls>>,
}

#[derive(Debug, Default)]
struct RunCalls {
    /// Calls started, finished or not: what the cap counts.
    started: u32,
    done: Vec<RpcCall>,
}

impl RunRpc {
    /// A run's calls to `chains`, none made yet.
    pub fn new(chains: Arc<Chains>) -> Self {
        RunRpc {
            chains,
            shared: Default::default(),
        }
    }

    /// The chains this run may call.
    pub fn chains(&self) -> &Chains {
        &self.chains
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunCalls> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls made so far, and a fresh budget for the next run (of a
    /// reused instance).
    pub fn take_calls(&self) -> Vec<RpcCall> {
        let mut calls = self.lock();
        calls.started = 0;
        std::mem::take(&mut calls.done)
    }

    /// Makes one call on behalf of the run.
    pub async fn call(
        &self,
        chain: u64,
        method: &str,
        params: &str,
    ) -> Result<serde_json::Value, RpcError> {
        let chains = &self.chains;
        let max = chains.limits.max_calls;
        {
            let mut calls = self.lock();
            if calls.started >= max {
                return Err(RpcError::TooManyCalls(max));
            }
            calls.started += 1;
        }
        let start = Instant::now();
        let result = chains.forward(chain, method, params).await;
        self.lock().done.push(RpcCall {
            chain,
            // A refused method's name is the guest's own text: bounded so
            // that the record stays small.
            method: method.chars().take(64).collect(),
            duration_us: start.elapsed().as_micros().try_into().unwrap_or(u64::MAX),
            ok: result.is_ok(),
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_environment_and_errors_hide_urls() {
        let chains = Chains::configure(
            &["5=http://127.0.0.1:1/flag".to_string()],
            [
                (
                    "RPC_URL_5".to_string(),
                    "http://127.0.0.1:2/env".to_string(),
                ),
                ("RPC_URL_7".to_string(), "http://127.0.0.1:3/".to_string()),
                ("PATH".to_string(), "/bin".to_string()),
                (
                    "RPC_URL_MAINNET".to_string(),
                    "http://127.0.0.1:4/".to_string(),
                ),
            ],
            RpcLimits::default(),
        )
        .unwrap();
        assert_eq!(chains.ids(), vec![5, 7]);
        assert!(!format!("{chains:?}").contains("127.0.0.1"));
        let e = Chains::configure(&["9=gopher://SECRET".to_string()], [], RpcLimits::default())
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("chain 9") && !e.contains("SECRET"), "{e}");
        assert!(Chains::configure(&["x=http://h/".to_string()], [], RpcLimits::default()).is_err());
    }
}
