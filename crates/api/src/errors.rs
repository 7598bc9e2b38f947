//! The node's one error type: every failure a client can cause or meet,
//! each kind one HTTP status. The WIT contract carries the same kinds
//! (`wasmatic:operator/types.error`); the default operator answers each
//! with [`ErrorKind::status`].

/// What kind of failure, and so which HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: the name or id refers to nothing.
    NotFound,
    /// 400: the caller's input is wrong.
    Invalid,
    /// 409: the name is taken by something of another kind.
    Conflict,
    /// 413: larger than the node accepts.
    TooLarge,
    /// 500: the guest ran and failed.
    Failed,
    /// 504: the guest ran past its time limit.
    TimedOut,
    /// 503: at capacity; retry later.
    Busy,
    /// 500: the host failed.
    Internal,
}

impl ErrorKind {
    /// The HTTP status a client is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::Invalid => 400,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Failed => 500,
            ErrorKind::TimedOut => 504,
            ErrorKind::Busy => 503,
            ErrorKind::Internal => 500,
        }
    }
}

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
    /// a request id instead.
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    /// This error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            NodeError::NotFound(_) => ErrorKind::NotFound,
            NodeError::Invalid(_) => ErrorKind::Invalid,
            NodeError::Conflict(_) => ErrorKind::Conflict,
            NodeError::TooLarge(_) => ErrorKind::TooLarge,
            NodeError::Failed(_) => ErrorKind::Failed,
            NodeError::TimedOut(_) => ErrorKind::TimedOut,
            NodeError::Busy(_) => ErrorKind::Busy,
            NodeError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status a client is answered with.
    pub fn status(&self) -> u16 {
        self.kind().status()
    }
}
