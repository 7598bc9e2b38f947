//! The run history's writer: one thread that writes run records in batches.
//!
//! A busy node records a run per guest call and per cron tick, tens of
//! thousands a second on a fast handler. Each commit costs far more than
//! each row (SQLite writes every page it touched to its log), so the writer
//! waits a moment after the first run of a batch for more to arrive, and
//! commits them together. The queue to the writer is bounded in bytes: when
//! the disk falls behind, callers wait for room rather than the node
//! buffering without end. While runs keep arriving (a thousand ticks due
//! at once, say) the writer keeps waiting, up to [`MAX_LINGER`], so that
//! it commits the burst once it is over instead of taking a core from the
//! runs still to start. Run records are history, not acknowledged state,
//! so they need not be durable before a call returns; but a reader must see
//! the runs that finished before it asked, which [`RunLog::flushed`]
//! provides, cutting the writer's wait short. While a shared database is
//! down the writer keeps its batch and tries again; a reader then asks
//! through [`RunLog::readable`], which does not wait for the database to
//! come back: its own read fails at once with the same outage.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use wasmatic_state::{RunBounds, RunRecord, StateError, Store};

/// Bytes of run records waiting for the writer at most (a record's size is
/// [`RunRecord::size`]; one larger than this waits for an empty queue).
const QUEUE_BYTES: usize = 32 << 20;

/// Runs written in one transaction at most.
const BATCH: usize = 1024;

/// How long the writer waits after the first run of a batch for more,
/// unless a reader is waiting or a batch's worth is already queued; and
/// again, as long as more came in the last wait.
const LINGER: Duration = Duration::from_millis(5);

/// The longest the writer waits in all before it commits what came.
const MAX_LINGER: Duration = Duration::from_millis(100);

/// A run on its way to the writer, with its room in the queue, given back
/// once it is written.
struct Queued {
    run: RunRecord,
    _room: OwnedSemaphorePermit,
}

pub struct RunLog {
    sender: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    /// Runs in the queue now.
    queued: Arc<AtomicUsize>,
    /// The writer thread, woken early by readers and by a full batch.
    writer: Thread,
    /// Set when the writer should stop waiting and commit now.
    hurry: Arc<AtomicBool>,
    /// Runs handed to the writer so far.
    sent: AtomicU64,
    /// How far the writer has got.
    progress: watch::Receiver<Progress>,
}

/// What the writer has done so far, watched by those waiting for it.
#[derive(Clone, Copy, Default)]
struct Progress {
    /// Runs the writer has finished with (written, or failed and logged).
    written: u64,
    /// Whether the writer is waiting for an unreachable database.
    stalled: bool,
}

impl RunLog {
    /// Starts the writer thread; it ends when the log is dropped.
    pub fn start(state: Arc<dyn Store>, bounds: RunBounds) -> std::io::Result<RunLog> {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Queued>();
        let (done, progress) = watch::channel(Progress::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let in_queue = queued.clone();
        let hurry = Arc::new(AtomicBool::new(false));
        let hurried = hurry.clone();
        let writer = std::thread::Builder::new()
            .name("run-log".into())
            .spawn(move || {
                while let Some(first) = receiver.blocking_recv() {
                    linger(&in_queue, &hurried);
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match receiver.try_recv() {
                            Ok(run) => batch.push(run),
                            Err(_) => break,
                        }
                    }
                    in_queue.fetch_sub(batch.len(), Ordering::SeqCst);
                    let runs: Vec<RunRecord> = batch.into_iter().map(|q| q.run).collect();
                    write(&*state, &runs, bounds, &done);
                    done.send_modify(|p| {
                        p.written += runs.len() as u64;
                        p.stalled = false;
                    });
                }
            })?;
        Ok(RunLog {
            sender,
            room: Arc::new(Semaphore::new(QUEUE_BYTES)),
            queued,
            writer: writer.thread().clone(),
            hurry,
            sent: AtomicU64::new(0),
            progress,
        })
    }

