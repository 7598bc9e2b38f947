//! One suite for every backend: each test here runs against SQLite and
//! against PostgreSQL, so the two keep the same behaviour.

use super::*;
use crate::AuditEntry;

/// The test PostgreSQL servers, shared with the end-to-end tests.
#[path = "../../../host/tests/support/postgres.rs"]
pub(super) mod cluster;

/// Where a test keeps its state: opened as often as it likes (reopening is
/// how a restart looks to the state).
enum Place {
    Sqlite(tempfile::TempDir),
    /// A database's URL.
    Postgres(String),
}

impl Place {
    fn open(&self) -> Box<dyn Store> {
        match self {
            Place::Sqlite(dir) => {
                Box::new(sqlite::Sqlite::open(&dir.path().join("state.db")).unwrap())
            }
            Place::Postgres(url) => Box::new(postgres::Postgres::open(url).unwrap()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Place::Sqlite(_) => "sqlite",
            Place::Postgres(_) => "postgres",
        }
    }
}

/// A fresh, empty place of each backend.
fn places() -> Vec<Place> {
    vec![
        Place::Sqlite(tempfile::tempdir().unwrap()),
        Place::Postgres(cluster::Cluster::shared().database()),
    ]
}

/// Runs `test` against every backend, naming the backend of a failure.
fn each_backend(test: impl Fn(&Place)) {
    for place in places() {
        eprintln!("backend: {}", place.name());
        test(&place);
    }
}

fn record(name: &str, digest: &str, reuse: u32) -> ComponentRecord {
    ComponentRecord {
        name: name.into(),
        digest: digest.into(),
        settings: HandlerSettings {
            allow: Some(vec!["*.example.com".into(), "127.0.0.1:80".into()]),
            config: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            reuse,
            // Links are kept as given, and read back.
            links: vec![Link {
                interface: "acme:cipher/audit-log@0.1.0".into(),
                provider: "auditor".into(),
            }],
        },
        loaded_at: 7,
    }
}

#[test]
fn a_commit_replaces_bytes_and_settings_together() {
    each_backend(|place| {
        let db = place.open();
        db.commit_component(&record("echo", "d1", 1), b"one")
            .unwrap();
        db.commit_component(&record("other", "d1", 2), b"one")
            .unwrap();
        db.commit_component(&record("echo", "d2", 3), b"two")
            .unwrap();
        drop(db);
        let db = place.open();
        assert_eq!(
            db.components().unwrap(),
            vec![record("echo", "d2", 3), record("other", "d1", 2)]
        );
        assert_eq!(db.blob("d2").unwrap().as_deref(), Some(&b"two"[..]));
        // `other` still uses d1; once it goes, so do its bytes.
        assert!(db.blob("d1").unwrap().is_some());
        assert_eq!(db.remove_component("other").unwrap(), (true, vec![]));
        assert!(db.blob("d1").unwrap().is_none());
        assert_eq!(db.remove_component("other").unwrap(), (false, vec![]));
    });
}

#[test]
fn a_cursor_moves_only_while_its_trigger_exists() {
    each_backend(|place| {
        let db = place.open();
        let record = TriggerRecord {
            id: "t1".into(),
            name: "watcher".into(),
            chain_id: 31337,
            on: "\"block\"".into(),
            confirmations: 0,
            input: None,
            created_at: 1,
            cursor: Cursor { block: 5, log: 0 },
        };
        db.insert_trigger(&record).unwrap();
        assert_eq!(db.triggers().unwrap(), vec![record]);
        let bounds = RunBounds {
            per_name: 10,
            total: 10,
            total_bytes: 1 << 20,
        };
        let next = Cursor { block: 6, log: 0 };
        assert!(db.advance_trigger("t1", next, None, bounds).unwrap());
        assert_eq!(db.trigger_cursor("t1").unwrap(), Some(next));
        assert!(db.delete_trigger("t1").unwrap());
        assert!(!db.advance_trigger("t1", next, None, bounds).unwrap());
        assert_eq!(db.trigger_cursor("t1").unwrap(), None);
    });
}

fn workflow_run(name: &str, ok: bool) -> WorkflowRun {
    WorkflowRun {
        id: 0,
        name: name.into(),
        cause: "request".into(),
        started_at: 1,
        duration_ms: 2,
        ok,
        trigger: "{}".into(),
        steps: "[]".into(),
        result: ok.then(|| "1".to_string()),
        error: (!ok).then(|| "failed".to_string()),
    }
}

#[test]
fn definitions_are_replaced_and_runs_kept_bounded_and_paged() {
    each_backend(|place| {
        let db = place.open();
        db.put_workflow("w", "{\"v\":1}", 10).unwrap();
        db.put_workflow("w", "{\"v\":2}", 20).unwrap();
        let stored = db.workflow("w").unwrap().unwrap();
        assert_eq!(
            (
                stored.definition.as_str(),
                stored.created_at,
                stored.updated_at
            ),
            ("{\"v\":2}", 10, 20)
        );
        assert_eq!(db.workflows().unwrap().len(), 1);

        for i in 0..(RUNS_KEPT_PER_WORKFLOW + 5) {
            db.record_workflow_run(&workflow_run("w", i % 2 == 0), BOUNDS_WIDE)
                .unwrap();
        }
        db.record_workflow_run(&workflow_run("other", true), BOUNDS_WIDE)
            .unwrap();
        let all = db.workflow_runs("w", 5000, None).unwrap().runs;
        assert_eq!(all.len(), RUNS_KEPT_PER_WORKFLOW as usize);
        let page = db.workflow_runs("w", 2, None).unwrap();
        assert!(page.runs[0].id > page.runs[1].id, "newest first");
        assert_eq!(page.next, Some(page.runs[1].id));
        let next = db.workflow_runs("w", 2, page.next).unwrap().runs;
        assert!(next[0].id < page.runs[1].id);

        db.put_job_blob("a", b"1").unwrap();
        db.put_job_blob("b", b"2").unwrap();
        db.keep_only_job_blobs(&["a".to_string()]).unwrap();
        assert_eq!(
            db.job_blobs().unwrap(),
            vec![("a".to_string(), b"1".to_vec())]
        );

        assert!(db.remove_workflow("w").unwrap());
        assert!(!db.remove_workflow("w").unwrap());
        assert!(db.workflow_runs("w", 10, None).unwrap().runs.is_empty());
        assert_eq!(db.workflow_runs("other", 10, None).unwrap().runs.len(), 1);
    });
}

const BOUNDS_WIDE: RunBounds = RunBounds {
    per_name: 1000,
    total: 1_000_000,
    total_bytes: 1 << 40,
};

#[test]
fn workflow_runs_are_bounded_in_all_by_count_and_bytes_and_read_in_pages_of_bytes() {
    each_backend(|place| {
        let db = place.open();
        let five = RunBounds {
            total: 5,
            ..BOUNDS_WIDE
        };
        let mut ids = Vec::new();
        for i in 0..8 {
            let name = if i % 2 == 0 { "a" } else { "b" };
            ids.push(
                db.record_workflow_run(&workflow_run(name, true), five)
                    .unwrap(),
            );
        }
        let kept = |name| db.workflow_runs(name, 100, None).unwrap().runs;
        let mut left: Vec<u64> = kept("a").iter().chain(&kept("b")).map(|r| r.id).collect();
        left.sort();
        assert_eq!(left, ids[3..], "the five newest of all workflows");

        // Runs of 1.5 MiB, in all at most 5 MiB: three are kept, of which
        // a page (4 MiB) holds two.
        let big = |trigger_bytes: usize| WorkflowRun {
            trigger: "x".repeat(trigger_bytes),
            ..workflow_run("big", true)
        };
        let bytes = RunBounds {
            total_bytes: 5 << 20,
            ..BOUNDS_WIDE
        };
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(db.record_workflow_run(&big(3 << 19), bytes).unwrap());
        }
        let page = db.workflow_runs("big", 1000, None).unwrap();
        let got: Vec<u64> = page.runs.iter().map(|r| r.id).collect();
        assert_eq!(
            got,
            [ids[3], ids[2]],
            "newest first, cut at the page's bytes"
        );
        assert_eq!(page.next, Some(ids[2]));
        let rest = db.workflow_runs("big", 1000, page.next).unwrap();
        let got: Vec<u64> = rest.runs.iter().map(|r| r.id).collect();
        assert_eq!(got, [ids[1]], "the oldest went past the bytes in all");
        assert_eq!(rest.next, None);
        // A run that grows when it finishes is counted as it ends, and is
        // never itself dropped for it.
        let mut growing = big(10);
        growing.id = db.record_workflow_run(&growing, bytes).unwrap();
        growing.steps = "y".repeat(6 << 20);
        db.finish_workflow_run(&growing, bytes).unwrap();
        let left = db.workflow_runs("big", 1000, None).unwrap().runs;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, growing.id);
    });
}

