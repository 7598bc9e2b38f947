//! `wasmatic:operator/schedules`: cron schedules of handlers.

use super::bindings::wasmatic::operator::schedules as wit;
use super::bindings::wasmatic::operator::types::Error;
use super::OperatorState;
use wasmatic_node::scheduler::Schedule;

impl wit::Host for OperatorState {
    async fn add(
        &mut self,
        name: String,
        cron: String,
        input: String,
    ) -> Result<wit::Schedule, Error> {
        Ok(self
            .node()?
            .schedules()
            .schedule(&name, &cron, &input)
            .await?
            .into())
    }

    async fn remove(&mut self, id: String) -> Result<(), Error> {
        Ok(self.node()?.schedules().unschedule(&id).await?)
    }

    async fn list(&mut self) -> Vec<wit::Schedule> {
        match &self.node {
            Some(node) => node
                .schedules()
                .schedules()
                .into_iter()
                .map(Into::into)
                .collect(),
            None => Vec::new(),
        }
    }
}

impl From<Schedule> for wit::Schedule {
    fn from(j: Schedule) -> Self {
        wit::Schedule {
            id: j.id,
            name: j.name,
            cron: j.cron,
            input: j.input,
            next: j.next,
            created_at: j.created_at,
        }
    }
}
