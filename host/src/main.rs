//! `wasmatic`: a node that runs other people's WebAssembly.
//!
//! The node's HTTP server is itself a component, the *operator*; this binary
//! is the host that runs it and does for it what a sandboxed component
//! cannot: compile, run and schedule handler components.

mod audit_log;
mod cache;
mod cli;
mod compile;
mod contract;
mod engine;
mod error;
mod flags;
mod handler;
mod jobs;
mod limits;
mod modules;
mod node;
mod outbound;
mod pool;
mod registry;
mod run_log;
mod scheduler;
mod serve;
mod state;
mod values;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;

use cli::{Cli, Command, DirMapping, NodeOptions, OPERATOR_ENV, REGISTERED_GUEST_DIR, TOKEN_ENV};
use node::Node;
use serve::{Operator, OperatorSetup};

/// The default operator, built from `operator/` (see `make operator`).
const EMBEDDED_OPERATOR: &[u8] = include_bytes!("../assets/proxy.wasm");

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
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
    let engine = engine::build(&mut options.wasmtime)?;
    flags::check(&options.wasmtime)?.install();
    let wasi = &options.wasmtime.wasi;
    if wasi.http == Some(false) {
        bail!("-S http=n: the operator serves HTTP, so wasi:http cannot be disabled");
    }
    // `-S common` is wasmtime's older name for `-S cli`. Unlike `wasmtime
    // serve`, the node links all of WASI unless told not to: operators built
    // from Rust import `wasi:cli` and `wasi:filesystem`.
    let full_wasi = wasi.cli.or(wasi.common) != Some(false);

    let (name, bytes) = source.read()?;
    let node = match options
        .dirs
        .iter()
        .find(|d| d.is_guest(REGISTERED_GUEST_DIR))
    {
        Some(registered) => {
            let state_dir = prepare_state_dir(&options.state_dir, &options.dirs)?;
            let policy = outbound::Policy::new(options.allow_outbound.clone());
            let node = Node::start(
                engine.clone(),
                registered.host.clone(),
                state_dir,
                limits.clone(),
                options.state_limits(),
                policy,
            );
            Some(node.await?)
        }
        None => None,
    };
    let mut env: Vec<(String, String)> = options.envs.iter().filter_map(|e| e.resolve()).collect();
    // The operator enforces the node's token (so that a custom operator can
    // do its own auth); the host only hands it over.
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        if !token.is_empty() && !env.iter().any(|(name, _)| name == TOKEN_ENV) {
            env.push((TOKEN_ENV.to_string(), token));
        }
    }
    let setup = OperatorSetup {
        dirs: options.dirs.clone(),
        env,
        request_timeout: limits.request_timeout,
        memory: limits.operator_memory,
        max_request_body: limits.max_request_body,
        full_wasi,
        reuse: pool::Reuse {
            max_uses: options.max_instance_reuse_count.unwrap_or(1).max(1),
            idle_timeout: options.idle_instance_timeout,
        },
    };
    let operator = Operator::new(&engine, &bytes, setup, node)
        .with_context(|| format!("cannot run {name}"))?;
    let _ticker = engine::EpochTicker::start(engine.clone());

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    println!("wasmatic listening on http://{local}/ (operator: {name})");
    serve::serve(Arc::new(operator), listener, serve::shutdown_signal()).await
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
