//! Just enough HTTP on top of `wasi:http`: a request with its whole body
//! read (up to a limit), and a response written in one go.

use crate::wasi::http::types::{
    http_error_code, ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use crate::wasi::io::streams::{OutputStream, StreamError};
use std::borrow::Cow;
use std::cell::OnceCell;

pub struct Request {
    pub method: Method,
    /// The path and query, percent-encoded as received.
    path_with_query: String,
    /// Where the path ends (at the `?`, or the end).
    path_end: usize,
    /// The body, or why it could not be read: read when a route first asks
    /// for it, so that a route can refuse a request (a name that does not
    /// exist, say) without taking a large body into memory.
    body: OnceCell<Result<Vec<u8>, Response>>,
    /// The request's headers, fetched from the host when first asked for:
    /// most routes read none, and each read is a host call. Declared before
    /// `incoming`, so that this child resource is dropped before its parent.
    headers: OnceCell<Fields>,
    incoming: IncomingRequest,
}

impl Request {
    pub fn read(incoming: IncomingRequest) -> Request {
        let path_with_query = incoming.path_with_query().unwrap_or_else(|| "/".into());
        let path_end = path_with_query.find('?').unwrap_or(path_with_query.len());
        Request {
            method: incoming.method(),
            path_with_query,
            path_end,
            body: OnceCell::new(),
            headers: OnceCell::new(),
            incoming,
        }
    }

    /// The body, read on first use; empty for methods whose body the API
    /// never reads.
    pub fn body(&self) -> Result<&[u8], Response> {
        self.body
            .get_or_init(|| {
                if matches!(self.method, Method::Post | Method::Put | Method::Patch) {
                    read_body(self)
                } else {
                    Ok(Vec::new())
                }
            })
            .as_deref()
            .map_err(Clone::clone)
    }

    /// The path, percent-encoded as received, without the query.
    pub fn path(&self) -> &str {
        &self.path_with_query[..self.path_end]
    }

    /// The query, without its `?` (empty when there is none).
    fn query(&self) -> &str {
        self.path_with_query
            .get(self.path_end + 1..)
            .unwrap_or_default()
    }

    /// The first value of header `name` (lower case), if any.
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        let headers = self.headers.get_or_init(|| self.incoming.headers());
        headers.get(name).into_iter().next()
    }

    /// The `authorization` header, if any.
    pub fn authorization(&self) -> Option<Vec<u8>> {
        self.header("authorization")
    }

    /// The request's id (`x-request-id`), which the host sets on every
    /// request: error answers quote it, so a client can find the request's
    /// lines in the node's log.
    pub fn request_id(&self) -> Option<String> {
        self.header("x-request-id")
            .and_then(|id| String::from_utf8(id).ok())
    }

    /// The value of query parameter `key`, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<Result<String, Response>> {
        self.query_values(key).next()
    }

    /// Every value of a query parameter that may repeat, in order.
    pub fn query_params(&self, key: &str) -> Result<Vec<String>, Response> {
        self.query_values(key).collect()
    }

    /// The values of query parameter `key`, in order, each percent-decoded
    /// when it is reached.
    fn query_values<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Iterator<Item = Result<String, Response>> + 'a {
        self.query().split('&').filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| percent_decode(v))
        })
    }
}

/// Reads the whole body. The host bounds its size: past the node's limit
/// the read fails with `HTTP-request-body-size`, answered with 413.
fn read_body(request: &Request) -> Result<Vec<u8>, Response> {
    let body = request
        .incoming
        .consume()
        .map_err(|()| Response::error(500, "the request body was already taken"))?;
    let stream = body
        .stream()
        .map_err(|()| Response::error(500, "the request body has no stream"))?;
    // The host holds the whole body, in one piece, before the operator
    // runs: asked for all of it (the declared length, which the host has
    // checked), one read answers it, and that read's buffer is kept as the
    // body rather than copied.
    let declared = request
        .header("content-length")
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(declared.max(1024 * 1024) as u64) {
            Ok(chunk) if bytes.is_empty() => {
                bytes = chunk;
                bytes.reserve(declared.saturating_sub(bytes.len()));
            }
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                let reason = e.to_debug_string();
                let too_large =
                    matches!(http_error_code(&e), Some(ErrorCode::HttpRequestBodySize(_)))
                        || reason.contains("body size exceeds limit");
                return Err(if too_large {
                    Response::error(
                        413,
                        &format!("the request body is larger than the node accepts: {reason}"),
                    )
                } else {
                    Response::error(400, &format!("cannot read the request body: {reason}"))
                });
            }
        }
    }
    drop(stream);
    Ok(bytes)
}

