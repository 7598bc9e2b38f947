//! What the state holds, as the node reads and writes it: the same for
//! every backend.

use std::sync::Mutex;

use tokio::sync::Notify;

/// How a registered component runs, as given at registration.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerSettings {
    /// Its own narrowing of the node's outbound policy.
    pub allow: Option<Vec<String>>,
    /// Its configuration, sorted by key.
    pub config: Vec<(String, String)>,
    /// Calls one instance may serve; 1 gives every call a fresh instance.
    pub reuse: u32,
    /// Providers of the imports the node does not define.
    pub links: Vec<Link>,
}

/// An imported interface and the registered component that provides it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub interface: String,
    pub provider: String,
}

impl Default for HandlerSettings {
    fn default() -> Self {
        HandlerSettings {
            allow: None,
            config: Vec::new(),
            reuse: 1,
            links: Vec::new(),
        }
    }
}

/// The current version of a registered component.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentRecord {
    pub name: String,
    pub digest: String,
    pub settings: HandlerSettings,
    pub loaded_at: u64,
}

impl ComponentRecord {
    /// A test fixture: component `name` with the default settings and a
    /// digest made from its name. Built for this crate's tests and, with the
    /// `fixtures` feature, for the tests of the crates above the state,
    /// which need a registered name too (runs of a name that is not
    /// registered are not recorded).
    #[cfg(any(test, feature = "fixtures"))]
    pub fn sample(name: &str) -> Self {
        ComponentRecord {
            name: name.into(),
            digest: format!("d-{name}"),
            settings: HandlerSettings::default(),
            loaded_at: 0,
        }
    }
}

/// A stored core module.
pub struct ModuleRecord {
    pub name: String,
    pub wasm: Vec<u8>,
    pub host_modules: Vec<String>,
}

/// One RPC call of a run, as its run record lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RpcCall {
    pub chain: u64,
    pub method: String,
    /// Microseconds: a call to a nearby node takes well under one.
    pub duration_us: u64,
    pub ok: bool,
}

/// A run of a registered component.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Its place in the history (0 until stored).
    pub id: u64,
    pub name: String,
    /// The export called, for a call by export name.
    pub function: Option<String>,
    pub job_id: Option<String>,
    pub scheduled_for: Option<u64>,
    pub started_at: u64,
    pub duration_ms: u64,
    pub ok: bool,
    pub output: Option<String>,
    pub error: Option<String>,
    pub stdout: String,
    pub stderr: String,
    /// What the guest wrote to its audit log.
    pub audit: Vec<AuditEntry>,
    /// The chain RPC calls it made, in order.
    pub rpc: Vec<RpcCall>,
}

impl RunRecord {
    /// The bytes it takes, roughly: what the bounds count.
    pub fn size(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let audit: usize = self.audit.iter().map(|a| a.message.len() + 8).sum();
        128 + self.name.len()
            + text(&self.function)
            + text(&self.job_id)
            + text(&self.output)
            + text(&self.error)
            + self.stdout.len()
            + self.stderr.len()
            + audit
            + self.rpc.iter().map(|c| c.method.len() + 48).sum::<usize>()
    }

    /// A test fixture: a successful run of `name` that started at
    /// `started_at`, took a millisecond and answered `output`, with nothing
    /// else set. Built as [`ComponentRecord::sample`] is.
    #[cfg(any(test, feature = "fixtures"))]
    pub fn sample(name: &str, started_at: u64, output: Option<String>) -> Self {
        RunRecord {
            id: 0,
            name: name.into(),
            function: None,
            job_id: None,
            scheduled_for: None,
            started_at,
            duration_ms: 1,
            ok: true,
            output,
            error: None,
            stdout: String::new(),
            stderr: String::new(),
            audit: Vec::new(),
            rpc: Vec::new(),
        }
    }
}

