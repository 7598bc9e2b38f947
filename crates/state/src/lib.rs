//! The node's own state: registered components (their bytes by digest and
//! their settings), core modules, schedules, chain triggers, workflows and
//! run history.
//!
//! May depend on: `wasmatic-api` (its error kinds: a state error becomes a
//! `NodeError`), `wasmatic-workers`. Nothing of guests or of the engine.
//!
//! One interface, two backends:
//! - [`sqlite`], the embedded default: one node, one file in the host's
//!   state directory, outside every directory granted to the operator;
//! - [`postgres`], for a fleet: several nodes share one database, each change
//!   is announced to the others, and each tick or event is claimed by exactly
//!   one node ([`Fleet`]).
//!
//! The interface is a handful of small traits, one per concern, that
//! [`Store`] gathers. Their methods block (SQLite is a library call; the
//! PostgreSQL backend waits on its pool), so the node calls them off its
//! async workers. Every change is one transaction and durable when it
//! returns: what a client was told is registered or scheduled survives
//! `kill -9`, and a crash leaves the old state or the new one, never a mix.

pub mod postgres;
mod records;
pub mod sqlite;
mod target;

#[cfg(test)]
mod conformance;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use records::*;
pub use target::Target;

/// Why the state could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The shared database cannot be reached now; the node answers 503 and
    /// recovers when it returns.
    #[error("the shared state database is unreachable: {0}")]
    Unavailable(String),
    #[error("shared state database: {0}")]
    Postgres(String),
}

impl From<StateError> for wasmatic_api::NodeError {
    fn from(e: StateError) -> Self {
        match e {
            // A shared database that is down is the node's capacity, not a
            // fault: 503, and the client retries once it is back.
            StateError::Unavailable(_) => {
                wasmatic_api::NodeError::Busy(format!("{e}; retry shortly"))
            }
            e => wasmatic_api::NodeError::Internal(e.to_string()),
        }
    }
}

/// Milliseconds since the Unix epoch: the time records are stamped with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Both databases store integers as i64: milliseconds, counts and chain
/// numbers past it do not occur, and are clamped rather than wrapped.
pub(crate) fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The arguments of [`KEEP_WORKFLOW_RUNS_WITHIN`] on either database: the
/// bounds on runs in all and the run that stays.
pub(crate) fn keep_workflow_runs_args(bounds: RunBounds, keep: u64) -> [i64; 3] {
    [
        to_sql(bounds.total),
        to_sql(bounds.total_bytes),
        to_sql(keep),
    ]
}

/// How many runs are stored, and their bytes: what both backends keep as
/// runs come and go, so that the bounds hold without counting the table.
/// Each backend reads and writes them its own way (`impl Totals` in its
/// `runs.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Totals {
    pub count: u64,
    pub bytes: u64,
}

impl Totals {
    /// Counts one run of `bytes` more.
    pub fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }

    pub fn subtract(&mut self, other: Totals) {
        self.count = self.count.saturating_sub(other.count);
        self.bytes = self.bytes.saturating_sub(other.bytes);
    }
}

/// The oldest runs that go for the runs in all to fit their bounds, as
/// both backends prune them: fed the id and bytes of the oldest runs,
/// oldest first, while it still wants more; `last` is then the newest id
/// that goes (every run up to it goes).
pub(crate) struct OldestRuns {
    bounds: RunBounds,
    count: u64,
    bytes: u64,
    pub last: Option<i64>,
}

impl OldestRuns {
    /// Before any run goes: `stored` are.
    pub fn new(bounds: RunBounds, stored: Totals) -> Self {
        OldestRuns {
            bounds,
            count: stored.count,
            bytes: stored.bytes,
            last: None,
        }
    }

    /// Whether the runs still stored are more than the bounds allow.
    pub fn wanted(&self) -> bool {
        self.bounds.exceeded_by(self.count, self.bytes)
    }

