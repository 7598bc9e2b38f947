//! `wasmatic:operator/workflows`: JSON workflows, passed through as JSON.

use super::bindings::wasmatic::operator::runs::PageRequest;
use super::bindings::wasmatic::operator::types::Error;
use super::bindings::wasmatic::operator::workflows as wit;
use super::OperatorState;

impl wit::Host for OperatorState {
    async fn put(&mut self, definition: String) -> Result<String, Error> {
        Ok(self.node()?.put_workflow(&definition).await?)
    }

    async fn get(&mut self, name: String) -> Option<String> {
        self.node.as_ref()?.workflows().workflow(&name).await
    }

    async fn list(&mut self) -> String {
        match &self.node {
            Some(node) => node.workflows().workflows().await,
            None => "[]".to_string(),
        }
    }

    async fn remove(&mut self, name: String) -> Result<(), Error> {
        Ok(self.node()?.workflows().remove_workflow(&name).await?)
    }

    async fn run(&mut self, name: String, trigger: String) -> Result<String, Error> {
        Ok(self
            .node()?
            .workflows()
            .run_workflow_on_request(&name, &trigger)
            .await?)
    }

    async fn runs(&mut self, name: String, limit: u32) -> Result<String, Error> {
        Ok(self
            .node()?
            .workflows()
            .workflow_runs(&name, limit, None)
            .await?
            .0)
    }

    async fn put_secret(&mut self, name: String, value: String) -> Result<bool, Error> {
        Ok(self.node()?.workflows().put_secret(&name, &value).await?)
    }

    async fn remove_secret(&mut self, name: String) -> Result<(), Error> {
        Ok(self.node()?.workflows().remove_secret(&name).await?)
    }

    async fn secrets(&mut self) -> Result<String, Error> {
        Ok(self.node()?.workflows().secrets().await?)
    }

    async fn runs_page(
        &mut self,
        name: String,
        request: PageRequest,
    ) -> Result<(String, Option<u64>), Error> {
        Ok(self
            .node()?
            .workflows()
            .workflow_runs(&name, request.limit, request.before)
            .await?)
    }
}
