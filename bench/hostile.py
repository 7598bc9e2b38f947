"""Row r of `make bench`: the node's memory under hostile load.

Each case runs against a node of its own, with the node's default limits,
for CASE_SECONDS: an attacker on loopback keeps up the load while a probe
asks `GET /health` every PROBE_EVERY seconds. Reported: the node's peak RSS
(VmHWM) beside an idle node's, its RSS once the load stops, and what the
probe saw (answers, worst latency). Every connection and call is bounded in
count and time.
"""

import http.client
import socket
import threading
import time
from pathlib import Path

CASE_SECONDS = 6
PROBE_EVERY = 0.1
# Concurrent callers in the guest cases: the node's --max-concurrent-calls.
CALLERS = 32
STALLED_CONNECTIONS = 2000
UPLOADERS = 16
UPLOAD_BYTES = 60 << 20


def misbehave(bench):
    return bench.COMPONENTS / "misbehave.wasm"


def call(port, path, body, timeout=30):
    """One POST, its status (or None when the node closed or timed out)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def guests(input_text):
    """CALLERS clients calling the misbehaving handler with `input_text`
    again and again until `stop`."""

    def attack(port, stop):
        def caller():
            while not stop.is_set():
                call(port, "/run/misbehave", input_text.encode())

        threads = [threading.Thread(target=caller, daemon=True) for _ in range(CALLERS)]
        for t in threads:
            t.start()
        return threads

    return attack


def stalled_heads(port, stop):
    """Connections that send half a request head and never the rest."""
    held = []

    def opener():
        for _ in range(STALLED_CONNECTIONS):
            if stop.is_set():
                break
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(b"POST /register?name=x HTTP/1.1\r\nHost: node\r\n")
                held.append(s)
            except OSError:
                time.sleep(0.01)
        stop.wait()
        for s in held:
            s.close()

    t = threading.Thread(target=opener, daemon=True)
    t.start()
    return [t]


def large_uploads(port, stop):
    """UPLOADERS clients each sending bodies just under the node's request
    body limit (64 MiB), of bytes that are not wasm, as fast as loopback
    takes them."""
    body = b"\x00asm-not-really" * (UPLOAD_BYTES // 16)

    def uploader():
        while not stop.is_set():
            call(port, "/register?name=junk", body)

    threads = [threading.Thread(target=uploader, daemon=True) for _ in range(UPLOADERS)]
    for t in threads:
        t.start()
    return threads


CASES = [
    (f"{STALLED_CONNECTIONS} connections holding half a request head", stalled_heads),
    (f"{UPLOADERS} clients uploading {UPLOAD_BYTES >> 20} MiB bodies without end", large_uploads),
    (f"{CALLERS} calls at once of a guest growing its memory without end", guests("grow")),
    (f"{CALLERS} calls at once of a guest spinning until its timeout", guests("loop")),
    (f"{CALLERS} calls at once of a guest printing 8 MiB each", guests("print")),
    (f"{CALLERS} calls at once of a guest hoarding HTTP fields", guests("fields")),
]


def probe(port, stop, seen):
    """GET /health every PROBE_EVERY until `stop`: (status, seconds) each."""
    while not stop.is_set():
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/health")
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):
            status = None
        finally:
            conn.close()
        seen.append((status, time.monotonic() - started))
        stop.wait(PROBE_EVERY)


def rss_mib(pid, field):
    status = Path(f"/proc/{pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_case(bench, label, attack):
    d = bench.node_dir()
    with bench.wasmatic_up(d) as server:
        status, body = bench.request(server.port, "POST", "/register?name=misbehave", misbehave(bench).read_bytes())
        assert status == 201, body
        idle = rss_mib(server.proc.pid, "VmHWM")
        stop, seen = threading.Event(), []
        prober = threading.Thread(target=probe, args=(server.port, stop, seen), daemon=True)
        prober.start()
        threads = attack(server.port, stop)
        time.sleep(CASE_SECONDS)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        prober.join(timeout=10)
        peak = rss_mib(server.proc.pid, "VmHWM")
        time.sleep(1)
        after = rss_mib(server.proc.pid, "VmRSS")
        # The node still answers once the attacker is gone.
        status, _ = bench.request(server.port, "GET", "/health", None)
        alive = status == 200
    bench.shutil.rmtree(d)
    answered = sum(1 for s, _ in seen if s == 200)
    result = {
        "idle_rss_mib": idle,
        "peak_rss_mib": peak,
        "rss_after_mib": after,
        "probes": len(seen),
        "probes_ok": answered,
        "probe_max_ms": max((t for _, t in seen), default=0) * 1000,
        "serving_after": alive,
    }
    bench.log(f"r/{label}: {result}")
    return result


def scenario_r(bench):
    return {label: run_case(bench, label, attack) for label, attack in CASES}
