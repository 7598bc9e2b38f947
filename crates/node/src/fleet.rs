//! A node in a fleet: several nodes sharing one state (`--state
//! postgres://…`).
//!
//! Every node serves every route, so each keeps in memory what the shared
//! state holds: another node's change is announced (`Fleet::changes`) and
//! this node catches up with it — components compiled from the shared
//! bytes into its own cache, schedules put on its own timer, trigger tasks
//! started, workflows' timers and jobs installed. A catch-up also runs every
//! [`CATCH_UP_EVERY`], in case an announcement was missed.
//!
//! Every node's timer fires every tick and every node's trigger task sees
//! every chain event; which node runs it is decided by a claim in the
//! shared state ([`crate::claims`]). A node renews its lease every
//! [`HEARTBEAT`]; the running claims of a node silent for [`LEASE`] are
//! recorded as lost by the first node that sweeps them.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::blocking;
use crate::components::Components;
use crate::core::Core;
use crate::scheduler;
use crate::triggers::Triggers;
use crate::workflows::Workflows;
use wasmatic_api::NodeError;
use wasmatic_state::Target;
use wasmatic_state::{Change, Fleet, StateError};
use wasmatic_workflows::{self as workflows, WorkflowTrigger};

/// How often a node renews its lease and sweeps for lost claims.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node may be silent before its running claims are lost: well
/// past a heartbeat missed under load, or a database restart.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a node catches up with the shared state unannounced.
const CATCH_UP_EVERY: Duration = Duration::from_secs(15);

/// This node's part in a fleet: its lease, and catching up with what
/// other nodes change in the shared state.
pub(crate) struct FleetSync {
    core: Arc<Core>,
    components: Arc<Components>,
    workflows: Arc<Workflows>,
    triggers: Arc<Triggers>,
}

impl FleetSync {
    pub(crate) fn new(
        core: Arc<Core>,
        components: Arc<Components>,
        workflows: Arc<Workflows>,
        triggers: Arc<Triggers>,
    ) -> Self {
        FleetSync {
            core,
            components,
            workflows,
            triggers,
        }
    }

    /// Starts the fleet's background work, when the node is in one.
    pub(crate) fn join_fleet(self: &Arc<Self>) {
        let Some(fleet) = self.core.fleet.clone() else {
            return;
        };
        tracing::info!(node = fleet.node_id(), "joined the fleet");
        if !self.core.claims.start(fleet.clone()) {
            return;
        }
        tokio::spawn(heartbeat(fleet.clone()));
        tokio::spawn(catch_up(Arc::downgrade(self), fleet));
    }

    /// Brings memory in line with the shared state for the kinds in
    /// `changes` (bits of [`Change`]).
    async fn catch_up(self: &Arc<Self>, changes: u8) -> Result<(), NodeError> {
        let has = |c: Change| changes & c as u8 != 0;
        // Modules and components first: schedules and triggers name them.
        if has(Change::Modules) {
            self.catch_up_modules().await?;
        }
        if has(Change::Components) {
            self.catch_up_components().await?;
        }
        if has(Change::Schedules) {
            self.catch_up_schedules().await?;
        }
        if has(Change::Workflows) {
            self.catch_up_workflows().await?;
        }
        if has(Change::Triggers) {
            self.catch_up_triggers().await?;
        }
        Ok(())
    }

    async fn catch_up_modules(&self) -> Result<(), NodeError> {
        let state = self.core.state.clone();
        let records = blocking(move || state.modules()).await??;
        let _changes = self.core.changes.lock().await;
        let names: HashSet<String> = records.iter().map(|r| r.name.clone()).collect();
        self.core.modules.retain(&names);
        for (name, e) in self.core.modules.restore(records) {
            tracing::error!(name, "module not loaded: {e}");
        }
        Ok(())
    }

    async fn catch_up_components(&self) -> Result<(), NodeError> {
        let state = self.core.state.clone();
        let records = blocking(move || state.components()).await??;
        let _changes = self.core.changes.lock().await;
        let names: HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
        for info in self.core.registry.list() {
            if !names.contains(info.name.as_str()) {
                self.core.registry.unload(&info.name);
                tracing::info!(name = info.name, "component removed by another node");
            }
        }
        for record in crate::components::providers_first(records) {
            if let Some(current) = self.core.registry.get(&record.name) {
                if current.info.digest == record.digest && current.settings == record.settings {
                    continue;
                }
            }
            if let Err(e) = self.components.load(&record).await {
                tracing::error!(name = record.name, "component not loaded: {e}");
                continue;
            }
            tracing::info!(
                name = record.name,
                digest = record.digest,
                "component loaded from the fleet"
            );
            self.components.relink_dependents(&record.name).await;
        }
        Ok(())
    }

