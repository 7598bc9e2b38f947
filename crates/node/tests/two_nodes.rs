//! Two nodes in one process, started with different wasmtime flags: each
//! keeps its own. Nothing a node is configured with lives in a process-wide
//! setting, so the second node's flags cannot leak into the first's stores
//! (nor the first's into the second's), whichever starts first.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use wasmatic_api::NodeError;
use wasmatic_chain::Chains;
use wasmatic_node::{Node, NodeSetup, StateLimits};
use wasmatic_sandbox::engine::GuestEngines;
use wasmatic_sandbox::limits::Limits;
use wasmatic_sandbox::outbound::Policy;
use wasmatic_state::RunBounds;
use wasmtime_cli_flags::CommonOptions;

/// A module that counts to a million (fuel runs out long before under
/// `-W fuel=100000`) and one that grows its memory by two pages (refused,
/// answering -1, under `-W max-memory-size=65536`).
const MODULE: &str = r#"(module
  (memory 1)
  (func (export "spin") (result i32) (local i32)
    (loop $again
      (local.set 0 (i32.add (local.get 0) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get 0) (i32.const 1000000))))
    (local.get 0))
  (func (export "grow") (result i32)
    (memory.grow (i32.const 2))))"#;

/// wasmtime's flags as the command line would give them.
fn flags(args: &[&str]) -> CommonOptions {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        wasmtime: CommonOptions,
    }
    Args::parse_from(std::iter::once("wasmatic").chain(args.iter().copied())).wasmtime
}

/// A node on its own temporary directories, with `args` as its flags.
async fn node(args: &[&str], dirs: &tempfile::TempDir) -> Arc<Node> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_one_process_keep_their_own_flags() {
    let (a_dirs, b_dirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fueled = node(&["-O", "pooling-allocator=n", "-W", "fuel=100000"], &a_dirs).await;
    let small = node(
        &["-O", "pooling-allocator=n", "-W", "max-memory-size=65536"],
        &b_dirs,
    )
    .await;
    let wasm = wat::parse_str(MODULE).expect("valid WAT");
    for node in [&fueled, &small] {
        node.register_module("m", wasm.clone(), Vec::new())
            .await
            .expect("registers");
    }

    // Only the node with fuel runs out of it.
    match fueled.call_module("m", "spin", "[]").await {
        Err(NodeError::Failed(message)) => assert!(message.contains("fuel"), "{message}"),
        other => panic!("the fueled node ran the loop to the end: {other:?}"),
    }
    assert_eq!(
        small
            .call_module("m", "spin", "[]")
            .await
            .expect("no fuel limit"),
        "[1000000]"
    );

    // Only the node with the small memory limit refuses to grow.
    assert_eq!(small.call_module("m", "grow", "[]").await.unwrap(), "[-1]");
    assert_eq!(fueled.call_module("m", "grow", "[]").await.unwrap(), "[1]");

    // And the first node still has its own after the second started.
    assert!(matches!(
        fueled.call_module("m", "spin", "[]").await,
        Err(NodeError::Failed(_))
    ));
    fueled.stop().await;
    small.stop().await;
}
