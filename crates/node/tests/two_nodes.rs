//! Two nodes in one process, started with different wasmtime flags: each
//! keeps its own. Nothing a node is configured with lives in a process-wide
//! setting, so the second node's flags cannot leak into the first's stores
//! (nor the first's into the second's), whichever starts first.

mod support;

use support::node;
use wasmatic_api::NodeError;

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
        node.components()
            .register_module("m", wasm.clone(), Vec::new())
            .await
            .expect("registers");
    }

    // Only the node with fuel runs out of it.
    match fueled.components().call_module("m", "spin", "[]").await {
        Err(NodeError::Failed(message)) => assert!(message.contains("fuel"), "{message}"),
        other => panic!("the fueled node ran the loop to the end: {other:?}"),
    }
    assert_eq!(
        small
            .components()
            .call_module("m", "spin", "[]")
            .await
            .expect("no fuel limit"),
        "[1000000]"
    );

    // Only the node with the small memory limit refuses to grow.
    assert_eq!(
        small
            .components()
            .call_module("m", "grow", "[]")
            .await
            .unwrap(),
        "[-1]"
    );
    assert_eq!(
        fueled
            .components()
            .call_module("m", "grow", "[]")
            .await
            .unwrap(),
        "[1]"
    );

    // And the first node still has its own after the second started.
    assert!(matches!(
        fueled.components().call_module("m", "spin", "[]").await,
        Err(NodeError::Failed(_))
    ));
    fueled.stop().await;
    small.stop().await;
}
