//! Claims and leases: each tick or event runs on one node of the fleet, and
//! the runs of a node that stopped are recorded as lost, once.
//!
//! A claim is a row keyed on (what, at): of the nodes that insert it, one
//! succeeds. Each node renews its lease (`nodes.seen_at`) by heartbeat; the
//! running claims of a node whose lease ran out are marked lost by
//! whichever node sweeps first, in the transaction that records each as a
//! failed run. Every time is the database's: the nodes' clocks never meet.

use crate::Target;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::runs::{insert_runs_in, Totals};
use super::workflows::record_run_in;
use super::{from_sql, Fault, Postgres};
use crate::{ChangeFeed, Claim, Claimed, Fleet, RunRecord, StateError, WorkflowRun};

/// How long finished claims and silent nodes are kept: long past any
/// tick's or event's retry, short enough that the tables stay small.
const KEPT: &str = "1 hour";

/// The error a workflow run is recorded with while it goes (the node's
/// workflows write it as a run starts).
const STILL_RUNNING: &[u8] = b"still running";

/// How far a node's clock (which times a workflow run's start) may lag
/// the database's (which times the claim) for the run to be found.
const CLOCK_SLACK_MS: i64 = 5_000;

/// Renews `node`'s lease.
pub(super) async fn heartbeat_on(client: &tokio_postgres::Client, node: &str) -> Result<(), Fault> {
    client
        .execute(
            "INSERT INTO nodes (id, seen_at) VALUES ($1, now())
             ON CONFLICT (id) DO UPDATE SET seen_at = now()",
            &[&node],
        )
        .await?;
    Ok(())
}

