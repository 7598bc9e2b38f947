//! The node's metrics, read at `GET /metrics` in the OpenMetrics text
//! format that Prometheus scrapes.
//!
//! May depend on: `wasmatic-api` (the token compare). Everything that
//! counts depends on this crate, so it depends on none of them: what it
//! needs to know (the run log's queue) is handed to [`render`].
//!
//! One registry for the whole process, reached through the functions below
//! from wherever the thing counted happens (the edge, the call path, the
//! compiler, the chain client, the fleet). It lives here, not in the
//! operator: the operator is restarted per request and may be anyone's
//! component, while the counts must outlive requests and be the host's own
//! account of what it did. The operator only hands the text out
//! (`wasmatic:operator/metrics`).
//!
//! Every label is bounded: routes are the operator's patterns (capped, and
//! checked for shape: see [`request`]), names are registered components,
//! methods come from the RPC allow list, the rest are fixed words. A raw
//! path or a client's text never becomes a label.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The label of requests no route pattern names: unknown routes, and the
/// requests the host answered itself (refused, busy, failed).
const OTHER: &str = "other";

mod routes;
#[cfg(test)]
use routes::is_pattern;
pub use routes::route_label;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    name: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    pool: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    chain: u64,
    method: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Builds the histograms of a family, all with the same buckets.
#[derive(Clone)]
struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

/// 1 ms to about 65 s: a request or a guest call, fast or at its limit.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, Buckets>,
    /// The route labels seen, kept for the life of the process (at most
    /// [`routes::MAX_ROUTES`] of at most 80 bytes): a request's labels then borrow
    /// them instead of allocating.
    routes: Mutex<HashSet<&'static str>>,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<NameLabels, Histogram, Buckets>,
    instances: Family<InstanceLabels, Gauge>,
    /// The gauges of `instances`, made once: every request moves two of
    /// them, which then costs no label lookup.
    instance_gauges: InstanceGauges,
    compile_cache: Family<CacheLabels, Counter>,
    run_log_queue: Gauge,
    operator_memory: Gauge,
    lateness: Histogram,
    rpc_calls: Family<RpcLabels, Counter>,
    claims: Family<OutcomeLabels, Counter>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("wasmatic"),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(Buckets(seconds)),
            routes: Mutex::new(HashSet::new()),
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(Buckets(seconds)),
            instances: Family::default(),
            instance_gauges: InstanceGauges::default(),
            compile_cache: Family::default(),
            run_log_queue: Gauge::default(),
            operator_memory: Gauge::default(),
            lateness: seconds(),
            rpc_calls: Family::default(),
            claims: Family::default(),
        };
        m.instance_gauges = InstanceGauges::of(&m.instances);
        let registry = &mut m.registry;
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, the operator's route pattern and status",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's head to its response head, by route pattern",
            Unit::Seconds,
            m.request_seconds.clone(),
        );
        registry.register(
            "handler_calls",
            "Calls of registered components, by name and outcome (ok, failed, timed_out, busy)",
            m.calls.clone(),
        );
        registry.register_with_unit(
            "handler_call_duration",
            "Time guests of a registered component ran, by name",
            Unit::Seconds,
            m.call_seconds.clone(),
        );
        registry.register(
            "instances",
            "Guest instances running a call (in_use) or kept for reuse (idle), by pool",
            m.instances.clone(),
        );
        registry.register(
            "compile_cache",
            "Compiled-code lookups, by cache (memory, disk) and result (hit, miss)",
            m.compile_cache.clone(),
        );
        registry.register_with_unit(
            "operator_memory",
            "Linear memory the operator's instances hold together (bounded by --operator-memory-total)",
            Unit::Bytes,
            m.operator_memory.clone(),
        );
        registry.register(
            "run_log_queue",
            "Run records waiting for the run-history writer",
            m.run_log_queue.clone(),
        );
        registry.register_with_unit(
            "schedule_lateness",
            "How long after its tick a scheduled run started",
            Unit::Seconds,
            m.lateness.clone(),
        );
        registry.register(
            "chain_rpc_calls",
            "Chain RPC calls forwarded for guests, by chain id, method and outcome",
            m.rpc_calls.clone(),
        );
        registry.register(
            "fleet_claims",
            "Scheduled runs claimed in a fleet, by outcome (won, taken, skipped)",
            m.claims.clone(),
        );
        m
    }
}

/// The method as a label: the usual ones by name, anything else `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or(OTHER)
}

