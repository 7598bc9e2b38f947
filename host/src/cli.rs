//! Command-line interface: `wasmatic up` and `wasmatic wasm` start a node;
//! the client subcommands (`register`, `run`, `ls`, …; see `client/`) talk
//! to one.
//!
//! `wasm` takes the flags of `wasmtime serve`: the `-O/-C/-D/-W/-S` families
//! come from the `wasmtime-cli-flags` crate, `--dir` and `--env` have
//! wasmtime's syntax. `up` is `wasm --dir registered::registered -S cli -S http`
//! with the operator from `$WASMATIC` or the one embedded in the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use wasmtime_cli_flags::CommonOptions;

use wasmatic_api::parse_size;
use wasmatic_net::Rule;
use wasmatic_node::StateLimits;
use wasmatic_sandbox::limits::Limits;
use wasmatic_server::DirMapping;
use wasmatic_state::RunBounds;

/// Environment variable naming the operator component to run.
pub const OPERATOR_ENV: &str = "WASMATIC";
/// Environment variable naming the port to listen on.
pub const PORT_ENV: &str = "WASMATIC_PORT";
/// Port used when neither a flag nor `$WASMATIC_PORT` gives one.
pub const DEFAULT_PORT: u16 = 8080;
/// Operator instance reuse of `up` when not given: chosen from the
/// benchmark (BENCHMARKS.md), safe because the default operator is stateless.
pub const UP_INSTANCE_REUSE: usize = 128;
pub use wasmatic_api::TOKEN_ENV;
/// Guest path under which the operator sees the handler directory.
pub const REGISTERED_GUEST_DIR: &str = "registered";

#[derive(Parser)]
#[command(
    name = "wasmatic",
    version,
    about = "Run other people's WebAssembly: register handlers over HTTP, run them on demand or on a cron schedule."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start a node: the operator from `$WASMATIC` (or the embedded one)
    /// serving on `0.0.0.0:$WASMATIC_PORT`, with `./registered` preopened as
    /// `registered`.
    Up(UpCommand),
    /// Serve HTTP by running any `wasi:http/proxy` component as the operator,
    /// with the flags of `wasmtime serve`.
    Wasm(WasmCommand),
    #[command(flatten)]
    Client(wasmatic_client::ClientCommand),
}

impl Command {
    /// The node's options, for the commands that run a node.
    pub fn node(&self) -> Option<&NodeOptions> {
        match self {
            Command::Up(up) => Some(&up.node),
            Command::Wasm(wasm) => Some(&wasm.node),
            Command::Client(_) => None,
        }
    }
}

#[derive(Args)]
pub struct UpCommand {
    /// Port to listen on (default: `$WASMATIC_PORT`, else 8080).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Host directory preopened to the operator as `registered`.
    #[arg(long, value_name = "DIR", default_value = "registered")]
    pub registered: PathBuf,

    #[command(flatten)]
    pub node: NodeOptions,
}

#[derive(Args)]
pub struct WasmCommand {
    /// Socket address to listen on (default: `0.0.0.0:$WASMATIC_PORT`, else
    /// `0.0.0.0:8080`).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,

    #[command(flatten)]
    pub node: NodeOptions,

    /// The operator: a `wasi:http/proxy` component (default: `$WASMATIC`).
    #[arg(value_name = "OPERATOR")]
    pub operator: Option<PathBuf>,
}

/// Options shared by `up` and `wasm`.
#[derive(Args)]
pub struct NodeOptions {
    /// Grant the operator access to a host directory, as `HOST[::GUEST]`.
    #[arg(long = "dir", value_name = "HOST_DIR[::GUEST_DIR]", value_parser = DirMapping::parse)]
    pub dirs: Vec<DirMapping>,

    /// Pass an environment variable to the operator, as `NAME=VALUE`, or
    /// `NAME` to pass on the host's value.
    #[arg(long = "env", value_name = "NAME[=VALUE]", value_parser = EnvVar::parse)]
    pub envs: Vec<EnvVar>,

