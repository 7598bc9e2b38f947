//! Stored workflows and their run history.
//!
//! A workflow is kept as the JSON text of its definition, checked when it
//! was posted; registering the name again replaces the definition and keeps
//! the history. Each run is one row with its steps as JSON, and a
//! workflow's history is bounded: the oldest runs go past
//! [`RUNS_KEPT_PER_WORKFLOW`].

use rusqlite::{params, OptionalExtension, Row};

use super::{StateDb, StateError};

/// Runs kept per workflow; older ones are dropped as new ones are recorded.
pub const RUNS_KEPT_PER_WORKFLOW: u32 = 1000;

/// A stored workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowRecord {
    pub name: String,
    /// The definition's JSON text.
    pub definition: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// One run of a workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowRun {
    /// Set by the state when recorded.
    pub id: u64,
    pub name: String,
    /// `request`, `cron` or `chain`.
    pub cause: String,
    pub started_at: u64,
    pub duration_ms: u64,
    pub ok: bool,
    /// JSON texts: the trigger value, the steps' records, the result.
    pub trigger: String,
    pub steps: String,
    pub result: Option<String>,
    pub error: Option<String>,
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn record_of(row: &Row<'_>) -> Result<WorkflowRecord, rusqlite::Error> {
    Ok(WorkflowRecord {
        name: row.get(0)?,
        definition: row.get(1)?,
        created_at: row.get::<_, i64>(2)? as u64,
        updated_at: row.get::<_, i64>(3)? as u64,
    })
}

fn run_of(row: &Row<'_>) -> Result<WorkflowRun, rusqlite::Error> {
    Ok(WorkflowRun {
        id: row.get::<_, i64>(0)? as u64,
        name: row.get(1)?,
        cause: row.get(2)?,
        started_at: row.get::<_, i64>(3)? as u64,
        duration_ms: row.get::<_, i64>(4)? as u64,
        ok: row.get(5)?,
        trigger: row.get(6)?,
        steps: row.get(7)?,
        result: row.get(8)?,
        error: row.get(9)?,
    })
}

const RUN_COLUMNS: &str =
    "id, name, cause, started_at, duration_ms, ok, trigger, steps, result, error";

impl StateDb {
    /// Stores `definition` under `name`, replacing an earlier one (its
    /// creation time and history stay).
    pub fn put_workflow(&self, name: &str, definition: &str, now: u64) -> Result<(), StateError> {
        self.write().execute(
            "INSERT INTO workflows (name, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
            params![name, definition, clamp(now)],
        )?;
        Ok(())
    }

    pub fn workflow(&self, name: &str) -> Result<Option<WorkflowRecord>, StateError> {
        Ok(self
            .read()
            .query_row(
                "SELECT name, definition, created_at, updated_at FROM workflows WHERE name = ?1",
                [name],
                record_of,
            )
            .optional()?)
    }

    /// Every workflow, by name.
    pub fn workflows(&self) -> Result<Vec<WorkflowRecord>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT name, definition, created_at, updated_at FROM workflows ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], record_of)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Forgets workflow `name` and its history; answers whether it existed.
    pub fn remove_workflow(&self, name: &str) -> Result<bool, StateError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let existed = tx.execute("DELETE FROM workflows WHERE name = ?1", [name])? > 0;
        tx.execute("DELETE FROM workflow_runs WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(existed)
    }

    /// Records a run and drops the workflow's oldest runs past the bound;
    /// answers the run's id.
    pub fn record_workflow_run(&self, run: &WorkflowRun) -> Result<u64, StateError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO workflow_runs (name, cause, started_at, duration_ms, ok, trigger, steps, result, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                run.name,
                run.cause,
                clamp(run.started_at),
                clamp(run.duration_ms),
                run.ok,
                run.trigger,
                run.steps,
                run.result,
                run.error,
            ],
        )?;
        let id = tx.last_insert_rowid() as u64;
        tx.execute(
            "DELETE FROM workflow_runs WHERE name = ?1 AND id <= (
                 SELECT id FROM workflow_runs WHERE name = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![run.name, RUNS_KEPT_PER_WORKFLOW],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Writes the outcome of a run recorded when it started.
    pub fn finish_workflow_run(&self, run: &WorkflowRun) -> Result<(), StateError> {
        self.write().execute(
            "UPDATE workflow_runs SET duration_ms = ?2, ok = ?3, steps = ?4, result = ?5, error = ?6
             WHERE id = ?1",
            params![
                clamp(run.id),
                clamp(run.duration_ms),
                run.ok,
                run.steps,
                run.result,
                run.error,
            ],
        )?;
        Ok(())
    }

    /// Keeps the bytes of a job a workflow runs by hash.
    pub fn put_job_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.write().execute(
            "INSERT OR IGNORE INTO job_blobs (digest, bytes) VALUES (?1, ?2)",
            params![digest, bytes],
        )?;
        Ok(())
    }

    /// Drops the kept jobs whose digest is not in `keep`.
    pub fn keep_only_job_blobs(&self, keep: &[String]) -> Result<(), StateError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let stored = tx
            .prepare("SELECT digest FROM job_blobs")?
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        for digest in stored.iter().filter(|d| !keep.contains(d)) {
            tx.execute("DELETE FROM job_blobs WHERE digest = ?1", [digest])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every kept job, by digest.
    pub fn job_blobs(&self) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT digest, bytes FROM job_blobs")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The newest `limit` runs of workflow `name` older than run `before`.
    pub fn workflow_runs(
        &self,
        name: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<WorkflowRun>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE name = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![name, clamp(before.unwrap_or(u64::MAX)), limit],
                run_of,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, ok: bool) -> WorkflowRun {
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
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
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
            db.record_workflow_run(&run("w", i % 2 == 0)).unwrap();
        }
        db.record_workflow_run(&run("other", true)).unwrap();
        let all = db.workflow_runs("w", 5000, None).unwrap();
        assert_eq!(all.len(), RUNS_KEPT_PER_WORKFLOW as usize);
        let page = db.workflow_runs("w", 2, None).unwrap();
        assert!(page[0].id > page[1].id, "newest first");
        let next = db.workflow_runs("w", 2, Some(page[1].id)).unwrap();
        assert!(next[0].id < page[1].id);

        db.put_job_blob("a", b"1").unwrap();
        db.put_job_blob("b", b"2").unwrap();
        db.keep_only_job_blobs(&["a".to_string()]).unwrap();
        assert_eq!(
            db.job_blobs().unwrap(),
            vec![("a".to_string(), b"1".to_vec())]
        );

        assert!(db.remove_workflow("w").unwrap());
        assert!(!db.remove_workflow("w").unwrap());
        assert!(db.workflow_runs("w", 10, None).unwrap().is_empty());
        assert_eq!(db.workflow_runs("other", 10, None).unwrap().len(), 1);
    }
}