    /// Queues a run for the writer, waiting while the queue is full.
    pub async fn record(&self, run: RunRecord) {
        let bytes = run.size().clamp(1, QUEUE_BYTES) as u32;
        let Ok(room) = self.room.clone().acquire_many_owned(bytes).await else {
            return tracing::error!("the run log has stopped; a run was not recorded");
        };
        self.sent.fetch_add(1, Ordering::SeqCst);
        let queued = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        if self.sender.send(Queued { run, _room: room }).is_err() {
            return tracing::error!("the run log has stopped; a run was not recorded");
        }
        // A full batch, or a queue at half its bytes, need not wait.
        if queued == BATCH || self.room.available_permits() < QUEUE_BYTES / 2 {
            self.hurry_writer();
        }
    }

    fn hurry_writer(&self) {
        self.hurry.store(true, Ordering::SeqCst);
        self.writer.unpark();
    }

    /// Runs waiting in the queue for the writer (a node metric).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Resolves once every run recorded before the call is written.
    pub async fn flushed(&self) {
        self.wait_for_writer(|_| false).await;
    }

    /// Resolves once every run recorded before the call is written, or as
    /// soon as the writer is waiting for an unreachable database: a reader
    /// of the runs then hears of the outage now, not when it ends.
    pub async fn readable(&self) {
        self.wait_for_writer(|p| p.stalled).await;
    }

    async fn wait_for_writer(&self, enough: impl Fn(&Progress) -> bool) {
        let target = self.sent.load(Ordering::SeqCst);
        let mut progress = self.progress.clone();
        if progress.borrow().written < target {
            self.hurry_writer();
        }
        // An error means the writer is gone: nothing more will be written.
        let _ = progress
            .wait_for(|p| p.written >= target || enough(p))
            .await;
    }
}

/// The writer's wait before a batch: [`LINGER`], then again while runs
/// keep coming, until a batch's worth is queued, someone is waiting for
/// the runs to be written, or [`MAX_LINGER`] has passed.
fn linger(queued: &AtomicUsize, hurry: &AtomicBool) {
    let started = Instant::now();
    let mut seen = 0;
    loop {
        let now = queued.load(Ordering::SeqCst);
        let hurried = hurry.swap(false, Ordering::SeqCst);
        if now >= BATCH || now == seen || hurried {
            return;
        }
        let Some(left) = MAX_LINGER.checked_sub(started.elapsed()) else {
            return;
        };
        seen = now;
        std::thread::park_timeout(left.min(LINGER));
    }
}

/// How long the writer keeps trying while a shared database is
/// unreachable; meanwhile the queue fills and callers wait for room.
const PATIENCE: Duration = Duration::from_secs(30);

/// Writes one batch. A shared database that is down (restarting, say) is
/// waited for, so that a short outage loses no run; meanwhile `progress`
/// says the writer is stalled.
fn write(
    state: &dyn Store,
    batch: &[RunRecord],
    bounds: RunBounds,
    progress: &watch::Sender<Progress>,
) {
    let started = Instant::now();
    loop {
        match state.insert_runs(batch, bounds) {
            Ok(()) => return,
            Err(StateError::Unavailable(e)) if started.elapsed() < PATIENCE => {
                tracing::debug!("run log waits for the database: {e}");
                progress.send_if_modified(|p| !std::mem::replace(&mut p.stalled, true));
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return tracing::error!("cannot record {} runs: {e}", batch.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmatic_state::ComponentRecord;

    #[tokio::test]
    async fn recorded_runs_are_readable_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn Store> =
            Arc::new(wasmatic_state::sqlite::Sqlite::open(&dir.path().join("state.db")).unwrap());
        state
            .commit_component(&ComponentRecord::sample("echo"), b"x")
            .unwrap();
        let bounds = RunBounds {
            per_name: 100,
            total: 10_000,
            total_bytes: 1 << 30,
        };
        let log = RunLog::start(state.clone(), bounds).unwrap();
        for i in 0..250 {
            log.record(RunRecord::sample("echo", i, Some(i.to_string())))
                .await;
        }
        log.flushed().await;
        let runs = state.runs_of_handler("echo", 1000, None).unwrap().runs;
        assert_eq!(runs.len(), 100, "only the newest 100 are kept");
        assert_eq!(runs[0].output.as_deref(), Some("249"));
    }
}
