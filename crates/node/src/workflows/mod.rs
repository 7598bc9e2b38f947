//! JSON workflows: storing them, their triggers, and running them.
//!
//! A definition is parsed and checked when it is posted (`wasmatic_workflows`)
//! against what the node knows, stored as JSON, and its trigger installed:
//! a cron line becomes a timer of the node's scheduler (id
//! `workflow:NAME`), whose tick is skipped, and recorded as such, while the
//! previous run still goes; a chain event becomes a chain trigger named
//! `workflow:NAME`, with the durable cursor of every trigger. A run goes
//! step by step (`workflow_steps`), each under the limits of a single call
//! plus the run's own time limit, and is recorded with its steps.

pub(crate) mod secrets;
mod steps;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::blocking;
use crate::components::Components;
use crate::core::Core;
use crate::scheduler;
use wasmatic_api::NodeError;
use wasmatic_chain::triggers::Event;
use wasmatic_state::now_ms;
use wasmatic_state::Target;
use wasmatic_state::{ScheduleRecord, WorkflowRecord, WorkflowRun};
use wasmatic_workflows::{self as workflows, Scope, StepKind, Workflow, WorkflowTrigger};

/// The error a run is recorded with when it starts, until it ends: the
/// API shows such a run as `"running": true`.
const STILL_RUNNING: &str = "still running";

/// Workflows a node holds at most.
const MAX_WORKFLOWS: usize = 1000;

/// The longest a whole run may take, whatever its steps ask.
const MAX_RUN_TIME: Duration = Duration::from_secs(120);

/// Workflows: their definitions (checked against what the node knows),
/// their runs step by step, and the secrets their steps use.
pub struct Workflows {
    pub(crate) core: Arc<Core>,
    components: Arc<Components>,
}

impl Workflows {
    pub(crate) fn new(core: Arc<Core>, components: Arc<Components>) -> Self {
        Workflows { core, components }
    }

    /// Checks a workflow definition against what the node knows and
    /// against its caps, and keeps the jobs it names by hash with the
    /// state (a restart still finds them). The caller holds the node's
    /// `changes` lock. Answers the workflow and its text to store.
    pub(crate) async fn prepare(&self, definition: &str) -> Result<(Workflow, String), NodeError> {
        let workflow =
            workflows::parse(definition.as_bytes(), &Known(self)).map_err(NodeError::Invalid)?;
        let text = serde_json::to_string(&workflow)
            .map_err(|e| NodeError::Internal(format!("cannot store the workflow: {e}")))?;
        self.check_workflow_caps(&workflow).await?;
        for hash in job_hashes(&workflow) {
            if let Some(bytes) = self.core.jobs.bytes_of(&hash) {
                let state = self.core.state.clone();
                blocking(move || state.put_job_blob(&hash, &bytes)).await??;
            }
        }
        Ok((workflow, text))
    }

    /// Stores a prepared workflow, replacing one of the same name (its
    /// history stays), drops the trigger of the one replaced and puts a
    /// cron trigger on the timer. A chain trigger is the caller's to start.
    pub(crate) async fn store(&self, workflow: &Workflow, text: String) -> Result<(), NodeError> {
        let state = self.core.state.clone();
        let name = workflow.name.clone();
        blocking(move || state.put_workflow(&name, &text, now_ms())).await??;
        self.remove_workflow_trigger(&workflow.name).await?;
        if let Some(WorkflowTrigger::Cron(line)) = &workflow.trigger {
            self.add_workflow_timer(&workflow.name, line, now_ms())
                .map_err(NodeError::Invalid)?;
        }
        Ok(())
    }

