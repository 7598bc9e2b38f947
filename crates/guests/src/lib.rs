//! Guests and how they run: handlers and any-world components (compiled,
//! linked with their providers, called), core modules, WASI jobs, the
//! registry of what is registered, and the run log that records each run.
//!
//! May depend on: `wasmatic-api`, `wasmatic-sandbox`, `wasmatic-chain`,
//! `wasmatic-net`, `wasmatic-state`, `wasmatic-metrics`, `wasmatic-workers`.

pub mod audit_log;
pub mod handler;
pub mod jobs;
pub mod links;
pub mod modules;
pub mod registry;
pub mod run_log;
