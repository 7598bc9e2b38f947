//! End-to-end test support: the real `wasmatic` binary on a loopback port,
//! real components built by `make components`, and a minimal HTTP client.
#![allow(dead_code, unused_imports)] // each test binary uses its own part of this module

pub mod anvil;
pub mod built;
pub mod fake_api;
pub mod memory;
pub mod postgres;

pub use fake_api::FakeApi;
pub use memory::{assert_rss_grew_less_than, rss_bytes, PeakRss};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a node may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one HTTP exchange may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A component built by `make components`.
pub fn component(file: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release")
        .join(file);
    assert!(
        path.exists(),
        "{} is missing: run `make components` first",
        path.display()
    );
    path
}

pub fn component_bytes(file: &str) -> Vec<u8> {
    std::fs::read(component(file)).expect("read component")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `wasmatic` process, killed when dropped.
pub struct Node {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    log: PathBuf,
}

/// How to start a node.
pub struct NodeBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    dir: PathBuf,
}

impl NodeBuilder {
    /// A node run with `args`, in working directory `dir`.
    pub fn new(dir: &Path, args: &[&str]) -> Self {
        NodeBuilder {
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: Vec::new(),
            dir: dir.to_path_buf(),
        }
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.envs.push((name.into(), value.into()));
        self
    }

    /// The state a node of `up` keeps in PostgreSQL when the suite runs on
    /// that backend (`WASMATIC_TEST_STATE=postgres`, as `make test` runs the
    /// suites that exercise the state a second time): one database of the
    /// process's shared server per node directory, so that a restart finds
    /// it again.
    fn matrix_state(&self) -> Option<String> {
        if std::env::var("WASMATIC_TEST_STATE").ok()? != "postgres"
            || self.args.first()? != "up"
            || self.args.iter().any(|a| a == "--state")
        {
            return None;
        }
        Some(postgres::database_of(&self.dir))
    }

    fn command(&self, log: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmatic"));
        cmd.args(&self.args);
        if let Some(url) = self.matrix_state() {
            cmd.args(["--state", &url]);
        }
        cmd.current_dir(&self.dir)
            .env_remove("WASMATIC")
            .env_remove("WASMATIC_PORT")
            .env_remove("WASMATIC_STATE")
            .env_remove("WASMATIC_STATE_URL")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("open node log"),
            ));
        for (name, value) in &self.envs {
            cmd.env(name, value);
        }
        cmd
    }

    /// Starts the node and waits until it listens.
    pub fn start(self) -> Node {
        let log = self.dir.join("node.log");
        let mut child = self.command(&log).spawn().expect("spawn wasmatic");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(rest) = line.strip_prefix("wasmatic listening on http://") {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the node did not start listening; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let mut addr: SocketAddr = addr.parse().expect("listening address");
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        Node {
            child,
            addr,
            dir: self.dir,
            log,
        }
    }

    /// Runs the command to completion, expecting it to fail; returns its
    /// exit code and stderr.
    pub fn fail(self) -> (Option<i32>, String) {
        let log = self.dir.join("failed.log");
        let _ = std::fs::remove_file(&log);
        let mut child = self.command(&log).spawn().expect("spawn wasmatic");
        let status = wait_exit(&mut child, START_TIMEOUT, "wasmatic did not exit");
        assert!(!status.success(), "wasmatic should have failed");
        (
            status.code(),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }
}

impl Node {
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        self.request("POST", path, &[], body)
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, &[], b"")
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.addr, method, path, headers, body)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.signal("TERM")
    }

    /// Sends a signal (`TERM`, `INT`, …) and waits for the exit status.
    pub fn signal(mut self, signal: &str) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the node without warning (SIGKILL).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- node log ---\n{}", self.log());
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status and that the body is a JSON error; returns it.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        let json = self.json();
        json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no `error` string in {json}"))
            .to_string()
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body).expect("HTTP exchange")
}