impl Fleet for Postgres {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    /// One statement for the whole batch: each claim is inserted unless
    /// another node's is there, and is inserted as skipped when this node
    /// says so or, for a cron tick, when a claim of the same `what` still
    /// runs (on any node: its winner records the tick as skipped, once).
    /// Chain events are not skipped: they run in order, each once.
    fn claim_all(&self, claims: &[(Claim, bool)]) -> Result<Vec<Claimed>, StateError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let column =
            |f: fn(&Claim) -> &str| -> Vec<&str> { claims.iter().map(|(c, _)| f(c)).collect() };
        let (what, at, name) = (column(|c| &c.what), column(|c| &c.at), column(|c| &c.name));
        let kind: Vec<&str> = claims.iter().map(|(c, _)| c.kind.as_str()).collect();
        let skipped: Vec<bool> = claims.iter().map(|(_, s)| *s).collect();
        let tick: Vec<bool> = claims
            .iter()
            .map(|(c, _)| event_cursor(&c.at).is_none())
            .collect();
        let rows = self.wait("claiming runs", async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO claims (what, at, kind, name, node, state)
                     SELECT c.what, c.at, c.kind, c.name, $5,
                         CASE WHEN c.skipped OR (c.tick AND EXISTS (
                                  SELECT 1 FROM claims r WHERE r.what = c.what AND r.state = 'running'))
                              THEN 'skipped' ELSE 'running' END
                     FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $6::BOOLEAN[], $7::BOOLEAN[])
                          AS c (what, at, kind, name, skipped, tick)
                     ON CONFLICT (what, at) DO NOTHING
                     RETURNING what, at, state",
                )
                .await?;
            Ok(client
                .query(&statement, &[&what, &at, &kind, &name, &self.node_id, &skipped, &tick])
                .await?)
        })?;
        let mut won: std::collections::HashMap<(&str, &str), &str> = rows
            .iter()
            .map(|r| {
                (
                    (r.get::<_, &str>(0), r.get::<_, &str>(1)),
                    r.get::<_, &str>(2),
                )
            })
            .collect();
        // A claim given twice in one batch is won once: the first takes it.
        Ok(claims
            .iter()
            .map(
                |(c, _)| match won.remove(&(c.what.as_str(), c.at.as_str())) {
                    None => Claimed::Taken,
                    Some("running") => Claimed::Won,
                    Some(_) => Claimed::Skipped,
                },
            )
            .collect())
    }

    fn finish_all(&self, done: &[(String, String)], recorded: bool) -> Result<(), StateError> {
        if done.is_empty() {
            return Ok(());
        }
        let what: Vec<&str> = done.iter().map(|(w, _)| w.as_str()).collect();
        let at: Vec<&str> = done.iter().map(|(_, a)| a.as_str()).collect();
        self.wait("finishing claims", async {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE claims SET state = CASE WHEN $4 THEN 'done' ELSE 'ran' END
                     FROM UNNEST($1::TEXT[], $2::TEXT[]) AS d (what, at)
                     WHERE claims.what = d.what AND claims.at = d.at
                       AND claims.node = $3 AND claims.state IN ('running', 'ran')",
                    &[&what, &at, &self.node_id, &recorded],
                )
                .await?;
            Ok(())
        })
    }

    fn heartbeat(&self) -> Result<(), StateError> {
        self.wait("renewing this node's lease", async {
            let client = self.client().await?;
            heartbeat_on(&client, &self.node_id).await
        })
    }

    /// One transaction: the running claims past their node's lease become
    /// lost (a node sweeping at the same time waits on their rows and then
    /// finds them no longer running), each recorded as a failed run.
    fn sweep(&self, lease: Duration) -> Result<u64, StateError> {
        self.wait("sweeping lost claims", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let lost = tx
                .query(
                    "UPDATE claims c SET state = 'lost'
                     FROM (SELECT c2.what, c2.at, COALESCE(n.seen_at, c2.claimed_at) AS seen
                           FROM claims c2 LEFT JOIN nodes n ON n.id = c2.node
                           WHERE c2.state IN ('running', 'ran')) l
                     WHERE c.what = l.what AND c.at = l.at AND c.state IN ('running', 'ran')
                       AND l.seen < now() - make_interval(secs => $1)
                     RETURNING c.what, c.at, c.kind, c.name, c.node,
                         FLOOR(EXTRACT(EPOCH FROM c.claimed_at) * 1000)::BIGINT,
                         FLOOR(EXTRACT(EPOCH FROM now() - l.seen))::BIGINT,
                         FLOOR(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT",
                    &[&lease.as_secs_f64()],
                )
                .await?;
            let mut totals = None;
            for row in &lost {
                let claim = Lost {
                    what: row.get(0),
                    at: row.get(1),
                    name: row.get(3),
                    claimed_at: row.get(5),
                    now: row.get(7),
                    error: format!(
                        "lost: node {} stopped during the run (no heartbeat for {}s)",
                        row.get::<_, &str>(4),
                        row.get::<_, i64>(6)
                    ),
                };
                // A node that recorded the run and stopped before it marked
                // its claim done: the run is there, and is not lost.
                if claim.recorded(&tx).await? {
                    continue;
                }
                match row.get::<_, &str>(2) {
                    "workflow" => claim.record_workflow_run(&tx).await?,
                    kind => {
                        if totals.is_none() {
                            totals = Some(Totals::lock(&tx).await?);
                        }
                        if let Some(totals) = totals.as_mut() {
                            let run = claim.run(kind == "schedule");
                            insert_runs_in(&tx, &[run], None, totals).await?;
                        }
                    }
                }
            }
            if let Some(totals) = totals {
                totals.save(&tx).await?;
            }
            // The cursor of a trigger moves past a lost event with its
            // record, as it would have with its run: the event is not run
            // again, and the trigger goes on with the next.
            for row in &lost {
                if let Some(cursor) = event_cursor(row.get(1)) {
                    tx.execute(
                        "UPDATE triggers SET cursor_block = $2, cursor_log = $3
                         WHERE id = $1 AND (cursor_block, cursor_log) < ($2, $3)",
                        &[&row.get::<_, &str>(0), &cursor.0, &cursor.1],
                    )
                    .await?;
                }
            }
            tx.execute(
                &format!(
                    "DELETE FROM claims WHERE state NOT IN ('running', 'ran') AND claimed_at < now() - interval '{KEPT}'"
                ),
                &[],
            )
            .await?;
            tx.execute(
                &format!("DELETE FROM nodes WHERE seen_at < now() - interval '{KEPT}'"),
                &[],
            )
            .await?;
            tx.commit().await?;
            Ok(lost.len() as u64)
        })
    }

    fn changes(&self) -> Arc<ChangeFeed> {
        self.changes.clone()
    }
}

/// A claim found lost, as its run is recorded.
struct Lost<'a> {
    what: &'a str,
    at: &'a str,
    name: &'a str,
    /// Database times, in ms.
    claimed_at: i64,
    now: i64,
    error: String,
}

