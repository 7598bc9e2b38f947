#!/usr/bin/env python3
"""Writes BENCHMARKS.md from bench/results.json (see bench/bench.py)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def verdict(ok):
    return "met" if ok else "**missed**"


def load_row(label, r, target=None):
    peer, ours = r["peer"], r["ours"]
    ratio = r["ratio"]
    goal = f"≥ {target:.2f}× — {verdict(ratio >= target)}" if target else ""
    return (
        f"| {label} | {peer['rps']:,.0f} | {peer['p50_ms']:.2f} / {peer['p99_ms']:.2f} | {peer['peak_rss_mib']:.0f} "
        f"| {ours['rps']:,.0f} | {ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} | {ours['peak_rss_mib']:.0f} "
        f"| **{ratio:.2f}×** ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | {goal} |"
    )


def load_rows(r):
    """(label, result, target, short label) of every load row, in report order."""
    rows = []
    targets = {"pooling": 1.0, "reuse 128": 1.0}
    for mode, res in r.get("a", {}).items():
        rows.append((f"a. hello proxy, {mode}: `wasmatic wasm` vs `wasmtime serve`", res, targets.get(mode), f"a. hello, {mode}"))
    for mode, res in r.get("b", {}).items():
        rows.append((f"b. operator `GET /health` vs hello proxy, {mode}", res, 0.95, f"b. /health, {mode}"))
    for mode, res in r.get("c", {}).items():
        # The target holds where both sides are in the same mode.
        target = None if "fresh handler; peer reuse" in mode else 0.7
        rows.append((f"c. `POST /run/echo` (operator + handler) vs echo proxy: {mode}", res, target, f"c. /run/echo, {mode}"))
    return rows


def chart(rows):
    """An SVG of each row's median ratio with its min–max, and 1× marked."""
    bar, gap, left, width = 18, 8, 440, 340
    top = 30
    height = top + len(rows) * (bar + gap) + 30
    most = max([2.0] + [res["ratio_max"] for _, res, _, _ in rows])
    x = lambda v: left + v / most * width
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="12">ours / peer (req/s): median of the rounds, line from min to max</text>',
    ]
    for i, (_, res, target, short) in enumerate(rows):
        y = top + i * (bar + gap)
        short = short if len(short) <= 75 else short[:72] + "…"
        colour = "#3b7dd8" if target is None or res["ratio"] >= target else "#d8563b"
        parts += [
            f'<text x="{left - 6}" y="{y + bar - 5}" text-anchor="end">{escape(short)}</text>',
            f'<rect x="{left}" y="{y}" width="{x(res["ratio"]) - left:.1f}" height="{bar}" fill="{colour}"/>',
            f'<line x1="{x(res["ratio_min"]):.1f}" x2="{x(res["ratio_max"]):.1f}" y1="{y + bar / 2}" y2="{y + bar / 2}" stroke="black" stroke-width="2"/>',
            f'<text x="{x(res["ratio_max"]) + 4:.1f}" y="{y + bar - 5}">{res["ratio"]:.2f}×</text>',
        ]
        if target:
            parts.append(f'<line x1="{x(target):.1f}" x2="{x(target):.1f}" y1="{y}" y2="{y + bar}" stroke="black" stroke-dasharray="2,2"/>')
    one = x(1.0)
    parts += [
        f'<line x1="{one:.1f}" x2="{one:.1f}" y1="{top - 4}" y2="{height - 24}" stroke="#555"/>',
        f'<text x="{one:.1f}" y="{height - 10}" text-anchor="middle">1× (as fast as the peer)</text>',
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    r = json.loads((ROOT / "bench" / "results.json").read_text())
    m, v, s = r["machine"], r["versions"], r["settings"]
    out = [
        "# Benchmarks",
        "",
        "wasmatic beside `wasmtime serve`, both on the same machine in one run,",
        "alternating peer and ours with the same component, concurrency and",
        "duration. Ratios are what to quote: absolute numbers drift on shared",
        "machines (about ±10% between runs here).",
        "",
        f"- command: `{r['command']}` (raw numbers: [bench/results.json](bench/results.json))",
        f"- machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}",
        f"- versions: wasmatic {m['wasmatic']}, {v['wasmtime']}, {v['rustc']}, {v['wrk']}",
        f"- load: wrk, {s['threads']} threads, {s['connections']} connections, {s['seconds']} s per run after a 1 s warm-up, "
        f"{s['rounds']} rounds per pair in ABBA order; each number is the median of the rounds, each ratio the median of the "
        f"rounds' ratios with (min–max); server and load generator share the cores",
        "- the peer is `wasmtime serve` of wasmtime-cli with its default features (component-model-async, GC, threads, …); "
        "the node's wasmtime is built with fewer. Row a's \"peer with -W …\" switches off what the peer's flags can; "
        "the rest of its build stays.",
        "",
    ]
    if any(k in r for k in "abc"):
        out += [
            "## Requests per second",
            "",
            "| scenario | peer req/s | peer p50 / p99 ms | peer RSS MiB | ours req/s | ours p50 / p99 ms | ours RSS MiB | ours / peer (min–max) | target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        rows = load_rows(r)
        out += [load_row(label, res, target) for label, res, target, _ in rows]
        (ROOT / "bench" / "ratios.svg").write_text(chart(rows))
        out += ["", "![ours / peer per row, median with min–max](bench/ratios.svg)", ""]
    if "d" in r:
        out += [
            "## Registering a handler",
            "",
            "d. `POST /register` of new bytes (validate, compile, keep) and of the same bytes again (found",
            "compiled by digest). Medians. Target for the same bytes again: < 5 ms.",
            "",
            "Code is the bytes of function bodies in the component's core modules: what is compiled.",
            "",
            "| component | size | code | new bytes | same bytes again | target |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for row in r["d"]["rows"]:
            code = row.get("code_bytes")
            code = f"{code / 2**20:.2f} MiB" if code is not None else "—"
            out.append(
                f"| {row['label']} | {row['size_bytes'] / 2**20:.1f} MiB | {code} | {row['first_ms']:.1f} ms "
                f"| **{row['again_ms']:.1f} ms** | {verdict(row['again_ms'] < 5)} |"
            )
        out.append("")
    if "e" in r:
        out += [
            "## Node start",
            "",
            "e. Time from process start until the node accepts connections, with every registered handler",
            "loaded from the node's state; cold: empty compiled cache, warm: the cache of the cold start.",
            "",
            "| handlers | cold | warm | warm speed-up | peak RSS cold | peak RSS warm |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for count, e in r["e"].items():
            count = count if count.isdigit() else f"1: {count}"
            out.append(
                f"| {count} | {e['cold_s']:.2f} s | {e['warm_s']:.3f} s | **{e['speedup']:.0f}×** "
                f"| {e['cold_peak_rss_mib']:.0f} MiB | {e['warm_peak_rss_mib']:.0f} MiB |"
            )
        big = r["e"][max((k for k in r["e"] if k.isdigit()), key=int)]
        out += ["", f"Target: warm ≥ 20× faster than cold — {verdict(big['speedup'] >= 20)}.", ""]
    if "f" in r:
        any_f = next(iter(r["f"].values()))
        cores = r["machine"]["nproc"]
        out += [
            "## Cron",
            "",
            f"f. {any_f['jobs']} jobs every second for {any_f['seconds']:.0f} s, each running the echo handler.",
            "Lateness is each run's start against its tick; a skipped tick is one that came while the job's",
            "previous run was still going. Node CPU per run is the node's CPU time (all threads, user and",
            "system) over the run, divided by the ticks due; of it, the runtime's threads are where the runs",
            "themselves go (the rest is mostly the run log's writer, which commits a burst after it ends).",
            "Every run of a tick is due at the same moment, so the last can start only once the others' share",
            f"of the runtime's CPU has passed: the burst is runtime CPU per run × {any_f['jobs']}, which {cores} cores",
            "divide at best. First run late is the median over the ticks of how late each one's first run",
            "started: the scheduler's own wake-up. Target: p99 < 20 ms and no missed tick.",
            "",
            f"| handler | runs / ticks due | missed | skipped | failed | p50 | p99 | max | first run late | node CPU per run | of it, runtime | the burst: on 1 core / on {cores} | target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for mode, f in r["f"].items():
            ok = f["lateness_p99_ms"] < 20 and f["missed"] == 0
            cpu = f"{f['cpu_ms_per_run'] * 1000:.0f} µs" if "cpu_ms_per_run" in f else "–"
            runtime, burst, first = "–", "–", "–"
            if "runtime_cpu_ms_per_run" in f:
                per_run = f["runtime_cpu_ms_per_run"]
                runtime = f"{per_run * 1000:.0f} µs"
                burst = f"{per_run * f['jobs']:.0f} / {per_run * f['jobs'] / cores:.0f} ms"
            if "first_run_lateness_p50_ms" in f:
                first = f"{f['first_run_lateness_p50_ms']:.0f} ms"
            out.append(
                f"| {mode} | {f['runs']:,} / {f['ticks_expected']:,} | **{f['missed']}** | {f['skipped']} | {f['failed']} "
                f"| {f['lateness_p50_ms']} ms | **{f['lateness_p99_ms']} ms** | {f['lateness_max_ms']} ms | {first} | {cpu} | {runtime} | {burst} | {verdict(ok)} |"
            )
        out.append("")
    if "h" in r:
        h = r["h"]
        out += [
            "## Chain RPC",
            "",
            f"h. `eth_blockNumber` against a local anvil. Straight to anvil: p50 of one connection (wrk -c1). Through",
            f"the node: the time per call a guest sees, from runs of {h['calls']} calls less a run of one (a mean).",
            "Target: the node adds at most 0.2 ms.",
            "",
            "| way in | per call | straight to anvil (p50) | the node adds | target |",
            "|---|---:|---:|---:|---|",
        ]
        for way, label in (("component", "component (`wasmatic:eth/rpc`)"), ("core_import", "core-module job (`wasmatic:eth.call`)")):
            added = h[f"{way}_added_ms"]
            out.append(
                f"| {label} | {h[f'{way}_ms']:.3f} ms | {h['direct_p50_ms']:.3f} ms | **{added:.3f} ms** | {verdict(added <= 0.2)} |"
            )
        out += [
            "",
            "A negative figure means the node's time per call is below wrk's own p50, which includes wrk's HTTP",
            "and Lua work: what the node adds is below what the measurement resolves.",
            "",
            "A job of the file protocol is not in the table: it polls its response file, so each call waits for",
            "the job's own sleep and the node's 2 ms check, by design of that protocol.",
            "",
        ]
    if "p" in r:
        p = r["p"]
        out += [
            "## A fleet",
            "",
            f"p. {p['1 node']['jobs']} schedules every second for {p['1 node']['seconds']:.0f} s against one PostgreSQL",
            "(started by the bench on loopback, same machine), on one node and on three nodes (all on the same",
            "2 cores): each tick is claimed by one node. Doubles are ticks run twice; lost are runs of a node",
            "that stopped (none stop here).",
            "",
            "| nodes | tick records/s (run or skipped) | missed | doubles | skipped | lost | lateness p50 | p99 | peak RSS, largest node |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in ("1 node", "3 nodes"):
            f = p[key]
            p50 = "–" if f["lateness_p50_ms"] is None else f"{f['lateness_p50_ms']} ms"
            p99 = "–" if f["lateness_p99_ms"] is None else f"{f['lateness_p99_ms']} ms"
            out.append(
                f"| {f['nodes']} | {f['runs_per_second']:.0f} | {f['missed']} | **{f['doubles']}** | {f['skipped']} | {f['lost']} "
                f"| {p50} | {p99} | {f['peak_rss_mib']:.0f} MiB |"
            )
        g = p["propagation"]
        out += [
            "",
            f"Registration propagation: a component registered on node 1 is served by node 2 after **{g['p50_ms']:.0f} ms**",
            f"(median of {g['samples']}; {g['min_ms']:.0f}–{g['max_ms']:.0f} ms), measured from the `201` to node 2's first `200`.",
            "",
        ]
    if "w" in r:
        w = r["w"]
        out += [
            "## Workflows",
            "",
            "w. A workflow of three `run` steps of the echo handler (each step's input the previous output,",
            "through templates) beside the same three `POST /run/echo` made one after another by the client,",
            f"each on a new connection: the median time of one whole sequence over {w['iterations']} of each, per round.",
            "A workflow run is also recorded, with its steps, in the node's state (written when it starts and when",
            "it ends).",
            "",
            "| workflow | three calls one by one | workflow / one by one (min–max) |",
            "|---:|---:|---:|",
            f"| {w['workflow_ms']:.2f} ms | {w['separate_ms']:.2f} ms | **{w['ratio']:.2f}×** ({w['ratio_min']:.2f}–{w['ratio_max']:.2f}) |",
            "",
        ]
    if "r" in r:
        out += [
            "## Under attack",
            "",
            "r. The node's memory under hostile load from loopback, each case on a node of its own with the",
            "default limits, for a few seconds, while a probe asks `GET /health` every 0.1 s: peak RSS",
            "(VmHWM) beside the same node idle, RSS a second after the load stops, and what the probe saw.",
            "",
            "| case | idle RSS | peak RSS | RSS after | /health answered | slowest /health | serving after |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for case, c in r["r"].items():
            out.append(
                f"| {case} | {c['idle_rss_mib']:.0f} MiB | **{c['peak_rss_mib']:.0f} MiB** | {c['rss_after_mib']:.0f} MiB "
                f"| {c['probes_ok']} / {c['probes']} | {c['probe_max_ms']:.0f} ms | {'yes' if c['serving_after'] else '**no**'} |"
            )
        out.append("")
    rss = []
    for mode, res in r.get("c", {}).items():
        rss.append(f"c ({mode}): {res['ours']['runs'][-1]['peak_rss_mib']:.0f} MiB")
    if "e" in r:
        for count, e in r["e"].items():
            rss.append(f"e, {count} handlers warm: {e['warm_peak_rss_mib']:.0f} MiB")
    for mode, f in r.get("f", {}).items():
        rss.append(f"f ({mode}): {f['peak_rss_mib']:.0f} MiB")
    if rss:
        out += ["## Memory", "", "g. Peak RSS of the node: " + "; ".join(rss) + ".", ""]
    notes = ROOT / "bench" / "notes.md"
    if notes.exists():
        out += [notes.read_text()]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(out))


if __name__ == "__main__":
    main()
