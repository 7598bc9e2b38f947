//! A minimal operator of its own, to show that a node runner can replace the
//! default operator without touching the host. It knows three routes:
//!
//! - `GET /` greets;
//! - `GET /sleep/MS` answers after MS milliseconds (to show that a node
//!   finishes in-flight requests when it stops);
//! - `GET /env/NAME` answers the value of environment variable NAME (set with
//!   `wasmatic wasm --env NAME=VALUE`);
//! - `PUT /files/NAME` stores the body as `data/NAME`, and `GET /files/NAME`
//!   reads it back (the guest directory `data` is granted with
//!   `wasmatic wasm --dir HOST_DIR::data`).
//!
//! It uses the `wasip2` crate and Rust's `std::fs`, not the node's WIT:
//! any `wasi:http/proxy` component can be an operator.

use std::io::{Read, Write};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct CustomOperator;

impl Guest for CustomOperator {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (status, text) = match (request.method(), segments.as_slice()) {
            (Method::Get, [""]) => (200, "hello from a custom operator\n".to_string()),
            (Method::Get, ["sleep", ms]) => match ms.parse::<u64>() {
                Ok(ms) => {
                    wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                    (200, format!("slept {ms}ms\n"))
                }
                Err(_) => (400, format!("`{ms}` is not a number of milliseconds\n")),
            },
            (Method::Get, ["env", name]) => match std::env::var(name) {
                Ok(value) => (200, value),
                Err(_) => (404, format!("no variable {name}\n")),
            },
            (Method::Put, ["files", name]) if is_plain(name) => {
                let body = read_body(request);
                match std::fs::write(format!("data/{name}"), body) {
                    Ok(()) => (201, format!("stored data/{name}\n")),
                    Err(e) => (500, format!("cannot store data/{name}: {e}\n")),
                }
            }
            (Method::Get, ["files", name]) if is_plain(name) => {
                match std::fs::read_to_string(format!("data/{name}")) {
                    Ok(text) => (200, text),
                    Err(e) => (404, format!("cannot read data/{name}: {e}\n")),
                }
            }
            _ => (404, format!("the custom operator has no route {path}\n")),
        };
        respond(response_out, status, text.as_bytes());
    }
}

fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !name.starts_with('.')
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Ok(body) = request.consume() {
        if let Ok(mut stream) = body.stream() {
            let _ = stream.read_to_end(&mut bytes);
        }
    }
    bytes
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"text/plain");
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(mut stream) = outgoing.write() {
        let _ = stream.write_all(body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

wasip2::http::proxy::export!(CustomOperator);
