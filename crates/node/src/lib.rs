//! What the host does for its operator: registered components and their
//! runs, schedules, chain triggers, workflows, core modules and WASI jobs,
//! behind one API with typed errors. The operator's interfaces
//! (`contract`) are a thin translation of this into WIT.
//!
//! [`Node`] is a facade over services it owns, one module each:
//! [`Components`] (registering and calling components and core modules),
//! [`Workflows`], [`Schedules`], [`Triggers`], and the fleet's catch-up.
//! Each holds the shared core (`core.rs`) and only the services below it.
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

mod claims;
mod components;
mod core;
mod fleet;
mod schedules;
mod settings;
mod stopping;
mod triggers;
mod workflows;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use wasmatic_chain::triggers::Event;
use wasmatic_chain::Chains;
use wasmatic_sandbox::engine::GuestEngines;

use crate::core::Core;
use crate::fleet::FleetSync;
use crate::scheduler::Scheduler;
use wasmatic_api::NodeError;
use wasmatic_guests::jobs::Jobs;
use wasmatic_guests::modules::Modules;
use wasmatic_guests::registry::Registry;
use wasmatic_guests::run_log::RunLog;
use wasmatic_net::Policy;
use wasmatic_sandbox::limits::Limits;
use wasmatic_state::{RunBounds, Target};
use wasmatic_workflows::WorkflowTrigger;

pub use components::{Components, FileKind, ModuleInfo};
pub use schedules::Schedules;
pub use triggers::{TriggerInfo, Triggers};
pub use workflows::Workflows;

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

/// The node: a facade over the services it owns, each a concern of its
/// own, built on one core (`core.rs`) they share. Callers reach a service
/// through its accessor (`node.components().register(…)`); the node's own
/// methods are what spans services: starting and stopping, and storing a
/// workflow (whose chain event becomes a trigger).
///
/// The services depend on each other downwards only: components (and
/// core modules) at the bottom; workflows call components; schedules and
/// triggers run components and workflows; the fleet's catch-up keeps all
/// of them in line with the shared state.
pub struct Node {
    core: Arc<Core>,
    components: Arc<Components>,
    workflows: Arc<Workflows>,
    schedules: Arc<Schedules>,
    triggers: Arc<Triggers>,
    /// Held, not called: the fleet's catch-up task holds it weakly and
    /// ends when the node is dropped.
    _fleet: Arc<FleetSync>,
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
        let core = Arc::new(Core {
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
            claims: Default::default(),
            in_flight: Default::default(),
            limits,
            state_limits,
            policy: Arc::new(policy),
            engines,
            chains,
        });
        let components = Arc::new(Components::new(core.clone()));
        let workflows = Arc::new(Workflows::new(core.clone(), components.clone()));
        let schedules = Arc::new(Schedules::new(
            core.clone(),
            components.clone(),
            workflows.clone(),
        ));
        let triggers = Arc::new(Triggers::new(
            core.clone(),
            components.clone(),
            workflows.clone(),
        ));
        let fleet = Arc::new(FleetSync::new(
            core.clone(),
            components.clone(),
            workflows.clone(),
            triggers.clone(),
        ));
        components.import_legacy_files().await?;
        components.restore_components().await?;
        components.restore_modules()?;
        schedules.restore_schedules()?;
        workflows.restore_workflows()?;
        triggers.restore_triggers()?;
        fleet.join_fleet();
        schedules.start_tick_runners();
        let weak = Arc::downgrade(&schedules);
        tokio::spawn(scheduler::run(core.scheduler.clone(), move |tick| {
            let Some(schedules) = weak.upgrade() else {
                return;
            };
            // A stopping node starts no tick: the next node to run the
            // schedule (a restart, or another in a fleet) takes it.
            if let Some(going) = schedules.core.in_flight.enter() {
                schedules.fire(tick, going);
            }
        }));
        Ok(Arc::new(Node {
            core,
            components,
            workflows,
            schedules,
            triggers,
            _fleet: fleet,
        }))
    }

    /// Registered components and core modules, and every call of them.
    pub fn components(&self) -> &Arc<Components> {
        &self.components
    }

    /// Workflows: their definitions, runs and secrets.
    pub fn workflows(&self) -> &Arc<Workflows> {
        &self.workflows
    }

    /// Handlers' cron schedules and their ticks.
    pub fn schedules(&self) -> &Arc<Schedules> {
        &self.schedules
    }

    /// Chain triggers.
    pub fn triggers(&self) -> &Arc<Triggers> {
        &self.triggers
    }

    /// Run records waiting for the run log's writer (`GET /metrics`).
    pub fn queued_runs(&self) -> usize {
        self.core.runs.queued()
    }

    /// Checks and stores a workflow, replacing one of the same name (its
    /// history stays), and installs its trigger: a cron line on the
    /// timer, a chain event as a chain trigger named `workflow:NAME`.
    /// Answers it as stored.
    pub async fn put_workflow(&self, definition: &str) -> Result<String, NodeError> {
        let _changes = self.core.changes.lock().await;
        let (workflow, text) = self.workflows.prepare(definition).await?;
        // A chain trigger is checked (the chain's head read) before anything
        // is stored: a refusal then changes nothing.
        let prepared = match &workflow.trigger {
            Some(WorkflowTrigger::Chain {
                chain_id,
                on,
                confirmations,
            }) => {
                let event: Event = serde_json::from_value(on.clone())
                    .map_err(|e| NodeError::Invalid(format!("`on`: {e}")))?;
                let id = Target::Workflow(&workflow.name).stored();
                Some(
                    self.triggers
                        .prepare_trigger(&id, *chain_id, event, *confirmations, None)
                        .await?,
                )
            }
            _ => None,
        };
        self.workflows.store(&workflow, text).await?;
        if let Some((record, event)) = prepared {
            self.triggers.start_trigger(record, event).await?;
        }
        tracing::info!(name = workflow.name, "workflow stored");
        self.workflows
            .workflow(&workflow.name)
            .await
            .ok_or_else(|| NodeError::Internal("the stored workflow is gone".into()))
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
