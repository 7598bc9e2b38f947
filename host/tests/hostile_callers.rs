//! Anonymous callers who try to exhaust the node's memory or hold its
//! connections: large arguments sent to nothing, many large requests at
//! once, bodies in one-byte chunks, responses nobody reads, and web pages
//! whose name was rebound to the node's address. Memory is read from the
//! node's own RSS; nothing here times the node.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

use serde_json::{json, Value};
use support::{component_bytes, raw_request, request, rss_bytes, up, wait_for, Node, PeakRss};

const MIB: u64 = 1 << 20;

/// A JSON array of `n` zeros.
fn zeros(n: usize) -> String {
    let mut text = String::with_capacity(2 * n + 2);
    text.push('[');
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        text.push('0');
    }
    text.push(']');
    text
}

#[test]
fn large_arguments_sent_to_nothing_cost_nothing_and_arguments_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let r = node.post("/register?name=typed", &component_bytes("typed.wasm"));
    assert_eq!(r.status, 201, "{}", r.text());
    let before = rss_bytes(node.pid());
    let peak = PeakRss::watch(node.pid());

    // 24 anonymous callers at once, each with 6 MiB of JSON for a name that
    // does not exist: each gets its 404, and the node holds no more than
    // the bodies it buffers.
    let body = zeros(3 << 20);
    let addr = node.addr;
    let callers: Vec<_> = (0..24)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                request(addr, "POST", "/call/nobody/f", &[], body.as_bytes())
            })
        })
        .collect();
    assert_eq!(node.get("/health").status, 200);
    for caller in callers {
        let answer = caller.join().unwrap();
        // Past the node's buffered-bodies budget a caller is told to come
        // back; none is answered anything but its 404 otherwise.
        match answer.status {
            404 => assert!(answer.error(404).contains("`nobody`")),
            503 => assert!(answer.header("retry-after").is_some()),
            other => panic!("{other}: {}", answer.text()),
        }
    }
    let peak = peak.stop();
    support::assert_rss_grew_less_than(before, peak, 384 * MIB);

    // A name that exists reads its arguments, bounded by count and depth
    // before anything is parsed, and says which bound.
    let many = format!("[{}]", zeros(70_000));
    let refused = node.post("/call/typed/stats", many.as_bytes());
    assert!(
        refused.error(400).contains("more than 65536 values"),
        "{}",
        refused.text()
    );
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let refused = node.post("/call/typed/stats", deep.as_bytes());
    assert!(
        refused.error(400).contains("deeper than 64"),
        "{}",
        refused.text()
    );
    // Within the bounds, the call runs.
    let fine = format!("[{}]", zeros(60_000));
    let answered = node.post("/call/typed/stats", fine.as_bytes());
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(answered.json()["result"], json!([0.0, 0.0, 60_000]));
    assert_eq!(node.get("/health").status, 200);
}

/// A core module exporting `spin` (which never returns) and `answer` (42),
/// padded with a custom section to `size` bytes.
fn padded_module(size: usize) -> Vec<u8> {
    let mut module = wat::parse_str(
        r#"(module
             (func (export "spin") (loop $again (br $again)))
             (func (export "answer") (result i32) (i32.const 42)))"#,
    )
    .unwrap();
    let name = b"pad";
    let payload = size - module.len() - 16;
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.resize(section.len() + payload, b'x');
    module.push(0); // a custom section
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            module.push(byte);
            break;
        }
        module.push(byte | 0x80);
    }
    module.extend_from_slice(&section);
    module
}

/// The operator's instances' memory, from the node's metrics.
fn operator_memory(node: &Node) -> u64 {
    node.get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("wasmatic_operator_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn requests_in_flight_share_one_operator_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &[
            "--operator-memory",
            "64MiB",
            "--operator-memory-total",
            "64MiB",
            "--call-timeout",
            "10s",
        ],
    );
    // Its hex in the body, the text and the decoded bytes take an operator
    // instance 48 to 56 MiB.
    let hex = hex::encode(padded_module(8 << 20));
    let run = |function: &str| {
        json!({"wasm_hex": hex, "function_name": function, "params": []}).to_string()
    };
    // One request holds its share while its module spins...
    let addr = node.addr;
    let spin = run("spin");
    let holder = std::thread::spawn(move || request(addr, "POST", "/", &[], spin.as_bytes()));
    wait_for(
        Duration::from_secs(60),
        "the spinning request to hold its memory",
        || (operator_memory(&node) >= 40 * MIB).then_some(()),
    );
    // ...so another as large is told to come back, naming the budget.
    let refused = node.post("/", run("answer").as_bytes());
    let message = refused.error(503);
    assert!(message.contains("--operator-memory-total"), "{message}");
    assert!(refused.header("retry-after").is_some());
    // Small requests still fit beside it.
    assert_eq!(node.get("/health").status, 200);
    let held = holder.join().unwrap();
    assert_eq!(held.status, 504, "{}", held.text());
    // With the memory given back, the same request runs.
    let answered = node.post("/", run("answer").as_bytes());
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(answered.json()["results"], json!([42]));
    // Larger than one instance may take: the client's request, said so.
    let hex = hex::encode(padded_module(16 << 20));
    let body = json!({"wasm_hex": hex, "function_name": "answer", "params": []});
    let too_large = node.post("/", body.to_string().as_bytes());
    let message = too_large.error(413);
    assert!(message.contains("--operator-memory, 64MiB"), "{message}");
}

