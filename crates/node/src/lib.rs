//! What the host does for its operator: registered components and their
//! runs, schedules, chain triggers, core modules and WASI jobs, behind one
//! API with typed errors. The operator's interfaces (`contract`) are a thin translation of
//! this into WIT; one file here per concern.
//!
//! May depend on: every library below the server: `wasmatic-api`,
//! `wasmatic-chain`, `wasmatic-guests`, `wasmatic-metrics`, `wasmatic-net`,
//! `wasmatic-sandbox`, `wasmatic-state`, `wasmatic-workers`,
//! `wasmatic-workflows`.
//!
//! Every change of registered state goes through the node's state first
//! (durable, one transaction) and only then into memory, under one
//! registration lock, so memory never shows what a restart would not.

pub mod scheduler;

mod components;
mod dependents;
mod fleet;
mod inspect;
mod modules;
mod schedules;
mod secrets;
mod settings;
mod stopping;
mod ticks;
mod triggers;
mod workflow_steps;
mod workflows;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use wasmatic_chain::Chains;
use wasmatic_sandbox::engine::GuestEngines;

use crate::scheduler::Scheduler;
use wasmatic_api::NodeError;
use wasmatic_guests::jobs::Jobs;
use wasmatic_guests::modules::Modules;
use wasmatic_guests::registry::Registry;
use wasmatic_guests::run_log::RunLog;
use wasmatic_net::Policy;
use wasmatic_sandbox::limits::Limits;
use wasmatic_state::{Fleet, RunBounds, Store};

pub use inspect::FileKind;
pub use modules::ModuleInfo;
pub use triggers::TriggerInfo;

/// Bounds of the node's stored state and of scheduled work.
#[derive(Clone, Copy, Debug)]
pub struct StateLimits {
    /// Schedules the node holds at most.
    pub max_schedules: usize,
    /// Components the node holds at most.
    pub max_components: usize,
    /// Scheduled runs that may run at once, beside the clients' calls.
    pub max_concurrent_ticks: usize,
    /// How much run history is kept.
    pub runs: RunBounds,
}

/// What a node is started with: everything is handed down from start-up,
/// nothing read from process-wide settings, so two nodes in one process keep
/// their own.
pub struct NodeSetup {
    /// The engines guests run on, with their flags, compilers and pools.
    pub engines: GuestEngines,
    /// The chains guests, jobs and triggers may call.
    pub chains: Arc<Chains>,
    /// Where an older node kept component files, imported at start.
    pub registered_dir: PathBuf,
    /// The node's own state (SQLite, compiled code); never granted to guests.
    pub state_dir: PathBuf,
    /// `--state postgres://…`: a fleet's shared state instead of SQLite.
    pub state_url: Option<String>,
    pub limits: Limits,
    pub state_limits: StateLimits,
    /// `--allow-outbound`: where guests may send requests.
    pub policy: Policy,
}

/// Which tick a scheduled run is for: its schedule and when it was due.
#[derive(Clone, Debug)]
pub struct TickId {
    pub job_id: String,
    pub scheduled_for: u64,
}

/// Which task a guest call runs in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CallTask {
    /// A task of its own: the caller is one of the operator's host calls,
    /// and a guest's fiber must not nest inside the operator's.
    Own,
    /// The caller's: a tick runner runs one call at a time, and a task
    /// per call would cost a spawn and a wake-up per run. (A fleet's ticks
    /// keep `Own`: their path stays as it was measured in a fleet.)
    Callers,
}

