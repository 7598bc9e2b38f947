//! Chain triggers: a handler run once per new block, or once per matching
//! log, in chain order, each event exactly once.
//!
//! Every trigger has a task of its own that polls its chain
//! (`--chain-poll-interval`): a trigger whose handler keeps failing or whose
//! chain is down delays no other. The task reads its cursor from the state
//! each round and commits each run together with the cursor past its event
//! ([`wasmatic_state::TriggerStore::advance_trigger`]), so after a crash or a
//! restart the trigger resumes with the first event whose run was not
//! recorded. A failed run is still a handled event: it is recorded and the
//! cursor moves on, so one bad event cannot wedge its trigger. Removing a
//! trigger deletes its row; its task notices and ends.

use std::sync::{Arc, Weak};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::components::Call;
use crate::components::Components;
use crate::core::Core;
use crate::workflows::Workflows;
use crate::{blocking, CallTask};
use wasmatic_api::NodeError;
use wasmatic_chain::triggers::{events_after, head, shared_head, Event};
use wasmatic_chain::RpcError;
use wasmatic_guests::handler::Entry;
use wasmatic_state::now_ms;
use wasmatic_state::Target;
use wasmatic_state::{Claim, ClaimKind, Claimed, Cursor, RunPage, Store, TriggerRecord};

/// Triggers a node holds at most: each polls its chain.
const MAX_TRIGGERS: usize = 1000;

/// A trigger as the contract shows it.
pub struct TriggerInfo {
    pub record: TriggerRecord,
    pub event: Event,
}

/// What one round of a trigger's task found.
enum Round {
    /// More events are due at once.
    Behind,
    /// Nothing more until the chain moves.
    Idle,
    /// The trigger was removed.
    Gone,
}

