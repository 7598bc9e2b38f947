//! The components linked to a provider: a new version of the provider must
//! still give them what they import, and they are composed again with it.

use super::Node;
use wasmatic_api::NodeError;
use wasmatic_guests::handler::Compiled;
use wasmatic_guests::links;
use wasmatic_state::ComponentRecord;

impl Node {
    /// A new version of `name` must still provide what the components
    /// linked to it import.
    pub(super) fn check_dependents(
        &self,
        name: &str,
        compiled: &Compiled,
    ) -> Result<(), NodeError> {
        for (dependent, link) in self.registry.dependents(name) {
            let Some(imports) = self.registry.get(&dependent) else {
                continue;
            };
            let import = links::foreign_imports(&imports.component)
                .into_iter()
                .find(|i| i.name == link.interface);
            if let Some(import) = import {
                links::provides(&import, name, compiled.pre.component()).map_err(
                    |why| {
                        NodeError::Conflict(format!(
                            "`{dependent}` is linked to `{name}` for `{}`, which this version does not provide: {why}",
                            link.interface
                        ))
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Composes the components linked to `name`, directly or through
    /// others, again with its new version, each after its own providers.
    /// Each was checked against the new version (`check_dependents`); one
    /// that still cannot be composed keeps its previous code, logged.
    pub(super) async fn relink_dependents(&self, name: &str) {
        let mut pending: Vec<String> = vec![name.to_string()];
        let mut done: Vec<String> = Vec::new();
        while let Some(provider) = pending.pop() {
            for (dependent, _) in self.registry.dependents(&provider) {
                if done.contains(&dependent) {
                    continue;
                }
                done.push(dependent.clone());
                let Some(current) = self.registry.get(&dependent) else {
                    continue;
                };
                let record = ComponentRecord {
                    name: dependent.clone(),
                    digest: current.info.digest.clone(),
                    settings: current.settings.clone(),
                    loaded_at: current.info.loaded_at,
                };
                let relinked = match self.stored(&record.digest).await {
                    Ok(staged) => self
                        .registry
                        .link(&dependent, &staged, &record.settings.links)
                        .await
                        // Its settings are unchanged: its rules are the
                        // ones it was installed with.
                        .map(|(runnable, _)| {
                            self.install(&record, &staged, runnable, current.rules.clone())
                        }),
                    Err(e) => Err(e),
                };
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
