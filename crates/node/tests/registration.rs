//! Registering a component, in-process: in one step (`Components::register`, what
//! the default operator calls) and in two (`stage_bytes`, then `commit`,
//! which the contract keeps for operators that check a component before
//! they make it current). Both make the same component current; bad
//! settings are refused before anything changes.

mod support;

use support::{component, node};
use wasmatic_api::NodeError;
use wasmatic_state::HandlerSettings;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_step_and_two_steps_register_the_same_component() {
    let dirs = tempfile::tempdir().unwrap();
    let node = node(&["-O", "pooling-allocator=n"], &dirs).await;
    let echo = component("echo.wasm");

    // Two steps: staged, nothing is current; committed, it runs.
    let staged = node
        .components()
        .stage_bytes(echo.clone(), HandlerSettings::default())
        .await
        .expect("stages");
    assert_eq!(staged.name, "");
    assert!(node.components().handlers().is_empty());
    let committed = node
        .components()
        .commit("staged", &staged.digest, HandlerSettings::default())
        .await
        .expect("commits");
    assert_eq!(committed.digest, staged.digest);
    assert_eq!(
        node.components().invoke("staged", "two").await.unwrap(),
        "two"
    );

    // One step: the same bytes, another name, settings of its own.
    let reused = HandlerSettings {
        reuse: 3,
        ..HandlerSettings::default()
    };
    let registered = node
        .components()
        .register("direct", echo.clone(), reused)
        .await
        .expect("registers");
    assert_eq!(registered.name, "direct");
    assert_eq!(registered.digest, staged.digest);
    assert_eq!(registered.reuse, 3);
    assert_eq!(
        node.components().invoke("direct", "one").await.unwrap(),
        "one"
    );

    // Settings are checked before anything is compiled or written.
    let bad = HandlerSettings {
        reuse: 0,
        ..HandlerSettings::default()
    };
    match node.components().register("never", echo.clone(), bad).await {
        Err(NodeError::Invalid(message)) => assert!(message.contains("reuse"), "{message}"),
        other => panic!("reuse 0 was not refused: {other:?}"),
    }
    assert!(node.components().handler("never").is_none());
    match node
        .components()
        .register("Bad Name", echo, HandlerSettings::default())
        .await
    {
        Err(NodeError::Invalid(_)) => {}
        other => panic!("a bad name was not refused: {other:?}"),
    }
    // A digest nobody staged or stored is not found.
    match node
        .components()
        .commit("ghost", &"0".repeat(64), HandlerSettings::default())
        .await
    {
        Err(NodeError::NotFound(_)) => {}
        other => panic!("an unknown digest was committed: {other:?}"),
    }
    let mut names: Vec<String> = node
        .components()
        .handlers()
        .into_iter()
        .map(|h| h.name)
        .collect();
    names.sort();
    assert_eq!(names, ["direct", "staged"]);
    node.stop().await;
}
