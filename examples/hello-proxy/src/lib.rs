//! The smallest useful `wasi:http/proxy` component: `GET` answers
//! `hello world`, `POST` answers its body. The benchmark serves it with
//! `wasmtime serve` and with `wasmatic wasm` to compare the two hosts, and
//! compares its echo with a handler's echo through the operator.

use std::io::{Read, Write};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct HelloProxy;

impl Guest for HelloProxy {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let body = match request.method() {
            Method::Post => {
                let mut bytes = Vec::new();
                if let Ok(incoming) = request.consume() {
                    if let Ok(mut stream) = incoming.stream() {
                        let _ = stream.read_to_end(&mut bytes);
                    }
                }
                bytes
            }
            _ => b"hello world".to_vec(),
        };
        let headers = Fields::new();
        let _ = headers.append("content-length", body.len().to_string().as_bytes());
        let response = OutgoingResponse::new(headers);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(mut stream) = outgoing.write() {
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

wasip2::http::proxy::export!(HelloProxy);