    /// A new workflow must fit the node's count of workflows, and a new
    /// cron trigger its count of schedules (`--max-schedules`, which
    /// handlers' schedules share).
    async fn check_workflow_caps(&self, workflow: &Workflow) -> Result<(), NodeError> {
        let state = self.core.state.clone();
        let stored = blocking(move || state.workflows()).await??;
        let replacing = stored.iter().any(|w| w.name == workflow.name);
        if !replacing && stored.len() >= MAX_WORKFLOWS {
            return Err(NodeError::Busy(format!(
                "the node holds {MAX_WORKFLOWS} workflows, its most; remove one first"
            )));
        }
        if let Some(WorkflowTrigger::Cron(_)) = &workflow.trigger {
            let id = Target::Workflow(&workflow.name).stored();
            let has_timer = self.core.scheduler.schedules().iter().any(|j| j.id == id);
            let max = self.core.state_limits.max_schedules;
            if !has_timer && self.core.scheduler.count() >= max {
                return Err(NodeError::Busy(format!(
                    "the node holds {max} schedules, its most (--max-schedules; workflows' cron triggers count); remove one first"
                )));
            }
        }
        Ok(())
    }

    /// Workflow `name` as JSON, with when it was created and last replaced.
    pub async fn workflow(&self, name: &str) -> Option<String> {
        let state = self.core.state.clone();
        let owned = name.to_string();
        let record = blocking(move || state.workflow(&owned))
            .await
            .ok()?
            .ok()??;
        Some(shown(&record).to_string())
    }

    /// Every workflow, by name, as a JSON array.
    pub async fn workflows(&self) -> String {
        let state = self.core.state.clone();
        match blocking(move || state.workflows()).await {
            Ok(Ok(records)) => {
                Value::from(records.iter().map(shown).collect::<Vec<_>>()).to_string()
            }
            _ => "[]".to_string(),
        }
    }

    /// Forgets workflow `name`, its trigger and its history.
    pub async fn remove_workflow(&self, name: &str) -> Result<(), NodeError> {
        let _changes = self.core.changes.lock().await;
        self.remove_workflow_trigger(name).await?;
        let state = self.core.state.clone();
        let owned = name.to_string();
        if !blocking(move || state.remove_workflow(&owned)).await?? {
            return Err(NodeError::NotFound(format!("no workflow `{name}`")));
        }
        // The jobs kept for it go, unless another workflow names them.
        let state = self.core.state.clone();
        let remaining = blocking(move || state.workflows()).await??;
        let named: Vec<String> = remaining
            .iter()
            .filter_map(|r| workflows::parse(r.definition.as_bytes(), &workflows::Trusted).ok())
            .flat_map(|w| job_hashes(&w))
            .collect();
        let state = self.core.state.clone();
        blocking(move || state.keep_only_job_blobs(&named)).await??;
        tracing::info!(name, "workflow removed");
        Ok(())
    }

    /// Runs workflow `name` for a client, with `trigger` (JSON text). The
    /// run goes on in a task of its own: a client that leaves, or a request
    /// cut at the operator's time limit, does not leave it half-recorded
    /// (`running` for ever); it finishes within its own limit.
    pub async fn run_workflow_on_request(
        self: &Arc<Self>,
        name: &str,
        trigger: &str,
    ) -> Result<String, NodeError> {
        let trigger: Value = serde_json::from_str(trigger)
            .map_err(|e| NodeError::Invalid(format!("the trigger is not JSON: {e}")))?;
        let (node, owned) = (self.clone(), name.to_string());
        let run = tokio::spawn(tracing::Instrument::in_current_span(async move {
            node.run_workflow(&owned, trigger, "request").await
        }));
        let run = run
            .await
            .map_err(|e| NodeError::Internal(format!("the workflow run failed: {e}")))??;
        Ok(run.to_string())
    }

