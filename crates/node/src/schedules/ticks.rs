//! Running the ticks the scheduler hands over.
//!
//! Ticks have call slots of their own (`--max-concurrent-ticks`): a burst
//! of ticks never makes clients' calls fail with 503, and clients never
//! starve ticks. A tick that finds no free slot within [`TICK_WAIT`] of
//! being handed over is not queued further: it is recorded as a failed run
//! saying so.
//!
//! A thousand schedules every second make a thousand ticks due at the same
//! moment. A handler's ticks go to one queue, which as many runner tasks as
//! there are tick slots drain, each running one tick at a time. A runner's
//! future is made once, and what a tick allocates is freed on the worker
//! thread that allocated it. (A task spawned per tick by the scheduler's
//! task was allocated on that task's thread and freed on whichever thread
//! ran it. The two worker threads then waited for each other on the
//! allocator's lock, and each tick woken for a slot ran on its waker's
//! thread, so a burst ran on about one core.)
//!
//! In a fleet, a tick runs in a task of its own, as before: it waits for
//! the database to decide its claim, and afterwards to mark the claim done,
//! and a burst's claims reach the database together. A workflow's tick,
//! which takes no slot, runs in a task of its own too.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Schedules;
use crate::components::Call;
use crate::scheduler::{RunningGuard, Schedule, Tick};
use crate::stopping::Going;
use crate::{CallTask, TickId};
use wasmatic_guests::handler::Entry;
use wasmatic_state::Target;
use wasmatic_state::{Claim, ClaimKind, Claimed};

/// How long a tick may wait for a free slot.
const TICK_WAIT: Duration = Duration::from_secs(1);

/// A handler's tick on a node of its own, waiting for a runner.
pub(crate) struct Queued {
    schedule: Schedule,
    scheduled_for: u64,
    /// Clears the schedule's running mark once the tick is done; `None`
    /// when the tick is to be recorded as skipped (the previous run still
    /// goes).
    running: Option<RunningGuard>,
    handed_over: Instant,
    _going: Going,
}

/// Handlers' ticks waiting for a runner, oldest first.
#[derive(Default)]
pub(crate) struct TickQueue {
    waiting: Mutex<VecDeque<Queued>>,
    ready: Notify,
}

