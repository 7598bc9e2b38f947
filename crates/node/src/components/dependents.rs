//! The components linked to a provider: a new version of the provider must
//! still give them what they import, and they are composed again with it.

use super::Components;
use wasmatic_api::NodeError;
use wasmatic_guests::links::Shapes;
use wasmatic_state::ComponentRecord;

impl Components {
    /// A new version of `name` must still provide what the components
    /// linked to it import.
    pub(crate) fn check_dependents(&self, name: &str, bytes: &[u8]) -> Result<(), NodeError> {
        let dependents = self.core.registry.dependents(name);
        if dependents.is_empty() {
            return Ok(());
        }
        let mut shapes = Shapes::default();
        let provider = shapes.read(name, bytes)?;
        for (dependent, link) in dependents {
            let Some(current) = self.core.registry.get(&dependent) else {
                continue;
            };
            let importer = shapes.read(&dependent, &current.original)?;
            let import = shapes
                .foreign_imports(importer)
                .into_iter()
                .find(|i| i.name == link.interface);
            if let Some(import) = import {
                shapes.provides(&import, name, provider).map_err(|why| {
                    NodeError::Conflict(format!(
                        "`{dependent}` is linked to `{name}` for `{}`, which this version does not provide: {why}",
                        link.interface
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Composes the components linked to `name`, directly or through
    /// others, again with its new version, each after its own providers.
    /// Each was checked against the new version (`check_dependents`); one
    /// that still cannot be composed keeps its previous code, logged.
    pub(crate) async fn relink_dependents(&self, name: &str) {
        let mut pending: Vec<String> = vec![name.to_string()];
        let mut done: Vec<String> = Vec::new();
        while let Some(provider) = pending.pop() {
            for (dependent, _) in self.core.registry.dependents(&provider) {
                if done.contains(&dependent) {
                    continue;
                }
                done.push(dependent.clone());
                let Some(current) = self.core.registry.get(&dependent) else {
                    continue;
                };
                let record = ComponentRecord {
                    name: dependent.clone(),
                    digest: current.info.digest.clone(),
                    settings: current.settings.clone(),
                    loaded_at: current.info.loaded_at,
                };
                let relinked = self
                    .core
                    .registry
                    .link(
                        &dependent,
                        &record.digest,
                        &current.original,
                        None,
                        &record.settings.links,
                    )
                    .await
                    // Its settings are unchanged: its rules are the ones it
                    // was installed with.
                    .map(|(runnable, _)| self.install(&record, runnable, current.rules.clone()));
                match relinked {
                    Ok(_) => {
                        tracing::info!(
                            name = dependent,
                            provider,
                            "composed again with a new version of its provider"
                        );
                        pending.push(dependent);
                    }
                    Err(e) => {
                        tracing::error!(name = dependent, provider, "cannot compose again: {e}")
                    }
                }
            }
        }
    }
}
