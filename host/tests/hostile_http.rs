//! Hostile HTTP clients against the serving edge: slow bodies, floods of
//! requests and connections, stalled heads, foreign web origins, and
//! start-up flags that would break the node. Each runs against the real
//! binary, with default flags unless the test is about a flag.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{
    component_bytes, operator_node, request, rss_bytes, try_request, up, wait_for, Heartbeat, Node,
};

/// How long the tests wait for a connection to be closed by the node.
const CLOSE_WAIT: Duration = Duration::from_secs(8);

fn register_echo(node: &Node) {
    let r = node.post("/register?name=echo", &component_bytes("echo.wasm"));
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A connection that has sent `head` (and maybe part of a body) and sends
/// nothing more.
fn stalled(addr: SocketAddr, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    stream.write_all(head.as_bytes()).expect("send head");
    stream
}

/// A `POST` whose declared body never comes.
fn body_never_sent(addr: SocketAddr) -> TcpStream {
    stalled(
        addr,
        &format!("POST /x HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 100\r\n\r\n"),
    )
}

/// Reads until the node closes the connection (or `CLOSE_WAIT` passes);
/// returns what arrived and whether it was closed.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(CLOSE_WAIT)).expect("timeout");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (raw, true),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after an early answer is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (raw, true),
            Err(_) => return (raw, false),
        }
    }
}

fn status_of(raw: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(raw)
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `wasmatic wasm` serving the custom operator (its `/sleep/MS` holds a
/// slot, its `/count` answers at once) with `max_in_flight` slots and
/// instances reused.
fn custom_operator_node(dir: &std::path::Path, max_in_flight: &str) -> Node {
    operator_node(
        dir,
        &[
            "--max-in-flight",
            max_in_flight,
            "--max-instance-reuse-count",
            "10",
        ],
    )
    .start()
}

fn health_within(node: &Node, bound: Duration) {
    let start = Instant::now();
    let r = node.get("/health");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        start.elapsed() < bound,
        "/health took {:?}",
        start.elapsed()
    );
}

/// The node's RSS must stay under this while 400 slow clients hold their
/// connections (it measured about 55 MiB with them on a debug build).
const SLOW_CLIENTS_RSS: u64 = 256 << 20;

#[test]
fn slow_request_bodies_hold_no_operator_instance() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    register_echo(&node);
    let heartbeat = Heartbeat::start(node.addr);
    let slow: Vec<TcpStream> = (0..400).map(|_| body_never_sent(node.addr)).collect();
    // Let the node accept and park all of them.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        health_within(&node, Duration::from_secs(1));
        let rss = rss_bytes(node.pid());
        assert!(rss < SLOW_CLIENTS_RSS, "node RSS {} MiB", rss >> 20);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, bad) = heartbeat.stop();
    assert!(ok > 0, "the echo handler never answered");
    assert!(bad.is_empty(), "heartbeat failures: {bad:?}");
    drop(slow);
    health_within(&node, Duration::from_secs(1));
}

#[test]
fn requests_past_the_in_flight_cap_get_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let node = custom_operator_node(dir.path(), "2");
    let addr = node.addr;
    // Two requests take both slots (a moment after they are sent) for 4 s;
    // nothing else is sent meanwhile, lest it take a slot first.
    let sleepers: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/sleep/4000", &[], b"")))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let busy = node.get("/count");
    busy.error(503);
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(busy.header("x-request-id").is_some());
    // A crowd meanwhile: refused, never a 500.
    let crowd: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/count", &[], b"").status))
        .collect();
    for status in crowd {
        assert_eq!(status.join().unwrap(), 503);
    }
    for sleeper in sleepers {
        assert_eq!(sleeper.join().unwrap().status, 200);
    }
    // The slots come back; idle instances keep theirs and are reused.
    let crowd: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/count", &[], b"").status))
        .collect();
    let statuses: Vec<u16> = crowd.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
}

