//! Registered components: staging and committing them, running them, and
//! recording every run.
//!
//! The path of `POST /run/NAME`, after the operator: `invoke` finds the
//! component, `run` takes a call slot, runs it in a task of its own
//! (`handler::call`: a store, an instance, the call, all under one budget),
//! records the run and maps the outcome to a `NodeError`.

mod calls;
mod dependents;
mod inspect;
mod modules;

use std::sync::Arc;

use anyhow::Context as _;

use crate::blocking;
use crate::core::Core;
use crate::settings::check_settings;
use wasmatic_api::is_valid_name;
use wasmatic_api::NodeError;
use wasmatic_guests::handler::{Compiled, Guest};
use wasmatic_guests::registry::{Handler, HandlerInfo, Runnable, Staged};
use wasmatic_net::Rule;
use wasmatic_sandbox::pool::Reuse;
use wasmatic_state::now_ms;
use wasmatic_state::{ComponentRecord, HandlerSettings};

pub(crate) use calls::Call;
pub use inspect::FileKind;
pub use modules::ModuleInfo;

/// Registered components and core modules: registering, loading, linking,
/// removing, and every call of them, with its slot, limits and record.
pub struct Components {
    pub(crate) core: Arc<Core>,
}

impl Components {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Components { core }
    }

    /// Reads, validates and compiles `file` from the registered directory
    /// and checks `settings`, without making anything current. The bytes
    /// stay staged by digest for [`Components::commit`].
    pub async fn stage(
        &self,
        file: &str,
        settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        let (settings, _) = check_settings(settings)?;
        let staged = self.core.registry.stage(file).await?;
        self.staged_info(staged, settings)
    }

    /// As [`Components::stage`], with the bytes given rather than read from the
    /// registered directory.
    pub async fn stage_bytes(
        &self,
        bytes: Vec<u8>,
        settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        let (settings, _) = check_settings(settings)?;
        let staged = self.core.registry.stage_bytes(bytes).await?;
        self.staged_info(staged, settings)
    }

    /// What a staged component would be with `settings`, its links checked.
    fn staged_info(
        &self,
        staged: Staged,
        mut settings: HandlerSettings,
    ) -> Result<HandlerInfo, NodeError> {
        settings.links = self
            .core
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
        let (code, alone) = match self.core.registry.staged(digest) {
            Some(staged) => ((staged.digest, staged.bytes), Some(staged.compiled)),
            None => (self.stored(digest).await?, None),
        };
        self.make_current(name, code, alone, settings, rules.map(Arc::new))
            .await
    }

    /// Registers `bytes` under `name` with `settings` in one step: what
    /// [`Components::stage_bytes`] then [`Components::commit`] do, with the settings and
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
        let code = self.core.registry.accept(bytes)?;
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
        let _changes = self.core.changes.lock().await;
        if self.core.modules.get(name).is_some() {
            return Err(NodeError::Conflict(format!(
                "`{name}` is a core module; remove it (DELETE /modules/{name}) or choose another name"
            )));
        }
        let max = self.core.state_limits.max_components;
        if self.core.registry.get(name).is_none() && self.core.registry.count() >= max {
            return Err(NodeError::Busy(format!(
                "the node holds {max} components, its most (--max-components); remove one first"
            )));
        }
        let (runnable, links) = self
            .core
            .registry
            .link(name, digest, &bytes, alone, &settings.links)
            .await?;
        settings.links = links;
        if let Some(current) = self.core.registry.get(name) {
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
        let state = self.core.state.clone();
        let stored = record.clone();
        blocking(move || state.commit_component(&stored, &bytes)).await??;
        self.core.registry.unstage(digest);
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
    pub(crate) async fn stored(&self, digest: &str) -> Result<(String, Arc<[u8]>), NodeError> {
        let state = self.core.state.clone();
        let owned = digest.to_string();
        let bytes = blocking(move || state.blob(&owned))
            .await??
            .ok_or_else(|| {
                NodeError::NotFound(format!(
                    "no staged component has digest `{digest}`: stage it first"
                ))
            })?;
        self.core.registry.accept(bytes)
    }

    /// Makes a stored version current in memory, as `runnable` (composed
    /// with its links), its settings checked (`rules` are their outbound
    /// rules).
    pub(crate) fn install(
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
        self.core.registry.install(Handler {
            info,
            compiled: runnable.compiled,
            code: runnable.code,
            original: runnable.original,
            rules,
            pool: self.core.engines.pools.guests(Reuse {
                max_uses: settings.reuse as usize,
                idle_timeout: self.core.limits.idle_instance_timeout,
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
        let _changes = self.core.changes.lock().await;
        let dependents = self.core.registry.dependents(name);
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
        let state = self.core.state.clone();
        let owned = name.to_string();
        let (existed, jobs) = blocking(move || state.remove_component(&owned)).await??;
        for id in &jobs {
            self.core.scheduler.remove(id);
        }
        if !self.core.registry.unload(name) && !existed {
            return Err(NodeError::NotFound(format!("no handler `{name}`")));
        }
        tracing::info!(name, "component removed");
        wasmatic_metrics::forget_handler(name);
        Ok(())
    }

    /// Loads every stored component, each after the providers it links to;
    /// one that cannot be loaded is logged and skipped (it stays stored).
    pub(crate) async fn restore_components(&self) -> anyhow::Result<()> {
        for record in providers_first(self.core.state.components()?) {
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
    pub(crate) async fn load(&self, record: &ComponentRecord) -> Result<(), NodeError> {
        let (digest, bytes) = self.stored(&record.digest).await?;
        let (runnable, _) = self
            .core
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
    pub(crate) async fn import_legacy_files(&self) -> anyhow::Result<()> {
        let names = self
            .core
            .registry
            .scan_legacy()
            .with_context(|| format!("cannot read {}", self.core.registry.dir().display()))?;
        // A name the state already has is not overwritten by a stray file.
        let known: std::collections::HashSet<String> = self
            .core
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
                let bytes = self.core.registry.read_legacy(&name).await?;
                let (digest, bytes) = self.core.registry.accept(bytes)?;
                let record = ComponentRecord {
                    name: name.clone(),
                    digest,
                    settings: self.core.state.legacy_settings(&name)?,
                    loaded_at: now_ms(),
                };
                self.core.state.commit_component(&record, &bytes)?;
                Ok::<_, NodeError>(())
            };
            match imported.await {
                Ok(()) => {
                    let file = self.core.registry.dir().join(format!("{name}.wasm"));
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
        self.core.registry.list()
    }

    pub fn handler(&self, name: &str) -> Option<HandlerInfo> {
        self.core.registry.get(name).map(|h| h.info.clone())
    }
}

/// `records` ordered so that each comes after the providers it links to
/// (a depth-first walk; links stored with no cycle, a cycle is only cut).
pub(crate) fn providers_first(records: Vec<ComponentRecord>) -> Vec<ComponentRecord> {
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
