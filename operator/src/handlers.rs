//! Registered components: register, run, call, list, remove, runs.

use crate::http::{Request, Response};
use crate::routes::{body, handler_name, host_error, page_request, runs_page};
use crate::wasmatic::operator::handlers::{self as host, Link, LoadOptions};
use crate::wasmatic::operator::runs;

/// What a linked provider runs with, said with every link the API shows: a
/// provider is composed into its caller and runs in the caller's call, so
/// on a node shared by several people, linking to someone's provider hands
/// it your configuration (and its secrets) and your outbound rules.
const RUNS_WITH: &str =
    "the caller's configuration, outbound rules and limits, not the provider's own";

impl serde::Serialize for Link {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut link = serializer.serialize_struct("Link", 3)?;
        link.serialize_field("interface", &self.interface)?;
        link.serialize_field("provider", &self.provider)?;
        link.serialize_field("runs_with", RUNS_WITH)?;
        link.end()
    }
}

/// `POST /register?name=NAME`: has the host stage the body (validate,
/// compile, keep the bytes by digest) and commits that digest under the
/// name. A failed upload leaves the previous version exactly as it was.
pub fn register(req: &Request) -> Result<Response, Response> {
    let raw = req
        .query_param("name")
        .ok_or_else(|| Response::error(400, "missing query parameter `name`"))??;
    let name = handler_name(&raw)?;
    let options = load_options(req)?;
    let bytes = body(req)?;
    if bytes.is_empty() {
        return Err(Response::error(
            400,
            "the body is empty: send the component's wasm bytes",
        ));
    }
    // One host call: the bytes go to the host in it (one copy, no file
    // written, read back and removed), and the host checks the options and
    // links once.
    let info = host::register(&name, bytes, &options).map_err(host_error)?;
    Ok(Response::json(201, &info))
}

/// The registration options in the query: `allow=a.example,*.b.example`,
/// `env=KEY=VALUE` (repeated), `reuse=N`, `link=IFACE=PROVIDER` (repeated).
fn load_options(req: &Request) -> Result<LoadOptions, Response> {
    let allow_outbound = match req.query_param("allow") {
        None => None,
        Some(list) => Some(
            list?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>(),
        ),
    };
    let config = req
        .query_params("env")?
        .into_iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(Response::error(
                400,
                &format!("env={pair:?} is not KEY=VALUE"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The host checks the range.
    let reuse = match req.query_param("reuse") {
        None => None,
        Some(raw) => {
            let raw = raw?;
            Some(raw.parse::<u32>().map_err(|_| {
                Response::error(
                    400,
                    &format!("reuse must be a number of calls, not `{raw}`"),
                )
            })?)
        }
    };
    // An interface name holds no `=`; the host checks the rest.
    let links = req
        .query_params("link")?
        .into_iter()
        .map(|pair| match pair.split_once('=') {
            Some((interface, provider)) if !interface.is_empty() && !provider.is_empty() => {
                Ok(Link {
                    interface: interface.to_string(),
                    provider: provider.to_string(),
                })
            }
            _ => Err(Response::error(
                400,
                &format!("link={pair:?} is not INTERFACE=PROVIDER (e.g. link=acme:cipher/audit-log=auditor)"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LoadOptions {
        allow_outbound,
        config,
        reuse,
        links,
    })
}

/// `POST /inspect` (body: wasm bytes): what the file is and what it
/// exports, with nothing registered or written.
pub fn inspect(req: &Request) -> Result<Response, Response> {
    let bytes = body(req)?;
    if bytes.is_empty() {
        return Err(Response::error(
            400,
            "the body is empty: send the wasm bytes to inspect",
        ));
    }
    let found = host::inspect(bytes).map_err(host_error)?;
    Ok(Response::json(200, &found))
}

/// `POST /run/NAME`: the body is the input, the answer the output.
pub fn run(req: &Request, raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let input = std::str::from_utf8(body(req)?)
        .map_err(|_| Response::error(400, "the input must be UTF-8 text"))?;
    let output = host::invoke(&name, input).map_err(host_error)?;
    Ok(Response::text(200, output))
}

/// `POST /call/NAME/FUNC` of a component: `{"result": …}`.
pub fn call(name: &str, function: &str, args: &str) -> Result<Response, Response> {
    let json = host::call(name, function, args).map_err(host_error)?;
    let result: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| Response::error(500, &format!("the host answered bad JSON: {e}")))?;
    Ok(Response::json(
        200,
        &serde_json::json!({ "result": result }),
    ))
}

pub fn list() -> Response {
    Response::json(200, &host::list())
}

pub fn get(raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let info =
        host::get(&name).ok_or_else(|| Response::error(404, &format!("no handler `{name}`")))?;
    Ok(Response::json(200, &info))
}

/// `DELETE /handlers/NAME`: the host forgets it, its schedules and runs.
pub fn remove(raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    host::remove(&name).map_err(host_error)?;
    Ok(Response::no_content())
}

/// `GET /handlers/NAME/runs?limit=N&before=ID`.
pub fn runs(req: &Request, raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let request = page_request(req)?;
    let page = runs::of_handler(&name, request).map_err(host_error)?;
    Ok(runs_page(req, page, request.limit))
}
