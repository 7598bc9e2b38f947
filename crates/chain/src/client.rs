//! The JSON-RPC transport to one chain's endpoint: HTTP POSTs through the
//! node's one client, dialled as configured (the runner chose the URL), with
//! a few idle connections kept for the next call.
//!
//! The endpoint's URL usually carries the runner's API key, so nothing this
//! module returns mentions it: errors are described by kind only
//! ("connection refused", "TLS handshake failed"), never with the address.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};
use wasmatic_net::{Client, Dial, SendError, CONNECT_TIMEOUT};

use super::{EndpointError, RpcError};

/// Where a chain's node answers. Its `Debug` shows no URL.
pub struct Endpoint {
    /// The whole URL, with any API key its path or query carries.
    uri: http::Uri,
    client: Client<Full<Bytes>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Endpoint(<redacted>)")
    }
}

impl Endpoint {
    /// Parses an `http://` or `https://` URL. The error does not repeat the
    /// URL: the caller names the chain instead.
    pub fn parse(url: &str) -> Result<Arc<Endpoint>> {
        let uri: http::Uri = url.parse().ok().context("not a URL")?;
        match uri.scheme_str() {
            Some("https" | "http") => {}
            _ => bail!("the URL must start with http:// or https://"),
        }
        let authority = uri.authority().context("the URL has no host")?;
        if authority.as_str().contains('@') {
            bail!("credentials before the host (user:password@) are not supported; put the key in the path or query");
        }
        Ok(Arc::new(Endpoint {
            uri,
            client: Client::new(Dial::Trusted, CONNECT_TIMEOUT),
            next_id: AtomicU64::new(1),
        }))
    }

    /// Sends one JSON-RPC request and returns its `result`, within `timeout`
    /// and reading at most `max_response` bytes of the answer.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
        max_response: usize,
    ) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let body = Bytes::from(body.to_string());
        let (status, text) =
            match tokio::time::timeout(timeout, self.exchange(body, max_response)).await {
                Ok(answer) => answer?,
                Err(_) => return Err(RpcError::Timeout),
            };
        match read_answer(&text, max_response) {
            // A proxy's or provider's refusal (401, 429…) is rarely
            // JSON-RPC: its status says more than its body.
            Err(RpcError::Unavailable(_)) if !status.is_success() => {
                Err(unavailable(&format!("the endpoint answered HTTP {status}")))
            }
            answer => answer,
        }
    }

    async fn exchange(
        &self,
        body: Bytes,
        max_response: usize,
    ) -> Result<(http::StatusCode, Bytes), RpcError> {
        let request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|_| unavailable("the request could not be built"))?;
        let response = self.client.send(request).await.map_err(|e| match e {
            // The connector's messages name no address.
            SendError::Connect(e) => unavailable(&e.to_string()),
            SendError::Exchange(_) => unavailable("the endpoint closed the connection"),
        })?;
        let status = response.status();
        let text = Limited::new(response.into_body(), max_response)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    RpcError::TooLarge(max_response as u64)
                } else {
                    unavailable("the answer was cut off")
                }
            })?
            .to_bytes();
        Ok((status, text))
    }
}

fn unavailable(what: &str) -> RpcError {
    RpcError::Unavailable(what.to_string())
}

/// The `result` of a JSON-RPC answer, or its error object.
fn read_answer(text: &[u8], max_response: usize) -> Result<Value, RpcError> {
    if text.len() > max_response {
        return Err(RpcError::TooLarge(max_response as u64));
    }
    let answer: Value = serde_json::from_slice(text)
        .map_err(|_| unavailable("the endpoint's answer is not JSON"))?;
    if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
        return Err(RpcError::Node(EndpointError {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            data: error.get("data").map(Value::to_string),
        }));
    }
    match answer.get("result") {
        Some(result) => Ok(result.clone()),
        None => Err(unavailable("the endpoint's answer has no result")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_and_debug_never_show_the_url() {
        let secret = "https://eth.example/v2/SECRETKEY";
        let endpoint = Endpoint::parse(secret).unwrap();
        assert_eq!(endpoint.uri.path(), "/v2/SECRETKEY");
        assert!(!format!("{endpoint:?}").contains("SECRET"));
        for bad in ["ftp://h/SECRET", "https://user:SECRET@h/", "SECRET"] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(!format!("{e:#}").contains("SECRET"), "{e:#}");
        }
    }

    #[test]
    fn answers_are_results_or_node_errors() {
        let ok = read_answer(br#"{"jsonrpc":"2.0","id":1,"result":"0x2a"}"#, 100);
        assert_eq!(ok.unwrap(), json!("0x2a"));
        let err = read_answer(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted","data":"0x01"}}"#,
            1000,
        );
        assert!(matches!(
            err,
            Err(RpcError::Node(EndpointError { code: 3, .. }))
        ));
        assert!(matches!(
            read_answer(b"<html>", 100),
            Err(RpcError::Unavailable(_))
        ));
    }
}