/// Decodes `%XX` escapes and `+`; fails on a malformed escape or bytes that
/// are not UTF-8.
pub fn percent_decode(s: &str) -> Result<String, Response> {
    let bad = || Response::error(400, &format!("`{s}` is not properly percent-encoded"));
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = bytes
                    .next()
                    .and_then(|c| (c as char).to_digit(16))
                    .ok_or_else(bad)?;
                let lo = bytes
                    .next()
                    .and_then(|c| (c as char).to_digit(16))
                    .ok_or_else(bad)?;
                out.push((hi * 16 + lo) as u8);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// Borrowed when it is fixed (`/health`, the console's files, the API
    /// document): answering it copies nothing.
    pub body: Cow<'static, [u8]>,
}

impl Response {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        let body = serde_json::to_vec(value).unwrap_or_else(|e| {
            format!("{{\"error\":\"cannot encode the response: {e}\"}}").into_bytes()
        });
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn text(status: u16, text: String) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: text.into_bytes().into(),
        }
    }

    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    pub fn no_content() -> Response {
        Response {
            status: 204,
            content_type: "",
            headers: Vec::new(),
            body: Cow::Borrowed(&[]),
        }
    }

    /// Adds `"request_id"` to an error's JSON body (`{"error": …}`), as
    /// the host does to the errors it answers itself; other answers are
    /// left as they are.
    pub fn with_request_id(mut self, req: &Request) -> Response {
        if self.status < 400 || self.content_type != "application/json" {
            return self;
        }
        // Read only for an error: other answers spare the host call.
        let Some(id) = req.request_id() else {
            return self;
        };
        if let Ok(serde_json::Value::Object(mut error)) = serde_json::from_slice(&self.body) {
            if error.contains_key("error") {
                error.insert("request_id".into(), id.into());
                if let Ok(body) = serde_json::to_vec(&error) {
                    self.body = body.into();
                }
            }
        }
        self
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    pub fn send(self, out: ResponseOutparam) {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::with_capacity(self.headers.len() + 2);
        entries.extend(
            self.headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.into_bytes())),
        );
        entries.push((
            "content-length".into(),
            self.body.len().to_string().into_bytes(),
        ));
        if !self.content_type.is_empty() {
            entries.push(("content-type".into(), self.content_type.as_bytes().to_vec()));
        }
        let headers = match Fields::from_list(&entries) {
            Ok(headers) => headers,
            Err(_) => Fields::new(),
        };
        let response = OutgoingResponse::new(headers);
        // A new response is 200 already: most answers spare the host call.
        if self.status != 200 {
            let _ = response.set_status_code(self.status);
        }
        let Ok(body) = response.body() else {
            ResponseOutparam::set(out, Ok(response));
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            write_all(&stream, &self.body);
            drop(stream);
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

/// Writes `bytes` as fast as the stream takes them, waiting only when it is
/// full: a body that fits is handed over in one write, with no wait for it
/// to be flushed (`finish` ends the body after what was written).
fn write_all(stream: &OutputStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let room = match stream.check_write() {
            Ok(0) => {
                stream.subscribe().block();
                continue;
            }
            Ok(room) => usize::try_from(room).unwrap_or(usize::MAX),
            Err(_) => return,
        };
        let (now, rest) = bytes.split_at(room.min(bytes.len()));
        if stream.write(now).is_err() {
            return;
        }
        bytes = rest;
    }
}
