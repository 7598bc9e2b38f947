//! Run history, bounded as in SQLite (per component and in all, by count
//! and by bytes) with several nodes writing.
//!
//! The totals live in a one-row table that every writer of runs locks
//! first, in the transaction that changes the runs: writers take turns, so
//! the bounds hold without counting the table, and a batch of runs and the
//! totals that count it commit together.

use tokio_postgres::{Row, Transaction};

use super::{
    from_json, from_sql, opt_text_of, page_span, text_of, to_json, to_sql, Fault, Postgres,
};
use crate::{OldestRuns, RunBounds, RunPage, RunRecord, RunStore, RunsOf, StateError};

pub(super) use crate::Totals;

impl Totals {
    /// Reads and locks the totals until `tx` ends.
    pub async fn lock(tx: &Transaction<'_>) -> Result<Totals, Fault> {
        let row = tx
            .query_one("SELECT runs, bytes FROM run_totals FOR UPDATE", &[])
            .await?;
        Ok(Totals::of_row(&row))
    }

    pub async fn save(&self, tx: &Transaction<'_>) -> Result<(), Fault> {
        tx.execute(
            "UPDATE run_totals SET runs = $1, bytes = $2",
            &[&to_sql(self.count), &to_sql(self.bytes)],
        )
        .await?;
        Ok(())
    }

    /// A row of (count, bytes).
    pub fn of_row(row: &Row) -> Totals {
        Totals {
            count: from_sql(row.get(0)),
            bytes: from_sql(row.get(1)),
        }
    }
}

const RUN_COLUMNS: &str = "id, name, job_id, scheduled_for, started_at, duration_ms, ok, output, \
                           error, stdout, stderr, audit, function, rpc";

