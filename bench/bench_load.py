"""Load benchmark: 50 dashboard clients poll metrics on loopback while 2 runs write.

    python bench/bench_load.py                  # 60 s of load; appends bench/RESULTS.md
    python bench/bench_load.py --quick          # ~10 s, smaller history: prints, writes nothing
    python bench/bench_load.py --seconds 120 --clients 100 --results /tmp/r.md

Goal (issue "Production: load"): p95 latency under 200 ms and 0 errors.

What runs, each in its own process, all on this machine:
- the server: `python -m landscope.cli api --no-dashboard --port 0` (uvicorn, one process, as
  `landscope api` serves it) on a fresh PostgreSQL database this script creates (and drops at
  the end) on the server named by --pg, migrated first;
- 2 writers (multiprocessing, spawn), one per run of a 2-run experiment whose runs are
  `running`: each drives worker/sql_sink.SqlSink (the worker's batched sink, with the worker's
  default flush settings) and worker/heartbeat.RunLease (progress and heartbeat, as a worker's
  lease does) with every scalar, eta record and histogram the engine writes, on the schedule
  of tests/support/synthetic.py (landscape and ICS every 20 steps, evaluation, activations and
  sharpness every 100), paced at --rate steps per second per run. No model trains: the values
  are synthetic, the writes are the real ones;
- the load generator: asyncio + httpx, one keep-alive connection per client. Each client
  follows one run (clients alternate between the two) and once per second (--think), on a
  fixed schedule, polls as the dashboard's compare page does (webapp/compare/data.py): the
  first poll reads the whole history downsampled (max_points=300), every later one only what
  is new (since_step = the earliest step any key may still miss, max_points=1000000); every
  5th poll it also reads GET /runs/{id}. Clients start staggered over the first second; one
  whose answer arrives after its next tick skips the ticks it missed (a page's timer does not
  catch up), and the report says how many polls were skipped.

Latency is per request, from sending it to having its whole body (httpx reads it before the
call returns); errors are non-2xx answers, bodies that are not the expected JSON, connection
errors and timeouts (30 s). The load generator also records how late its own event loop
wakes (a 20 ms ticker): that lag bounds how much of a latency is the client's, not the
server's. CPU use of each process and of the whole machine, the load average and the share of
time some task waited for a CPU (/proc/pressure/cpu) are stated with the numbers: on a small
shared machine they decide the result as much as the code does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import Server  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
# What the dashboard's compare page asks for (webapp/figures METRIC_KEYS, webapp/compare/data).
METRIC_KEYS = "train/*,test/*,landscape/*,ics/*,sharpness/*,grad/*,dist/*"
FIRST_MAX_POINTS = 300
LIVE_MAX_POINTS = 1_000_000
RUN_EVERY = 5  # GET /runs/{id} every this many polls
TIMEOUT_S = 30.0
GOAL_P95_MS = 200.0
TOTAL_STEPS = 10_000_000  # the runs' spec: far more than any benchmark writes
NORMS = ["batch", "none"]


# -- the database -----------------------------------------------------------------------------


class PgDatabase:
    """A throwaway database, landscope_bench_load_<pid>, on the server of the admin URL."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url)
        self.name = f"landscope_bench_load_{os.getpid()}"
        self.url = self.admin.set(database=self.name).render_as_string(hide_password=False)

    def _admin(self):
        import psycopg

        a = self.admin
        return psycopg.connect(host=a.host, port=a.port or 5432, user=a.username,
                               password=a.password, dbname=a.database, autocommit=True)

    def __enter__(self) -> str:
        from server.db.migrate import upgrade

        with self._admin() as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        try:
            upgrade(self.url)
        except BaseException:
            self.__exit__()
            raise
        return self.url

    def __exit__(self, *exc) -> None:
        with self._admin() as c:  # only the database this object created
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def setup_runs(url: str, history: int) -> tuple[int, list[int], list[dict]]:
    """A 2-run experiment (BatchNorm and no normalisation), both running, each with `history`
    steps already written. Returns (experiment id, run ids, each run's spec)."""
    from server.db.session import make_engine
    from tests.support.synthetic import BASE_SPEC, create_experiment

    engine = make_engine(url)
    try:
        exp, ids = create_experiment(engine, NORMS, steps=TOTAL_STEPS, done=history,
                                     status="running")
    finally:
        engine.dispose()
    return exp, ids, [{**BASE_SPEC, "steps": TOTAL_STEPS, "norm": n} for n in NORMS]


# -- the server -------------------------------------------------------------------------------


# -- the writers ------------------------------------------------------------------------------


