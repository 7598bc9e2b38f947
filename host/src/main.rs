//! `wasmatic`: a node that runs other people's WebAssembly.
//!
//! The node's HTTP server is itself a component, the *operator*; this binary
//! is the host that runs it and does for it what a sandboxed component
//! cannot: compile, run and schedule handler components.

mod cli;
mod logging;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;

use cli::{Cli, Command, NodeOptions, OPERATOR_ENV, REGISTERED_GUEST_DIR, TOKEN_ENV};
use wasmatic_node::{Node, NodeSetup};
use wasmatic_sandbox::limits::MemoryBudget;
use wasmatic_sandbox::{engine, memory, pool};
use wasmatic_server::{self as serve, DirMapping, EdgeSetup, Operator, OperatorSetup};

/// The default operator, built from `operator/` (see `make operator`).
const EMBEDDED_OPERATOR: &[u8] = include_bytes!("../assets/proxy.wasm");

fn main() {
    let cli = Cli::parse();
    logging::init(
        cli.command
            .node()
            .map_or(logging::LogFormat::Text, |node| node.log_format),
    );
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let pin_workers = cli.command.node().is_some_and(|node| node.pin_workers);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // Workers and the blocking pool's threads share the name.
    runtime.enable_all().thread_name("runtime");
    if pin_workers {
        runtime.on_thread_park(wasmatic_workers::pin);
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    match cli.command {
        Command::Up(up) => {
            let port = match up.port {
                Some(port) => port,
                None => cli::port_from_env()?,
            };
            std::fs::create_dir_all(&up.registered)
                .with_context(|| format!("cannot create {}", up.registered.display()))?;
            let mut node = up.node;
            node.max_instance_reuse_count = node
                .max_instance_reuse_count
                .or(Some(cli::UP_INSTANCE_REUSE));
            node.dirs.insert(
                0,
                DirMapping {
                    host: up.registered.clone(),
                    guest: REGISTERED_GUEST_DIR.to_string(),
                },
            );
            let operator = match std::env::var_os(OPERATOR_ENV) {
                Some(path) if !path.is_empty() => OperatorSource::File(PathBuf::from(path)),
                _ => OperatorSource::Embedded,
            };
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            runtime.block_on(start(node, operator, addr))
        }
        Command::Wasm(wasm) => {
            let path = match wasm.operator {
                Some(path) => path,
                None => match std::env::var_os(OPERATOR_ENV) {
                    Some(path) if !path.is_empty() => PathBuf::from(path),
                    _ => bail!("no operator given: pass OPERATOR.wasm or set ${OPERATOR_ENV}"),
                },
            };
            let addr = match wasm.addr {
                Some(addr) => addr,
                None => SocketAddr::from((Ipv4Addr::UNSPECIFIED, cli::port_from_env()?)),
            };
            runtime.block_on(start(wasm.node, OperatorSource::File(path), addr))
        }
        // The client prints its own errors and exits with a code that says
        // what kind they are.
        Command::Client(command) => std::process::exit(wasmatic_client::run(command, &runtime)),
    }
}

enum OperatorSource {
    Embedded,
    File(PathBuf),
}

impl OperatorSource {
    fn read(&self) -> Result<(String, std::borrow::Cow<'static, [u8]>)> {
        match self {
            OperatorSource::Embedded => {
                Ok(("the embedded operator".into(), EMBEDDED_OPERATOR.into()))
            }
            OperatorSource::File(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read the operator {}", path.display()))?;
                Ok((path.display().to_string(), bytes.into()))
            }
        }
    }
}

async fn start(mut options: NodeOptions, source: OperatorSource, addr: SocketAddr) -> Result<()> {
    let limits = options.limits()?;
    let token = node_token()?;
    let metrics_token = match options.metrics_token.take() {
        Some(token) if token.is_empty() => bail!(
            "--metrics-token is empty: set it to a secret, or leave it out to let anyone read /metrics"
        ),
        token => token.map(Arc::from),
    };
    if options.max_buffered_bodies < limits.max_request_body {
        bail!(
            "--max-buffered-bodies ({}) is less than --max-request-body ({}): the largest body allowed could never be buffered",
            wasmatic_api::show_size(options.max_buffered_bodies),
            wasmatic_api::show_size(limits.max_request_body)
        );
    }
    let engines = engine::GuestEngines::build(&mut options.wasmtime)?;
    let chains = options.chains()?;
    chains.check_at_start().await?;
    let chains = Arc::new(chains);
    let max_in_flight = options.max_in_flight as usize;
    // The operator gets an engine of its own, built from the same flags: its
    // instance slots are then its own, and no guest can take the ones it
    // needs to answer `/health`.
    let mut operator_flags = options.wasmtime.clone();
    size_operator_pool(&mut operator_flags, options.max_in_flight);
    let operator_engine = engine::build(&mut operator_flags, engine::Concurrency::Off)?;
    let wasi = &options.wasmtime.wasi;
    if wasi.http == Some(false) {
        bail!("-S http=n: the operator serves HTTP, so wasi:http cannot be disabled");
    }
    // `-S common` is wasmtime's older name for `-S cli`. Unlike `wasmtime
    // serve`, the node links all of WASI unless told not to: operators built
    // from Rust import `wasi:cli` and `wasi:filesystem`.
    let full_wasi = wasi.cli.or(wasi.common) != Some(false);

    let (name, bytes) = source.read()?;
    let policy = wasmatic_net::Policy::new(options.allow_outbound.clone());
    let (node, cache_dir) = match options
        .dirs
        .iter()
        .find(|d| d.is_guest(REGISTERED_GUEST_DIR))
    {
        Some(registered) => {
            let state_dir = prepare_state_dir(&options.state_dir, &options.dirs)?;
            let cache_dir = state_dir.join("operator");
            let node = Node::start(NodeSetup {
                engines: engines.clone(),
                chains,
                registered_dir: registered.host.clone(),
                state_dir,
                state_url: options.state_url.clone(),
                limits: limits.clone(),
                state_limits: options.state_limits(),
                policy: policy.clone(),
            });
            (Some(node.await?), Some(cache_dir))
        }
        None => (None, None),
    };
    let mut env: Vec<(String, String)> = options.envs.iter().filter_map(|e| e.resolve()).collect();
    // The operator enforces the node's token (so that a custom operator can
    // do its own auth); the host only hands it over.
    if env.iter().any(|(n, v)| n == TOKEN_ENV && v.is_empty()) {
        bail!("--env {TOKEN_ENV} is empty: an empty token would let anyone change the node");
    }
    if let Some(token) = token {
        if !env.iter().any(|(n, _)| n == TOKEN_ENV) {
            env.push((TOKEN_ENV.to_string(), token));
        }
    }
    if !addr.ip().is_loopback() && !env.iter().any(|(n, _)| n == TOKEN_ENV) {
        tracing::warn!(
            "no ${TOKEN_ENV} set and listening on {addr}: anyone who can reach this address can register and run code; set ${TOKEN_ENV} or listen on a loopback address"
        );
    }
    let setup = OperatorSetup {
        dirs: options.dirs.clone(),
        env,
        request_timeout: limits.request_timeout,
        memory: limits.operator_memory,
        memory_total: MemoryBudget::new(limits.operator_memory_total),
        full_wasi,
        reuse: pool::Reuse {
            max_uses: options.max_instance_reuse_count.unwrap_or(1).max(1),
            idle_timeout: options.idle_instance_timeout,
        },
        max_in_flight,
        outbound: Arc::new(policy),
        flags: engines.flags,
        pools: engines.pools.clone(),
        metrics_token,
    };
    let stopping = node.clone();
    let operator = Operator::new(&operator_engine, &bytes, setup, node, cache_dir.as_deref())
        .with_context(|| format!("cannot run {name}"))?;
    let _ticker =
        engine::EpochTicker::start(vec![engines.sync, engines.concurrent, operator_engine]);
    memory::start_trimming();
    let edge = EdgeSetup {
        connections: serve::ConnectionLimits {
            max_connections: options.max_connections as usize,
            header_read_timeout: options.header_read_timeout,
            keep_alive_timeout: options.keep_alive_timeout,
            write_timeout: options.write_timeout,
        },
        max_request_body: limits.max_request_body,
        body_timeout: options.body_timeout,
        body_budget: serve::BodyBudget::new(options.max_buffered_bodies),
        origins: serve::Origins::new(&options.allow_origins, &options.public_hosts),
    };

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    println!("wasmatic listening on http://{local}/ (operator: {name})");
    serve::serve(operator, edge, listener, serve::shutdown_signal()).await?;
    // The requests are answered; the scheduled runs going finish and are
    // recorded before the process ends.
    if let Some(node) = stopping {
        node.stop().await;
    }
    Ok(())
}

/// The node's token from `$WASMATIC_TOKEN`, if set. Set but empty or not
/// UTF-8 is refused: the operator would read it as no token, and the node
/// would run open while its owner believes it locked.
fn node_token() -> Result<Option<String>> {
    match std::env::var(TOKEN_ENV) {
        Ok(token) if token.is_empty() => bail!(
            "${TOKEN_ENV} is set but empty: set it to a secret, or unset it to run a node without a token"
        ),
        Ok(token) => Ok(Some(token)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("${TOKEN_ENV} is not valid UTF-8: set it to a secret of printable characters")
        }
    }
}

/// Sizes the pooling allocator of the operator's engine for
/// `max_in_flight` instances alive at once. The per-instance shares are
/// generous for any `wasi:http/proxy` component (a Rust one has a handful of
/// core instances, one or two memories and a few tables); the operator's
/// `Semaphore` makes sure instances never outnumber them.
fn size_operator_pool(flags: &mut wasmtime_cli_flags::CommonOptions, max_in_flight: u32) {
    const CORE_INSTANCES: u32 = 16;
    const MEMORIES: u32 = 4;
    const TABLES: u32 = 16;
    let opts = &mut flags.opts;
    opts.pooling_total_component_instances = Some(max_in_flight);
    opts.pooling_total_core_instances = Some(max_in_flight * CORE_INSTANCES);
    opts.pooling_total_memories = Some(max_in_flight * MEMORIES);
    opts.pooling_total_tables = Some(max_in_flight * TABLES);
    opts.pooling_total_stacks = Some(max_in_flight);
}

/// Creates the state directory and makes sure no guest can reach it.
fn prepare_state_dir(state_dir: &Path, dirs: &[DirMapping]) -> Result<PathBuf> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let state_dir = state_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", state_dir.display()))?;
    for dir in dirs {
        let granted = dir
            .host
            .canonicalize()
            .with_context(|| format!("cannot resolve --dir {}", dir.host.display()))?;
        if state_dir.starts_with(&granted) {
            bail!(
                "the state directory {} lies inside --dir {}: the operator could tamper with it; choose another --state-dir",
                state_dir.display(),
                dir.host.display()
            );
        }
    }
    Ok(state_dir)
}
