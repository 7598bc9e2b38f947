//! Outbound HTTP from guests: every `wasi:http` request a handler or the
//! operator sends goes through the node's one client, dialled through the
//! outbound [`Policy`] (see `wasmatic_net::policy` for what it allows).

use std::future::Future;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmatic_net::{Client, ConnectError, Dial, Policy, Rule, SendError, CONNECT_TIMEOUT};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::output::CapturedOutput;

/// The `wasi:http` hooks of one handler call, or of the operator: every
/// outgoing request passes the policy, and a refusal is written to the
/// node log and to the call's stderr, when it has one of its own.
pub struct OutboundHooks {
    pub policy: Arc<Policy>,
    /// A handler's own allow list, if it was registered with one.
    pub handler_rules: Option<Arc<Vec<Rule>>>,
    /// The call's captured stderr; `None` for the operator, whose stderr is
    /// the node's.
    pub stderr: Option<CapturedOutput>,
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for OutboundHooks {
    /// wasmtime's own list, checked in place: its default wraps the check
    /// in a new `Arc` for every header of every request and response.
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        let dial = Dial::Checked {
            policy: self.policy.clone(),
            rules: self.handler_rules.clone(),
        };
        let stderr = self.stderr.clone();
        Box::new(async move {
            let result = send(dial, request, options).await;
            if let Err(SendError::Connect(ConnectError::Refused(reason))) = &result {
                tracing::warn!("outbound request refused: {reason}");
                if let Some(stderr) = stderr {
                    stderr.write_line(&format!("wasmatic: outbound request refused: {reason}"));
                }
            }
            let response = result.map_err(wasi_error)?;
            let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
            // The client's pool drives the connection; nothing is left to
            // wait for once the response has come.
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// Sends one guest request within the guest's timeouts (connect, first
/// byte), each connection new and checked.
async fn send(
    dial: Dial,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<http::Response<hyper::body::Incoming>, SendError> {
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(CONNECT_TIMEOUT);
    let first_byte_timeout = options.and_then(|o| o.first_byte_timeout);
    let client = Client::new(dial, connect_timeout);
    match first_byte_timeout {
        // The connect timeout is the connector's; this one starts earlier
        // and so covers the connection too, as it does in wasmtime's client.
        Some(t) => match tokio::time::timeout(t, client.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Connect(ConnectError::Timeout(t))),
        },
        None => client.send(request).await,
    }
}

/// The `wasi:http` error code a guest sees for `error`.
fn wasi_error(error: SendError) -> HttpError {
    match error {
        SendError::Connect(ConnectError::Refused(_)) => HttpError::HttpRequestDenied,
        SendError::Connect(ConnectError::Scheme | ConnectError::NoHost) => {
            HttpError::HttpRequestUriInvalid
        }
        SendError::Connect(ConnectError::Timeout(_)) => HttpError::ConnectionTimeout,
        SendError::Connect(ConnectError::Io(kind)) => HttpError::Connect(kind.into()),
        SendError::Connect(ConnectError::TlsName) => HttpError::TlsProtocolError,
        SendError::Connect(ConnectError::Tls(message)) => {
            HttpError::Tls(std::io::Error::other(message))
        }
        SendError::Exchange(_) => exchange_error(&error),
    }
}

/// What went wrong after the connection was made, as closely as the
/// client's error lets us tell: the guest's own body error when it was
/// that, else what hyper saw.
fn exchange_error(error: &SendError) -> HttpError {
    if let Some(HttpError::HttpRequestBodySize(size)) = error.cause::<HttpError>() {
        return HttpError::HttpRequestBodySize(*size);
    }
    match error.cause::<hyper::Error>() {
        Some(hyper) if hyper.is_timeout() => HttpError::ConnectionReadTimeout,
        Some(hyper) if hyper.is_incomplete_message() || hyper.is_closed() => {
            HttpError::ConnectionTerminated
        }
        _ => HttpError::HttpProtocolError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<Rule> {
        list.iter().map(|r| Rule::parse(r).unwrap()).collect()
    }

    /// The operator's hooks (no stderr of its own) refuse what the node's
    /// policy refuses, and only that.
    #[tokio::test]
    async fn the_operators_requests_obey_the_node_policy() {
        let hooks = |rules: &[&str]| OutboundHooks {
            policy: Arc::new(Policy::new(super::tests::rules(rules))),
            handler_rules: None,
            stderr: None,
        };
        let request = |url: &str| {
            let body = http_body_util::Empty::<bytes::Bytes>::new()
                .map_err(|e| match e {})
                .boxed_unsync();
            http::Request::get(url).body(body).unwrap()
        };
        let send = |mut hooks: OutboundHooks, url: &str| {
            let fut = Box::new(async { Ok::<(), HttpError>(()) });
            Box::into_pin(hooks.send_request(request(url), None, fut))
        };
        // Loopback without a rule naming it: refused before any connection.
        let refused = send(hooks(&[]), "http://127.0.0.1:9/").await;
        assert!(matches!(refused, Err(HttpError::HttpRequestDenied)));
        let refused = send(hooks(&["api.example.com"]), "http://127.0.0.1:9/").await;
        assert!(matches!(refused, Err(HttpError::HttpRequestDenied)));
        // Allowed: the request goes out (and fails to connect to a port
        // nothing listens on, which is not a refusal).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let rule = format!("127.0.0.1:{port}");
        let sent = send(hooks(&[&rule]), &format!("http://127.0.0.1:{port}/")).await;
        assert!(
            !matches!(sent, Err(HttpError::HttpRequestDenied)),
            "an allowed request is sent"
        );
    }
}
