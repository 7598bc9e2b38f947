//! `wasmatic:operator/triggers`: chain triggers of handlers.

use super::bindings::wasmatic::operator::runs::{Page, PageRequest};
use super::bindings::wasmatic::operator::triggers as wit;
use super::bindings::wasmatic::operator::types::Error;
use super::OperatorState;
use wasmatic_chain::triggers::{Event, LogFilter};
use wasmatic_node::TriggerInfo;

impl wit::Host for OperatorState {
    async fn add(&mut self, request: wit::TriggerRequest) -> Result<wit::Trigger, Error> {
        let event = match request.on {
            wit::Event::Block => Event::Block,
            wit::Event::Logs(f) => Event::Logs(LogFilter {
                address: f.address,
                topics: f.topics,
            }),
        };
        let info = self
            .node()?
            .triggers()
            .add_trigger(
                &request.name,
                request.chain_id,
                event,
                request.confirmations,
                request.input,
            )
            .await?;
        Ok(info.into())
    }

    async fn remove(&mut self, id: String) -> Result<(), Error> {
        Ok(self.node()?.triggers().remove_trigger(&id).await?)
    }

    async fn list(&mut self) -> Vec<wit::Trigger> {
        let Some(node) = &self.node else {
            return Vec::new();
        };
        match node.triggers().triggers().await {
            Ok(triggers) => triggers.into_iter().map(Into::into).collect(),
            Err(e) => {
                tracing::error!("cannot list triggers: {e}");
                Vec::new()
            }
        }
    }

    async fn runs(&mut self, id: String, request: PageRequest) -> Result<Page, Error> {
        let page = self
            .node()?
            .triggers()
            .trigger_runs(&id, request.limit, request.before)
            .await?;
        Ok(page.into())
    }
}

impl From<TriggerInfo> for wit::Trigger {
    fn from(t: TriggerInfo) -> Self {
        let r = t.record;
        wit::Trigger {
            id: r.id,
            name: r.name,
            chain_id: r.chain_id,
            on: match t.event {
                Event::Block => wit::Event::Block,
                Event::Logs(f) => wit::Event::Logs(wit::LogFilter {
                    address: f.address,
                    topics: f.topics,
                }),
            },
            confirmations: r.confirmations,
            input: r.input,
            created_at: r.created_at,
            next_block: r.cursor.block,
        }
    }
}
