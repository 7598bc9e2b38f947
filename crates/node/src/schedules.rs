//! Cron schedules of handlers: adding, removing, listing and restoring
//! them (their ticks run in `ticks.rs`).

use sha2::{Digest, Sha256};
use wasmatic_state::Target;

use super::settings::not_a_handler;
use super::{blocking, Node};
use crate::scheduler::{self, Schedule};
use wasmatic_api::NodeError;
use wasmatic_state::now_ms;
use wasmatic_state::{RunPage, ScheduleRecord, StateError, Store};

impl Node {
    /// Runs handler `name` with `input` at every tick of `cron`.
    pub async fn schedule(
        &self,
        name: &str,
        cron: &str,
        input: &str,
    ) -> Result<Schedule, NodeError> {
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
        let record = ScheduleRecord {
            id: new_schedule_id(name, cron, created_at),
            name: name.to_string(),
            cron: cron.trim().to_string(),
            input: input.to_string(),
            created_at,
        };
        let state = self.state.clone();
        let stored = record.clone();
        blocking(move || state.insert_schedule(&stored)).await??;
        let schedule = self.scheduler.add(record, parsed);
        tracing::info!(
            id = schedule.id,
            name,
            cron = schedule.cron,
            "schedule added"
        );
        Ok(schedule)
    }

    pub async fn unschedule(&self, id: &str) -> Result<(), NodeError> {
        let _changes = self.changes.lock().await;
        let state = self.state.clone();
        let owned = id.to_string();
        let existed = blocking(move || state.delete_schedule(&owned)).await??;
        self.scheduler.remove(id);
        if !existed {
            return Err(NodeError::NotFound(format!("no schedule `{id}`")));
        }
        tracing::info!(id, "schedule removed");
        Ok(())
    }

    /// The schedules of handlers (a workflow's timer is shown with it).
    pub fn schedules(&self) -> Vec<Schedule> {
        let mut schedules = self.scheduler.schedules();
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
        self.runs_of_owner("schedule", id, exists, limit, before)
            .await
    }

    /// A page of the runs recorded under `id` (a schedule's or a chain
    /// trigger's), once the runs still queued are written. Not found when
    /// `exists` says the `kind` is gone and no runs of it are left: runs of
    /// a removed owner stay readable until they are pruned.
    pub(crate) async fn runs_of_owner(
        &self,
        kind: &str,
        id: &str,
        exists: fn(&dyn Store, &str) -> Result<bool, StateError>,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, NodeError> {
        self.runs.readable().await;
        let state = self.state.clone();
        let owned = id.to_string();
        let limit = limit.clamp(1, super::components::MAX_PAGE);
        let (exists, page) = blocking(move || {
            Ok::<_, StateError>((
                exists(&*state, &owned)?,
                state.runs_of_schedule(&owned, limit, before)?,
            ))
        })
        .await??;
        if !exists && page.runs.is_empty() {
            return Err(NodeError::NotFound(format!("no {kind} `{id}`")));
        }
        Ok(page)
    }

    /// Puts every stored schedule back on the timer.
    pub(super) fn restore_schedules(&self) -> anyhow::Result<()> {
        for record in self.state.schedules()? {
            match scheduler::parse_stored_cron(&record.cron) {
                Ok(cron) => {
                    self.scheduler.add(record, cron);
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
