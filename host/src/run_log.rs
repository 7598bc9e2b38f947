//! The run history's writer: one thread that writes run records in batches.
//!
//! A busy node records a run per guest call and per cron tick, a thousand a
//! second or more; one transaction (and one fsync) per batch instead of per
//! run keeps that cheap. The queue to the writer is bounded: when the disk
//! falls behind, callers wait for room rather than the node buffering
//! without end. Run records are history, not acknowledged state, so they
//! need not be durable before a call returns; but a reader must see the runs
//! that finished before it asked, which [`RunLog::flushed`] provides.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use std::time::{Duration, Instant};

use crate::state::{RunBounds, RunRecord, StateError, Store};

/// Runs waiting for the writer at most (each is at most a few MiB: the
/// output, stdout, stderr and audit caps).
const QUEUE: usize = 64;

pub struct RunLog {
    sender: mpsc::Sender<RunRecord>,
    /// Runs handed to the writer so far.
    sent: AtomicU64,
    /// Runs the writer has finished with (written, or failed and logged).
    written: watch::Receiver<u64>,
}

impl RunLog {
    /// Starts the writer thread; it ends when the log is dropped.
    pub fn start(state: Arc<dyn Store>, bounds: RunBounds) -> std::io::Result<RunLog> {
        let (sender, mut receiver) = mpsc::channel::<RunRecord>(QUEUE);
        let (done, written) = watch::channel(0u64);
        std::thread::Builder::new()
            .name("run-log".into())
            .spawn(move || {
                while let Some(first) = receiver.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < QUEUE {
                        match receiver.try_recv() {
                            Ok(run) => batch.push(run),
                            Err(_) => break,
                        }
                    }
                    write(&*state, &batch, bounds);
                    done.send_modify(|n| *n += batch.len() as u64);
                }
            })?;
        Ok(RunLog {
            sender,
            sent: AtomicU64::new(0),
            written,
        })
    }

    /// Queues a run for the writer, waiting while the queue is full.
    pub async fn record(&self, run: RunRecord) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        if self.sender.send(run).await.is_err() {
            tracing::error!("the run log has stopped; a run was not recorded");
        }
    }

    /// Runs waiting in the queue for the writer (a node metric).
    pub fn queued(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Resolves once every run recorded before the call is written.
    pub async fn flushed(&self) {
        let target = self.sent.load(Ordering::SeqCst);
        let mut written = self.written.clone();
        // An error means the writer is gone: nothing more will be written.
        let _ = written.wait_for(|n| *n >= target).await;
    }
}

/// How long the writer keeps trying while a shared database is
/// unreachable; meanwhile the queue fills and callers wait for room.
const PATIENCE: Duration = Duration::from_secs(30);

/// Writes one batch. A shared database that is down (restarting, say) is
/// waited for, so that a short outage loses no run.
fn write(state: &dyn Store, batch: &[RunRecord], bounds: RunBounds) {
    let started = Instant::now();
    loop {
        match state.insert_runs(batch, bounds) {
            Ok(()) => return,
            Err(StateError::Unavailable(e)) if started.elapsed() < PATIENCE => {
                tracing::debug!("run log waits for the database: {e}");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return tracing::error!("cannot record {} runs: {e}", batch.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ComponentRecord, HandlerSettings};

    #[tokio::test]
    async fn recorded_runs_are_readable_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn Store> =
            Arc::new(crate::state::sqlite::Sqlite::open(&dir.path().join("state.db")).unwrap());
        let record = ComponentRecord {
            name: "echo".into(),
            digest: "d".into(),
            settings: HandlerSettings::default(),
            loaded_at: 0,
        };
        state.commit_component(&record, b"x").unwrap();
        let bounds = RunBounds {
            per_name: 100,
            total: 10_000,
            total_bytes: 1 << 30,
        };
        let log = RunLog::start(state.clone(), bounds).unwrap();
        for i in 0..250 {
            log.record(RunRecord {
                id: 0,
                name: "echo".into(),
                function: None,
                job_id: None,
                scheduled_for: None,
                started_at: i,
                duration_ms: 0,
                ok: true,
                output: Some(i.to_string()),
                error: None,
                stdout: String::new(),
                stderr: String::new(),
                audit: Vec::new(),
                rpc: Vec::new(),
            })
            .await;
        }
        log.flushed().await;
        let runs = state.runs_of_handler("echo", 1000, None).unwrap().runs;
        assert_eq!(runs.len(), 100, "only the newest 100 are kept");
        assert_eq!(runs[0].output.as_deref(), Some("249"));
    }
}
