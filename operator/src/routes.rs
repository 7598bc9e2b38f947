//! The node's HTTP API.
//!
//! | route                              | what it does                              |
//! |------------------------------------|-------------------------------------------|
//! | `GET /health`                      | `{"ok": true}`                            |
//! | `POST /register?name=NAME` (`&env=K=V`…, `&allow=…`, `&reuse=N`) | registers the body, a component of any world |
//! | `POST /run/NAME`                   | runs NAME with the body as input          |
//! | `GET /handlers`, `/handlers/NAME`  | registered components, with their exports |
//! | `DELETE /handlers/NAME`            | unregisters NAME and its schedules        |
//! | `GET /handlers/NAME/runs?limit=N`  | NAME's newest runs                        |
//! | `POST /sched`, `GET /sched`        | adds / lists schedules                    |
//! | `DELETE /sched/ID`                 | removes a schedule                        |
//! | `GET /sched/ID/runs?limit=N`       | the schedule's newest runs                |
//! | `POST /` `{"wasm_hex", "function_name", "params", "host_modules"?}` | calls a core module |
//! | `POST /register` `{"module_name", "wasm_hex", "host_modules"?}` | keeps a core module by name |
//! | `POST /call/NAME/FUNC` (JSON array) | calls an export of a component or module |
//! | `POST /wasm/run`, `GET /wasm/health` | WASI command jobs ("WASM system" API)   |
//!
//! When the node runner sets `WASMATIC_TOKEN`, every route that changes the
//! node or runs code sent with the request (POST, PUT, DELETE but `/run` and
//! `/call`) needs `Authorization: Bearer TOKEN`.

use serde::Deserialize;

use crate::files::Registered;
use crate::http::{percent_decode, Request, Response};
use crate::wasi::http::types::Method;
use crate::wasmatic::operator::host;
use crate::wasmatic::operator::types::{Error, JobRequest, LoadOptions};

/// Runs listed when no `limit` is given, and the most that may be asked for.
const DEFAULT_RUNS: u32 = 20;
const MAX_RUNS: u32 = 1000;

