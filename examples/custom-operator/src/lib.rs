//! A minimal operator of its own, to show that a node runner can replace the
//! default operator without touching the host. It knows three routes:
//!
//! - `GET /` greets;
//! - `GET /count` counts the requests this instance has answered: 1 on a
//!   fresh instance, more when the node reuses instances
//!   (`--max-instance-reuse-count`);
//! - `GET /sleep/MS` answers after MS milliseconds (to show that a node
//!   finishes in-flight requests when it stops);
//! - `GET /env/NAME` answers the value of environment variable NAME (set with
//!   `wasmatic wasm --env NAME=VALUE`);
//! - `PUT /files/NAME` stores the body as `data/NAME`, and `GET /files/NAME`
//!   reads it back (the guest directory `data` is granted with
//!   `wasmatic wasm --dir HOST_DIR::data`);
//! - `GET /fetch/HOST:PORT` calls `http://HOST:PORT/` and answers what came
//!   back (the node's `--allow-outbound` policy applies to operators too);
//! - `GET /say/TEXT` writes TEXT to stdout and stderr, which the node logs
//!   as lines of the request.
//!
//! It is built against WASI 0.2.0 with the `wasi` crate and uses Rust's
//! `std::fs`, not the node's WIT, as the original wasmatic operator did: any
//! `wasi:http/proxy@0.2.x` component can be an operator.

use std::sync::atomic::{AtomicU32, Ordering};

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct CustomOperator;

/// Requests answered by this instance.
static COUNT: AtomicU32 = AtomicU32::new(0);

impl Guest for CustomOperator {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (status, text) = match (request.method(), segments.as_slice()) {
            (Method::Get, [""]) => (200, "hello from a custom operator\n".to_string()),
            (Method::Get, ["count"]) => (
                200,
                format!("{}", COUNT.fetch_add(1, Ordering::Relaxed) + 1),
            ),
            (Method::Get, ["sleep", ms]) => match ms.parse::<u64>() {
                Ok(ms) => {
                    wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
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
            (Method::Get, ["say", text]) => {
                println!("{text}");
                eprintln!("{text}");
                (200, format!("said {text}\n"))
            }
            (Method::Get, ["fetch", authority]) => match fetch(authority) {
                Ok(text) => (200, text),
                Err(why) => (502, format!("cannot fetch http://{authority}/: {why}\n")),
            },
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
    let Ok(body) = request.consume() else {
        return bytes;
    };
    if let Ok(stream) = body.stream() {
        // Reads until the stream is closed (the end) or fails.
        while let Ok(chunk) = stream.blocking_read(16 * 1024) {
            bytes.extend_from_slice(&chunk);
        }
    }
    bytes
}

/// `GET http://AUTHORITY/`: the response body, or why there is none.
fn fetch(authority: &str) -> Result<String, String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&Scheme::Http))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some("/")))
        .map_err(|()| "bad authority".to_string())?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(format!("{e:?}")),
        _ => return Err("no response".into()),
    };
    let body = response.consume().map_err(|()| "no body".to_string())?;
    let stream = body.stream().map_err(|()| "no body stream".to_string())?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(16 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.append(&"content-type".to_string(), &b"text/plain".to_vec());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

wasi::http::proxy::export!(CustomOperator);
