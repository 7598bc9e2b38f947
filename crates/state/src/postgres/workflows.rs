//! Stored workflows and their run history, as in SQLite: the definition's
//! JSON text, one row per run, a workflow's oldest runs going past
//! [`RUNS_KEPT_PER_WORKFLOW`] and the oldest of all past the node's bounds
//! on runs in all; pages bounded in bytes. A changed definition is
//! announced to the fleet, whose nodes then reinstall its trigger.

use tokio_postgres::Row;

use super::listen::announce;
use super::{from_sql, opt_text_of, page_span, to_sql, Fault, Postgres};
use crate::{
    keep_workflow_runs_args, Change, RunBounds, SecretInfo, SecretStore, StateError,
    WorkflowRecord, WorkflowRun, WorkflowRunPage, WorkflowStore, KEEP_WORKFLOW_RUNS_WITHIN,
    RUNS_KEPT_PER_WORKFLOW,
};

fn record_of(row: &Row) -> WorkflowRecord {
    WorkflowRecord {
        name: row.get(0),
        definition: row.get(1),
        created_at: from_sql(row.get(2)),
        updated_at: from_sql(row.get(3)),
    }
}

fn run_of(row: &Row) -> Result<WorkflowRun, Fault> {
    Ok(WorkflowRun {
        id: from_sql(row.get(0)),
        name: row.get(1),
        cause: row.get(2),
        started_at: from_sql(row.get(3)),
        duration_ms: from_sql(row.get(4)),
        ok: row.get(5),
        trigger: row.get(6),
        steps: row.get(7),
        result: row.get(8),
        error: opt_text_of("error", row.get(9))?,
    })
}

const RUN_COLUMNS: &str =
    "id, name, cause, started_at, duration_ms, ok, trigger, steps, result, error";

/// Records `run` within `tx` and drops the workflow's oldest runs past the
/// bound; answers the run's id. Shared with the sweep of lost claims.
pub(super) async fn record_run_in(
    tx: &tokio_postgres::Transaction<'_>,
    run: &WorkflowRun,
) -> Result<u64, Fault> {
    let id: i64 = tx
        .query_one(
            "INSERT INTO workflow_runs (name, cause, started_at, duration_ms, ok, trigger, steps,
                                        result, error, bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            &[
                &run.name,
                &run.cause,
                &to_sql(run.started_at),
                &to_sql(run.duration_ms),
                &run.ok,
                &run.trigger,
                &run.steps,
                &run.result,
                &run.error.as_deref().map(str::as_bytes),
                &to_sql(run.size()),
            ],
        )
        .await?
        .get(0);
    tx.execute(
        "DELETE FROM workflow_runs WHERE name = $1 AND id <= (
             SELECT id FROM workflow_runs WHERE name = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        &[&run.name, &i64::from(RUNS_KEPT_PER_WORKFLOW)],
    )
    .await?;
    Ok(from_sql(id))
}

/// Drops the oldest workflow runs past `bounds`, in count and in bytes,
/// never run `keep` (one being recorded).
async fn keep_within(
    tx: &tokio_postgres::Transaction<'_>,
    bounds: RunBounds,
    keep: u64,
) -> Result<(), Fault> {
    let [total, total_bytes, keep] = keep_workflow_runs_args(bounds, keep);
    tx.execute(KEEP_WORKFLOW_RUNS_WITHIN, &[&total, &total_bytes, &keep])
        .await?;
    Ok(())
}

impl WorkflowStore for Postgres {
    fn put_workflow(&self, name: &str, definition: &str, now: u64) -> Result<(), StateError> {
        self.wait("storing a workflow", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO workflows (name, definition, created_at, updated_at)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                     updated_at = excluded.updated_at",
                &[&name, &definition, &to_sql(now)],
            )
            .await?;
            announce(&tx, &self.node_id, &[Change::Workflows]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn workflow(&self, name: &str) -> Result<Option<WorkflowRecord>, StateError> {
        self.wait("reading a workflow", async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT name, definition, created_at, updated_at FROM workflows WHERE name = $1",
                    &[&name],
                )
                .await?;
            Ok(row.as_ref().map(record_of))
        })
    }

