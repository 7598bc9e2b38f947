//! Serving HTTP by running the operator: a fresh instance of the
//! pre-instantiated operator component for every request, or, when asked
//! (`--max-instance-reuse-count`), an instance that answered before.
//!
//! May depend on: `wasmatic-api`, `wasmatic-chain`, `wasmatic-guests`,
//! `wasmatic-metrics`, `wasmatic-net`, `wasmatic-node`, `wasmatic-sandbox`,
//! `wasmatic-state`, `wasmatic-workflows`. Only the binary depends on it.
//!
//! The path of one request: [`listen`] accepts the connection and reads the
//! head; [`server`] names the request (its id and log span), checks the
//! origin and reads the whole body ([`body`]) before it takes an operator
//! slot, so that a slow client holds none; [`Operator::handle`] runs the
//! operator on the buffered request.

mod body;
pub mod contract;
mod dirs;
mod edge;
mod listen;
mod request_id;
mod server;
mod stdio;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Result};
use hyper::{Request, Response};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::level_filters::LevelFilter;
use tracing::Instrument;
use wasmtime::component::Component;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::contract::OperatorState;
use wasmatic_net::Policy;
use wasmatic_node::Node;
use wasmatic_sandbox::engine::{self, WasmContext, WasmKind};
use wasmatic_sandbox::flags::RuntimeFlags;
use wasmatic_sandbox::limits::{GuestLimiter, MemoryBudget};
use wasmatic_sandbox::outbound::OutboundHooks;
use wasmatic_sandbox::output::StreamOf;
use wasmatic_sandbox::pool::{Pools, Reuse, WarmPool};

pub use body::BodyBudget;
pub use dirs::DirMapping;
pub use edge::Origins;
pub use listen::ConnectionLimits;
pub use server::{serve, EdgeSetup};

/// What every operator instance is given.
pub struct OperatorSetup {
    pub dirs: Vec<DirMapping>,
    pub env: Vec<(String, String)>,
    pub request_timeout: Duration,
    /// Linear memory one operator instance may use.
    pub memory: usize,
    /// Linear memory all operator instances together may use.
    pub memory_total: Arc<MemoryBudget>,
    pub full_wasi: bool,
    pub reuse: Reuse,
    /// Operator instances alive at once, running or idle.
    pub max_in_flight: usize,
    /// The node's outbound policy, which the operator's own requests obey
    /// as handlers' do.
    pub outbound: Arc<Policy>,
    /// The per-store limits of wasmtime's flags, as guests get them.
    pub flags: RuntimeFlags,
    /// The node's idle-instance pools, the operator's among them.
    pub pools: Pools,
    /// The token `GET /metrics` needs (`--metrics-token`), if any.
    pub metrics_token: Option<Arc<str>>,
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
        let warm = Arc::new(setup.pools.uncounted(setup.reuse));
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
        // What the operator prints becomes log lines of the request it
        // answers, rather than text interleaved with the node's log.
        wasi.stdout(StreamOf(stdio::LoggedOutput::new("stdout")))
            .stderr(StreamOf(stdio::LoggedOutput::new("stderr")))
            .envs(&self.setup.env);
        for dir in &self.setup.dirs {
            wasi.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite)
                .with_wasm_context(|| format!("cannot open {}", dir.host.display()))?;
        }
        let mut store = Store::new(
            self.pre.engine(),
            OperatorState {
                wasi: wasi.build(),
                http: self.setup.flags.http_ctx(),
                hooks: OutboundHooks {
                    policy: self.setup.outbound.clone(),
                    handler_rules: None,
                    stderr: None,
                },
                table: self.setup.flags.resource_table(),
                limiter: GuestLimiter::new(self.setup.memory, self.setup.flags)
                    .sharing(self.setup.memory_total.clone()),
                node: self.node.clone(),
                route: Default::default(),
                metrics_token: self.setup.metrics_token.clone(),
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
    /// Answers the response and the metrics label of the route the operator
    /// said the request matched, if it did.
    async fn handle(
        &self,
        req: Request<body::Buffered>,
    ) -> Result<(Response<HyperOutgoingBody>, Option<&'static str>)> {
        let timeout = self.setup.request_timeout;
        let Slot {
            mut store,
            warm,
            permit,
        } = self.slot()?;
        let deadline = engine::with_deadline(&mut store, timeout, self.setup.flags.fuel);
        let route = store.data().route.clone();
        // A reused instance's store still holds the last request's route.
        route.take();
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let pool = self.warm.clone();

        // The guest runs in the request's task while the answer's head is
        // awaited. Most answers are complete by the time the call returns;
        // a guest still running then (streaming a body that did not fit the
        // pipe) goes on in a task of its own, and so does one whose request
        // is dropped (a client that left): an operator's work is never cut
        // short. The slot is held until the guest is done.
        let in_use = wasmatic_metrics::InUse::start(wasmatic_metrics::Pool::Operator);
        let call = async move {
            let _in_use = in_use;
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
                    // Only an instance that answered cleanly, and did not
                    // grow large doing so, is used again.
                    if store.data().limiter.may_idle() {
                        pool.give_back((store, proxy, permit), uses);
                    }
                    Ok(())
                }
                Ok(Err(e)) => Err(anyhow::Error::from(e)),
                Err(timeout) => Err(anyhow::Error::new(timeout)),
            }
        };
        // The operator's host calls log under the request's span, which
        // exists only when the node logs at `info` or finer: otherwise the
        // call is not wrapped in a span that would log nothing. Boxed: the
        // call's future is large, and it may be moved into a task.
        let call: GuestCall = if LevelFilter::current() >= LevelFilter::INFO {
            Box::pin(call.in_current_span())
        } else {
            Box::pin(call)
        };
        let mut call = Inline(Some(call));
        let (head, ended) =
            std::future::poll_fn(|cx| call.poll_until_head(&mut receiver, cx)).await;
        let head = match (head, ended) {
            // The guest answered and is still writing: it goes on alone.
            (Some(head), None) => {
                call.detach();
                head
            }
            (Some(head), Some(ended)) => {
                if let Err(e) = ended {
                    tracing::warn!("the operator failed after answering: {e:#}");
                }
                head
            }
            // It ended, or dropped its outparam; either way no head comes.
            (None, ended) => {
                let ended = match ended {
                    Some(ended) => ended,
                    None => call.finish().await,
                };
                let reason = match ended {
                    Ok(()) => anyhow::anyhow!("it returned without setting a response"),
                    Err(e) => e,
                };
                return Err(reason.context("the operator did not answer"));
            }
        };
        match head {
            // The route is named, if at all, before the head is set.
            Ok(response) => Ok((response, route.take())),
            Err(code) => bail!("the operator answered with an error: {code:?}"),
        }
    }
}

