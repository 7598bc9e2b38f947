//! One request from head to answer: its id and log span, the host's own
//! checks before the operator sees it, the operator's answer (or the
//! host's, when the operator failed), and the request's metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tracing::Instrument;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::request_id::{self, RequestIds};
use super::{body, edge, listen, BodyBudget, Busy, ConnectionLimits, Operator, Origins};
use wasmatic_api::show_size;
use wasmatic_sandbox::engine;

/// How the host treats a request before the operator sees it.
pub struct EdgeSetup {
    pub connections: ConnectionLimits,
    /// Largest request body, in bytes.
    pub max_request_body: u64,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: std::time::Duration,
    /// Bytes of request bodies buffered at once, node-wide.
    pub body_budget: Arc<BodyBudget>,
    pub origins: Origins,
}

/// The operator with the host's edge in front of it.
struct Server {
    operator: Operator,
    edge: EdgeSetup,
    ids: RequestIds,
}

/// Serves `operator` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve(
    operator: Operator,
    edge: EdgeSetup,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let connections = edge.connections;
    let server = Arc::new(Server {
        operator,
        edge,
        ids: RequestIds::new(),
    });
    // Boxed: the answer's future is large (it holds the operator call's),
    // and hyper moves the future it is given; a box moves as a pointer.
    let handle = move |req, peer| {
        let server = server.clone();
        Box::pin(async move { server.respond(req, peer).await })
    };
    listen::serve(listener, connections, handle, shutdown).await;
    Ok(())
}

/// Why the host answered a request itself.
enum Refused {
    /// A client's mistake (a foreign origin, a body too large): said as is.
    Plain(StatusCode, String),
    /// The node is at capacity: 503 with `Retry-After`.
    Busy(String),
    /// The connection is dropped after this answer.
    Closing(StatusCode, String),
}

impl Server {
    /// Answers one request under a span carrying its id, so that every
    /// line logged while it is handled (by the host, by the node for the
    /// guests it runs, by the operator on stdout or stderr) names it.
    async fn respond(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<HyperOutgoingBody> {
        let (id, header) = self.ids.assign(req.headers_mut());
        let span = tracing::info_span!("request", request_id = %id);
        let mut response = self.answer(req, peer, &id).instrument(span).await;
        if let Some(header) = header {
            response.headers_mut().insert(request_id::HEADER, header);
        }
        response
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        id: &str,
    ) -> Response<HyperOutgoingBody> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let start = Instant::now();
        let (response, route) = match self.admit(req).await {
            Err(refused) => {
                let (response, reason) = match refused {
                    Refused::Plain(status, reason) => {
                        (edge::error_response(status, &reason, id), reason)
                    }
                    Refused::Busy(reason) => (edge::busy_response(&reason, id), reason),
                    Refused::Closing(status, reason) => {
                        let mut response = edge::error_response(status, &reason, id);
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                        (response, reason)
                    }
                };
                tracing::info!(%method, %uri, "refused: {reason}");
                (response, None)
            }
            Ok(req) => match self.operator.handle(req).await {
                Ok(answer) => answer,
                Err(e) => (failure(id, &method, &uri, e), None),
            },
        };
        let status = response.status().as_u16();
        let elapsed = start.elapsed();
        wasmatic_metrics::request(method.as_str(), route, status, elapsed);
        tracing::info!(
            %peer,
            %method,
            %uri,
            status,
            ms = %format_args!("{:.2}", elapsed.as_secs_f64() * 1000.0),
            "request"
        );
        response
    }

    /// The request with its body read, or why the host answers it itself.
    async fn admit(&self, req: Request<Incoming>) -> Result<Request<body::Buffered>, Refused> {
        if let Some(reason) = self.edge.origins.refusal(req.method(), req.headers()) {
            return Err(Refused::Plain(StatusCode::FORBIDDEN, reason));
        }
        let max = self.edge.max_request_body;
        let too_large = || {
            Refused::Plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {}", show_size(max)),
            )
        };
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(too_large());
        }
        let limits = body::BodyLimits {
            max,
            progress: self.edge.body_timeout,
            total: self.operator.setup.request_timeout,
        };
        let (parts, incoming) = req.into_parts();
        match body::read(incoming, limits, &self.edge.body_budget).await {
            Ok(buffered) => Ok(Request::from_parts(parts, buffered)),
            Err(e @ (body::BodyError::Stalled(_) | body::BodyError::TooSlow(_))) => {
                Err(Refused::Closing(StatusCode::REQUEST_TIMEOUT, e.to_string()))
            }
            Err(body::BodyError::TooLarge) => Err(too_large()),
            Err(e @ body::BodyError::NodeBusy) => {
                Err(Refused::Busy(format!("{e}; try again shortly")))
            }
            Err(e @ body::BodyError::Client(_)) => {
                Err(Refused::Closing(StatusCode::BAD_REQUEST, e.to_string()))
            }
        }
    }
}

/// The answer for an operator that failed: the client learns what kind of
/// failure and the request id; the node log has the whole story.
fn failure(
    id: &str,
    method: &hyper::Method,
    uri: &hyper::Uri,
    e: anyhow::Error,
) -> Response<HyperOutgoingBody> {
    if e.is::<Busy>() {
        tracing::info!(%method, %uri, "refused: every operator slot is in use (--max-in-flight)");
        return edge::busy_response(
            "the node is answering as many requests as it can; try again shortly",
            id,
        );
    }
    if let Some(exhausted) = e
        .chain()
        .find_map(|cause| cause.downcast_ref::<wasmatic_sandbox::limits::BudgetExhausted>())
    {
        tracing::info!(%method, %uri, "refused: {exhausted} (--operator-memory-total)");
        return edge::busy_response(&exhausted.to_string(), id);
    }
    if let Some(limit) = e
        .chain()
        .find_map(|cause| cause.downcast_ref::<wasmatic_sandbox::limits::MemoryLimit>())
    {
        tracing::info!(%method, %uri, "refused: {limit} (--operator-memory)");
        return edge::error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "answering this request takes more memory than one operator instance may use (--operator-memory, {}); send less (request {id})",
                wasmatic_api::show_size(limit.limit as u64)
            ),
            id,
        );
    }
    tracing::error!(%method, %uri, "{e:#}");
    match e
        .chain()
        .find_map(|cause| cause.downcast_ref::<engine::Timeout>())
    {
        Some(timeout) => edge::error_response(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("the operator {timeout} (request {id})"),
            id,
        ),
        None => edge::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the operator failed (request {id}); see the node log"),
            id,
        ),
    }
}