pub struct Node {
    /// The engines guests run on, with their flags, compilers and pools.
    engines: GuestEngines,
    /// The chains guests, jobs and triggers may call.
    chains: Arc<Chains>,
    registry: Registry,
    scheduler: Arc<Scheduler>,
    state: Arc<dyn Store>,
    /// The fleet this node is part of, when its state is shared.
    fleet: Option<Arc<dyn Fleet>>,
    limits: Limits,
    state_limits: StateLimits,
    policy: Arc<Policy>,
    runs: RunLog,
    modules: Modules,
    jobs: Jobs,
    /// One permit per client call that may run at once.
    calls: Arc<tokio::sync::Semaphore>,
    /// One permit per scheduled run that may run at once: ticks never take
    /// the clients' permits, nor the other way round.
    ticks: Arc<tokio::sync::Semaphore>,
    /// Held while registered state changes (state first, then memory), so
    /// that two registrations of one name cannot interleave.
    changes: tokio::sync::Mutex<()>,
    /// Where this node's claims go to be batched, in a fleet.
    claims: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<fleet::Pending>>,
    /// The chain triggers whose task runs on this node.
    watched: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Ticks and trigger rounds going, which a stopping node waits for.
    in_flight: Arc<stopping::InFlight>,
    /// Handlers' ticks waiting for a runner.
    tick_queue: Arc<ticks::TickQueue>,
}

impl Node {
    /// Opens the node's state in `state_dir`, loads every registered
    /// component and module (and imports the component files an older node
    /// kept in `registered_dir`), restores every schedule and starts the
    /// scheduler.
    pub async fn start(setup: NodeSetup) -> anyhow::Result<Arc<Node>> {
        let NodeSetup {
            engines,
            chains,
            registered_dir,
            state_dir,
            state_url,
            limits,
            state_limits,
            policy,
        } = setup;
        let cache_dir = state_dir.join("compiled");
        std::fs::create_dir_all(&cache_dir)
            .with_context(|| format!("cannot create {}", cache_dir.display()))?;
        let wasmatic_state::Opened {
            store: state,
            fleet,
        } = wasmatic_state::open(state_url.as_deref(), &state_dir).await?;
        let runs =
            RunLog::start(state.clone(), state_limits.runs).context("cannot start the run log")?;
        let node = Arc::new(Node {
            modules: Modules::new(
                engines.sync.clone(),
                engines.flags,
                engines.compiler(&engines.sync),
            ),
            jobs: Jobs::new(&engines, engines.compiler(&engines.sync), chains.clone())
                .context("cannot link what WASI jobs get")?,
            registry: Registry::new(&engines, registered_dir, cache_dir, limits.max_handler_size)?,
            scheduler: Arc::new(Scheduler::new()),
            state,
            fleet,
            runs,
            calls: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_calls)),
            ticks: Arc::new(tokio::sync::Semaphore::new(
                state_limits.max_concurrent_ticks,
            )),
            changes: tokio::sync::Mutex::new(()),
            watched: Default::default(),
            claims: Default::default(),
            in_flight: Default::default(),
            tick_queue: Default::default(),
            limits,
            state_limits,
            policy: Arc::new(policy),
            engines,
            chains,
        });
        node.import_legacy_files().await?;
        node.restore_components().await?;
        node.restore_modules()?;
        node.restore_schedules()?;
        node.restore_workflows()?;
        node.restore_triggers()?;
        node.join_fleet();
        node.start_tick_runners();
        let scheduler = node.scheduler.clone();
        let weak = Arc::downgrade(&node);
        tokio::spawn(scheduler::run(scheduler, move |tick| {
            let Some(node) = weak.upgrade() else {
                return;
            };
            // A stopping node starts no tick: the next node to run the
            // schedule (a restart, or another in a fleet) takes it.
            if let Some(going) = node.in_flight.enter() {
                node.fire(tick, going);
            }
        }));
        Ok(node)
    }
}

impl Node {
    /// Run records waiting for the run log's writer (`GET /metrics`).
    pub fn queued_runs(&self) -> usize {
        self.runs.queued()
    }

    /// A client's call slot, or `Busy` at once: a client beyond the limit
    /// is told to come back, never queued.
    fn client_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, NodeError> {
        self.calls.clone().try_acquire_owned().map_err(|_| {
            NodeError::Busy(format!(
                "the node is running {} calls, its most (--max-concurrent-calls); retry shortly",
                self.limits.max_concurrent_calls
            ))
        })
    }
}

/// Runs blocking work (SQLite) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(format!("state task failed: {e}")))
}