#[test]
fn a_client_that_leaves_does_not_cut_the_operators_call_short() {
    let dir = tempfile::tempdir().unwrap();
    let node = custom_operator_node(dir.path(), "1");
    // The client asks for a 2 s answer and hangs up after 300 ms.
    let leaver = stalled(
        node.addr,
        &format!("GET /sleep/2000 HTTP/1.1\r\nhost: {}\r\n\r\n", node.addr),
    );
    std::thread::sleep(Duration::from_millis(300));
    leaver.shutdown(std::net::Shutdown::Both).expect("hang up");
    drop(leaver);
    // The call goes on, holding the only slot, until it ends.
    std::thread::sleep(Duration::from_millis(500));
    node.get("/count").error(503);
    // Then the slot comes back.
    wait_for(Duration::from_secs(10), "the slot to come back", || {
        (node.get("/count").status == 200).then_some(())
    });
}

#[test]
fn guests_cannot_take_the_operators_instance_slots() {
    let dir = tempfile::tempdir().unwrap();
    // One component instance for all guests together; the operator's slots
    // are its own engine's.
    let node = up(
        dir.path(),
        &[
            "-O",
            "pooling-total-component-instances=1",
            "--max-instance-reuse-count",
            "1",
            "--call-timeout",
            "4s",
        ],
    );
    let r = node.post(
        "/register?name=misbehave",
        &component_bytes("misbehave.wasm"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let addr = node.addr;
    // A guest that sleeps takes the guests' only slot (a moment after it is
    // sent) and holds it until its 4 s are up...
    let sleeper =
        std::thread::spawn(move || request(addr, "POST", "/run/misbehave", &[], b"sleep"));
    std::thread::sleep(Duration::from_millis(1500));
    // ...and the operator still answers.
    for _ in 0..5 {
        health_within(&node, Duration::from_secs(1));
    }
    let r = node.post("/run/misbehave", b"trap");
    assert!(
        r.status == 500 && !r.text().contains("unreachable"),
        "the guests' slot should be taken: {}",
        r.text()
    );
    assert!(!sleeper.is_finished(), "the sleeper ended early");
    assert_eq!(sleeper.join().unwrap().status, 504);
    let r = node.post("/run/misbehave", b"trap");
    assert!(r.text().contains("unreachable"), "{}", r.text());
}

#[test]
fn idle_guest_instances_give_back_their_slots_on_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &[
            "-O",
            "pooling-total-component-instances=1",
            "--idle-instance-timeout",
            "300ms",
        ],
    );
    let r = node.post(
        "/register?name=echo&reuse=100",
        &component_bytes("echo.wasm"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = node.post(
        "/register?name=misbehave",
        &component_bytes("misbehave.wasm"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Echo's instance stays idle, in the guests' only slot, until the reaper
    // drops it; no further call to echo is needed for that.
    assert_eq!(node.post("/run/echo", b"once").text(), "once");
    wait_for(Duration::from_secs(5), "the idle instance reaped", || {
        let r = node.post("/run/misbehave", b"trap");
        r.text().contains("unreachable").then_some(())
    });
}

#[test]
fn stalled_heads_and_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &[
            "--header-read-timeout",
            "1s",
            "--body-timeout",
            "1s",
            "--keep-alive-timeout",
            "60s",
        ],
    );
    let addr = node.addr;
    // A head that never ends, and a connection that never says anything.
    let mut partial = stalled(addr, &format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n"));
    let mut silent = stalled(addr, "");
    // A body that stops after 10 of its 100 bytes.
    let mut half = stalled(
        addr,
        &format!(
            "POST /run/echo HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 100\r\n\r\n0123456789"
        ),
    );

    let (_, closed) = read_until_closed(&mut partial);
    assert!(closed, "a stalled head keeps its connection");
    let (_, closed) = read_until_closed(&mut silent);
    assert!(closed, "a silent connection is kept");
    let (raw, closed) = read_until_closed(&mut half);
    assert!(closed, "a stalled body keeps its connection");
    assert_eq!(
        status_of(&raw),
        Some(408),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.contains("connection: close"), "{text}");
    assert!(
        text.contains(r#"{"error":"the request body stalled"#),
        "{text}"
    );
    // A head too large to buffer is refused, not held.
    let mut huge = stalled(
        addr,
        &format!(
            "GET /health HTTP/1.1\r\nhost: {addr}\r\nx-filler: {}\r\n\r\n",
            "a".repeat(100 << 10)
        ),
    );
    let (raw, closed) = read_until_closed(&mut huge);
    assert!(closed, "a huge head keeps its connection");
    assert_eq!(
        status_of(&raw),
        Some(431),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    health_within(&node, Duration::from_secs(1));
}

#[test]
fn connections_and_buffered_bodies_are_capped_and_idle_ones_closed() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(
        dir.path(),
        &[
            "--keep-alive-timeout",
            "1s",
            "--max-connections",
            "4",
            "--max-buffered-bodies",
            "1KiB",
            "--max-request-body",
            "1KiB",
        ],
    );
    let addr = node.addr;

    // Four connections busy sending bodies they never finish fill the cap
    // (first, while no earlier connection may still be closing).
    let held: Vec<TcpStream> = (0..4).map(|_| body_never_sent(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut excess = stalled(
        addr,
        &format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n"),
    );
    let (raw, closed) = read_until_closed(&mut excess);
    assert!(closed, "the excess connection is kept");
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(status_of(&raw), Some(503), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    assert!(node.log().contains("refusing connections: 4 are open"));
    drop(held);
    wait_for(Duration::from_secs(5), "room for a connection", || {
        try_request(addr, "GET", "/health", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });

    // Keep-alive: one answered request, then nothing; the node closes it
    // long before the 10 s header-read timeout would.
    let mut kept = stalled(
        addr,
        &format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n"),
    );
    let (raw, closed) = read_until_closed(&mut kept);
    assert_eq!(status_of(&raw), Some(200));
    assert!(closed, "an idle keep-alive connection is kept open");

    // Bodies are buffered within a node-wide budget: one client holds 600
    // bytes of its body; another's 600 would go past 1KiB.
    // (Retried while the connections of the cap test above are still
    // closing: a connection over the cap is answered at once.)
    let mut holding = wait_for(Duration::from_secs(5), "a connection", || {
        let mut stream = stalled(
            addr,
            &format!("POST /run/echo HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 1000\r\n\r\n"),
        );
        stream.write_all(&[b'a'; 600]).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let answered = stream.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
        (!answered).then_some(stream)
    });
    let over = wait_for(Duration::from_secs(5), "the first body buffered", || {
        let r = node.post("/run/echo", &[b'b'; 600]);
        (r.status == 503).then_some(r)
    });
    assert!(over.error(503).contains("buffering"), "{}", over.text());
    assert_eq!(over.header("retry-after"), Some("1"));
    // Once the first body is complete and answered, its bytes are free again.
    holding.write_all(&[b'a'; 400]).unwrap();
    let (raw, _) = read_until_closed(&mut holding);
    assert_eq!(
        status_of(&raw),
        Some(404),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    drop(holding);
    assert_ne!(node.post("/run/echo", &[b'b'; 600]).status, 503);
}

#[test]
fn half_sent_heads_filling_the_cap_do_not_lock_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &["--max-connections", "8"]);
    let addr = node.addr;
    // Twice the cap of connections that never finish their request head:
    // the later ones push out the earlier ones.
    let mut held: Vec<TcpStream> = (0..16)
        .map(|_| stalled(addr, "POST /register?name=x HTTP/1.1\r\nhost: node\r\n"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A client still gets in, long before the 10 s header-read timeout
    // would free a connection, every time it asks (retrying a 503, as its
    // `retry-after` says, while the cap is contended).
    for _ in 0..5 {
        let start = Instant::now();
        wait_for(
            Duration::from_secs(3),
            "/health past the stalled heads",
            || {
                try_request(addr, "GET", "/health", &[], b"")
                    .ok()
                    .filter(|r| r.status == 200)
            },
        );
        assert!(start.elapsed() < Duration::from_secs(3));
    }
    // Stalled connections were closed to make room, without an answer.
    let closed = held
        .iter_mut()
        .take(8)
        .filter_map(|s| {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            match s.read(&mut [0u8; 1]) {
                Ok(0) => Some(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(()),
                _ => None,
            }
        })
        .count();
    assert!(closed > 0, "no stalled connection was closed");
    // A connection between requests is not preferred over a stalled one:
    // a keep-alive client that has been answered keeps its connection
    // while stalled heads remain.
    let mut kept = stalled(
        addr,
        &format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n"),
    );
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    held.extend((0..4).map(|_| stalled(addr, "GET /x HTTP/1.1\r\n")));
    std::thread::sleep(Duration::from_millis(300));
    let mut rest = Vec::new();
    kept.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let _ = kept.read_to_end(&mut rest);
    kept.write_all(format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
}
