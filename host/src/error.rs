//! The node's one error type: every failure a client can cause or meet,
//! each case one HTTP status (the operator maps them; see
//! `wasmatic:operator/types.error`).

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// 404: the name or id refers to nothing.
    #[error("{0}")]
    NotFound(String),
    /// 400: the caller's input is wrong.
    #[error("{0}")]
    Invalid(String),
    /// 409: the name is taken by something of another kind.
    #[error("{0}")]
    Conflict(String),
    /// 413: larger than the node accepts.
    #[error("{0}")]
    TooLarge(String),
    /// 500: the guest ran and failed.
    #[error("{0}")]
    Failed(String),
    /// 504: the guest ran past its time limit.
    #[error("{0}")]
    TimedOut(String),
    /// 503: at capacity; retry later.
    #[error("{0}")]
    Busy(String),
    /// 500: the host failed. The message is for the node's log; clients see
    /// a request id instead (see `contract`).
    #[error("{0}")]
    Internal(String),
}

impl From<crate::state::StateError> for NodeError {
    fn from(e: crate::state::StateError) -> Self {
        match e {
            // A shared database that is down is the node's capacity, not a
            // fault: 503, and the client retries once it is back.
            crate::state::StateError::Unavailable(_) => {
                NodeError::Busy(format!("{e}; retry shortly"))
            }
            e => NodeError::Internal(e.to_string()),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
