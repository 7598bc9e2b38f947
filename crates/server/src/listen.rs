//! Connections: accepting them within a cap, and closing those that are
//! slow or idle, so that holding sockets open costs a client more than it
//! costs the node.
//!
//! At the cap, a new connection is not simply refused: the connection that
//! has waited longest without a request in progress (one that never sent a
//! whole request head first) is closed to make room. Otherwise a client
//! holding the cap's worth of half-sent heads would lock everyone out until
//! the header-read timeout. A connection whose response has been waiting
//! for its client to take it for a while is closed likewise, after the idle
//! ones: a client reading slowly through a tiny window holds kernel and
//! node memory for nothing. Only when every connection has a request in
//! progress that is not such a one is the new one answered 503.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How long in-flight requests may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Connections over the cap that may be waiting at once for their 503 to be
/// written; past this, an excess connection is closed without an answer.
const MAX_REFUSING: usize = 64;

/// The node log says the connection cap is reached at most this often, so
/// that a flood of connections does not become a flood of log lines.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How long an excess connection is given to take its 503.
const REFUSE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a new connection at the cap waits for the room a closed idle
/// connection makes.
const ROOM_WAIT: Duration = Duration::from_millis(500);

/// What the cap refuses with; written as-is to a connection the node has not
/// read from.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 58\r\n\r\n{\"error\":\"the node has as many connections as it accepts\"}";

/// Longest request head (request line and headers); a longer one gets 431.
/// Hyper's default is its whole read buffer, about 400 KiB: 1024
/// connections sending heads slowly could then hold 400 MiB.
const MAX_HEAD: usize = 32 << 10;

/// Bytes hyper buffers per connection for reading and writing.
const MAX_CONNECTION_BUFFER: usize = 64 << 10;

/// How long a response may have been waiting for its client before its
/// connection may be closed to make room at the cap.
const SLOW_READER: Duration = Duration::from_secs(1);

/// How connections are accepted and when they are closed.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's head, from the moment the node
    /// waits for it.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in progress.
    pub keep_alive_timeout: Duration,
    /// Time a client has to take a response once it is ready.
    pub write_timeout: Duration,
}

impl ConnectionLimits {
    /// How long a connection may go without a request in progress. Once a
    /// response is written the node is waiting for the next head, so both
    /// timeouts run from the same moment, and the shorter one closes it.
    fn idle_limit(&self) -> Duration {
        self.keep_alive_timeout.min(self.header_read_timeout)
    }
}

/// Serves `handle` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: ConnectionLimits,
    handle: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<HyperOutgoingBody>> + Send + 'static,
{
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let waiting = Arc::new(Semaphore::new(MAX_REFUSING));
    let registry = Arc::new(Registry::default());
    let (stop, stopped) = watch::channel(false);
    let mut last_warning = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (handle, stopped, registry) = (handle.clone(), stopped.clone(), registry.clone());
        if let Ok(permit) = open.clone().try_acquire_owned() {
            tokio::spawn(async move {
                connection(stream, peer, limits, handle, stopped, &registry).await;
                drop(permit);
            });
            continue;
        }
        // At the cap: close the longest-idle connection, and take its room.
        let room = match waiting.clone().try_acquire_owned() {
            Ok(waiter) if registry.evict_one() => Some(waiter),
            _ => None,
        };
        let Some(waiter) = room else {
            if last_warning.is_none_or(|at: Instant| at.elapsed() >= CAP_WARNING_EVERY) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    %peer,
                    "refusing connections: {} are open (--max-connections), each with a request in progress",
                    limits.max_connections
                );
            }
            refuse(stream, &refusing);
            continue;
        };
        let (open, refusing) = (open.clone(), refusing.clone());
        tokio::spawn(async move {
            let permit = tokio::time::timeout(ROOM_WAIT, open.acquire_owned()).await;
            drop(waiter);
            match permit {
                Ok(Ok(permit)) => {
                    connection(stream, peer, limits, handle, stopped, &registry).await;
                    drop(permit);
                }
                _ => refuse(stream, &refusing),
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    tracing::info!("shutting down: finishing in-flight requests");
    // Every connection holds a permit until it is done.
    let all = open.acquire_many(limits.max_connections as u32);
    tokio::select! {
        _ = all => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping"),
    }
}

/// Answers a connection over the cap with a 503, if few enough are being
/// answered already; else closes it at once.
fn refuse(mut stream: TcpStream, refusing: &Arc<Semaphore>) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let answer = async {
            stream.write_all(OVER_CAPACITY).await?;
            stream.shutdown().await?;
            // Read what the client sent until it closes: closing with unread
            // bytes would reset the connection, and the reset may destroy
            // the answer before the client reads it.
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSE_TIMEOUT, answer).await;
        drop(permit);
    });
}

