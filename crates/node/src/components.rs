//! Registered components: staging and committing them, running them, and
//! recording every run.
//!
//! The path of `POST /run/NAME`, after the operator: `invoke` finds the
//! component, `run` takes a call slot, runs it in a task of its own
//! (`handler::call`: a store, an instance, the call, all under one budget),
//! records the run and maps the outcome to a `NodeError`.

use std::sync::Arc;

use anyhow::Context as _;

use super::settings::{check_settings, not_a_handler, resolve_export};
use super::{blocking, CallTask, Node, TickId};
use wasmatic_api::is_valid_name;
use wasmatic_api::NodeError;
use wasmatic_guests::handler::{self, CallError, CallLimits, Compiled, Entry, Guest};
use wasmatic_guests::registry::{Handler, HandlerInfo, Runnable, Staged};
use wasmatic_net::Rule;
use wasmatic_sandbox::pool::Reuse;
use wasmatic_state::now_ms;
use wasmatic_state::{ComponentRecord, HandlerSettings, RunPage, RunRecord};

/// Most runs one page may ask for.
pub const MAX_PAGE: u32 = 1000;

/// One call of a registered component, as [`Node::run`] takes it.
pub(super) struct Call {
    pub handler: Arc<Handler>,
    pub entry: Entry,
    /// The tick a scheduled run is for.
    pub tick: Option<TickId>,
    /// The export called by name, if any.
    pub function: Option<String>,
    /// The call's slot (a client's or a tick's), held until the guest is
    /// done.
    pub permit: tokio::sync::OwnedSemaphorePermit,
    pub task: CallTask,
}

impl Node {
    /// Reads, validates and compiles `file` from the registered directory
    /// and checks `settings`, without making anything current. The bytes
    /// stay staged by digest for [`Node::commit`].
    pub async fn stage(
        &self,
        file: &str,
        settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        let (settings, _) = check_settings(settings)?;
        let staged = self.registry.stage(file).await?;
        self.staged_info(staged, settings)
    }

    /// As [`Node::stage`], with the bytes given rather than read from the
    /// registered directory.
    pub async fn stage_bytes(
        &self,
        bytes: Vec<u8>,
        settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        let (settings, _) = check_settings(settings)?;
        let staged = self.registry.stage_bytes(bytes).await?;
        self.staged_info(staged, settings)
    }

    /// What a staged component would be with `settings`, its links checked.
    fn staged_info(
        &self,
        staged: Staged,
        mut settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        settings.links = self
            .registry
            .check_links("", &staged.bytes, &settings.links)?;
        let code = (staged.digest.as_str(), staged.bytes.len());
        Ok(HandlerInfo::new(
            "",
            code,
            &staged.compiled,
            &settings,
            now_ms(),
        ))
    }

    /// Makes the staged (or already stored) component `digest` current
    /// under `name` with `settings`: durably first, then in memory.
    pub async fn commit(
        &self,
        name: &str,
        digest: &str,
        settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        check_name(name)?;
        let (settings, rules) = check_settings(settings)?;
        let (code, alone) = match self.registry.staged(digest) {
            Some(staged) => ((staged.digest, staged.bytes), Some(staged.compiled)),
            None => (self.stored(digest).await?, None),
        };
        self.make_current(name, code, alone, settings, rules.map(Arc::new))
            .await
    }

    /// Registers `bytes` under `name` with `settings` in one step: what
    /// [`Node::stage_bytes`] then [`Node::commit`] do, with the settings and
    /// the links checked once, nothing left staged, and the component
    /// compiled once: alone, or composed with its links (whose types are
    /// read without compiling).
    pub async fn register(
        &self,
        name: &str,
        bytes: Vec<u8>,
        settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        check_name(name)?;
        let (settings, rules) = check_settings(settings)?;
        let code = self.registry.accept(bytes)?;
        self.make_current(name, code, None, settings, rules.map(Arc::new))
            .await
    }

