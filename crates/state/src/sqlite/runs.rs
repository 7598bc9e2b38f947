//! Run history: bounded per component and in total, by count and by bytes,
//! and read in pages that are bounded in bytes too, so neither a flood of
//! large runs nor one `?limit=1000` can make the node hold gigabytes.

use rusqlite::params;

use super::{from_json, to_json, Sqlite};
use crate::{OldestRuns, RunBounds, RunPage, RunRecord, RunStore, RunsOf, StateError, PAGE_BYTES};

pub(super) use crate::Totals;

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
}

impl RunStore for Sqlite {
    fn insert_runs(&self, runs: &[RunRecord], bounds: RunBounds) -> Result<(), StateError> {
        let mut conn = self.write();
        let mut kept = self.run_totals();
        // History need not survive a power cut the way acknowledged state
        // must: its commits skip the fsync, and the next commit that syncs
        // (any registration, schedule or cursor) makes them durable too.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let written = (|| {
            let tx = conn.transaction()?;
            let mut totals = *kept;
            insert_runs_in(&tx, runs, bounds, &mut totals)?;
            tx.commit()?;
            Ok::<_, StateError>(totals)
        })();
        conn.pragma_update(None, "synchronous", "FULL")?;
        *kept = written?;
        Ok(())
    }

    fn runs_of(
        &self,
        of: RunsOf<'_>,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, StateError> {
        let (column, value) = of.column();
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
    if bounds.exceeded_by(totals.count, totals.bytes) {
        let mut stmt = tx.prepare_cached("SELECT id, bytes FROM runs ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut oldest = OldestRuns::new(bounds, *totals);
        while oldest.wanted() {
            let Some(row) = rows.next()? else { break };
            oldest.take(row.get(0)?, row.get::<_, i64>(1)? as u64);
        }
        drop(rows);
        if let Some(last) = oldest.last {
            let mut delete =
                tx.prepare_cached("DELETE FROM runs WHERE id <= ?1 RETURNING bytes")?;
            totals.remove(&mut delete.query([last])?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ComponentRecord, ComponentStore};

    /// The totals kept as runs come and go are what a count finds.
    fn assert_totals_match(db: &Sqlite) {
        let kept = *db.run_totals();
        let counted = Totals::count(&db.write()).unwrap();
        assert_eq!((kept.count, kept.bytes), (counted.count, counted.bytes));
    }

    #[test]
    fn kept_totals_follow_inserts_bounds_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("state.db")).unwrap();
        for name in ["echo", "other"] {
            db.commit_component(&ComponentRecord::sample(name), b"bytes")
                .unwrap();
        }
        let bounds = RunBounds {
            per_name: 5,
            total: 8,
            total_bytes: 1 << 30,
        };
        for i in 0..10 {
            let runs: Vec<_> = ["echo", "other"]
                .iter()
                .map(|name| RunRecord::sample(name, i, Some("x".repeat(i as usize))))
                .collect();
            db.insert_runs(&runs, bounds).unwrap();
            assert_totals_match(&db);
        }
        db.remove_component("other").unwrap();
        assert_totals_match(&db);
    }
}
