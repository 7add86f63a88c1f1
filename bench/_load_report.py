"""bench/bench_load.py's report: percentiles, the summary of one run and its Markdown."""

from __future__ import annotations

import math
import statistics
import sys

from bench._load_clients import FIRST_MAX_POINTS, LIVE_MAX_POINTS, RUN_EVERY

GOAL_P95_MS = 200.0


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]): an observed latency, never interpolated."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def summarise(load: dict) -> dict:
    samples = load["samples"]
    kinds = ["all"] + sorted({s[0] for s in samples})
    table = {}
    for kind in kinds:
        rows = [s for s in samples if kind == "all" or s[0] == kind]
        lat = [1e3 * s[2] for s in rows]
        bad = sum(1 for s in rows if not 200 <= s[3] < 300)
        table[kind] = {
            "count": len(rows), "errors": bad,
            "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")),
            "mean_kb": statistics.fmean(s[4] for s in rows) / 1024 if rows else 0.0,
            "mean_points": statistics.fmean(s[5] for s in rows) if rows else 0.0,
        }
    # Stability over the run: p95 per 10 s window of start times.
    windows = []
    span = max(10.0, load["wall_s"])
    for w0 in range(0, int(math.ceil(span / 10)) * 10, 10):
        lat = [1e3 * s[2] for s in samples if w0 <= s[1] < w0 + 10]
        if lat:
            windows.append((w0, len(lat), pct(lat, 95)))
    lags = [1e3 * x for x in load["lags"]]
    return {
        "table": table, "windows": windows,
        "errors": len(load["errors"]), "error_examples": load["errors"][:5],
        "throughput_rps": len(samples) / load["wall_s"],
        "throughput_kbps": sum(s[4] for s in samples) / 1024 / load["wall_s"],
        "points_per_s": sum(s[5] for s in samples) / load["wall_s"],
        "baseline": {k: (pct([1e3 * x for x in v], 50), pct([1e3 * x for x in v], 95), len(v))
                     for k, v in load["baseline"].items()},
        "late_polls": len(load["late"]), "skipped": load["skipped"],
        "scheduled": load["scheduled"],
        "lag_p99_ms": pct(lags, 99), "lag_max_ms": max(lags, default=float("nan")),
    }


def report(args, info: dict, s: dict) -> str:
    t = s["table"]
    met = t["all"]["p95"] < GOAL_P95_MS and s["errors"] == 0 and t["all"]["errors"] == 0
    verdict = "met" if met else "**MISSED**"
    v = info["versions"]
    cpu = info["cpu"]
    w = info["writers"]
    steps_s = sum(x["steps"] for x in w) / max(x["seconds"] for x in w)
    points_s = sum(x["points"] for x in w) / max(x["seconds"] for x in w)
    lines = [
        f"## {info['date']} - load: {args.clients} clients polling metrics while 2 runs write "
        f"({'quick' if args.quick else 'full'})", "",
        f"- machine: {info['cpu_model']}, {info['cpus']} cores usable, {info['ram_gib']:.1f} GiB "
        f"RAM; load average at start {info['load_start']}, at the end {info['load_end']}; "
        f"during the measured {info['measured_s']:.0f} s the machine's CPUs were "
        f"{cpu['machine_busy']:.0%} busy (of {info['cpus']} cores), CPU pressure "
        f"{cpu['pressure']} (share of time some task waited for a CPU)",
        f"- CPU used, in cores: server {cpu['server']:.2f}, writers {cpu['writers']:.2f}, load "
        f"generator {cpu['loadgen']:.2f}, everything else (PostgreSQL, other jobs on the "
        f"machine) {cpu['other']:.2f}",
        f"- python {v['python']}, fastapi {v['fastapi']}, uvicorn {v['uvicorn']}, SQLAlchemy "
        f"{v['sqlalchemy']}, psycopg {v['psycopg']}, httpx {v['httpx']}, {v['postgresql']} "
        f"on 127.0.0.1; git {info['git']}",
        "- server: `python -m landscope.cli api --no-dashboard` (one uvicorn process, access log "
        "off as LANDSCOPE_ACCESS_LOG's default, the default connection pool and timeouts) on a "
        "fresh, migrated PostgreSQL database",
        f"- writers: 2 processes, one per running run, each through worker/sql_sink.SqlSink "
        f"(flush every 1 s or 20,000 rows) and worker/heartbeat.RunLease (every 0.5 s), every "
        f"key the engine writes on the `tests/support/synthetic.py` schedule plus its eta records "
        f"and histograms; target {args.rate:,.0f} steps/s per run, achieved {steps_s:,.0f} steps/s "
        f"in total ({points_s:,.0f} scalar points/s; the furthest a writer fell behind its "
        f"schedule: {max(x['max_behind_s'] for x in w):.2f} s); {args.history:,} steps of "
        f"history per run before the clients start",
        f"- load: {args.clients} clients (asyncio + httpx in their own process, one keep-alive "
        f"connection each), each following one run and polling once per {args.think:g} s as "
        f"the compare page does: first GET /runs/{{id}}/metrics?keys=<the page's 7 globs>"
        f"&max_points={FIRST_MAX_POINTS}, then since_step=<cursor>&max_points={LIVE_MAX_POINTS}"
        f"; GET /runs/{{id}} every {RUN_EVERY}th poll. Offered: {args.clients / args.think:g} "
        f"polls/s. A client whose answer takes longer than the think time polls again at its "
        f"next tick and skips the ones it missed, as a page's timer does: {s['skipped']:,} of "
        f"{s['scheduled']:,} scheduled polls were skipped, {s['late_polls']:,} started late",
        f"- command: `{' '.join(['python', 'bench/bench_load.py', *sys.argv[1:]])}`", "",
        "| requests | count | errors | p50 ms | p95 ms | p99 ms | max ms | mean kB | "
        "mean points |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, r in t.items():
        name = "**all**" if kind == "all" else kind
        lines.append(
            f"| {name} | {r['count']:,} | {r['errors']} | {r['p50']:.1f} | "
            f"{'**' if kind == 'all' else ''}{r['p95']:.1f}{'**' if kind == 'all' else ''} | "
            f"{r['p99']:.1f} | {r['max']:.1f} | {r['mean_kb']:.1f} | {r['mean_points']:,.0f} |")
    lines += [
        "",
        f"Throughput {s['throughput_rps']:.1f} requests/s, {s['throughput_kbps']:,.0f} kB/s, "
        f"{s['points_per_s']:,.0f} points/s served. p95 per 10 s window (by start time): "
        + ", ".join(f"{w0}-{w0 + 10} s {p:.0f} ms" for w0, _n, p in s["windows"]) + ".",
        "Service time, one client alone just before the load (the writers running; "
        "sequential requests, a since_step poll asking for one think time of steps), p50 / "
        "p95: " + "; ".join(f"{k} {a:.1f} / {b:.1f} ms ({n} requests)"
                            for k, (a, b, n) in s["baseline"].items()) + ".",
        f"Client-side event-loop lag (how late a 20 ms timer fired in the load generator): p99 "
        f"{s['lag_p99_ms']:.1f} ms, max {s['lag_max_ms']:.1f} ms: latencies include up to "
        "that much of the client's own delay.",
        "",
        f"Verdict (goal: p95 < {GOAL_P95_MS:.0f} ms, 0 errors): {verdict} - p95 "
        f"{t['all']['p95']:.1f} ms, {t['all']['errors']} errors"
        + (f" (first: {'; '.join(s['error_examples'])})" if s["errors"] else "") + ".",
        "",
    ]
    return "\n".join(lines)