    async fn catch_up_schedules(&self) -> Result<(), NodeError> {
        let state = self.core.state.clone();
        let records = blocking(move || state.schedules()).await??;
        let _changes = self.core.changes.lock().await;
        let stored: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut timers: HashSet<String> = HashSet::new();
        for schedule in self.core.scheduler.schedules() {
            if Target::of(&schedule.name).workflow().is_some() {
                continue;
            }
            if !stored.contains(schedule.id.as_str()) {
                self.core.scheduler.remove(&schedule.id);
            }
            timers.insert(schedule.id);
        }
        for record in records {
            if timers.contains(&record.id) {
                continue;
            }
            match scheduler::parse_stored_cron(&record.cron) {
                Ok(cron) => {
                    self.core.scheduler.add(record, cron);
                }
                Err(e) => tracing::error!(id = record.id, "schedule not added: {e}"),
            }
        }
        Ok(())
    }

    /// Workflows live in the state and are read at each run; what a node
    /// holds of them is their cron timers and the jobs they name.
    async fn catch_up_workflows(&self) -> Result<(), NodeError> {
        let state = self.core.state.clone();
        let (records, blobs) =
            blocking(move || Ok::<_, StateError>((state.workflows()?, state.job_blobs()?)))
                .await??;
        let _changes = self.core.changes.lock().await;
        for (hash, bytes) in blobs {
            if !self.core.jobs.knows(&hash) {
                self.core.jobs.keep(&hash, bytes.into());
            }
        }
        let mut wanted: Vec<(String, String, u64)> = Vec::new();
        for record in &records {
            if let Ok(workflow) =
                workflows::parse(record.definition.as_bytes(), &workflows::Trusted)
            {
                if let Some(WorkflowTrigger::Cron(line)) = &workflow.trigger {
                    wanted.push((
                        record.name.clone(),
                        line.trim().to_string(),
                        record.created_at,
                    ));
                }
            }
        }
        for schedule in self.core.scheduler.schedules() {
            let Some(name) = Target::of(&schedule.id).workflow() else {
                continue;
            };
            if !wanted
                .iter()
                .any(|(n, line, _)| n == name && *line == schedule.cron)
            {
                self.core.scheduler.remove(&schedule.id);
            }
        }
        let timers: HashSet<String> = self
            .core
            .scheduler
            .schedules()
            .into_iter()
            .map(|j| j.id)
            .collect();
        for (name, line, created_at) in wanted {
            if !timers.contains(&Target::Workflow(&name).stored()) {
                if let Err(e) = self.workflows.add_workflow_timer(&name, &line, created_at) {
                    tracing::error!(name, "workflow timer not added: {e}");
                }
            }
        }
        Ok(())
    }

    /// A trigger's task ends by itself once its trigger is gone from the
    /// state; a trigger another node added gets a task here.
    async fn catch_up_triggers(self: &Arc<Self>) -> Result<(), NodeError> {
        let state = self.core.state.clone();
        let records = blocking(move || state.triggers()).await??;
        let _changes = self.core.changes.lock().await;
        for record in records {
            if self.triggers.is_watched(&record.id) {
                continue;
            }
            match serde_json::from_str(&record.on) {
                Ok(event) => self.triggers.watch(record, event),
                Err(e) => tracing::error!(id = record.id, "trigger not started: {e}"),
            }
        }
        Ok(())
    }
}

/// Renews the node's lease and sweeps for the claims of silent nodes.
async fn heartbeat(fleet: Arc<dyn Fleet>) {
    let mut failing = false;
    loop {
        let beat = fleet.clone();
        let result = blocking(move || {
            beat.heartbeat()?;
            beat.sweep(LEASE)
        })
        .await;
        match result {
            Ok(Ok(lost)) => {
                if failing {
                    tracing::info!("the shared state database is back");
                }
                failing = false;
                if lost > 0 {
                    tracing::warn!(lost, "runs of a silent node recorded as lost");
                }
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::error!("heartbeat: {e}");
                }
                failing = true;
            }
            Err(e) => tracing::error!("heartbeat: {e}"),
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Catches up with each announced change, and with everything every
/// [`CATCH_UP_EVERY`]. A catch-up that fails (the database is down) is
/// tried again with everything.
async fn catch_up(node: Weak<FleetSync>, fleet: Arc<dyn Fleet>) {
    let feed = fleet.changes();
    let all = Change::ALL.iter().fold(0u8, |bits, c| bits | *c as u8);
    let mut pending = 0u8;
    loop {
        let changes = if pending != 0 {
            tokio::time::sleep(HEARTBEAT).await;
            std::mem::take(&mut pending)
        } else {
            match tokio::time::timeout(CATCH_UP_EVERY, feed.next()).await {
                Ok(changes) => changes,
                Err(_) => all,
            }
        };
        let Some(node) = node.upgrade() else {
            return;
        };
        if let Err(e) = node.catch_up(changes).await {
            tracing::warn!("cannot catch up with the fleet yet: {e}");
            pending = all;
        }
    }
}
