//! Limits that keep one guest or one client from taking the node down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmatic_api::show_size;

use anyhow::{ensure, Result};
use wasmtime::ResourceLimiter;

use crate::flags::{RuntimeFlags, MAX_TABLE_ELEMENTS};

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
    /// Largest handler component accepted, in bytes.
    pub max_handler_size: u64,
    /// Largest request body accepted, in bytes.
    pub max_request_body: u64,
    /// Linear memory one handler instance may use, in bytes.
    pub handler_memory: usize,
    /// Linear memory one operator instance may use, in bytes.
    pub operator_memory: usize,
    /// Linear memory every operator instance together may use, in bytes.
    pub operator_memory_total: usize,
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
        ensure!(
            self.operator_memory_total >= self.operator_memory,
            "--operator-memory-total ({}) must be at least --operator-memory ({})",
            show_size(self.operator_memory_total as u64),
            show_size(self.operator_memory as u64)
        );
        Ok(self)
    }
}

/// One store's budget: everything a call creates, whatever kind of guest
/// (handler, any-world component, core module with its `host_modules`, WASI
/// job) and the operator's per-request store alike. Memory is summed over
/// every linear memory of every instance in the store, not checked per
/// memory: a module that links the same 64 MiB module twenty times would
/// otherwise get twenty times its limit. Tables likewise; instances, tables
/// and memories are counted. wasmtime's `-W` flags ([`crate::flags`]) bound
/// single memories and tables further.
///
/// Nothing in a store is freed before the store is dropped, so the sums only
/// grow: a store reused for several calls keeps what it has.
pub struct GuestLimiter {
    memory: usize,
    memory_used: usize,
    table_elements_used: usize,
    flags: RuntimeFlags,
    /// The budget this store's memory is also counted against, with others.
    shared: Option<Arc<MemoryBudget>>,
}

/// Bytes that many holders take from and give back to, never more than its
/// limit in all: the request bodies buffered across connections
/// (`--max-buffered-bodies`), the operator instances' memory
/// ([`MemoryBudget`]).
#[derive(Debug)]
pub struct ByteBudget {
    limit: u64,
    used: AtomicU64,
}

impl ByteBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(ByteBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Takes `n` bytes, if that many are left.
    pub fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken before.
    pub fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes taken now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Linear memory shared by many stores: the operator's stores, one per
/// request in flight, so that many requests at once cannot each take the
/// per-instance limit (128 × 256 MiB would be 32 GiB). Growth past it fails
/// with [`BudgetExhausted`], which the node answers with 503; a store gives
/// back what it held when it is dropped. The gauge
/// `wasmatic_operator_memory_bytes` follows it.
#[derive(Debug)]
pub struct MemoryBudget(Arc<ByteBudget>);

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(MemoryBudget(ByteBudget::new(limit as u64)))
    }

    /// Takes `bytes` from the budget, if that many are left.
    fn reserve(&self, bytes: usize) -> bool {
        let taken = self.0.try_take(bytes as u64);
        if taken {
            wasmatic_metrics::operator_memory(self.0.used() as usize);
        }
        taken
    }

    fn release(&self, bytes: usize) {
        self.0.give_back(bytes as u64);
        wasmatic_metrics::operator_memory(self.0.used() as usize);
    }

    fn limit(&self) -> usize {
        self.0.limit() as usize
    }

    /// Bytes taken now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.0.used() as usize
    }
}

/// The trap raised when a store's growth would take its shared budget past
/// its limit: the node is busy, not the guest at fault.
#[derive(Debug, thiserror::Error)]
#[error("the memory that requests in flight may use together (--operator-memory-total, {}) is taken; try again shortly", show_size(*.limit as u64))]
pub struct BudgetExhausted {
    pub limit: usize,
}

impl GuestLimiter {
    /// The limits of one store, with at most `memory` bytes of linear memory
    /// in all, under `flags`. Every store of the node gets its limits here.
    pub fn new(memory: usize, flags: RuntimeFlags) -> Self {
        GuestLimiter {
            memory,
            memory_used: 0,
            table_elements_used: 0,
            flags,
            shared: None,
        }
    }

    /// Counts this store's memory against `budget` too.
    pub fn sharing(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.shared = Some(budget);
        self
    }

    /// Bytes of linear memory the store's instances hold.
    #[cfg(test)]
    pub fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// Whether the store's instances are small enough to be kept idle for
    /// reuse (see [`crate::pool::MAX_IDLE_MEMORY`]).
    pub fn may_idle(&self) -> bool {
        self.memory_used <= crate::pool::MAX_IDLE_MEMORY
    }
}

