//! The sandbox every guest runs in: the engines and their epoch, the flags
//! and limits each store gets, compiling with its one cache, pools of idle
//! instances, guests' HTTP under the outbound policy, conversion between JSON
//! and component values, and the capture of what guests print.
//!
//! May depend on: `wasmatic-api`, `wasmatic-metrics`, `wasmatic-net` (the
//! one HTTP client and the outbound policy), `wasmatic-workers`.
//! Knows nothing of registration, state or scheduling.

pub mod cache;
pub mod compile;
pub mod engine;
pub mod flags;
pub mod limits;
pub mod memory;
pub mod outbound;
pub mod output;
pub mod pool;
pub mod values;
