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
        f"| {label} | {peer['rps']:,.0f} | {peer['p50_ms']:.2f} / {peer['p99_ms']:.2f} "
        f"| {ours['rps']:,.0f} | {ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} | **{ratio:.2f}×** | {goal} |"
    )


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
        f"{s['rounds']} alternating rounds per pair (means shown); server and load generator share the cores",
        "",
    ]
    if any(k in r for k in "abc"):
        out += [
            "## Requests per second",
            "",
            "| scenario | peer req/s | peer p50 / p99 ms | ours req/s | ours p50 / p99 ms | ours / peer | target |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        targets = {"pooling": 1.0, "pooling, decommit batch 64 on both": 1.0, "reuse 128": 1.0}
        for mode, res in r.get("a", {}).items():
            out.append(load_row(f"a. hello proxy, {mode}: `wasmatic wasm` vs `wasmtime serve`", res, targets.get(mode)))
        for mode, res in r.get("b", {}).items():
            out.append(load_row(f"b. operator `GET /health` ({mode}) vs hello proxy", res, 0.95))
        for mode, res in r.get("c", {}).items():
            out.append(load_row(f"c. `POST /run/echo`, operator + handler ({mode}) vs echo proxy", res, 0.7))
        out.append("")
    if "d" in r:
        d = r["d"]
        out += [
            "## Registering a handler",
            "",
            f"d. A {d['size_bytes'] / 2**20:.1f} MiB handler component: first registration "
            f"**{d['first_ms']:.1f} ms** (validate, compile, cache); the same bytes again "
            f"**{d['again_ms']:.1f} ms** (no recompile; target < 5 ms — {verdict(d['again_ms'] < 5)}). Medians.",
            "",
        ]
    if "e" in r:
        out += [
            "## Node start",
            "",
            "e. Time from process start until the node accepts connections, with every handler in",
            "`registered/` loaded; cold: empty compiled cache, warm: the cache of the cold start.",
            "",
            "| handlers | cold | warm | warm speed-up | peak RSS cold | peak RSS warm |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for count, e in r["e"].items():
            out.append(
                f"| {count} | {e['cold_s']:.2f} s | {e['warm_s']:.3f} s | **{e['speedup']:.0f}×** "
                f"| {e['cold_peak_rss_mib']:.0f} MiB | {e['warm_peak_rss_mib']:.0f} MiB |"
            )
        big = r["e"][max(r["e"], key=int)]
        out += ["", f"Target: warm ≥ 20× faster than cold — {verdict(big['speedup'] >= 20)}.", ""]
    if "f" in r:
        any_f = next(iter(r["f"].values()))
        out += [
            "## Cron",
            "",
            f"f. {any_f['jobs']} jobs every second for {any_f['seconds']:.0f} s, each running the echo handler.",
            "Lateness is each run's start against its tick; a skipped tick is one that came while the job's",
            "previous run was still going. Target: p99 < 20 ms and no missed tick.",
            "",
            "| handler | runs / ticks due | missed | skipped | failed | p50 | p99 | max | target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for mode, f in r["f"].items():
            ok = f["lateness_p99_ms"] < 20 and f["missed"] == 0
            out.append(
                f"| {mode} | {f['runs']:,} / {f['ticks_expected']:,} | **{f['missed']}** | {f['skipped']} | {f['failed']} "
                f"| {f['lateness_p50_ms']} ms | **{f['lateness_p99_ms']} ms** | {f['lateness_max_ms']} ms | {verdict(ok)} |"
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