    /// Makes the component of `code` (its digest and bytes; `alone`, its
    /// compiled form if it was staged) current under `name`, its settings
    /// checked (`rules` are their outbound rules): its links checked and
    /// composed, durably first, then in memory.
    async fn make_current(
        &self,
        name: &str,
        (digest, bytes): (String, Arc<[u8]>),
        alone: Option<Compiled>,
        mut settings: HandlerSettings,
        rules: Option<Arc<Vec<Rule>>>,
    ) -> Result<HandlerInfo, NodeError> {
        let digest = digest.as_str();
        let _changes = self.changes.lock().await;
        if self.modules.get(name).is_some() {
            return Err(NodeError::Conflict(format!(
                "`{name}` is a core module; remove it (DELETE /modules/{name}) or choose another name"
            )));
        }
        let max = self.state_limits.max_components;
        if self.registry.get(name).is_none() && self.registry.count() >= max {
            return Err(NodeError::Busy(format!(
                "the node holds {max} components, its most (--max-components); remove one first"
            )));
        }
        let (runnable, links) = self
            .registry
            .link(name, digest, &bytes, alone, &settings.links)
            .await?;
        settings.links = links;
        if let Some(current) = self.registry.get(name) {
            if current.info.digest == digest && current.settings == settings {
                return Ok(current.info.clone());
            }
        }
        self.check_dependents(name, &bytes)?;
        let record = ComponentRecord {
            name: name.to_string(),
            digest: digest.to_string(),
            settings,
            loaded_at: now_ms(),
        };
        let state = self.state.clone();
        let stored = record.clone();
        blocking(move || state.commit_component(&stored, &bytes)).await??;
        self.registry.unstage(digest);
        let handler = self.install(&record, runnable, rules);
        self.relink_dependents(name).await;
        tracing::info!(
            name,
            digest,
            handler = handler.info.is_handler,
            "component registered"
        );
        Ok(handler.info.clone())
    }

    /// The digest and bytes of a component that is not staged but already
    /// stored (registered under another name, say).
    pub(super) async fn stored(&self, digest: &str) -> Result<(String, Arc<[u8]>), NodeError> {
        let state = self.state.clone();
        let owned = digest.to_string();
        let bytes = blocking(move || state.blob(&owned))
            .await??
            .ok_or_else(|| {
                NodeError::NotFound(format!(
                    "no staged component has digest `{digest}`: stage it first"
                ))
            })?;
        self.registry.accept(bytes)
    }

    /// Makes a stored version current in memory, as `runnable` (composed
    /// with its links), its settings checked (`rules` are their outbound
    /// rules).
    pub(super) fn install(
        &self,
        record: &ComponentRecord,
        runnable: Runnable,
        rules: Option<Arc<Vec<Rule>>>,
    ) -> Arc<Handler> {
        let settings = record.settings.clone();
        let code = (record.digest.as_str(), runnable.original.len());
        let info = HandlerInfo::new(
            &record.name,
            code,
            &runnable.compiled,
            &settings,
            record.loaded_at,
        );
        self.registry.install(Handler {
            info,
            compiled: runnable.compiled,
            code: runnable.code,
            original: runnable.original,
            rules,
            pool: self.engines.pools.guests(Reuse {
                max_uses: settings.reuse as usize,
                idle_timeout: self.limits.idle_instance_timeout,
            }),
            guest: Arc::new(Guest {
                name: record.name.clone(),
                config: settings.config.clone(),
            }),
            settings,
        })
    }

    /// Forgets a component, its schedules and its runs.
    pub async fn remove(&self, name: &str) -> Result<(), NodeError> {
        check_name(name)?;
        let _changes = self.changes.lock().await;
        let dependents = self.registry.dependents(name);
        if !dependents.is_empty() {
            let uses: Vec<String> = dependents
                .iter()
                .map(|(d, link)| format!("`{d}` ({})", link.interface))
                .collect();
            return Err(NodeError::Conflict(format!(
                "`{name}` provides imports of {}: remove those or register them without the link first",
                uses.join(", ")
            )));
        }
        let state = self.state.clone();
        let owned = name.to_string();
        let (existed, jobs) = blocking(move || state.remove_component(&owned)).await??;
        for id in &jobs {
            self.scheduler.remove(id);
        }
        if !self.registry.unload(name) && !existed {
            return Err(NodeError::NotFound(format!("no handler `{name}`")));
        }
        tracing::info!(name, "component removed");
        wasmatic_metrics::forget_handler(name);
        Ok(())
    }

    /// Loads every stored component, each after the providers it links to;
    /// one that cannot be loaded is logged and skipped (it stays stored).
    pub(super) async fn restore_components(&self) -> anyhow::Result<()> {
        for record in providers_first(self.state.components()?) {
            match self.load(&record).await {
                Ok(()) => tracing::info!(
                    name = record.name,
                    digest = record.digest,
                    "component loaded"
                ),
                Err(e) => tracing::error!(name = record.name, "component not loaded: {e}"),
            }
        }
        Ok(())
    }

