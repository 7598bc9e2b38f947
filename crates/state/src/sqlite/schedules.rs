//! Stored cron schedules.

use rusqlite::{params, OptionalExtension};

use super::Sqlite;
use crate::{ScheduleRecord, ScheduleStore, StateError};

impl ScheduleStore for Sqlite {
    fn insert_schedule(&self, job: &ScheduleRecord) -> Result<(), StateError> {
        self.write().execute(
            "INSERT INTO jobs (id, name, cron, input, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![job.id, job.name, job.cron, job.input, job.created_at as i64],
        )?;
        Ok(())
    }

    fn delete_schedule(&self, id: &str) -> Result<bool, StateError> {
        Ok(self
            .write()
            .execute("DELETE FROM jobs WHERE id = ?1", [id])?
            > 0)
    }

    fn schedules(&self) -> Result<Vec<ScheduleRecord>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT id, name, cron, input, created_at FROM jobs ORDER BY created_at, id",
        )?;
        let jobs = stmt
            .query_map([], |row| {
                Ok(ScheduleRecord {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    cron: row.get(2)?,
                    input: row.get(3)?,
                    created_at: row.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(jobs)
    }

    fn schedule_exists(&self, id: &str) -> Result<bool, StateError> {
        Ok(self
            .read()
            .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }
}
