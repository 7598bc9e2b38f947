//! Giving freed heap memory back to the kernel.
//!
//! A hostile guest can make the host allocate a great deal on its behalf
//! (HTTP fields by the thousand, say) before a bound stops it. The host then
//! frees it all, but glibc's allocator keeps freed memory in its arenas for
//! reuse, and memory freed in small pieces among live ones may never go
//! back: after one such call the node would keep gigabytes of resident
//! memory it does not use. A thread asks glibc every few seconds to return
//! what it can; with nothing freed, that costs a few microseconds.

use std::time::Duration;

/// How often freed memory is handed back.
const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Starts the thread that hands freed memory back, for the life of the
/// process.
pub fn start_trimming() {
    let spawned = std::thread::Builder::new()
        .name("memory-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_EVERY);
            trim();
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the memory trimmer (freed memory stays resident): {e}");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: `malloc_trim` only releases free memory of glibc's arenas; it
    // takes the allocator's own locks and may run beside any allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
