//! The node's HTTP API: its routes ([`table`], documented route by route in
//! `openapi.json`, served at `GET /openapi.json`), who may use them, and
//! which function answers each.
//!
//! A path no route has is 404; a path whose routes are for other methods,
//! 405 with `Allow`. When the node runner sets `WASMATIC_TOKEN`, the routes
//! that change the node or run code sent with the request (the table's
//! `token`) need `Authorization: Bearer TOKEN`; running what is registered
//! (`/run/NAME`, `/call/NAME/FUNC`) and reading do not. `GET /metrics` is
//! guarded by the host instead, with a token of its own.

mod input;
pub mod table;

use std::borrow::Cow;
use wasmatic_api::{constant_time_eq, TOKEN_ENV};

pub use input::{
    body, handler_name, host_error, json_body, page_request, remove_by_id, runs_by_id, runs_page,
    with_next,
};

use crate::http::{percent_decode, Request, Response};
use crate::wasi::http::types::Method;
use crate::wasmatic::operator::metrics::{self as host_metrics, Denial};
use crate::{handlers, jobs, modules, schedules, triggers, ui, workflows};
use table::{Found, Route};

/// The API document: every route of [`table::ROUTES`], with its bodies,
/// answers and errors.
const OPENAPI: &str = include_str!("../../openapi.json");

pub fn route(req: &Request) -> Response {
    let method = method_name(&req.method);
    match table::find(method, req.path()) {
        Found::Route(route, params) => {
            // The pattern, never the path, labels the host's request
            // metrics, so that their labels stay few.
            host_metrics::matched_route(route.path);
            if route.token { authorize(req) } else { Ok(()) }
                .and_then(|()| dispatch(req, route, &params))
                .unwrap_or_else(|response| response)
        }
        Found::OtherMethods(allowed) => {
            Response::error(405, &format!("{method} is not allowed on {}", req.path()))
                .with_header("allow", allowed.join(", "))
        }
        Found::Nothing => Response::error(404, &format!("no route {method} {}", req.path())),
    }
}