const BOUNDS: RunBounds = RunBounds {
    per_name: 20,
    total: 1000,
    total_bytes: 1 << 30,
};

fn run(name: &str, job: Option<&str>, started_at: u64) -> RunRecord {
    RunRecord {
        job_id: job.map(Into::into),
        scheduled_for: job.map(|_| started_at),
        audit: vec![AuditEntry {
            level: "info".into(),
            message: format!("ran at {started_at}"),
        }],
        rpc: vec![RpcCall {
            chain: 1,
            method: "eth_blockNumber".into(),
            duration_us: 250,
            ok: true,
        }],
        ..RunRecord::sample(name, started_at, Some(format!("out {started_at}")))
    }
}

fn with_components(place: &Place, names: &[&str]) -> Box<dyn Store> {
    let db = place.open();
    for name in names {
        db.commit_component(&ComponentRecord::sample(name), b"bytes")
            .unwrap();
    }
    db
}

fn started(page: &RunPage) -> Vec<u64> {
    page.runs.iter().map(|r| r.started_at).collect()
}

#[test]
fn runs_are_paged_newest_first() {
    each_backend(|place| {
        let db = with_components(place, &["echo"]);
        let runs: Vec<_> = (0..5).map(|i| run("echo", Some("j1"), i)).collect();
        db.insert_runs(&runs, BOUNDS).unwrap();
        let first = db.runs_of_handler("echo", 2, None).unwrap();
        assert_eq!(started(&first), vec![4, 3]);
        let second = db.runs_of_handler("echo", 2, first.next).unwrap();
        assert_eq!(started(&second), vec![2, 1]);
        let last = db.runs_of_handler("echo", 2, second.next).unwrap();
        assert_eq!(started(&last), vec![0]);
        assert_eq!(last.next, None);
        assert_eq!(db.runs_of_schedule("j1", 10, None).unwrap().runs.len(), 5);
    });
}