    /// A page of the runs of workflow `name`, newest first: the newest
    /// `limit` older than run `before`, ending early past the page's bytes.
    /// Answers the runs as a JSON array and the `before` of the next page.
    pub async fn workflow_runs(
        &self,
        name: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<(String, Option<u64>), NodeError> {
        let state = self.core.state.clone();
        let owned = name.to_string();
        let limit = limit.clamp(1, crate::core::MAX_PAGE);
        let (exists, page) = blocking(move || {
            Ok::<_, wasmatic_state::StateError>((
                state.workflow(&owned)?.is_some(),
                state.workflow_runs(&owned, limit, before)?,
            ))
        })
        .await??;
        if !exists && page.runs.is_empty() {
            return Err(NodeError::NotFound(format!("no workflow `{name}`")));
        }
        let runs = Value::from(page.runs.iter().map(run_json).collect::<Vec<_>>());
        Ok((runs.to_string(), page.next))
    }

    /// Runs workflow `name` with `trigger` and records the run; answers
    /// the run as JSON. A failed step is a run with `ok: false`.
    pub(crate) async fn run_workflow(
        &self,
        name: &str,
        trigger: Value,
        cause: &str,
    ) -> Result<Value, NodeError> {
        let workflow = self.stored_workflow(name).await?;
        let started_at = now_ms();
        let started = Instant::now();
        let mut run = WorkflowRun {
            id: 0,
            name: name.to_string(),
            cause: cause.to_string(),
            started_at,
            duration_ms: 0,
            ok: false,
            trigger: trigger.to_string(),
            steps: "[]".to_string(),
            result: None,
            error: Some(STILL_RUNNING.to_string()),
        };
        let state = self.core.state.clone();
        let first = run.clone();
        let bounds = self.core.state_limits.runs;
        run.id = blocking(move || state.record_workflow_run(&first, bounds)).await??;

        let mut scope = Scope::new(trigger, name.to_string(), run.id);
        let deadline = started + MAX_RUN_TIME;
        let mut records: Vec<Value> = Vec::new();
        let mut failure: Option<String> = None;
        let mut last_output = Value::Null;
        for step in &workflow.steps {
            if let Some(why) = &failure {
                records.push(json!({
                    "id": step.id, "type": step.kind.type_name(), "ok": false, "not_run": true,
                    "error": format!("not run: {why}"), "duration_ms": 0,
                }));
                continue;
            }
            let step_started = Instant::now();
            let outcome = self.step(&workflow, step, &scope, deadline).await;
            let duration_ms = step_started.elapsed().as_millis() as u64;
            match outcome {
                Ok(None) => {
                    scope
                        .steps
                        .insert(step.id.clone(), json!({ "output": null, "skipped": true }));
                    records.push(json!({
                        "id": step.id, "type": step.kind.type_name(), "ok": true, "skipped": true,
                        "output": null,
                        "duration_ms": duration_ms,
                    }));
                }
                Ok(Some(output)) => {
                    scope.steps.insert(
                        step.id.clone(),
                        json!({ "output": output.clone(), "skipped": false }),
                    );
                    records.push(json!({
                        "id": step.id, "type": step.kind.type_name(), "ok": true, "output": output,
                        "duration_ms": duration_ms,
                    }));
                    last_output = output;
                }
                Err(error) => {
                    records.push(json!({
                        "id": step.id, "type": step.kind.type_name(), "ok": false, "error": error,
                        "duration_ms": duration_ms,
                    }));
                    failure = Some(format!("step `{}` failed: {error}", step.id));
                }
            }
        }
        let result = match (&failure, &workflow.result) {
            (Some(_), _) => None,
            (None, Some(template)) => {
                let template = Value::String(template.clone());
                match wasmatic_workers::block_in_place(|| workflows::render(&template, &scope)) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        failure = Some(format!("the result: {e}"));
                        None
                    }
                }
            }
            (None, None) => Some(last_output),
        };
        run.duration_ms = started.elapsed().as_millis() as u64;
        run.ok = failure.is_none();
        run.steps = Value::from(records).to_string();
        run.result = result.map(|r| r.to_string());
        run.error = failure;
        let state = self.core.state.clone();
        let finished = run.clone();
        blocking(move || state.finish_workflow_run(&finished, bounds)).await??;
        tracing::info!(name, run = run.id, ok = run.ok, cause, "workflow ran");
        Ok(run_json(&run))
    }

    /// A stored workflow, as checked when it was posted.
    async fn stored_workflow(&self, name: &str) -> Result<Workflow, NodeError> {
        let state = self.core.state.clone();
        let owned = name.to_string();
        let record = blocking(move || state.workflow(&owned))
            .await??
            .ok_or_else(|| NodeError::NotFound(format!("no workflow `{name}`")))?;
        workflows::parse(record.definition.as_bytes(), &workflows::Trusted)
            .map_err(|e| NodeError::Internal(format!("stored workflow `{name}`: {e}")))
    }

    /// Puts workflow `name` on the node's timer for `line`; its ticks are
    /// told from handlers' by their [`Target`].
    pub(crate) fn add_workflow_timer(
        &self,
        name: &str,
        line: &str,
        created_at: u64,
    ) -> Result<(), String> {
        // Checked as new when the workflow was posted (`Known::cron`).
        let cron = scheduler::parse_stored_cron(line)?;
        let id = Target::Workflow(name).stored();
        self.core.scheduler.add(
            ScheduleRecord {
                id: id.clone(),
                name: id,
                cron: line.trim().to_string(),
                input: String::new(),
                created_at,
            },
            cron,
        );
        Ok(())
    }

    /// Stops the workflow's timer and removes its chain trigger, if any.
    async fn remove_workflow_trigger(&self, name: &str) -> Result<(), NodeError> {
        let id = Target::Workflow(name).stored();
        self.core.scheduler.remove(&id);
        let state = self.core.state.clone();
        let triggers = blocking(move || state.triggers()).await??;
        for trigger in triggers.into_iter().filter(|t| t.name == id) {
            let state = self.core.state.clone();
            blocking(move || state.delete_trigger(&trigger.id)).await??;
        }
        Ok(())
    }

    /// Puts the cron timers of the stored workflows back (their chain
    /// triggers are restored with every other trigger), and the jobs they
    /// name back within reach by hash.
    pub(crate) fn restore_workflows(&self) -> anyhow::Result<()> {
        for (hash, bytes) in self.core.state.job_blobs()? {
            self.core.jobs.keep(&hash, bytes.into());
        }
        for record in self.core.state.workflows()? {
            let workflow = match workflows::parse(record.definition.as_bytes(), &workflows::Trusted)
            {
                Ok(workflow) => workflow,
                Err(e) => {
                    tracing::error!(name = record.name, "workflow not restored: {e}");
                    continue;
                }
            };
            if let Some(WorkflowTrigger::Cron(line)) = &workflow.trigger {
                if let Err(e) = self.add_workflow_timer(&workflow.name, line, record.created_at) {
                    tracing::error!(name = record.name, "workflow timer not restored: {e}");
                }
            }
        }
        Ok(())
    }

    /// A cron tick of workflow `name`: run, or recorded as skipped while
    /// the previous run still goes.
    pub(crate) async fn workflow_tick(&self, name: &str, scheduled_for: u64, skipped: bool) {
        let trigger = json!({ "scheduled_for": scheduled_for });
        if skipped {
            tracing::warn!(name, "workflow tick skipped");
            let run = WorkflowRun {
                id: 0,
                name: name.to_string(),
                cause: "cron".to_string(),
                started_at: now_ms(),
                duration_ms: 0,
                ok: false,
                trigger: trigger.to_string(),
                steps: "[]".to_string(),
                result: None,
                error: Some("skipped: the previous run of this workflow was still running".into()),
            };
            let state = self.core.state.clone();
            let bounds = self.core.state_limits.runs;
            if let Err(e) = blocking(move || state.record_workflow_run(&run, bounds)).await {
                tracing::error!(name, "cannot record a skipped tick: {e}");
            }
            return;
        }
        if let Err(e) = self.run_workflow(name, trigger, "cron").await {
            tracing::warn!(
                name,
                "scheduled workflow not run: {}",
                wasmatic_guests::audit_log::log_safe(&e.to_string())
            );
        }
    }
}

