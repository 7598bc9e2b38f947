//! Registered components and core modules, as in SQLite: a component's
//! bytes once per digest (`blobs`), its name pointing at a digest with its
//! settings (`components`). Each change announces itself to the fleet.

use super::listen::announce;
use super::runs::Totals;
use super::{from_json, from_sql, to_json, to_sql, Fault, Postgres};
use crate::{Change, ComponentRecord, ComponentStore, HandlerSettings, ModuleRecord, StateError};

impl ComponentStore for Postgres {
    fn commit_component(&self, record: &ComponentRecord, bytes: &[u8]) -> Result<(), StateError> {
        self.wait("storing a component", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let previous: Option<String> = tx
                .query_opt(
                    "SELECT digest FROM components WHERE name = $1 FOR UPDATE",
                    &[&record.name],
                )
                .await?
                .map(|row| row.get(0));
            // A blob already stored is locked, so that another node dropping
            // it as unused waits for this commit (and then finds it used),
            // and its bytes are not sent again. A new one is inserted; the
            // no-op update locks it if another node inserted it meanwhile.
            let stored = tx
                .query_opt(
                    "SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE",
                    &[&record.digest],
                )
                .await?
                .is_some();
            if !stored {
                tx.execute(
                    "INSERT INTO blobs (digest, bytes) VALUES ($1, $2)
                     ON CONFLICT (digest) DO UPDATE SET digest = blobs.digest",
                    &[&record.digest, &bytes],
                )
                .await?;
            }
            let settings = &record.settings;
            tx.execute(
                "INSERT INTO components (name, digest, allow, config, reuse, loaded_at, links)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, allow = excluded.allow,
                     config = excluded.config, reuse = excluded.reuse,
                     loaded_at = excluded.loaded_at, links = excluded.links",
                &[
                    &record.name,
                    &record.digest,
                    &settings.allow.as_ref().map(|rules| rules.join("\n")),
                    &to_json(&settings.config),
                    &i64::from(settings.reuse),
                    &to_sql(record.loaded_at),
                    &to_json(&settings.links),
                ],
            )
            .await?;
            if let Some(previous) = previous.filter(|p| *p != record.digest) {
                drop_orphan_blob(&tx, &previous).await?;
            }
            announce(&tx, &self.node_id, &[Change::Components]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn remove_component(&self, name: &str) -> Result<(bool, Vec<String>), StateError> {
        self.wait("removing a component", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Taken first, as every writer of runs does: a batch of runs of
            // this component either commits before (and its runs go below)
            // or finds the component gone.
            let mut totals = Totals::lock(&tx).await?;
            let digest: Option<String> = tx
                .query_opt(
                    "DELETE FROM components WHERE name = $1 RETURNING digest",
                    &[&name],
                )
                .await?
                .map(|row| row.get(0));
            let jobs: Vec<String> = tx
                .query("DELETE FROM jobs WHERE name = $1 RETURNING id", &[&name])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            // Its chain triggers go too; their tasks end at their next round.
            tx.execute("DELETE FROM triggers WHERE name = $1", &[&name])
                .await?;
            if let Some(digest) = &digest {
                drop_orphan_blob(&tx, digest).await?;
            }
            let gone = tx
                .query_one(
                    "WITH gone AS (DELETE FROM runs WHERE name = $1 RETURNING bytes)
                     SELECT COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT FROM gone",
                    &[&name],
                )
                .await?;
            totals.subtract(Totals::of_row(&gone));
            totals.save(&tx).await?;
            announce(
                &tx,
                &self.node_id,
                &[Change::Components, Change::Schedules, Change::Triggers],
            )
            .await?;
            tx.commit().await?;
            Ok((digest.is_some(), jobs))
        })
    }

    fn components(&self) -> Result<Vec<ComponentRecord>, StateError> {
        self.wait("reading the components", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT name, digest, allow, config, reuse, loaded_at, links
                     FROM components ORDER BY name",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(ComponentRecord {
                        name: row.get(0),
                        digest: row.get(1),
                        settings: HandlerSettings {
                            allow: row
                                .get::<_, Option<String>>(2)
                                .map(|r| r.lines().map(str::to_string).collect()),
                            config: from_json("config", row.get(3))?,
                            reuse: u32::try_from(row.get::<_, i64>(4)).unwrap_or(1),
                            links: from_json("links", row.get(6))?,
                        },
                        loaded_at: from_sql(row.get(5)),
                    })
                })
                .collect()
        })
    }

    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.wait("reading a component's bytes", async {
            let client = self.client().await?;
            let row = client
                .query_opt("SELECT bytes FROM blobs WHERE digest = $1", &[&digest])
                .await?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    /// A fleet never kept settings beside files of a registered directory:
    /// the defaults.
    fn legacy_settings(&self, _name: &str) -> Result<HandlerSettings, StateError> {
        Ok(HandlerSettings::default())
    }

    fn put_module(
        &self,
        name: &str,
        wasm: &[u8],
        host_modules: &[String],
    ) -> Result<(), StateError> {
        self.wait("storing a module", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO modules (name, wasm, host_modules) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET wasm = excluded.wasm,
                     host_modules = excluded.host_modules",
                &[&name, &wasm, &host_modules.join("\n")],
            )
            .await?;
            announce(&tx, &self.node_id, &[Change::Modules]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn remove_module(&self, name: &str) -> Result<bool, StateError> {
        self.wait("removing a module", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let existed = tx
                .execute("DELETE FROM modules WHERE name = $1", &[&name])
                .await?
                > 0;
            announce(&tx, &self.node_id, &[Change::Modules]).await?;
            tx.commit().await?;
            Ok(existed)
        })
    }

    fn modules(&self) -> Result<Vec<ModuleRecord>, StateError> {
        self.wait("reading the modules", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT name, wasm, host_modules FROM modules ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| ModuleRecord {
                    name: row.get(0),
                    wasm: row.get(1),
                    host_modules: row.get::<_, &str>(2).lines().map(str::to_string).collect(),
                })
                .collect())
        })
    }
}

/// Drops the bytes of `digest` unless a component still uses them.
async fn drop_orphan_blob(tx: &tokio_postgres::Transaction<'_>, digest: &str) -> Result<(), Fault> {
    tx.execute(
        "DELETE FROM blobs WHERE digest = $1
             AND NOT EXISTS (SELECT 1 FROM components WHERE digest = $1)",
        &[&digest],
    )
    .await?;
    Ok(())
}
