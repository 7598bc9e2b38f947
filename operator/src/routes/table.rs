//! Every route of the node's API, as data.
//!
//! The router matches requests against this table (a path no route has is
//! 404, a path with routes for other methods 405) and then dispatches on the
//! route it found; the host's tests read the same file and check it against
//! `openapi.json` both ways, so that no route is served undocumented nor
//! documented unserved. It is plain Rust with no dependencies for that
//! reason.

/// One route: a method, a path pattern in OpenAPI's notation (`{name}`
/// stands for one path segment) and whether the node's token guards it.
#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// Whether `Authorization: Bearer TOKEN` is needed when the node has a
    /// token: for what changes the node or runs code sent with the request.
    pub token: bool,
}

const fn route(method: &'static str, path: &'static str, token: bool) -> Route {
    Route {
        method,
        path,
        token,
    }
}

pub const ROUTES: &[Route] = &[
    route("GET", "/health", false),
    route("GET", "/openapi.json", false),
    route("GET", "/metrics", false),
    route("GET", "/", false),
    route("POST", "/", true),
    route("POST", "/register", true),
    route("POST", "/inspect", true),
    route("POST", "/run/{name}", false),
    route("POST", "/call/{name}/{function}", false),
    route("GET", "/handlers", false),
    route("GET", "/handlers/{name}", false),
    route("DELETE", "/handlers/{name}", true),
    route("GET", "/handlers/{name}/runs", false),
    route("DELETE", "/modules/{name}", true),
    route("POST", "/sched", true),
    route("GET", "/sched", false),
    route("DELETE", "/sched/{id}", true),
    route("GET", "/sched/{id}/runs", false),
    route("POST", "/triggers", true),
    route("GET", "/triggers", false),
    route("DELETE", "/triggers/{id}", true),
    route("GET", "/triggers/{id}/runs", false),
    route("POST", "/workflows", true),
    route("GET", "/workflows", false),
    route("GET", "/workflows/{name}", false),
    route("DELETE", "/workflows/{name}", true),
    route("POST", "/workflows/{name}/run", true),
    route("GET", "/workflows/{name}/runs", false),
    // Secrets' names are the node runner's business too: all three need the
    // token.
    route("GET", "/secrets", true),
    route("PUT", "/secrets/{name}", true),
    route("DELETE", "/secrets/{name}", true),
    route("POST", "/wasm/run", true),
    route("GET", "/wasm/health", false),
    route("GET", "/ui/", false),
    route("GET", "/ui/{file}", false),
];

/// What the table says of a request.
#[derive(Debug)]
pub enum Found<'p> {
    /// The route, with the path's segments at its `{…}` places, in order
    /// (still percent-encoded).
    Route(&'static Route, Vec<&'p str>),
    /// The path is a route's, for other methods (listed).
    OtherMethods(Vec<&'static str>),
    Nothing,
}

/// The segments of a path or pattern, without leading and trailing
/// slashes: `/ui/` and `/ui` are one path.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.trim_matches('/').split('/')
}

/// The segments of `path` at the `{…}` places of `pattern`, if it matches.
fn matches<'p>(pattern: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut params = Vec::new();
    let mut wanted = segments(pattern);
    let mut given = segments(path);
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => params.push(g),
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// Finds the route of `method` and `path` (without its query).
pub fn find<'p>(method: &str, path: &'p str) -> Found<'p> {
    let mut others = Vec::new();
    for route in ROUTES {
        if let Some(params) = matches(route.path, path) {
            if route.method == method {
                return Found::Route(route, params);
            }
            others.push(route.method);
        }
    }
    if others.is_empty() {
        Found::Nothing
    } else {
        Found::OtherMethods(others)
    }
}
