//! Run history: bounded per component and in total, by count and by bytes,
//! and read in pages that are bounded in bytes too, so neither a flood of
//! large runs nor one `?limit=1000` can make the node hold gigabytes.

use rusqlite::params;

use super::{from_json, to_json, StateDb, StateError};
use crate::audit_log::AuditEntry;

/// One RPC call of a run, as its run record lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RpcCall {
    pub chain: u64,
    pub method: String,
    /// Microseconds: a call to a nearby node takes well under one.
    pub duration_us: u64,
    pub ok: bool,
}

/// A run of a registered component.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Its place in the history (0 until stored).
    pub id: u64,
    pub name: String,
    /// The export called, for a call by export name.
    pub function: Option<String>,
    pub job_id: Option<String>,
    pub scheduled_for: Option<u64>,
    pub started_at: u64,
    pub duration_ms: u64,
    pub ok: bool,
    pub output: Option<String>,
    pub error: Option<String>,
    pub stdout: String,
    pub stderr: String,
    /// What the guest wrote to its audit log.
    pub audit: Vec<AuditEntry>,
    /// The chain RPC calls it made, in order.
    pub rpc: Vec<RpcCall>,
}

impl RunRecord {
    /// The bytes it takes, roughly: what the bounds count.
    pub fn size(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let audit: usize = self.audit.iter().map(|a| a.message.len() + 8).sum();
        128 + self.name.len()
            + text(&self.function)
            + text(&self.job_id)
            + text(&self.output)
            + text(&self.error)
            + self.stdout.len()
            + self.stderr.len()
            + audit
            + self.rpc.iter().map(|c| c.method.len() + 48).sum::<usize>()
    }
}

/// How much history is kept.
#[derive(Clone, Copy, Debug)]
pub struct RunBounds {
    /// Runs kept per component.
    pub per_name: u32,
    /// Runs kept in all.
    pub total: u64,
    /// Bytes of runs kept in all.
    pub total_bytes: u64,
}

/// How many runs are stored, and their bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Totals {
    pub count: u64,
    pub bytes: u64,
}

impl Totals {
    pub fn count(conn: &rusqlite::Connection) -> Result<Totals, StateError> {
        Ok(conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM runs",
            [],
            |row| {
                Ok(Totals {
                    count: row.get::<_, i64>(0)? as u64,
                    bytes: row.get::<_, i64>(1)? as u64,
                })
            },
        )?)
    }

    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }

    /// Takes away the rows of a `... RETURNING bytes` statement.
    pub fn remove(&mut self, deleted: &mut rusqlite::Rows<'_>) -> Result<(), StateError> {
        let gone = Totals::of(deleted)?;
        self.subtract(gone);
        Ok(())
    }

    /// The count and bytes of the rows of a `... RETURNING bytes` statement.
    pub fn of(rows: &mut rusqlite::Rows<'_>) -> Result<Totals, StateError> {
        let mut totals = Totals::default();
        while let Some(row) = rows.next()? {
            totals.add(row.get::<_, i64>(0)? as u64);
        }
        Ok(totals)
    }

    pub fn subtract(&mut self, other: Totals) {
        self.count = self.count.saturating_sub(other.count);
        self.bytes = self.bytes.saturating_sub(other.bytes);
    }
}

/// Runs, newest first; `next` is the `before` of the following page.
#[derive(Debug, Default)]
pub struct RunPage {
    pub runs: Vec<RunRecord>,
    pub next: Option<u64>,
}

/// Most bytes of runs in one page: a page ends early past it.
pub const PAGE_BYTES: usize = 4 << 20;

impl StateDb {
    /// Records runs in one transaction, then drops the oldest runs beyond
    /// the bounds. Runs of a component that is no longer registered (it was
    /// removed while the run was going) are not recorded.
    pub fn insert_runs(&self, runs: &[RunRecord], bounds: RunBounds) -> Result<(), StateError> {
        let mut conn = self.write();
        let mut kept = self.run_totals();
        let tx = conn.transaction()?;
        let mut totals = *kept;
        insert_runs_in(&tx, runs, bounds, &mut totals)?;
        tx.commit()?;
        *kept = totals;
        Ok(())
    }

    pub fn runs_of_handler(
        &self,
        name: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, StateError> {
        self.runs("name", name, limit, before)
    }

    pub fn runs_of_job(
        &self,
        id: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, StateError> {
        self.runs("job_id", id, limit, before)
    }

    fn runs(
        &self,
        column: &str,
        value: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, name, job_id, scheduled_for, started_at, duration_ms, ok, output, error, stdout, stderr, audit, function, rpc
             FROM runs WHERE {column} = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
        ))?;
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        // One more than asked tells whether a next page exists.
        let mut rows = stmt.query(params![value, before, i64::from(limit) + 1])?;
        let mut page = RunPage::default();
        let mut bytes = 0;
        while let Some(row) = rows.next()? {
            let run = RunRecord {
                id: row.get::<_, i64>(0)? as u64,
                name: row.get(1)?,
                job_id: row.get(2)?,
                scheduled_for: row.get::<_, Option<i64>>(3)?.map(|t| t as u64),
                started_at: row.get::<_, i64>(4)? as u64,
                duration_ms: row.get::<_, i64>(5)? as u64,
                ok: row.get(6)?,
                output: row.get(7)?,
                error: row.get(8)?,
                stdout: row.get(9)?,
                stderr: row.get(10)?,
                audit: from_json(&row.get::<_, String>(11)?)?,
                function: row.get(12)?,
                rpc: from_json(&row.get::<_, String>(13)?)?,
            };
            let full = page.runs.len() as u32 >= limit
                || (!page.runs.is_empty() && bytes + run.size() > PAGE_BYTES);
            if full {
                page.next = page.runs.last().map(|r| r.id);
                break;
            }
            bytes += run.size();
            page.runs.push(run);
        }
        Ok(page)
    }
}

