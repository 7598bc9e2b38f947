//! A local HTTP server standing in for an outside API, so that no test
//! reaches the internet.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use super::IO_TIMEOUT;

/// A local HTTP server standing in for an outside API: answers every request
/// with `body` after `delay`, and counts the requests.
pub struct FakeApi {
    pub addr: SocketAddr,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeApi {
    pub fn start(body: &'static str, delay: Duration) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake api");
        let addr = listener.local_addr().expect("fake api addr");
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                    // Read the request head; these requests have no body.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    std::thread::sleep(delay);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        FakeApi { addr, hits }
    }

    /// The URL of CoinGecko's simple-price endpoint on this server.
    pub fn price_url(&self) -> String {
        format!(
            "http://{}/api/v3/simple/price?ids=bitcoin&vs_currencies=usd",
            self.addr
        )
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}
