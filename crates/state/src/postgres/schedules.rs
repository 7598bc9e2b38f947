//! Stored cron schedules. Each change is announced to the fleet, whose
//! nodes then reload their timers.

use super::listen::announce;
use super::{from_sql, text_of, to_sql, Postgres};
use crate::{Change, ScheduleRecord, ScheduleStore, StateError};

impl ScheduleStore for Postgres {
    fn insert_schedule(&self, job: &ScheduleRecord) -> Result<(), StateError> {
        self.wait("storing a schedule", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO jobs (id, name, cron, input, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &job.id,
                    &job.name,
                    &job.cron,
                    &job.input.as_bytes(),
                    &to_sql(job.created_at),
                ],
            )
            .await?;
            announce(&tx, &self.node_id, &[Change::Schedules]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn delete_schedule(&self, id: &str) -> Result<bool, StateError> {
        self.wait("removing a schedule", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let existed = tx.execute("DELETE FROM jobs WHERE id = $1", &[&id]).await? > 0;
            announce(&tx, &self.node_id, &[Change::Schedules]).await?;
            tx.commit().await?;
            Ok(existed)
        })
    }

    fn schedules(&self) -> Result<Vec<ScheduleRecord>, StateError> {
        self.wait("reading the schedules", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT id, name, cron, input, created_at FROM jobs ORDER BY created_at, id",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(ScheduleRecord {
                        id: row.get(0),
                        name: row.get(1),
                        cron: row.get(2),
                        input: text_of("input", row.get(3))?,
                        created_at: from_sql(row.get(4)),
                    })
                })
                .collect()
        })
    }

    fn schedule_exists(&self, id: &str) -> Result<bool, StateError> {
        self.wait("reading a schedule", async {
            let client = self.client().await?;
            Ok(client
                .query_opt("SELECT 1 FROM jobs WHERE id = $1", &[&id])
                .await?
                .is_some())
        })
    }
}
