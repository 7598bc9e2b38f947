//! Every connection the node opens to the outside: who guests may call
//! ([`Policy`]), and the one HTTP client ([`Client`]) that chain RPC,
//! guests' `wasi:http` calls, workflow `http` steps and the command line
//! all send through.
//!
//! May depend on: nothing of wasmatic's.
//!
//! The client is hyper-util's; what is ours is its connector
//! ([`connect`]), which dials either as the node runner configured
//! ([`Dial::Trusted`]) or through the policy ([`Dial::Checked`]), so that
//! the address the policy checked is the address connected.

mod client;
pub mod connect;
pub mod policy;

pub use client::{Client, SendError, CONNECT_TIMEOUT};
pub use connect::{ConnectError, Dial};
pub use policy::{non_public, Policy, Rule};
