//! Workflows: steps that chain handlers, component calls, jobs, chain reads
//! and HTTP calls, with templated inputs, run on request or on a trigger.
//!
//! May depend on: `wasmatic-api` (names). It runs nothing: the node runs
//! the steps.
//!
//! This crate is the pure part: a definition parsed and checked
//! ([`definition`]) and the templates its steps carry ([`template`]). The
//! runner and the routes live with the node.

mod definition;
mod fields;
mod references;
mod template;

pub use definition::{
    is_forbidden_header, parse, Known, Step, StepKind, Workflow, WorkflowTrigger,
    MAX_STEP_TIMEOUT_MS,
};
pub use references::secret_names;
pub use template::{condition, render, render_text_with, render_with, Scope, Secrets};

#[cfg(test)]
mod tests;

/// Accepts every name: for definitions read back from the node's state,
/// which were checked against what the node knew when they were posted. A
/// step naming something gone since fails when it runs, saying so.
pub struct Trusted;

impl Known for Trusted {
    fn handler(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn callable(&self, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn job(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn chain(&self, _: u64) -> Result<(), String> {
        Ok(())
    }
    fn cron(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn chain_event(&self, _: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    fn eth_method(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}
