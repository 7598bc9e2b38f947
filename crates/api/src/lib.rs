//! The words a wasmatic node, its operator and its command-line client
//! share, each written once: what a name may be, the kinds of error and
//! the HTTP status of each, how sizes are written, and how a token is
//! compared.
//!
//! May depend on: nothing of wasmatic's, and no I/O. It builds for
//! `wasm32-wasip2`: the default operator uses it, so that the rules it
//! checks for a client are the host's own.

mod errors;
mod names;
mod sizes;
mod tokens;

pub use errors::{ErrorKind, NodeError};
pub use names::{is_valid_name, NAME_RULE};
pub use sizes::{parse_size, show_size};
pub use tokens::constant_time_eq;

/// The environment variable holding the node's token: the routes that change
/// the node require it as `Authorization: Bearer TOKEN`. The host hands it to
/// the operator, which checks it; the client sends it.
pub const TOKEN_ENV: &str = "WASMATIC_TOKEN";