/// The hashes of the jobs a workflow runs.
fn job_hashes(workflow: &Workflow) -> Vec<String> {
    workflow
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Job { wasm_hash, .. } | StepKind::WasmValidation { wasm_hash, .. } => {
                Some(wasm_hash.clone())
            }
            _ => None,
        })
        .collect()
}

/// A stored workflow as the API shows it: its definition with its times.
fn shown(record: &WorkflowRecord) -> Value {
    let mut value: Value = serde_json::from_str(&record.definition).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("created_at".into(), record.created_at.into());
        object.insert("updated_at".into(), record.updated_at.into());
    }
    value
}

/// A run as the API shows it.
fn run_json(run: &WorkflowRun) -> Value {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let mut value = json!({
        "run_id": run.id,
        "name": run.name,
        "cause": run.cause,
        "ok": run.ok,
        "started_at": run.started_at,
        "duration_ms": run.duration_ms,
        "trigger": parse(&run.trigger),
        "steps": parse(&run.steps),
        "result": run.result.as_deref().map(parse).unwrap_or(Value::Null),
    });
    if let (Some(error), Some(object)) = (&run.error, value.as_object_mut()) {
        if error == STILL_RUNNING {
            object.insert("running".into(), true.into());
        } else {
            object.insert("error".into(), error.clone().into());
        }
    }
    value
}

