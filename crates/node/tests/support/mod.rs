//! A node started in-process, on temporary directories, with the flags a
//! test gives: the library's own entry point, as `wasmatic up` calls it.
#![allow(dead_code)] // each test file uses its own part of this module

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use wasmatic_chain::Chains;
use wasmatic_net::Policy;
use wasmatic_node::{Node, NodeSetup, StateLimits};
use wasmatic_sandbox::engine::GuestEngines;
use wasmatic_sandbox::limits::Limits;
use wasmatic_state::RunBounds;
use wasmtime_cli_flags::CommonOptions;

/// wasmtime's flags as the command line would give them.
pub fn flags(args: &[&str]) -> CommonOptions {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        wasmtime: CommonOptions,
    }
    Args::parse_from(std::iter::once("wasmatic").chain(args.iter().copied())).wasmtime
}

/// A node on its own temporary directories, with `args` as its flags.
pub async fn node(args: &[&str], dirs: &tempfile::TempDir) -> Arc<Node> {
    let engines = GuestEngines::build(&mut flags(args)).expect("valid flags");
    let limits = Limits {
        call_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
        max_handler_size: 1 << 20,
        max_request_body: 1 << 20,
        handler_memory: 16 << 20,
        operator_memory: 16 << 20,
        operator_memory_total: 16 << 20,
        max_captured_output: 1 << 16,
        max_result: 1 << 16,
        max_concurrent_calls: 4,
        idle_instance_timeout: Duration::from_secs(1),
    };
    let registered = dirs.path().join("registered");
    std::fs::create_dir_all(&registered).expect("registered dir");
    Node::start(NodeSetup {
        engines,
        chains: Arc::new(Chains::default()),
        registered_dir: registered,
        state_dir: dirs.path().join("state"),
        state_url: None,
        limits,
        state_limits: StateLimits {
            max_schedules: 10,
            max_components: 10,
            max_concurrent_ticks: 1,
            runs: RunBounds {
                per_name: 10,
                total: 100,
                total_bytes: 1 << 20,
            },
        },
        policy: Policy::default(),
    })
    .await
    .expect("the node starts")
}

/// The bytes of a component `make components` built (`echo.wasm`, say).
pub fn component(file: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/wasm32-wasip2/release")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `make components` first",
            path.display()
        )
    })
}