/// One connection, closed once idle for the keep-alive timeout or when the
/// node shuts down (after its request in progress, if any).
async fn connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    limits: ConnectionLimits,
    handle: H,
    mut stopped: watch::Receiver<bool>,
    registry: &Registry,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<HyperOutgoingBody>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let _registered = registry.add(&activity);
    let socket = stream.as_raw_fd();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req| {
            let busy = Busy::start(&activity);
            let answer = handle(req, peer);
            async move {
                let response = answer.await;
                busy.answered();
                // The request counts as in progress until its response body
                // has been written (or dropped).
                Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
            }
        })
    };
    // No timer is given to hyper: the header-read timeout is kept by the
    // loop below, as part of the idle check, rather than by a timer hyper
    // would arm and disarm around every request head.
    let conn = http1::Builder::new()
        .keep_alive(true)
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_CONNECTION_BUFFER)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = *stopped.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    // A connection without a request in progress is waiting for a request
    // head: for the next request, or for the rest of one begun. Either wait
    // ends at the shorter of the two timeouts.
    let idle_limit = limits.idle_limit();
    loop {
        let idle_check =
            tokio::time::sleep(activity.idle_deadline(idle_limit, limits.write_timeout));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = stopped.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = activity.evict.notified() => {
                // Chosen to make room; a request may have begun since.
                if activity.idle_for().is_some() {
                    tracing::debug!(%peer, "connection closed to make room for a new one");
                    return;
                }
                if activity.answered_for().is_some_and(|waiting| waiting >= SLOW_READER) {
                    tracing::debug!(%peer, "connection reset to make room for a new one: its response waits for the client");
                    reset(socket);
                    return;
                }
                activity.evicting.store(false, Ordering::Release);
            }
            // Also while the node stops: an idle connection has nothing
            // left to finish.
            _ = idle_check => {
                if activity.answered_for() >= Some(limits.write_timeout) {
                    tracing::debug!(%peer, "connection reset: its response was not taken within {:?}", limits.write_timeout);
                    reset(socket);
                    return;
                }
                if activity.idle_for() >= Some(idle_limit) {
                    // Between requests, or partway through a head: nothing
                    // is owed to the client, and the connection is dropped
                    // (hyper would wait on a head begun for ever).
                    tracing::debug!(%peer, "connection closed: no request for {idle_limit:?}");
                    return;
                }
            }
        }
    }
}

/// Makes the socket `fd` be reset when it is closed, rather than closed
/// gracefully: a graceful close would leave what is queued in the kernel
/// for a client that does not read it to be sent on for minutes. `fd` must
/// be open (the caller's connection still owns it).
fn reset(fd: std::os::fd::RawFd) {
    // SAFETY: the caller's connection owns the socket and outlives this.
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = rustix::net::sockopt::set_socket_linger(socket, Some(Duration::ZERO));
}

/// The open connections, for choosing one to close at the cap.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