/// How much history is kept.
#[derive(Clone, Copy, Debug)]
pub struct RunBounds {
    /// Runs kept per component.
    pub per_name: u32,
    /// Runs kept in all.
    pub total: u64,
    /// Bytes of runs kept in all.
    pub total_bytes: u64,
}

impl RunBounds {
    /// Whether `count` runs of `bytes` in all are more than the bounds on
    /// runs in all allow: each backend drops the oldest runs until not.
    pub fn exceeded_by(&self, count: u64, bytes: u64) -> bool {
        count > self.total || bytes > self.total_bytes
    }
}

/// Whose runs a page lists.
#[derive(Clone, Copy, Debug)]
pub enum RunsOf<'a> {
    /// A registered component's, by name.
    Handler(&'a str),
    /// A schedule's or chain trigger's, by id.
    Schedule(&'a str),
}

impl<'a> RunsOf<'a> {
    /// The column of the `runs` table that names them (the same in both
    /// backends), and its value.
    pub(crate) fn column(self) -> (&'static str, &'a str) {
        match self {
            RunsOf::Handler(name) => ("name", name),
            RunsOf::Schedule(id) => ("job_id", id),
        }
    }
}

/// Runs, newest first; `next` is the `before` of the following page.
#[derive(Debug, Default)]
pub struct RunPage {
    pub runs: Vec<RunRecord>,
    pub next: Option<u64>,
}

/// Most bytes of runs in one page: a page ends early past it.
pub const PAGE_BYTES: usize = 4 << 20;

/// A stored schedule.
#[derive(Clone, Debug)]
pub struct ScheduleRecord {
    pub id: String,
    pub name: String,
    pub cron: String,
    pub input: String,
    pub created_at: u64,
}

/// A stored trigger. `on` is the event it runs on, as JSON (see
/// `chain::triggers::Event`).
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerRecord {
    pub id: String,
    pub name: String,
    pub chain_id: u64,
    pub on: String,
    pub confirmations: u32,
    pub input: Option<String>,
    pub created_at: u64,
    pub cursor: Cursor,
}

/// Where a trigger is in its chain: the next event it runs is the first at
/// or after log `log` of block `block` (for block triggers, `log` is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub block: u64,
    pub log: u64,
}

/// Runs kept per workflow; older ones are dropped as new ones are recorded.
pub const RUNS_KEPT_PER_WORKFLOW: u32 = 1000;

/// A stored workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowRecord {
    pub name: String,
    /// The definition's JSON text.
    pub definition: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A workflow secret as the node shows it: its name and when it was set,
/// never its value.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretInfo {
    pub name: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// One run of a workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowRun {
    /// Set by the state when recorded.
    pub id: u64,
    pub name: String,
    /// `request`, `cron` or `chain`.
    pub cause: String,
    pub started_at: u64,
    pub duration_ms: u64,
    pub ok: bool,
    /// JSON texts: the trigger value, the steps' records, the result.
    pub trigger: String,
    pub steps: String,
    pub result: Option<String>,
    pub error: Option<String>,
}

impl WorkflowRun {
    /// The bytes the run keeps, as counted against `--runs-bytes` and a
    /// page's bytes.
    pub fn size(&self) -> u64 {
        (self.name.len()
            + self.cause.len()
            + self.trigger.len()
            + self.steps.len()
            + self.result.as_ref().map_or(0, String::len)
            + self.error.as_ref().map_or(0, String::len)) as u64
    }
}

/// Drops the oldest workflow runs past the bounds on runs in all, `$1` in
/// count and `$2` in bytes, never run `$3` (one being recorded). The same
/// text on SQLite and PostgreSQL.
pub const KEEP_WORKFLOW_RUNS_WITHIN: &str = "DELETE FROM workflow_runs WHERE id IN (
     SELECT id FROM (
         SELECT id,
                ROW_NUMBER() OVER newest AS n,
                CAST(SUM(bytes) OVER newest AS BIGINT) AS kept
         FROM workflow_runs
         WINDOW newest AS (ORDER BY id DESC ROWS UNBOUNDED PRECEDING)) AS counted
     WHERE (n > $1 OR kept > $2) AND id <> $3)";

