//! The default operator of a wasmatic node: the node's HTTP API.
//!
//! It is a `wasi:http/proxy` component; the host runs a fresh instance of it
//! per request, so it keeps no state of its own. Handler files live in its
//! preopened `registered` directory; everything else (compiling, running,
//! scheduling, run history) it asks of the host through
//! `wasmatic:operator/host`.

mod http;
mod routes;

wit_bindgen::generate!({
    path: "../wit/operator",
    world: "wasmatic:operator/operator",
    generate_all,
});

struct Operator;

impl exports::wasi::http::incoming_handler::Guest for Operator {
    fn handle(
        request: wasi::http::types::IncomingRequest,
        response_out: wasi::http::types::ResponseOutparam,
    ) {
        let response = routes::route(http::Request::read(request));
        response.send(response_out);
    }
}

export!(Operator);
