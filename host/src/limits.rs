//! Limits that keep one guest or one client from taking the node down.

use std::time::Duration;

use anyhow::{ensure, Result};
use wasmtime::ResourceLimiter;

/// The longest a handler call may ever be allowed to take.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the engine's epoch advances. Running guests yield to the async
/// executor at each tick and are stopped at the first tick past their
/// deadline, so this is also the precision of every time limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Table elements any one guest instance may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Time a handler call may take.
    pub call_timeout: Duration,
    /// Time the operator may take to answer one request.
    pub request_timeout: Duration,
    /// Largest handler component accepted, in bytes.
    pub max_handler_size: u64,
    /// Largest request body accepted, in bytes.
    pub max_request_body: u64,
    /// Linear memory one handler instance may use, in bytes.
    pub handler_memory: usize,
    /// Linear memory one operator instance may use, in bytes.
    pub operator_memory: usize,
    /// Bytes of a handler's stdout, and of its stderr, kept per call.
    pub max_captured_output: usize,
    /// Largest string a handler may return, in bytes.
    pub max_result: usize,
    /// Handler calls that may run at once; more are refused with 503.
    pub max_concurrent_calls: usize,
    /// How long an idle instance of a component that opted in to reuse is
    /// kept for its next call.
    pub idle_instance_timeout: Duration,
}

impl Limits {
    pub fn validate(self) -> Result<Self> {
        ensure!(
            !self.call_timeout.is_zero() && self.call_timeout <= MAX_CALL_TIMEOUT,
            "--call-timeout must be more than 0 and at most {}s",
            MAX_CALL_TIMEOUT.as_secs()
        );
        ensure!(
            !self.request_timeout.is_zero(),
            "--request-timeout must be more than 0"
        );
        ensure!(
            self.max_concurrent_calls > 0,
            "--max-concurrent-calls must be at least 1"
        );
        ensure!(
            self.handler_memory >= 1 << 16 && self.operator_memory >= 1 << 16,
            "memory limits must be at least 64KiB (one wasm page)"
        );
        Ok(self)
    }
}

/// Parses a size such as `10MiB`, `64M`, `256KiB`, `512k` or `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 10MiB, 256KiB or 4096"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{s}` has an unknown unit; use KiB, MiB or GiB")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Shows a byte count the way the flags take it.
pub fn show_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Bounds a guest's memories and tables; growing past a bound traps with
/// [`MemoryLimit`] rather than failing quietly.
pub struct GuestLimiter {
    memory: usize,
}

impl GuestLimiter {
    pub fn new(memory: usize) -> Self {
        GuestLimiter { memory }
    }
}

/// The trap raised when a guest grows its memory past its limit.
#[derive(Debug, thiserror::Error)]
#[error("out of memory: the guest tried to grow its memory to {} past its limit of {}", show_size(*.desired as u64), show_size(*.limit as u64))]
pub struct MemoryLimit {
    pub desired: usize,
    pub limit: usize,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            return Err(wasmtime::Error::new(MemoryLimit {
                desired,
                limit: self.memory,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999GiB").is_err());
        assert_eq!(show_size(10 << 20), "10MiB");
        assert_eq!(show_size(256 << 10), "256KiB");
        assert_eq!(show_size(1000), "1000 bytes");
    }

    #[test]
    fn memory_past_the_limit_traps() {
        let mut limiter = GuestLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        let e = limiter.memory_growing(0, 2 << 20, None).unwrap_err();
        assert!(e.to_string().contains("limit of 1MiB"), "{e}");
    }
}