/// One call of the operator: its instance, its slot and what it answers.
type GuestCall = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// What the operator answers a request with: its response head (and body),
/// or the error code it set.
type Head =
    Result<Response<HyperOutgoingBody>, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>;

/// An operator call run inside the request's own task, saving a task and a
/// wake-up per request; handed to a task of its own when it outlives the
/// request's wait (see [`Operator::handle`]).
struct Inline(Option<GuestCall>);

impl Inline {
    /// Runs the call until the response head is set or the call ends:
    /// the head (`None` when it will never come) and the call's end (`None`
    /// while it runs on).
    fn poll_until_head(
        &mut self,
        receiver: &mut tokio::sync::oneshot::Receiver<Head>,
        cx: &mut Context<'_>,
    ) -> Poll<(Option<Head>, Option<Result<()>>)> {
        if let Some(call) = self.0.as_mut() {
            if let Poll::Ready(ended) = call.as_mut().poll(cx) {
                self.0 = None;
                // The call is over: the head is there now, or never.
                return Poll::Ready((receiver.try_recv().ok(), Some(ended)));
            }
        }
        match Pin::new(receiver).poll(cx) {
            Poll::Ready(head) => Poll::Ready((head.ok(), None)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Waits for the call's end, polling it in place: should the request
    /// be dropped meanwhile, the call still runs on (see `Drop` below).
    async fn finish(&mut self) -> Result<()> {
        std::future::poll_fn(|cx| {
            let Some(call) = self.0.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let ended = std::task::ready!(call.as_mut().poll(cx));
            self.0 = None;
            Poll::Ready(ended)
        })
        .await
    }

    /// Lets the call run on in a task of its own.
    fn detach(&mut self) {
        let Some(call) = self.0.take() else {
            return;
        };
        let run = async move {
            if let Err(e) = call.await {
                tracing::warn!(
                    "the operator's call, run on past its request's wait, failed: {e:#}"
                );
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(run);
            }
            // Only while the node stops: the call ends with it.
            Err(_) => tracing::debug!("an operator call was cut short by the node stopping"),
        }
    }
}

impl Drop for Inline {
    /// A request dropped while its operator call runs (its client left)
    /// does not cut the call short.
    fn drop(&mut self) {
        self.detach();
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