/// One request answered with `status` after `elapsed`; `route` is the
/// label of the pattern the operator matched ([`route_label`]), if it said
/// (none for unknown routes and the host's own answers).
pub fn request(method: &str, route: Option<&'static str>, status: u16, elapsed: Duration) {
    let labels = RequestLabels {
        method: method_label(method),
        route: route.unwrap_or(OTHER),
        status,
    };
    RECENT_SERIES.with_borrow_mut(|recent| {
        let at = match recent.iter().position(|(seen, _)| *seen == labels) {
            Some(at) => at,
            None => {
                let m = metrics();
                let series = RequestSeries {
                    seconds: m
                        .request_seconds
                        .get_or_create(&RouteLabels {
                            route: labels.route,
                        })
                        .clone(),
                    count: m.requests.get_or_create(&labels).clone(),
                };
                if recent.len() == RECENT_SERIES_KEPT {
                    recent.remove(0);
                }
                recent.push((labels, series));
                recent.len() - 1
            }
        };
        let series = &recent[at].1;
        series.seconds.observe(elapsed.as_secs_f64());
        series.count.inc();
    });
}

/// The series one request moves: its route's duration histogram and its
/// labels' counter (handles sharing the registry's own).
struct RequestSeries {
    seconds: Histogram,
    count: Counter,
}

/// Label sets a thread keeps the series of: a node answers the same few
/// (a route, a method, a status) again and again, and each then costs a
/// comparison of three words instead of two hashed lookups in the registry.
const RECENT_SERIES_KEPT: usize = 16;

thread_local! {
    static RECENT_SERIES: std::cell::RefCell<Vec<(RequestLabels, RequestSeries)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How a call of a registered component ended.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Ok,
    Failed,
    TimedOut,
    /// Refused for lack of a call slot; the guest never ran.
    Busy,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Busy,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Busy => "busy",
        }
    }
}

/// One call of component `name`; `ran` is how long its guest ran, if it did.
pub fn handler_call(name: &str, outcome: Outcome, ran: Option<Duration>) {
    let m = metrics();
    m.calls
        .get_or_create(&CallLabels {
            name: name.to_string(),
            outcome: outcome.label(),
        })
        .inc();
    if let Some(ran) = ran {
        m.call_seconds
            .get_or_create(&NameLabels {
                name: name.to_string(),
            })
            .observe(ran.as_secs_f64());
    }
}

/// Drops the series of a component that is no longer registered, so that
/// names registered and removed over time do not pile up.
pub fn forget_handler(name: &str) {
    let m = metrics();
    for outcome in Outcome::ALL {
        m.calls.remove(&CallLabels {
            name: name.to_string(),
            outcome: outcome.label(),
        });
    }
    m.call_seconds.remove(&NameLabels {
        name: name.to_string(),
    });
}

/// Which instances: the operator's, or those of registered components.
#[derive(Clone, Copy, Debug)]
pub enum Pool {
    Operator,
    Component,
}

impl Pool {
    fn label(self) -> &'static str {
        match self {
            Pool::Operator => "operator",
            Pool::Component => "component",
        }
    }
}

/// The `instances` gauges of each pool: idle, then in use.
#[derive(Default)]
struct InstanceGauges {
    operator: (Gauge, Gauge),
    component: (Gauge, Gauge),
}

impl InstanceGauges {
    fn of(family: &Family<InstanceLabels, Gauge>) -> Self {
        let gauge = |pool: Pool, state| {
            family
                .get_or_create(&InstanceLabels {
                    pool: pool.label(),
                    state,
                })
                .clone()
        };
        let both = |pool| (gauge(pool, "idle"), gauge(pool, "in_use"));
        InstanceGauges {
            operator: both(Pool::Operator),
            component: both(Pool::Component),
        }
    }

    fn of_pool(&self, pool: Pool) -> &(Gauge, Gauge) {
        match pool {
            Pool::Operator => &self.operator,
            Pool::Component => &self.component,
        }
    }
}

/// Idle instances of `pool` went up (or down) by `delta`.
pub fn idle_instances(pool: Pool, delta: i64) {
    metrics().instance_gauges.of_pool(pool).0.inc_by(delta);
}

/// An instance of `pool` counted as in use until dropped.
pub struct InUse(Gauge);