/// The trigger cursor just past a chain event's claim (`BLOCK:LOG`).
fn event_cursor(at: &str) -> Option<(i64, i64)> {
    let (block, log) = at.split_once(':')?;
    Some((block.parse().ok()?, log.parse().ok()?))
}

impl Lost<'_> {
    /// Whether the run of this claim is recorded already: a schedule's tick
    /// has its run; a chain event's trigger cursor has moved past it (the
    /// cursor moves with the event's run, in one transaction); a workflow's
    /// tick has a finished run since the claim.
    async fn recorded(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<bool, Fault> {
        let row = if let Some((block, log)) = event_cursor(self.at) {
            tx.query_opt(
                "SELECT 1 FROM triggers WHERE id = $1 AND (cursor_block, cursor_log) >= ($2, $3)",
                &[&self.what, &block, &log],
            )
            .await?
        } else if let Ok(tick) = self.at.parse::<i64>() {
            if Target::of(self.what).workflow().is_some() {
                tx.query_opt(
                    "SELECT 1 FROM workflow_runs WHERE name = $1 AND cause = 'cron'
                         AND started_at >= $2 AND error IS DISTINCT FROM $3",
                    &[
                        &self.name,
                        &(self.claimed_at - CLOCK_SLACK_MS),
                        &STILL_RUNNING,
                    ],
                )
                .await?
            } else {
                tx.query_opt(
                    "SELECT 1 FROM runs WHERE job_id = $1 AND scheduled_for = $2",
                    &[&self.what, &tick],
                )
                .await?
            }
        } else {
            None
        };
        Ok(row.is_some())
    }

    /// The failed run of a schedule's tick or a trigger's event, recorded as
    /// the node records theirs: under the schedule's or trigger's id, with
    /// the tick's time for a schedule.
    fn run(&self, schedule: bool) -> RunRecord {
        RunRecord {
            id: 0,
            name: self.name.to_string(),
            function: None,
            job_id: Some(self.what.to_string()),
            scheduled_for: if schedule { self.at.parse().ok() } else { None },
            started_at: from_sql(self.claimed_at),
            duration_ms: from_sql(self.now - self.claimed_at),
            ok: false,
            output: None,
            error: Some(self.error.clone()),
            stdout: String::new(),
            stderr: String::new(),
            audit: Vec::new(),
            rpc: Vec::new(),
        }
    }

    /// A workflow's run: the lost node recorded it as it started, so that
    /// row (the newest still running since the claim, of the claim's
    /// cause: a tick's or an event's) gets the outcome; failing that, while
    /// the workflow exists, a run is recorded.
    async fn record_workflow_run(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), Fault> {
        // A tick is at a time in ms; a chain event at `BLOCK:LOG`.
        let (cause, trigger) = match self.at.parse::<u64>() {
            Ok(tick) => ("cron", json!({ "scheduled_for": tick })),
            Err(_) => ("chain", json!({ "event": self.at })),
        };
        let finished = tx
            .execute(
                "UPDATE workflow_runs SET ok = false, error = $4,
                     duration_ms = GREATEST($5 - started_at, 0)
                 WHERE id = (SELECT id FROM workflow_runs
                             WHERE name = $1 AND cause = $2 AND error = $6 AND started_at >= $3
                             ORDER BY id DESC LIMIT 1)",
                &[
                    &self.name,
                    &cause,
                    &(self.claimed_at - CLOCK_SLACK_MS),
                    &self.error.as_bytes(),
                    &self.now,
                    &STILL_RUNNING,
                ],
            )
            .await?;
        if finished > 0 {
            return Ok(());
        }
        let exists = tx
            .query_opt("SELECT 1 FROM workflows WHERE name = $1", &[&self.name])
            .await?
            .is_some();
        if !exists {
            return Ok(());
        }
        let run = WorkflowRun {
            id: 0,
            name: self.name.to_string(),
            cause: cause.to_string(),
            started_at: from_sql(self.claimed_at),
            duration_ms: from_sql(self.now - self.claimed_at),
            ok: false,
            trigger: trigger.to_string(),
            steps: "[]".to_string(),
            result: None,
            error: Some(self.error.clone()),
        };
        record_run_in(tx, &run).await?;
        Ok(())
    }
}