    /// Directory for the node's own state (schedules, run history, compiled
    /// code). It must lie outside every directory granted to the operator.
    #[arg(
        long,
        value_name = "DIR",
        env = "WASMATIC_STATE",
        default_value = ".wasmatic"
    )]
    pub state_dir: PathBuf,

    /// Keep the node's state in PostgreSQL (`postgres://USER@HOST:PORT/DB`)
    /// instead of SQLite in the state directory: every node started with
    /// the same URL serves the same handlers, schedules and workflows, and
    /// each tick or chain event runs on one of them. Compiled code stays in
    /// each node's state directory.
    #[arg(long = "state", value_name = "URL", env = "WASMATIC_STATE_URL")]
    pub state_url: Option<String>,

    /// Time a handler call may take before it is stopped.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub call_timeout: Duration,

    /// Time the operator may take to answer one request, at most 10m; the
    /// request body must arrive within it too.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub request_timeout: Duration,

    /// Largest handler component accepted. A componentize-py component is
    /// about 18MiB (it carries the Python interpreter and its snapshot), a
    /// componentize-js one about 13MiB: the default leaves room for their
    /// dependencies.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub max_handler_size: u64,

    /// Largest request body accepted (larger: 413). A component is uploaded
    /// as the raw body; the margin over `--max-handler-size` is for the
    /// core-module routes, whose JSON carries the module as hex or base64.
    #[arg(long, value_name = "SIZE", default_value = "72MiB", value_parser = parse_size)]
    pub max_request_body: u64,

    /// Linear memory one handler instance may use. The Python example
    /// handler peaks at 13MiB (its interpreter's snapshot is most of it).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub handler_memory: u64,

    /// Linear memory one operator instance may use.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub operator_memory: u64,

    /// Linear memory every operator instance together may use: requests in
    /// flight share it, and one that would grow past it gets 503.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub operator_memory_total: u64,

    /// Bytes of a handler's stdout, and of its stderr, kept per run (the
    /// rest is dropped and the record says so).
    #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = parse_size)]
    pub max_captured_output: u64,

    /// Largest output a handler may return (larger: the run fails).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_result: u64,

    /// Handler calls that may run at once; more are refused with 503.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_concurrent_calls: usize,

    /// Runs kept per component in the run history; older ones are dropped.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub runs_kept: u32,

    /// Runs kept in the run history in all; the oldest go first.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub runs_total: u64,

    /// Bytes of run history kept in all (outputs, stdout, stderr, audit);
    /// the oldest runs go first.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub runs_bytes: u64,

    /// Schedules the node holds at most; more are refused with 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_schedules: usize,

    /// Components the node holds at most (each costs its bytes, its
    /// compiled code and ~64 KiB of memory); a registration of a new name
    /// past it is refused with 503. Replacing a component is always allowed.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub max_components: usize,

    /// Scheduled runs that may run at once, beside the clients' calls; a
    /// tick that finds none free for a second is recorded as failed.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_concurrent_ticks: usize,

    /// Hosts handlers may call over HTTP, as `HOST[:PORT]`, `*.DOMAIN[:PORT]`
    /// or `*` (repeatable). Without it, any public host. Loopback, private
    /// and link-local addresses need an entry naming that host exactly.
    #[arg(long = "allow-outbound", value_name = "HOST[:PORT]", value_parser = Rule::parse)]
    pub allow_outbound: Vec<Rule>,

    /// Requests one operator instance may answer (as `wasmtime serve`); 1
    /// gives every request a fresh instance. Default: 1 for `wasm`, as
    /// `wasmtime serve`; 128 for `up`, whose operator keeps no state across
    /// requests (see the README on the trade-off).
    #[arg(long, value_name = "N")]
    pub max_instance_reuse_count: Option<usize>,

    /// How long an idle operator instance, or an idle instance of a handler
    /// registered with `reuse=N`, is kept for reuse.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub idle_instance_timeout: Duration,

    /// Requests the operator answers at once; more get 503 with
    /// `Retry-After`. Idle reused operator instances count too, and the
    /// operator's own pool of instance slots (separate from the guests') is
    /// sized from it.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=MAX_IN_FLIGHT))]
    pub max_in_flight: u32,

    /// Client connections open at once; more are answered 503 and closed.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=MAX_CONNECTIONS))]
    pub max_connections: u32,

    /// Time a client has to send a request's head (line and headers), from
    /// when the node starts waiting for it; slower: the connection is
    /// closed. Also bounds how long an idle connection waits for its next
    /// request.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// Longest wait for the next piece of a request body; slower: 408 and
    /// the connection is closed. The request body is read in full before
    /// the operator runs.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub body_timeout: Duration,

    /// Time a keep-alive connection may stay open with no request in
    /// progress before the node closes it.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub keep_alive_timeout: Duration,

    /// Time a client has to take a response, from when it is ready to when
    /// its last byte is written; slower (a client that reads a large page
    /// through a tiny window, or not at all): the connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub write_timeout: Duration,

    /// Bytes of request bodies the node holds at once, across all
    /// connections; a request whose body would go past it gets 503 with
    /// `Retry-After`.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_buffered_bodies: u64,

    /// A web origin (`SCHEME://HOST[:PORT]`) allowed to send mutating
    /// requests (POST, PUT, PATCH, DELETE), or `*` for any (repeatable).
    /// Without it, a mutating request whose `Origin` header is not the
    /// node's own is refused with 403; requests without `Origin` (curl,
    /// servers) pass.
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    pub allow_origins: Vec<String>,

    /// A host name this node is reached by (repeatable), besides IP
    /// addresses and `localhost`: a browser's mutating request counts as
    /// the node's own only when its `Host` is one of these, so a web page
    /// whose name was rebound to the node's address cannot drive it.
    #[arg(long = "public-host", value_name = "NAME", value_parser = parse_public_host)]
    pub public_hosts: Vec<String>,

    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object a line, with the request id of the request it belongs to) for
    /// log shippers.
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::logging::LogFormat,

    /// Keep each of the runtime's worker threads (one per core) on a core
    /// of its own. A burst of work (a thousand cron runs due at one second)
    /// then spreads over every core at once instead of waiting some 10 ms
    /// for the kernel to move a worker off a shared one. Pass `false` on a
    /// machine whose cores are busy with other work, where a worker pinned
    /// to a busy core could not move to a free one.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub pin_workers: bool,

    /// Make `GET /metrics` need `Authorization: Bearer TOKEN` (without it
    /// the metrics are open, as `/health` is). Best passed in the
    /// environment, where other users of the machine cannot read it.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "WASMATIC_METRICS_TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,

    /// A chain guests may read, as `CHAIN_ID=URL` (repeatable); wins over
    /// the `RPC_URL_<CHAIN_ID>` environment variables. The URL is checked
    /// with `eth_chainId` at start and never shown.
    #[arg(long = "rpc", value_name = "CHAIN_ID=URL")]
    pub rpc: Vec<String>,

    /// Time one guest RPC call may wait for the chain's answer.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub rpc_timeout: Duration,

    /// Largest RPC answer a guest may receive.
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_size)]
    pub rpc_max_response: u64,

    /// RPC calls one run may make.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub rpc_max_calls: u32,

    /// Blocks one `eth_getLogs` call may span.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rpc_max_log_range: u64,

    /// How often chain triggers ask their chain for new blocks.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
    pub chain_poll_interval: Duration,

    #[command(flatten)]
    pub wasmtime: CommonOptions,
}