/// Records runs within `tx`, then drops the oldest runs beyond the bounds,
/// keeping `totals` (the caller's copy, written back once `tx` commits) in
/// step; shared by the run log and the chain triggers, whose runs commit
/// with their cursors.
pub(super) fn insert_runs_in(
    tx: &rusqlite::Transaction<'_>,
    runs: &[RunRecord],
    bounds: RunBounds,
    totals: &mut Totals,
) -> Result<(), StateError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO runs (name, job_id, scheduled_for, started_at, duration_ms, ok, output, error, stdout, stderr, audit, function, bytes, rpc)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14
         WHERE EXISTS (SELECT 1 FROM components WHERE name = ?1)",
    )?;
    for run in runs {
        let inserted = insert.execute(params![
            run.name,
            run.job_id,
            run.scheduled_for.map(|t| t as i64),
            run.started_at as i64,
            run.duration_ms as i64,
            run.ok,
            run.output,
            run.error,
            run.stdout,
            run.stderr,
            to_json(&run.audit),
            run.function,
            run.size() as i64,
            to_json(&run.rpc),
        ])?;
        if inserted > 0 {
            totals.add(run.size() as u64);
        }
    }
    let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut prune = tx.prepare_cached(
        "DELETE FROM runs WHERE name = ?1 AND id <= (
             SELECT id FROM runs WHERE name = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)
         RETURNING bytes",
    )?;
    for name in names {
        totals.remove(&mut prune.query(params![name, bounds.per_name])?)?;
    }
    // In all: the oldest runs go until both bounds hold. Only the rows
    // deleted are read.
    if totals.count > bounds.total || totals.bytes > bounds.total_bytes {
        let mut oldest = tx.prepare_cached("SELECT id, bytes FROM runs ORDER BY id")?;
        let mut rows = oldest.query([])?;
        let (mut count, mut bytes, mut last) = (totals.count, totals.bytes, None);
        while count > bounds.total || bytes > bounds.total_bytes {
            let Some(row) = rows.next()? else { break };
            last = Some(row.get::<_, i64>(0)?);
            count -= 1;
            bytes = bytes.saturating_sub(row.get::<_, i64>(1)? as u64);
        }
        drop(rows);
        if let Some(last) = last {
            let mut delete =
                tx.prepare_cached("DELETE FROM runs WHERE id <= ?1 RETURNING bytes")?;
            totals.remove(&mut delete.query([last])?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{ComponentRecord, HandlerSettings};
    use super::*;

    const BOUNDS: RunBounds = RunBounds {
        per_name: 20,
        total: 1000,
        total_bytes: 1 << 30,
    };

    fn run(name: &str, job: Option<&str>, started_at: u64) -> RunRecord {
        RunRecord {
            id: 0,
            name: name.into(),
            function: None,
            job_id: job.map(Into::into),
            scheduled_for: job.map(|_| started_at),
            started_at,
            duration_ms: 1,
            ok: true,
            output: Some(format!("out {started_at}")),
            error: None,
            stdout: String::new(),
            stderr: String::new(),
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
        }
    }

    fn db_with(names: &[&str]) -> (tempfile::TempDir, StateDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        for name in names {
            let record = ComponentRecord {
                name: name.to_string(),
                digest: format!("d-{name}"),
                settings: HandlerSettings::default(),
                loaded_at: 0,
            };
            db.commit_component(&record, b"bytes").unwrap();
        }
        (dir, db)
    }

    fn started(page: &RunPage) -> Vec<u64> {
        page.runs.iter().map(|r| r.started_at).collect()
    }

    #[test]
    fn runs_are_paged_newest_first() {
        let (_dir, db) = db_with(&["echo"]);
        let runs: Vec<_> = (0..5).map(|i| run("echo", Some("j1"), i)).collect();
        db.insert_runs(&runs, BOUNDS).unwrap();
        let first = db.runs_of_handler("echo", 2, None).unwrap();
        assert_eq!(started(&first), vec![4, 3]);
        let second = db.runs_of_handler("echo", 2, first.next).unwrap();
        assert_eq!(started(&second), vec![2, 1]);
        let last = db.runs_of_handler("echo", 2, second.next).unwrap();
        assert_eq!(started(&last), vec![0]);
        assert_eq!(last.next, None);
        assert_eq!(db.runs_of_job("j1", 10, None).unwrap().runs.len(), 5);
    }

    #[test]
    fn history_is_bounded_per_name_and_in_all() {
        let (_dir, db) = db_with(&["echo", "other"]);
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
        assert_totals_match(&db);
        db.remove_component("other").unwrap();
        assert_totals_match(&db);
    }

    /// The totals kept as runs come and go are what a count finds.
    fn assert_totals_match(db: &StateDb) {
        let kept = *db.run_totals();
        let counted = Totals::count(&db.write()).unwrap();
        assert_eq!((kept.count, kept.bytes), (counted.count, counted.bytes));
    }

    #[test]
    fn runs_of_removed_components_are_gone_and_not_recorded() {
        let (_dir, db) = db_with(&["echo"]);
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
    }

    #[test]
    fn a_page_ends_early_past_its_bytes() {
        let (_dir, db) = db_with(&["big"]);
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
    }
}