pub fn route(req: Request) -> Response {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    if is_mutating(&req.method) {
        if let Err(denied) = authorize(&req) {
            return denied;
        }
    }
    let result = match (&req.method, segments.as_slice()) {
        (Method::Get, ["health"]) => Ok(Response::json(200, &serde_json::json!({ "ok": true }))),
        (Method::Post, [""]) => run_module(&req),
        // JSON names a core module; `?name=` with wasm bytes, a handler.
        (Method::Post, ["register"]) if req.query_param("name").is_none() => register_module(&req),
        (Method::Post, ["register"]) => register(&req),
        (Method::Post, ["call", name, function]) => call(&req, name, function),
        (Method::Post, ["wasm", "run"]) => run_job(&req),
        (Method::Get, ["wasm", "health"]) => {
            Ok(Response::json(200, &serde_json::json!({ "ok": true })))
        }
        (Method::Post, ["run", name]) => run(&req, name),
        (Method::Get, ["handlers"]) => Ok(list_handlers()),
        (Method::Get, ["handlers", name]) => get_handler(name),
        (Method::Delete, ["handlers", name]) => delete_handler(name),
        (Method::Get, ["handlers", name, "runs"]) => handler_runs(&req, name),
        (Method::Post, ["sched"]) => schedule(&req),
        (Method::Get, ["sched"]) => Ok(list_jobs()),
        (Method::Delete, ["sched", id]) => unschedule(id),
        (Method::Get, ["sched", id, "runs"]) => job_runs(&req, id),
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
            | ["register"]
            | ["run", _]
            | ["handlers"]
            | ["handlers", _]
            | ["handlers", _, "runs"]
            | ["sched"]
            | ["sched", _]
            | ["sched", _, "runs"]
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
fn handler_name(raw: &str) -> Result<String, Response> {
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

fn host_error(e: Error) -> Response {
    match e {
        Error::NotFound(m) => Response::error(404, &m),
        Error::Invalid(m) => Response::error(400, &m),
        Error::TooLarge(m) => Response::error(413, &m),
        Error::Failed(m) => Response::error(500, &m),
        Error::TimedOut(m) => Response::error(504, &m),
        Error::Busy(m) => Response::error(503, &m).with_header("retry-after", "1".into()),
        Error::Internal(m) => Response::error(500, &m),
    }
}

fn body(req: &Request) -> Result<&[u8], Response> {
    req.body.as_deref().map_err(Clone::clone)
}

/// `POST /register?name=NAME`: writes the body to a temporary file in
/// `registered/`, has the host validate and compile it, and only then renames
/// it into place and makes it current. A failed upload leaves the previous
/// version exactly as it was.
fn register(req: &Request) -> Result<Response, Response> {
    let raw = req
        .query_param("name")
        .ok_or_else(|| Response::error(400, "missing query parameter `name`"))??;
    let name = handler_name(&raw)?;
    // `allow=api.example.com,*.example.org` narrows where it may call out.
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
    // `env=KEY=VALUE`, repeated: its configuration and environment.
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
    // `reuse=N`: calls one instance may serve (the host checks the range).
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
    let bytes = body(req)?;
    if bytes.is_empty() {
        return Err(Response::error(
            400,
            "the body is empty: send the component's wasm bytes",
        ));
    }
    let dir = Registered::open().map_err(|e| Response::error(500, &e))?;
    let random = crate::wasi::random::random::get_random_u64();
    let temp = format!(".upload-{name}-{random:016x}.tmp");
    dir.write(&temp, bytes)
        .map_err(|e| Response::error(500, &e))?;
    let options = LoadOptions {
        allow_outbound,
        config,
        reuse,
    };
    let checked = match host::check(&temp, &options) {
        Ok(checked) => checked,
        Err(e) => {
            dir.remove(&temp);
            return Err(host_error(e));
        }
    };
    // The same bytes as the current version: the file in place stays.
    let same = host::handler(&name).is_some_and(|current| current.digest == checked.digest);
    if same {
        dir.remove(&temp);
    } else if let Err(e) = dir.rename(&temp, &format!("{name}.wasm")) {
        dir.remove(&temp);
        return Err(Response::error(500, &e));
    }
    let info = host::load(&name, &options).map_err(host_error)?;
    Ok(Response::json(201, &info))
}

/// `POST /run/NAME`: the body is the input, the answer the output.
fn run(req: &Request, raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let input = std::str::from_utf8(body(req)?)
        .map_err(|_| Response::error(400, "the input must be UTF-8 text"))?;
    let output = host::invoke(&name, input).map_err(host_error)?;
    Ok(Response::text(200, output))
}

fn list_handlers() -> Response {
    Response::json(200, &host::handlers())
}

fn get_handler(raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let info = host::handler(&name)
        .ok_or_else(|| Response::error(404, &format!("no handler `{name}`")))?;
    Ok(Response::json(200, &info))
}

/// `DELETE /handlers/NAME`: the host forgets it and its schedules first, then
/// the file goes, so a crash in between cannot leave schedules without a
/// handler.
fn delete_handler(raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let dir = Registered::open().map_err(|e| Response::error(500, &e))?;
    let file = format!("{name}.wasm");
    match host::unload(&name) {
        Ok(()) => {
            dir.remove(&file);
            Ok(Response::no_content())
        }
        // A file the host could not load is still removed.
        Err(Error::NotFound(_)) if dir.remove(&file) => Ok(Response::no_content()),
        Err(Error::NotFound(m)) => Err(Response::error(404, &m)),
        Err(e) => Err(host_error(e)),
    }
}

fn limit(req: &Request) -> Result<u32, Response> {
    match req.query_param("limit") {
        None => Ok(DEFAULT_RUNS),
        Some(raw) => {
            let raw = raw?;
            match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_RUNS).contains(&n) => Ok(n),
                _ => Err(Response::error(
                    400,
                    &format!("limit must be a number from 1 to {MAX_RUNS}, not `{raw}`"),
                )),
            }
        }
    }
}

fn handler_runs(req: &Request, raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    let runs = host::handler_runs(&name, limit(req)?).map_err(host_error)?;
    Ok(Response::json(200, &runs))
}

/// `POST /` of the wasm-exec-api: a core module and one call of it.
#[derive(Deserialize)]
struct RunModuleRequest {
    wasm_hex: String,
    function_name: String,
    #[serde(default)]
    params: Vec<serde_json::Value>,
    #[serde(default)]
    host_modules: Vec<String>,
}

/// `POST /register` with JSON: a core module to keep under a name.
#[derive(Deserialize)]
struct RegisterModuleRequest {
    module_name: String,
    wasm_hex: String,
    #[serde(default)]
    host_modules: Vec<String>,
}

fn json_body<T: serde::de::DeserializeOwned>(req: &Request, shape: &str) -> Result<T, Response> {
    serde_json::from_slice(body(req)?)
        .map_err(|e| Response::error(400, &format!("expected {shape}: {e}")))
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, Response> {
    let hex = hex.trim();
    let bad = || Response::error(400, "wasm_hex is not an even number of hex digits");
    if !hex.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect()
}

/// A call's JSON results, as `{"results": [...]}`.
fn results(json: String) -> Result<Response, Response> {
    let results: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| Response::error(500, &format!("the host answered bad JSON: {e}")))?;
    Ok(Response::json(
        200,
        &serde_json::json!({ "results": results }),
    ))
}

fn run_module(req: &Request) -> Result<Response, Response> {
    let request: RunModuleRequest = json_body(
        req,
        r#"{"wasm_hex", "function_name", "params"?, "host_modules"?}"#,
    )?;
    let wasm = decode_hex(&request.wasm_hex)?;
    let params = serde_json::Value::from(request.params).to_string();
    let json = host::run_module(
        &wasm,
        &request.function_name,
        &params,
        &request.host_modules,
    )
    .map_err(host_error)?;
    results(json)
}

fn register_module(req: &Request) -> Result<Response, Response> {
    let request: RegisterModuleRequest =
        json_body(req, r#"{"module_name", "wasm_hex", "host_modules"?}"#)?;
    let wasm = decode_hex(&request.wasm_hex)?;
    let info = host::register_module(&request.module_name, &wasm, &request.host_modules)
        .map_err(host_error)?;
    Ok(Response::json(201, &info))
}

/// `POST /call/NAME/FUNC` with a JSON array of arguments: a registered
/// component's export answers `{"result": …}`; a core module's function,
/// as in wasm-exec-api, `{"results": […]}`.
fn call(req: &Request, name: &str, function: &str) -> Result<Response, Response> {
    let name = handler_name(name)?;
    let function = percent_decode(function)?;
    let args: Vec<serde_json::Value> = json_body(req, "a JSON array of arguments")?;
    let args = serde_json::Value::from(args).to_string();
    if host::handler(&name).is_none() {
        let json = host::call_module(&name, &function, &args).map_err(host_error)?;
        return results(json);
    }
    let json = host::call(&name, &function, &args).map_err(host_error)?;
    let result: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| Response::error(500, &format!("the host answered bad JSON: {e}")))?;
    Ok(Response::json(
        200,
        &serde_json::json!({ "result": result }),
    ))
}

/// `POST /wasm/run` of the "WASM system" job API.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobBody {
    job_id: String,
    wasm_b64: Option<String>,
    wasm_hash: Option<String>,
    timeout_ms: u32,
    #[serde(default)]
    input: serde_json::Value,
    max_stdout_bytes: Option<u32>,
    max_stderr_bytes: Option<u32>,
}

