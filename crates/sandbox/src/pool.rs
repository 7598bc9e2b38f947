//! Idle guest instances kept for reuse, as `wasmtime serve
//! --max-instance-reuse-count` does: the operator's, and those of each
//! component registered with `reuse=N`.
//!
//! An idle instance holds a slot of the engine's pooling allocator (and its
//! memory) for as long as it is kept. So idle instances are dropped by a
//! reaper thread once they have been idle for the pool's timeout, not only
//! when the next call happens to look, and the idle instances of all guest
//! pools together are capped node-wide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Idle guest instances kept across all pools of the node; past it, an
/// instance that could have been kept is dropped instead.
pub const MAX_IDLE_GUEST_INSTANCES: usize = 256;

/// Linear memory an instance may hold and still be kept idle. One that grew
/// past it (serving a large upload, say) is dropped after its call: kept, it
/// would hold that memory resident for as long as it waits.
pub const MAX_IDLE_MEMORY: usize = 16 << 20;

/// How often the reaper looks for expired idle instances; an instance is
/// released at most this long after its timeout.
const REAP_EVERY: Duration = Duration::from_millis(250);

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
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    reuse: Reuse,
    idle: Mutex<Vec<Idle<T>>>,
    /// Whether this pool's idle instances count towards the node-wide cap
    /// (the operator's are bounded by its in-flight cap instead).
    counted: bool,
    /// The node's pools, which sweep this one and count its idle instances.
    pools: Arc<Reaper>,
}

struct Idle<T> {
    instance: T,
    uses: usize,
    since: Instant,
}

/// The idle-instance pools of one node: the thread that drops their
/// expired instances, and the count of idle guest instances held against
/// [`MAX_IDLE_GUEST_INSTANCES`]. Made once at start and handed to whatever
/// creates pools; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Pools {
    reaper: Arc<Reaper>,
}

impl Pools {
    pub fn new() -> Self {
        let reaper = Arc::new(Reaper {
            pools: Mutex::new(Vec::new()),
            idle_guests: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&reaper);
        let spawned = std::thread::Builder::new()
            .name("idle-reaper".into())
            .spawn(move || loop {
                std::thread::sleep(REAP_EVERY);
                match weak.upgrade() {
                    Some(reaper) => reaper.sweep(),
                    None => return,
                }
            });
        if let Err(e) = spawned {
            // Expired instances are then still dropped by the next `take`.
            tracing::error!("cannot start the idle-instance reaper: {e}");
        }
        Pools { reaper }
    }

    /// A pool of guest instances, counted towards the node-wide cap on idle
    /// guest instances.
    pub fn guests<T: Send + 'static>(&self, reuse: Reuse) -> WarmPool<T> {
        self.build(reuse, true)
    }

    /// A pool whose size is bounded by its owner (the operator's: every
    /// instance, idle or not, holds one of its in-flight slots).
    pub fn uncounted<T: Send + 'static>(&self, reuse: Reuse) -> WarmPool<T> {
        self.build(reuse, false)
    }

    fn build<T: Send + 'static>(&self, reuse: Reuse, counted: bool) -> WarmPool<T> {
        let inner = Arc::new(Inner {
            reuse,
            idle: Mutex::new(Vec::new()),
            counted,
            pools: self.reaper.clone(),
        });
        if reuse.max_uses > 1 {
            let weak: Weak<dyn Sweep> = Arc::downgrade(&inner) as Weak<dyn Sweep>;
            self.reaper.register(weak);
        }
        WarmPool { inner }
    }
}

impl Default for Pools {
    fn default() -> Self {
        Pools::new()
    }
}

impl<T> WarmPool<T> {
    /// Whether instances are kept at all.
    pub fn reuses(&self) -> bool {
        self.inner.reuse.max_uses > 1
    }

    /// The newest idle instance that has not expired, with the calls it has
    /// served.
    pub fn take(&self) -> Option<(T, usize)> {
        if !self.reuses() {
            return None;
        }
        let expired;
        let taken = {
            let mut idle = self.inner.lock();
            expired = self.inner.drain_expired(&mut idle);
            idle.pop()
        };
        // Stores are dropped outside the lock: freeing an instance is not free.
        drop(expired);
        let taken = taken?;
        self.inner.forget(1);
        Some((taken.instance, taken.uses))
    }

