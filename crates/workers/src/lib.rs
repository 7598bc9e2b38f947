//! The runtime's workers, one per core and kept there.
//!
//! May depend on: nothing of wasmatic's. The binary installs [`pin`] as
//! the runtime's park hook; whatever blocks a worker calls
//! [`block_in_place`].
//!
//! A thousand cron runs due at the same second are a burst that both
//! workers should share from its first run. Left to itself, the kernel
//! wakes the second worker on the core of the first (the waker), although
//! the other core is idle, and the two share one core until its load
//! balancer moves one, some 10 ms later (bench/notes.md, row f). Pinning
//! each worker to a core of its own removes that wait.
//!
//! Workers are named by their index (`tokio::runtime::worker_index`), not
//! by their thread: in `block_in_place` tokio hands a worker's role to
//! another thread, which is then pinned as that worker the first time it
//! parks, while the thread that blocks is unpinned first ([`block_in_place`])
//! so that a long compile never stays on a worker's core.

use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    /// The worker this thread is pinned as (or was refused a pin as), if
    /// it is one.
    static PINNED_AS: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The cores the process may run on, as it started: `None` when there are
/// too few to give workers one each, or they cannot be read.
fn cores() -> Option<&'static [usize]> {
    static CORES: OnceLock<Option<Vec<usize>>> = OnceLock::new();
    CORES
        .get_or_init(|| {
            let allowed = affinity::get()?;
            (allowed.len() >= 2).then_some(allowed)
        })
        .as_deref()
}

/// The runtime's `on_thread_park` hook: pins a worker thread to its core
/// the first time it parks as that worker (a syscall once per thread, a
/// thread-local read after).
pub fn pin() {
    let Some(index) = tokio::runtime::worker_index() else {
        return;
    };
    if PINNED_AS.get() == Some(index) {
        return;
    }
    let Some(cores) = cores() else {
        return;
    };
    let core = cores[index % cores.len()];
    // Tried once per worker role: a refusal (the core taken from the
    // process since it started, say) is not asked again at every park.
    if !affinity::set(&[core]) {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                core,
                "cannot pin a runtime worker to its core; it runs unpinned"
            );
        });
    }
    PINNED_AS.set(Some(index));
}

/// `tokio::task::block_in_place`, with the thread unpinned first: it gives
/// up its worker's role to block, and must not block on that worker's core.
pub fn block_in_place<R>(f: impl FnOnce() -> R) -> R {
    if PINNED_AS.take().is_some() {
        if let Some(cores) = cores() {
            affinity::set(cores);
        }
    }
    tokio::task::block_in_place(f)
}

/// The calling thread's CPU affinity.
mod affinity {
    use std::mem::{size_of, zeroed};

    /// The cores the calling thread may run on.
    pub fn get() -> Option<Vec<usize>> {
        // SAFETY: `set` is a plain bit set, written by the kernel.
        unsafe {
            let mut set: libc::cpu_set_t = zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return None;
            }
            Some(
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &set))
                    .collect(),
            )
        }
    }

    /// Lets the calling thread run on `cores` only; false if refused.
    pub fn set(cores: &[usize]) -> bool {
        // SAFETY: as above; the kernel reads the set.
        unsafe {
            let mut set: libc::cpu_set_t = zeroed();
            for &c in cores {
                libc::CPU_SET(c, &mut set);
            }
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each worker of a runtime built with the hook runs on its own core,
    /// and a thread leaving a worker's role by `block_in_place` may run on
    /// every core again.
    #[test]
    fn workers_are_pinned_one_per_core_and_unpinned_to_block() {
        let Some(all) = cores().map(<[usize]>::to_vec) else {
            eprintln!("fewer than two cores: nothing to pin");
            return;
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .on_thread_park(pin)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // A worker is pinned once it has parked; ask the workers, through
            // tasks that run wherever the scheduler puts them, until each
            // has answered from its core (or give up).
            let mut seen = std::collections::BTreeMap::new();
            for _ in 0..2000 {
                let (index, cores) =
                    tokio::spawn(async { (tokio::runtime::worker_index(), affinity::get()) })
                        .await
                        .unwrap();
                if let (Some(index), Some(cores)) = (index, cores) {
                    if cores.len() == 1 {
                        seen.insert(index, cores[0]);
                    }
                }
                if seen.len() == 2 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert_eq!(
                seen,
                [(0, all[0]), (1, all[1])].into(),
                "each worker on its own core"
            );
            let blocked = tokio::spawn(async { block_in_place(affinity::get) })
                .await
                .unwrap();
            assert_eq!(
                blocked,
                Some(all.clone()),
                "a blocking thread may run anywhere"
            );
        });
    }
}