def writer_main(url: str, run_id: int, spec: dict, start: int, rate: float, stop, out) -> None:
    """One worker's writes: SqlSink + RunLease, paced at `rate` steps/s, until `stop`."""
    sys.path.insert(0, str(ROOT))
    from server.db.session import make_engine, make_sessionmaker
    from server.spec import build_spec
    from tests.support.synthetic import SyntheticRun
    from worker.engine.sink import Distribution, EtaRecord
    from worker.heartbeat import RunLease
    from worker.sql_sink import SqlSink

    engine = make_engine(url)
    # The worker's defaults (server/settings.py): flush every 1 s or 20,000 rows; heartbeat
    # every 0.5 s (worker/runner.py).
    sink = SqlSink(engine, run_id, flush_seconds=1.0, flush_points=20_000, outage_seconds=120.0)
    lease = RunLease(make_sessionmaker(engine), run_id, attempt=1, interval=0.5)
    lease.start()
    run = SyntheticRun(build_spec(spec), seed=run_id)  # as create_experiment seeds it
    step, points, behind = start, 0, 0.0
    t0 = time.monotonic()
    while not stop.is_set():
        due = start + int(rate * (time.monotonic() - t0))
        behind = max(behind, (due - step) / rate)
        for _ in range(min(due - step, max(1, int(rate // 10)))):
            values = run.scalars(step)
            sink.scalars(step, values)
            points += len(values)
            etas = run.eta_records(step)
            if etas:
                sink.eta_records(step, "landscape", [
                    EtaRecord(r["multiplier"], r["eta"], r["loss"], r["grad_dist"])
                    for r in etas])
            hists = run.histograms(step)
            if hists:
                sink.distributions(step, [
                    Distribution(layer=h["layer"], scope=h["scope"], unit=h["unit"], lo=h["lo"],
                                 hi=h["hi"], counts=h["counts"], underflow=h["underflow"],
                                 overflow=h["overflow"], nonfinite=h["nonfinite"],
                                 mean=float(h["stats"]["mean"]), var=float(h["stats"]["var"]),
                                 quantiles=h["stats"]["quantiles"])
                    for h in hists])
            lease.progress(step + 1, TOTAL_STEPS, values["train/loss"])
            step += 1
        if step >= due:
            time.sleep(0.005)
    wall = time.monotonic() - t0
    error = repr(sink.timer_error) if sink.timer_error else None
    try:
        sink.close()
        lease.beat()
    except Exception as exc:  # noqa: BLE001 - reported, and the bench fails on it
        error = repr(exc)
    lease.stop()
    engine.dispose()
    out.put({"run_id": run_id, "steps": step - start, "points": points, "seconds": wall,
             "flushes": sink.flushes, "max_behind_s": behind, "error": error,
             "lease_lost": lease.lost.is_set(), "last_step": step})


# -- the load generator -----------------------------------------------------------------------


def loadgen_main(base: str, run_ids: list[int], clients: int, seconds: float, think: float,
                 rate: float, ready, go, out) -> None:
    """Runs in its own process: the clients, then one result dict on `out`."""
    out.put(asyncio.run(_load(base, run_ids, clients, seconds, think, rate, ready, go)))


async def _baseline(http, run_id: int, back: int, reps: int = 20) -> dict[str, list[float]]:
    """One client alone (the writers running): sequential requests, seconds each. A live poll
    asks for the last `back` steps, about what one think time of writing adds."""
    out: dict[str, list[float]] = {"metrics, since_step": [], "run": []}
    r = await http.get(f"/api/v1/runs/{run_id}/metrics",
                       params={"keys": METRIC_KEYS, "max_points": FIRST_MAX_POINTS})
    r.raise_for_status()
    last = max(math.floor(s["steps"][-1]) for s in r.json()["series"].values() if s["steps"])
    for _ in range(reps):
        t0 = time.perf_counter()
        r = await http.get(f"/api/v1/runs/{run_id}/metrics", params={
            "keys": METRIC_KEYS, "max_points": LIVE_MAX_POINTS, "since_step": last - back})
        r.raise_for_status()
        out["metrics, since_step"].append(time.perf_counter() - t0)
        last = max(math.floor(s["steps"][-1]) for s in r.json()["series"].values()
                   if s["steps"])
        t0 = time.perf_counter()
        (await http.get(f"/api/v1/runs/{run_id}")).raise_for_status()
        out["run"].append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)
    return out


async def _load(base, run_ids, clients, seconds, think, rate, ready, go) -> dict:
    import httpx

    samples: list[tuple] = []  # (kind, start offset s, latency s, status, bytes, points)
    errors: list[str] = []
    late: list[float] = []  # how late a poll started against its schedule (a slow answer)
    skipped = [0]  # scheduled polls not made: the client's previous one was still waiting
    scheduled = [0]
    lags: list[float] = []
    # Every client exists before the clock starts (httpx builds an SSL context per client:
    # ~50 of them would stall the event loop in the first second). Each connects at its first
    # poll, as a page does; connecting earlier would leave connections idle past uvicorn's
    # 5 s keep-alive, and a request racing the server's close fails.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    https = [httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S, limits=limits)
             for _ in range(clients)]
    baseline = await _baseline(https[0], run_ids[0], int(rate * think))
    ready.set()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    t_begin = time.perf_counter()
    t_end = t_begin + seconds
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.02)
            lags.append(time.perf_counter() - t - 0.02)

    async def request(http, kind: str, path: str, params: dict | None):
        t0 = time.perf_counter()
        try:
            r = await http.get(path, params=params)
        except httpx.HTTPError as exc:
            t1 = time.perf_counter()
            samples.append((kind, t0 - t_begin, t1 - t0, 0, 0, 0))
            errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
            return None
        t1 = time.perf_counter()
        body = None
        if r.status_code < 300:
            try:
                body = r.json()
            except ValueError:
                errors.append(f"{kind}: {r.status_code} but not JSON")
        else:
            errors.append(f"{kind}: HTTP {r.status_code}: {r.text[:200]}")
        points = 0
        if body is not None and kind.startswith("metrics"):
            if not isinstance(body.get("series"), dict):
                errors.append(f"{kind}: no series in the answer")
                body = None
            else:
                points = sum(len(s["steps"]) for s in body["series"].values())
        samples.append((kind, t0 - t_begin, t1 - t0, r.status_code, len(r.content), points))
        return body

    async def client(i: int) -> None:
        http = https[i]
        rid = run_ids[i % len(run_ids)]
        cursor: dict[str, int] = {}  # key -> last step seen (the dashboard's Cursor.keys)
        first = t_begin + think * i / clients
        k = polls = 0
        ticks = math.ceil((t_end - first) / think)  # this client's scheduled polls
        scheduled[0] += ticks
        while True:
            tick = first + k * think
            now = time.perf_counter()
            if tick <= now:  # the previous answer took longer than the think time
                # A page's timer does not catch up: the ticks missed are skipped.
                skip = min(int((now - tick) // think), ticks - k)
                k += skip
                skipped[0] += skip
                tick += skip * think
                late.append(now - tick)
            if tick >= t_end:
                break
            if tick > now:
                await asyncio.sleep(tick - now)
            if not cursor:
                kind = "metrics, first (downsampled)"
                params = {"keys": METRIC_KEYS, "max_points": FIRST_MAX_POINTS}
            else:
                kind = "metrics, since_step"
                params = {"keys": METRIC_KEYS, "max_points": LIVE_MAX_POINTS,
                          "since_step": min(cursor.values()) + 1}
            body = await request(http, kind, f"/api/v1/runs/{rid}/metrics", params)
            if body is not None:
                for key, s in body["series"].items():
                    if s["steps"]:
                        cursor[key] = max(cursor.get(key, -1), math.floor(s["steps"][-1]))
            if polls % RUN_EVERY == RUN_EVERY - 1:
                await request(http, "run", f"/api/v1/runs/{rid}", None)
            k += 1
            polls += 1

    tick_task = asyncio.create_task(ticker())
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - t_begin
    done.set()
    await tick_task
    for h in https:
        await h.aclose()
    return {"samples": samples, "errors": errors, "late": late, "lags": lags, "wall_s": wall,
            "skipped": skipped[0], "scheduled": scheduled[0],
            "baseline": baseline}


# -- measurements of the machine --------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process and its reaped children, in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15])
    except (OSError, ValueError, IndexError):
        return None


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def versions() -> dict:
    from importlib.metadata import version

    pg = "PostgreSQL ?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True,
                            timeout=10).stdout.strip().replace("psql (PostgreSQL)", "PostgreSQL")
    out = {"python": platform.python_version(), "postgresql": pg}
    for name in ("fastapi", "uvicorn", "sqlalchemy", "psycopg", "httpx"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing distribution name is only not stated
            out[name] = "?"
    return out


# -- the report -------------------------------------------------------------------------------


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


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="~10 s of load on a short history (the smoke test); writes nothing "
                         "unless --results is given")
    ap.add_argument("--seconds", type=float, default=None,
                    help="seconds of load (default 60, 10 with --quick)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    ap.add_argument("--think", type=float, default=1.0,
                    help="seconds between one client's polls (default 1, the dashboard's)")
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="steps per second each of the 2 writers writes (default 1000)")
    ap.add_argument("--history", type=int, default=None,
                    help="steps per run written before the load starts (default 20,000; "
                         "2,000 with --quick)")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                    help="admin URL of the PostgreSQL server to create the scratch database on")
    ap.add_argument("--results", type=Path, default=None,
                    help="append the report here (default bench/RESULTS.md for full runs)")
    args = ap.parse_args()
    args.seconds = args.seconds or (10.0 if args.quick else 60.0)
    if args.history is None:
        args.history = 2_000 if args.quick else 20_000

    from bench._machine import _cpuinfo_model, _git_head, _ram_gib, cpu_pressure_us, loadavg

    info: dict = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": _cpuinfo_model(), "cpus": len(os.sched_getaffinity(0)),
        "ram_gib": _ram_gib() or 0.0, "load_start": loadavg(), "git": _git_head(),
        "versions": versions(),
    }
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="landscope-bench-load-") as tmp, \
            PgDatabase(args.pg) as url:
        _exp, run_ids, specs = setup_runs(url, args.history)
        print(f"bench_load: database {url.rsplit('/', 1)[1]}, runs {run_ids}, "
              f"{args.history:,} steps of history each", file=sys.stderr, flush=True)
        server = Server(Path(tmp), dashboard=False, database_url=url)
        stop = ctx.Event()
        writer_out, load_out = ctx.Queue(), ctx.Queue()
        writers = [ctx.Process(target=writer_main, daemon=True, args=(
            url, rid, spec, args.history, args.rate, stop, writer_out))
            for rid, spec in zip(run_ids, specs, strict=True)]
        ready, go = ctx.Event(), ctx.Event()
        loadgen = ctx.Process(target=loadgen_main, daemon=True, args=(
            server.base, run_ids, args.clients, args.seconds, args.think, args.rate, ready, go,
            load_out))
        try:
            for w in writers:
                w.start()
            loadgen.start()
            if not ready.wait(120):
                raise RuntimeError("the load generator did not start")
            # The writers have been writing since before the load generator's baseline.
            print(f"bench_load: {args.clients} clients for {args.seconds:g} s against "
                  f"{server.base}", file=sys.stderr, flush=True)
            pids = {"server": [server.proc.pid], "writers": [w.pid for w in writers],
                    "loadgen": [loadgen.pid]}
            ticks0 = {k: [cpu_ticks(p) for p in v] for k, v in pids.items()}
            m0, pressure0, t0 = machine_ticks(), cpu_pressure_us(), time.monotonic()
            go.set()
            load = load_out.get(timeout=args.seconds + 2 * TIMEOUT_S + 240)
            measured = time.monotonic() - t0
            m1, pressure1 = machine_ticks(), cpu_pressure_us()
            ticks1 = {k: [cpu_ticks(p) for p in v] for k, v in pids.items()}
            stop.set()
            written = [writer_out.get(timeout=120) for _ in writers]
            loadgen.join(30)
            for w in writers:
                w.join(30)
            from sqlalchemy import select

            from server.db.models import Run
            from server.db.session import make_engine

            engine = make_engine(url)
            with engine.connect() as c:
                statuses = dict(c.execute(select(Run.id, Run.status)).all())
            engine.dispose()
        finally:
            stop.set()
            for p in (*writers, loadgen):
                if p.is_alive():
                    p.terminate()
                    p.join(10)
            server.stop()
            log_tail = server.log.read_text()[-1500:]
    info["load_end"] = loadavg()
    info["measured_s"] = measured
    info["writers"] = written
    hz = os.sysconf("SC_CLK_TCK")

    def cores(k: str) -> float:
        return sum((b or 0) - (a or 0) for a, b in zip(ticks0[k], ticks1[k], strict=True)
                   ) / hz / measured

    cpu = {k: cores(k) for k in pids}
    if m0 and m1:
        busy = (m1[0] - m0[0]) / hz / measured
        cpu["machine_busy"] = busy / info["cpus"]
        cpu["other"] = max(0.0, busy - cpu["server"] - cpu["writers"] - cpu["loadgen"])
    else:
        cpu["machine_busy"], cpu["other"] = float("nan"), float("nan")
    cpu["pressure"] = (f"{(pressure1 - pressure0) / 1e6 / measured:.2f}"
                       if pressure0 is not None and pressure1 is not None else "unknown")
    info["cpu"] = cpu
    s = summarise(load)
    problems = [f"writer of run {x['run_id']}: {x['error']}" for x in written if x["error"]]
    problems += [f"writer of run {x['run_id']}: lease lost" for x in written if x["lease_lost"]]
    problems += [f"run {rid} is {st}, not running" for rid, st in statuses.items()
                 if st != "running"]
    text = report(args, info, s)
    if problems:
        text += "\nProblems: " + "; ".join(problems) + "\n"
    print(text)
    if s["errors"]:
        print("bench_load: errors (first 5):\n  " + "\n  ".join(s["error_examples"])
              + f"\nserver log tail:\n{log_tail}", file=sys.stderr)
    out = args.results or (None if args.quick else RESULTS)
    if out is not None:
        with out.open("a") as f:
            f.write("\n" + text)
    print(json.dumps({"p95_ms": s["table"]["all"]["p95"], "errors": s["errors"],
                      "requests": s["table"]["all"]["count"]}), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