/// What the node knows, for checking a definition when it is posted.
struct Known<'a>(&'a Workflows);

impl workflows::Known for Known<'_> {
    fn handler(&self, name: &str) -> Result<(), String> {
        self.0
            .components
            .runnable_handler(name)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn callable(&self, name: &str, function: &str) -> Result<(), String> {
        if let Some(handler) = self.0.core.registry.get(name) {
            let exports: Vec<&str> = handler
                .info
                .exports
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            let found = exports
                .iter()
                .any(|e| *e == function || e.rsplit_once('.').is_some_and(|(_, f)| f == function));
            return if found {
                Ok(())
            } else {
                Err(format!(
                    "`{name}` exports no function `{function}`; it exports {}",
                    exports.join(", ")
                ))
            };
        }
        match self.0.core.modules.get(name) {
            Some(module) if module.module.get_export(function).is_some() => Ok(()),
            Some(_) => Err(format!("core module `{name}` exports no `{function}`")),
            None => Err(format!("no component or core module `{name}`")),
        }
    }

    fn job(&self, wasm_hash: &str) -> Result<(), String> {
        if self.0.core.jobs.knows(wasm_hash) {
            Ok(())
        } else {
            Err(format!(
                "no job with wasmHash {wasm_hash} has run on this node: run it once with POST /wasm/run"
            ))
        }
    }

    fn chain(&self, chain_id: u64) -> Result<(), String> {
        let ids = self.0.core.chains.ids();
        if ids.contains(&chain_id) {
            Ok(())
        } else {
            Err(format!(
                "chain {chain_id} is not configured on this node (it knows {ids:?}; see --rpc)"
            ))
        }
    }

    fn cron(&self, line: &str) -> Result<(), String> {
        scheduler::parse_cron(line).map(|_| ())
    }

    fn chain_event(&self, on: &Value) -> Result<(), String> {
        let event: Event = serde_json::from_value(on.clone()).map_err(|e| {
            format!("`on` must be \"block\" or {{\"logs\": {{\"address\", \"topics\"?}}}}: {e}")
        })?;
        event.checked().map(|_| ())
    }

    fn eth_method(&self, method: &str) -> Result<(), String> {
        if wasmatic_chain::methods::ALLOWED.contains(&method) {
            Ok(())
        } else {
            Err(format!(
                "`{method}` is not a read-only method the node forwards ({})",
                wasmatic_chain::methods::ALLOWED.join(", ")
            ))
        }
    }
}
