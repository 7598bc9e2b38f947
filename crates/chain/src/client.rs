//! The JSON-RPC transport to one chain's endpoint: HTTP/1.1 POSTs over
//! plain TCP or TLS, with a few idle connections kept for the next call.
//!
//! The endpoint's URL usually carries the runner's API key, so nothing this
//! module returns mentions it: errors are described by kind only
//! ("connection refused", "TLS handshake failed"), never with the address.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::{EndpointError, RpcError};

/// Idle connections kept per endpoint: enough for a few guests calling at
/// once, few enough that a node holds no pile of sockets to one provider.
const IDLE_CONNECTIONS: usize = 4;

/// Where a chain's node answers. Its `Debug` shows no URL.
pub struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, with any API key they carry.
    target: String,
    /// The `Host` header.
    authority: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
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
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("the URL must start with http:// or https://"),
        };
        let authority = uri.authority().context("the URL has no host")?;
        if authority.as_str().contains('@') {
            bail!("credentials before the host (user:password@) are not supported; put the key in the path or query");
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        Ok(Arc::new(Endpoint {
            tls,
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            target: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
            authority: authority.as_str().to_string(),
            idle: Mutex::new(Vec::new()),
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
        let mut sender = match self.take_idle() {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        let request = http::Request::post(&self.target)
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|_| unavailable("the request could not be built"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| unavailable("the endpoint closed the connection"))?;
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
        self.give_back(sender);
        Ok((status, text))
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS && !sender.is_closed() {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, RpcError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unavailable(&format!("cannot connect: {}", e.kind())))?;
        let _ = tcp.set_nodelay(true);
        if self.tls {
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|_| unavailable("the host is not a valid TLS server name"))?;
            let stream = wasmatic_sandbox::outbound::tls_connector()
                .connect(name, tcp)
                .await
                .map_err(|_| unavailable("the TLS handshake failed"))?;
            handshake(stream).await
        } else {
            handshake(tcp).await
        }
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, RpcError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| unavailable("the HTTP handshake failed"))?;
    // The connection lives as long as its sender: it ends when the sender
    // is dropped (not kept idle) or the endpoint closes it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
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
        assert_eq!(endpoint.target, "/v2/SECRETKEY");
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
