//! A fleet: three real nodes on loopback sharing one real PostgreSQL
//! (`--state postgres://…`), started by the test on a free port.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::postgres::Cluster;
use support::{component_bytes, wait_for, Node, NodeBuilder};

/// How long a change made on one node may take to show on another (the
/// issue asks for 1 s; the wait is wider so a loaded machine does not fail
/// the test, and `make bench` measures the real time).
const PROPAGATION: Duration = Duration::from_secs(10);
/// A node's lease in the fleet (`node::fleet::LEASE`) and some margin.
const LOST_AFTER: Duration = Duration::from_secs(30);

fn fleet_node(dir: &Path, url: &str) -> Node {
    NodeBuilder::new(dir, &["up", "--state", url, "--call-timeout", "30s"])
        .env("WASMATIC_PORT", "0")
        .start()
}

fn register(node: &Node, name: &str, file: &str) {
    let response = node.post(&format!("/register?name={name}"), &component_bytes(file));
    assert_eq!(response.status, 201, "{}", response.text());
}

fn schedule(node: &Node, name: &str, cron: &str, input: &str) -> String {
    let body = json!({ "name": name, "cron": cron, "input": input }).to_string();
    let response = node.post("/sched", body.as_bytes());
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()["id"].as_str().expect("id").to_string()
}

fn runs(node: &Node, path: &str) -> Vec<Value> {
    let response = node.get(path);
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json().as_array().cloned().expect("array of runs")
}

/// The ticks of a schedule's runs, checked to be each run once: no tick
/// twice, and none missing between the first and the last.
fn ticks_once(node: &Node, id: &str) -> BTreeSet<u64> {
    let runs = runs(node, &format!("/sched/{id}/runs?limit=1000"));
    let ticks: Vec<u64> = runs
        .iter()
        .map(|r| r["scheduled_for"].as_u64().expect("scheduled_for"))
        .collect();
    let unique: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ticks.len(),
        "a tick of {id} ran twice: {ticks:?}"
    );
    let (first, last) = (
        *unique.first().expect("some runs"),
        *unique.last().expect("some runs"),
    );
    let expected: BTreeSet<u64> = (first..=last).step_by(1000).collect();
    let missing: Vec<_> = expected.difference(&unique).collect();
    assert!(missing.is_empty(), "ticks of {id} not run: {missing:?}");
    unique
}

