//! What the host does for its operator: the registry of handlers, their runs
//! and their schedules, behind one API with typed errors. The host interface
//! (`operator_host`) is a thin translation of this into WIT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::Engine;

use crate::handler::{self, CallError, CallLimits};
use crate::jobs::{JobRequest, JobResult, Jobs};
use crate::limits::Limits;
use crate::modules::{Modules, RegisteredModule};
use crate::outbound::{Policy, Rule};
use crate::registry::{Handler, HandlerInfo, Registry};
use crate::run_log::RunLog;
use crate::scheduler::{self, Job, Scheduler};
use crate::state::{JobRecord, RunRecord, StateDb, StateError};

/// Why a request to the node failed; each case is one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    TimedOut(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StateError> for NodeError {
    fn from(e: StateError) -> Self {
        NodeError::Internal(e.to_string())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A registered core module.
#[derive(Clone, Debug)]
pub struct ModuleInfo {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub exports: Vec<String>,
}

/// Why a handler runs: a client's request or a schedule's tick.
#[derive(Clone, Debug)]
pub struct Trigger {
    pub job_id: String,
    pub scheduled_for: u64,
}

pub struct Node {
    registry: Registry,
    scheduler: Scheduler,
    state: Arc<StateDb>,
    limits: Limits,
    policy: Arc<Policy>,
    runs: RunLog,
    modules: Modules,
    jobs: Jobs,
    /// One permit per handler call that may run at once.
    calls: Arc<tokio::sync::Semaphore>,
}

impl Node {
    /// Opens the node's state in `state_dir`, loads every handler in
    /// `registered_dir`, restores every schedule and starts the scheduler.
    pub async fn start(
        engine: Engine,
        registered_dir: PathBuf,
        state_dir: PathBuf,
        limits: Limits,
        policy: Policy,
    ) -> anyhow::Result<Arc<Node>> {
        let cache_dir = state_dir.join("compiled");
        std::fs::create_dir_all(&cache_dir)
            .with_context(|| format!("cannot create {}", cache_dir.display()))?;
        let db_path = state_dir.join("state.db");
        let state = StateDb::open(&db_path)
            .with_context(|| format!("cannot open {}", db_path.display()))?;
        let modules = Modules::new(engine.clone());
        let jobs = Jobs::new(engine.clone());
        let registry = Registry::new(engine, registered_dir, cache_dir, limits.max_handler_size)?;
        let state = Arc::new(state);
        let runs =
            RunLog::start(state.clone(), limits.runs_kept).context("cannot start the run log")?;
        let node = Arc::new(Node {
            registry,
            scheduler: Scheduler::new(),
            state,
            runs,
            modules,
            jobs,
            calls: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_calls)),
            limits,
            policy: Arc::new(policy),
        });

        let names = node
            .registry
            .scan()
            .with_context(|| format!("cannot read {}", node.registry.dir().display()))?;
        for name in &names {
            let allow = node.state.handler_outbound(name)?;
            match node.install(name, allow).await {
                Ok(info) => tracing::info!(name, digest = %info.digest, "handler loaded"),
                Err(e) => tracing::error!(name, "handler not loaded: {e}"),
            }
        }
        node.restore_modules()?;
        for record in node.state.jobs()? {
            match scheduler::parse_cron(&record.cron) {
                Ok(cron) => {
                    node.scheduler.add(record, cron);
                }
                Err(e) => tracing::error!(id = record.id, "schedule not restored: {e}"),
            }
        }
        tokio::spawn(scheduler::run(node.clone()));
        Ok(node)
    }

    /// Loads every stored module, each after the modules it links against.
    fn restore_modules(&self) -> anyhow::Result<()> {
        let mut pending = self.state.modules()?;
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|m| match self.modules.compile(&m.wasm, &m.host_modules) {
                Ok(module) => {
                    let host_modules = m.host_modules.clone();
                    let registered = RegisteredModule {
                        module,
                        host_modules,
                    };
                    self.modules.insert(&m.name, registered);
                    false
                }
                Err(_) => true,
            });
            if pending.len() == before {
                for m in &pending {
                    if let Err(e) = self.modules.compile(&m.wasm, &m.host_modules) {
                        tracing::error!(name = m.name, "module not restored: {e}");
                    }
                }
                break;
            }
        }
        Ok(())
    }

    /// Registers a core module under `name`, for `host_modules` lists and
    /// calls by name.
    pub async fn register_module(
        &self,
        name: &str,
        wasm: Vec<u8>,
        host_modules: Vec<String>,
    ) -> Result<ModuleInfo, NodeError> {
        if !crate::registry::is_valid_name(name) {
            return Err(NodeError::Invalid(format!(
                "`{name}` is not a module name: use 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit"
            )));
        }
        if wasm.len() as u64 > self.limits.max_handler_size {
            return Err(NodeError::TooLarge(format!(
                "the module has {} bytes",
                wasm.len()
            )));
        }
        let module = self.modules.compile(&wasm, &host_modules)?;
        let exports = module.exports().map(|e| e.name().to_string()).collect();
        let info = ModuleInfo {
            name: name.to_string(),
            digest: hex::encode(Sha256::digest(&wasm)),
            size: wasm.len() as u64,
            exports,
        };
        let state = self.state.clone();
        let (owned, links) = (name.to_string(), host_modules.clone());
        blocking(move || state.put_module(&owned, &wasm, &links)).await??;
        self.modules.insert(
            name,
            RegisteredModule {
                module,
                host_modules,
            },
        );
        tracing::info!(name, "module registered");
        Ok(info)
    }

    /// Runs a WASI command job.
    pub async fn run_job(&self, request: JobRequest) -> Result<JobResult, NodeError> {
        if request
            .wasm
            .as_ref()
            .is_some_and(|w| w.len() as u64 > self.limits.max_handler_size)
        {
            return Err(NodeError::TooLarge(
                "the job's module is larger than --max-handler-size".into(),
            ));
        }
        let Ok(_permit) = self.calls.clone().try_acquire_owned() else {
            return Err(NodeError::Busy(
                "the node is running its most calls (--max-concurrent-calls); retry shortly".into(),
            ));
        };
        self.jobs.run(request, self.limits.handler_memory).await
    }

    /// Compiles `wasm` and calls `function` with the JSON array `params`.
    pub async fn run_module(
        &self,
        wasm: &[u8],
        function: &str,
        params: &str,
        host_modules: Vec<String>,
    ) -> Result<String, NodeError> {
        if wasm.len() as u64 > self.limits.max_handler_size {
            return Err(NodeError::TooLarge(format!(
                "the module has {} bytes",
                wasm.len()
            )));
        }
        let module = self.modules.compile(wasm, &host_modules)?;
        self.call_registered(
            &RegisteredModule {
                module,
                host_modules,
            },
            function,
            params,
        )
        .await
    }

    /// Calls `function` of the registered module `name`.
    pub async fn call_module(
        &self,
        name: &str,
        function: &str,
        params: &str,
    ) -> Result<String, NodeError> {
        let module = self
            .modules
            .get(name)
            .ok_or_else(|| NodeError::NotFound(format!("no module `{name}`")))?;
        self.call_registered(&module, function, params).await
    }

    async fn call_registered(
        &self,
        module: &RegisteredModule,
        function: &str,
        params: &str,
    ) -> Result<String, NodeError> {
        let params: Vec<serde_json::Value> = serde_json::from_str(params)
            .map_err(|e| NodeError::Invalid(format!("params must be a JSON array: {e}")))?;
        let Ok(_permit) = self.calls.clone().try_acquire_owned() else {
            return Err(NodeError::Busy(
                "the node is running its most calls (--max-concurrent-calls); retry shortly".into(),
            ));
        };
        let results = self
            .modules
            .call(
                module,
                function,
                &params,
                self.limits.call_timeout,
                self.limits.handler_memory,
            )
            .await?;
        Ok(serde_json::Value::from(results).to_string())
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub async fn check(&self, file: &str) -> Result<HandlerInfo, NodeError> {
        self.registry.check(file).await
    }

    /// Makes `NAME.wasm` the current version of handler `name`, with its own
    /// outbound allow list (which replaces any earlier one).
    pub async fn load(
        &self,
        name: &str,
        allow: Option<Vec<String>>,
    ) -> Result<HandlerInfo, NodeError> {
        let info = self.install(name, allow.clone()).await?;
        let state = self.state.clone();
        let owned = name.to_string();
        blocking(move || state.set_handler_outbound(&owned, allow.as_deref())).await??;
        tracing::info!(name, digest = %info.digest, "handler registered");
        Ok(info)
    }

    async fn install(
        &self,
        name: &str,
        allow: Option<Vec<String>>,
    ) -> Result<HandlerInfo, NodeError> {
        let rules = match &allow {
            Some(list) => Some(Arc::new(
                list.iter()
                    .map(|r| Rule::parse(r))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| NodeError::Invalid(format!("bad outbound rule: {e}")))?,
            )),
            None => None,
        };
        let (mut info, pre) = self.registry.prepare(name).await?;
        info.allow_outbound = allow;
        self.registry.install(Handler {
            info: info.clone(),
            pre,
            rules,
        });
        Ok(info)
    }

    /// Forgets a handler and deletes its schedules.
    pub async fn unload(&self, name: &str) -> Result<(), NodeError> {
        let state = self.state.clone();
        let owned = name.to_string();
        let ids = blocking(move || {
            state.set_handler_outbound(&owned, None)?;
            state.delete_jobs_of(&owned)
        })
        .await??;
        for id in &ids {
            self.scheduler.remove(id);
        }
        if !self.registry.unload(name) && ids.is_empty() {
            return Err(NodeError::NotFound(format!("no handler `{name}`")));
        }
        tracing::info!(name, "handler removed");
        Ok(())
    }

    pub fn handlers(&self) -> Vec<HandlerInfo> {
        self.registry.list()
    }

    pub fn handler(&self, name: &str) -> Option<HandlerInfo> {
        self.registry.get(name).map(|h| h.info.clone())
    }

    /// Runs a handler and records the run.
    pub async fn invoke(
        &self,
        name: &str,
        input: &str,
        trigger: Option<Trigger>,
    ) -> Result<String, NodeError> {
        let handler = self
            .registry
            .get(name)
            .ok_or_else(|| NodeError::NotFound(format!("no handler `{name}`")))?;
        // A client beyond the limit is told to come back; a cron tick waits
        // its turn (there is at most one per job).
        let permit = match trigger {
            Some(_) => self.calls.clone().acquire_owned().await.ok(),
            None => self.calls.clone().try_acquire_owned().ok(),
        };
        let Some(permit) = permit else {
            let busy = format!(
                "the node is running {} handler calls, its most (--max-concurrent-calls); retry shortly",
                self.limits.max_concurrent_calls
            );
            self.record_failure(name, trigger.as_ref(), &busy);
            return Err(NodeError::Busy(busy));
        };
        let started_at = now_ms();
        let limits = CallLimits {
            timeout: self.limits.call_timeout,
            memory: self.limits.handler_memory,
            max_captured_output: self.limits.max_captured_output,
            max_result: self.limits.max_result,
            policy: self.policy.clone(),
            rules: handler.rules.clone(),
        };
        // The call runs in a task of its own so that its fiber is not nested
        // inside the operator's.
        let input_owned = input.to_string();
        // A scheduled run learns which tick it is for.
        let env: Vec<(&str, String)> = match &trigger {
            Some(t) => vec![
                ("WASMATIC_JOB_ID", t.job_id.clone()),
                ("WASMATIC_SCHEDULED_FOR", t.scheduled_for.to_string()),
            ],
            None => Vec::new(),
        };
        let outcome = tokio::spawn(async move {
            let outcome = handler::call(&handler.pre, &input_owned, &env, &limits).await;
            drop(permit);
            outcome
        })
        .await
        .map_err(|e| NodeError::Internal(format!("handler task failed: {e}")))?;

        let (output, error) = match &outcome.result {
            Ok(output) => (Some(output.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let record = RunRecord {
            name: name.to_string(),
            job_id: trigger.as_ref().map(|t| t.job_id.clone()),
            scheduled_for: trigger.as_ref().map(|t| t.scheduled_for),
            started_at,
            duration_ms: outcome.duration.as_millis() as u64,
            ok: outcome.result.is_ok(),
            output,
            error,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
        };
        tracing::info!(
            name,
            ok = record.ok,
            duration_ms = record.duration_ms,
            job = trigger.as_ref().map(|t| t.job_id.as_str()),
            "handler ran"
        );
        self.runs.record(record);
        match outcome.result {
            Ok(output) => Ok(output),
            Err(CallError::TimedOut(m)) => {
                Err(NodeError::TimedOut(format!("handler `{name}` {m}")))
            }
            Err(CallError::Failed(m)) => {
                Err(NodeError::Failed(format!("handler `{name}` failed: {m}")))
            }
        }
    }

    /// Records a tick that was skipped because the previous run of its job
    /// was still going.
    pub fn record_skipped(&self, job: &Job, scheduled_for: u64) {
        tracing::warn!(job = job.id, name = job.name, "tick skipped");
        let trigger = Trigger {
            job_id: job.id.clone(),
            scheduled_for,
        };
        self.record_failure(
            &job.name,
            Some(&trigger),
            "skipped: the previous run of this job was still running",
        );
    }

    /// Records a run that never started.
    fn record_failure(&self, name: &str, trigger: Option<&Trigger>, error: &str) {
        let record = RunRecord {
            name: name.to_string(),
            job_id: trigger.map(|t| t.job_id.clone()),
            scheduled_for: trigger.map(|t| t.scheduled_for),
            started_at: now_ms(),
            duration_ms: 0,
            ok: false,
            output: None,
            error: Some(error.to_string()),
            stdout: String::new(),
            stderr: String::new(),
        };
        self.runs.record(record);
    }

    pub async fn schedule(&self, name: &str, cron: &str, input: &str) -> Result<Job, NodeError> {
        if self.registry.get(name).is_none() {
            return Err(NodeError::NotFound(format!("no handler `{name}`")));
        }
        let parsed = scheduler::parse_cron(cron).map_err(NodeError::Invalid)?;
        let created_at = now_ms();
        let record = JobRecord {
            id: new_job_id(name, cron, created_at),
            name: name.to_string(),
            cron: cron.trim().to_string(),
            input: input.to_string(),
            created_at,
        };
        let state = self.state.clone();
        let stored = record.clone();
        blocking(move || state.insert_job(&stored)).await??;
        let job = self.scheduler.add(record, parsed);
        tracing::info!(id = job.id, name, cron = job.cron, "schedule added");
        Ok(job)
    }

    pub async fn unschedule(&self, id: &str) -> Result<(), NodeError> {
        let state = self.state.clone();
        let owned = id.to_string();
        let existed = blocking(move || state.delete_job(&owned)).await??;
        self.scheduler.remove(id);
        if !existed {
            return Err(NodeError::NotFound(format!("no schedule `{id}`")));
        }
        tracing::info!(id, "schedule removed");
        Ok(())
    }

    pub fn jobs(&self) -> Vec<Job> {
        self.scheduler.jobs()
    }

    pub async fn handler_runs(&self, name: &str, limit: u32) -> Result<Vec<RunRecord>, NodeError> {
        self.runs.flushed().await;
        let state = self.state.clone();
        let owned = name.to_string();
        let runs = blocking(move || state.runs_of_handler(&owned, limit)).await??;
        if runs.is_empty() && self.registry.get(name).is_none() {
            return Err(NodeError::NotFound(format!("no handler `{name}`")));
        }
        Ok(runs)
    }

    pub async fn job_runs(&self, id: &str, limit: u32) -> Result<Vec<RunRecord>, NodeError> {
        self.runs.flushed().await;
        let state = self.state.clone();
        let owned = id.to_string();
        let (exists, runs) = blocking(move || {
            Ok::<_, StateError>((state.job_exists(&owned)?, state.runs_of_job(&owned, limit)?))
        })
        .await??;
        if !exists && runs.is_empty() {
            return Err(NodeError::NotFound(format!("no schedule `{id}`")));
        }
        Ok(runs)
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

fn new_job_id(name: &str, cron: &str, created_at: u64) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "{name}\0{cron}\0{created_at}\0{n}\0{}",
        std::process::id()
    ));
    hex::encode(&hasher.finalize()[..8])
}
