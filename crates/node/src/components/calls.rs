//! Calls of registered components: a client's run or call, a tick's, a
//! workflow step's, a chain event's; each takes a slot, runs under the
//! node's limits, and is recorded.

use std::sync::Arc;

use super::Components;
use crate::settings::{not_a_handler, resolve_export};
use crate::{blocking, CallTask, TickId};
use wasmatic_api::NodeError;
use wasmatic_guests::handler::{self, CallError, CallLimits, Entry};
use wasmatic_guests::registry::Handler;
use wasmatic_state::now_ms;
use wasmatic_state::{RunPage, RunRecord};

/// One call of a registered component, as [`Components::run`] takes it.
pub(crate) struct Call {
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

impl Components {
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
    pub(crate) fn runnable_handler(&self, name: &str) -> Result<Arc<Handler>, NodeError> {
        let handler = self
            .core
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
            .core
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
        let slot = self.core.client_slot();
        if let Err(busy) = &slot {
            wasmatic_metrics::handler_call(name, wasmatic_metrics::Outcome::Busy, None);
            self.record_failure(name, None, function.map(str::to_string), &busy.to_string())
                .await;
        }
        slot
    }

    /// Runs one call of a registered component and records it.
    pub(crate) async fn run(&self, call: Call) -> Result<String, NodeError> {
        let (record, result) = self.execute(call).await?;
        self.core.runs.record(record).await;
        result
    }

    /// Runs one call of a registered component in its task and answers its
    /// run record, unrecorded, beside its result: a chain trigger commits
    /// the record with its cursor.
    pub(crate) async fn execute(
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
            timeout: self.core.limits.call_timeout,
            memory: self.core.limits.handler_memory,
            max_captured_output: self.core.limits.max_captured_output,
            max_result: self.core.limits.max_result,
            policy: self.core.policy.clone(),
            rules: handler.rules.clone(),
            flags: self.core.engines.flags,
            chains: self.core.chains.clone(),
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
    pub(crate) async fn record_failure(
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
        self.core.runs.record(record).await;
    }

    /// A page of the runs of component `name`.
    pub async fn handler_runs(
        &self,
        name: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, NodeError> {
        self.core.runs.readable().await;
        let state = self.core.state.clone();
        let owned = name.to_string();
        let limit = limit.clamp(1, crate::core::MAX_PAGE);
        let page = blocking(move || state.runs_of_handler(&owned, limit, before)).await??;
        if page.runs.is_empty() && self.core.registry.get(name).is_none() {
            return Err(NodeError::NotFound(format!("no handler `{name}`")));
        }
        Ok(page)
    }
}
