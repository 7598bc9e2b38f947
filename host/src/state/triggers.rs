//! Stored chain triggers and their cursors.
//!
//! A trigger's cursor moves in the same transaction that records the run of
//! the event it moves past: after `kill -9` the state holds both or
//! neither, so an event is run again only if its run was never recorded,
//! and never run twice.

use rusqlite::{params, OptionalExtension};

use super::runs::insert_runs_in;
use super::{RunBounds, RunRecord, StateDb, StateError};

/// A stored trigger. `on` is the event it runs on, as JSON (see
/// `chain::triggers::Event`).
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerRecord {
    pub id: String,
    pub name: String,
    pub chain_id: u64,
    pub on: String,
    pub confirmations: u32,
    pub input: Option<String>,
    pub created_at: u64,
    pub cursor: Cursor,
}

/// Where a trigger is in its chain: the next event it runs is the first at
/// or after log `log` of block `block` (for block triggers, `log` is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub block: u64,
    pub log: u64,
}

/// SQLite stores i64; chain numbers above it do not occur, and are clamped
/// rather than wrapped.
fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl StateDb {
    pub fn insert_trigger(&self, t: &TriggerRecord) -> Result<(), StateError> {
        self.write().execute(
            "INSERT INTO triggers (id, name, chain_id, spec, confirmations, input, created_at, cursor_block, cursor_log)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                t.id,
                t.name,
                to_sql(t.chain_id),
                t.on,
                t.confirmations,
                t.input,
                to_sql(t.created_at),
                to_sql(t.cursor.block),
                to_sql(t.cursor.log),
            ],
        )?;
        Ok(())
    }

    /// Deletes a trigger; returns whether it existed.
    pub fn delete_trigger(&self, id: &str) -> Result<bool, StateError> {
        Ok(self
            .write()
            .execute("DELETE FROM triggers WHERE id = ?1", [id])?
            > 0)
    }

    pub fn triggers(&self) -> Result<Vec<TriggerRecord>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT id, name, chain_id, spec, confirmations, input, created_at, cursor_block, cursor_log
             FROM triggers ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok(TriggerRecord {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    chain_id: row.get::<_, i64>(2)? as u64,
                    on: row.get(3)?,
                    confirmations: row.get(4)?,
                    input: row.get(5)?,
                    created_at: row.get::<_, i64>(6)? as u64,
                    cursor: Cursor {
                        block: row.get::<_, i64>(7)? as u64,
                        log: row.get::<_, i64>(8)? as u64,
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The cursor of trigger `id`, if it exists.
    pub fn trigger_cursor(&self, id: &str) -> Result<Option<Cursor>, StateError> {
        Ok(self
            .read()
            .query_row(
                "SELECT cursor_block, cursor_log FROM triggers WHERE id = ?1",
                [id],
                |row| {
                    Ok(Cursor {
                        block: row.get::<_, i64>(0)? as u64,
                        log: row.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()?)
    }

    /// Moves trigger `id` to `cursor`, recording `run` (the run of the event
    /// it moves past) in the same transaction. Returns false, and records
    /// nothing, when the trigger no longer exists.
    pub fn advance_trigger(
        &self,
        id: &str,
        cursor: Cursor,
        run: Option<&RunRecord>,
        bounds: RunBounds,
    ) -> Result<bool, StateError> {
        let mut conn = self.write();
        let mut kept = self.run_totals();
        let tx = conn.transaction()?;
        let moved = tx.execute(
            "UPDATE triggers SET cursor_block = ?2, cursor_log = ?3 WHERE id = ?1",
            params![id, to_sql(cursor.block), to_sql(cursor.log)],
        )? > 0;
        let mut totals = *kept;
        if moved {
            if let Some(run) = run {
                insert_runs_in(&tx, std::slice::from_ref(run), bounds, &mut totals)?;
            }
        }
        tx.commit()?;
        *kept = totals;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_moves_only_while_its_trigger_exists() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        let record = TriggerRecord {
            id: "t1".into(),
            name: "watcher".into(),
            chain_id: 31337,
            on: "\"block\"".into(),
            confirmations: 0,
            input: None,
            created_at: 1,
            cursor: Cursor { block: 5, log: 0 },
        };
        db.insert_trigger(&record).unwrap();
        assert_eq!(db.triggers().unwrap(), vec![record]);
        let bounds = RunBounds {
            per_name: 10,
            total: 10,
            total_bytes: 1 << 20,
        };
        let next = Cursor { block: 6, log: 0 };
        assert!(db.advance_trigger("t1", next, None, bounds).unwrap());
        assert_eq!(db.trigger_cursor("t1").unwrap(), Some(next));
        assert!(db.delete_trigger("t1").unwrap());
        assert!(!db.advance_trigger("t1", next, None, bounds).unwrap());
        assert_eq!(db.trigger_cursor("t1").unwrap(), None);
    }
}
