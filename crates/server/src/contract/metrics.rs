//! `wasmatic:operator/metrics`: the host's metrics, behind the metrics
//! token, which is checked here so that an operator never holds it; and
//! the route a request matched, which labels its request metrics.

use super::bindings::wasmatic::operator::metrics::{Denial, Host};
use super::OperatorState;
use wasmatic_metrics::{self as metrics, Denied};

impl Host for OperatorState {
    async fn render(&mut self, authorization: Option<String>) -> Result<String, Denial> {
        metrics::authorize(self.metrics_token.as_deref(), authorization.as_deref()).map_err(
            |denied| match denied {
                Denied::TokenNeeded => Denial::TokenNeeded,
                Denied::TokenWrong => Denial::TokenWrong,
            },
        )?;
        Ok(metrics::render(self.node.as_ref().map(|n| n.queued_runs())))
    }

    fn matched_route(&mut self, pattern: String) {
        self.route.set(metrics::route_label(&pattern));
    }
}
