//! Claims: which node of a fleet runs an occurrence (a tick, a chain
//! event), decided in the shared state, in batches.
//!
//! A node on its own always runs what is due; in a fleet, the node whose
//! claim is first wins. Claims go to the database in batches
//! ([`claim_batches`]), so a thousand ticks due at one second cost a few
//! round trips.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::blocking;
use wasmatic_api::NodeError;
use wasmatic_guests::run_log::RunLog;
use wasmatic_state::{Claim, Claimed, Fleet, StateError};

/// How long a tick waits for an unreachable database to decide its claim
/// before it is given up (and logged): a short outage delays ticks, it does
/// not lose them.
const CLAIM_PATIENCE: Duration = Duration::from_secs(15);
/// Between two attempts at a claim while the database is unreachable.
const CLAIM_RETRY: Duration = Duration::from_millis(250);

/// Where this node's claims go to be batched, once it is in a fleet.
#[derive(Default)]
pub(crate) struct Claims {
    sender: OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl Claims {
    /// Whether this node is in a fleet (claims go to the shared state).
    pub(crate) fn in_fleet(&self) -> bool {
        self.sender.get().is_some()
    }

    /// Starts sending claims to `fleet`; false if they already go there.
    pub(crate) fn start(&self, fleet: Arc<dyn Fleet>) -> bool {
        let (sender, receiver) = mpsc::unbounded_channel();
        if self.sender.set(sender).is_err() {
            return false;
        }
        tokio::spawn(claim_batches(fleet, receiver));
        true
    }

    /// Whether this node runs occurrence `claim`: on a node of its own,
    /// always (as a skip when `skipped`); in a fleet, when it wins the
    /// claim. `None` when no answer came within [`CLAIM_PATIENCE`].
    pub(crate) async fn claim(&self, claim: &Claim, skipped: bool) -> Option<Claimed> {
        let Some(claims) = self.sender.get() else {
            return Some(if skipped {
                Claimed::Skipped
            } else {
                Claimed::Won
            });
        };
        let (answer, answered) = oneshot::channel();
        claims
            .send(Pending::Claim(claim.clone(), skipped, answer))
            .ok()?;
        let claimed = answered.await.ok()??;
        wasmatic_metrics::claim(match claimed {
            Claimed::Won => "won",
            Claimed::Taken => "taken",
            Claimed::Skipped => "skipped",
        });
        Some(claimed)
    }

    /// Marks a claim this node won as done once its run is recorded: a node
    /// that dies before has it swept as lost. A run recorded by the run log
    /// (`via_run_log`) is first marked as ended, so that the next tick of
    /// its schedule is not skipped while the record is on its way.
    pub(crate) async fn finish(&self, claim: &Claim, via_run_log: bool, runs: &RunLog) {
        let Some(claims) = self.sender.get() else {
            return;
        };
        let send = |recorded: bool| {
            let (answer, answered) = oneshot::channel();
            let key = (claim.what.clone(), claim.at.clone());
            claims
                .send(Pending::Finish(key, recorded, answer))
                .ok()
                .map(|()| answered)
        };
        if via_run_log {
            if let Some(answered) = send(false) {
                let _ = answered.await;
            }
            runs.flushed().await;
        }
        if let Some(answered) = send(true) {
            let _ = answered.await;
        }
    }
}

/// A claim, or a claim done, on its way to the database with others.
pub(super) enum Pending {
    Claim(Claim, bool, oneshot::Sender<Option<Claimed>>),
    /// (what, at), and whether its run is recorded.
    Finish((String, String), bool, oneshot::Sender<()>),
}

/// Most claims sent in one statement.
const MAX_BATCH: usize = 2000;

/// Sends claims to the database in batches: whatever queued while the
/// previous batch was on its way goes in the next, so a thousand ticks of
/// one second cost a few round trips, not a thousand. A database that is
/// unreachable is waited for up to [`CLAIM_PATIENCE`] per batch; claims
/// still undecided then are not run (and logged).
async fn claim_batches(fleet: Arc<dyn Fleet>, mut queue: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut claims = Vec::new();
        let mut finishes: [Vec<_>; 2] = [Vec::new(), Vec::new()];
        let mut next = Some(first);
        while let Some(pending) = next.take() {
            match pending {
                Pending::Claim(claim, skipped, answer) => claims.push((claim, skipped, answer)),
                Pending::Finish(key, recorded, answer) => {
                    finishes[usize::from(recorded)].push((key, answer))
                }
            }
            if claims.len() + finishes[0].len() + finishes[1].len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        for (recorded, finishes) in finishes.into_iter().enumerate() {
            if finishes.is_empty() {
                continue;
            }
            let done: Vec<(String, String)> = finishes.iter().map(|(k, _)| k.clone()).collect();
            let fleet = fleet.clone();
            let recorded = recorded == 1;
            if let Err(e) = patiently(move || fleet.finish_all(&done, recorded)).await {
                tracing::error!(claims = finishes.len(), "claims not marked as run: {e}");
            }
            for (_, answer) in finishes {
                let _ = answer.send(());
            }
        }
        if !claims.is_empty() {
            let asked: Vec<(Claim, bool)> =
                claims.iter().map(|(c, s, _)| (c.clone(), *s)).collect();
            let fleet = fleet.clone();
            let outcome = patiently(move || fleet.claim_all(&asked)).await;
            match outcome {
                Ok(claimed) => {
                    for ((_, _, answer), claimed) in claims.into_iter().zip(claimed) {
                        let _ = answer.send(Some(claimed));
                    }
                }
                Err(e) => {
                    tracing::error!(claims = claims.len(), "not run: cannot claim: {e}");
                    for (_, _, answer) in claims {
                        let _ = answer.send(None);
                    }
                }
            }
        }
    }
}

/// Runs `call` off the async workers, again while the database is
/// unreachable, for up to [`CLAIM_PATIENCE`].
async fn patiently<T: Send + 'static>(
    call: impl Fn() -> Result<T, StateError> + Send + Sync + 'static,
) -> Result<T, NodeError> {
    let call = Arc::new(call);
    let started = tokio::time::Instant::now();
    loop {
        let attempt = call.clone();
        match blocking(move || attempt()).await? {
            Ok(value) => return Ok(value),
            Err(StateError::Unavailable(_)) if started.elapsed() < CLAIM_PATIENCE => {
                tokio::time::sleep(CLAIM_RETRY).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
