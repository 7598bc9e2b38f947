//! The operator's side of the node: its `Store` data, its linker, and the
//! host interfaces of `wasmatic:operator` it imports, one file per
//! interface. Each is a thin translation between WIT and [`Node`]: the
//! operator is a client like any other, and the node checks everything it
//! is asked.

mod handlers;
mod jobs;
mod metrics;
mod modules;
mod runs;
mod schedules;
mod triggers;
mod workflows;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::Engine;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use wasmatic_api::NodeError;
use wasmatic_node::Node;
use wasmatic_sandbox::limits::GuestLimiter;
use wasmatic_sandbox::outbound::OutboundHooks;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/operator",
        interfaces: "
            import wasmatic:operator/handlers@0.4.3;
            import wasmatic:operator/schedules@0.4.3;
            import wasmatic:operator/runs@0.4.3;
            import wasmatic:operator/modules@0.4.3;
            import wasmatic:operator/jobs@0.4.3;
            import wasmatic:operator/triggers@0.4.3;
            import wasmatic:operator/workflows@0.4.3;
            import wasmatic:operator/metrics@0.4.3;
        ",
        // Naming a route is a plain store write: no future for it.
        imports: {
            default: async,
            "wasmatic:operator/metrics.matched-route":
        },
    });
}

use bindings::wasmatic::operator::types;

/// The data of an operator instance's `Store`.
pub struct OperatorState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limiter: GuestLimiter,
    /// The operator's outbound HTTP passes the node's policy, as guests' does.
    pub hooks: OutboundHooks,
    /// `None` when no directory is mapped to the guest path `registered`:
    /// the operator is then a plain proxy and host calls fail.
    pub node: Option<Arc<Node>>,
    /// The route pattern the request being answered matched, as the
    /// operator names it (`metrics.matched-route`).
    pub route: MatchedRoute,
    /// The token `GET /metrics` needs (`--metrics-token`), if any: checked
    /// by the host, never handed to the operator.
    pub metrics_token: Option<Arc<str>>,
}

/// Where the operator's `matched-route` lands, shared with the request's
/// handling (`serve`), which reads it once the response head is out: the
/// store itself is then still in the operator's task. One per store, reset
/// for each request a reused instance answers.
#[derive(Clone, Default)]
pub struct MatchedRoute(Arc<std::sync::Mutex<Option<&'static str>>>);

impl MatchedRoute {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<&'static str>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the metrics label of the matched route.
    pub fn set(&self, label: &'static str) {
        *self.lock() = Some(label);
    }

    /// The label recorded since the last take, if any; clears it.
    pub fn take(&self) -> Option<&'static str> {
        self.lock().take()
    }
}

impl WasiView for OperatorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for OperatorState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The operator's linker: WASI (all of it when `full_wasi`, else only what
/// `wasi:http/proxy` imports), `wasi:http` and every host interface; an
/// operator imports those it uses.
pub fn linker(engine: &Engine, full_wasi: bool) -> anyhow::Result<Linker<OperatorState>> {
    use bindings::wasmatic::operator::{
        handlers, jobs, metrics, modules, runs, schedules, triggers, workflows,
    };
    let mut linker = Linker::new(engine);
    if full_wasi {
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    } else {
        wasmtime_wasi_http::p2::add_to_linker_async(&mut linker)?;
    }
    type Data = HasSelf<OperatorState>;
    handlers::add_to_linker::<OperatorState, Data>(&mut linker, |s| s)?;
    schedules::add_to_linker::<OperatorState, Data>(&mut linker, |s| s)?;
    runs::add_to_linker::<OperatorState, Data>(&mut linker, |s| s)?;
    modules::add_to_linker::<OperatorState, Data>(&mut linker, |s| s)?;
    jobs::add_to_linker::<OperatorState, Data>(&mut linker, |s| s)?;
    triggers::add_to_linker::<OperatorState, Data>(&mut linker, |s| s)?;
    workflows::add_to_linker::<OperatorState, Data>(&mut linker, |s| s)?;
    metrics::add_to_linker::<OperatorState, Data>(&mut linker, |s| s)?;
    Ok(linker)
}

impl OperatorState {
    fn node(&self) -> Result<Arc<Node>, types::Error> {
        self.node.clone().ok_or_else(|| {
            types::Error::Internal(
                "this node has no directory mapped to the guest path `registered`".into(),
            )
        })
    }
}

impl types::Host for OperatorState {}

impl From<NodeError> for types::Error {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotFound(m) => types::Error::NotFound(m),
            NodeError::Invalid(m) => types::Error::Invalid(m),
            NodeError::Conflict(m) => types::Error::Conflict(m),
            NodeError::TooLarge(m) => types::Error::TooLarge(m),
            NodeError::Failed(m) => types::Error::Failed(m),
            NodeError::TimedOut(m) => types::Error::TimedOut(m),
            NodeError::Busy(m) => types::Error::Busy(m),
            // The details (paths, database errors) go to the node's log
            // under an id the client can quote.
            NodeError::Internal(m) => {
                let id = incident_id();
                tracing::error!(incident = %id, "internal error: {m}");
                types::Error::Internal(format!(
                    "the node failed internally (incident {id}); its log has the details"
                ))
            }
        }
    }
}

/// A short id linking a client's error to the node's log line.
fn incident_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}-{n}", std::process::id())
}