impl InUse {
    pub fn start(pool: Pool) -> InUse {
        let gauge = metrics().instance_gauges.of_pool(pool).1.clone();
        gauge.inc();
        InUse(gauge)
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Compiled code of `cache` (`memory` or `disk`) was found, or not.
pub fn compile_cache(cache: &'static str, hit: bool) {
    metrics()
        .compile_cache
        .get_or_create(&CacheLabels {
            cache,
            result: if hit { "hit" } else { "miss" },
        })
        .inc();
}

/// A run started at `started_at` for the tick `scheduled_for` (both in
/// milliseconds since the epoch), if a schedule fired it.
pub fn schedule_lateness(tick: Option<(u64, u64)>) {
    if let Some((scheduled_for, started_at)) = tick {
        let late = Duration::from_millis(started_at.saturating_sub(scheduled_for));
        metrics().lateness.observe(late.as_secs_f64());
    }
}

/// A chain RPC call a guest made, after the allow list passed `method`.
pub fn rpc_call(chain: u64, method: &str, ok: bool) {
    metrics()
        .rpc_calls
        .get_or_create(&RpcLabels {
            chain,
            method: method.to_string(),
            outcome: if ok { "ok" } else { "error" },
        })
        .inc();
}

/// A claim of a scheduled run in a fleet: `won` (this node runs it),
/// `taken` (another node does) or `skipped` (recorded as skipped).
pub fn claim(outcome: &str) {
    let outcome = ["won", "taken", "skipped"]
        .into_iter()
        .find(|o| *o == outcome)
        .unwrap_or(OTHER);
    metrics()
        .claims
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

/// Bytes of linear memory the operator's instances hold together, against
/// `--operator-memory-total`.
pub fn operator_memory(bytes: usize) {
    metrics()
        .operator_memory
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// The text of every metric, the gauges that are read rather than
/// counted brought up to date first.
/// `queued_runs` is the run log's queue now, when the node has one.
pub fn render(queued_runs: Option<usize>) -> String {
    let m = metrics();
    if let Some(queued) = queued_runs {
        m.run_log_queue
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        // Writing to a String fails only if a metric's own encoding does.
        tracing::error!("cannot encode the metrics: {e}");
    }
    text
}

/// Why the metrics were not given.
#[derive(Debug, PartialEq)]
pub enum Denied {
    TokenNeeded,
    TokenWrong,
}

/// Checks the request's `Authorization` header against the node's metrics
/// token (`--metrics-token`); without one the metrics are open, as
/// `/health` is.
pub fn authorize(token: Option<&str>, authorization: Option<&str>) -> Result<(), Denied> {
    let Some(token) = token else {
        return Ok(());
    };
    let Some(given) = authorization.filter(|a| !a.is_empty()) else {
        return Err(Denied::TokenNeeded);
    };
    let expected = format!("Bearer {token}");
    if wasmatic_api::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Denied::TokenWrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labels_only_when_they_look_like_patterns() {
        assert!(is_pattern("/handlers/{name}/runs"));
        assert!(is_pattern("/openapi.json"));
        assert!(!is_pattern("handlers"));
        assert!(!is_pattern("/run/a b"));
        assert!(!is_pattern(&format!("/{}", "x".repeat(100))));
        assert_eq!(route_label("/run/{name}"), "/run/{name}");
        // Asked again, by this thread (its recent labels) or another (the
        // registry), the label is the one kept, not a new one.
        let kept = route_label("/run/{name}");
        assert!(std::ptr::eq(route_label("/run/{name}"), kept));
        let elsewhere = std::thread::spawn(|| route_label("/run/{name}"))
            .join()
            .unwrap();
        assert!(std::ptr::eq(elsewhere, kept));
        assert_eq!(route_label("/run/\"x\""), OTHER);
        assert_eq!(method_label("BREW"), OTHER);
    }

    #[test]
    fn the_text_names_what_was_counted() {
        handler_call(
            "unit-test-echo",
            Outcome::Ok,
            Some(Duration::from_millis(3)),
        );
        claim("won");
        claim("anything");
        let text = render(None);
        assert!(
            text.contains(r#"wasmatic_handler_calls_total{name="unit-test-echo",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"wasmatic_fleet_claims_total{outcome="other"} 1"#));
        forget_handler("unit-test-echo");
        assert!(!render(None).contains("unit-test-echo"));
    }

    #[test]
    fn requests_count_in_their_series_past_the_threads_recent_ones() {
        // More label sets than a thread keeps, each twice, then the first
        // again: every request lands in its own series.
        let route = route_label("/unit-test/{n}");
        let statuses = 200..200 + RECENT_SERIES_KEPT as u16 + 4;
        for _ in 0..2 {
            for status in statuses.clone() {
                request("PATCH", Some(route), status, Duration::from_millis(2));
            }
        }
        request("PATCH", Some(route), 200, Duration::from_millis(2));
        let text = render(None);
        for status in statuses {
            let count = if status == 200 { 3 } else { 2 };
            let line = format!(
                r#"wasmatic_http_requests_total{{method="PATCH",route="/unit-test/{{n}}",status="{status}"}} {count}"#
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(
            text.contains(
                r#"wasmatic_http_request_duration_seconds_count{route="/unit-test/{n}"} 41"#
            ),
            "{text}"
        );
    }
}
