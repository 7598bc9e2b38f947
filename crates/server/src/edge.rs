//! What the host answers by itself, before or instead of the operator:
//! JSON errors that name the request (`request_id`, as the operator's
//! errors do), and the refusal of mutating requests sent by other web
//! origins.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Method, Response, StatusCode};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Seconds a client refused for lack of capacity is told to wait.
const RETRY_AFTER_SECONDS: &str = "1";

/// A JSON error response from the host itself, naming the request.
pub fn error_response(
    status: StatusCode,
    message: &str,
    request_id: &str,
) -> Response<HyperOutgoingBody> {
    let body = serde_json::json!({ "error": message, "request_id": request_id }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A 503 for a node at capacity: the client may try again shortly.
pub fn busy_response(message: &str, request_id: &str) -> Response<HyperOutgoingBody> {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, message, request_id);
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    response
}

/// Web origins allowed to send mutating requests besides the node's own
/// (`--allow-origin`), and the names the node is reached by
/// (`--public-host`, besides IP addresses and `localhost`).
#[derive(Clone, Debug, Default)]
pub struct Origins {
    any: bool,
    allowed: Vec<String>,
    public_hosts: Vec<String>,
}

impl Origins {
    pub fn new(flags: &[String], public_hosts: &[String]) -> Self {
        Origins {
            any: flags.iter().any(|o| o.trim() == "*"),
            allowed: flags
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| o != "*")
                .collect(),
            public_hosts: public_hosts.to_vec(),
        }
    }

    /// Whether `host` (a `Host` header, lower case) names this node: an IP
    /// address (a browser only sends one to the address it connects to),
    /// `localhost` or a name under it, or a `--public-host`. Any other name
    /// may be an attacker's, rebound to the node's address after its page
    /// loaded: then `Host` and `Origin` agree and prove nothing.
    fn is_own_host(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            // `[v6]` or `[v6]:port`
            Some(rest) => {
                return rest
                    .split_once(']')
                    .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok())
            }
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let name = name.trim_end_matches('.');
        name.parse::<std::net::Ipv4Addr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.public_hosts.iter().any(|h| h == name)
    }

    /// Why a request must be refused, if it must: a browser sends `Origin`
    /// with every cross-site POST, so a web page the node's user visits could
    /// otherwise drive a node on their localhost. Requests without `Origin`
    /// (curl, servers) and safe methods pass.
    pub fn refusal(&self, method: &Method, headers: &HeaderMap) -> Option<String> {
        let mutating = matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        if !mutating || self.any {
            return None;
        }
        let origin = headers.get(ORIGIN)?;
        let Ok(origin) = origin.to_str() else {
            return Some("the Origin header is not readable".into());
        };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.allowed.contains(&origin) {
            return None;
        }
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if same_origin(&origin, &host) {
            if self.is_own_host(&host) {
                return None;
            }
            let name = host
                .rsplit_once(':')
                .map_or(host.as_str(), |(name, _)| name);
            return Some(format!(
                "this node does not know itself as {host:?}: a web page may only change it through an address or a name the node runner named; start it with --public-host {name} if that is its name"
            ));
        }
        Some(format!(
            "requests from the web origin {origin} are not allowed to change this node; start it with --allow-origin {origin} to allow them"
        ))
    }
}

/// Whether `origin` (lower case) is `http://HOST` for the `Host` header
/// `host`, the node serving plain HTTP; port 80 may be written or not.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some(origin_host) = origin.strip_prefix("http://") else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let strip = |h: &str| {
        h.strip_suffix(":80")
            .map(str::to_string)
            .unwrap_or(h.to_string())
    };
    strip(origin_host) == strip(&host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        h
    }

    #[test]
    fn foreign_origins_are_refused_for_mutating_requests_only() {
        let none = Origins::new(&[], &[]);
        let host = "127.0.0.1:8080";
        let evil = headers(Some("https://evil.example"), host);
        assert!(none.refusal(&Method::POST, &evil).is_some());
        assert!(none.refusal(&Method::DELETE, &evil).is_some());
        assert!(none.refusal(&Method::GET, &evil).is_none());
        assert!(none.refusal(&Method::POST, &headers(None, host)).is_none());
        let own = headers(Some("http://127.0.0.1:8080"), host);
        assert!(none.refusal(&Method::POST, &own).is_none());
        let other_port = headers(Some("http://127.0.0.1:8081"), host);
        assert!(none.refusal(&Method::POST, &other_port).is_some());
        let default_port = headers(Some("http://node.example:80"), "node.example");
        assert!(none.refusal(&Method::PUT, &default_port).is_some());
        let named = Origins::new(&[], &["node.example".into()]);
        assert!(named.refusal(&Method::PUT, &default_port).is_none());
        let localhost = headers(Some("http://localhost:8080"), "localhost:8080");
        assert!(none.refusal(&Method::POST, &localhost).is_none());
        let v6 = headers(Some("http://[::1]:8080"), "[::1]:8080");
        assert!(none.refusal(&Method::POST, &v6).is_none());
        // A name rebound to the node's address: Host and Origin agree.
        let rebound = headers(Some("http://evil.example:8080"), "evil.example:8080");
        let why = none.refusal(&Method::POST, &rebound).unwrap();
        assert!(why.contains("--public-host evil.example"), "{why}");
        assert!(none
            .refusal(&Method::POST, &headers(Some("null"), host))
            .is_some());

        let allowed = Origins::new(&["https://Evil.example/".into()], &[]);
        assert!(allowed.refusal(&Method::POST, &evil).is_none());
        let any = Origins::new(&["*".into()], &[]);
        assert!(any.refusal(&Method::PATCH, &evil).is_none());
    }
}