/// Answers a request of `route`, `params` being the path's segments at the
/// route's `{…}` places.
fn dispatch(req: &Request, route: &Route, params: &[&str]) -> Result<Response, Response> {
    match (route.method, route.path, params) {
        ("GET", "/health", []) | ("GET", "/wasm/health", []) => Ok(Response {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body: Cow::Borrowed(br#"{"ok":true}"#),
        }),
        ("GET", "/openapi.json", []) => Ok(Response {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body: Cow::Borrowed(OPENAPI.as_bytes()),
        }),
        ("GET", "/metrics", []) => metrics(req),
        // Browsers are sent to the console; API clients keep the 405 they
        // always had.
        ("GET", "/", []) if ui::wants_html(req) => Ok(ui::to_console()),
        ("GET", "/", []) => Err(Response::error(
            405,
            "GET / is for browsers (it sends them to /ui/); the API is described at /openapi.json",
        )
        .with_header("allow", "GET, POST".into())),
        ("POST", "/", []) => modules::run(req),
        // JSON names a core module; `?name=` with wasm bytes, a component.
        ("POST", "/register", []) if req.query_param("name").is_none() => modules::register(req),
        ("POST", "/register", []) => handlers::register(req),
        ("POST", "/inspect", []) => handlers::inspect(req),
        ("POST", "/run/{name}", [name]) => handlers::run(req, name),
        ("POST", "/call/{name}/{function}", [name, function]) => call(req, name, function),
        ("GET", "/handlers", []) => Ok(handlers::list()),
        ("GET", "/handlers/{name}", [name]) => handlers::get(name),
        ("DELETE", "/handlers/{name}", [name]) => handlers::remove(name),
        ("GET", "/handlers/{name}/runs", [name]) => handlers::runs(req, name),
        ("DELETE", "/modules/{name}", [name]) => modules::remove(name),
        ("POST", "/sched", []) => schedules::add(req),
        ("GET", "/sched", []) => Ok(schedules::list()),
        ("DELETE", "/sched/{id}", [id]) => schedules::remove(id),
        ("GET", "/sched/{id}/runs", [id]) => schedules::runs(req, id),
        ("POST", "/triggers", []) => triggers::add(req),
        ("GET", "/triggers", []) => Ok(triggers::list()),
        ("DELETE", "/triggers/{id}", [id]) => triggers::remove(id),
        ("GET", "/triggers/{id}/runs", [id]) => triggers::runs(req, id),
        ("POST", "/workflows", []) => workflows::put(req),
        ("GET", "/workflows", []) => workflows::list(),
        ("GET", "/workflows/{name}", [name]) => workflows::get(name),
        ("DELETE", "/workflows/{name}", [name]) => workflows::remove(name),
        ("POST", "/workflows/{name}/run", [name]) => workflows::run(req, name),
        ("GET", "/workflows/{name}/runs", [name]) => workflows::runs(req, name),
        ("GET", "/secrets", []) => workflows::secrets(),
        ("PUT", "/secrets/{name}", [name]) => workflows::put_secret(req, name),
        ("DELETE", "/secrets/{name}", [name]) => workflows::remove_secret(name),
        ("POST", "/wasm/run", []) => jobs::run(req),
        ("GET", "/ui/", []) => ui::asset(&[]),
        ("GET", "/ui/{file}", [file]) => ui::asset(&[*file]),
        // The host's tests request every route of the table: one without
        // an arm here fails them.
        (method, path, _) => Err(Response::error(
            500,
            &format!("the route {method} {path} has no handler in this operator"),
        )),
    }
}

/// `GET /metrics`: the host's metrics, as the host renders them. The host
/// checks the metrics token against the `Authorization` header passed on.
fn metrics(req: &Request) -> Result<Response, Response> {
    let authorization = req
        .authorization()
        .map(|a| String::from_utf8_lossy(&a).into_owned());
    match host_metrics::render(authorization.as_deref()) {
        Ok(text) => Ok(Response {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            headers: Vec::new(),
            body: text.into_bytes().into(),
        }),
        Err(denial) => {
            let message = match denial {
                Denial::TokenNeeded => {
                    "/metrics needs `Authorization: Bearer <token>` with the node's metrics token"
                }
                Denial::TokenWrong => "the metrics token is wrong",
            };
            Err(Response::error(401, message).with_header("www-authenticate", "Bearer".into()))
        }
    }
}

/// Checks `Authorization: Bearer TOKEN` when the node has a token.
fn authorize(req: &Request) -> Result<(), Response> {
    let Ok(token) = std::env::var(TOKEN_ENV) else {
        return Ok(());
    };
    if token.is_empty() {
        return Ok(());
    }
    let expected = format!("Bearer {token}");
    let given = req.authorization().unwrap_or_default();
    if constant_time_eq(&given, expected.as_bytes()) {
        Ok(())
    } else {
        let message = if given.is_empty() {
            "this route needs `Authorization: Bearer <token>`"
        } else {
            "the bearer token is wrong"
        };
        Err(Response::error(401, message).with_header("www-authenticate", "Bearer".into()))
    }
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

/// `POST /call/NAME/FUNC` with a JSON array of arguments: a registered
/// component's export answers `{"result": …}`; a core module's function,
/// as in wasm-exec-api, `{"results": […]}`. A name is never both.
///
/// The name is looked up before the body is read (a call to nothing costs
/// nothing), and the arguments go to the host as they came: the host bounds
/// them before it parses them.
fn call(req: &Request, name: &str, function: &str) -> Result<Response, Response> {
    let name = handler_name(name)?;
    let function = percent_decode(function)?;
    let is_component = crate::wasmatic::operator::handlers::get(&name).is_some();
    if !is_component && !crate::wasmatic::operator::modules::exists(&name) {
        return Err(Response::error(
            404,
            &format!("no component or core module `{name}`"),
        ));
    }
    let args = std::str::from_utf8(body(req)?).map_err(|_| {
        Response::error(
            400,
            "expected a JSON array of arguments: the body is not UTF-8",
        )
    })?;
    if is_component {
        handlers::call(&name, &function, args)
    } else {
        modules::call(&name, &function, args)
    }
}