impl TickQueue {
    fn push(&self, tick: Queued) {
        self.lock().push_back(tick);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Queued> {
        self.lock().pop_front()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Queued>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A runner: runs the queue's ticks one after another, then waits for more.
async fn runner(node: Weak<Schedules>, queue: Arc<TickQueue>) {
    loop {
        // Listening before looking, so that a tick pushed in between wakes
        // this runner.
        let ready = queue.ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        while let Some(tick) = queue.pop() {
            let Some(node) = node.upgrade() else {
                return;
            };
            node.run_queued(tick).await;
        }
        ready.await;
    }
}

impl Schedules {
    /// Starts the runners of handlers' ticks, one per tick slot, on a node
    /// of its own.
    pub(crate) fn start_tick_runners(self: &Arc<Self>) {
        if self.core.claims.in_fleet() {
            return;
        }
        for _ in 0..self.core.state_limits.max_concurrent_ticks {
            tokio::spawn(runner(Arc::downgrade(self), self.tick_queue.clone()));
        }
    }

    /// Takes a tick from the scheduler: `going` counts it in flight until
    /// it is run, recorded as skipped, or claimed by another node.
    pub(crate) fn fire(self: &Arc<Self>, tick: Tick, going: Going) {
        let (schedule, scheduled_for, running) = match tick {
            Tick::Due {
                schedule,
                scheduled_for,
                running,
            } => (schedule, scheduled_for, Some(running)),
            Tick::Skipped {
                schedule,
                scheduled_for,
            } => (schedule, scheduled_for, None),
        };
        // Workflows with a cron trigger have timers of their own.
        let workflow = Target::of(&schedule.name).workflow().map(str::to_string);
        if workflow.is_none() && !self.core.claims.in_fleet() {
            // On a node of its own, every tick is this node's.
            return self.tick_queue.push(Queued {
                schedule,
                scheduled_for,
                running,
                handed_over: Instant::now(),
                _going: going,
            });
        }
        let claim = Claim {
            what: schedule.id.clone(),
            at: scheduled_for.to_string(),
            name: workflow.clone().unwrap_or_else(|| schedule.name.clone()),
            kind: match workflow {
                Some(_) => ClaimKind::Workflow,
                None => ClaimKind::Schedule,
            },
        };
        let node = self.clone();
        // Boxed: this future is several KB (see `execute`).
        tokio::spawn(Box::pin(async move {
            let skipped = match node.core.claims.claim(&claim, running.is_none()).await {
                Some(Claimed::Won) => false,
                Some(Claimed::Skipped) => true,
                Some(Claimed::Taken) | None => return,
            };
            // A handler's run is recorded by the run log; a workflow's as
            // it runs.
            let via_run_log = match workflow {
                Some(workflow) => {
                    node.workflows
                        .workflow_tick(&workflow, scheduled_for, skipped)
                        .await;
                    false
                }
                None => {
                    node.handler_tick(&schedule, scheduled_for, skipped, TICK_WAIT, CallTask::Own)
                        .await;
                    true
                }
            };
            drop(running);
            node.core
                .claims
                .finish(&claim, via_run_log, &node.core.runs)
                .await;
            drop(going);
        }));
    }

    /// Runs (or records as skipped) a handler's tick from the queue.
    async fn run_queued(&self, tick: Queued) {
        let Queued {
            schedule,
            scheduled_for,
            running,
            handed_over,
            _going,
        } = tick;
        let skipped = running.is_none();
        let wait = TICK_WAIT.saturating_sub(handed_over.elapsed());
        self.handler_tick(&schedule, scheduled_for, skipped, wait, CallTask::Callers)
            .await;
    }

    /// A tick of a handler's schedule: run, or recorded as skipped while
    /// the previous run still goes. It waits at most `wait` for a slot,
    /// and is recorded as not run when none is free by then; its call runs
    /// in `task`.
    async fn handler_tick(
        &self,
        schedule: &Schedule,
        scheduled_for: u64,
        skipped: bool,
        wait: Duration,
        task: CallTask,
    ) {
        let trigger = TickId {
            job_id: schedule.id.clone(),
            scheduled_for,
        };
        if skipped {
            tracing::warn!(schedule = schedule.id, name = schedule.name, "tick skipped");
            self.components
                .record_failure(
                    &schedule.name,
                    Some(&trigger),
                    None,
                    "skipped: the previous run of this schedule was still running",
                )
                .await;
            return;
        }
        let handler = match self.components.runnable_handler(&schedule.name) {
            Ok(handler) => handler,
            Err(e) => {
                tracing::warn!(
                    schedule = schedule.id,
                    name = schedule.name,
                    "scheduled run not started: {e}"
                );
                return;
            }
        };
        // A tick that waited its time for a runner has waited for a slot:
        // each runner holds one while it runs a tick.
        let slot = match wait.is_zero() {
            true => None,
            false => tokio::time::timeout(wait, self.core.ticks.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(permit) = slot else {
            let busy = format!(
                "not run: the node was running {} scheduled runs, its most (--max-concurrent-ticks), for {}s",
                self.core.state_limits.max_concurrent_ticks,
                TICK_WAIT.as_secs()
            );
            tracing::warn!(schedule = schedule.id, name = schedule.name, "{busy}");
            self.components
                .record_failure(&schedule.name, Some(&trigger), None, &busy)
                .await;
            return;
        };
        let run = self.components.run(Call {
            handler,
            entry: Entry::Handler(schedule.input.clone()),
            tick: Some(trigger),
            function: None,
            permit,
            task,
        });
        if let Err(e) = run.await {
            tracing::warn!(
                schedule = schedule.id,
                name = schedule.name,
                "scheduled run failed: {}",
                wasmatic_guests::audit_log::log_safe(&e.to_string())
            );
        }
    }
}
