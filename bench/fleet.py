"""Row p of `make bench`: a fleet of nodes sharing one PostgreSQL.

CRON_JOBS schedules every second for CRON_SECONDS on one node, then on three
nodes, against a PostgreSQL started here on a loopback port (Debian's
`initdb`/`pg_ctl`, as the `postgres` user when run as root): runs per second,
lateness p50/p99, missed ticks and ticks run twice (there must be none).
Then the time a registration on one node takes to be served by another.
"""

import glob
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

PROPAGATION_SAMPLES = 20


class Postgres:
    """A throwaway PostgreSQL cluster on a free loopback port."""

    def __init__(self, free_port):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed: run `make postgres`")
        self.bin = Path(bins[-1])
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wasmatic-bench-pg-"))
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def run(self, *cmd):
        subprocess.run([*self.as_postgres, *map(str, cmd)], check=True, stdout=subprocess.DEVNULL)

    def __enter__(self):
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self.run(self.bin / "initdb", "-A", "trust", "-U", "postgres", "-D", data)
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self.run(self.bin / "pg_ctl", "-D", data, "-o", options, "-l", self.dir / "log", "-w", "start")
        return self

    def database(self, name):
        self.run(self.bin / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", name)
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def query(self, db, sql):
        out = subprocess.run(
            [self.bin / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-At", "-F", "\t", "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def __exit__(self, *exc):
        self.run(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def scenario_p(b):
    """`b` is the bench module: its servers, requests and settings."""
    results = {}
    with Postgres(b.free_port) as pg:
        for nodes in [int(n) for n in os.environ.get("BENCH_FLEET_NODES", "1 3").split()]:
            results[f"{nodes} node{'s' if nodes > 1 else ''}"] = cron_fleet(b, pg, nodes)
        results["propagation"] = propagation(b, pg)
    return results


def start_nodes(b, url, count, *flags):
    servers = []
    for _ in range(count):
        server = b.wasmatic_up(b.node_dir(), "--state", url, *flags)
        server.__enter__()
        servers.append(server)
    return servers


def stop_nodes(servers):
    for server in servers:
        server.__exit__(None, None, None)
        shutil.rmtree(server.cwd, ignore_errors=True)


def cron_fleet(b, pg, count):
    db = f"cron{count}"
    url = pg.database(db)
    servers = start_nodes(b, url, count, "--runs-kept", str(b.CRON_JOBS * (b.CRON_SECONDS + 10)))
    try:
        first = servers[0]
        status, body = b.request(first.port, "POST", "/register?name=echo", b.ECHO.read_bytes())
        assert status == 201, body
        for server in servers:
            wait_for(lambda: b.request(server.port, "GET", "/handlers/echo")[0] == 200, "echo on every node")
        job = b.json.dumps({"name": "echo", "cron": "* * * * * *", "input": "tick"}).encode()
        for i in range(b.CRON_JOBS):
            status, body = b.request(servers[i % count].port, "POST", "/sched", job)
            assert status == 201, body
        scheduled_at = time.time()
        time.sleep(b.CRON_SECONDS)
        ended_at = time.time()
        # Runs late past the end are still counted: their records land before
        # the nodes stop.
        time.sleep(3)
        rss = [s.peak_rss_mib() for s in servers]
    finally:
        stop_nodes(servers)
    jobs = dict((j, int(c)) for j, c in pg.query(db, "SELECT id, created_at FROM jobs"))
    # Every whole second after all jobs exist and the nodes caught up, before
    # the end, less the last one (it may still be running when they stop).
    first_tick = (int(max(jobs.values()) / 1000) + 2) * 1000
    last_tick = (int(ended_at) - 1) * 1000
    expected = set(range(first_tick, last_tick + 1, 1000))
    runs = pg.query(
        db,
        "SELECT job_id, scheduled_for, started_at, ok, coalesce(error, '') FROM runs "
        f"WHERE job_id IS NOT NULL AND scheduled_for BETWEEN {first_tick} AND {last_tick}",
    )
    seen, doubles, lateness, skipped, lost, failed, why = {}, 0, [], 0, 0, 0, set()
    for job_id, scheduled_for, started_at, ok, error in runs:
        if error.startswith("\\x"):  # psql shows BYTEA as hex
            error = bytes.fromhex(error[2:]).decode(errors="replace")
        ticks = seen.setdefault(job_id, set())
        if int(scheduled_for) in ticks:
            doubles += 1
        ticks.add(int(scheduled_for))
        if ok == "t":
            lateness.append(int(started_at) - int(scheduled_for))
        elif error.startswith("skipped"):
            skipped += 1
        elif error.startswith("lost"):
            lost += 1
        else:
            failed += 1
            why.add(error[:160])
    missed = sum(len(expected - seen.get(j, set())) for j in jobs)
    # Where in the window the missed ticks lie: a tick that starts more than
    # the 3 s of grace late is missed at the end of the window, not lost.
    missed_in_last_4s = sum(
        1 for j in jobs for t in expected - seen.get(j, set()) if t > last_tick - 4000
    )

    lateness.sort()
    result = {
        "nodes": count,
        "jobs": len(jobs),
        "ticks_expected": len(expected) * len(jobs),
        "runs": len(runs),
        "runs_per_second": len(runs) / max(1, len(expected)),
        "missed": missed,
        "missed_in_last_4s": missed_in_last_4s,
        "doubles": doubles,
        "skipped": skipped,
        "lost": lost,
        "failed": failed,
        "failed_why": sorted(why)[:5],
        "lateness_p50_ms": lateness[len(lateness) // 2] if lateness else None,
        "lateness_p99_ms": lateness[int(len(lateness) * 0.99)] if lateness else None,
        "peak_rss_mib": max(rss),
        "seconds": ended_at - scheduled_at,
    }
    b.log(f"p/{count} nodes: {result}")
    return result


def wait_for(check, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def propagation(b, pg):
    """Register on node 1; time until node 2 runs it (polled every 2 ms)."""
    url = pg.database("propagation")
    servers = start_nodes(b, url, 2)
    times = []
    try:
        one, two = servers
        for i in range(PROPAGATION_SAMPLES):
            name = f"echo{i}"
            started = time.monotonic()
            status, body = b.request(one.port, "POST", f"/register?name={name}", b.ECHO.read_bytes())
            assert status == 201, body
            registered = time.monotonic()
            while b.request(two.port, "POST", f"/run/{name}", b"x")[0] != 200:
                if time.monotonic() - started > 30:
                    raise RuntimeError(f"{name} never reached node 2")
                time.sleep(0.002)
            times.append((time.monotonic() - registered) * 1000)
    finally:
        stop_nodes(servers)
    times.sort()
    result = {
        "samples": len(times),
        "p50_ms": statistics.median(times),
        "max_ms": times[-1],
        "min_ms": times[0],
    }
    b.log(f"p/propagation: {result}")
    return result
