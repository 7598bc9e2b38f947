//! JSON workflows: the definitions and runs go through to the host as JSON
//! text, which parses, checks and runs them.

use serde_json::Value;

use crate::http::{Request, Response};
use crate::routes::{body, handler_name, host_error, page_request, with_next};
use crate::wasmatic::operator::workflows as host;

/// The JSON text of the body, which must be JSON (an empty body: `null`).
fn json_body(req: &Request) -> Result<String, Response> {
    let bytes = body(req)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok("null".to_string());
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Response::error(400, &format!("the body is not JSON: {e}")))?;
    Ok(value.to_string())
}

/// The host's JSON answer, as a response of `status`.
fn answer(status: u16, json: &str) -> Result<Response, Response> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Response::error(500, &format!("the host answered bad JSON: {e}")))?;
    Ok(Response::json(status, &value))
}

/// `POST /workflows`: checks and stores a definition.
pub fn put(req: &Request) -> Result<Response, Response> {
    let stored = host::put(&json_body(req)?).map_err(host_error)?;
    answer(201, &stored)
}

pub fn list() -> Result<Response, Response> {
    answer(200, &host::list())
}

pub fn get(raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let stored =
        host::get(&name).ok_or_else(|| Response::error(404, &format!("no workflow `{name}`")))?;
    answer(200, &stored)
}

pub fn remove(raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    host::remove(&name).map_err(host_error)?;
    Ok(Response::no_content())
}

/// `POST /workflows/NAME/run`: the body is the run's `trigger`.
pub fn run(req: &Request, raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let run = host::run(&name, &json_body(req)?).map_err(host_error)?;
    answer(200, &run)
}

/// `GET /workflows/NAME/runs?limit=N&before=ID`, newest first, in pages
/// bounded in count and bytes, with a `Link` to the next page.
pub fn runs(req: &Request, raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let request = page_request(req)?;
    let (runs, next) = host::runs_page(&name, request).map_err(host_error)?;
    Ok(with_next(answer(200, &runs)?, req, request.limit, next))
}

/// `GET /secrets`: the names and times, never the values.
pub fn secrets() -> Result<Response, Response> {
    answer(200, &host::secrets().map_err(host_error)?)
}

/// `PUT /secrets/NAME`: the body is the value; 201 for a new name, 204 for
/// a replaced value.
pub fn put_secret(req: &Request, raw: &str) -> Result<Response, Response> {
    // The host checks the name (an identifier, as templates read it).
    let name = crate::http::percent_decode(raw)?;
    let value = std::str::from_utf8(body(req)?)
        .map_err(|_| Response::error(400, "a secret's value must be UTF-8 text"))?;
    let created = host::put_secret(&name, value).map_err(host_error)?;
    Ok(if created {
        Response::json(201, &serde_json::json!({ "name": name }))
    } else {
        Response::no_content()
    })
}

/// `DELETE /secrets/NAME`.
pub fn remove_secret(raw: &str) -> Result<Response, Response> {
    let name = crate::http::percent_decode(raw)?;
    host::remove_secret(&name).map_err(host_error)?;
    Ok(Response::no_content())
}
