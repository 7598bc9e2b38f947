//! Request bodies, read in full by the host before the operator is given the
//! request.
//!
//! An operator instance is a scarce thing (a slot of the pooling allocator,
//! its memory, an in-flight slot); a client that sends its body slowly, or
//! not at all, must hold none of them. So the host buffers the body first,
//! bounded three ways: by `--max-request-body` per request, by a time limit
//! between two pieces of body (and one on the whole), and by a node-wide
//! budget on the bytes buffered across all connections. The body is copied
//! into one buffer as it arrives (see [`read`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use wasmtime_wasi_http::Error as HttpError;

use wasmatic_sandbox::limits::ByteBudget;

/// Bytes of request bodies the node buffers at once, across all connections.
pub type BodyBudget = ByteBudget;

/// A share of the [`BodyBudget`], given back when dropped.
#[derive(Debug)]
struct Lease {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl Lease {
    fn new(budget: &Arc<BodyBudget>) -> Self {
        Lease {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// Takes `n` more bytes of the budget, if there are that many left.
    fn grow(&mut self, n: u64) -> bool {
        let taken = self.budget.try_take(n);
        if taken {
            self.bytes += n;
        }
        taken
    }

    fn shrink(&mut self, n: u64) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        self.budget.give_back(n);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the node accepts")]
    TooLarge,
    #[error("the request body stalled: nothing arrived for {}ms", .0.as_millis())]
    Stalled(Duration),
    #[error("the request body took longer than {}ms", .0.as_millis())]
    TooSlow(Duration),
    #[error("the node is buffering as many request bodies as it can")]
    NodeBusy,
    #[error("the request body could not be read: {0}")]
    Client(#[from] hyper::Error),
}

/// How a body is read.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max: u64,
    /// Longest wait for the next piece of the body.
    pub progress: Duration,
    /// Longest time for the whole body.
    pub total: Duration,
}

/// Reads all of `body`, within `limits` and the node's `budget`, into one
/// buffer.
///
/// The pieces hyper reads are copied as they come rather than kept: a piece
/// may be one byte of a chunked body that holds on to a whole read buffer,
/// so keeping pieces would cost many times the bytes the budget counts. One
/// buffer also lets the operator read the body in one host call.
pub async fn read(
    mut body: Incoming,
    limits: BodyLimits,
    budget: &Arc<BodyBudget>,
) -> Result<Buffered, BodyError> {
    let mut chunks = VecDeque::new();
    let mut lease = Lease::new(budget);
    // Most requests (GET, DELETE) have no body: no timers for them.
    if body.is_end_stream() {
        return Ok(Buffered { chunks, lease });
    }
    // A declared length (already checked against the maximum) sizes the
    // buffer at once; it is only a hint, so it is still bounded.
    let declared = body.size_hint().exact().unwrap_or(0).min(limits.max);
    let mut whole = BytesMut::new();
    let reading = async {
        loop {
            let frame = match tokio::time::timeout(limits.progress, body.frame()).await {
                Err(_) => return Err(BodyError::Stalled(limits.progress)),
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => frame?,
            };
            // Trailers are dropped: the operator's request has none.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = data.len() as u64;
            if lease.bytes.saturating_add(len) > limits.max {
                return Err(BodyError::TooLarge);
            }
            if !lease.grow(len) {
                return Err(BodyError::NodeBusy);
            }
            if whole.capacity() == 0 {
                whole.reserve(declared.max(len) as usize);
            }
            whole.extend_from_slice(&data);
        }
    };
    match tokio::time::timeout(limits.total, reading).await {
        Ok(result) => result?,
        Err(_) => return Err(BodyError::TooSlow(limits.total)),
    }
    if !whole.is_empty() {
        chunks.push_back(whole.freeze());
    }
    Ok(Buffered { chunks, lease })
}

/// A request body held in memory: the chunks as read, handed out one by one;
/// each gives its bytes back to the budget as it leaves.
#[derive(Debug)]
pub struct Buffered {
    chunks: VecDeque<Bytes>,
    lease: Lease,
}

impl Body for Buffered {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        Poll::Ready(this.chunks.pop_front().map(|chunk| {
            this.lease.shrink(chunk.len() as u64);
            Ok(Frame::data(chunk))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.lease.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_stay_within_the_budget_and_give_back_on_drop() {
        let budget = BodyBudget::new(100);
        let mut a = Lease::new(&budget);
        assert!(a.grow(60));
        let mut b = Lease::new(&budget);
        assert!(!b.grow(41));
        assert!(b.grow(40));
        assert_eq!(budget.used(), 100);
        a.shrink(10);
        assert_eq!(budget.used(), 90);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_buffered_body_gives_its_bytes_back_as_it_is_read() {
        let budget = BodyBudget::new(100);
        let mut lease = Lease::new(&budget);
        assert!(lease.grow(5));
        let mut body = Buffered {
            chunks: [Bytes::from_static(b"ab"), Bytes::from_static(b"cde")].into(),
            lease,
        };
        assert_eq!(body.size_hint().exact(), Some(5));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("a frame");
        };
        assert_eq!(frame.into_data().unwrap(), "ab");
        assert_eq!(budget.used(), 3);
        drop(body);
        assert_eq!(budget.used(), 0);
    }
}
