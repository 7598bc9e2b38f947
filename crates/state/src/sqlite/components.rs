//! Registered components and core modules. A component's bytes are kept
//! once per digest (`blobs`) and its name points at a digest with its
//! settings (`components`): one row change makes a new version current with
//! its own settings, in the same transaction that stores its bytes.

use rusqlite::{params, OptionalExtension};

use super::runs::Totals;
use super::{from_json, to_json, Sqlite};
use crate::{ComponentRecord, ComponentStore, HandlerSettings, ModuleRecord, StateError};

impl ComponentStore for Sqlite {
    fn commit_component(&self, record: &ComponentRecord, bytes: &[u8]) -> Result<(), StateError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let previous: Option<String> = tx
            .query_row(
                "SELECT digest FROM components WHERE name = ?1",
                [&record.name],
                |row| row.get(0),
            )
            .optional()?;
        // Bytes already stored are not sent to SQLite again: binding them
        // copies them even when the insert is then ignored.
        let stored = tx
            .prepare_cached("SELECT 1 FROM blobs WHERE digest = ?1")?
            .exists([&record.digest])?;
        if !stored {
            tx.execute(
                "INSERT INTO blobs (digest, bytes) VALUES (?1, ?2)",
                params![record.digest, bytes],
            )?;
        }
        let settings = &record.settings;
        tx.execute(
            "INSERT INTO components (name, digest, allow, config, reuse, loaded_at, links)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, allow = excluded.allow,
                 config = excluded.config, reuse = excluded.reuse, loaded_at = excluded.loaded_at,
                 links = excluded.links",
            params![
                record.name,
                record.digest,
                settings.allow.as_ref().map(|rules| rules.join("\n")),
                to_json(&settings.config),
                settings.reuse,
                record.loaded_at as i64,
                to_json(&settings.links),
            ],
        )?;
        if let Some(previous) = previous {
            drop_orphan_blob(&tx, &previous)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn remove_component(&self, name: &str) -> Result<(bool, Vec<String>), StateError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let digest: Option<String> = tx
            .query_row(
                "SELECT digest FROM components WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?;
        let jobs = tx
            .prepare("SELECT id FROM jobs WHERE name = ?1")?
            .query_map([name], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        tx.execute("DELETE FROM jobs WHERE name = ?1", [name])?;
        // Its chain triggers go too; their tasks end at their next round.
        tx.execute("DELETE FROM triggers WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM components WHERE name = ?1", [name])?;
        if let Some(digest) = &digest {
            drop_orphan_blob(&tx, digest)?;
        }
        let gone = Totals::of(
            &mut tx
                .prepare("DELETE FROM runs WHERE name = ?1 RETURNING bytes")?
                .query([name])?,
        )?;
        tx.commit()?;
        self.run_totals().subtract(gone);
        Ok((digest.is_some(), jobs))
    }

    fn components(&self) -> Result<Vec<ComponentRecord>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT name, digest, allow, config, reuse, loaded_at, links FROM components ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok(ComponentRecord {
                    name: row.get(0)?,
                    digest: row.get(1)?,
                    settings: HandlerSettings {
                        allow: row
                            .get::<_, Option<String>>(2)?
                            .map(|r| r.lines().map(str::to_string).collect()),
                        config: from_json(&row.get::<_, String>(3)?)?,
                        reuse: row.get(4)?,
                        links: from_json(&row.get::<_, String>(6)?)?,
                    },
                    loaded_at: row.get::<_, i64>(5)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .read()
            .query_row(
                "SELECT bytes FROM blobs WHERE digest = ?1",
                [digest],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn legacy_settings(&self, name: &str) -> Result<HandlerSettings, StateError> {
        let conn = self.read();
        let exists = conn
            .prepare(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'handler_settings'",
            )?
            .exists([])?;
        if !exists {
            return Ok(HandlerSettings::default());
        }
        let row: Option<(Option<String>, String, u32)> = conn
            .query_row(
                "SELECT allow, config, reuse FROM handler_settings WHERE name = ?1",
                [name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        Ok(match row {
            None => HandlerSettings::default(),
            Some((allow, config, reuse)) => HandlerSettings {
                allow: allow.map(|r| r.lines().map(str::to_string).collect()),
                config: from_json(&config)?,
                reuse,
                links: Vec::new(),
            },
        })
    }

    fn put_module(
        &self,
        name: &str,
        wasm: &[u8],
        host_modules: &[String],
    ) -> Result<(), StateError> {
        self.write().execute(
            "INSERT INTO modules (name, wasm, host_modules) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET wasm = excluded.wasm, host_modules = excluded.host_modules",
            params![name, wasm, host_modules.join("\n")],
        )?;
        Ok(())
    }

    fn remove_module(&self, name: &str) -> Result<bool, StateError> {
        Ok(self
            .write()
            .execute("DELETE FROM modules WHERE name = ?1", [name])?
            > 0)
    }

    fn modules(&self) -> Result<Vec<ModuleRecord>, StateError> {
        let conn = self.read();
        let mut stmt =
            conn.prepare("SELECT name, wasm, host_modules FROM modules ORDER BY name")?;
        let rows = stmt
            .query_map([], |row| {
                let links: String = row.get(2)?;
                Ok(ModuleRecord {
                    name: row.get(0)?,
                    wasm: row.get(1)?,
                    host_modules: links.lines().map(str::to_string).collect(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// Drops the bytes of `digest` unless a component still uses them.
fn drop_orphan_blob(tx: &rusqlite::Transaction<'_>, digest: &str) -> Result<(), StateError> {
    tx.execute(
        "DELETE FROM blobs WHERE digest = ?1
             AND NOT EXISTS (SELECT 1 FROM components WHERE digest = ?1)",
        [digest],
    )?;
    Ok(())
}
