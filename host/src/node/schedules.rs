//! Cron schedules of handlers, and running their ticks.
//!
//! Ticks have call slots of their own (`--max-concurrent-ticks`): a burst
//! of ticks never makes clients' calls fail with 503, and clients never
//! starve ticks. A tick that finds no free slot within [`TICK_WAIT`] is not
//! queued further: it is recorded as a failed run saying so.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::settings::not_a_handler;
use super::{blocking, Node, Trigger};
use crate::error::{now_ms, NodeError};
use crate::handler::Entry;
use crate::scheduler::{self, Job, Tick};
use crate::state::{Claim, ClaimKind, Claimed, JobRecord, RunPage, StateError};

/// How long a tick may wait for a free slot.
const TICK_WAIT: Duration = Duration::from_secs(1);

impl Node {
    /// Runs handler `name` with `input` at every tick of `cron`.
    pub async fn schedule(&self, name: &str, cron: &str, input: &str) -> Result<Job, NodeError> {
        match self.registry.get(name) {
            None => return Err(NodeError::NotFound(format!("no handler `{name}`"))),
            Some(h) if h.compiled.handler.is_none() => return Err(not_a_handler(&h.info)),
            Some(_) => {}
        }
        let parsed = scheduler::parse_cron(cron).map_err(NodeError::Invalid)?;
        let _changes = self.changes.lock().await;
        let max = self.state_limits.max_schedules;
        if self.scheduler.count() >= max {
            return Err(NodeError::Busy(format!(
                "the node holds {max} schedules, its most (--max-schedules); remove one first"
            )));
        }
        let created_at = now_ms();
        let record = JobRecord {
            id: new_job_id(name, cron, created_at),
            name: name.to_string(),
            cron: cron.trim().to_string(),
            input: input.to_string(),
            created_at,
        };
        let state = self.state.clone();
        let stored = record.clone();
        blocking(move || state.insert_job(&stored)).await??;
        let job = self.scheduler.add(record, parsed);
        tracing::info!(id = job.id, name, cron = job.cron, "schedule added");
        Ok(job)
    }

    pub async fn unschedule(&self, id: &str) -> Result<(), NodeError> {
        let _changes = self.changes.lock().await;
        let state = self.state.clone();
        let owned = id.to_string();
        let existed = blocking(move || state.delete_job(&owned)).await??;
        self.scheduler.remove(id);
        if !existed {
            return Err(NodeError::NotFound(format!("no schedule `{id}`")));
        }
        tracing::info!(id, "schedule removed");
        Ok(())
    }

    /// The schedules of handlers (a workflow's timer is shown with it).
    pub fn jobs(&self) -> Vec<Job> {
        let mut jobs = self.scheduler.jobs();
        jobs.retain(|j| !j.name.starts_with(super::workflows::WORKFLOW_PREFIX));
        jobs
    }

    /// A page of the runs fired by schedule `id`.
    pub async fn job_runs(
        &self,
        id: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, NodeError> {
        self.runs.flushed().await;
        let state = self.state.clone();
        let owned = id.to_string();
        let limit = limit.clamp(1, super::components::MAX_PAGE);
        let (exists, page) = blocking(move || {
            Ok::<_, StateError>((
                state.job_exists(&owned)?,
                state.runs_of_job(&owned, limit, before)?,
            ))
        })
        .await??;
        if !exists && page.runs.is_empty() {
            return Err(NodeError::NotFound(format!("no schedule `{id}`")));
        }
        Ok(page)
    }

    /// Puts every stored schedule back on the timer.
    pub(super) fn restore_schedules(&self) -> anyhow::Result<()> {
        for record in self.state.jobs()? {
            match scheduler::parse_cron(&record.cron) {
                Ok(cron) => {
                    self.scheduler.add(record, cron);
                }
                Err(e) => tracing::error!(id = record.id, "schedule not restored: {e}"),
            }
        }
        Ok(())
    }

    /// Runs (or records as skipped) one tick of a schedule. In a fleet,
    /// every node's timer fires it and the node that claims it runs it.
    pub(super) async fn tick(&self, tick: Tick) {
        let (job, scheduled_for, running) = match tick {
            Tick::Due {
                job,
                scheduled_for,
                running,
            } => (job, scheduled_for, Some(running)),
            Tick::Skipped { job, scheduled_for } => (job, scheduled_for, None),
        };
        // Workflows with a cron trigger have timers of their own.
        let workflow = job
            .name
            .strip_prefix(super::workflows::WORKFLOW_PREFIX)
            .map(str::to_string);
        let claim = Claim {
            what: job.id.clone(),
            at: scheduled_for.to_string(),
            name: workflow.clone().unwrap_or_else(|| job.name.clone()),
            kind: match workflow {
                Some(_) => ClaimKind::Workflow,
                None => ClaimKind::Schedule,
            },
        };
        let skipped = match self.claim(&claim, running.is_none()).await {
            Some(Claimed::Won) => false,
            Some(Claimed::Skipped) => true,
            Some(Claimed::Taken) | None => return,
        };
        // A handler's run is recorded by the run log; a workflow's as it
        // runs.
        let via_run_log = match workflow {
            Some(workflow) => {
                self.workflow_tick(&workflow, scheduled_for, skipped).await;
                false
            }
            None => {
                self.handler_tick(&job, scheduled_for, skipped).await;
                true
            }
        };
        drop(running);
        self.finish(&claim, via_run_log).await;
    }

    /// A tick of a handler's schedule: run, or recorded as skipped while
    /// the previous run still goes.
    async fn handler_tick(&self, job: &Job, scheduled_for: u64, skipped: bool) {
        let trigger = Trigger {
            job_id: job.id.clone(),
            scheduled_for,
        };
        if skipped {
            tracing::warn!(job = job.id, name = job.name, "tick skipped");
            self.record_failure(
                &job.name,
                Some(&trigger),
                None,
                "skipped: the previous run of this job was still running",
            )
            .await;
            return;
        }
        let handler = match self.runnable_handler(&job.name) {
            Ok(handler) => handler,
            Err(e) => {
                tracing::warn!(
                    job = job.id,
                    name = job.name,
                    "scheduled run not started: {e}"
                );
                return;
            }
        };
        let slot = tokio::time::timeout(TICK_WAIT, self.ticks.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = slot else {
            let busy = format!(
                "not run: the node was running {} scheduled runs, its most (--max-concurrent-ticks), for {}s",
                self.state_limits.max_concurrent_ticks,
                TICK_WAIT.as_secs()
            );
            tracing::warn!(job = job.id, name = job.name, "{busy}");
            self.record_failure(&job.name, Some(&trigger), None, &busy)
                .await;
            return;
        };
        let entry = Entry::Handler(job.input.clone());
        if let Err(e) = self.run(handler, entry, Some(trigger), None, permit).await {
            tracing::warn!(job = job.id, name = job.name, "scheduled run failed: {e}");
        }
    }
}

fn new_job_id(name: &str, cron: &str, created_at: u64) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "{name}\0{cron}\0{created_at}\0{n}\0{}",
        std::process::id()
    ));
    hex::encode(&hasher.finalize()[..8])
}
