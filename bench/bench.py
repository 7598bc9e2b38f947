#!/usr/bin/env python3
"""The benchmark behind `make bench`: wasmatic beside `wasmtime serve`.

Everything runs on loopback and stops by itself. Peer and ours are run in
ABBA order (peer first in odd rounds, ours first in even ones), with the same
component, mode, concurrency and duration, so that the ratios hold on a noisy
machine even when the absolute numbers drift; each pair's ratio is the median
of its rounds' ratios, with their min and max. Results go to
bench/results.json, BENCHMARKS.md and bench/ratios.svg.

`make bench-quick` (BENCH_QUICK=1) runs a, b and c for a few seconds a row and
prints the ratios, writing nothing: the before-and-after check for a change to
the request path.

Scenarios (see BENCHMARKS.md for what each one means):
  a  hello-world proxy: `wasmatic wasm` vs `wasmtime serve`, pooling on/off,
     reuse, and the peer with its extra wasm features switched off
  b  the operator's GET /health vs (a)'s peer, each side in the same mode
  c  POST /run/echo through the operator vs `wasmtime serve` of an echo proxy,
     each side in the same mode (fresh instances; reused instances)
  d  registering a ~2 MiB handler (mostly data), and the Python and
     JavaScript example handlers (12-18 MB, mostly code): first time, and the
     same bytes again
  e  node start with 50 and 200 registered handlers, and with the Python or
     the JavaScript handler: cold vs warm compiled cache
  f  cron: 1000 jobs every second for 30 s: lateness and missed ticks, with a
     fresh handler instance per run and with handler reuse
  g  peak RSS of the node in c and e
  h  chain RPC (eth_blockNumber against a local anvil): the time per call a
     guest sees through the node (a component, and a core-module job, each
     making RPC_CALLS calls in one run) beside the same call straight to anvil
  w  a three-step workflow (three `run` steps) beside the same three calls
     made one by one over HTTP
  p  a fleet sharing one PostgreSQL (bench/fleet.py): f's cron load on one
     node and on three, and how soon a registration reaches another node
  r  the node's RSS under hostile load (bench/hostile.py): stalled
     connections, large uploads, guests growing memory, spinning, printing,
     hoarding HTTP fields; and whether it kept answering meanwhile
"""

import http.client
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fleet
import hostile

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "target" / "bench-tools"
WASMATIC = ROOT / "target" / "release" / "wasmatic"
COMPONENTS = ROOT / "target" / "wasm32-wasip2" / "release"
HELLO = COMPONENTS / "hello_proxy.wasm"
ECHO = COMPONENTS / "echo.wasm"

QUICK = os.environ.get("BENCH_QUICK") == "1"
SECONDS = int(os.environ.get("BENCH_SECONDS", "2" if QUICK else "10"))  # per load run
# ABBA rounds, at least 3; an even count by default, so that each side goes
# first in as many rounds as the other (with 3, the peer goes first twice).
ROUNDS = max(3, int(os.environ.get("BENCH_ROUNDS", "4")))
CONNECTIONS, THREADS = 32, 2
CRON_JOBS = int(os.environ.get("BENCH_CRON_JOBS", "1000"))
CRON_SECONDS = int(os.environ.get("BENCH_CRON_SECONDS", "30"))
START_HANDLERS = 200
ANVIL = ROOT / "tools" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
CHAIN_ID = 31337
RPC_CALLS = 2000
BLOCK_NUMBER = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def wasmtime_version():
    lock = (ROOT / "Cargo.lock").read_text()
    m = re.search(r'name = "wasmtime"\nversion = "([^"]+)"', lock)
    if not m:
        sys.exit("cannot find the wasmtime version in Cargo.lock")
    return m.group(1)


def ensure_tools():
    """wrk from Debian's packages; wasmtime-cli of our wasmtime version."""
    if shutil.which("wrk") is None:
        log("installing wrk")
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
    version = wasmtime_version()
    wasmtime = TOOLS / "bin" / "wasmtime"
    have = subprocess.run([wasmtime, "--version"], capture_output=True, text=True).stdout if wasmtime.exists() else ""
    if version not in have:
        log(f"installing wasmtime-cli {version} (about 12 minutes, once)")
        subprocess.run(
            ["cargo", "install", "wasmtime-cli", "--version", version, "--locked", "--root", str(TOOLS)],
            check=True,
        )
    return wasmtime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"nothing listens on {port}")


