//! Serving HTTP by running the operator: a fresh instance of the
//! pre-instantiated operator component for every request, or, when asked
//! (`--max-instance-reuse-count`), an instance that answered before.
//!
//! The path of one request: [`listen`] accepts the connection and reads the
//! head; [`Server::respond`] checks the origin and reads the whole body
//! ([`body`]) before it takes an operator slot, so that a slow client holds
//! none; [`Operator::handle`] runs the operator on the buffered request.

mod body;
mod edge;
mod listen;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Component;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::cli::DirMapping;
use crate::contract::{self, OperatorState};
use crate::engine::{self, WasmContext, WasmKind};
use crate::limits::{show_size, GuestLimiter};
use crate::node::Node;
use crate::outbound::{OutboundHooks, Policy};
use crate::pool::{Reuse, WarmPool};

pub use body::BodyBudget;
pub use edge::Origins;
pub use listen::ConnectionLimits;

/// What every operator instance is given.
pub struct OperatorSetup {
    pub dirs: Vec<DirMapping>,
    pub env: Vec<(String, String)>,
    pub request_timeout: Duration,
    /// Linear memory one operator instance may use.
    pub memory: usize,
    pub full_wasi: bool,
    pub reuse: Reuse,
    /// Operator instances alive at once, running or idle.
    pub max_in_flight: usize,
    /// The node's outbound policy, which the operator's own requests obey
    /// as handlers' do.
    pub outbound: Arc<Policy>,
}

/// An operator instance that answered cleanly and may answer again, with the
/// in-flight slot it keeps while idle.
type Warm = (Store<OperatorState>, Proxy, OwnedSemaphorePermit);

/// What a request runs in: a store, the instance in it if it is a warm one
/// (with the calls it has served), and the in-flight slot it holds.
struct Slot {
    store: Store<OperatorState>,
    warm: Option<(Proxy, usize)>,
    permit: OwnedSemaphorePermit,
}

/// Every operator slot is taken: the node is answering as many requests as
/// it may.
#[derive(Debug, thiserror::Error)]
#[error("every operator slot is in use")]
struct Busy;

/// The operator, compiled and pre-instantiated once, and what each of its
/// instances is given.
pub struct Operator {
    pre: ProxyPre<OperatorState>,
    setup: OperatorSetup,
    node: Option<Arc<Node>>,
    warm: Arc<WarmPool<Warm>>,
    /// One permit per operator instance alive (running or idle), so that
    /// instances never outnumber the slots of the operator's engine.
    slots: Arc<Semaphore>,
}

impl Operator {
    /// Compiles and links the operator on `engine` (the operator's own, not
    /// the guests'); fails with one clear line when the bytes are not a
    /// `wasi:http/proxy` component this host can run. Compiled code is
    /// cached in `cache_dir` when given.
    pub fn new(
        engine: &Engine,
        bytes: &[u8],
        setup: OperatorSetup,
        node: Option<Arc<Node>>,
        cache_dir: Option<&Path>,
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
        let component = compile(engine, bytes, cache_dir)?;
        let linker = contract::linker(engine, setup.full_wasi)?;
        let pre = linker
            .instantiate_pre(&component)
            .wasm_context("the operator imports what this host does not provide")?;
        let pre = ProxyPre::new(pre).wasm_context(
            "the operator is not a wasi:http/proxy component (it must export wasi:http/incoming-handler@0.2.x)",
        )?;
        // Idle instances hold their slot, so the in-flight cap bounds them.
        let warm = Arc::new(WarmPool::uncounted(setup.reuse));
        let slots = Arc::new(Semaphore::new(setup.max_in_flight));
        Ok(Operator {
            pre,
            setup,
            node,
            warm,
            slots,
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
                http: crate::limits::http_ctx(),
                hooks: OutboundHooks {
                    policy: self.setup.outbound.clone(),
                    handler_rules: None,
                    stderr: None,
                },
                table: crate::limits::resource_table(),
                limiter: GuestLimiter::new(self.setup.memory),
                node: self.node.clone(),
            },
        );
        store.limiter(|s| &mut s.limiter);
        Ok(store)
    }

