//! Idle guest instances kept for reuse, as `wasmtime serve
//! --max-instance-reuse-count` does: the operator's, and those of each
//! component registered with `reuse=N`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When an instance may serve more than one call.
#[derive(Clone, Copy, Debug)]
pub struct Reuse {
    /// Calls one instance serves at most; 1 means a fresh instance each.
    pub max_uses: usize,
    /// How long an idle instance is kept for the next call.
    pub idle_timeout: Duration,
}

/// Idle instances (with their stores), newest last. Only an instance whose
/// call returned cleanly should be given back.
pub struct WarmPool<T> {
    reuse: Reuse,
    idle: Mutex<Vec<Idle<T>>>,
}

struct Idle<T> {
    instance: T,
    uses: usize,
    since: Instant,
}

impl<T> WarmPool<T> {
    pub fn new(reuse: Reuse) -> Self {
        WarmPool {
            reuse,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Whether instances are kept at all.
    pub fn reuses(&self) -> bool {
        self.reuse.max_uses > 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle<T>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest idle instance that has not expired, with the calls it has
    /// served.
    pub fn take(&self) -> Option<(T, usize)> {
        if !self.reuses() {
            return None;
        }
        let mut idle = self.lock();
        idle.retain(|i| i.since.elapsed() < self.reuse.idle_timeout);
        idle.pop().map(|i| (i.instance, i.uses))
    }

    /// Keeps an instance that has served `uses` calls, unless that is its
    /// most.
    pub fn give_back(&self, instance: T, uses: usize) {
        if uses < self.reuse.max_uses {
            self.lock().push(Idle {
                instance,
                uses,
                since: Instant::now(),
            });
        }
    }
}