    /// Makes a stored component current in memory: compiled from its
    /// stored bytes (or this node's compiled cache) and composed with its
    /// links.
    pub(super) async fn load(&self, record: &ComponentRecord) -> Result<(), NodeError> {
        let (digest, bytes) = self.stored(&record.digest).await?;
        let (runnable, _) = self
            .registry
            .link(&record.name, &digest, &bytes, None, &record.settings.links)
            .await?;
        let (_, rules) = check_settings(record.settings.clone())?;
        self.install(record, runnable, rules.map(Arc::new));
        Ok(())
    }

    /// Imports the component files an older node kept in the registered
    /// directory (with the settings it kept for them) and removes each file
    /// once its component is stored.
    pub(super) async fn import_legacy_files(&self) -> anyhow::Result<()> {
        let names = self
            .registry
            .scan_legacy()
            .with_context(|| format!("cannot read {}", self.registry.dir().display()))?;
        // A name the state already has is not overwritten by a stray file.
        let known: std::collections::HashSet<String> = self
            .state
            .components()?
            .into_iter()
            .map(|c| c.name)
            .collect();
        for name in names {
            if known.contains(&name) {
                tracing::warn!(
                    name,
                    "ignoring registered/{name}.wasm: the node's state already has `{name}`"
                );
                continue;
            }
            let imported = async {
                let bytes = self.registry.read_legacy(&name).await?;
                let (digest, bytes) = self.registry.accept(bytes)?;
                let record = ComponentRecord {
                    name: name.clone(),
                    digest,
                    settings: self.state.legacy_settings(&name)?,
                    loaded_at: now_ms(),
                };
                self.state.commit_component(&record, &bytes)?;
                Ok::<_, NodeError>(())
            };
            match imported.await {
                Ok(()) => {
                    let file = self.registry.dir().join(format!("{name}.wasm"));
                    if let Err(e) = std::fs::remove_file(&file) {
                        tracing::warn!(name, "imported, but cannot remove the old file: {e}");
                    }
                    tracing::info!(name, "component imported from the registered directory");
                }
                Err(e) => tracing::error!(name, "component file not imported: {e}"),
            }
        }
        Ok(())
    }

    pub fn handlers(&self) -> Vec<HandlerInfo> {
        self.registry.list()
    }

    pub fn handler(&self, name: &str) -> Option<HandlerInfo> {
        self.registry.get(name).map(|h| h.info.clone())
    }

    /// Runs a handler for a client and records the run.
    pub async fn invoke(&self, name: &str, input: &str) -> Result<String, NodeError> {
        let handler = self.runnable_handler(name)?;
        let permit = self.call_slot(name, None).await?;
        self.run(Call {
            handler,
            entry: Entry::Handler(input.to_string()),
            tick: None,
            function: None,
            permit,
            task: CallTask::Own,
        })
        .await
    }

    /// The registered handler `name`, if it is of the handler world.
    pub(super) fn runnable_handler(&self, name: &str) -> Result<Arc<Handler>, NodeError> {
        let handler = self
            .registry
            .get(name)
            .ok_or_else(|| NodeError::NotFound(format!("no handler `{name}`")))?;
        if handler.compiled.handler.is_none() {
            return Err(not_a_handler(&handler.info));
        }
        Ok(handler)
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
        // The slot first: parsing the arguments is most of what a call
        // costs before its guest runs, and slots bound how many do it.
        let permit = self.call_slot(name, Some(export)).await?;
        let entry = resolve_export(&handler, export, args)?;
        self.run(Call {
            handler,
            entry,
            tick: None,
            function: Some(export.to_string()),
            permit,
            task: CallTask::Own,
        })
        .await
    }

