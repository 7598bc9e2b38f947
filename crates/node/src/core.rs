//! What every service of the node shares: the engines guests run on, the
//! registry of compiled components, the state, the limits, the scheduler's
//! timer, the run log, and the locks and slots that bound work.
//!
//! The services ([`crate::Components`], [`crate::Workflows`],
//! [`crate::Schedules`], [`crate::Triggers`], the fleet's catch-up) each
//! hold the core and the services below them; nothing here knows a
//! service.

use std::sync::Arc;

use wasmatic_api::NodeError;
use wasmatic_chain::Chains;
use wasmatic_guests::jobs::Jobs;
use wasmatic_guests::modules::Modules;
use wasmatic_guests::registry::Registry;
use wasmatic_guests::run_log::RunLog;
use wasmatic_net::Policy;
use wasmatic_sandbox::engine::GuestEngines;
use wasmatic_sandbox::limits::Limits;
use wasmatic_state::{Fleet, RunPage, StateError, Store};

use crate::claims::Claims;
use crate::scheduler::Scheduler;
use crate::stopping::InFlight;
use crate::{blocking, StateLimits};

/// Most runs one page may ask for.
pub(crate) const MAX_PAGE: u32 = 1000;

pub(crate) struct Core {
    /// The engines guests run on, with their flags, compilers and pools.
    pub(crate) engines: GuestEngines,
    /// The chains guests, jobs and triggers may call.
    pub(crate) chains: Arc<Chains>,
    /// The current version of every registered component, compiled.
    pub(crate) registry: Registry,
    /// The timer of handlers' schedules and workflows' cron triggers.
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) state: Arc<dyn Store>,
    /// The fleet this node is part of, when its state is shared.
    pub(crate) fleet: Option<Arc<dyn Fleet>>,
    pub(crate) limits: Limits,
    pub(crate) state_limits: StateLimits,
    pub(crate) policy: Arc<Policy>,
    pub(crate) runs: RunLog,
    pub(crate) modules: Modules,
    pub(crate) jobs: Jobs,
    /// One permit per client call that may run at once.
    pub(crate) calls: Arc<tokio::sync::Semaphore>,
    /// One permit per scheduled run that may run at once: ticks never take
    /// the clients' permits, nor the other way round.
    pub(crate) ticks: Arc<tokio::sync::Semaphore>,
    /// Held while registered state changes (state first, then memory), so
    /// that two registrations of one name cannot interleave.
    pub(crate) changes: tokio::sync::Mutex<()>,
    /// Which node of a fleet runs a tick or an event.
    pub(crate) claims: Claims,
    /// Ticks and trigger rounds going, which a stopping node waits for.
    pub(crate) in_flight: Arc<InFlight>,
}

impl Core {
    /// A client's call slot, or `Busy` at once: a client beyond the limit
    /// is told to come back, never queued.
    pub(crate) fn client_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, NodeError> {
        self.calls.clone().try_acquire_owned().map_err(|_| {
            NodeError::Busy(format!(
                "the node is running {} calls, its most (--max-concurrent-calls); retry shortly",
                self.limits.max_concurrent_calls
            ))
        })
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
        let limit = limit.clamp(1, MAX_PAGE);
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
}