    /// Counts run `id`, of `bytes`, as going.
    pub fn take(&mut self, id: i64, bytes: u64) {
        self.last = Some(id);
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// Registered components (bytes by digest, settings, links) and core
/// modules.
pub trait ComponentStore {
    /// Makes `record` the current version of its name; `bytes` are stored
    /// under its digest unless they already are. The bytes of a version no
    /// longer current anywhere are dropped in the same transaction.
    fn commit_component(&self, record: &ComponentRecord, bytes: &[u8]) -> Result<(), StateError>;
    /// Forgets component `name` with its schedules, chain triggers and runs;
    /// answers whether it existed and the ids of the schedules removed.
    fn remove_component(&self, name: &str) -> Result<(bool, Vec<String>), StateError>;
    /// Every registered component, by name.
    fn components(&self) -> Result<Vec<ComponentRecord>, StateError>;
    /// The bytes stored under `digest`.
    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// The settings an older node kept for a component whose file it loaded
    /// from the registered directory; the defaults when it kept none.
    fn legacy_settings(&self, name: &str) -> Result<HandlerSettings, StateError>;
    /// Stores (or replaces) a core module registered by name.
    fn put_module(
        &self,
        name: &str,
        wasm: &[u8],
        host_modules: &[String],
    ) -> Result<(), StateError>;
    /// Forgets a core module; answers whether it existed.
    fn remove_module(&self, name: &str) -> Result<bool, StateError>;
    /// Every stored module.
    fn modules(&self) -> Result<Vec<ModuleRecord>, StateError>;
}

/// Cron schedules.
pub trait ScheduleStore {
    fn insert_schedule(&self, job: &ScheduleRecord) -> Result<(), StateError>;
    /// Deletes a job; returns whether it existed.
    fn delete_schedule(&self, id: &str) -> Result<bool, StateError>;
    fn schedules(&self) -> Result<Vec<ScheduleRecord>, StateError>;
    fn schedule_exists(&self, id: &str) -> Result<bool, StateError>;
}

/// Chain triggers and their cursors. A trigger's cursor moves in the same
/// transaction that records the run of the event it moves past.
pub trait TriggerStore {
    fn insert_trigger(&self, trigger: &TriggerRecord) -> Result<(), StateError>;
    /// Deletes a trigger; returns whether it existed.
    fn delete_trigger(&self, id: &str) -> Result<bool, StateError>;
    fn triggers(&self) -> Result<Vec<TriggerRecord>, StateError>;
    /// The cursor of trigger `id`, if it exists.
    fn trigger_cursor(&self, id: &str) -> Result<Option<Cursor>, StateError>;
    /// Moves trigger `id` to `cursor` (never backwards), recording `run` (the
    /// run of the event it moves past) in the same transaction. Returns
    /// false, and records nothing, when the trigger no longer exists.
    fn advance_trigger(
        &self,
        id: &str,
        cursor: Cursor,
        run: Option<&RunRecord>,
        bounds: RunBounds,
    ) -> Result<bool, StateError>;
}

/// Workflows, their runs and the jobs they name by hash.
pub trait WorkflowStore {
    /// Stores `definition` under `name`, replacing an earlier one (its
    /// creation time and history stay).
    fn put_workflow(&self, name: &str, definition: &str, now: u64) -> Result<(), StateError>;
    fn workflow(&self, name: &str) -> Result<Option<WorkflowRecord>, StateError>;
    fn workflows(&self) -> Result<Vec<WorkflowRecord>, StateError>;
    /// Forgets a workflow and its runs; answers whether it existed.
    fn remove_workflow(&self, name: &str) -> Result<bool, StateError>;
    /// Records a run (as it starts, or whole); answers its id. The oldest
    /// runs of the workflow past [`RUNS_KEPT_PER_WORKFLOW`] go, and the
    /// oldest of all workflows past `bounds` (count and bytes in all; never
    /// this run).
    fn record_workflow_run(&self, run: &WorkflowRun, bounds: RunBounds) -> Result<u64, StateError>;
    /// Writes the outcome of a run recorded as it started, then keeps the
    /// runs of all workflows within `bounds` again (never this run).
    fn finish_workflow_run(&self, run: &WorkflowRun, bounds: RunBounds) -> Result<(), StateError>;
    fn put_job_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StateError>;
    /// Drops every job blob whose digest is not in `keep`.
    fn keep_only_job_blobs(&self, keep: &[String]) -> Result<(), StateError>;
    fn job_blobs(&self) -> Result<Vec<(String, Vec<u8>)>, StateError>;
    /// The newest `limit` runs of workflow `name` older than run `before`,
    /// in a page that ends early past [`PAGE_BYTES`]. Only the runs of the
    /// page are read.
    fn workflow_runs(
        &self,
        name: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<WorkflowRunPage, StateError>;
}

/// Secrets of workflows (`{{ secrets.NAME }}` in `http` steps): kept apart
/// from the definitions, and read back only by the runner.
pub trait SecretStore {
    /// Keeps `value` under `name`; answers whether the name is new.
    fn put_secret(&self, name: &str, value: &str, now: u64) -> Result<bool, StateError>;
    /// Forgets secret `name`; answers whether it existed.
    fn remove_secret(&self, name: &str) -> Result<bool, StateError>;
    /// Every secret's name and times, by name; never the values.
    fn secrets(&self) -> Result<Vec<SecretInfo>, StateError>;
    /// The values of the secrets named, by name (those that exist).
    fn secret_values(
        &self,
        names: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, StateError>;
}

/// Run history, bounded per component and in all, read in pages bounded in
/// bytes.
pub trait RunStore {
    /// Records runs in one transaction, then drops the oldest runs beyond
    /// the bounds. Runs of a component that is no longer registered are not
    /// recorded.
    fn insert_runs(&self, runs: &[RunRecord], bounds: RunBounds) -> Result<(), StateError>;
    /// The newest `limit` runs of `of` older than run `before`, in a page
    /// that ends early past [`PAGE_BYTES`].
    fn runs_of(
        &self,
        of: RunsOf<'_>,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, StateError>;
    /// [`RunStore::runs_of`] the component `name`.
    fn runs_of_handler(
        &self,
        name: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, StateError> {
        self.runs_of(RunsOf::Handler(name), limit, before)
    }
    /// [`RunStore::runs_of`] the schedule or chain trigger `id`.
    fn runs_of_schedule(
        &self,
        id: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, StateError> {
        self.runs_of(RunsOf::Schedule(id), limit, before)
    }
}

/// All of the node's state.
pub trait Store:
    ComponentStore + ScheduleStore + TriggerStore + WorkflowStore + SecretStore + RunStore + Send + Sync
{
}

impl<T> Store for T where
    T: ComponentStore
        + ScheduleStore
        + TriggerStore
        + WorkflowStore
        + SecretStore
        + RunStore
        + Send
        + Sync
{
}

/// What several nodes sharing one state need beyond it: changes announced
/// to the others, and claims so that each tick or event runs on one node.
///
/// Claims follow the clustered job store pattern: a row keyed on (what,
/// when) under a unique constraint, so of the nodes that try, exactly one
/// inserts it. Each node renews a lease by heartbeat; the claims of a node
/// whose lease ran out while they were running are recorded as lost by
/// whichever node sweeps first, in the same statement that marks them.
pub trait Fleet: Send + Sync {
    /// This node's id in the fleet (unique per process).
    fn node_id(&self) -> &str;
    /// Claims each of `claims` for this node, in one round trip (a node's
    /// timer fires a thousand ticks in the same millisecond); answers in the
    /// same order. With a claim, `true` records the tick as skipped (this
    /// node knows its previous run still goes).
    fn claim_all(&self, claims: &[(Claim, bool)]) -> Result<Vec<Claimed>, StateError>;
    /// Marks claims this node won, as (what, at), as run: `recorded` once
    /// their runs are recorded (done), else as ended with their records
    /// on the way (a later tick of the same schedule is then not skipped
    /// for them, and a node that dies before recording them still has
    /// them swept as lost).
    fn finish_all(&self, done: &[(String, String)], recorded: bool) -> Result<(), StateError>;
    /// [`Fleet::claim_all`] of one claim.
    #[cfg(test)]
    fn claim(&self, claim: &Claim, skipped: bool) -> Result<Claimed, StateError> {
        let claimed = self.claim_all(&[(claim.clone(), skipped)])?;
        Ok(claimed.first().copied().unwrap_or(Claimed::Taken))
    }
    /// [`Fleet::finish_all`] of one claim.
    #[cfg(test)]
    fn finish(&self, what: &str, at: &str) -> Result<(), StateError> {
        self.finish_all(&[(what.to_string(), at.to_string())], true)
    }
    /// Renews this node's lease.
    fn heartbeat(&self) -> Result<(), StateError>;
    /// Marks the running claims of nodes whose lease is older than `lease`
    /// as lost and records each as a failed run; answers how many. Old
    /// finished claims are pruned.
    fn sweep(&self, lease: Duration) -> Result<u64, StateError>;
    /// Changes announced by other nodes.
    fn changes(&self) -> Arc<ChangeFeed>;
}

/// A state backend opened from `--state`.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub fleet: Option<Arc<dyn Fleet>>,
}

/// Opens the state named by `url` (a `postgres://` URL), or the SQLite file
/// in `state_dir` when there is none.
pub async fn open(url: Option<&str>, state_dir: &Path) -> anyhow::Result<Opened> {
    use anyhow::Context;
    match url {
        Some(url) => {
            // Opening connects, migrates and starts listening: blocking
            // work, kept off the async workers.
            let url = url.to_string();
            let store = tokio::task::spawn_blocking(move || postgres::Postgres::open(&url))
                .await
                .context("opening the shared state")?
                .context("cannot open the shared state")?;
            let store = Arc::new(store);
            Ok(Opened {
                store: store.clone(),
                fleet: Some(store),
            })
        }
        None => {
            let path = state_dir.join("state.db");
            let store = sqlite::Sqlite::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            Ok(Opened {
                store: Arc::new(store),
                fleet: None,
            })
        }
    }
}