#[test]
fn three_nodes_serve_one_state_and_run_each_tick_once() {
    let cluster = Cluster::private();
    let url = cluster.database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    // Node 2 starts alone and takes the first tick of a run that sleeps:
    // it is in flight there when node 2 is killed below.
    let two = fleet_node(dirs[1].path(), &url);
    register(&two, "misbehave", "misbehave.wasm");
    let sleeper = schedule(&two, "misbehave", "* * * * * *", "sleep");
    std::thread::sleep(Duration::from_millis(2500));
    let one = fleet_node(dirs[0].path(), &url);
    let three = fleet_node(dirs[2].path(), &url);

    // Registered on one node, run on the others; deleted on the third,
    // gone on the first.
    register(&one, "echo", "echo.wasm");
    for node in [&two, &three] {
        wait_for(PROPAGATION, "echo on every node", || {
            let response = node.post("/run/echo", b"hi");
            (response.status == 200).then(|| assert_eq!(response.text(), "hi"))
        });
    }
    register(&one, "short-lived", "echo.wasm");
    wait_for(PROPAGATION, "short-lived on node 3", || {
        (three.post("/run/short-lived", b"x").status == 200).then_some(())
    });
    assert_eq!(three.delete("/handlers/short-lived").status, 204);
    wait_for(PROPAGATION, "short-lived gone from node 1", || {
        (one.post("/run/short-lived", b"x").status == 404).then_some(())
    });

    // 20 schedules every second, added through all three nodes.
    let nodes = [&one, &two, &three];
    let jobs: Vec<String> = (0..20)
        .map(|i| schedule(nodes[i % 3], "echo", "* * * * * *", &format!("job {i}")))
        .collect();
    // A schedule kept across the restart below.
    let kept = schedule(&three, "echo", "0 0 1 1 *", "new year");
    std::thread::sleep(Duration::from_secs(5));
    two.kill();
    std::thread::sleep(Duration::from_secs(5));
    for id in &jobs {
        let response = one.delete(&format!("/sched/{id}"));
        assert_eq!(response.status, 204, "{}", response.text());
    }
    // Runs going when the schedules went are recorded once they end.
    std::thread::sleep(Duration::from_secs(2));
    for id in &jobs {
        let ticks = ticks_once(&three, id);
        assert!(ticks.len() >= 8, "{id} ran {} ticks in 10 s", ticks.len());
    }
    // Each node counts its claims: the two left won some ticks and lost
    // others to each other.
    for node in [&one, &three] {
        let metrics = node.get("/metrics").text();
        for outcome in ["won", "taken"] {
            let line = format!("wasmatic_fleet_claims_total{{outcome=\"{outcome}\"}} ");
            let count: u64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix(&line))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            assert!(count > 0, "no {outcome} claims counted:\n{metrics}");
        }
    }

    // The run node 2 had in flight is recorded as lost, once.
    let lost = wait_for(LOST_AFTER, "the killed node's run recorded as lost", || {
        let lost: Vec<Value> = runs(&one, &format!("/sched/{sleeper}/runs?limit=1000"))
            .into_iter()
            .filter(|r| {
                r["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("lost: node"))
            })
            .collect();
        (!lost.is_empty()).then_some(lost)
    });
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(one.delete("/handlers/misbehave").status, 204);

    // Restart all three: the state is intact.
    drop((one, three));
    let nodes: Vec<Node> = dirs.iter().map(|d| fleet_node(d.path(), &url)).collect();
    for node in &nodes {
        let names: Vec<String> = node
            .get("/handlers")
            .json()
            .as_array()
            .expect("handlers")
            .iter()
            .map(|h| h["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(names, vec!["echo"]);
        let scheduled = node.get("/sched").json();
        assert_eq!(scheduled.as_array().map(Vec::len), Some(1), "{scheduled}");
        assert_eq!(scheduled[0]["id"], kept.as_str());
        assert!(!runs(node, "/handlers/echo/runs?limit=5").is_empty());
        assert_eq!(node.post("/run/echo", b"again").text(), "again");
    }
}

#[test]
fn a_database_outage_answers_503_and_loses_nothing() {
    let cluster = Cluster::private();
    let url = cluster.database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Node> = dirs.iter().map(|d| fleet_node(d.path(), &url)).collect();
    register(&nodes[0], "echo", "echo.wasm");
    wait_for(PROPAGATION, "echo on node 3", || {
        (nodes[2].post("/run/echo", b"x").status == 200).then_some(())
    });
    let job = schedule(&nodes[1], "echo", "* * * * * *", "tick");
    std::thread::sleep(Duration::from_secs(2));

    cluster.stop();
    let outage = Instant::now();
    // What needs the database answers 503 with a JSON error; a handler
    // runs from memory, its run recorded once the database is back.
    let refused = nodes[0].post("/register?name=other", &component_bytes("echo.wasm"));
    assert!(
        refused.error(503).contains("unreachable"),
        "{}",
        refused.text()
    );
    assert_eq!(
        nodes[1].post("/run/echo", b"during the outage").text(),
        "during the outage"
    );
    // That run's record waits for the database on node 2; reading the runs
    // there answers now, not once the database is back (the database is
    // started only after this answer, so a read that waited for it would
    // stretch the outage past what the run log and the claims wait for).
    nodes[1].get("/handlers/echo/runs").error(503);
    let body = json!({ "name": "echo", "cron": "* * * * * *" }).to_string();
    nodes[2].post("/sched", body.as_bytes()).error(503);
    let wait = Duration::from_secs(3).saturating_sub(outage.elapsed());
    std::thread::sleep(wait);
    cluster.start();

    wait_for(Duration::from_secs(30), "registration works again", || {
        let response = nodes[0].post("/register?name=other", &component_bytes("echo.wasm"));
        (response.status == 201).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(nodes[1].delete(&format!("/sched/{job}")).status, 204);
    std::thread::sleep(Duration::from_secs(2));
    // Every tick, those of the outage too, ran once.
    let ticks = ticks_once(&nodes[0], &job);
    assert!(ticks.len() >= 7, "{} ticks", ticks.len());
    let during = runs(&nodes[2], "/handlers/echo/runs?limit=1000");
    assert!(
        during
            .iter()
            .any(|r| r["output"] == "during the outage" && r["job_id"].is_null()),
        "the run made during the outage was recorded"
    );
    wait_for(PROPAGATION, "other on node 3", || {
        (nodes[2].post("/run/other", b"y").status == 200).then_some(())
    });
}

#[test]
fn an_unreachable_database_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/wasmatic");
    let (code, log) = NodeBuilder::new(dir.path(), &["up", "--state", &url])
        .env("WASMATIC_PORT", "0")
        .fail();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");
}

#[test]
fn each_chain_event_and_workflow_tick_runs_on_one_node() {
    let anvil = support::anvil::Anvil::start(31337);
    let url = Cluster::shared().database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Node> = dirs
        .iter()
        .map(|d| anvil.node(d.path(), &["--state", &url]))
        .collect();
    register(&nodes[0], "watcher", "watcher.wasm");
    register(&nodes[0], "echo", "echo.wasm");
    for node in &nodes {
        wait_for(PROPAGATION, "watcher and echo on every node", || {
            let listed = node.get("/handlers").json();
            (listed.as_array().map(Vec::len) == Some(2)).then_some(())
        });
    }
    let body = json!({ "name": "watcher", "chain_id": 31337, "on": "block" }).to_string();
    let response = nodes[1].post("/triggers", body.as_bytes());
    assert_eq!(response.status, 201, "{}", response.text());
    let trigger = response.json();
    let first_block = trigger["next_block"].as_u64().expect("next_block");
    // A workflow on a cron tick every second, and one on every block.
    for (name, on) in [
        ("ticking", json!({ "cron": "* * * * * *" })),
        (
            "chained",
            json!({ "chain": { "chain_id": 31337, "on": "block" } }),
        ),
    ] {
        let workflow = json!({
            "name": name,
            "trigger": on,
            "steps": [{ "id": "say", "type": "run", "handler": "echo", "input": "{{ trigger }}" }],
        });
        let response = nodes[2].post("/workflows", workflow.to_string().as_bytes());
        assert_eq!(response.status, 201, "{}", response.text());
    }
    wait_for(PROPAGATION, "the workflows' triggers on every node", || {
        let triggers = nodes[0].get("/triggers").json();
        (triggers.as_array().map(Vec::len) == Some(2)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    const BLOCKS: u64 = 12;
    for _ in 0..BLOCKS {
        anvil.mine(1);
        std::thread::sleep(Duration::from_millis(300));
    }
    let id = trigger["id"].as_str().expect("id");
    let blocks = wait_for(PROPAGATION, "a run of every block", || {
        let blocks: Vec<u64> = runs(&nodes[0], &format!("/triggers/{id}/runs?limit=1000"))
            .iter()
            .rev()
            .filter_map(|r| r["output"].as_str())
            .filter_map(|o| serde_json::from_str::<Value>(o).ok())
            .filter_map(|o| o["block"].as_u64())
            .collect();
        (blocks.len() as u64 >= BLOCKS).then_some(blocks)
    });
    // Every block once, in chain order, whichever node ran it.
    assert_eq!(
        blocks,
        (first_block..first_block + BLOCKS).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_secs(1));
    for name in ["ticking", "chained"] {
        let runs = runs(&nodes[1], &format!("/workflows/{name}/runs?limit=1000"));
        let triggers: Vec<String> = runs.iter().map(|r| r["trigger"].to_string()).collect();
        let unique: BTreeSet<&String> = triggers.iter().collect();
        assert_eq!(
            unique.len(),
            triggers.len(),
            "{name} ran a trigger twice: {triggers:?}"
        );
        assert!(runs.len() >= 3, "{name}: {runs:?}");
        assert!(runs.iter().all(|r| r["ok"] == true), "{name}: {runs:?}");
    }
}
