//! The one HTTP client: hyper-util's client over the node's [`Connector`].
//!
//! hyper-util does the HTTP/1.1 exchange, the idle-connection pool and the
//! `Host` header and request line; the connector decides where a request
//! may go. Each caller keeps its own `Client` (a chain endpoint, a
//! guest's call, a workflow step, the command line), so a pooled
//! connection is only ever reused by the caller that opened it.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy;
use hyper_util::rt::TokioExecutor;

use crate::connect::{ConnectError, Connector, Dial};

/// Time to connect (and finish TLS) when the caller does not say.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections a trusted client keeps per host: enough for a few
/// guests calling one chain at once, few enough that a node holds no pile
/// of sockets to one provider.
const IDLE_PER_HOST: usize = 4;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection was made but the exchange failed: closed early, not
    /// HTTP, or an error of the request body.
    #[error("the exchange failed: {0}")]
    Exchange(#[source] legacy::Error),
}

impl SendError {
    /// The first error of type `T` among this one's causes: hyper's own,
    /// or the request body's.
    pub fn cause<T: std::error::Error + 'static>(&self) -> Option<&T> {
        cause(self)
    }
}

/// The first error of type `T` among `error`'s causes.
fn cause<T: std::error::Error + 'static>(error: &dyn std::error::Error) -> Option<&T> {
    std::iter::successors(error.source(), |e| e.source()).find_map(|e| e.downcast_ref::<T>())
}

/// An HTTP/1.1 client whose requests carry bodies of type `B`.
pub struct Client<B> {
    inner: legacy::Client<Connector, B>,
}

impl<B> Client<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A client that dials as `dial` says, connecting within
    /// `connect_timeout`.
    ///
    /// A trusted client keeps a few idle connections per host for the next
    /// request. A checked one keeps none: the policy is decided per request
    /// (a handler's own rules narrow it), and a kept connection would carry
    /// one request's decision over to the next.
    pub fn new(dial: Dial, connect_timeout: Duration) -> Self {
        let idle = match dial {
            Dial::Trusted => IDLE_PER_HOST,
            Dial::Checked { .. } => 0,
        };
        let connector = Connector {
            dial,
            timeout: connect_timeout,
        };
        let inner = legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(idle)
            .build(connector);
        Client { inner }
    }

    /// Sends `request`, whose URI is absolute (`http://host/path`); the
    /// request line carries only the path, as a server expects.
    pub async fn send(&self, request: Request<B>) -> Result<Response<Incoming>, SendError> {
        self.inner.request(request).await.map_err(|error| {
            // The connector's own error says more than hyper-util's
            // "client error (Connect)" around it.
            match cause::<ConnectError>(&error) {
                Some(connect) => SendError::Connect(connect.clone()),
                None => SendError::Exchange(error),
            }
        })
    }
}
