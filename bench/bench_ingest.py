"""Metric ingest into PostgreSQL: the old insert statement against insert_series, 1/2/4 writers.

    python bench/bench_ingest.py            # full run (3-6 min): appends to bench/RESULTS.md
    python bench/bench_ingest.py --quick    # smoke test (under a minute): prints only

Issue 13's goal: the ingest endpoint and the worker's sink store >= 300,000 points/s into
PostgreSQL from one writer, and scale with writers. Each writer is a process of its own with
its own connection and its own run (as workers and API processes are), fed the point shape a
sink flush or an ingest request has: 32 keys x --steps steps a batch, as Python lists of raw
floats (0.1 % non-finite: they are data). Per trial, every writer gets the same number of
batches, all start on one signal, and points/s is all their points over the wall time from
the first start to the last end. Paths, timed interleaved (each round rotates their order):

- old: what the sink did before issue 13: rows (series, step, value, flag) built in Python
  with encode_value, then metrics.insert_points (one INSERT ... SELECT FROM unnest ...
  ON CONFLICT DO NOTHING RETURNING, rollups in the same statement);
- new: metrics.insert_series on the same columns (binary COPY of the rows past each series'
  newest step, numpy rollups; server/db/ingest_pg.py);
- sink: worker/sql_sink.SqlSink end to end, as a run drives it: scalars(step, {32 keys}) per
  step, then close(); from the first call to the end of close();
- endpoint: POST /api/v1/runs/{id}/ingest of an SDK run, one request a batch, to one API
  process (`landscope api`, as deployed) on its own scratch database: gzip JSON bodies
  (non-finite values as "NaN"/"Infinity" strings) made before timing, since the SDK makes
  them on its own background thread; the timing is the server's: parse, checks, store.

The ratio new/old is paired per round (same round, same writer count). SQLite is measured for
reference (one writer: SQLite serialises writers). The CPUs are shared by the writers, their
PostgreSQL backends and anything else running: the load and CPU pressure are reported with the
numbers, and scaling cannot exceed the cores there are.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import torch
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench._machine import ROOT, cpu_pressure_us, describe, loadavg, publish  # noqa: E402
from bench._server import Server  # noqa: E402
from bench.bench_service import PgDatabase  # noqa: E402
from server.db import metrics as store  # noqa: E402
from server.db.migrate import upgrade  # noqa: E402
from server.db.models import Run, encode_value  # noqa: E402
from server.db.session import make_engine  # noqa: E402
from worker.sql_sink import SqlSink  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
GOAL = 300_000
KEYS = [f"bench/k{i:02d}" for i in range(32)]
PATHS = ("old", "new", "sink", "endpoint")


def batches(n: int, steps: int, seed: int) -> list[dict[str, tuple[list[int], list[float]]]]:
    """n consecutive batches of KEYS x steps raw floats, 0.1 % of them non-finite."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n):
        vals = rng.standard_normal((len(KEYS), steps))
        bad = rng.random(vals.shape) < 1e-3
        vals[bad] = rng.choice([np.nan, np.inf, -np.inf], size=int(bad.sum()))
        step_list = list(range(b * steps, (b + 1) * steps))
        out.append({k: (step_list, vals[i].tolist()) for i, k in enumerate(KEYS)})
    return out


def write_old(engine, run_id: int, data) -> None:
    for cols in data:
        with engine.begin() as c:
            ids = store.series_ids(c, run_id, cols)
            rows = [(ids[k], s, *encode_value(v)) for k, (steps, vals) in cols.items()
                    for s, v in zip(steps, vals, strict=True)]
            store.insert_points(c, rows)


def write_new(engine, run_id: int, data) -> None:
    for cols in data:
        with engine.begin() as c:
            store.insert_series(c, run_id, cols)


def as_steps(data) -> list[tuple[int, dict[str, float]]]:
    """The same points as a training loop hands them to a sink: one dict per step."""
    out = []
    for cols in data:
        steps = next(iter(cols.values()))[0]
        for i, s in enumerate(steps):
            out.append((s, {k: vals[i] for k, (_, vals) in cols.items()}))
    return out


def write_sink(engine, run_id: int, per_step) -> None:
    sink = SqlSink(engine, run_id)
    for s, values in per_step:
        sink.scalars(s, values)
    sink.close()