/// Largest `--max-in-flight`.
const MAX_IN_FLIGHT: i64 = 4096;
/// Largest `--max-connections`.
const MAX_CONNECTIONS: i64 = 1_000_000;
/// Longest timeout any serving flag takes: long enough for any request a
/// node should serve, short enough that no deadline computed from it can
/// overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

impl NodeOptions {
    pub fn limits(&self) -> Result<Limits> {
        let size = |bytes: u64| usize::try_from(bytes).context("size too large for this platform");
        Limits {
            call_timeout: self.call_timeout,
            request_timeout: self.request_timeout,
            max_handler_size: self.max_handler_size,
            max_request_body: self.max_request_body,
            handler_memory: size(self.handler_memory)?,
            operator_memory: size(self.operator_memory)?,
            operator_memory_total: size(self.operator_memory_total)?,
            max_captured_output: size(self.max_captured_output)?,
            max_result: size(self.max_result)?,
            max_concurrent_calls: self.max_concurrent_calls,
            idle_instance_timeout: self.idle_instance_timeout,
        }
        .validate()
    }
}

impl NodeOptions {
    /// The chains of `--rpc` and of the `RPC_URL_<id>` variables.
    pub fn chains(&self) -> Result<wasmatic_chain::Chains> {
        let limits = wasmatic_chain::RpcLimits {
            timeout: self.rpc_timeout,
            max_response: usize::try_from(self.rpc_max_response)
                .context("--rpc-max-response is too large for this platform")?,
            max_calls: self.rpc_max_calls,
            max_log_range: self.rpc_max_log_range,
            poll_interval: self.chain_poll_interval,
        };
        wasmatic_chain::Chains::configure(&self.rpc, std::env::vars(), limits)
    }