fn run_job(req: &Request) -> Result<Response, Response> {
    let job: JobBody = json_body(
        req,
        r#"{"jobId", "wasmB64" or "wasmHash", "timeoutMs", "input", "maxStdoutBytes"?, "maxStderrBytes"?}"#,
    )?;
    let wasm = match &job.wasm_b64 {
        Some(b64) => {
            Some(decode_base64(b64).ok_or_else(|| Response::error(400, "wasmB64 is not base64"))?)
        }
        None => None,
    };
    let request = JobRequest {
        job_id: job.job_id,
        wasm,
        wasm_hash: job.wasm_hash,
        timeout_ms: job.timeout_ms,
        input: job.input.to_string(),
        max_stdout_bytes: job.max_stdout_bytes,
        max_stderr_bytes: job.max_stderr_bytes,
    };
    let result = host::run_job(&request).map_err(host_error)?;
    let mut answer = serde_json::json!({
        "jobId": result.job_id,
        "ok": result.ok,
        "stderr": result.stderr,
        "durationMs": result.duration_ms,
    });
    if let Some(result) = result.result {
        answer["result"] =
            serde_json::from_str(&result).unwrap_or(serde_json::Value::String(result));
    }
    if let Some(error) = result.error {
        answer["error"] = serde_json::Value::String(error);
    }
    Ok(Response::json(200, &answer))
}

/// Standard base64 (padding optional, whitespace ignored).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect::<Option<_>>()?;
    if digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

#[derive(Deserialize)]
struct ScheduleRequest {
    name: String,
    cron: String,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

/// `POST /sched {"name", "cron", "input"?}`. A non-string `input` is passed
/// on as its JSON text.
fn schedule(req: &Request) -> Result<Response, Response> {
    let request: ScheduleRequest = serde_json::from_slice(body(req)?).map_err(|e| {
        Response::error(
            400,
            &format!("expected {{\"name\", \"cron\", \"input\"?}}: {e}"),
        )
    })?;
    let name = handler_name(&request.name)?;
    let input = match request.input {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    let job = host::schedule(&name, &request.cron, &input).map_err(host_error)?;
    Ok(Response::json(201, &job))
}

fn list_jobs() -> Response {
    Response::json(200, &host::jobs())
}

fn unschedule(raw: &str) -> Result<Response, Response> {
    let id = percent_decode(raw)?;
    host::unschedule(&id).map_err(host_error)?;
    Ok(Response::no_content())
}

fn job_runs(req: &Request, raw: &str) -> Result<Response, Response> {
    let id = percent_decode(raw)?;
    let runs = host::job_runs(&id, limit(req)?).map_err(host_error)?;
    Ok(Response::json(200, &runs))
}
