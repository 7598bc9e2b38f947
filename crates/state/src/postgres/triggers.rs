//! Stored chain triggers and their cursors.
//!
//! A cursor moves in the transaction that records the run of the event it
//! moves past, as in SQLite. Several nodes may advance one trigger (each
//! runs the events it claimed), so a cursor only ever moves forward: a node
//! that commits late does not take it back over events already run.

use super::listen::announce;
use super::runs::{insert_runs_in, Totals};
use super::{from_sql, opt_text_of, to_sql, Postgres};
use crate::{Change, Cursor, RunBounds, RunRecord, StateError, TriggerRecord, TriggerStore};

impl TriggerStore for Postgres {
    fn insert_trigger(&self, t: &TriggerRecord) -> Result<(), StateError> {
        self.wait("storing a trigger", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO triggers (id, name, chain_id, spec, confirmations, input, created_at,
                                       cursor_block, cursor_log)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &t.id,
                    &t.name,
                    &to_sql(t.chain_id),
                    &t.on,
                    &i64::from(t.confirmations),
                    &t.input.as_deref().map(str::as_bytes),
                    &to_sql(t.created_at),
                    &to_sql(t.cursor.block),
                    &to_sql(t.cursor.log),
                ],
            )
            .await?;
            announce(&tx, &self.node_id, &[Change::Triggers]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn delete_trigger(&self, id: &str) -> Result<bool, StateError> {
        self.wait("removing a trigger", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let existed = tx
                .execute("DELETE FROM triggers WHERE id = $1", &[&id])
                .await?
                > 0;
            announce(&tx, &self.node_id, &[Change::Triggers]).await?;
            tx.commit().await?;
            Ok(existed)
        })
    }

    fn triggers(&self) -> Result<Vec<TriggerRecord>, StateError> {
        self.wait("reading the triggers", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT id, name, chain_id, spec, confirmations, input, created_at,
                            cursor_block, cursor_log
                     FROM triggers ORDER BY created_at, id",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(TriggerRecord {
                        id: row.get(0),
                        name: row.get(1),
                        chain_id: from_sql(row.get(2)),
                        on: row.get(3),
                        confirmations: u32::try_from(row.get::<_, i64>(4)).unwrap_or(u32::MAX),
                        input: opt_text_of("input", row.get(5))?,
                        created_at: from_sql(row.get(6)),
                        cursor: Cursor {
                            block: from_sql(row.get(7)),
                            log: from_sql(row.get(8)),
                        },
                    })
                })
                .collect()
        })
    }

    fn trigger_cursor(&self, id: &str) -> Result<Option<Cursor>, StateError> {
        self.wait("reading a trigger's cursor", async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT cursor_block, cursor_log FROM triggers WHERE id = $1",
                    &[&id],
                )
                .await?;
            Ok(row.map(|row| Cursor {
                block: from_sql(row.get(0)),
                log: from_sql(row.get(1)),
            }))
        })
    }

    fn advance_trigger(
        &self,
        id: &str,
        cursor: Cursor,
        run: Option<&RunRecord>,
        bounds: RunBounds,
    ) -> Result<bool, StateError> {
        self.wait("moving a trigger's cursor", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // The totals are locked before the trigger's row, the order
            // every writer of runs keeps (removing a component takes the
            // totals, then its triggers).
            let mut totals = match run {
                Some(_) => Some(Totals::lock(&tx).await?),
                None => None,
            };
            let exists = tx
                .execute(
                    "UPDATE triggers SET
                         cursor_block = CASE WHEN (cursor_block, cursor_log) < ($2, $3)
                                             THEN $2 ELSE cursor_block END,
                         cursor_log = CASE WHEN (cursor_block, cursor_log) < ($2, $3)
                                           THEN $3 ELSE cursor_log END
                     WHERE id = $1",
                    &[&id, &to_sql(cursor.block), &to_sql(cursor.log)],
                )
                .await?
                > 0;
            if let (true, Some(run), Some(totals)) = (exists, run, totals.as_mut()) {
                insert_runs_in(&tx, std::slice::from_ref(run), Some(bounds), totals).await?;
                totals.save(&tx).await?;
            }
            tx.commit().await?;
            Ok(exists)
        })
    }
}