    /// A client's call slot, or `Busy` (recorded as a failed run of `name`).
    async fn call_slot(
        &self,
        name: &str,
        function: Option<&str>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, NodeError> {
        let slot = self.client_slot();
        if let Err(busy) = &slot {
            wasmatic_metrics::handler_call(name, wasmatic_metrics::Outcome::Busy, None);
            self.record_failure(name, None, function.map(str::to_string), &busy.to_string())
                .await;
        }
        slot
    }

    /// Runs one call of a registered component and records it.
    pub(super) async fn run(&self, call: Call) -> Result<String, NodeError> {
        let (record, result) = self.execute(call).await?;
        self.runs.record(record).await;
        result
    }

    /// Runs one call of a registered component in its task and answers its
    /// run record, unrecorded, beside its result: a chain trigger commits
    /// the record with its cursor.
    pub(super) async fn execute(
        &self,
        call: Call,
    ) -> Result<(RunRecord, Result<String, NodeError>), NodeError> {
        let Call {
            handler,
            entry,
            tick: trigger,
            function,
            permit,
            task,
        } = call;
        let name = handler.info.name.clone();
        let started_at = now_ms();
        let limits = CallLimits {
            timeout: self.limits.call_timeout,
            memory: self.limits.handler_memory,
            max_captured_output: self.limits.max_captured_output,
            max_result: self.limits.max_result,
            policy: self.policy.clone(),
            rules: handler.rules.clone(),
            flags: self.engines.flags,
            chains: self.chains.clone(),
        };
        // A scheduled run learns which tick it is for.
        let env: Vec<(&str, String)> = match &trigger {
            Some(t) => vec![
                ("WASMATIC_JOB_ID", t.job_id.clone()),
                ("WASMATIC_SCHEDULED_FOR", t.scheduled_for.to_string()),
            ],
            None => Vec::new(),
        };
        wasmatic_metrics::schedule_lateness(
            trigger.as_ref().map(|t| (t.scheduled_for, started_at)),
        );
        // The task logs under the request that asked for the call, if any.
        let call = tracing::Instrument::in_current_span(async move {
            let _in_use = wasmatic_metrics::InUse::start(wasmatic_metrics::Pool::Component);
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
        });
        // Boxed before it is spawned: the call's future is about 4 KB, and
        // spawning moves it by value through several frames; a box moves as
        // a pointer (a profile of 1000 ticks a second put 13% of the node's
        // CPU in memmove before it was boxed).
        let outcome = match task {
            CallTask::Own => tokio::spawn(Box::pin(call))
                .await
                .map_err(|e| NodeError::Internal(format!("the call's task failed: {e}")))?,
            CallTask::Callers => call.await,
        };

        let (output, error) = match &outcome.result {
            Ok(output) => (Some(output.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        wasmatic_metrics::handler_call(&name, outcome.metric(), Some(outcome.duration));
        let record = RunRecord {
            id: 0,
            name: name.clone(),
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
            rpc: outcome.rpc,
        };
        tracing::info!(
            name,
            ok = record.ok,
            duration_ms = record.duration_ms,
            job = trigger.as_ref().map(|t| t.job_id.as_str()),
            "guest ran"
        );
        let result = match outcome.result {
            Ok(output) => Ok(output),
            Err(CallError::TimedOut(m)) => Err(NodeError::TimedOut(format!("`{name}` {m}"))),
            Err(CallError::Failed(m)) => Err(NodeError::Failed(format!("`{name}` failed: {m}"))),
        };
        Ok((record, result))
    }

    /// Records a run that never started.
    pub(super) async fn record_failure(
        &self,
        name: &str,
        trigger: Option<&TickId>,
        function: Option<String>,
        error: &str,
    ) {
        let record = RunRecord {
            id: 0,
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
            rpc: Vec::new(),
        };
        self.runs.record(record).await;
    }

    /// A page of the runs of component `name`.
    pub async fn handler_runs(
        &self,
        name: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, NodeError> {
        self.runs.readable().await;
        let state = self.state.clone();
        let owned = name.to_string();
        let limit = limit.clamp(1, MAX_PAGE);
        let page = blocking(move || state.runs_of_handler(&owned, limit, before)).await??;
        if page.runs.is_empty() && self.registry.get(name).is_none() {
            return Err(NodeError::NotFound(format!("no handler `{name}`")));
        }
        Ok(page)
    }
}

/// `records` ordered so that each comes after the providers it links to
/// (a depth-first walk; links stored with no cycle, a cycle is only cut).
pub(super) fn providers_first(records: Vec<ComponentRecord>) -> Vec<ComponentRecord> {
    let by_name: std::collections::HashMap<&str, &ComponentRecord> =
        records.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut done: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut ordered = Vec::with_capacity(records.len());
    for record in &records {
        let mut stack = vec![(record.name.as_str(), false)];
        while let Some((name, expanded)) = stack.pop() {
            if done.contains(name) {
                continue;
            }
            let Some(record) = by_name.get(name) else {
                continue;
            };
            if expanded {
                done.insert(name);
                ordered.push((*record).clone());
                continue;
            }
            stack.push((name, true));
            for link in &record.settings.links {
                if !done.contains(link.provider.as_str()) && stack.len() <= records.len() {
                    stack.push((link.provider.as_str(), false));
                }
            }
        }
    }
    ordered
}

fn check_name(name: &str) -> Result<(), NodeError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(NodeError::Invalid(format!(
            "`{name}` is not a name: {}",
            wasmatic_api::NAME_RULE
        )))
    }
}