#[test]
fn history_is_bounded_per_name_and_in_all() {
    each_backend(|place| {
        let db = with_components(place, &["echo", "other"]);
        for i in 0..25 {
            db.insert_runs(&[run("echo", None, i), run("other", None, i)], BOUNDS)
                .unwrap();
        }
        assert_eq!(
            db.runs_of_handler("echo", 1000, None).unwrap().runs.len(),
            20
        );
        let bounds = RunBounds {
            total: 30,
            ..BOUNDS
        };
        db.insert_runs(&[run("echo", None, 100)], bounds).unwrap();
        let echo = db.runs_of_handler("echo", 1000, None).unwrap();
        let other = db.runs_of_handler("other", 1000, None).unwrap();
        assert_eq!(echo.runs.len() + other.runs.len(), 30);
        assert_eq!(echo.runs[0].started_at, 100);
        // By bytes: a bound of about three runs keeps the newest three.
        let size = run("echo", None, 200).size() as u64;
        let bounds = RunBounds {
            total_bytes: size * 3 + size / 2,
            ..BOUNDS
        };
        db.insert_runs(&[run("echo", None, 200)], bounds).unwrap();
        let echo = db.runs_of_handler("echo", 1000, None).unwrap();
        let other = db.runs_of_handler("other", 1000, None).unwrap();
        assert_eq!(
            echo.runs.len() + other.runs.len(),
            3,
            "{:?}",
            started(&echo)
        );
        db.remove_component("other").unwrap();
    });
}

#[test]
fn runs_of_removed_components_are_gone_and_not_recorded() {
    each_backend(|place| {
        let db = with_components(place, &["echo"]);
        db.insert_runs(&[run("echo", None, 1)], BOUNDS).unwrap();
        db.remove_component("echo").unwrap();
        db.insert_runs(&[run("echo", None, 2), run("ghost", None, 3)], BOUNDS)
            .unwrap();
        assert!(db
            .runs_of_handler("echo", 10, None)
            .unwrap()
            .runs
            .is_empty());
        assert!(db
            .runs_of_handler("ghost", 10, None)
            .unwrap()
            .runs
            .is_empty());
    });
}

