//! Cron schedules of handlers: adding, removing, listing and restoring
//! them (their ticks run in `ticks.rs`).

mod ticks;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmatic_state::Target;

use crate::blocking;
use crate::components::Components;
use crate::core::Core;
use crate::scheduler::{self, Schedule};
use crate::settings::not_a_handler;
use crate::workflows::Workflows;
use wasmatic_api::NodeError;
use wasmatic_state::now_ms;
use wasmatic_state::{RunPage, ScheduleRecord, Store};

/// Handlers' cron schedules: stored, on the node's timer, and their ticks
/// run (on a node of its own by a few runners; in a fleet, by the node
/// that claims each).
pub struct Schedules {
    pub(crate) core: Arc<Core>,
    components: Arc<Components>,
    workflows: Arc<Workflows>,
    tick_queue: Arc<ticks::TickQueue>,
}

impl Schedules {
    pub(crate) fn new(
        core: Arc<Core>,
        components: Arc<Components>,
        workflows: Arc<Workflows>,
    ) -> Self {
        Schedules {
            core,
            components,
            workflows,
            tick_queue: Default::default(),
        }
    }

    /// Runs handler `name` with `input` at every tick of `cron`.
    pub async fn schedule(
        &self,
        name: &str,
        cron: &str,
        input: &str,
    ) -> Result<Schedule, NodeError> {
        match self.core.registry.get(name) {
            None => return Err(NodeError::NotFound(format!("no handler `{name}`"))),
            Some(h) if h.compiled.handler.is_none() => return Err(not_a_handler(&h.info)),
            Some(_) => {}
        }
        let parsed = scheduler::parse_cron(cron).map_err(NodeError::Invalid)?;
        let _changes = self.core.changes.lock().await;
        let max = self.core.state_limits.max_schedules;
        if self.core.scheduler.count() >= max {
            return Err(NodeError::Busy(format!(
                "the node holds {max} schedules, its most (--max-schedules); remove one first"
            )));
        }
        let created_at = now_ms();
        let record = ScheduleRecord {
            id: new_schedule_id(name, cron, created_at),
            name: name.to_string(),
            cron: cron.trim().to_string(),
            input: input.to_string(),
            created_at,
        };
        let state = self.core.state.clone();
        let stored = record.clone();
        blocking(move || state.insert_schedule(&stored)).await??;
        let schedule = self.core.scheduler.add(record, parsed);
        tracing::info!(
            id = schedule.id,
            name,
            cron = schedule.cron,
            "schedule added"
        );
        Ok(schedule)
    }

    pub async fn unschedule(&self, id: &str) -> Result<(), NodeError> {
        let _changes = self.core.changes.lock().await;
        let state = self.core.state.clone();
        let owned = id.to_string();
        let existed = blocking(move || state.delete_schedule(&owned)).await??;
        self.core.scheduler.remove(id);
        if !existed {
            return Err(NodeError::NotFound(format!("no schedule `{id}`")));
        }
        tracing::info!(id, "schedule removed");
        Ok(())
    }

    /// The schedules of handlers (a workflow's timer is shown with it).
    pub fn schedules(&self) -> Vec<Schedule> {
        let mut schedules = self.core.scheduler.schedules();
        schedules.retain(|s| Target::of(&s.name).workflow().is_none());
        schedules
    }

    /// A page of the runs fired by schedule `id`.
    pub async fn schedule_runs(
        &self,
        id: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, NodeError> {
        let exists = |state: &dyn Store, id: &str| state.schedule_exists(id);
        self.core
            .runs_of_owner("schedule", id, exists, limit, before)
            .await
    }

    /// Puts every stored schedule back on the timer.
    pub(crate) fn restore_schedules(&self) -> anyhow::Result<()> {
        for record in self.core.state.schedules()? {
            match scheduler::parse_stored_cron(&record.cron) {
                Ok(cron) => {
                    self.core.scheduler.add(record, cron);
                }
                Err(e) => tracing::error!(id = record.id, "schedule not restored: {e}"),
            }
        }
        Ok(())
    }
}

fn new_schedule_id(name: &str, cron: &str, created_at: u64) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "{name}\0{cron}\0{created_at}\0{n}\0{}",
        std::process::id()
    ));
    hex::encode(&hasher.finalize()[..8])
}