#[test]
fn a_body_in_one_byte_chunks_costs_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let before = rss_bytes(node.pid());
    let peak = PeakRss::watch(node.pid());
    // 4 MiB of payload, one byte a chunk.
    let payload = 4 << 20;
    let mut raw = format!(
        "POST /run/nobody HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n",
        node.addr
    )
    .into_bytes();
    for _ in 0..payload {
        raw.extend_from_slice(b"1\r\nx\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_request(node.addr, &raw);
    assert!(answer.error(404).contains("nobody"), "{}", answer.text());
    let peak = peak.stop();
    support::assert_rss_grew_less_than(before, peak, 64 * MIB);
}

/// A connection to `addr` whose receive buffer is as small as the kernel
/// allows, so that the node cannot write a large answer into it.
fn narrow_connection(addr: SocketAddr) -> TcpStream {
    // SAFETY: a fresh socket, owned by the `TcpStream` made of it.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 2048;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        TcpStream::from_raw_fd(fd)
    };
    let SocketAddr::V4(v4) = addr else {
        panic!("the node listens on IPv4")
    };
    // SAFETY: `sockaddr_in` for `v4`, and the socket's own descriptor.
    let connected = unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = v4.port().to_be();
        sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(connected, 0, "connect");
    stream
}

/// A node holding a handler whose runs page is about 4 MiB.
fn node_with_a_large_runs_page(dir: &std::path::Path, flags: &[&str]) -> Node {
    let node = up(dir, flags);
    let r = node.post("/register?name=echo", &component_bytes("echo.wasm"));
    assert_eq!(r.status, 201, "{}", r.text());
    let input = "y".repeat(1000 * 1024);
    for _ in 0..6 {
        assert_eq!(node.post("/run/echo", input.as_bytes()).status, 200);
    }
    node
}

/// Asks for the runs page on a narrow connection and reads none of it.
fn unread_runs_page(addr: SocketAddr) -> TcpStream {
    let mut stream = narrow_connection(addr);
    let head = format!("GET /handlers/echo/runs?limit=1000 HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

#[test]
fn responses_nobody_reads_are_cut_off_and_leave_room_for_others() {
    let dir = tempfile::tempdir().unwrap();
    // Only making room can let a client in here: the write timeout is long.
    let node = node_with_a_large_runs_page(
        dir.path(),
        &["--max-connections", "16", "--write-timeout", "10m"],
    );
    let holders: Vec<_> = (0..16).map(|_| unread_runs_page(node.addr)).collect();
    // Once their answers have waited a moment, a new client's connection
    // takes the room of one of them.
    wait_for(
        Duration::from_secs(60),
        "/health beside 16 unread answers",
        || {
            let r = support::try_request(node.addr, "GET", "/health", &[], b"").ok()?;
            (r.status == 200).then_some(())
        },
    );
    drop(holders);

    let dir = tempfile::tempdir().unwrap();
    let node = node_with_a_large_runs_page(dir.path(), &["--write-timeout", "2s"]);
    let page_bytes = node.get("/handlers/echo/runs?limit=1000").body.len();
    assert!(page_bytes > 3 << 20, "{page_bytes}");
    let mut reader = unread_runs_page(node.addr);
    // Read a little at a time, far slower than the whole page could come:
    // the node gives up on the answer before it is taken.
    reader
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut received = 0usize;
    let mut buf = [0u8; 1024];
    let cut = wait_for(
        Duration::from_secs(120),
        "the node to give up on the answer",
        || {
            std::thread::sleep(Duration::from_millis(50));
            match reader.read(&mut buf) {
                Ok(0) => Some("closed"),
                Ok(n) => {
                    received += n;
                    None
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some("reset"),
                Err(_) => None,
            }
        },
    );
    assert!(
        received < page_bytes,
        "{cut} after {received} of {page_bytes} bytes"
    );
    assert_eq!(node.get("/health").status, 200);
}

#[test]
fn a_name_rebound_to_the_node_cannot_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--public-host", "node.example"]);
    let echo = component_bytes("echo.wasm");
    let register = |host: &str| {
        let mut raw = format!(
            "POST /register?name=echo HTTP/1.1\r\nhost: {host}\r\norigin: http://{host}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            echo.len()
        )
        .into_bytes();
        raw.extend_from_slice(&echo);
        raw_request(node.addr, &raw)
    };
    let port = node.addr.port();
    // What a browser sends after evil.example was rebound to the node.
    let rebound = register(&format!("evil.example:{port}"));
    let message = rebound.error(403);
    assert!(message.contains("--public-host evil.example"), "{message}");
    assert_eq!(node.get("/handlers/echo").status, 404);
    // The node's own names: an address, localhost, a --public-host.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("node.example:{port}"),
    ] {
        let r = register(&host);
        assert_eq!(r.status, 201, "{host}: {}", r.text());
    }
    let listed: Value = node.get("/handlers").json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}
