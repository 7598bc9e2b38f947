//! The connector under the one HTTP client: how a URI becomes a connection.
//!
//! Two ways to dial, told apart by who chose the address. The node runner's
//! own endpoints (a chain's RPC URL, the node the command line talks to)
//! are dialled as given: resolved by the system, any address, loopback
//! included. Everything a guest or a workflow chose is dialled through the
//! [`Policy`]: the connector asks the policy for an address and connects to
//! that address, never resolving the name a second time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::policy::{Policy, Rule};

/// Who chose the address, and so how it is dialled.
#[derive(Clone, Debug)]
pub enum Dial {
    /// The node runner's own configuration: any address the name has.
    Trusted,
    /// A guest's or a workflow's choice: the node's policy, narrowed by a
    /// handler's own rules when it has them.
    Checked {
        policy: Arc<Policy>,
        rules: Option<Arc<Vec<Rule>>>,
    },
}

/// Why no connection was made. The messages never repeat the URL (a chain's
/// URL carries its runner's API key); a policy refusal names the host,
/// because the guest chose it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("outbound request refused: {0}")]
    Refused(String),
    #[error("only http:// and https:// URLs can be requested")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("no connection within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Io(io::ErrorKind),
    #[error("the host is not a valid TLS server name")]
    TlsName,
    #[error("the TLS handshake failed: {0}")]
    Tls(String),
}

/// The TLS client setup every outbound connection shares: the web PKI's
/// roots (as wasmtime's own `wasi:http` client uses), no client
/// certificate. Made once per process: the roots are a constant.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// Dials for [`crate::Client`]: the hyper-util client calls it for every
/// connection it needs.
#[derive(Clone, Debug)]
pub struct Connector {
    pub(crate) dial: Dial,
    /// Time to connect and finish TLS, the policy's lookup included.
    pub(crate) timeout: Duration,
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<TokioIo<Stream>, ConnectError> {
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ConnectError::Scheme),
        };
        let host = uri
            .host()
            .ok_or(ConnectError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = match &self.dial {
            Dial::Trusted => TcpStream::connect((host.as_str(), port)).await,
            Dial::Checked { policy, rules } => {
                let addr = policy
                    .check(rules.as_deref().map(Vec::as_slice), &host, port)
                    .await
                    .map_err(ConnectError::Refused)?;
                TcpStream::connect(addr).await
            }
        }
        .map_err(|e| ConnectError::Io(e.kind()))?;
        // Requests are small and answered at once: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let stream = if tls {
            let name =
                rustls::pki_types::ServerName::try_from(host).map_err(|_| ConnectError::TlsName)?;
            let tls = tokio_rustls::TlsConnector::from(tls_config())
                .connect(name, tcp)
                .await
                .map_err(|e| ConnectError::Tls(e.to_string()))?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        Ok(TokioIo::new(stream))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, connector.connect(uri))
                .await
                .map_err(|_| ConnectError::Timeout(timeout))?
        })
    }
}

/// A connection, in the clear or over TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
