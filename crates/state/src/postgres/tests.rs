//! The fleet's side of the PostgreSQL backend: claims, leases, sweeps, the
//! change feed, outages, and calls from every kind of thread. Each test
//! opens two handles with different node ids on one fresh database: two
//! nodes, as the database sees them.

use std::time::Duration;

use super::Postgres;
use crate::conformance::cluster::Cluster;
use crate::*;

/// A fresh database on the shared test server.
pub(super) fn database() -> String {
    Cluster::shared().database()
}

/// The longest a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `statement` on `db`'s database, as an operator or a clock would.
fn sql(db: &Postgres, statement: &str) {
    db.wait("test statement", async {
        db.client().await?.batch_execute(statement).await?;
        Ok(())
    })
    .unwrap();
}

/// Moves `node`'s lease `secs` seconds into the past: a node that has not
/// heartbeated since.
fn silence(db: &Postgres, node: &str, secs: u32) {
    sql(
        db,
        &format!(
            "UPDATE nodes SET seen_at = now() - interval '{secs} seconds' WHERE id = '{node}';
             UPDATE claims SET claimed_at = now() - interval '{secs} seconds' WHERE node = '{node}'"
        ),
    );
}

fn two_nodes() -> (Postgres, Postgres) {
    let url = database();
    let a = Postgres::open(&url).unwrap();
    let b = Postgres::open(&url).unwrap();
    assert_ne!(a.node_id(), b.node_id());
    (a, b)
}

fn claim(what: &str, at: &str, name: &str, kind: ClaimKind) -> Claim {
    Claim {
        what: what.into(),
        at: at.into(),
        name: name.into(),
        kind,
    }
}

fn component(db: &Postgres, name: &str) {
    db.commit_component(&ComponentRecord::sample(name), b"bytes")
        .unwrap();
}

/// Takes changes from `feed` until they add up to `expected` (a node's
/// announcements may arrive apart), failing on any other.
fn expect_changes(feed: &ChangeFeed, expected: u8) {
    let mut seen = 0;
    while seen != expected {
        seen |= next_changes(feed);
        assert_eq!(
            seen & !expected,
            0,
            "changes {seen:#b}, expected {expected:#b}"
        );
    }
}

/// Waits (boundedly) for the next changes of `feed`.
fn next_changes(feed: &ChangeFeed) -> u8 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime
        .block_on(async { tokio::time::timeout(PATIENCE, feed.next()).await })
        .expect("no change announced in time")
}

#[test]
fn nodes_starting_together_migrate_once() {
    let url = database();
    let nodes: Vec<Postgres> = std::thread::scope(|scope| {
        let opening: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| Postgres::open(&url).unwrap()))
            .collect();
        opening.into_iter().map(|o| o.join().unwrap()).collect()
    });
    let versions = nodes[0]
        .wait("reading the migrations", async {
            let client = nodes[0].client().await?;
            Ok(client
                .query("SELECT version FROM schema_migrations", &[])
                .await?
                .iter()
                .map(|row| row.get::<_, i32>(0))
                .collect::<Vec<_>>())
        })
        .unwrap();
    assert_eq!(versions, vec![1, 2, 3], "each migration applied once");
}