    fn workflows(&self) -> Result<Vec<WorkflowRecord>, StateError> {
        self.wait("reading the workflows", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT name, definition, created_at, updated_at FROM workflows ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(record_of).collect())
        })
    }

    fn remove_workflow(&self, name: &str) -> Result<bool, StateError> {
        self.wait("removing a workflow", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let existed = tx
                .execute("DELETE FROM workflows WHERE name = $1", &[&name])
                .await?
                > 0;
            tx.execute("DELETE FROM workflow_runs WHERE name = $1", &[&name])
                .await?;
            announce(&tx, &self.node_id, &[Change::Workflows]).await?;
            tx.commit().await?;
            Ok(existed)
        })
    }

    fn record_workflow_run(&self, run: &WorkflowRun, bounds: RunBounds) -> Result<u64, StateError> {
        self.wait("recording a workflow run", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let id = record_run_in(&tx, run).await?;
            keep_within(&tx, bounds, id).await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    fn finish_workflow_run(&self, run: &WorkflowRun, bounds: RunBounds) -> Result<(), StateError> {
        self.wait("recording a workflow run's outcome", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "UPDATE workflow_runs SET duration_ms = $2, ok = $3, steps = $4, result = $5,
                     error = $6, bytes = $7
                 WHERE id = $1",
                &[
                    &to_sql(run.id),
                    &to_sql(run.duration_ms),
                    &run.ok,
                    &run.steps,
                    &run.result,
                    &run.error.as_deref().map(str::as_bytes),
                    &to_sql(run.size()),
                ],
            )
            .await?;
            keep_within(&tx, bounds, run.id).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn put_job_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.wait("storing a workflow's job", async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO job_blobs (digest, bytes) VALUES ($1, $2)
                     ON CONFLICT (digest) DO NOTHING",
                    &[&digest, &bytes],
                )
                .await?;
            Ok(())
        })
    }

    fn keep_only_job_blobs(&self, keep: &[String]) -> Result<(), StateError> {
        self.wait("dropping unused workflow jobs", async {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM job_blobs WHERE NOT (digest = ANY($1))",
                    &[&keep],
                )
                .await?;
            Ok(())
        })
    }

    fn job_blobs(&self) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        self.wait("reading workflow jobs", async {
            let client = self.client().await?;
            let rows = client
                .query("SELECT digest, bytes FROM job_blobs ORDER BY digest", &[])
                .await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn workflow_runs(
        &self,
        name: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<WorkflowRunPage, StateError> {
        self.wait("reading workflow runs", async {
            let client = self.client().await?;
            let page = page_span(&client, "workflow_runs", "name", name, limit, before).await?;
            let (Some((newest, oldest)), next) = page else {
                return Ok(WorkflowRunPage::default());
            };
            let rows = client
                .query(
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM workflow_runs
                         WHERE name = $1 AND id <= $2 AND id >= $3 ORDER BY id DESC"
                    ),
                    &[&name, &newest, &oldest],
                )
                .await?;
            let runs = rows.iter().map(run_of).collect::<Result<_, _>>()?;
            Ok(WorkflowRunPage { runs, next })
        })
    }
}

impl SecretStore for Postgres {
    fn put_secret(&self, name: &str, value: &str, now: u64) -> Result<bool, StateError> {
        self.wait("storing a secret", async {
            let client = self.client().await?;
            // `xmax = 0` holds for a row this statement inserted.
            let row = client
                .query_one(
                    "INSERT INTO secrets (name, value, created_at, updated_at)
                     VALUES ($1, $2, $3, $3)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                         updated_at = excluded.updated_at
                     RETURNING (xmax = 0)",
                    &[&name, &value, &to_sql(now)],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    fn remove_secret(&self, name: &str) -> Result<bool, StateError> {
        self.wait("removing a secret", async {
            let client = self.client().await?;
            Ok(client
                .execute("DELETE FROM secrets WHERE name = $1", &[&name])
                .await?
                > 0)
        })
    }

    fn secrets(&self) -> Result<Vec<SecretInfo>, StateError> {
        self.wait("reading secrets", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT name, created_at, updated_at FROM secrets ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| SecretInfo {
                    name: row.get(0),
                    created_at: from_sql(row.get(1)),
                    updated_at: from_sql(row.get(2)),
                })
                .collect())
        })
    }

    fn secret_values(
        &self,
        names: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, StateError> {
        self.wait("reading secrets", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT name, value FROM secrets WHERE name = ANY($1)",
                    &[&names],
                )
                .await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }
}
