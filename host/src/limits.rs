//! Limits that keep one guest from taking the node down.

use std::time::Duration;

use anyhow::{ensure, Result};

/// The longest a handler call may ever be allowed to take.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the engine's epoch advances. Running guests yield to the async
/// executor at each tick and are stopped at the first tick past their
/// deadline, so this is also the precision of every time limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Clone, Debug)]
pub struct Limits {
    /// Time a handler call may take.
    pub call_timeout: Duration,
    /// Time the operator may take to answer one request.
    pub request_timeout: Duration,
}

impl Limits {
    pub fn new(call_timeout: Duration, request_timeout: Duration) -> Result<Self> {
        ensure!(
            !call_timeout.is_zero() && call_timeout <= MAX_CALL_TIMEOUT,
            "--call-timeout must be more than 0 and at most {}s",
            MAX_CALL_TIMEOUT.as_secs()
        );
        ensure!(
            !request_timeout.is_zero(),
            "--request-timeout must be more than 0"
        );
        Ok(Limits {
            call_timeout,
            request_timeout,
        })
    }
}
