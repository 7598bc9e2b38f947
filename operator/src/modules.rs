//! Core modules, with the API of wasm-exec-api: `POST /` runs one sent as
//! hex, `POST /register` (JSON) keeps one by name, `DELETE /modules/NAME`.

use serde::Deserialize;

use crate::http::{Request, Response};
use crate::routes::{handler_name, host_error, json_body};
use crate::wasmatic::operator::modules as host;

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

pub fn run(req: &Request) -> Result<Response, Response> {
    let request: RunModuleRequest = json_body(
        req,
        r#"{"wasm_hex", "function_name", "params"?, "host_modules"?}"#,
    )?;
    let wasm = decode_hex(&request.wasm_hex)?;
    let params = serde_json::Value::from(request.params).to_string();
    let json = host::run(
        &wasm,
        &request.function_name,
        &params,
        &request.host_modules,
    )
    .map_err(host_error)?;
    results(json)
}

pub fn register(req: &Request) -> Result<Response, Response> {
    let request: RegisterModuleRequest =
        json_body(req, r#"{"module_name", "wasm_hex", "host_modules"?}"#)?;
    let wasm = decode_hex(&request.wasm_hex)?;
    let info =
        host::register(&request.module_name, &wasm, &request.host_modules).map_err(host_error)?;
    Ok(Response::json(201, &info))
}

/// `POST /call/NAME/FUNC` of a core module: `{"results": […]}`.
pub fn call(name: &str, function: &str, args: &str) -> Result<Response, Response> {
    results(host::call(name, function, args).map_err(host_error)?)
}

/// `DELETE /modules/NAME`.
pub fn remove(raw: &str) -> Result<Response, Response> {
    let name = handler_name(raw)?;
    host::remove(&name).map_err(host_error)?;
    Ok(Response::no_content())
}