def stat_cpu_seconds(stat):
    """User and system CPU time in a /proc `stat` file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process on a loopback port, stopped on exit."""

    def __init__(self, cmd, cwd=None, env=None, port=None):
        self.port = port or free_port()
        self.cmd = [str(c).replace("{port}", str(self.port)) for c in cmd]
        self.cwd, self.env = cwd, env

    def __enter__(self):
        env = dict(os.environ, RUST_LOG="warn", WASMATIC_PORT=str(self.port))
        env.update(self.env or {})
        self.log = tempfile.TemporaryFile()
        started = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(self.port, self.proc)
        self.start_seconds = time.monotonic() - started
        return self

    def peak_rss_mib(self):
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
        return kib / 1024

    def cpu_seconds(self):
        """User and system CPU time of the process so far."""
        return stat_cpu_seconds(Path(f"/proc/{self.proc.pid}/stat"))

    def runtime_cpu_seconds(self):
        """CPU time so far of the threads of the node's tokio runtime, where
        requests and scheduled runs are handled (the node names them all
        `runtime`); the rest is the node's own threads (the run-log writer, the
        epoch ticker, ...)."""
        total = 0.0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                if task.joinpath("comm").read_text().strip() == "runtime":
                    total += stat_cpu_seconds(task / "stat")
            except OSError:
                continue  # a thread that ended meanwhile
        return total

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def request(port, method, path, body=b"", timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path, body=body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def to_ms(text):
    value, unit = float(re.match(r"[\d.]+", text).group()), re.search(r"[a-z]+", text).group()
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port, path, post_body=None, seconds=SECONDS):
    """Load for `seconds`; returns req/s and latency percentiles (ms)."""
    cmd = ["wrk", "-t", str(THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if post_body is not None:
            script.write(f'wrk.method = "POST"\nwrk.body = "{post_body}"\n')
            script.flush()
            cmd += ["-s", script.name]
        out = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": to_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99_ms": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def measure(server, path, post_body=None):
    """A short warm-up, then the measured run."""
    wrk(server.port, path, post_body, seconds=1)
    return wrk(server.port, path, post_body)


def summary(runs):
    """Medians of the rounds, with each one's min and max."""
    out = {}
    for k in ("rps", "p50_ms", "p99_ms", "peak_rss_mib"):
        values = [r[k] for r in runs]
        out[k] = statistics.median(values)
        out[f"{k}_min"], out[f"{k}_max"] = min(values), max(values)
    return out | {"runs": runs}


def side_by_side(name, peer, ours):
    """Runs peer and ours ROUNDS times in ABBA order; each is (Server factory,
    path, body). The ratio is ours/peer per round; its median, min and max."""
    results = {"peer": [], "ours": []}
    for round_ in range(ROUNDS):
        order = (("peer", peer), ("ours", ours)) if round_ % 2 == 0 else (("ours", ours), ("peer", peer))
        for side, (factory, path, body) in order:
            with factory() as server:
                result = measure(server, path, body)
                result["peak_rss_mib"] = server.peak_rss_mib()
            log(f"{name} round {round_ + 1} {side}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, RSS {result['peak_rss_mib']:.0f} MiB")
            results[side].append(result)
    ratios = [o["rps"] / p["rps"] for p, o in zip(results["peer"], results["ours"])]
    return {
        "peer": summary(results["peer"]),
        "ours": summary(results["ours"]),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratios": ratios,
    }


def padded(component: bytes, payload: bytes) -> bytes:
    """The component with a custom section appended: same behavior, new digest."""
    name = b"wasmatic-bench"

    def leb(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    content = leb(len(name)) + name + payload
    return component + b"\x00" + leb(len(content)) + content


def node_dir():
    d = Path(tempfile.mkdtemp(prefix="wasmatic-bench-"))
    (d / "registered").mkdir()
    return d


def wasmatic_up(directory, *flags):
    return Server([WASMATIC, "up", *flags], cwd=directory)


def scenario_a(wasmtime):
    modes = {
        "pooling": ["-O", "pooling-allocator=y"],
        # The node's pooling defaults (engine.rs), given to both sides
        # explicitly: the decommit batch, and slots that keep what an
        # instance wrote resident where the kernel can scan for it.
        "pooling, the node's pooling defaults on both": ["-O", NODE_POOLING],
        "no pooling": ["-O", "pooling-allocator=n"],
        "reuse 128": ["--max-instance-reuse-count", "128"],
    }
    results = {}
    for mode, flags in modes.items():
        peer = (lambda f=flags: Server([wasmtime, "serve", "-S", "cli", *f, "--addr", "127.0.0.1:{port}", HELLO]), "/", None)
        ours = (lambda f=flags: Server([WASMATIC, "wasm", "-S", "cli", *f, "--addr", "127.0.0.1:{port}", HELLO]), "/", None)
        results[mode] = side_by_side(f"a/{mode}", peer, ours)
        if QUICK:
            break
    if not QUICK:
        # The peer is wasmtime-cli with its default features, which the
        # node's wasmtime is built without; its own flags switch off what
        # they can (the code for them stays in its binary).
        flags = ["-O", "pooling-allocator=y", "-W", PEER_TRIM]
        peer = (lambda: Server([wasmtime, "serve", "-S", "cli", *flags, "--addr", "127.0.0.1:{port}", HELLO]), "/", None)
        ours = (lambda: Server([WASMATIC, "wasm", "-S", "cli", "-O", "pooling-allocator=y", "--addr", "127.0.0.1:{port}", HELLO]), "/", None)
        results[f"pooling, peer with -W {PEER_TRIM}"] = side_by_side("a/trimmed peer", peer, ours)
    return results


# The peer's wasm features that the node's wasmtime does not build.
NODE_POOLING = (
    "pooling-allocator=y,pooling-decommit-batch-size=16,pooling-pagemap-scan=auto,"
    "pooling-memory-keep-resident=1048576,pooling-table-keep-resident=65536"
)
PEER_TRIM = "component-model-async=n,gc=n,threads=n,exceptions=n,function-references=n"


def scenario_b(wasmtime):
    peer = (lambda: Server([wasmtime, "serve", "-S", "cli", "--addr", "127.0.0.1:{port}", HELLO]), "/", None)
    results = {}
    for label, reuse in {"both fresh instances": "1", "both reuse 128": "128"}.items():
        d = node_dir()
        ours = (lambda r=reuse: wasmatic_up(d, "--max-instance-reuse-count", r), "/health", None)
        peer_mode = (
            lambda r=reuse: Server([wasmtime, "serve", "-S", "cli", "--max-instance-reuse-count", r, "--addr", "127.0.0.1:{port}", HELLO]),
            "/",
            None,
        )
        results[label] = side_by_side(f"b/{label}", peer_mode, ours)
        shutil.rmtree(d)
    return results


def scenario_c(wasmtime):
    d = node_dir()
    with wasmatic_up(d) as server:
        status, body = request(server.port, "POST", "/register?name=echo", ECHO.read_bytes())
        assert status == 201, body
        # The same handler, opted in to instance reuse at registration.
        status, body = request(server.port, "POST", "/register?name=echo-warm&reuse=128", ECHO.read_bytes())
        assert status == 201, body
    results = {}
    # Each row: what our node does, and the peer in the same mode (a fresh
    # instance per request, or reused ones).
    for label, flags, path, peer_reuse in [
        ("ours fresh operator + fresh handler; peer fresh", ["--max-instance-reuse-count", "1"], "/run/echo", "1"),
        ("ours operator reuse 128 (up's default) + fresh handler; peer reuse 128", [], "/run/echo", "128"),
        ("ours operator + handler reuse 128; peer reuse 128", [], "/run/echo-warm", "128"),
    ]:
        peer = (
            lambda r=peer_reuse: Server([wasmtime, "serve", "-S", "cli", "--max-instance-reuse-count", r, "--addr", "127.0.0.1:{port}", HELLO]),
            "/",
            "hello",
        )
        ours = (lambda f=flags: wasmatic_up(d, *f), path, "hello")
        results[label] = side_by_side(f"c/{label}", peer, ours)
    shutil.rmtree(d)
    return results


# Components whose size is code: a Rust handler built on three real
# parsers (examples/wat-check), and the Python and JavaScript handlers of
# `make python js`, each an interpreter with the handler's source.
BIG_COMPONENTS = [
    ("Rust handler, wat + wasmparser + wasmprinter (examples/wat-check)", COMPONENTS / "wat_check.wasm"),
    ("Python handler (componentize-py)", ROOT / "target" / "python" / "handler.wasm"),
    ("JavaScript handler (componentize-js)", ROOT / "target" / "js" / "handler.wasm"),
]


def code_bytes(wasm: bytes) -> int:
    """Bytes of function bodies (code sections) in a core module or in the
    core modules a component nests, however deep: what Cranelift compiles."""

    def leb(pos):
        n = shift = 0
        while True:
            byte = wasm[pos]
            n |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if byte < 0x80:
                return n, pos

    def walk(start, end):
        layer = wasm[start + 6]  # 0: core module, 1: component
        total, pos = 0, start + 8
        while pos < end:
            section = wasm[pos]
            size, pos = leb(pos + 1)
            if layer == 0 and section == 10:
                total += size
            elif layer == 1 and section in (1, 4):  # a nested core module or component
                total += walk(pos, pos + size)
            pos += size
        return total

    return walk(0, len(wasm))


def register_times(server, name, fresh_bytes, times_first, times_again):
    """Registers new bytes `times_first` times (each padded to a new digest)
    and the last of them `times_again` times more: medians in ms."""
    first, again = [], []
    for i in range(times_first):
        handler = fresh_bytes(i)
        started = time.perf_counter()
        status, body = request(server.port, "POST", f"/register?name={name}{i}", handler, timeout=300)
        first.append((time.perf_counter() - started) * 1000)
        assert status == 201, body
        for _ in range(times_again):
            started = time.perf_counter()
            status, body = request(server.port, "POST", f"/register?name={name}{i}", handler, timeout=300)
            again.append((time.perf_counter() - started) * 1000)
            assert status == 201, body
    return statistics.median(first), statistics.median(again)


def scenario_d():
    """Registering: new bytes (validate, compile, cache) and the same bytes
    again, for a 2 MiB component that is mostly a data section and for
    components whose size is code."""
    d = node_dir()
    echo = ECHO.read_bytes()
    rows = []
    with wasmatic_up(d) as server:
        first, again = register_times(server, "big", lambda i: padded(echo, os.urandom(2 * 1024 * 1024)), 5, 4)
        size = len(padded(echo, b"x" * 2 * 1024 * 1024))
        rows.append({"label": "echo padded with a 2 MiB data section", "size_bytes": size, "code_bytes": code_bytes(echo), "first_ms": first, "again_ms": again})
        for label, path in BIG_COMPONENTS:
            code = path.read_bytes()
            first, again = register_times(server, path.parent.name, lambda i: padded(code, os.urandom(16) + bytes([i])), 2, 4)
            rows.append({"label": label, "size_bytes": len(code), "code_bytes": code_bytes(code), "first_ms": first, "again_ms": again})
    shutil.rmtree(d)
    for row in rows:
        log(f"d: {row['label']} ({row['size_bytes']} bytes): first {row['first_ms']:.1f} ms, same bytes again {row['again_ms']:.1f} ms")
    return {"rows": rows}


def scenario_e():
    echo = ECHO.read_bytes()
    results = {}
    for count in (50, START_HANDLERS):
        d = node_dir()
        with wasmatic_up(d) as server:
            for i in range(count):
                status, body = request(server.port, "POST", f"/register?name=h{i}", padded(echo, f"handler {i}".encode()))
                assert status == 201, body
        # Cold: the compiled-code cache emptied.
        shutil.rmtree(d / ".wasmatic" / "compiled")
        with wasmatic_up(d) as cold:
            cold_s, cold_rss = cold.start_seconds, cold.peak_rss_mib()
            status, body = request(cold.port, "GET", "/handlers")
            assert status == 200 and len(json.loads(body)) == count, body
        with wasmatic_up(d) as warm:
            warm_s, warm_rss = warm.start_seconds, warm.peak_rss_mib()
            status, body = request(warm.port, "POST", f"/run/h{count - 1}", b"still here")
            assert (status, body) == (200, b"still here"), body
        shutil.rmtree(d)
        results[count] = {
            "cold_s": cold_s,
            "warm_s": warm_s,
            "speedup": cold_s / warm_s,
            "cold_peak_rss_mib": cold_rss,
            "warm_peak_rss_mib": warm_rss,
        }
        log(f"e/{count}: cold {cold_s:.2f} s, warm {warm_s:.3f} s ({cold_s / warm_s:.0f}x); peak RSS cold {cold_rss:.0f} MiB, warm {warm_rss:.0f} MiB")
    for label, path in BIG_COMPONENTS:
        d = node_dir()
        with wasmatic_up(d) as server:
            status, body = request(server.port, "POST", "/register?name=big", path.read_bytes(), timeout=300)
            assert status == 201, body
        shutil.rmtree(d / ".wasmatic" / "compiled")
        with wasmatic_up(d) as cold:
            cold_s, cold_rss = cold.start_seconds, cold.peak_rss_mib()
        with wasmatic_up(d) as warm:
            warm_s, warm_rss = warm.start_seconds, warm.peak_rss_mib()
        shutil.rmtree(d)
        results[label] = {
            "cold_s": cold_s,
            "warm_s": warm_s,
            "speedup": cold_s / warm_s,
            "cold_peak_rss_mib": cold_rss,
            "warm_peak_rss_mib": warm_rss,
        }
        log(f"e/{label}: cold {cold_s:.2f} s, warm {warm_s:.3f} s ({cold_s / warm_s:.0f}x)")
    return results


def scenario_f():
    results = {}
    for label, query in [("fresh handler instance", ""), ("handler reuse 128", "&reuse=128")]:
        results[label] = cron_run(label, query)
    return results


def cron_run(label, query):
    d = node_dir()
    with wasmatic_up(d, "--runs-kept", str(CRON_JOBS * (CRON_SECONDS + 10))) as server:
        status, body = request(server.port, "POST", f"/register?name=echo{query}", ECHO.read_bytes())
        assert status == 201, body
        job = json.dumps({"name": "echo", "cron": "* * * * * *", "input": "tick"}).encode()
        for _ in range(CRON_JOBS):
            status, body = request(server.port, "POST", "/sched", job)
            assert status == 201, body
        scheduled_at = time.time()
        cpu_before = server.cpu_seconds()
        runtime_before = server.runtime_cpu_seconds()
        time.sleep(CRON_SECONDS)
        cpu = server.cpu_seconds() - cpu_before
        runtime_cpu = server.runtime_cpu_seconds() - runtime_before
        ended_at = time.time()
        rss = server.peak_rss_mib()
    db = sqlite3.connect(d / ".wasmatic" / "state.db")
    jobs = dict(db.execute("SELECT id, created_at FROM jobs"))
    # Every whole second after all jobs exist and before the end, less the
    # last one (it may still be running when the node stops).
    first_tick = (int(max(jobs.values()) / 1000) + 1) * 1000
    last_tick = (int(ended_at) - 1) * 1000
    expected = {t for t in range(first_tick, last_tick + 1, 1000)}
    runs = db.execute(
        "SELECT job_id, scheduled_for, started_at, ok, error FROM runs WHERE job_id IS NOT NULL AND scheduled_for BETWEEN ? AND ?",
        (first_tick, last_tick),
    ).fetchall()
    db.close()
    shutil.rmtree(d)
    seen = {}
    lateness, skipped, failed = [], 0, 0
    first_of_tick = {}
    for job_id, scheduled_for, started_at, ok, error in runs:
        seen.setdefault(job_id, set()).add(scheduled_for)
        if ok:
            lateness.append(started_at - scheduled_for)
            first_of_tick[scheduled_for] = min(first_of_tick.get(scheduled_for, started_at), started_at)
        elif error and error.startswith("skipped"):
            skipped += 1
        else:
            failed += 1
    missed = sum(len(expected - seen.get(job_id, set())) for job_id in jobs)
    lateness.sort()
    result = {
        "jobs": len(jobs),
        "ticks_expected": len(expected) * len(jobs),
        "runs": len(runs),
        "missed": missed,
        "skipped": skipped,
        "failed": failed,
        "lateness_p50_ms": lateness[len(lateness) // 2],
        "lateness_p99_ms": lateness[int(len(lateness) * 0.99)],
        "lateness_max_ms": lateness[-1],
        "peak_rss_mib": rss,
        "seconds": ended_at - scheduled_at,
        # The node's CPU time (user and system, all threads) per tick due.
        "cpu_ms_per_run": cpu * 1000 / max(1, len(jobs) * CRON_SECONDS),
        # Of it, the tokio runtime's threads, where the runs themselves go.
        "runtime_cpu_ms_per_run": runtime_cpu * 1000 / max(1, len(jobs) * CRON_SECONDS),
        # How late the first run of a tick started (the scheduler's wake-up).
        "first_run_lateness_p50_ms": statistics.median(first_of_tick[t] - t for t in first_of_tick),
    }
    log(f"f/{label}: {result}")
    return result


def start_anvil():
    """anvil on a free loopback port, silent (it would log every call);
    (process, port)."""
    if not ANVIL.exists():
        sys.exit(f"{ANVIL} is missing: run `make tools`")
    port = free_port()
    proc = subprocess.Popen(
        [ANVIL, "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(CHAIN_ID), "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc, port


def wrk_post_latency_ms(port, body, seconds):
    """p50 of one connection posting `body` in a loop (wrk -c1)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(f"wrk.method = \"POST\"\nwrk.headers[\"content-type\"] = \"application/json\"\nwrk.body = {json.dumps(body)}\n")
        script.flush()
        out = subprocess.run(
            ["wrk", "-t", "1", "-c", "1", "-d", f"{seconds}s", "--latency", "-s", script.name, f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, check=True,
        ).stdout
    return to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))


def scenario_h():
    """Per call: through the node (mean of RPC_CALLS calls in one run, less
    the run without calls) beside straight to anvil (p50 of one connection)."""
    anvil, port = start_anvil()
    d = node_dir()
    flags = ["--rpc", f"{CHAIN_ID}=http://127.0.0.1:{port}", "--rpc-max-calls", str(RPC_CALLS)]
    query = COMPONENTS / "eth_query.wasm"
    job = ROOT / "target" / "wasm32-wasip1" / "release" / "rpc_job.wasm"
    rounds = {"direct_p50_ms": [], "component_ms": [], "core_import_ms": []}
    try:
        with wasmatic_up(d, *flags) as server:
            status, body = request(server.port, "POST", "/register?name=eth-query", query.read_bytes())
            assert status == 201, body
            job_b64 = __import__("base64").b64encode(job.read_bytes()).decode()

            def component(calls):
                ask = json.dumps({"chain_id": CHAIN_ID, "method": "eth_blockNumber", "params": [], "repeat": calls}).encode()
                started = time.perf_counter()
                status, body = request(server.port, "POST", "/run/eth-query", ask)
                assert status == 200 and b"result" in body, body
                return time.perf_counter() - started

            def core_import(calls):
                ask = {"jobId": "h", "wasmB64": job_b64, "timeoutMs": 30000, "input": {"chainId": CHAIN_ID, "method": "eth_blockNumber", "params": [], "repeat": calls}}
                started = time.perf_counter()
                status, body = request(server.port, "POST", "/wasm/run", json.dumps(ask).encode())
                assert status == 200 and json.loads(body)["ok"], body
                return time.perf_counter() - started

            # Compiled and connected before anything is timed.
            component(1)
            core_import(1)
            for round_ in range(ROUNDS):
                for way, call in (("component_ms", component), ("core_import_ms", core_import)):
                    one, many = call(1), call(RPC_CALLS)
                    rounds[way].append((many - one) / (RPC_CALLS - 1) * 1000)
                rounds["direct_p50_ms"].append(wrk_post_latency_ms(port, BLOCK_NUMBER, max(2, SECONDS // 2)))
                log(f"h round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rounds.items()))
    finally:
        anvil.terminate()
        anvil.wait()
        shutil.rmtree(d)
    result = {k: statistics.median(v) for k, v in rounds.items()} | {"rounds": rounds, "calls": RPC_CALLS}
    for way in ("component_ms", "core_import_ms"):
        result[way.replace("_ms", "_added_ms")] = result[way] - result["direct_p50_ms"]
    return result


WORKFLOW_ITERATIONS = 50 if QUICK else 300


def scenario_w():
    """A three-step workflow (three `run` steps of the echo handler, each
    step's input the previous step's output) beside the same three calls made
    one after another by the client over HTTP: the median time of one whole
    sequence, ABBA rounds."""
    d = node_dir()
    rounds = {"workflow_ms": [], "separate_ms": []}
    try:
        with wasmatic_up(d) as server:
            status, body = request(server.port, "POST", "/register?name=echo", (COMPONENTS / "echo.wasm").read_bytes())
            assert status == 201, body
            workflow = {"name": "three", "steps": [
                {"id": "a", "type": "run", "handler": "echo", "input": "{{ trigger.text }}"},
                {"id": "b", "type": "run", "handler": "echo", "input": "{{ steps.a.output }}"},
                {"id": "c", "type": "run", "handler": "echo", "input": "{{ steps.b.output }}"},
            ]}
            status, body = request(server.port, "POST", "/workflows", json.dumps(workflow).encode())
            assert status == 201, body

            def as_workflow():
                status, body = request(server.port, "POST", "/workflows/three/run", b'{"text": "hello"}')
                assert status == 200 and json.loads(body)["ok"], body

            def one_by_one():
                text = b"hello"
                for _ in range(3):
                    status, text = request(server.port, "POST", "/run/echo", text)
                    assert status == 200, text

            ways = (("workflow_ms", as_workflow), ("separate_ms", one_by_one))
            for _, call in ways:
                call()
            for round_ in range(ROUNDS):
                for key, call in ways if round_ % 2 == 0 else tuple(reversed(ways)):
                    times = []
                    for _ in range(WORKFLOW_ITERATIONS):
                        started = time.perf_counter()
                        call()
                        times.append((time.perf_counter() - started) * 1000)
                    rounds[key].append(statistics.median(times))
                log(f"w round {round_ + 1}: workflow {rounds['workflow_ms'][-1]:.2f} ms, one by one {rounds['separate_ms'][-1]:.2f} ms")
    finally:
        shutil.rmtree(d)
    ratios = [w / s for w, s in zip(rounds["workflow_ms"], rounds["separate_ms"])]
    return {k: statistics.median(v) for k, v in rounds.items()} | {
        "rounds": rounds,
        "iterations": WORKFLOW_ITERATIONS,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def machine():
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu.group(1) if cpu else platform.processor(),
        "kernel": platform.release(),
        "wasmatic": git,
    }


def main():
    wasmtime = ensure_tools()
    results = {
        "machine": machine(),
        "versions": {
            "wasmtime": subprocess.run([wasmtime, "--version"], capture_output=True, text=True).stdout.strip(),
            "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip(),
            "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
        },
        "settings": {"seconds": SECONDS, "rounds": ROUNDS, "connections": CONNECTIONS, "threads": THREADS},
        "command": "make bench",
    }
    # Some rows only (`bench/bench.py d e`): kept in target/bench-partial.json,
    # never written over the whole run's report.
    subset = bool(sys.argv[1:])
    only = set(sys.argv[1:]) or (set("abc") if QUICK else set("abcdefhwpr"))
    partial = ROOT / "target" / "bench-partial.json"
    for key, run in [
        ("a", lambda: scenario_a(wasmtime)),
        ("b", lambda: scenario_b(wasmtime)),
        ("c", lambda: scenario_c(wasmtime)),
        ("d", scenario_d),
        ("e", scenario_e),
        ("f", scenario_f),
        ("h", scenario_h),
        ("w", scenario_w),
        ("p", lambda: fleet.scenario_p(sys.modules[__name__])),
        ("r", lambda: hostile.scenario_r(sys.modules[__name__])),
    ]:
        if key in only:
            results[key] = run()
            # Kept as each row finishes, so that a failure later loses none.
            partial.write_text(json.dumps(results, indent=2) + "\n")
    if QUICK:
        for key in "abc":
            for mode, res in results.get(key, {}).items():
                print(f"{key}. {mode}: ours/peer {res['ratio']:.2f}x ({res['ratio_min']:.2f}-{res['ratio_max']:.2f})")
        return
    if subset:
        log(f"rows {' '.join(sorted(only))} only: kept in {partial}; BENCHMARKS.md is left as it is")
        return
    out = ROOT / "bench" / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {out}")
    subprocess.run([sys.executable, ROOT / "bench" / "report.py"], check=True)


if __name__ == "__main__":
    main()