/// Workflow runs, newest first; `next` is the `before` of the following
/// page.
#[derive(Debug, Default)]
pub struct WorkflowRunPage {
    pub runs: Vec<WorkflowRun>,
    pub next: Option<u64>,
}

/// Where a page of runs ends, from the (id, size) of the candidates
/// (newest first, one more than `limit` when there are more): at `limit`,
/// or early once it holds [`PAGE_BYTES`] (a page always has its first run).
/// Answers the ids of the page's newest and oldest runs (none for an empty
/// page), so that only its runs are read, and the `before` of the next page.
pub fn page_end(sizes: &[(u64, u64)], limit: u32) -> (Option<(u64, u64)>, Option<u64>) {
    let mut bytes = 0u64;
    let mut taken = sizes.len();
    for (n, &(_, size)) in sizes.iter().enumerate() {
        if n == limit as usize || (n > 0 && bytes + size > PAGE_BYTES as u64) {
            taken = n;
            break;
        }
        bytes += size;
    }
    let span = taken.checked_sub(1).map(|last| (sizes[0].0, sizes[last].0));
    let next = if taken < sizes.len() {
        span.map(|(_, oldest)| oldest)
    } else {
        None
    };
    (span, next)
}

/// A tick or event that one node of a fleet runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// What runs: a schedule's id, a chain trigger's id, or `workflow:NAME`.
    pub what: String,
    /// Which occurrence: a tick's time in ms, or a chain event's
    /// `BLOCK:LOG`.
    pub at: String,
    /// The component or workflow run, for the record of a lost run.
    pub name: String,
    pub kind: ClaimKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimKind {
    /// A cron tick of a schedule: lost runs are recorded as runs of `name`.
    Schedule,
    /// A chain event of a trigger: lost runs are recorded as runs of `name`.
    Trigger,
    /// A workflow's tick or event: lost runs are recorded as workflow runs.
    Workflow,
}

impl ClaimKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::Schedule => "schedule",
            ClaimKind::Trigger => "trigger",
            ClaimKind::Workflow => "workflow",
        }
    }
}

/// The outcome of a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// This node runs it.
    Won,
    /// This node records it as skipped: a run of the same `what` still goes
    /// (here or on another node).
    Skipped,
    /// Another node has it.
    Taken,
}

/// What kind of state another node changed, as bits of a [`ChangeFeed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Components = 1,
    Modules = 2,
    Schedules = 4,
    Triggers = 8,
    Workflows = 16,
}

impl Change {
    pub const ALL: [Change; 5] = [
        Change::Components,
        Change::Modules,
        Change::Schedules,
        Change::Triggers,
        Change::Workflows,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Change::Components => "components",
            Change::Modules => "modules",
            Change::Schedules => "schedules",
            Change::Triggers => "triggers",
            Change::Workflows => "workflows",
        }
    }

    pub fn parse(name: &str) -> Option<Change> {
        Change::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Changes made elsewhere that this node has not caught up with, coalesced:
/// a burst of a thousand announcements is one catch-up, not a thousand.
#[derive(Default)]
pub struct ChangeFeed {
    pending: Mutex<u8>,
    notify: Notify,
}

impl ChangeFeed {
    /// Adds `changes` (bits of [`Change`]) and wakes the waiter.
    pub fn push(&self, changes: u8) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) |= changes;
        self.notify.notify_one();
    }

    /// Waits for changes and takes them all.
    pub async fn next(&self) -> u8 {
        loop {
            let taken =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if taken != 0 {
                return taken;
            }
            self.notify.notified().await;
        }
    }
}

/// One entry of a guest's audit log (`wasmatic:guest/audit`), as its run
/// record keeps it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub level: String,
    pub message: String,
}