#[test]
fn of_two_claims_of_one_tick_exactly_one_wins() {
    let (a, b) = two_nodes();
    let tick = claim("job1", "1000", "echo", ClaimKind::Schedule);
    // Both at once, many times over: one wins each tick, the other is told
    // it is taken.
    for i in 0..20 {
        let tick = claim("race", &i.to_string(), "echo", ClaimKind::Schedule);
        let (x, y) = std::thread::scope(|scope| {
            let x = scope.spawn(|| a.claim(&tick, false).unwrap());
            let y = scope.spawn(|| b.claim(&tick, false).unwrap());
            (x.join().unwrap(), y.join().unwrap())
        });
        assert!(
            matches!(
                (x, y),
                (Claimed::Won, Claimed::Taken) | (Claimed::Taken, Claimed::Won)
            ),
            "{x:?} {y:?}"
        );
        a.finish("race", &i.to_string()).unwrap();
        b.finish("race", &i.to_string()).unwrap();
    }
    assert_eq!(a.claim(&tick, false).unwrap(), Claimed::Won);
    assert_eq!(b.claim(&tick, false).unwrap(), Claimed::Taken);
    assert_eq!(
        a.claim(&tick, false).unwrap(),
        Claimed::Taken,
        "claimed once"
    );

    // The next tick while the first still runs: whoever inserts it first
    // records it as skipped, the other is told it is taken.
    let next = claim("job1", "2000", "echo", ClaimKind::Schedule);
    assert_eq!(b.claim(&next, false).unwrap(), Claimed::Skipped);
    assert_eq!(a.claim(&next, false).unwrap(), Claimed::Taken);
    // Once the first is done, the following tick runs again.
    a.finish("job1", "1000").unwrap();
    let third = claim("job1", "3000", "echo", ClaimKind::Schedule);
    assert_eq!(b.claim(&third, false).unwrap(), Claimed::Won);
    // A node that knows its previous run still goes says so.
    let fourth = claim("other", "4000", "echo", ClaimKind::Schedule);
    assert_eq!(a.claim(&fourth, true).unwrap(), Claimed::Skipped);
}

#[test]
fn a_silent_node_loses_its_running_claims_once() {
    let (a, b) = two_nodes();
    component(&a, "echo");
    a.put_workflow("flow", "{}", 1).unwrap();
    let lease = Duration::from_secs(30);
    let tick = claim("job1", "1700000000000", "echo", ClaimKind::Schedule);
    let event = claim("trig1", "7:2", "echo", ClaimKind::Trigger);
    let gone = claim("job2", "5", "removed", ClaimKind::Schedule);
    let flow_tick = claim(
        "workflow:flow",
        "1700000060000",
        "flow",
        ClaimKind::Workflow,
    );
    let flow_event = claim("trig2", "9:0", "flow", ClaimKind::Workflow);
    for c in [&tick, &event, &gone, &flow_tick, &flow_event] {
        assert_eq!(a.claim(c, false).unwrap(), Claimed::Won);
    }
    // The tick's run ended; its record never made it.
    a.finish_all(&[(tick.what.clone(), tick.at.clone())], false)
        .unwrap();
    // The node started the workflow's tick and recorded it as running.
    let started = WorkflowRun {
        id: 0,
        name: "flow".into(),
        cause: "cron".into(),
        started_at: now_ms(),
        duration_ms: 0,
        ok: false,
        trigger: "{}".into(),
        steps: "[]".into(),
        result: None,
        error: Some("still running".into()),
    };
    let bounds = RunBounds {
        per_name: 1000,
        total: 1000,
        total_bytes: 1 << 30,
    };
    let running = a.record_workflow_run(&started, bounds).unwrap();
    // `b` runs a claim of its own, and keeps heartbeating.
    let own = claim("job3", "1", "echo", ClaimKind::Schedule);
    assert_eq!(b.claim(&own, false).unwrap(), Claimed::Won);

    // Within the lease nothing is lost.
    assert_eq!(b.sweep(lease).unwrap(), 0);
    // `a` stops: its lease is a minute old.
    silence(&a, a.node_id(), 60);
    b.heartbeat().unwrap();
    let swept = std::thread::scope(|scope| {
        let x = scope.spawn(|| a.sweep(lease).unwrap());
        let y = scope.spawn(|| b.sweep(lease).unwrap());
        x.join().unwrap() + y.join().unwrap()
    });
    assert_eq!(swept, 5, "each lost claim is swept once");
    assert_eq!(b.sweep(lease).unwrap(), 0);

    // (A minute, give or take the test's own time.)
    let lost = format!(
        "lost: node {} stopped during the run (no heartbeat for 6",
        a.node_id()
    );
    let is_lost = |error: Option<&str>| error.is_some_and(|e| e.starts_with(&lost));
    let runs = b.runs_of_schedule("job1", 10, None).unwrap().runs;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (runs[0].name.as_str(), runs[0].ok, runs[0].scheduled_for),
        ("echo", false, Some(1_700_000_000_000))
    );
    assert!(is_lost(runs[0].error.as_deref()), "{:?}", runs[0].error);
    let runs = b.runs_of_schedule("trig1", 10, None).unwrap().runs;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0].scheduled_for, runs[0].ok), (None, false));
    assert_eq!(b.runs_of_handler("echo", 10, None).unwrap().runs.len(), 2);
    // The run of a component that is gone is not recorded.
    assert!(b
        .runs_of_schedule("job2", 10, None)
        .unwrap()
        .runs
        .is_empty());
    // The workflow run recorded as running is finished as lost; the event
    // it never recorded gets a run of its own.
    let flow = b.workflow_runs("flow", 10, None).unwrap().runs;
    assert_eq!(flow.len(), 2, "{flow:?}");
    let finished = flow.iter().find(|r| r.id == running).unwrap();
    assert!(
        !finished.ok && is_lost(finished.error.as_deref()),
        "{finished:?}"
    );
    let recorded = flow.iter().find(|r| r.id != running).unwrap();
    assert_eq!((recorded.cause.as_str(), recorded.ok), ("chain", false));
    assert!(is_lost(recorded.error.as_deref()), "{recorded:?}");

    // `b`'s own claim goes on; once finished, sweeping records nothing.
    b.finish("job3", "1").unwrap();
    silence(&b, b.node_id(), 60);
    assert_eq!(a.sweep(lease).unwrap(), 0);
    assert!(b
        .runs_of_schedule("job3", 10, None)
        .unwrap()
        .runs
        .is_empty());
    // A lost tick stays claimed: no node runs it again.
    assert_eq!(b.claim(&tick, false).unwrap(), Claimed::Taken);
}

