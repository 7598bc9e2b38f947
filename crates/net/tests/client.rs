//! The one client against a real server on loopback: trusted dials reach
//! it, checked dials reach it only when a rule names it, and a refusal
//! happens before any connection is made.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmatic_net::{Client, ConnectError, Dial, Policy, Rule, SendError};

/// A server that answers every request on a connection with `hello`, and
/// counts the connections it accepted.
async fn server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let mut seen = Vec::new();
                loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".as_bytes();
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, accepted)
}

fn get(url: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url).body(Empty::new()).unwrap()
}

async fn body(client: &Client<Empty<Bytes>>, url: &str) -> Result<Bytes, SendError> {
    let response = client.send(get(url)).await?;
    assert_eq!(response.status(), 200);
    Ok(response.into_body().collect().await.unwrap().to_bytes())
}

fn checked(node: &[String], handler: Option<&[&str]>) -> Client<Empty<Bytes>> {
    let parse = |r: &str| Rule::parse(r).unwrap();
    Client::new(
        Dial::Checked {
            policy: Arc::new(Policy::new(node.iter().map(|r| parse(r)).collect())),
            rules: handler.map(|rules| Arc::new(rules.iter().map(|r| parse(r)).collect())),
        },
        Duration::from_secs(5),
    )
}

#[tokio::test]
async fn trusted_dials_reach_loopback_and_keep_the_connection() {
    let (port, accepted) = server().await;
    let client = Client::new(Dial::Trusted, Duration::from_secs(5));
    let url = format!("http://127.0.0.1:{port}/x");
    assert_eq!(body(&client, &url).await.unwrap(), "hello");
    assert_eq!(body(&client, &url).await.unwrap(), "hello");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the idle connection is reused"
    );
}

#[tokio::test]
async fn checked_dials_obey_the_policy_before_connecting() {
    let (port, accepted) = server().await;
    let url = format!("http://127.0.0.1:{port}/x");
    let exact = format!("127.0.0.1:{port}");

    // No rule names loopback: refused, and nothing reached the server.
    match body(&checked(&[], None), &url).await {
        Err(SendError::Connect(ConnectError::Refused(reason))) => {
            assert!(reason.contains("loopback"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        body(&checked(&["*".into()], None), &url).await,
        Err(SendError::Connect(ConnectError::Refused(_)))
    ));
    // A handler's own rules narrow the node's.
    assert!(matches!(
        body(
            &checked(std::slice::from_ref(&exact), Some(&["api.example.com"])),
            &url
        )
        .await,
        Err(SendError::Connect(ConnectError::Refused(_)))
    ));
    assert_eq!(accepted.load(Ordering::SeqCst), 0);

    // A rule naming the host and port: reached, and each request on a
    // connection of its own (a checked client keeps none).
    let named = checked(std::slice::from_ref(&exact), Some(&[exact.as_str()]));
    assert_eq!(body(&named, &url).await.unwrap(), "hello");
    assert_eq!(body(&named, &url).await.unwrap(), "hello");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn other_schemes_and_closed_ports_are_clear_errors() {
    let client = Client::new(Dial::Trusted, Duration::from_secs(5));
    assert!(matches!(
        body(&client, "ftp://127.0.0.1/").await,
        Err(SendError::Connect(ConnectError::Scheme))
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let error = body(&client, &format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            SendError::Connect(ConnectError::Io(std::io::ErrorKind::ConnectionRefused))
        ),
        "{error:?}"
    );
    assert!(!error.to_string().contains("127.0.0.1"), "{error}");
}
