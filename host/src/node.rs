//! What the host does for its operator: the registry of handlers, their runs
//! and their schedules, behind one API with typed errors. The host interface
//! (`operator_host`) is a thin translation of this into WIT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::Engine;

use crate::handler::{self, CallError, CallLimits, Entry, Guest, InstancePool};
use crate::jobs::{JobRequest, JobResult, Jobs};
use crate::limits::Limits;
use crate::modules::{Modules, RegisteredModule};
use crate::outbound::{Policy, Rule};
use crate::pool::Reuse;
use crate::registry::{Handler, HandlerInfo, Registry};
use crate::run_log::RunLog;
use crate::scheduler::{self, Job, Scheduler};
use crate::state::{HandlerSettings, JobRecord, RunRecord, StateDb, StateError};

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
            let settings = node.state.handler_settings(name)?;
            match node.install(name, settings).await {
                Ok(h) => tracing::info!(name, digest = %h.info.digest, "handler loaded"),
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
            .ok_or_else(|| NodeError::NotFound(format!("no component or core module `{name}`")))?;
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

    /// Validates and compiles `file`, and the options it would be loaded
    /// with, without making anything current.
    pub async fn check(
        &self,
        file: &str,
        settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        let (settings, _) = check_settings(settings)?;
        let mut info = self.registry.check(file).await?;
        info.apply(&settings);
        Ok(info)
    }

    /// Makes `NAME.wasm` the current version of `name`, with its settings
    /// (which replace any earlier ones).
    pub async fn load(
        &self,
        name: &str,
        settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        let previous = self.registry.get(name).map(|h| h.settings.clone());
        let handler = self.install(name, settings).await?;
        // Registering again with the same settings (the common case) need
        // not wait for a durable write.
        if previous.as_ref() != Some(&handler.settings) {
            let state = self.state.clone();
            let owned = name.to_string();
            let settings = handler.settings.clone();
            blocking(move || state.set_handler_settings(&owned, &settings)).await??;
        }
        let info = handler.info.clone();
        tracing::info!(name, digest = %info.digest, handler = info.is_handler, "component registered");
        Ok(info)
    }

    async fn install(
        &self,
        name: &str,
        settings: HandlerSettings,
    ) -> Result<Arc<Handler>, NodeError> {
        let (settings, rules) = check_settings(settings)?;
        let (mut info, compiled) = self.registry.prepare(name).await?;
        info.apply(&settings);
        Ok(self.registry.install(Handler {
            info,
            compiled,
            rules: rules.map(Arc::new),
            pool: InstancePool::new(Reuse {
                max_uses: settings.reuse as usize,
                idle_timeout: self.limits.idle_instance_timeout,
            }),
            guest: Arc::new(Guest {
                name: name.to_string(),
                config: settings.config.clone(),
            }),
            settings,
        }))
    }

    /// Forgets a handler and deletes its schedules.
    pub async fn unload(&self, name: &str) -> Result<(), NodeError> {
        let state = self.state.clone();
        let owned = name.to_string();
        let ids = blocking(move || {
            state.set_handler_settings(&owned, &HandlerSettings::default())?;
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
        if handler.compiled.handler.is_none() {
            return Err(not_a_handler(&handler.info));
        }
        self.run(handler, Entry::Handler(input.to_string()), trigger, None)
            .await
    }

    /// Calls the function `export` of component `name` with the JSON array
    /// `args`, and records the run; answers the result as JSON text.
    pub async fn call_component(
        &self,
        name: &str,
        export: &str,
        args: &str,
    ) -> Result<String, NodeError> {
        let handler = self
            .registry
            .get(name)
            .ok_or_else(|| NodeError::NotFound(format!("no component `{name}`")))?;
        let entry = resolve_export(&handler, export, args)?;
        self.run(handler, entry, None, Some(export.to_string()))
            .await
    }

    /// Runs a call of a registered component and records it; `function` is
    /// the export called by name, if any.
    async fn run(
        &self,
        handler: Arc<Handler>,
        entry: Entry,
        trigger: Option<Trigger>,
        function: Option<String>,
    ) -> Result<String, NodeError> {
        let name = handler.info.name.clone();
        let name = name.as_str();
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
            self.record_failure(name, trigger.as_ref(), function, &busy);
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
        // A scheduled run learns which tick it is for.
        let env: Vec<(&str, String)> = match &trigger {
            Some(t) => vec![
                ("WASMATIC_JOB_ID", t.job_id.clone()),
                ("WASMATIC_SCHEDULED_FOR", t.scheduled_for.to_string()),
            ],
            None => Vec::new(),
        };
        let outcome = tokio::spawn(async move {
            let outcome = handler::call(
                &handler.compiled,
                &handler.pool,
                entry,
                handler.guest.clone(),
                &env,
                &limits,
            )
            .await;
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
            function,
            job_id: trigger.as_ref().map(|t| t.job_id.clone()),
            scheduled_for: trigger.as_ref().map(|t| t.scheduled_for),
            started_at,
            duration_ms: outcome.duration.as_millis() as u64,
            ok: outcome.result.is_ok(),
            output,
            error,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            audit: outcome.audit,
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
            Err(CallError::TimedOut(m)) => Err(NodeError::TimedOut(format!("`{name}` {m}"))),
            Err(CallError::Failed(m)) => Err(NodeError::Failed(format!("`{name}` failed: {m}"))),
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
            None,
            "skipped: the previous run of this job was still running",
        );
    }

    /// Records a run that never started.
    fn record_failure(
        &self,
        name: &str,
        trigger: Option<&Trigger>,
        function: Option<String>,
        error: &str,
    ) {
        let record = RunRecord {
            name: name.to_string(),
            function,
            job_id: trigger.map(|t| t.job_id.clone()),
            scheduled_for: trigger.map(|t| t.scheduled_for),
            started_at: now_ms(),
            duration_ms: 0,
            ok: false,
            output: None,
            error: Some(error.to_string()),
            stdout: String::new(),
            stderr: String::new(),
            audit: Vec::new(),
        };
        self.runs.record(record);
    }

    pub async fn schedule(&self, name: &str, cron: &str, input: &str) -> Result<Job, NodeError> {
        match self.registry.get(name) {
            None => return Err(NodeError::NotFound(format!("no handler `{name}`"))),
            Some(h) if h.compiled.handler.is_none() => return Err(not_a_handler(&h.info)),
            Some(_) => {}
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

/// A component's own outbound allow list, parsed.
fn parse_rules(allow: Option<&[String]>) -> Result<Option<Vec<Rule>>, NodeError> {
    allow
        .map(|list| {
            list.iter()
                .map(|r| Rule::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| NodeError::Invalid(format!("bad outbound rule: {e}")))
        })
        .transpose()
}

/// Most configuration pairs a component may have, and most bytes in all.
const MAX_CONFIG_PAIRS: usize = 64;
const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Most calls one instance of a component may serve.
pub const MAX_REUSE: u32 = 10_000;

/// Checks a component's settings; sorts its configuration by key.
/// Answers them with the parsed outbound rules.
fn check_settings(
    mut settings: HandlerSettings,
) -> Result<(HandlerSettings, Option<Vec<Rule>>), NodeError> {
    let rules = parse_rules(settings.allow.as_deref())?;
    if !(1..=MAX_REUSE).contains(&settings.reuse) {
        return Err(NodeError::Invalid(format!(
            "reuse must be from 1 (a fresh instance for every call) to {MAX_REUSE}, not {}",
            settings.reuse
        )));
    }
    settings.config = check_config(settings.config)?;
    Ok((settings, rules))
}

/// Checks a configuration and sorts it by key.
fn check_config(mut config: Vec<(String, String)>) -> Result<Vec<(String, String)>, NodeError> {
    if config.len() > MAX_CONFIG_PAIRS {
        return Err(NodeError::Invalid(format!(
            "{} configuration pairs; at most {MAX_CONFIG_PAIRS} are allowed",
            config.len()
        )));
    }
    let bytes: usize = config.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_CONFIG_BYTES {
        return Err(NodeError::TooLarge(format!(
            "the configuration has {bytes} bytes; at most {MAX_CONFIG_BYTES} are allowed"
        )));
    }
    for (key, value) in &config {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(NodeError::Invalid(format!(
                "`{key}={value}` is not a configuration pair: use KEY=VALUE, with a key that is not empty and holds no `=`"
            )));
        }
    }
    config.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = config.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(NodeError::Invalid(format!(
            "configuration key `{}` is given twice",
            pair[0].0
        )));
    }
    Ok(config)
}

/// The error for running or scheduling a component of another world.
fn not_a_handler(info: &HandlerInfo) -> NodeError {
    let exports: Vec<&str> = info.exports.iter().map(|e| e.name.as_str()).collect();
    NodeError::Invalid(format!(
        "`{}` is not of the handler world (it does not export `handler: func(input: string) -> string`): call its exports with POST /call/{}/FUNC; it exports {}",
        info.name,
        info.name,
        if exports.is_empty() {
            "no functions".to_string()
        } else {
            exports.join(", ")
        }
    ))
}

/// Finds the function `export` of a component (`func`, `interface.func`, or
/// `short.func` where `short` is the interface's name without its package
/// and version) and converts the JSON array `args` to its parameters.
fn resolve_export(handler: &Handler, export: &str, args: &str) -> Result<Entry, NodeError> {
    let component = handler.compiled.pre.component();
    let name = &handler.info.name;
    let known: Vec<&str> = handler
        .info
        .exports
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let not_found = || {
        NodeError::NotFound(format!(
            "`{name}` has no exported function `{export}`; it exports {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    };
    // Function names hold no dots; interface names may (versions do).
    let (found, func_name) = match export.rsplit_once('.') {
        None => (component.get_export(None, export), export),
        Some((interface, func)) => {
            let full = handler
                .info
                .exports
                .iter()
                .filter_map(|e| e.name.rsplit_once('.').map(|(i, _)| i))
                .find(|i| *i == interface || short_interface_name(i) == interface)
                .ok_or_else(not_found)?;
            let (_, instance) = component.get_export(None, full).ok_or_else(not_found)?;
            (component.get_export(Some(&instance), func), func)
        }
    };
    let Some((wasmtime::component::types::ComponentItem::ComponentFunc(func), index)) = found
    else {
        return Err(not_found());
    };
    let signature = crate::values::signature(func_name, &func);
    let args: Vec<serde_json::Value> = serde_json::from_str(args).map_err(|e| {
        NodeError::Invalid(format!(
            "the arguments must be a JSON array ({e}); `{export}` is `{signature}`"
        ))
    })?;
    let args = crate::values::args_from_json(&func, &args)
        .map_err(|e| NodeError::Invalid(format!("`{signature}`: {e}")))?;
    let results = func.results().len();
    Ok(Entry::Export {
        index,
        args,
        results,
    })
}

/// `cipher` for `example:caesar/cipher@0.1.0`.
fn short_interface_name(full: &str) -> &str {
    let path = full.rsplit_once('/').map_or(full, |(_, p)| p);
    path.split_once('@').map_or(path, |(p, _)| p)
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