/// The trap raised when a guest grows its memory past its limit.
#[derive(Debug, thiserror::Error)]
#[error("out of memory: the guest tried to grow its memory to {} in all past its limit of {}", show_size(*.desired as u64), show_size(*.limit as u64))]
pub struct MemoryLimit {
    pub desired: usize,
    pub limit: usize,
}

/// What `used` (of memories or of table elements) becomes when one of them
/// grows from `current` to `desired`; none past that one's own declared
/// `maximum`, where wasmtime fails the growth after asking: refused before
/// it is counted.
fn grown(used: usize, current: usize, desired: usize, maximum: Option<usize>) -> Option<usize> {
    if maximum.is_some_and(|max| desired > max) {
        return None;
    }
    Some((used - current.min(used)).saturating_add(desired))
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let Some(total) = grown(self.memory_used, current, desired, maximum) else {
            return Ok(false);
        };
        if total > self.memory {
            return Err(wasmtime::Error::new(MemoryLimit {
                desired: total,
                limit: self.memory,
            }));
        }
        // `-W max-memory-size` makes growth fail as wasmtime's own limiter
        // does: `memory.grow` returns -1 (or traps with
        // `-W trap-on-grow-failure`).
        if self.flags.max_memory_size.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        if let Some(shared) = &self.shared {
            if !shared.reserve(total.saturating_sub(self.memory_used)) {
                return Err(wasmtime::Error::new(BudgetExhausted {
                    limit: shared.limit(),
                }));
            }
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let Some(total) = grown(self.table_elements_used, current, desired, maximum) else {
            return Ok(false);
        };
        if total > MAX_TABLE_ELEMENTS || self.flags.max_table_elements.is_some_and(|m| desired > m)
        {
            return Ok(false);
        }
        self.table_elements_used = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        if self.flags.trap_on_grow_failure {
            return Err(error.context("memory.grow failed (-W trap-on-grow-failure)"));
        }
        Ok(())
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        if self.flags.trap_on_grow_failure {
            return Err(error.context("table.grow failed (-W trap-on-grow-failure)"));
        }
        Ok(())
    }

    fn instances(&self) -> usize {
        self.flags.max_instances
    }

    fn tables(&self) -> usize {
        self.flags.max_tables
    }

    fn memories(&self) -> usize {
        self.flags.max_memories
    }
}

impl Drop for GuestLimiter {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.release(self.memory_used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_sharing_a_budget_are_held_to_it_together_and_give_it_back() {
        let budget = MemoryBudget::new(3 << 20);
        let mut one = GuestLimiter::new(2 << 20, RuntimeFlags::default()).sharing(budget.clone());
        let mut two = GuestLimiter::new(2 << 20, RuntimeFlags::default()).sharing(budget.clone());
        assert!(one.memory_growing(0, 2 << 20, None).unwrap());
        assert!(two.memory_growing(0, 1 << 20, None).unwrap());
        let e = two.memory_growing(1 << 20, 2 << 20, None).unwrap_err();
        assert!(e.is::<BudgetExhausted>(), "{e}");
        assert_eq!(budget.used(), 3 << 20);
        drop(one);
        assert_eq!(budget.used(), 1 << 20);
        assert!(two.memory_growing(1 << 20, 2 << 20, None).unwrap());
        drop(two);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn memory_past_the_limit_traps() {
        let mut limiter = GuestLimiter::new(1 << 20, RuntimeFlags::default());
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        let e = limiter.memory_growing(0, 2 << 20, None).unwrap_err();
        assert!(e.to_string().contains("limit of 1MiB"), "{e}");
    }

    #[test]
    fn memory_is_summed_over_every_memory_of_the_store() {
        let mut limiter = GuestLimiter::new(4 << 20, RuntimeFlags::default());
        // Three memories of 1 MiB each, then the second grows by 1 MiB.
        for _ in 0..3 {
            assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        }
        assert!(limiter.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert_eq!(limiter.memory_used(), 4 << 20);
        // Growth past a memory's declared maximum fails uncounted.
        assert!(!limiter
            .memory_growing(2 << 20, 3 << 20, Some(2 << 20))
            .unwrap());
        // A fourth memory, however small, is past the sum.
        let e = limiter.memory_growing(0, 64 << 10, None).unwrap_err();
        assert!(e.to_string().contains("limit of 4MiB"), "{e}");
        assert_eq!(limiter.memory_used(), 4 << 20);
    }

    #[test]
    fn table_elements_are_summed_too() {
        let mut limiter = GuestLimiter::new(1 << 20, RuntimeFlags::default());
        assert!(limiter
            .table_growing(0, MAX_TABLE_ELEMENTS - 10, None)
            .unwrap());
        assert!(!limiter.table_growing(0, 11, None).unwrap());
        assert!(limiter.table_growing(0, 10, None).unwrap());
    }
}
