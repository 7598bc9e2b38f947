//! Stored workflows and their run history.
//!
//! A workflow is kept as the JSON text of its definition, checked when it
//! was posted; registering the name again replaces the definition and keeps
//! the history. Each run is one row with its steps as JSON, and the history
//! is bounded: a workflow's oldest runs go past [`RUNS_KEPT_PER_WORKFLOW`],
//! and the oldest of all workflows past the node's bounds on runs in all,
//! by count and by bytes. Runs are read in pages bounded in bytes.

use rusqlite::{params, OptionalExtension, Row};

use super::Sqlite;
use crate::{
    keep_workflow_runs_args, page_end, to_sql, RunBounds, SecretInfo, SecretStore, StateError,
    WorkflowRecord, WorkflowRun, WorkflowRunPage, WorkflowStore, KEEP_WORKFLOW_RUNS_WITHIN,
    RUNS_KEPT_PER_WORKFLOW,
};

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

impl WorkflowStore for Sqlite {
    fn put_workflow(&self, name: &str, definition: &str, now: u64) -> Result<(), StateError> {
        self.write().execute(
            "INSERT INTO workflows (name, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
            params![name, definition, to_sql(now)],
        )?;
        Ok(())
    }

    fn workflow(&self, name: &str) -> Result<Option<WorkflowRecord>, StateError> {
        Ok(self
            .read()
            .query_row(
                "SELECT name, definition, created_at, updated_at FROM workflows WHERE name = ?1",
                [name],
                record_of,
            )
            .optional()?)
    }

    fn workflows(&self) -> Result<Vec<WorkflowRecord>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT name, definition, created_at, updated_at FROM workflows ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], record_of)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn remove_workflow(&self, name: &str) -> Result<bool, StateError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let existed = tx.execute("DELETE FROM workflows WHERE name = ?1", [name])? > 0;
        tx.execute("DELETE FROM workflow_runs WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(existed)
    }

    fn record_workflow_run(&self, run: &WorkflowRun, bounds: RunBounds) -> Result<u64, StateError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO workflow_runs (name, cause, started_at, duration_ms, ok, trigger, steps, result, error, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                run.name,
                run.cause,
                to_sql(run.started_at),
                to_sql(run.duration_ms),
                run.ok,
                run.trigger,
                run.steps,
                run.result,
                run.error,
                to_sql(run.size()),
            ],
        )?;
        let id = tx.last_insert_rowid() as u64;
        tx.execute(
            "DELETE FROM workflow_runs WHERE name = ?1 AND id <= (
                 SELECT id FROM workflow_runs WHERE name = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![run.name, RUNS_KEPT_PER_WORKFLOW],
        )?;
        // The oldest runs of all workflows past the bounds go, never this one.
        tx.execute(
            KEEP_WORKFLOW_RUNS_WITHIN,
            keep_workflow_runs_args(bounds, id),
        )?;
        tx.commit()?;
        Ok(id)
    }

    fn finish_workflow_run(&self, run: &WorkflowRun, bounds: RunBounds) -> Result<(), StateError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE workflow_runs SET duration_ms = ?2, ok = ?3, steps = ?4, result = ?5, error = ?6,
                 bytes = ?7
             WHERE id = ?1",
            params![
                to_sql(run.id),
                to_sql(run.duration_ms),
                run.ok,
                run.steps,
                run.result,
                run.error,
                to_sql(run.size()),
            ],
        )?;
        tx.execute(
            KEEP_WORKFLOW_RUNS_WITHIN,
            keep_workflow_runs_args(bounds, run.id),
        )?;
        tx.commit()?;
        Ok(())
    }

    fn put_job_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.write().execute(
            "INSERT OR IGNORE INTO job_blobs (digest, bytes) VALUES (?1, ?2)",
            params![digest, bytes],
        )?;
        Ok(())
    }

    fn keep_only_job_blobs(&self, keep: &[String]) -> Result<(), StateError> {
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

    fn job_blobs(&self) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT digest, bytes FROM job_blobs")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn workflow_runs(
        &self,
        name: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<WorkflowRunPage, StateError> {
        let conn = self.read();
        // The sizes first (one more than asked tells whether a next page
        // exists), then only the runs of the page.
        let sizes = conn
            .prepare(
                "SELECT id, bytes FROM workflow_runs WHERE name = ?1 AND id < ?2
                 ORDER BY id DESC LIMIT ?3",
            )?
            .query_map(
                params![
                    name,
                    to_sql(before.unwrap_or(u64::MAX)),
                    i64::from(limit) + 1
                ],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let (Some((newest, oldest)), next) = page_end(&sizes, limit) else {
            return Ok(WorkflowRunPage::default());
        };
        let runs = conn
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE name = ?1 AND id <= ?2 AND id >= ?3
                 ORDER BY id DESC"
            ))?
            .query_map(params![name, to_sql(newest), to_sql(oldest)], run_of)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WorkflowRunPage { runs, next })
    }
}

impl SecretStore for Sqlite {
    fn put_secret(&self, name: &str, value: &str, now: u64) -> Result<bool, StateError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let existed = tx
            .prepare("SELECT 1 FROM secrets WHERE name = ?1")?
            .exists([name])?;
        tx.execute(
            "INSERT INTO secrets (name, value, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![name, value, to_sql(now)],
        )?;
        tx.commit()?;
        Ok(!existed)
    }

    fn remove_secret(&self, name: &str) -> Result<bool, StateError> {
        Ok(self
            .write()
            .execute("DELETE FROM secrets WHERE name = ?1", [name])?
            > 0)
    }

    fn secrets(&self) -> Result<Vec<SecretInfo>, StateError> {
        let conn = self.read();
        let mut stmt =
            conn.prepare("SELECT name, created_at, updated_at FROM secrets ORDER BY name")?;
        let rows = stmt
            .query_map([], |row| {
                Ok(SecretInfo {
                    name: row.get(0)?,
                    created_at: row.get::<_, i64>(1)? as u64,
                    updated_at: row.get::<_, i64>(2)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn secret_values(
        &self,
        names: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT value FROM secrets WHERE name = ?1")?;
        let mut values = std::collections::BTreeMap::new();
        for name in names {
            if let Some(value) = stmt
                .query_row([name], |row| row.get::<_, String>(0))
                .optional()?
            {
                values.insert(name.clone(), value);
            }
        }
        Ok(values)
    }
}
