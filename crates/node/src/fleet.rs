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
//! shared state ([`Node::claim`]). A node renews its lease every
//! [`HEARTBEAT`]; the running claims of a node silent for [`LEASE`] are
//! recorded as lost by the first node that sweeps them.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{blocking, Node};
use crate::scheduler;
use wasmatic_api::NodeError;
use wasmatic_state::Target;
use wasmatic_state::{Change, Claim, Claimed, Fleet, StateError};
use wasmatic_workflows::{self as workflows, WorkflowTrigger};

/// How often a node renews its lease and sweeps for lost claims.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node may be silent before its running claims are lost: well
/// past a heartbeat missed under load, or a database restart.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a node catches up with the shared state unannounced.
const CATCH_UP_EVERY: Duration = Duration::from_secs(15);
/// How long a tick waits for an unreachable database to decide its claim
/// before it is given up (and logged): a short outage delays ticks, it does
/// not lose them.
const CLAIM_PATIENCE: Duration = Duration::from_secs(15);
/// Between two attempts at a claim while the database is unreachable.
const CLAIM_RETRY: Duration = Duration::from_millis(250);

impl Node {
    /// Starts the fleet's background work, when the node is in one.
    pub(super) fn join_fleet(self: &Arc<Self>) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        tracing::info!(node = fleet.node_id(), "joined the fleet");
        let (sender, receiver) = mpsc::unbounded_channel();
        if self.claims.set(sender).is_err() {
            return;
        }
        tokio::spawn(claim_batches(fleet.clone(), receiver));
        tokio::spawn(heartbeat(fleet.clone()));
        tokio::spawn(catch_up(Arc::downgrade(self), fleet));
    }

    /// Whether this node runs occurrence `claim`: on a node of its own,
    /// always (as a skip when `skipped`); in a fleet, when it wins the
    /// claim. `None` when no answer came within [`CLAIM_PATIENCE`].
    pub(super) async fn claim(&self, claim: &Claim, skipped: bool) -> Option<Claimed> {
        let Some(claims) = self.claims.get() else {
            return Some(if skipped {
                Claimed::Skipped
            } else {
                Claimed::Won
            });
        };
        let (answer, answered) = oneshot::channel();
        claims
            .send(Pending::Claim(claim.clone(), skipped, answer))
            .ok()?;
        let claimed = answered.await.ok()??;
        wasmatic_metrics::claim(match claimed {
            Claimed::Won => "won",
            Claimed::Taken => "taken",
            Claimed::Skipped => "skipped",
        });
        Some(claimed)
    }

    /// Marks a claim this node won as done once its run is recorded: a node
    /// that dies before has it swept as lost. A run recorded by the run log
    /// (`via_run_log`) is first marked as ended, so that the next tick of
    /// its schedule is not skipped while the record is on its way.
    pub(super) async fn finish(&self, claim: &Claim, via_run_log: bool) {
        let Some(claims) = self.claims.get() else {
            return;
        };
        let send = |recorded: bool| {
            let (answer, answered) = oneshot::channel();
            let key = (claim.what.clone(), claim.at.clone());
            claims
                .send(Pending::Finish(key, recorded, answer))
                .ok()
                .map(|()| answered)
        };
        if via_run_log {
            if let Some(answered) = send(false) {
                let _ = answered.await;
            }
            self.runs.flushed().await;
        }
        if let Some(answered) = send(true) {
            let _ = answered.await;
        }
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
        let state = self.state.clone();
        let records = blocking(move || state.modules()).await??;
        let _changes = self.changes.lock().await;
        let names: HashSet<String> = records.iter().map(|r| r.name.clone()).collect();
        self.modules.retain(&names);
        for (name, e) in self.modules.restore(records) {
            tracing::error!(name, "module not loaded: {e}");
        }
        Ok(())
    }

    async fn catch_up_components(&self) -> Result<(), NodeError> {
        let state = self.state.clone();
        let records = blocking(move || state.components()).await??;
        let _changes = self.changes.lock().await;
        let names: HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
        for info in self.registry.list() {
            if !names.contains(info.name.as_str()) {
                self.registry.unload(&info.name);
                tracing::info!(name = info.name, "component removed by another node");
            }
        }
        for record in super::components::providers_first(records) {
            if let Some(current) = self.registry.get(&record.name) {
                if current.info.digest == record.digest && current.settings == record.settings {
                    continue;
                }
            }
            if let Err(e) = self.load(&record).await {
                tracing::error!(name = record.name, "component not loaded: {e}");
                continue;
            }
            tracing::info!(
                name = record.name,
                digest = record.digest,
                "component loaded from the fleet"
            );
            self.relink_dependents(&record.name).await;
        }
        Ok(())
    }

    async fn catch_up_schedules(&self) -> Result<(), NodeError> {
        let state = self.state.clone();
        let records = blocking(move || state.schedules()).await??;
        let _changes = self.changes.lock().await;
        let stored: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut timers: HashSet<String> = HashSet::new();
        for schedule in self.schedules() {
            if !stored.contains(schedule.id.as_str()) {
                self.scheduler.remove(&schedule.id);
            }
            timers.insert(schedule.id);
        }
        for record in records {
            if timers.contains(&record.id) {
                continue;
            }
            match scheduler::parse_stored_cron(&record.cron) {
                Ok(cron) => {
                    self.scheduler.add(record, cron);
                }
                Err(e) => tracing::error!(id = record.id, "schedule not added: {e}"),
            }
        }
        Ok(())
    }

    /// Workflows live in the state and are read at each run; what a node
    /// holds of them is their cron timers and the jobs they name.
    async fn catch_up_workflows(&self) -> Result<(), NodeError> {
        let state = self.state.clone();
        let (records, blobs) =
            blocking(move || Ok::<_, StateError>((state.workflows()?, state.job_blobs()?)))
                .await??;
        let _changes = self.changes.lock().await;
        for (hash, bytes) in blobs {
            if !self.jobs.knows(&hash) {
                self.jobs.keep(&hash, bytes.into());
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
        for schedule in self.scheduler.schedules() {
            let Some(name) = Target::of(&schedule.id).workflow() else {
                continue;
            };
            if !wanted
                .iter()
                .any(|(n, line, _)| n == name && *line == schedule.cron)
            {
                self.scheduler.remove(&schedule.id);
            }
        }
        let timers: HashSet<String> = self
            .scheduler
            .schedules()
            .into_iter()
            .map(|j| j.id)
            .collect();
        for (name, line, created_at) in wanted {
            if !timers.contains(&Target::Workflow(&name).stored()) {
                if let Err(e) = self.add_workflow_timer(&name, &line, created_at) {
                    tracing::error!(name, "workflow timer not added: {e}");
                }
            }
        }
        Ok(())
    }

    /// A trigger's task ends by itself once its trigger is gone from the
    /// state; a trigger another node added gets a task here.
    async fn catch_up_triggers(self: &Arc<Self>) -> Result<(), NodeError> {
        let state = self.state.clone();
        let records = blocking(move || state.triggers()).await??;
        let _changes = self.changes.lock().await;
        for record in records {
            if self.is_watched(&record.id) {
                continue;
            }
            match serde_json::from_str(&record.on) {
                Ok(event) => self.watch(record, event),
                Err(e) => tracing::error!(id = record.id, "trigger not started: {e}"),
            }
        }
        Ok(())
    }
}

/// A claim, or a claim done, on its way to the database with others.
pub(super) enum Pending {
    Claim(Claim, bool, oneshot::Sender<Option<Claimed>>),
    /// (what, at), and whether its run is recorded.
    Finish((String, String), bool, oneshot::Sender<()>),
}

/// Most claims sent in one statement.
const MAX_BATCH: usize = 2000;

/// Sends claims to the database in batches: whatever queued while the
/// previous batch was on its way goes in the next, so a thousand ticks of
/// one second cost a few round trips, not a thousand. A database that is
/// unreachable is waited for up to [`CLAIM_PATIENCE`] per batch; claims
/// still undecided then are not run (and logged).
async fn claim_batches(fleet: Arc<dyn Fleet>, mut queue: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut claims = Vec::new();
        let mut finishes: [Vec<_>; 2] = [Vec::new(), Vec::new()];
        let mut next = Some(first);
        while let Some(pending) = next.take() {
            match pending {
                Pending::Claim(claim, skipped, answer) => claims.push((claim, skipped, answer)),
                Pending::Finish(key, recorded, answer) => {
                    finishes[usize::from(recorded)].push((key, answer))
                }
            }
            if claims.len() + finishes[0].len() + finishes[1].len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        for (recorded, finishes) in finishes.into_iter().enumerate() {
            if finishes.is_empty() {
                continue;
            }
            let done: Vec<(String, String)> = finishes.iter().map(|(k, _)| k.clone()).collect();
            let fleet = fleet.clone();
            let recorded = recorded == 1;
            if let Err(e) = patiently(move || fleet.finish_all(&done, recorded)).await {
                tracing::error!(claims = finishes.len(), "claims not marked as run: {e}");
            }
            for (_, answer) in finishes {
                let _ = answer.send(());
            }
        }
        if !claims.is_empty() {
            let asked: Vec<(Claim, bool)> =
                claims.iter().map(|(c, s, _)| (c.clone(), *s)).collect();
            let fleet = fleet.clone();
            let outcome = patiently(move || fleet.claim_all(&asked)).await;
            match outcome {
                Ok(claimed) => {
                    for ((_, _, answer), claimed) in claims.into_iter().zip(claimed) {
                        let _ = answer.send(Some(claimed));
                    }
                }
                Err(e) => {
                    tracing::error!(claims = claims.len(), "not run: cannot claim: {e}");
                    for (_, _, answer) in claims {
                        let _ = answer.send(None);
                    }
                }
            }
        }
    }
}

/// Runs `call` off the async workers, again while the database is
/// unreachable, for up to [`CLAIM_PATIENCE`].
async fn patiently<T: Send + 'static>(
    call: impl Fn() -> Result<T, StateError> + Send + Sync + 'static,
) -> Result<T, NodeError> {
    let call = Arc::new(call);
    let started = tokio::time::Instant::now();
    loop {
        let attempt = call.clone();
        match blocking(move || attempt()).await? {
            Ok(value) => return Ok(value),
            Err(StateError::Unavailable(_)) if started.elapsed() < CLAIM_PATIENCE => {
                tokio::time::sleep(CLAIM_RETRY).await;
            }
            Err(e) => return Err(e.into()),
        }
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
async fn catch_up(node: Weak<Node>, fleet: Arc<dyn Fleet>) {
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
