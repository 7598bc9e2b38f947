//! The run history's writer: one thread that writes run records in batches.
//!
//! A busy node records a run per handler call and per cron tick, a thousand a
//! second or more; one transaction (and one fsync) per batch instead of per
//! run keeps that cheap. Run records are history, not acknowledged state, so
//! they need not be durable before a call returns; but a reader must see the
//! runs that finished before it asked, which [`RunLog::flushed`] provides.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::watch;

use crate::state::{RunRecord, StateDb};

/// Most runs written in one transaction.
const BATCH: usize = 1000;

pub struct RunLog {
    sender: mpsc::Sender<RunRecord>,
    /// Runs handed to the writer so far.
    sent: AtomicU64,
    /// Runs the writer has finished with (written, or failed and logged).
    written: watch::Receiver<u64>,
}

impl RunLog {
    /// Starts the writer thread; it ends when the log is dropped.
    pub fn start(state: Arc<StateDb>, keep_per_handler: u32) -> std::io::Result<RunLog> {
        let (sender, receiver) = mpsc::channel::<RunRecord>();
        let (done, written) = watch::channel(0u64);
        std::thread::Builder::new()
            .name("run-log".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match receiver.try_recv() {
                            Ok(run) => batch.push(run),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = state.insert_runs(&batch, keep_per_handler) {
                        tracing::error!("cannot record {} runs: {e}", batch.len());
                    }
                    done.send_modify(|n| *n += batch.len() as u64);
                }
            })?;
        Ok(RunLog {
            sender,
            sent: AtomicU64::new(0),
            written,
        })
    }

    pub fn record(&self, run: RunRecord) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        if self.sender.send(run).is_err() {
            tracing::error!("the run log has stopped; a run was not recorded");
        }
    }

    /// Resolves once every run recorded before the call is written.
    pub async fn flushed(&self) {
        let target = self.sent.load(Ordering::SeqCst);
        let mut written = self.written.clone();
        // An error means the writer is gone: nothing more will be written.
        let _ = written.wait_for(|n| *n >= target).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recorded_runs_are_readable_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(StateDb::open(&dir.path().join("state.db")).unwrap());
        let log = RunLog::start(state.clone(), 100).unwrap();
        for i in 0..250 {
            log.record(RunRecord {
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
            });
        }
        log.flushed().await;
        let runs = state.runs_of_handler("echo", 1000).unwrap();
        assert_eq!(runs.len(), 100, "only the newest 100 are kept");
        assert_eq!(runs[0].output.as_deref(), Some("249"));
    }
}