#[test]
fn a_node_that_never_heartbeated_is_timed_by_its_claims() {
    let (a, b) = two_nodes();
    component(&a, "echo");
    assert_eq!(
        a.claim(&claim("job1", "1", "echo", ClaimKind::Schedule), false)
            .unwrap(),
        Claimed::Won
    );
    // As if its lease had been pruned, or it never renewed it.
    sql(
        &a,
        &format!("DELETE FROM nodes WHERE id = '{}'", a.node_id()),
    );
    assert_eq!(b.sweep(Duration::from_secs(30)).unwrap(), 0);
    silence(&a, a.node_id(), 60);
    assert_eq!(b.sweep(Duration::from_secs(30)).unwrap(), 1);
    assert_eq!(b.runs_of_schedule("job1", 10, None).unwrap().runs.len(), 1);
}

#[test]
fn the_feed_hears_the_other_node_and_not_itself() {
    let (a, b) = two_nodes();
    // Notifications arrive in commit order: a node's own change, were it
    // not ignored, would reach its feed before the other's that follows.
    a.put_workflow("w", "{}", 1).unwrap();
    expect_changes(&b.changes(), Change::Workflows as u8);
    b.put_module("m", b"\0asm", &[]).unwrap();
    expect_changes(&a.changes(), Change::Modules as u8);
    a.remove_component("gone").unwrap();
    expect_changes(
        &b.changes(),
        Change::Components as u8 | Change::Schedules as u8 | Change::Triggers as u8,
    );
    let job = ScheduleRecord {
        id: "j".into(),
        name: "echo".into(),
        cron: "* * * * * *".into(),
        input: String::new(),
        created_at: 1,
    };
    b.insert_schedule(&job).unwrap();
    expect_changes(&a.changes(), Change::Schedules as u8);
    // A change that does not commit is not announced.
    assert!(b.insert_schedule(&job).is_err(), "the id is taken");
    b.delete_trigger("none").unwrap();
    expect_changes(&a.changes(), Change::Triggers as u8);
}

#[test]
fn a_listener_that_loses_its_connection_listens_again_and_reports_everything() {
    let db = Postgres::open(&database()).unwrap();
    sql(
        &db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'wasmatic listener' AND datname = current_database()",
    );
    assert_eq!(next_changes(&db.changes()), super::listen::all_changes());
}

