//! Workflows: steps that chain handlers, component calls, jobs, chain reads
//! and HTTP calls, with templated inputs, run on request or on a trigger.
//!
//! This module is the pure part: a definition parsed and checked
//! ([`definition`]) and the templates its steps carry ([`template`]). The
//! runner and the routes live with the node.

// used by the runner (node/workflows.rs), landing next
#![allow(dead_code, unused_imports)]

mod definition;
mod fields;
mod references;
mod template;

pub use definition::{
    parse, Known, Step, StepKind, Workflow, WorkflowTrigger, HTTP_METHODS, MAX_RETRIES, MAX_STEPS,
    MAX_STEP_TIMEOUT_MS, STEP_TYPES,
};
pub use template::{condition, render, render_text, Scope, MAX_TEMPLATE_BYTES};

#[cfg(test)]
mod tests;