    /// Keeps an instance that has served `uses` calls, unless that is its
    /// most or the node already keeps as many idle guest instances as it
    /// may.
    pub fn give_back(&self, instance: T, uses: usize) {
        if uses >= self.inner.reuse.max_uses {
            return;
        }
        if self.inner.counted
            && self
                .inner
                .pools
                .idle_guests
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < MAX_IDLE_GUEST_INSTANCES).then_some(n + 1)
                })
                .is_err()
        {
            return;
        }
        self.inner.lock().push(Idle {
            instance,
            uses,
            since: Instant::now(),
        });
        wasmatic_metrics::idle_instances(self.inner.metric(), 1);
    }

    /// Idle instances kept right now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.lock().len()
    }
}

impl<T> Inner<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle<T>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the instances idle for longer than the timeout; the caller
    /// drops them once the lock is released.
    fn drain_expired(&self, idle: &mut Vec<Idle<T>>) -> Vec<Idle<T>> {
        let timeout = self.reuse.idle_timeout;
        // Newest last: the expired ones are a prefix.
        let fresh = idle
            .iter()
            .position(|i| i.since.elapsed() < timeout)
            .unwrap_or(idle.len());
        let expired: Vec<_> = idle.drain(..fresh).collect();
        self.forget(expired.len());
        expired
    }

    fn forget(&self, n: usize) {
        if n == 0 {
            return;
        }
        if self.counted {
            self.pools.idle_guests.fetch_sub(n, Ordering::AcqRel);
        }
        wasmatic_metrics::idle_instances(self.metric(), -(n as i64));
    }

    /// Which pool the node's metrics count this one's idle instances in:
    /// the uncounted pool is the operator's.
    fn metric(&self) -> wasmatic_metrics::Pool {
        if self.counted {
            wasmatic_metrics::Pool::Component
        } else {
            wasmatic_metrics::Pool::Operator
        }
    }
}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        let n = self.idle.get_mut().map(|v| v.len()).unwrap_or(0);
        self.forget(n);
    }
}

/// What the reaper sees of a pool, whatever its instance type.
trait Sweep: Send + Sync {
    fn sweep(&self);
}

impl<T: Send> Sweep for Inner<T> {
    fn sweep(&self) {
        let expired = {
            let mut idle = self.lock();
            self.drain_expired(&mut idle)
        };
        drop(expired);
    }
}

/// One thread for the whole node that drops expired idle instances of every
/// pool; a pool that is gone is forgotten at the next sweep.
struct Reaper {
    pools: Mutex<Vec<Weak<dyn Sweep>>>,
    /// Idle guest instances across all counted pools.
    idle_guests: AtomicUsize,
}

impl Reaper {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn Sweep>>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, pool: Weak<dyn Sweep>) {
        self.lock().push(pool);
    }

    fn sweep(&self) {
        // Upgrade under the lock, sweep outside it: a sweep may take a while
        // and must not block pools being created.
        let live: Vec<Arc<dyn Sweep>> = {
            let mut pools = self.lock();
            pools.retain(|p| p.strong_count() > 0);
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        for pool in live {
            pool.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts how many of its values are alive.
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_reaper_drops_expired_instances_without_a_take() {
        let alive = Arc::new(AtomicUsize::new(0));
        let pool = Pools::new().uncounted(Reuse {
            max_uses: 10,
            idle_timeout: Duration::from_millis(50),
        });
        for _ in 0..3 {
            alive.fetch_add(1, Ordering::SeqCst);
            pool.give_back(Tracked(alive.clone()), 1);
        }
        assert_eq!(pool.idle(), 3);
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "idle instances never reaped");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn idle_guest_instances_are_capped_node_wide() {
        let reuse = Reuse {
            max_uses: 10,
            idle_timeout: Duration::from_secs(60),
        };
        let pools = Pools::new();
        let (a, b) = (pools.guests(reuse), pools.guests(reuse));
        for i in 0..MAX_IDLE_GUEST_INSTANCES {
            a.give_back(i, 1);
            b.give_back(i, 1);
        }
        assert!(a.idle() + b.idle() <= MAX_IDLE_GUEST_INSTANCES);
        // Taking one makes room for one.
        let before = b.idle();
        assert!(a.take().is_some());
        b.give_back(0, 1);
        assert_eq!(b.idle(), before + 1);
    }

    #[test]
    fn an_instance_at_its_most_uses_is_not_kept() {
        let pool = Pools::new().uncounted(Reuse {
            max_uses: 2,
            idle_timeout: Duration::from_secs(60),
        });
        pool.give_back(1, 1);
        pool.give_back(2, 2);
        assert_eq!(pool.take(), Some((1, 1)));
        assert_eq!(pool.take(), None);
    }
}