def json_value(v: float) -> float | str:
    return v if np.isfinite(v) else ("NaN" if np.isnan(v) else ("Infinity" if v > 0
                                                               else "-Infinity"))


def bodies(data) -> list[bytes]:
    """The ingest request bodies of the batches: the SDK's wire format, gzipped."""
    out = []
    for cols in data:
        doc = {"scalars": [{"key": k, "steps": steps, "values": [json_value(v) for v in vals]}
                           for k, (steps, vals) in cols.items()]}
        out.append(gzip.compress(json.dumps(doc, allow_nan=False).encode(), compresslevel=1))
    return out


def write_endpoint(client: httpx.Client, run_id: int, data: list[bytes]) -> None:
    for body in data:
        r = client.post(f"/api/v1/runs/{run_id}/ingest", content=body,
                        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        r.raise_for_status()


def writer(url: str, base: str | None, conn) -> None:
    """A writer process: prepare a trial (data, a fresh run), then write it on 'go'."""
    engine = make_engine(url)
    client = None if base is None else httpx.Client(base_url=base, timeout=600)
    while True:
        msg = conn.recv()
        if msg is None:
            break
        path, n, steps, seed = msg
        data = batches(n, steps, seed)
        if path == "endpoint":
            assert client is not None
            data = bodies(data)
            r = client.post("/api/v1/sdk/runs", json={
                "client_id": uuid.uuid4().hex, "experiment": "bench-ingest", "name": "bench",
                "config": {}, "total": n * steps})
            r.raise_for_status()
            run_id, target = r.json()["id"], client
        else:
            if path == "sink":
                data = as_steps(data)
            with engine.begin() as c:
                run_id = c.execute(insert(Run).values(name="bench", spec={}, queue="q", total=1)
                                   ).inserted_primary_key[0]
            target = engine
        conn.send("ready")
        conn.recv()  # go
        t0 = time.monotonic()  # system-wide clock: comparable across the writers
        {"old": write_old, "new": write_new, "sink": write_sink,
         "endpoint": write_endpoint}[path](target, run_id, data)
        conn.send((t0, time.monotonic()))
    if client is not None:
        client.close()
    engine.dispose()


def trial(pipes, path: str, n: int, steps: int, seed: int) -> float:
    """Points/s of len(pipes) writers each writing n batches at once."""
    for i, p in enumerate(pipes):
        p.send((path, n, steps, seed + i))
    for p in pipes:
        assert p.recv() == "ready"
    for p in pipes:
        p.send("go")
    spans = [p.recv() for p in pipes]
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return len(pipes) * n * steps * len(KEYS) / wall


def run_backend(url: str, writers: tuple[int, ...], rounds: int, n: int, steps: int,
                paths: tuple[str, ...], base: str | None = None) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter: no connection or thread inherited
    procs, pipes = [], []
    for _ in range(max(writers)):
        a, b = ctx.Pipe()
        pr = ctx.Process(target=writer, args=(url, base, b), daemon=True)
        pr.start()
        procs.append(pr)
        pipes.append(a)
    rate: dict[str, dict[int, list[float]]] = {p: {w: [] for w in writers} for p in paths}
    p0, t0 = cpu_pressure_us(), time.perf_counter()
    try:
        trial(pipes[:1], "new", 1, min(steps, 100), 10**6)  # warm-up: imports, connections
        for r in range(rounds):
            order = paths[r % len(paths):] + paths[:r % len(paths)]
            for w in writers:
                for path in order:
                    x = trial(pipes[:w], path, n, steps, seed=1000 * r + 10 * w)
                    rate[path][w].append(x)
                    print(f"  round {r} {path:4s} x{w}: {x:>10,.0f} points/s  "
                          f"(load {loadavg()})", flush=True)
    finally:
        for p in pipes:
            p.send(None)
        for pr in procs:
            pr.join(60)
    wall = time.perf_counter() - t0
    p1 = cpu_pressure_us()
    pressure = None if p0 is None or p1 is None else (p1 - p0) / 1e6 / wall
    return {"rate": rate, "wall_s": wall, "cpu_pressure": pressure}


def summary(res: dict, path: str, w: int) -> str:
    xs = res["rate"][path][w]
    return f"{statistics.median(xs):,.0f} [{min(xs):,.0f}, {max(xs):,.0f}]"


def ratio(res: dict, w: int) -> str:
    rs = [a / b for a, b in zip(res["rate"]["new"][w], res["rate"]["old"][w], strict=True)]
    return f"{statistics.median(rs):.2f} [{min(rs):.2f}, {max(rs):.2f}]"


def pg_version(url: str) -> str:
    engine = make_engine(url)
    with engine.connect() as c:
        v = c.exec_driver_sql("SHOW server_version").scalar()
    engine.dispose()
    return f"PostgreSQL {v}"


def markdown(pg: dict, lite: dict, machine: dict, args, command: str) -> str:
    n_pts = args.batches * args.steps * len(KEYS)
    lines = [
        f"## Ingest: insert_series against the old insert statement ({machine['date']}, git "
        f"{machine['git_head']})", "",
        f"`{command}`: {machine['cpu']}, {machine['cpus_usable']} usable CPUs shared by the "
        f"writers and the database, {machine['postgresql']}; load at start "
        f"{machine['loadavg_at_start']}, at end {machine['loadavg_at_end']}; CPU pressure "
        f"{pg['cpu_pressure'] if pg['cpu_pressure'] is None else round(pg['cpu_pressure'], 2)}."
        f" Per writer and trial: {args.batches} batches of {len(KEYS)} keys x {args.steps} "
        f"steps ({n_pts:,} points); {args.rounds} rounds, interleaved; median [min, max] of "
        "points/s over the rounds.", "",
        f"| writers | old statement | insert_series | new / old (paired) | SqlSink end to end "
        f"| ingest endpoint | goal >= {GOAL:,}/s, one writer |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in args.writers:
        goal = "-"
        if w == 1:
            new = statistics.median(pg["rate"]["new"][1])
            sink = statistics.median(pg["rate"]["sink"][1])
            endpoint = statistics.median(pg["rate"]["endpoint"][1])
            goal = ", ".join(f"{k} {'met' if x >= GOAL else '**MISSED**'}"
                             for k, x in (("insert_series", new), ("sink", sink),
                                          ("endpoint", endpoint)))
        lines.append(f"| {w} | {summary(pg, 'old', w)} | {summary(pg, 'new', w)} | "
                     f"{ratio(pg, w)} | {summary(pg, 'sink', w)} | "
                     f"{summary(pg, 'endpoint', w)} | {goal} |")
    lines += ["", f"SQLite (reference, one writer, {args.sqlite_batches} batches a trial): old "
              f"{summary(lite, 'old', 1)}, insert_series {summary(lite, 'new', 1)} points/s.",
              "", "<details><summary>raw results (JSON, points/s)</summary>", "", "```json",
              json.dumps({"machine": machine, "postgresql": pg, "sqlite": lite}, default=str),
              "```", "", "</details>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, prints only")
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                   help="admin URL of the PostgreSQL server to create a scratch database on")
    p.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, default=4, help="batches per writer and trial")
    p.add_argument("--steps", type=int, default=2000, help="steps per batch (x 32 keys)")
    p.add_argument("--results", type=Path, default=None,
                   help=f"append the report here (default {RESULTS.relative_to(ROOT)} for full "
                   "runs; --quick writes only when given)")
    args = p.parse_args(argv)
    if args.quick:
        args.writers, args.rounds, args.batches, args.steps = [1, 2], 1, 2, 100
    args.sqlite_batches = max(1, args.batches // 2)
    machine = describe(torch.device("cpu"))
    machine["loadavg_at_start"] = loadavg()
    command = " ".join(["python", *sys.argv])
    with PgDatabase(args.pg) as url, tempfile.TemporaryDirectory(
            prefix="landscope-bench-ingest-") as data_dir:
        machine["postgresql"] = pg_version(url)
        print(json.dumps(machine), flush=True)
        server = Server(Path(data_dir), dashboard=False, database_url=url)
        try:
            pg = run_backend(url, tuple(args.writers), args.rounds, args.batches, args.steps,
                             PATHS, server.base)
        finally:
            server.stop()
    with tempfile.TemporaryDirectory(prefix="landscope-bench-ingest-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        lite = run_backend(url, (1,), max(1, args.rounds - 1), args.sqlite_batches,
                           args.steps, ("old", "new"))
    machine["loadavg_at_end"] = loadavg()
    machine["git_dirty"] = bool(subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True,
    ).stdout.strip())
    report = markdown(pg, lite, machine, args, command)
    out = args.results or (None if args.quick else RESULTS)
    return publish(report, out)


if __name__ == "__main__":
    sys.exit(main())
