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
- the load generator (bench/_load_clients.py): asyncio + httpx, one keep-alive connection per
  client. Each client follows one run (clients alternate between the two) and once per second
  (--think), on a fixed schedule, polls as the dashboard's compare page does
  (webapp/compare/data.py): the first poll reads the whole history downsampled (max_points=300),
  every later one only what is new (since_step = the earliest step any key may still miss,
  max_points=1000000); every 5th poll it also reads GET /runs/{id}. Clients start staggered over
  the first second; one whose answer arrives after its next tick skips the ticks it missed (a
  page's timer does not catch up), and the report says how many polls were skipped.

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
import contextlib
import datetime
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._load_clients import TIMEOUT_S, loadgen_main  # noqa: E402
from bench._load_report import report, summarise  # noqa: E402
from bench._server import Server  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
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
