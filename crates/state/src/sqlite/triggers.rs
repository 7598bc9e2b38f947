//! Stored chain triggers and their cursors.
//!
//! A trigger's cursor moves in the same transaction that records the run of
//! the event it moves past: after `kill -9` the state holds both or
//! neither, so an event is run again only if its run was never recorded,
//! and never run twice.

use rusqlite::{params, OptionalExtension};

use super::runs::insert_runs_in;
use super::Sqlite;
use crate::{to_sql, Cursor, RunBounds, RunRecord, StateError, TriggerRecord, TriggerStore};

impl TriggerStore for Sqlite {
    fn insert_trigger(&self, t: &TriggerRecord) -> Result<(), StateError> {
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

    fn delete_trigger(&self, id: &str) -> Result<bool, StateError> {
        Ok(self
            .write()
            .execute("DELETE FROM triggers WHERE id = ?1", [id])?
            > 0)
    }

    fn triggers(&self) -> Result<Vec<TriggerRecord>, StateError> {
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

    fn trigger_cursor(&self, id: &str) -> Result<Option<Cursor>, StateError> {
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

    fn advance_trigger(
        &self,
        id: &str,
        cursor: Cursor,
        run: Option<&RunRecord>,
        bounds: RunBounds,
    ) -> Result<bool, StateError> {
        let mut conn = self.write();
        let mut kept = self.run_totals();
        let tx = conn.transaction()?;
        let moved = tx
            .query_row("SELECT 1 FROM triggers WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some();
        let mut totals = *kept;
        if moved {
            tx.execute(
                "UPDATE triggers SET cursor_block = ?2, cursor_log = ?3
                 WHERE id = ?1 AND (cursor_block, cursor_log) < (?2, ?3)",
                params![id, to_sql(cursor.block), to_sql(cursor.log)],
            )?;
            if let Some(run) = run {
                insert_runs_in(&tx, std::slice::from_ref(run), bounds, &mut totals)?;
            }
        }
        tx.commit()?;
        *kept = totals;
        Ok(moved)
    }
}