#[test]
fn a_page_ends_early_past_its_bytes() {
    each_backend(|place| {
        let db = with_components(place, &["big"]);
        let mut big = run("big", None, 1);
        big.output = Some("x".repeat(PAGE_BYTES / 3));
        let runs: Vec<_> = (0..6)
            .map(|i| RunRecord {
                started_at: i,
                ..big.clone()
            })
            .collect();
        db.insert_runs(&runs, BOUNDS).unwrap();
        let page = db.runs_of_handler("big", 1000, None).unwrap();
        assert_eq!(page.runs.len(), 2);
        assert!(page.next.is_some());
    });
}

#[test]
fn texts_keep_every_character() {
    // Guests print what they like, NUL included; a run is not lost for it.
    let odd = "nul \0, quote ', backslash \\, é, \u{1F980}";
    each_backend(|place| {
        let db = with_components(place, &["echo"]);
        let mut one = run("echo", Some("j1"), 1);
        one.output = Some(odd.into());
        one.error = Some(odd.into());
        one.stdout = odd.into();
        one.stderr = odd.into();
        db.insert_runs(std::slice::from_ref(&one), BOUNDS).unwrap();
        let stored = db.runs_of_handler("echo", 1, None).unwrap().runs.remove(0);
        assert_eq!(
            stored,
            RunRecord {
                id: stored.id,
                ..one
            }
        );

        let job = ScheduleRecord {
            id: "j1".into(),
            name: "echo".into(),
            cron: "* * * * * *".into(),
            input: odd.into(),
            created_at: 3,
        };
        db.insert_schedule(&job).unwrap();
        assert_eq!(db.schedules().unwrap()[0].input, odd);

        let mut failed = workflow_run("w", false);
        failed.error = Some(odd.into());
        let id = db.record_workflow_run(&failed, BOUNDS_WIDE).unwrap();
        let stored = db.workflow_runs("w", 1, None).unwrap().runs.remove(0);
        assert_eq!(stored, WorkflowRun { id, ..failed });
    });
}

#[test]
fn a_cursor_never_moves_back() {
    each_backend(|place| {
        let (a, b) = (place.open(), place.open());
        let record = TriggerRecord {
            id: "t1".into(),
            name: "watcher".into(),
            chain_id: 1,
            on: "\"block\"".into(),
            confirmations: 0,
            input: Some("{}".into()),
            created_at: 1,
            cursor: Cursor { block: 5, log: 0 },
        };
        a.insert_trigger(&record).unwrap();
        let bounds = RunBounds {
            per_name: 10,
            total: 10,
            total_bytes: 1 << 20,
        };
        assert!(a
            .advance_trigger("t1", Cursor { block: 9, log: 3 }, None, bounds)
            .unwrap());
        // A node committing late, behind the cursor: it stays, and the trigger
        // still exists.
        assert!(b
            .advance_trigger("t1", Cursor { block: 9, log: 1 }, None, bounds)
            .unwrap());
        assert!(b
            .advance_trigger("t1", Cursor { block: 7, log: 9 }, None, bounds)
            .unwrap());
        assert_eq!(
            b.trigger_cursor("t1").unwrap(),
            Some(Cursor { block: 9, log: 3 })
        );
        assert!(b
            .advance_trigger("t1", Cursor { block: 9, log: 4 }, None, bounds)
            .unwrap());
        assert_eq!(
            a.trigger_cursor("t1").unwrap(),
            Some(Cursor { block: 9, log: 4 })
        );
        assert_eq!(a.triggers().unwrap()[0].input.as_deref(), Some("{}"));
    });
}

#[test]
fn secrets_are_kept_apart_replaced_and_listed_without_their_values() {
    each_backend(|place| {
        let db = place.open();
        assert!(db.put_secret("api-key", "sk_live_1", 10).unwrap());
        assert!(!db.put_secret("api-key", "sk_live_2", 20).unwrap());
        assert!(db.put_secret("other", "x", 30).unwrap());
        assert_eq!(
            db.secrets().unwrap(),
            vec![
                SecretInfo {
                    name: "api-key".into(),
                    created_at: 10,
                    updated_at: 20
                },
                SecretInfo {
                    name: "other".into(),
                    created_at: 30,
                    updated_at: 30
                },
            ]
        );
        let names = ["api-key".to_string(), "missing".to_string()];
        let values = db.secret_values(&names).unwrap();
        assert_eq!(values.len(), 1);
        assert_eq!(values["api-key"], "sk_live_2");
        assert!(db.remove_secret("api-key").unwrap());
        assert!(!db.remove_secret("api-key").unwrap());
        assert!(db.secret_values(&names).unwrap().is_empty());
    });
}