    pub fn state_limits(&self) -> StateLimits {
        StateLimits {
            max_schedules: self.max_schedules,
            max_components: self.max_components,
            max_concurrent_ticks: self.max_concurrent_ticks.max(1),
            runs: RunBounds {
                per_name: self.runs_kept.max(1),
                total: self.runs_total.max(1),
                total_bytes: self.runs_bytes,
            },
        }
    }
}

/// An environment variable for the operator.
#[derive(Clone, Debug)]
pub struct EnvVar {
    pub name: String,
    /// `None` means "the host's value, if it has one".
    pub value: Option<String>,
}

impl EnvVar {
    fn parse(s: &str) -> Result<Self, String> {
        let (name, value) = match s.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (s, None),
        };
        if name.is_empty() {
            return Err(format!("`{s}` is not of the form NAME[=VALUE]"));
        }
        Ok(EnvVar {
            name: name.to_string(),
            value,
        })
    }

    /// The value the operator sees, if any.
    pub fn resolve(&self) -> Option<(String, String)> {
        let value = match &self.value {
            Some(value) => value.clone(),
            None => std::env::var(&self.name).ok()?,
        };
        Some((self.name.clone(), value))
    }
}

/// Parses `5s`, `250ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 5s, 250ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        _ => return Err(format!("`{s}` has an unknown unit; use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{s}`: {e}"))
}

/// A duration more than zero and at most [`MAX_TIMEOUT`].
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!(
            "`{s}` must be more than 0 and at most {}m",
            MAX_TIMEOUT.as_secs() / 60
        ));
    }
    Ok(d)
}

/// `*`, or `SCHEME://HOST[:PORT]` as a browser sends it in `Origin`.
fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(s.to_string());
    }
    let bad =
        || format!("`{s}` is not an origin such as https://app.example or http://localhost:3000");
    let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains(['/', '?', '#', '@'])
    {
        return Err(bad());
    }
    Ok(format!("{scheme}://{rest}"))
}

/// A `--public-host`: a DNS name, without scheme, port or path.
fn parse_public_host(s: &str) -> Result<String, String> {
    let name = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!(
            "`{s}` is not a host name such as node.example.com (no scheme, port or path)"
        ));
    }
    Ok(name)
}

/// The port from `$WASMATIC_PORT`, or the default.
pub fn port_from_env() -> Result<u16> {
    match std::env::var(PORT_ENV) {
        Ok(port) => port
            .trim()
            .parse()
            .with_context(|| format!("${PORT_ENV} is `{port}`, not a port number")),
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_PORT),
        Err(e) => bail!("${PORT_ENV} is unreadable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_mapping_parses_host_and_guest() {
        let m = DirMapping::parse("registered::registered").unwrap();
        assert_eq!(m.host, PathBuf::from("registered"));
        assert!(m.is_guest("registered"));
        assert!(m.is_guest("/registered"));
        assert!(m.is_guest("./registered/"));
        let m = DirMapping::parse("/tmp/x").unwrap();
        assert_eq!(m.guest, "/tmp/x");
        assert!(DirMapping::parse("::guest").is_err());
    }

    #[test]
    fn env_var_parses_value_or_inherits() {
        let v = EnvVar::parse("A=b=c").unwrap();
        assert_eq!(v.resolve(), Some(("A".into(), "b=c".into())));
        let v = EnvVar::parse("WASMATIC_TEST_SURELY_UNSET").unwrap();
        assert_eq!(v.resolve(), None);
        assert!(EnvVar::parse("=x").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn timeouts_are_bounded() {
        assert_eq!(parse_timeout("10m").unwrap(), MAX_TIMEOUT);
        for bad in ["0", "601s", "99999999999999", "1e30"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_parse() {
        assert_eq!(parse_origin("*").unwrap(), "*");
        assert_eq!(
            parse_origin("http://localhost:3000/").unwrap(),
            "http://localhost:3000"
        );
        for bad in [
            "localhost",
            "ftp://x",
            "http://",
            "http://a/b",
            "http://u@h",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
