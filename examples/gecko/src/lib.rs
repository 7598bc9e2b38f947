//! A price oracle: fetches the BTC/USD price from CoinGecko's simple-price
//! API and returns it as compact JSON, `{"coin":"bitcoin","vs":"usd","price":…}`.
//!
//! The input may be empty (the defaults), a URL to fetch instead of
//! CoinGecko's, or JSON `{"url"?, "coin"?, "vs"?}`. Whatever the URL, the
//! answer must have CoinGecko's shape: `{"<coin>": {"<vs>": <price>}}`.
//! A failure to fetch or to understand the answer fails the run.
//!
//! It is built the way the original wasmatic's `example` world was: it
//! imports `wasi:http/outgoing-handler@0.2.0` (through the `wasi` crate) and
//! exports `handler: func(input: string) -> string`. The `echo` example shows
//! the other way, bindings generated from `wit/handler`.

use serde_json::Value;

wit_bindgen::generate!({
    inline: "
        package wasmatic:gecko;
        world gecko {
            export handler: func(input: string) -> string;
        }
    ",
});

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

const API: &str = "https://api.coingecko.com/api/v3/simple/price";

struct Gecko;

impl Guest for Gecko {
    fn handler(input: String) -> String {
        match price(&input) {
            Ok(answer) => answer,
            // The handler world returns a string only: failing the run is
            // how a handler reports an error. The message lands in stderr.
            Err(e) => panic!("gecko: {e}"),
        }
    }
}

struct Query {
    url: String,
    coin: String,
    vs: String,
}

fn parse_input(input: &str) -> Result<Query, String> {
    let input = input.trim();
    let mut query = Query {
        url: String::new(),
        coin: "bitcoin".into(),
        vs: "usd".into(),
    };
    if input.starts_with('{') {
        let v: Value = serde_json::from_str(input).map_err(|e| format!("bad input JSON: {e}"))?;
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        if let Some(coin) = text("coin") {
            query.coin = coin;
        }
        if let Some(vs) = text("vs") {
            query.vs = vs;
        }
        query.url = text("url").unwrap_or_default();
    } else {
        query.url = input.to_string();
    }
    if query.url.is_empty() {
        query.url = format!("{API}?ids={}&vs_currencies={}", query.coin, query.vs);
    }
    Ok(query)
}

fn price(input: &str) -> Result<String, String> {
    let query = parse_input(input)?;
    let body = get(&query.url)?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let price = answer
        .get(&query.coin)
        .and_then(|c| c.get(&query.vs))
        .and_then(Value::as_f64)
        .ok_or_else(|| {
            format!(
                "the answer has no {}/{} price: {answer}",
                query.coin, query.vs
            )
        })?;
    Ok(serde_json::json!({ "coin": query.coin, "vs": query.vs, "price": price }).to_string())
}

/// A GET of `url` over `wasi:http`, returning the body of a 2xx answer.
fn get(url: &str) -> Result<Vec<u8>, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(format!("`{url}` is not an http(s) URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    headers
        .append(&"accept".to_string(), &b"application/json".to_vec())
        .map_err(|e| format!("bad header: {e:?}"))?;
    let request = OutgoingRequest::new(headers);
    request
        .set_method(&Method::Get)
        .map_err(|()| "bad method")?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("bad host `{authority}`"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| format!("bad path `{path}`"))?;

    let pending = outgoing_handler::handle(request, None)
        .map_err(|e| format!("cannot send the request to {authority}: {e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("the response never came")?
        .map_err(|()| "the response was already taken")?
        .map_err(|e| format!("request to {authority} failed: {e:?}"))?;
    let status = response.status();
    let body = response
        .consume()
        .map_err(|()| "the response has no body")?;
    let stream = body
        .stream()
        .map_err(|()| "the response body has no stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!(
                    "reading the answer failed: {}",
                    e.to_debug_string()
                ))
            }
        }
    }
    if !(200..300).contains(&status) {
        return Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok(bytes)
}
export!(Gecko);
