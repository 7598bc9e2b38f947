//! A node's memory, as the kernel counts it: what the tests that attack
//! the node bound, instead of timing it.

use std::time::Duration;

/// A process's resident memory, from the kernel.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// The most resident memory a process reached while it was watched: a
/// thread reads it every few milliseconds until stopped, so a spike between
/// two reads of the test's own is not missed.
pub struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    pub fn watch(pid: u32) -> PeakRss {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = rss_bytes(pid);
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_bytes(pid))
        });
        PeakRss { stop, thread }
    }

    /// Stops watching; the peak, in bytes.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("RSS watcher")
    }
}

/// Fails unless a process's RSS at its `peak` stayed within `bound` bytes
/// of where it was `before`.
pub fn assert_rss_grew_less_than(before: u64, peak: u64, bound: u64) {
    assert!(
        peak < before + bound,
        "RSS {} MiB before, {} MiB at the peak: more than {} MiB more",
        before >> 20,
        peak >> 20,
        bound >> 20
    );
}
