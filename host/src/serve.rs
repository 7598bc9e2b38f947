//! Serving HTTP by running the operator: a fresh instance of the
//! pre-instantiated operator component for every request, or, when asked
//! (`--max-instance-reuse-count`), an instance that answered before.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpCtx, WasiHttpView};

use crate::cli::DirMapping;
use crate::contract::{self, OperatorState};
use crate::engine::{self, WasmContext, WasmKind};
use crate::limits::{show_size, GuestLimiter};
use crate::node::Node;
use crate::pool::{Reuse, WarmPool};

/// How long in-flight requests may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What every operator instance is given.
pub struct OperatorSetup {
    pub dirs: Vec<DirMapping>,
    pub env: Vec<(String, String)>,
    pub request_timeout: Duration,
    /// Linear memory one operator instance may use.
    pub memory: usize,
    /// Largest request body passed to the operator.
    pub max_request_body: u64,
    pub full_wasi: bool,
    pub reuse: Reuse,
}

/// An operator instance that answered cleanly and may answer again.
type Warm = (Store<OperatorState>, Proxy);

/// The operator, compiled and pre-instantiated once, and what each of its
/// instances is given.
pub struct Operator {
    pre: ProxyPre<OperatorState>,
    setup: OperatorSetup,
    node: Option<Arc<Node>>,
    next_request: AtomicU64,
    warm: Arc<WarmPool<Warm>>,
}

impl Operator {
    /// Compiles and links the operator; fails with one clear line when the
    /// bytes are not a `wasi:http/proxy` component this host can run.
    pub fn new(
        engine: &Engine,
        bytes: &[u8],
        setup: OperatorSetup,
        node: Option<Arc<Node>>,
    ) -> Result<Self> {
        // Fail now, not at the first request, if a directory cannot be opened.
        for dir in &setup.dirs {
            WasiCtxBuilder::new()
                .preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite)
                .with_wasm_context(|| format!("cannot open --dir {}", dir.host.display()))?;
        }
        match engine::wasm_kind(bytes) {
            WasmKind::CoreModule => {
                bail!("the operator is a core WebAssembly module; it must be a wasi:http/proxy component")
            }
            WasmKind::Component => {}
            // WebAssembly text is accepted too, as by wasmtime.
            _ if std::str::from_utf8(bytes).is_ok_and(|t| t.trim_start().starts_with('(')) => {}
            _ => {
                bail!("the operator is not a valid component: neither WebAssembly binary nor text")
            }
        }
        // A node caches the operator's compiled code with its handlers'.
        let component = match &node {
            Some(node) => node
                .registry()
                .compile_component(bytes)
                .map_err(|e| anyhow::anyhow!("the operator is {e}"))?,
            None => Component::new(engine, bytes)
                .wasm_context("the operator is not a valid component")?,
        };
        let linker = contract::linker(engine, setup.full_wasi)?;
        let pre = linker
            .instantiate_pre(&component)
            .wasm_context("the operator imports what this host does not provide")?;
        let pre = ProxyPre::new(pre).wasm_context(
            "the operator is not a wasi:http/proxy component (it must export wasi:http/incoming-handler@0.2.x)",
        )?;
        let warm = Arc::new(WarmPool::new(setup.reuse));
        Ok(Operator {
            pre,
            setup,
            node,
            next_request: AtomicU64::new(0),
            warm,
        })
    }

    /// A store with everything the operator is granted; its deadline is set
    /// per request.
    fn new_store(&self) -> Result<Store<OperatorState>> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdout().inherit_stderr().envs(&self.setup.env);
        for dir in &self.setup.dirs {
            wasi.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite)
                .with_wasm_context(|| format!("cannot open {}", dir.host.display()))?;
        }
        let mut store = Store::new(
            self.pre.engine(),
            OperatorState {
                wasi: wasi.build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                limiter: GuestLimiter::new(self.setup.memory),
                node: self.node.clone(),
            },
        );
        store.limiter(|s| &mut s.limiter);
        Ok(store)
    }

    /// Answers one request with a fresh instance of the operator, or a warm
    /// one when reuse is on.
    async fn handle(&self, req: Request<Incoming>) -> Result<Response<HyperOutgoingBody>> {
        let max = self.setup.max_request_body;
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Ok(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {}", show_size(max)),
            ));
        }
        // A body without a declared length is cut off at the limit: the
        // operator's read then fails with `HTTP-request-body-size`.
        let req = req.map(|body| {
            Limited::new(body, max as usize).map_err(move |e| match e.downcast::<hyper::Error>() {
                Ok(e) => HttpError::Hyper(*e),
                Err(_) => HttpError::HttpRequestBodySize(Some(max)),
            })
        });
        let timeout = self.setup.request_timeout;
        let (mut store, warm) = match self.warm.take() {
            Some(((store, proxy), uses)) => (store, Some((proxy, uses))),
            None => (self.new_store()?, None),
        };
        engine::set_deadline(&mut store, timeout);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let pool = self.warm.clone();

        // The guest runs in its own task: it may go on streaming the body
        // after it has handed over the response head.
        let task = tokio::spawn(async move {
            let call = async {
                let (proxy, uses) = match warm {
                    Some(warm) => warm,
                    None => (pre.instantiate_async(&mut store).await?, 0),
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await?;
                Ok::<_, wasmtime::Error>((proxy, uses + 1))
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok((proxy, uses))) => {
                    // Only an instance that answered cleanly is used again.
                    pool.give_back((store, proxy), uses);
                    Ok(())
                }
                Ok(Err(e)) => Err(anyhow::Error::from(e)),
                Err(_) => Err(anyhow::Error::new(engine::Timeout(timeout))),
            }
        });

        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => bail!("the operator answered with an error: {code:?}"),
            Err(_) => {
                let reason = match task.await {
                    Ok(Ok(())) => anyhow::anyhow!("it returned without setting a response"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::Error::from(e),
                };
                Err(reason.context("the operator did not answer"))
            }
        }
    }
}

/// A JSON error response from the host itself (when the operator fails).
fn error_response(status: StatusCode, message: &str) -> Response<HyperOutgoingBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves `operator` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve(
    operator: Arc<Operator>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let graceful = GracefulShutdown::new();
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
        let operator = operator.clone();
        let service = hyper::service::service_fn(move |req| {
            let operator = operator.clone();
            async move { Ok::<_, Infallible>(respond(&operator, req, peer).await) }
        });
        let connection = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping"),
    }
    Ok(())
}

async fn respond(
    operator: &Operator,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<HyperOutgoingBody> {
    let id = operator.next_request.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let uri = req.uri().clone();
    let start = Instant::now();
    let response = match operator.handle(req).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(id, %method, %uri, "{e:#}");
            let timed_out = e.chain().any(|cause| cause.is::<engine::Timeout>());
            let status = if timed_out {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            error_response(status, &format!("{e:#}"))
        }
    };
    tracing::info!(
        id,
        %peer,
        %method,
        %uri,
        status = response.status().as_u16(),
        ms = %format_args!("{:.2}", start.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    response
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