impl RunStore for Postgres {
    fn insert_runs(&self, runs: &[RunRecord], bounds: RunBounds) -> Result<(), StateError> {
        if runs.is_empty() {
            return Ok(());
        }
        self.wait("recording runs", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // History, not acknowledged state: the commit need not wait for
            // the database's disk (a crash of the database may lose the
            // last moments of history, never a registration or a cursor).
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
            let mut totals = Totals::lock(&tx).await?;
            insert_runs_in(&tx, runs, Some(bounds), &mut totals).await?;
            totals.save(&tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn runs_of(
        &self,
        of: RunsOf<'_>,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, StateError> {
        self.wait("reading runs", self.runs(of, limit, before))
    }
}

impl Postgres {
    /// A page of the runs of `of`, newest first. The ids and
    /// sizes are read first to decide where the page ends (at `limit`, or
    /// early past [`PAGE_BYTES`]); then only the runs of the page are read,
    /// so a page of large runs never holds more than its bytes.
    async fn runs(
        &self,
        of: RunsOf<'_>,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, Fault> {
        let (column, value) = of.column();
        let client = self.client().await?;
        let page = page_span(&client, "runs", column, value, limit, before).await?;
        let (Some((newest, oldest)), next) = page else {
            return Ok(RunPage::default());
        };
        let rows = client
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE {column} = $1 AND id <= $2 AND id >= $3
                     ORDER BY id DESC"
                ),
                &[&value, &newest, &oldest],
            )
            .await?;
        let runs = rows.iter().map(run_of).collect::<Result<_, _>>()?;
        Ok(RunPage { runs, next })
    }
}

fn run_of(row: &Row) -> Result<RunRecord, Fault> {
    Ok(RunRecord {
        id: from_sql(row.get(0)),
        name: row.get(1),
        job_id: row.get(2),
        scheduled_for: row.get::<_, Option<i64>>(3).map(from_sql),
        started_at: from_sql(row.get(4)),
        duration_ms: from_sql(row.get(5)),
        ok: row.get(6),
        output: opt_text_of("output", row.get(7))?,
        error: opt_text_of("error", row.get(8))?,
        stdout: text_of("stdout", row.get(9))?,
        stderr: text_of("stderr", row.get(10))?,
        audit: from_json("audit", row.get(11))?,
        function: row.get(12),
        rpc: from_json("rpc", row.get(13))?,
    })
}

/// Records `runs` within `tx`, whose caller holds the totals' lock, then
/// (given `bounds`) drops the oldest runs beyond them, keeping `totals` in
/// step for the caller to save. Runs of a component that is no longer
/// registered are not recorded. Shared by the run log, the chain triggers
/// (whose runs commit with their cursors) and the sweep of lost claims.
pub(super) async fn insert_runs_in(
    tx: &Transaction<'_>,
    runs: &[RunRecord],
    bounds: Option<RunBounds>,
    totals: &mut Totals,
) -> Result<(), Fault> {
    // One statement for the whole batch: a column of values each.
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let jobs: Vec<Option<&str>> = runs.iter().map(|r| r.job_id.as_deref()).collect();
    let scheduled: Vec<Option<i64>> = runs.iter().map(|r| r.scheduled_for.map(to_sql)).collect();
    let started: Vec<i64> = runs.iter().map(|r| to_sql(r.started_at)).collect();
    let durations: Vec<i64> = runs.iter().map(|r| to_sql(r.duration_ms)).collect();
    let oks: Vec<bool> = runs.iter().map(|r| r.ok).collect();
    let outputs: Vec<Option<&[u8]>> = runs
        .iter()
        .map(|r| r.output.as_deref().map(str::as_bytes))
        .collect();
    let errors: Vec<Option<&[u8]>> = runs
        .iter()
        .map(|r| r.error.as_deref().map(str::as_bytes))
        .collect();
    let stdouts: Vec<&[u8]> = runs.iter().map(|r| r.stdout.as_bytes()).collect();
    let stderrs: Vec<&[u8]> = runs.iter().map(|r| r.stderr.as_bytes()).collect();
    let audits: Vec<String> = runs.iter().map(|r| to_json(&r.audit)).collect();
    let functions: Vec<Option<&str>> = runs.iter().map(|r| r.function.as_deref()).collect();
    let sizes: Vec<i64> = runs.iter().map(|r| to_sql(r.size() as u64)).collect();
    let rpcs: Vec<String> = runs.iter().map(|r| to_json(&r.rpc)).collect();
    let added = tx
        .query_one(
            "WITH added AS (
                 INSERT INTO runs (name, job_id, scheduled_for, started_at, duration_ms, ok, output,
                                   error, stdout, stderr, audit, function, bytes, rpc)
                 SELECT r.name, r.job_id, r.scheduled_for, r.started_at, r.duration_ms, r.ok,
                        r.output, r.error, r.stdout, r.stderr, r.audit, r.function, r.bytes, r.rpc
                 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[],
                                        $5::BIGINT[], $6::BOOLEAN[], $7::BYTEA[], $8::BYTEA[],
                                        $9::BYTEA[], $10::BYTEA[], $11::TEXT[], $12::TEXT[],
                                        $13::BIGINT[], $14::TEXT[])
                     WITH ORDINALITY AS r (name, job_id, scheduled_for, started_at, duration_ms,
                                           ok, output, error, stdout, stderr, audit, function,
                                           bytes, rpc, n)
                 WHERE EXISTS (SELECT 1 FROM components c WHERE c.name = r.name)
                 ORDER BY r.n
                 RETURNING bytes)
             SELECT COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT FROM added",
            &[
                &names, &jobs, &scheduled, &started, &durations, &oks, &outputs, &errors, &stdouts,
                &stderrs, &audits, &functions, &sizes, &rpcs,
            ],
        )
        .await?;
    let added = Totals::of_row(&added);
    totals.count += added.count;
    totals.bytes += added.bytes;
    let Some(bounds) = bounds else {
        return Ok(());
    };

    let mut names = names;
    names.sort_unstable();
    names.dedup();
    let prune = tx
        .prepare(
            "WITH gone AS (
                 DELETE FROM runs WHERE name = $1 AND id <= (
                     SELECT id FROM runs WHERE name = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)
                 RETURNING bytes)
             SELECT COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT FROM gone",
        )
        .await?;
    for name in names {
        let gone = tx
            .query_one(&prune, &[&name, &i64::from(bounds.per_name)])
            .await?;
        totals.subtract(Totals::of_row(&gone));
    }
    // In all: the oldest runs go until both bounds hold. Only the sizes of
    // the rows deleted are read, a chunk at a time.
    let mut oldest = OldestRuns::new(bounds, *totals);
    'scan: while oldest.wanted() {
        let chunk = tx
            .query(
                "SELECT id, bytes FROM runs WHERE id > $1 ORDER BY id LIMIT 256",
                &[&oldest.last.unwrap_or(0)],
            )
            .await?;
        if chunk.is_empty() {
            break;
        }
        for row in &chunk {
            if !oldest.wanted() {
                break 'scan;
            }
            oldest.take(row.get(0), from_sql(row.get(1)));
        }
    }
    if let Some(last) = oldest.last {
        let gone = tx
            .query_one(
                "WITH gone AS (DELETE FROM runs WHERE id <= $1 RETURNING bytes)
                 SELECT COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT FROM gone",
                &[&last],
            )
            .await?;
        totals.subtract(Totals::of_row(&gone));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ComponentRecord, ComponentStore};

    /// The totals kept as runs come and go are what a count finds.
    fn assert_totals_match(db: &Postgres) {
        let (kept, counted) = db
            .wait("counting", async {
                let client = db.client().await?;
                let kept = client
                    .query_one("SELECT runs, bytes FROM run_totals", &[])
                    .await?;
                let counted = client
                    .query_one(
                        "SELECT COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT FROM runs",
                        &[],
                    )
                    .await?;
                Ok((Totals::of_row(&kept), Totals::of_row(&counted)))
            })
            .unwrap();
        assert_eq!(kept, counted);
    }

    #[test]
    fn kept_totals_follow_inserts_bounds_removals_and_two_writers() {
        let url = super::super::tests::database();
        let db = Postgres::open(&url).unwrap();
        let other_node = Postgres::open(&url).unwrap();
        for name in ["echo", "other"] {
            db.commit_component(&ComponentRecord::sample(name), b"bytes")
                .unwrap();
        }
        let bounds = RunBounds {
            per_name: 5,
            total: 8,
            total_bytes: 1 << 30,
        };
        let batch = |i: u64| -> Vec<RunRecord> {
            ["echo", "other", "ghost"]
                .iter()
                .map(|name| RunRecord::sample(name, i, Some("x".repeat(i as usize))))
                .collect()
        };
        // Two nodes writing at once: the bounds hold for their sum.
        std::thread::scope(|scope| {
            for node in [&db, &other_node] {
                scope.spawn(move || {
                    for i in 0..10 {
                        node.insert_runs(&batch(i), bounds).unwrap();
                    }
                });
            }
        });
        assert_totals_match(&db);
        let echo = db.runs_of_handler("echo", 100, None).unwrap().runs.len();
        let other = db.runs_of_handler("other", 100, None).unwrap().runs.len();
        assert_eq!(echo + other, 8);
        db.remove_component("other").unwrap();
        assert_totals_match(&db);
    }
}
