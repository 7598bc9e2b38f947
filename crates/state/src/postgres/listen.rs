//! Changes announced between the nodes of a fleet.
//!
//! Each transaction that changes what nodes keep in memory (components,
//! modules, schedules, triggers, workflows) also sends `NOTIFY
//! wasmatic_changes` with `"{node} {change}"`; PostgreSQL delivers it when,
//! and only if, the transaction commits. Each node listens on a connection
//! of its own (not from the pool: a pooled connection's LISTEN would follow
//! it to other callers) and hands the changes of the other nodes to its
//! [`ChangeFeed`], where the node picks them up and reloads that part.
//!
//! A notification sent while the listening connection is down is lost, so
//! after reconnecting the node is told everything changed: one full reload
//! is the price of a dropped connection, a missed change never is.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::Fault;
use crate::{Change, ChangeFeed};

/// The channel the nodes of a fleet announce their changes on.
const CHANNEL: &str = "wasmatic_changes";

/// The longest wait between two attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Tells the other nodes, when `tx` commits, that it changed `changes`.
pub(super) async fn announce(
    tx: &tokio_postgres::Transaction<'_>,
    node: &str,
    changes: &[Change],
) -> Result<(), Fault> {
    for change in changes {
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &format!("{node} {}", change.name())],
        )
        .await?;
    }
    Ok(())
}

/// Starts listening (answering once the first LISTEN is in place, so that
/// every change committed after `open` returns is seen) and keeps at it on
/// the current runtime until it shuts down.
pub(super) async fn start(
    config: Config,
    node: String,
    feed: Arc<ChangeFeed>,
) -> Result<(), Fault> {
    let listening = Listening::connect(&config, &node, &feed).await?;
    tokio::spawn(keep_listening(config, node, feed, listening));
    Ok(())
}

/// A connection that listens: its client (dropping it closes the
/// connection) and the task that reads its messages, which ends when the
/// connection does.
struct Listening {
    _client: Client,
    reader: JoinHandle<()>,
}

impl Listening {
    async fn connect(
        config: &Config,
        node: &str,
        feed: &Arc<ChangeFeed>,
    ) -> Result<Listening, tokio_postgres::Error> {
        let mut config = config.clone();
        config.application_name("wasmatic listener");
        let (client, mut connection) = config.connect(NoTls).await?;
        let (node, feed) = (node.to_string(), feed.clone());
        // Notifications arrive as the connection's asynchronous messages;
        // reading them is also what drives the connection.
        let reader = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(note))) => {
                        if let Some(bits) = change_of(note.payload(), &node) {
                            feed.push(bits);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!("PostgreSQL state: the listening connection failed: {e}");
                        break;
                    }
                    None => break,
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(Listening {
            _client: client,
            reader,
        })
    }
}

/// Listens again whenever the connection drops, backing off up to
/// [`MAX_BACKOFF`], and once back tells the node that everything may have
/// changed meanwhile.
async fn keep_listening(
    config: Config,
    node: String,
    feed: Arc<ChangeFeed>,
    mut listening: Listening,
) {
    loop {
        // A reader that panicked ends like one whose connection closed.
        let _ = (&mut listening.reader).await;
        drop(listening);
        tracing::warn!("PostgreSQL state: stopped hearing other nodes' changes; listening again");
        let mut backoff = Duration::from_millis(50);
        listening = loop {
            tokio::time::sleep(backoff).await;
            match Listening::connect(&config, &node, &feed).await {
                Ok(listening) => break listening,
                Err(e) => {
                    tracing::debug!("PostgreSQL state: cannot listen yet: {e}");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        tracing::info!("PostgreSQL state: listening again; reloading everything");
        feed.push(all_changes());
    }
}

/// Every bit of [`Change`].
pub(super) fn all_changes() -> u8 {
    Change::ALL.iter().fold(0, |bits, c| bits | *c as u8)
}

/// The bit of a payload `"{node} {change}"` sent by another node; nothing
/// for this node's own or a payload it does not know.
fn change_of(payload: &str, own: &str) -> Option<u8> {
    let (node, change) = payload.rsplit_once(' ')?;
    if node == own {
        return None;
    }
    Change::parse(change).map(|c| c as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_other_nodes_are_bits_and_own_are_not() {
        assert_eq!(change_of("a-1-ff schedules", "b-2-00"), Some(4));
        assert_eq!(change_of("b-2-00 schedules", "b-2-00"), None);
        assert_eq!(change_of("a-1-ff nonsense", "b-2-00"), None);
        assert_eq!(change_of("garbage", "b-2-00"), None);
        assert_eq!(all_changes(), 31);
    }
}
