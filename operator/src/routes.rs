//! The node's HTTP API.
//!
//! | route                              | what it does                              |
//! |------------------------------------|-------------------------------------------|
//! | `GET /health`                      | `{"ok": true}`                            |
//! | `POST /register?name=NAME` (`&env=K=V`…, `&allow=…`, `&reuse=N`, `&link=IFACE=PROVIDER`…) | registers the body, a component of any world |
//! | `POST /run/NAME`                   | runs NAME with the body as input          |
//! | `GET /handlers`, `/handlers/NAME`  | registered components, with their exports |
//! | `DELETE /handlers/NAME`            | unregisters NAME and its schedules        |
//! | `GET /handlers/NAME/runs?limit=N&before=ID` | NAME's runs, newest first, paged |
//! | `POST /sched`, `GET /sched`        | adds / lists schedules                    |
//! | `DELETE /sched/ID`                 | removes a schedule                        |
//! | `GET /sched/ID/runs?limit=N&before=ID` | the schedule's runs, paged            |
//! | `POST /triggers`, `GET /triggers`  | adds / lists chain triggers               |
//! | `DELETE /triggers/ID`              | removes a chain trigger                   |
//! | `GET /triggers/ID/runs?limit=N&before=ID` | the trigger's runs, paged          |
//! | `POST /` `{"wasm_hex", "function_name", "params", "host_modules"?}` | calls a core module |
//! | `POST /register` `{"module_name", "wasm_hex", "host_modules"?}` | keeps a core module by name |
//! | `DELETE /modules/NAME`             | forgets a core module                     |
//! | `POST /call/NAME/FUNC` (JSON array) | calls an export of a component or module |
//! | `POST /workflows`, `GET /workflows` | stores (or replaces) / lists JSON workflows |
//! | `GET`, `DELETE /workflows/NAME`    | one workflow; forgets it and its history  |
//! | `POST /workflows/NAME/run` (JSON trigger) | runs it now: the run with its steps |
//! | `GET /workflows/NAME/runs?limit=N` | its runs, newest first, with their steps  |
//! | `POST /wasm/run`, `GET /wasm/health` | WASI command jobs ("WASM system" API)   |
//! | `POST /inspect` (wasm bytes)       | what a file is and exports; keeps nothing |
//! | `GET /ui/`, `/ui/FILE`             | the web console (`GET /` from a browser goes there) |
//!
//! When the node runner sets `WASMATIC_TOKEN`, every route that changes the
//! node or runs code sent with the request (POST, PUT, DELETE but `/run` and
//! `/call`) needs `Authorization: Bearer TOKEN`.

use crate::http::{percent_decode, Request, Response};
use crate::wasi::http::types::Method;
use crate::wasmatic::operator::types::Error;
use crate::{handlers, jobs, modules, schedules, triggers, ui, workflows};

pub fn route(req: Request) -> Response {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    if is_mutating(&req.method) {
        if let Err(denied) = authorize(&req) {
            return denied;
        }
    }
    let result = match (&req.method, segments.as_slice()) {
        (Method::Get, ["health"]) => Ok(Response::json(200, &serde_json::json!({ "ok": true }))),
        (Method::Get, [""]) if ui::wants_html(&req) => Ok(ui::to_console()),
        (Method::Get, ["ui", file @ ..]) => ui::asset(file),
        (Method::Post, ["inspect"]) => handlers::inspect(&req),
        (Method::Post, [""]) => modules::run(&req),
        // JSON names a core module; `?name=` with wasm bytes, a component.
        (Method::Post, ["register"]) if req.query_param("name").is_none() => {
            modules::register(&req)
        }
        (Method::Post, ["register"]) => handlers::register(&req),
        (Method::Post, ["call", name, function]) => call(&req, name, function),
        (Method::Delete, ["modules", name]) => modules::remove(name),
        (Method::Post, ["wasm", "run"]) => jobs::run(&req),
        (Method::Get, ["wasm", "health"]) => {
            Ok(Response::json(200, &serde_json::json!({ "ok": true })))
        }
        (Method::Post, ["run", name]) => handlers::run(&req, name),
        (Method::Get, ["handlers"]) => Ok(handlers::list()),
        (Method::Get, ["handlers", name]) => handlers::get(name),
        (Method::Delete, ["handlers", name]) => handlers::remove(name),
        (Method::Get, ["handlers", name, "runs"]) => handlers::runs(&req, name),
        (Method::Post, ["sched"]) => schedules::add(&req),
        (Method::Get, ["sched"]) => Ok(schedules::list()),
        (Method::Delete, ["sched", id]) => schedules::remove(id),
        (Method::Get, ["sched", id, "runs"]) => schedules::runs(&req, id),
        (Method::Post, ["triggers"]) => triggers::add(&req),
        (Method::Get, ["triggers"]) => Ok(triggers::list()),
        (Method::Delete, ["triggers", id]) => triggers::remove(id),
        (Method::Get, ["triggers", id, "runs"]) => triggers::runs(&req, id),
        (Method::Post, ["workflows"]) => workflows::put(&req),
        (Method::Get, ["workflows"]) => workflows::list(),
        (Method::Get, ["workflows", name]) => workflows::get(name),
        (Method::Delete, ["workflows", name]) => workflows::remove(name),
        (Method::Post, ["workflows", name, "run"]) => workflows::run(&req, name),
        (Method::Get, ["workflows", name, "runs"]) => workflows::runs(&req, name),
        (_, path) if is_known_path(path) => Err(Response::error(
            405,
            &format!(
                "{} is not allowed on {}",
                method_name(&req.method),
                req.path
            ),
        )),
        _ => Err(Response::error(
            404,
            &format!("no route {} {}", method_name(&req.method), req.path),
        )),
    };
    result.unwrap_or_else(|response| response)
}