/// A connection's place in the registry, given up when dropped.
struct Registered<'r> {
    registry: &'r Registry,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, activity: &Arc<Activity>) -> Registered<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity.clone());
        Registered { registry: self, id }
    }

    /// Asks the connection without a request in progress that has waited
    /// longest to close, preferring one that never sent a whole request
    /// head; failing that, the one whose response has waited longest (over
    /// [`SLOW_READER`]) for its client to take it. False when every other
    /// connection has a request in progress (or is already closing to make
    /// room for another).
    fn evict_one(&self) -> bool {
        let open = self.lock();
        // Times are in milliseconds: connections of the same millisecond go
        // oldest first (their ids count up).
        let victim = open
            .iter()
            .filter(|(_, a)| !a.evicting.load(Ordering::Acquire))
            .filter_map(|(id, a)| {
                let class = match (a.idle_for(), a.answered_for()) {
                    (Some(idle), _) if a.served.load(Ordering::Acquire) == 0 => (0, idle),
                    (Some(idle), _) => (1, idle),
                    (None, Some(waiting)) if waiting >= SLOW_READER => (2, waiting),
                    _ => return None,
                };
                Some(((class.0, std::cmp::Reverse(class.1), *id), a))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, a)| a);
        match victim {
            Some(activity) => {
                activity.evicting.store(true, Ordering::Release);
                activity.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Requests in progress on one connection, and since when it has had none.
struct Activity {
    started: Instant,
    busy: AtomicUsize,
    /// Requests the connection has begun, in all.
    served: AtomicU64,
    /// Milliseconds after `started` at which the last request ended.
    idle_since: AtomicU64,
    /// Milliseconds after `started` at which the response in progress was
    /// ready to be written, plus one; 0 while none is.
    answered_at: AtomicU64,
    /// Tells the connection to close, to make room at the cap.
    evict: Notify,
    /// Set once the connection is told to close, so that it is chosen once.
    evicting: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            busy: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            answered_at: AtomicU64::new(0),
            evict: Notify::new(),
            evicting: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// How long the connection has been without a request, if it is.
    fn idle_for(&self) -> Option<Duration> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.idle_since.load(Ordering::Acquire);
        Some(Duration::from_millis(self.now().saturating_sub(since)))
    }

    /// How long the response in progress has been waiting for the client
    /// to take it, if one is.
    fn answered_for(&self) -> Option<Duration> {
        match self.answered_at.load(Ordering::Acquire) {
            0 => None,
            at => Some(Duration::from_millis(self.now().saturating_sub(at - 1))),
        }
    }

    /// When to look again whether the connection has been idle for
    /// `timeout`, or its response waiting for `write_timeout`.
    fn idle_deadline(&self, timeout: Duration, write_timeout: Duration) -> Duration {
        let left = match (self.idle_for(), self.answered_for()) {
            (Some(idle), _) => timeout.saturating_sub(idle),
            (None, Some(waiting)) => write_timeout.saturating_sub(waiting),
            // The operator is still at work: look again in a while.
            (None, None) => timeout,
        };
        left.max(Duration::from_millis(10))
    }
}

/// One request in progress, until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        activity.served.fetch_add(1, Ordering::AcqRel);
        Busy(activity.clone())
    }
}

impl Busy {
    /// The response is ready: from now on the client is the one keeping
    /// the request in progress.
    fn answered(&self) {
        self.0
            .answered_at
            .store(self.0.now() + 1, Ordering::Release);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.answered_at.store(0, Ordering::Release);
        self.0.idle_since.store(self.0.now(), Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress.
struct Tracked {
    body: HyperOutgoingBody,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = <HyperOutgoingBody as Body>::Data;
    type Error = <HyperOutgoingBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_capacity_answer_declares_its_length() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap();
        assert_eq!(declared.parse::<usize>().unwrap(), body.len());
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn a_connection_is_idle_only_without_a_request_in_progress() {
        let activity = Arc::new(Activity::new());
        assert!(activity.idle_for().is_some());
        let busy = Busy::start(&activity);
        assert_eq!(activity.idle_for(), None);
        drop(busy);
        assert!(activity.idle_for() < Some(Duration::from_secs(5)));
    }
}