    /// An idle instance with its slot, or a free slot for a fresh one.
    fn slot(&self) -> Result<Slot> {
        let warm = |((store, proxy, permit), uses)| Slot {
            store,
            warm: Some((proxy, uses)),
            permit,
        };
        if let Some(idle) = self.warm.take() {
            return Ok(warm(idle));
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot {
                store: self.new_store()?,
                warm: None,
                permit,
            }),
            // All slots taken, but one may have just come back idle.
            Err(_) => self.warm.take().map(warm).ok_or_else(|| Busy.into()),
        }
    }

    /// Answers one request, its body already read, with a fresh instance of
    /// the operator, or a warm one when reuse is on.
    async fn handle(&self, req: Request<body::Buffered>) -> Result<Response<HyperOutgoingBody>> {
        let timeout = self.setup.request_timeout;
        let Slot {
            mut store,
            warm,
            permit,
        } = self.slot()?;
        let deadline = engine::with_deadline(&mut store, timeout);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let pool = self.warm.clone();

        // The guest runs in its own task: it may go on streaming the body
        // after it has handed over the response head. The slot is held until
        // the task ends.
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
            match deadline.run(call).await {
                Ok(Ok((proxy, uses))) => {
                    // Only an instance that answered cleanly is used again.
                    pool.give_back((store, proxy, permit), uses);
                    Ok(())
                }
                Ok(Err(e)) => Err(anyhow::Error::from(e)),
                Err(timeout) => Err(anyhow::Error::new(timeout)),
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

/// Compiles the operator, through a cache of compiled code when `cache_dir`
/// is given: restarts then skip Cranelift. The file name carries the digest
/// of the bytes and the engine's compatibility hash, so a cached file is only
/// ever loaded by an engine that can run it.
fn compile(engine: &Engine, bytes: &[u8], cache_dir: Option<&Path>) -> Result<Component> {
    let compile =
        || Component::new(engine, bytes).wasm_context("the operator is not a valid component");
    let Some(dir) = cache_dir else {
        return compile();
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let path = dir.join(format!(
        "operator-{}-{:016x}.cwasm",
        hex::encode(Sha256::digest(bytes)),
        hasher.finish()
    ));
    if path.exists() {
        // SAFETY: the cache directory lies in the node's state directory,
        // which no guest can reach (checked at start), and only this function
        // writes it: what is there was produced by `Component::serialize` of
        // an engine with the same compatibility hash.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached operator: {e}")
            }
        }
    }
    let component = compile()?;
    if let Err(e) = write_cache(&component, dir, &path) {
        tracing::warn!(path = %path.display(), "cannot cache the compiled operator: {e:#}");
    }
    Ok(component)
}

fn write_cache(component: &Component, dir: &Path, path: &PathBuf) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    let tmp = path.with_extension("cwasm.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// How the host treats a request before the operator sees it.
pub struct EdgeSetup {
    pub connections: ConnectionLimits,
    /// Largest request body, in bytes.
    pub max_request_body: u64,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Bytes of request bodies buffered at once, node-wide.
    pub body_budget: Arc<BodyBudget>,
    pub origins: Origins,
}

/// The operator with the host's edge in front of it.
struct Server {
    operator: Operator,
    edge: EdgeSetup,
    next_request: AtomicU64,
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
        next_request: AtomicU64::new(1),
    });
    let handle = move |req, peer| {
        let server = server.clone();
        async move { server.respond(req, peer).await }
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
    async fn respond(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<HyperOutgoingBody> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let method = req.method().clone();
        let uri = req.uri().clone();
        let start = Instant::now();
        let mut response = match self.admit(req).await {
            Err(refused) => {
                let (response, reason) = match refused {
                    Refused::Plain(status, reason) => {
                        (edge::error_response(status, &reason), reason)
                    }
                    Refused::Busy(reason) => (edge::busy_response(&reason), reason),
                    Refused::Closing(status, reason) => {
                        let mut response = edge::error_response(status, &reason);
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                        (response, reason)
                    }
                };
                tracing::info!(id, %method, %uri, "refused: {reason}");
                response
            }
            Ok(req) => match self.operator.handle(req).await {
                Ok(response) => response,
                Err(e) => self.failure(id, &method, &uri, e),
            },
        };
        response
            .headers_mut()
            .insert(edge::REQUEST_ID, HeaderValue::from(id));
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

    /// The answer for an operator that failed: the client learns what kind
    /// of failure and the request id; the node log has the whole story.
    fn failure(
        &self,
        id: u64,
        method: &hyper::Method,
        uri: &hyper::Uri,
        e: anyhow::Error,
    ) -> Response<HyperOutgoingBody> {
        if e.is::<Busy>() {
            tracing::info!(id, %method, %uri, "refused: every operator slot is in use (--max-in-flight)");
            return edge::busy_response(
                "the node is answering as many requests as it can; try again shortly",
            );
        }
        tracing::error!(id, %method, %uri, "{e:#}");
        match e
            .chain()
            .find_map(|cause| cause.downcast_ref::<engine::Timeout>())
        {
            Some(timeout) => edge::error_response(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("the operator {timeout} (request {id})"),
            ),
            None => edge::error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the operator failed (request {id}); see the node log"),
            ),
        }
    }
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