#[test]
fn calls_work_from_every_kind_of_thread() {
    let db = std::sync::Arc::new(Postgres::open(&database()).unwrap());
    // A plain thread (this one).
    assert!(db.schedules().unwrap().is_empty());
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    multi.block_on(async {
        // An async worker of a multi-thread runtime, and a blocking thread.
        assert!(db.schedules().unwrap().is_empty());
        let on_worker = db.clone();
        tokio::spawn(async move { on_worker.schedules().map(|j| j.len()) })
            .await
            .unwrap()
            .unwrap();
        let blocking = db.clone();
        tokio::task::spawn_blocking(move || blocking.schedules().map(|j| j.len()))
            .await
            .unwrap()
            .unwrap();
    });
    // A current-thread runtime.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    single.block_on(async { assert!(db.schedules().unwrap().is_empty()) });
    // The last handle dropped inside a runtime does not panic.
    multi.block_on(async move { drop(db) });
}

#[test]
fn an_outage_answers_unavailable_and_calls_work_again_after_it() {
    let cluster = Cluster::private();
    let url = cluster.database();
    let db = Postgres::open(&url).unwrap();
    component(&db, "echo");
    cluster.stop();
    match db.components() {
        Err(StateError::Unavailable(e)) => assert!(e.contains("reading the components"), "{e}"),
        other => panic!("while the database is down: {other:?}"),
    }
    assert!(matches!(db.heartbeat(), Err(StateError::Unavailable(_))));
    // Opening says where it tried, never the password.
    let with_password = url.replace("postgres@", "postgres:hunter2@");
    let refused = Postgres::open(&with_password).err().unwrap();
    let message = refused.to_string();
    assert!(matches!(refused, StateError::Unavailable(_)), "{message}");
    let place = format!(
        "127.0.0.1:{}/{}",
        cluster.port(),
        url.rsplit('/').next().unwrap()
    );
    assert!(message.contains(&place), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    cluster.start();
    let deadline = std::time::Instant::now() + PATIENCE;
    let components = loop {
        match db.components() {
            Ok(components) => break components,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the database is back, the calls still fail: {e}"),
        }
    };
    assert_eq!(components.len(), 1);
    // Changes missed while it was down: the node reloads everything.
    assert_eq!(next_changes(&db.changes()), super::listen::all_changes());
}

#[test]
fn a_batch_of_claims_is_decided_claim_by_claim() {
    let (a, b) = two_nodes();
    let tick = |what: &str| claim(what, "1000", "echo", ClaimKind::Schedule);
    assert_eq!(b.claim(&tick("taken"), false).unwrap(), Claimed::Won);
    b.finish("taken", "1000").unwrap();
    // "busy" still runs on b: a's tick of it at another time is skipped.
    let busy = claim("busy", "0", "echo", ClaimKind::Schedule);
    assert_eq!(b.claim(&busy, false).unwrap(), Claimed::Won);
    let batch = vec![
        (tick("fresh"), false),
        (tick("taken"), false),
        (tick("told"), true),
        (tick("busy"), false),
        // The same occurrence twice in one batch is won once.
        (tick("fresh"), false),
        // A chain event is never skipped for another still running.
        (claim("busy", "7:0", "echo", ClaimKind::Trigger), false),
    ];
    assert_eq!(
        a.claim_all(&batch).unwrap(),
        vec![
            Claimed::Won,
            Claimed::Taken,
            Claimed::Skipped,
            Claimed::Skipped,
            Claimed::Taken,
            Claimed::Won,
        ]
    );
    a.finish_all(
        &[
            ("fresh".into(), "1000".into()),
            ("busy".into(), "7:0".into()),
        ],
        true,
    )
    .unwrap();
    assert!(a.claim_all(&[]).unwrap().is_empty());
    // A run that ended, its record on the way, holds up no later tick.
    b.finish_all(&[("busy".into(), "0".into())], false).unwrap();
    let later = claim("busy", "2000", "echo", ClaimKind::Schedule);
    assert_eq!(a.claim(&later, false).unwrap(), Claimed::Won);
}
