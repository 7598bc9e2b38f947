//! Stopping a node cleanly: the scheduled work already going (cron ticks,
//! workflow ticks, chain-trigger rounds) finishes and is recorded before
//! the process ends, and nothing new starts.
//!
//! On SIGTERM the server first stops taking requests and lets the ones in
//! flight finish; then [`Node::stop`] closes the door to new ticks, waits
//! for those in flight (at most [`STOP_GRACE`]), and waits for the run log
//! to write every run it was handed. A run still going after the grace is
//! cut, as by kill -9: one node alone has no record of it, a fleet records
//! it as lost when it sweeps this node's claims.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::Node;

/// How long a stopping node waits for its scheduled runs, and then for
/// their records to be written.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Scheduled work in flight, counted so that a stopping node can wait for
/// it; closed, it admits nothing more.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    closed: AtomicBool,
    idle: Notify,
}

/// Counts one piece of work as in flight until dropped.
pub(crate) struct Going(Arc<InFlight>);

impl Drop for Going {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Counts a piece of work in, or `None` once the node is stopping.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<Going> {
        self.count.fetch_add(1, Ordering::AcqRel);
        let going = Going(self.clone());
        // Checked after counting in, so that `close` either sees this
        // piece counted or this piece sees the door closed.
        (!self.closed.load(Ordering::Acquire)).then_some(going)
    }

    /// Admits nothing more, then waits until nothing is in flight or
    /// `grace` has passed; returns how many are still going.
    async fn close(&self, grace: Duration) -> usize {
        self.closed.store(true, Ordering::Release);
        let drained = async {
            loop {
                let idle = self.idle.notified();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(grace, drained).await;
        self.count.load(Ordering::Acquire)
    }
}

impl Node {
    /// Lets the scheduled work in flight finish and its runs be written;
    /// no tick or trigger round starts after this is called.
    pub async fn stop(&self) {
        let going = self.core.in_flight.count.load(Ordering::Acquire);
        if going > 0 {
            tracing::info!("stopping: waiting for {going} scheduled runs to finish");
        }
        let left = self.core.in_flight.close(STOP_GRACE).await;
        if left > 0 {
            tracing::warn!(
                "stopping with {left} scheduled runs still going after {}s: they are cut and not recorded",
                STOP_GRACE.as_secs()
            );
        }
        if tokio::time::timeout(STOP_GRACE, self.core.runs.flushed())
            .await
            .is_err()
        {
            tracing::warn!(
                "stopping with {} run records not written: the state did not take them within {}s",
                self.core.runs.queued(),
                STOP_GRACE.as_secs()
            );
        }
    }
}
