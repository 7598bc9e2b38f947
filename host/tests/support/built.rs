//! Components built by `make python js` rather than cargo, and what tests
//! of such big components need: their compiled-code files, and a POST that
//! waits for a registration that compiles megabytes of code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{parse_response, Response, IO_TIMEOUT};

/// A component built by `make python` or `make js` (not by cargo), by its
/// path under `target/`, e.g. `python/handler.wasm`.
pub fn built_bytes(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(path);
    std::fs::read(&full)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make python js` first", full.display()))
}

/// The compiled-code file a node keeps for `digest` in its state directory.
pub fn compiled_file(state: &Path, digest: &str) -> Option<PathBuf> {
    std::fs::read_dir(state.join("compiled"))
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&format!("{digest}-")) && name.ends_with(".cwasm")
        })
}

/// `POST path` with `body`, waiting up to `timeout` for the answer rather
/// than the usual 30s: registering a big component compiles it first.
pub fn post_patiently(addr: SocketAddr, path: &str, body: &[u8], timeout: Duration) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body).expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}