/// Chain triggers: stored with their cursor, each watched by a task of
/// its own that runs its handler or workflow once per event.
pub struct Triggers {
    pub(crate) core: Arc<Core>,
    components: Arc<Components>,
    workflows: Arc<Workflows>,
    /// The triggers whose task runs on this node.
    watched: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Triggers {
    pub(crate) fn new(
        core: Arc<Core>,
        components: Arc<Components>,
        workflows: Arc<Workflows>,
    ) -> Self {
        Triggers {
            core,
            components,
            workflows,
            watched: Default::default(),
        }
    }

    /// Adds a trigger that runs handler `name` on `event` of `chain_id`,
    /// starting with the block after the chain's current head.
    pub async fn add_trigger(
        self: &Arc<Self>,
        name: &str,
        chain_id: u64,
        event: Event,
        confirmations: u32,
        input: Option<String>,
    ) -> Result<TriggerInfo, NodeError> {
        self.components.runnable_handler(name)?;
        let _changes = self.core.changes.lock().await;
        let (record, event) = self
            .prepare_trigger(name, chain_id, event, confirmations, input)
            .await?;
        self.start_trigger(record, event).await
    }

    /// Checks a trigger of `name` (a [`Target`] as the state keeps it)
    /// and reads where it starts, storing nothing: what can fail for a
    /// reason of the chain's or the node's fails here. The caller holds the
    /// node's `changes` lock.
    pub(crate) async fn prepare_trigger(
        &self,
        name: &str,
        chain_id: u64,
        event: Event,
        confirmations: u32,
        input: Option<String>,
    ) -> Result<(TriggerRecord, Event), NodeError> {
        let chains = self.core.chains.clone();
        if !chains.ids().contains(&chain_id) {
            return Err(NodeError::Invalid(format!(
                "chain {chain_id} is not configured on this node (it knows {:?}; see --rpc)",
                chains.ids()
            )));
        }
        let event = event.checked().map_err(NodeError::Invalid)?;
        if let Some(input) = &input {
            serde_json::from_str::<Value>(input)
                .map_err(|e| NodeError::Invalid(format!("`input` is not JSON: {e}")))?;
        }
        let head = head(&chains, chain_id).await.map_err(|e| {
            NodeError::Busy(format!("cannot read the head of chain {chain_id}: {e}"))
        })?;
        let on = serde_json::to_string(&event)
            .map_err(|e| NodeError::Internal(format!("cannot store the trigger: {e}")))?;
        let state = self.core.state.clone();
        let count = blocking(move || state.triggers()).await??.len();
        if count >= MAX_TRIGGERS {
            return Err(NodeError::Busy(format!(
                "the node holds {MAX_TRIGGERS} triggers, its most; remove one first"
            )));
        }
        let created_at = now_ms();
        let record = TriggerRecord {
            id: new_trigger_id(name, chain_id, created_at),
            name: name.to_string(),
            chain_id,
            on,
            confirmations,
            input,
            created_at,
            cursor: Cursor {
                block: head + 1,
                log: 0,
            },
        };
        Ok((record, event))
    }

    /// Stores a prepared trigger and starts its task.
    pub(crate) async fn start_trigger(
        self: &Arc<Self>,
        record: TriggerRecord,
        event: Event,
    ) -> Result<TriggerInfo, NodeError> {
        let state = self.core.state.clone();
        let stored = record.clone();
        blocking(move || state.insert_trigger(&stored)).await??;
        tracing::info!(
            id = record.id,
            name = record.name,
            chain_id = record.chain_id,
            "trigger added"
        );
        self.watch(record.clone(), event.clone());
        Ok(TriggerInfo { record, event })
    }

    pub async fn remove_trigger(&self, id: &str) -> Result<(), NodeError> {
        let _changes = self.core.changes.lock().await;
        let state = self.core.state.clone();
        let owned = id.to_string();
        if !blocking(move || state.delete_trigger(&owned)).await?? {
            return Err(NodeError::NotFound(format!("no trigger `{id}`")));
        }
        tracing::info!(id, "trigger removed");
        Ok(())
    }

    /// Every trigger, oldest first.
    pub async fn triggers(&self) -> Result<Vec<TriggerInfo>, NodeError> {
        let state = self.core.state.clone();
        let records = blocking(move || state.triggers()).await??;
        Ok(records
            .into_iter()
            .filter_map(|record| {
                let event = serde_json::from_str(&record.on).ok()?;
                Some(TriggerInfo { record, event })
            })
            .collect())
    }

    /// A page of the runs of trigger `id`.
    pub async fn trigger_runs(
        &self,
        id: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<RunPage, NodeError> {
        let exists = |state: &dyn Store, id: &str| Ok(state.trigger_cursor(id)?.is_some());
        self.core
            .runs_of_owner("trigger", id, exists, limit, before)
            .await
    }

    /// Starts the task of every stored trigger.
    pub(crate) fn restore_triggers(self: &Arc<Self>) -> anyhow::Result<()> {
        for record in self.core.state.triggers()? {
            match serde_json::from_str(&record.on) {
                Ok(event) => self.watch(record, event),
                Err(e) => tracing::error!(id = record.id, "trigger not restored: {e}"),
            }
        }
        Ok(())
    }

    /// Starts the task that runs `record`'s events until it is removed or
    /// the node stops.
    pub(crate) fn watch(self: &Arc<Self>, record: TriggerRecord, event: Event) {
        if !self.watched().insert(record.id.clone()) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(watch(weak, record, event));
    }

    /// Whether trigger `id` has its task on this node.
    pub(crate) fn is_watched(&self, id: &str) -> bool {
        self.watched().contains(id)
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the events that are due for one trigger, one poll's worth.
    async fn trigger_round(
        &self,
        record: &TriggerRecord,
        event: &Event,
        input: Option<&Value>,
    ) -> Result<Round, String> {
        let state = self.core.state.clone();
        let id = record.id.clone();
        let Some(cursor) = blocking(move || state.trigger_cursor(&id))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
        else {
            return Ok(Round::Gone);
        };
        let chains = self.core.chains.clone();
        let rpc = |e: RpcError| format!("chain {}: {e}", record.chain_id);
        let head = shared_head(&chains, record.chain_id).await.map_err(rpc)?;
        let Some(last) = head.checked_sub(u64::from(record.confirmations)) else {
            return Ok(Round::Idle);
        };
        if cursor.block > last {
            return Ok(Round::Idle);
        }
        let workflow = Target::of(&record.name).workflow();
        let handler = match workflow {
            Some(_) => None,
            None => Some(
                self.components
                    .runnable_handler(&record.name)
                    .map_err(|e| e.to_string())?,
            ),
        };
        let (events, end) = events_after(&chains, record.chain_id, event, cursor, last, input)
            .await
            .map_err(rpc)?;
        for event in events {
            // In a fleet, every node sees the event; the one that claims it
            // runs it and moves the cursor past it with its run. Events run
            // in order: a node that finds one taken waits for the cursor to
            // move past it (with its run, or its record as lost).
            let claim = Claim {
                what: record.id.clone(),
                at: format!("{}:{}", event.after.block, event.after.log),
                name: workflow.unwrap_or(&record.name).to_string(),
                kind: match workflow {
                    Some(_) => ClaimKind::Workflow,
                    None => ClaimKind::Trigger,
                },
            };
            match self.core.claims.claim(&claim, false).await {
                Some(Claimed::Won) => {}
                Some(Claimed::Taken | Claimed::Skipped) => return Ok(Round::Idle),
                None => return Err("the shared state database is unreachable".into()),
            }
            let (mut run, result) = match (&handler, workflow) {
                (Some(handler), _) => {
                    let permit = self
                        .core
                        .ticks
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| "the node is stopping".to_string())?;
                    self.components
                        .execute(Call {
                            handler: handler.clone(),
                            entry: Entry::Handler(event.input.to_string()),
                            tick: None,
                            function: None,
                            permit,
                            task: CallTask::Own,
                        })
                        .await
                        .map_err(|e| e.to_string())?
                }
                (None, Some(name)) => self.workflow_event(&record.name, name, event.input).await,
                (None, None) => return Err("a trigger with no target".into()),
            };
            if let Err(e) = result {
                tracing::warn!(
                    trigger = record.id,
                    name = record.name,
                    "triggered run failed: {}",
                    wasmatic_guests::audit_log::log_safe(&e.to_string())
                );
            }
            run.job_id = Some(record.id.clone());
            let moved = self.advance(&record.id, event.after, Some(run)).await;
            self.core
                .claims
                .finish(&claim, false, &self.core.runs)
                .await;
            if !moved? {
                return Ok(Round::Gone);
            }
        }
        if !self.advance(&record.id, end, None).await? {
            return Ok(Round::Gone);
        }
        Ok(if end.block <= last {
            Round::Behind
        } else {
            Round::Idle
        })
    }

    /// Runs workflow `workflow` for one chain event; answers the run
    /// record the trigger commits with its cursor (its output the
    /// workflow's result), beside the outcome.
    async fn workflow_event(
        &self,
        target: &str,
        workflow: &str,
        event: Value,
    ) -> (wasmatic_state::RunRecord, Result<String, NodeError>) {
        let started_at = now_ms();
        let outcome = self.workflows.run_workflow(workflow, event, "chain").await;
        let (ok, output, error) = match &outcome {
            Ok(run) if run["ok"] == true => (true, Some(run["result"].to_string()), None),
            Ok(run) => (
                false,
                None,
                Some(run["error"].as_str().unwrap_or("failed").to_string()),
            ),
            Err(e) => (false, None, Some(e.to_string())),
        };
        let run = wasmatic_state::RunRecord {
            id: 0,
            name: target.to_string(),
            function: None,
            job_id: None,
            scheduled_for: None,
            started_at,
            duration_ms: now_ms().saturating_sub(started_at),
            ok,
            output: output.clone(),
            error: error.clone(),
            stdout: String::new(),
            stderr: String::new(),
            audit: Vec::new(),
            rpc: Vec::new(),
        };
        let result = match error {
            None => Ok(output.unwrap_or_default()),
            Some(e) => Err(NodeError::Failed(format!("workflow `{workflow}`: {e}"))),
        };
        (run, result)
    }

    /// Commits a trigger's cursor, with the run of the event it moves past.
    async fn advance(
        &self,
        id: &str,
        cursor: Cursor,
        run: Option<wasmatic_state::RunRecord>,
    ) -> Result<bool, String> {
        let state = self.core.state.clone();
        let bounds = self.core.state_limits.runs;
        let id = id.to_string();
        blocking(move || state.advance_trigger(&id, cursor, run.as_ref(), bounds))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

/// A trigger's task: rounds until the trigger is removed or the node is
/// gone, sleeping `--chain-poll-interval` when idle. A problem (chain down,
/// handler removed) is logged when it starts, not every round.
async fn watch(node: Weak<Triggers>, record: TriggerRecord, event: Event) {
    let Some(interval) = node.upgrade().map(|n| n.core.chains.limits.poll_interval) else {
        return;
    };
    let input: Option<Value> = record
        .input
        .as_deref()
        .and_then(|i| serde_json::from_str(i).ok());
    let mut failing = false;
    loop {
        let Some(strong) = node.upgrade() else {
            return;
        };
        // A stopping node starts no round; its cursor says where the next
        // start resumes.
        let Some(going) = strong.core.in_flight.enter() else {
            return;
        };
        let round = strong.trigger_round(&record, &event, input.as_ref()).await;
        drop(going);
        if let Ok(Round::Gone) = round {
            strong.watched().remove(&record.id);
            return;
        }
        drop(strong);
        match round {
            Ok(Round::Gone) => return,
            Ok(Round::Behind) => {
                failing = false;
                continue;
            }
            Ok(Round::Idle) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        trigger = record.id,
                        name = record.name,
                        "trigger waiting: {e}"
                    );
                }
                failing = true;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

fn new_trigger_id(name: &str, chain_id: u64, created_at: u64) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "trigger\0{name}\0{chain_id}\0{created_at}\0{n}\0{}",
        std::process::id()
    ));
    format!("t-{}", hex::encode(&hasher.finalize()[..8]))
}