/// One HTTP/1.1 exchange, or the I/O error that stopped it (the node died).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // The server may answer (413, say) before reading the whole body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    // A server that answers early may reset the connection after its
    // answer; what arrived before the reset is the response.
    if let Err(e) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(e);
        }
    }
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no response",
        ));
    }
    Ok(parse_response(&raw))
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Files and directories below `root`, relative, sorted; `skip` names
/// top-level entries to leave out.
pub fn tree(root: &Path, skip: &[&str]) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.retain(|p| {
        !skip
            .iter()
            .any(|s| p == s || p.starts_with(&format!("{s}/")))
    });
    out.sort();
    out
}

/// A request whose body is sent chunked, without a declared length.
pub fn request_chunked(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let mut sent = stream.write_all(head.as_bytes());
    for chunk in body.chunks(64 * 1024) {
        if sent.is_err() {
            break; // answered early; the rest is not wanted
        }
        sent = stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|()| stream.write_all(chunk))
            .and_then(|()| stream.write_all(b"\r\n"));
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        assert!(!raw.is_empty(), "read response: {e}");
    }
    parse_response(&raw)
}

/// Keeps calling `POST /run/echo` until stopped; counts the answers that
/// were right and those that were not.
pub struct Heartbeat {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Heartbeat {
    pub fn start(addr: SocketAddr) -> Heartbeat {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut ok, mut bad) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let r = request(addr, "POST", "/run/echo", &[], b"alive");
                if r.status == 200 && r.body == b"alive" {
                    ok += 1;
                } else {
                    bad.push(format!("{} {}", r.status, r.text()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, bad)
        });
        Heartbeat { stop, thread }
    }

    /// Stops; returns how many calls succeeded, and the failures.
    pub fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("heartbeat thread")
    }
}

/// Fails if an upload's temporary file is left in `DIR/registered`.
pub fn assert_no_uploads_left(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("registered"))
        .expect("read registered/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "uploads left behind: {leftovers:?}");
}

/// Waits for `child` to exit; past `timeout` it is killed and the test
/// fails with `failure`, so that a hung process fails one test instead of
/// hanging the run.
pub fn wait_exit(child: &mut Child, timeout: Duration, failure: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{failure}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `wasmatic up` in `dir` with `flags`, on a free port.
pub fn up(dir: &Path, flags: &[&str]) -> Node {
    let mut args = vec!["up"];
    args.extend_from_slice(flags);
    NodeBuilder::new(dir, &args)
        .env("WASMATIC_PORT", "0")
        .start()
}

/// `wasmatic wasm` in `dir` serving the custom operator on a free loopback
/// port, with `flags` before the operator's path; to be started.
pub fn operator_node(dir: &Path, flags: &[&str]) -> NodeBuilder {
    let operator = component("custom_operator.wasm");
    let operator = operator.to_str().expect("a UTF-8 path");
    let mut args = vec!["wasm", "--addr", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    args.push(operator);
    NodeBuilder::new(dir, &args)
}

/// `POST path` with `bytes`, which must answer 201; its JSON.
pub fn register(node: &Node, path: &str, bytes: &[u8]) -> serde_json::Value {
    let response = node.post(path, bytes);
    assert_eq!(response.status, 201, "{path}: {}", response.text());
    response.json()
}

pub fn post_json(node: &Node, path: &str, body: serde_json::Value) -> Response {
    node.post(path, body.to_string().as_bytes())
}

/// The wasm of WebAssembly text, as hex (the `wasm_hex` of `POST /`).
pub fn wat_hex(wat: &str) -> String {
    hex::encode(wat::parse_str(wat).expect("valid WAT"))
}

/// Standard base64, padded (the `wasmB64` of `POST /wasm/run`).
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sends `raw` (a whole request, head and body, as the test wrote it) on a
/// fresh connection and reads the answer until the node closes it.
pub fn raw_request(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        assert!(!answer.is_empty(), "read response: {e}");
    }
    parse_response(&answer)
}
