//! Requests to the node, through the node's one HTTP client, dialled as
//! `--node` says (the user chose the address: loopback is fine).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use wasmatic_net::{Client, Dial, SendError, CONNECT_TIMEOUT};

use super::ClientError;

/// Time one exchange may take: the node answers every request within its
/// `--request-timeout`, at most 10 minutes, so a longer wait means a node
/// that has stopped answering.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(610);
/// Uploads larger than this get a progress bar (on a terminal).
const PROGRESS_THRESHOLD: usize = 1024 * 1024;
/// Bytes handed to the connection at a time: small enough for the bar to
/// move smoothly, large enough to cost nothing.
const CHUNK: usize = 64 * 1024;

/// The node, as `--node` names it, and the token to send.
pub struct Node {
    /// `http://HOST[:PORT]` or `https://…`.
    origin: String,
    /// A path the node's routes sit under (`http://gw/wasmatic` → `/wasmatic`),
    /// without a trailing `/`; usually empty.
    base: String,
    client: Client<Upload>,
    token: Option<String>,
    /// The URL as given, for messages.
    pub url: String,
}

/// The node's answer to a request that succeeded (status below 400).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ClientError::Transport(format!(
                "the node answered {} with a body that is not JSON ({e}): {}",
                self.status,
                preview(&self.body)
            ))
        })
    }
}

impl Node {
    /// Parses `--node`: `http://HOST[:PORT][/PATH]` or `https://…`.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::Usage(format!("--node `{url}`: {why}"));
        let uri: http::Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme,
            Some(other) => return Err(bad(&format!("the scheme `{other}` is not http or https"))),
            None => return Err(bad("give the scheme, e.g. http://127.0.0.1:8080")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "user names in the URL are not sent; use $WASMATIC_TOKEN",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("a query has no place in the node's URL"));
        }
        Ok(Node {
            origin: format!("{scheme}://{authority}"),
            base: uri.path().trim_end_matches('/').to_string(),
            client: Client::new(Dial::Trusted, CONNECT_TIMEOUT),
            token,
            url: url.to_string(),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.send(Method::GET, path, None, Bytes::new()).await
    }

    pub async fn delete(&self, path: &str) -> Result<Reply, ClientError> {
        self.send(Method::DELETE, path, None, Bytes::new()).await
    }

    /// `POST path` with `body` of `content_type`.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<Reply, ClientError> {
        self.send(Method::POST, path, Some(content_type), body.into())
            .await
    }

    /// Sends one request; an answer of 400 or more becomes
    /// [`ClientError::Node`] with the node's message.
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{}{path}", self.origin, self.base))
            .header(http::header::ACCEPT, "application/json");
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Upload::new(body))
            .map_err(|e| ClientError::Usage(format!("cannot build the request for {path}: {e}")))?;
        let reply = tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(request))
            .await
            .map_err(|_| {
                ClientError::Transport(format!(
                    "the node at {} did not answer within {}s",
                    self.url,
                    EXCHANGE_TIMEOUT.as_secs()
                ))
            })??;
        if reply.status.as_u16() >= 400 {
            return Err(ClientError::Node {
                status: reply.status.as_u16(),
                message: error_message(&reply.body),
            });
        }
        Ok(reply)
    }

    async fn exchange(&self, request: Request<Upload>) -> Result<Reply, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let response = self.client.send(request).await.map_err(|e| match e {
            SendError::Connect(e) => unreachable(e.to_string()),
            SendError::Exchange(e) => {
                ClientError::Transport(format!("the exchange with {} failed: {e}", self.url))
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| {
                ClientError::Transport(format!("reading the answer of {} failed: {e}", self.url))
            })?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// The message of the node's `{"error": …}`, or what the body says.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => match json.get("error").and_then(|e| e.as_str()) {
            Some(message) => message.to_string(),
            None => json.to_string(),
        },
        Err(_) => preview(body),
    }
}

/// At most 200 characters of `body`, for a message.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None if text.is_empty() => "(empty)".to_string(),
        None => text.to_string(),
    }
}

/// A request body handed over in chunks, so that a progress bar can show
/// how much of a large upload has gone out.
pub struct Upload {
    data: Bytes,
    sent: usize,
    bar: Option<ProgressBar>,
}

impl Upload {
    fn new(data: Bytes) -> Self {
        // A bar only for people: on a pipe or in a log it would be noise.
        let bar = (data.len() > PROGRESS_THRESHOLD
            && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(data.len() as u64),
                ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = ProgressStyle::with_template(
                "uploading {bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Upload { data, sent: 0, bar }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.sent >= this.data.len() {
            if let Some(bar) = this.bar.take() {
                bar.finish_and_clear();
            }
            return Poll::Ready(None);
        }
        let end = (this.sent + CHUNK).min(this.data.len());
        let chunk = this.data.slice(this.sent..end);
        this.sent = end;
        if let Some(bar) = &this.bar {
            bar.set_position(end as u64);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.data.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.data.len() - self.sent) as u64)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