/// Registering, scheduling and deleting change the node; with a token set
/// they need it.
fn is_mutating(method: &Method) -> bool {
    matches!(
        method,
        Method::Post | Method::Put | Method::Delete | Method::Patch
    )
}

/// Environment variable with the node's token, handed over by the host.
const TOKEN_ENV: &str = "WASMATIC_TOKEN";

/// Checks `Authorization: Bearer TOKEN` when the node has a token. Running
/// what is registered (`/run/NAME`, `/call/NAME/FUNC`) stays open; running
/// code sent with the request (`POST /`, `/wasm/run`) does not.
fn authorize(req: &Request) -> Result<(), Response> {
    let Ok(token) = std::env::var(TOKEN_ENV) else {
        return Ok(());
    };
    if token.is_empty() || req.path.starts_with("/run/") || req.path.starts_with("/call/") {
        return Ok(());
    }
    let expected = format!("Bearer {token}");
    let given = req.authorization.as_deref().unwrap_or_default();
    if constant_time_eq(given, expected.as_bytes()) {
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

/// Compares without stopping at the first difference, so that timing does
/// not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_known_path(path: &[&str]) -> bool {
    matches!(
        path,
        ["health"]
            | [""]
            | ["call", _, _]
            | ["wasm", "run"]
            | ["wasm", "health"]
            | ["inspect"]
            | ["ui", ..]
            | ["register"]
            | ["modules", _]
            | ["run", _]
            | ["handlers"]
            | ["handlers", _]
            | ["handlers", _, "runs"]
            | ["sched"]
            | ["sched", _]
            | ["sched", _, "runs"]
            | ["triggers"]
            | ["triggers", _]
            | ["triggers", _, "runs"]
            | ["workflows"]
            | ["workflows", _]
            | ["workflows", _, "run"]
            | ["workflows", _, "runs"]
    )
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

/// Whether `name` is a valid handler name: `[a-z0-9][a-z0-9_-]{0,63}`.
/// Checked here so that nothing is written for a bad name; the host checks
/// again, as it trusts no operator.
fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// Decodes and checks a handler name taken from the path or the query.
pub fn handler_name(raw: &str) -> Result<String, Response> {
    let name = percent_decode(raw)?;
    if !is_valid_name(&name) {
        return Err(Response::error(
            400,
            &format!(
                "{:?} is not a handler name: use 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit",
                name
            ),
        ));
    }
    Ok(name)
}

pub fn host_error(e: Error) -> Response {
    match e {
        Error::NotFound(m) => Response::error(404, &m),
        Error::Invalid(m) => Response::error(400, &m),
        Error::Conflict(m) => Response::error(409, &m),
        Error::TooLarge(m) => Response::error(413, &m),
        Error::Failed(m) => Response::error(500, &m),
        Error::TimedOut(m) => Response::error(504, &m),
        Error::Busy(m) => Response::error(503, &m).with_header("retry-after", "1".into()),
        Error::Internal(m) => Response::error(500, &m),
    }
}

pub fn body(req: &Request) -> Result<&[u8], Response> {
    req.body.as_deref().map_err(Clone::clone)
}

pub fn json_body<T: serde::de::DeserializeOwned>(
    req: &Request,
    shape: &str,
) -> Result<T, Response> {
    serde_json::from_slice(body(req)?)
        .map_err(|e| Response::error(400, &format!("expected {shape}: {e}")))
}

/// `POST /call/NAME/FUNC` with a JSON array of arguments: a registered
/// component's export answers `{"result": …}`; a core module's function,
/// as in wasm-exec-api, `{"results": […]}`. A name is never both.
fn call(req: &Request, name: &str, function: &str) -> Result<Response, Response> {
    let name = handler_name(name)?;
    let function = percent_decode(function)?;
    let args: Vec<serde_json::Value> = json_body(req, "a JSON array of arguments")?;
    let args = serde_json::Value::from(args).to_string();
    if crate::wasmatic::operator::handlers::get(&name).is_some() {
        handlers::call(&name, &function, &args)
    } else {
        modules::call(&name, &function, &args)
    }
}

/// Runs listed when no `limit` is given, and the most that may be asked for.
const DEFAULT_RUNS: u32 = 20;
const MAX_RUNS: u32 = 1000;

/// `?limit=N&before=ID` of a runs listing.
pub fn page_request(req: &Request) -> Result<PageRequest, Response> {
    let limit = match req.query_param("limit") {
        None => DEFAULT_RUNS,
        Some(raw) => {
            let raw = raw?;
            match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_RUNS).contains(&n) => n,
                _ => {
                    return Err(Response::error(
                        400,
                        &format!("limit must be a number from 1 to {MAX_RUNS}, not `{raw}`"),
                    ))
                }
            }
        }
    };
    let before = match req.query_param("before") {
        None => None,
        Some(raw) => {
            let raw = raw?;
            Some(raw.parse::<u64>().map_err(|_| {
                Response::error(400, &format!("before must be a run id, not `{raw}`"))
            })?)
        }
    };
    Ok(PageRequest { limit, before })
}

/// A page of runs: the array of runs, and, when more follow, a `Link`
/// header to the next page (`rel="next"`), as GitHub's API pages.
pub fn runs_page(req: &Request, page: Page, limit: u32) -> Response {
    let response = Response::json(200, &page.runs);
    match page.next {
        Some(next) => response.with_header(
            "link",
            format!("<{}?limit={limit}&before={next}>; rel=\"next\"", req.path),
        ),
        None => response,
    }
}

use crate::wasmatic::operator::runs::{Page, PageRequest};
