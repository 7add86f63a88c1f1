"""Service benchmarks: metric ingest into PostgreSQL, downsampled reads, since_step reads.

    python bench/bench_service.py           # full run (~2 min on 2 cores): appends RESULTS.md
    python bench/bench_service.py --quick   # smaller sizes, for the smoke test

1. Ingest: one process drives worker/sql_sink.SqlSink exactly as a run does (32 scalar keys
   per step, the default flush size) into a fresh PostgreSQL database; points/s from the first
   record to close(). Side by side, the same points through SQLAlchemy's generic executemany
   insert-ignore (what a straightforward ORM store does) as the reference ratio.
2. Downsample: one key with 1,000,000 points read as 1,000 buckets (mean and min/max envelope,
   in SQL), on PostgreSQL and SQLite: p50/p95 of the store call and of the HTTP endpoint
   (GET /api/v1/runs/{id}/metrics through the ASGI app in-process, JSON included).
3. since_step: reading the newest 1k / 10k / 100k points of that series and of a series 5x
   shorter: the time per new point, and the ratio long/short (1.0 = cost independent of how
   much history the series has).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from server.db import metrics as store  # noqa: E402
from server.db.migrate import upgrade  # noqa: E402
from server.db.models import Point, Run  # noqa: E402
from server.db.session import make_engine  # noqa: E402
from worker.sql_sink import SqlSink  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
KEYS = [f"bench/k{i:02d}" for i in range(32)]


# -- databases --------------------------------------------------------------------------------


class PgDatabase:
    """A throwaway PostgreSQL database on the server named by the admin URL."""

    def __init__(self, admin_url: str) -> None:
        self.admin = make_url(admin_url)
        self.name = f"landscope_bench_{uuid.uuid4().hex[:8]}"
        self.url = self.admin.set(database=self.name).render_as_string(hide_password=False)

    def _admin(self):
        a = self.admin
        return psycopg.connect(host=a.host, port=a.port or 5432, user=a.username,
                               dbname=a.database, autocommit=True)

    def __enter__(self) -> str:
        with self._admin() as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        upgrade(self.url)
        return self.url

    def __exit__(self, *exc) -> None:
        with self._admin() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def new_run(engine) -> int:
    with engine.begin() as c:
        return c.execute(insert(Run).values(name="bench", spec={}, queue="q", total=1)
                         ).inserted_primary_key[0]


def fill(engine, run_id: int, key: str, n: int, batch: int = 20_000) -> int:
    with engine.begin() as c:
        sid = store.series_ids(c, run_id, [key])[key]
    for s0 in range(0, n, batch):
        rows = [(sid, s, math.sin(s * 1e-3) + 1e-4 * (s % 97), 0)
                for s in range(s0, min(n, s0 + batch))]
        with engine.begin() as c:
            store.insert_points(c, rows)
    with engine.begin() as c:  # planner statistics, as autovacuum would have them
        c.exec_driver_sql("ANALYZE")
    return sid


# -- 1. ingest --------------------------------------------------------------------------------


def bench_ingest(url: str, steps: int) -> dict:
    engine = make_engine(url)
    values = [[math.sin(s * 1e-3 + i) for i in range(len(KEYS))] for s in range(steps)]
    run_id = new_run(engine)
    sink = SqlSink(engine, run_id)
    t0 = time.perf_counter()
    for s in range(steps):
        sink.scalars(s, dict(zip(KEYS, values[s], strict=True)))
    sink.close()
    sink_s = time.perf_counter() - t0
    n = steps * len(KEYS)

    # Reference: the same points (a slice, it is slow) as a generic executemany.
    ref_steps = max(1, steps // 8)
    ref_run = new_run(engine)
    with engine.begin() as c:
        ids = store.series_ids(c, ref_run, KEYS)
    rows = [{"series_id": ids[k], "step": s, "value": values[s][i], "flag": 0}
            for s in range(ref_steps) for i, k in enumerate(KEYS)]
    t0 = time.perf_counter()
    for i in range(0, len(rows), 20_000):
        with engine.begin() as c:
            c.execute(pg_insert(Point).on_conflict_do_nothing(), rows[i:i + 20_000])
    ref_s = time.perf_counter() - t0
    engine.dispose()
    return {"points": n, "seconds": sink_s, "points_per_s": n / sink_s,
            "reference_points_per_s": len(rows) / ref_s, "flushes": sink.flushes}


# -- 2. downsample and 3. since_step ----------------------------------------------------------


def timed(fn, reps: int) -> list[float]:
    fn()  # warm caches and plans
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_reads(url: str, n: int, reps: int) -> dict:
    from fastapi.testclient import TestClient

    from server.api.app import create_app
    from server.settings import Settings

    engine = make_engine(url)
    run_id = new_run(engine)
    sid = fill(engine, run_id, "train/loss", n)
    short_run = new_run(engine)
    short_sid = fill(engine, short_run, "train/loss", n // 5)

    def store_read():
        with engine.connect() as c:
            got = store.read_series(c, sid, "train/loss", max_points=1000)
        assert got.buckets and 900 <= len(got.steps) <= 1000

    out: dict = {"store_ms": [1e3 * t for t in timed(store_read, reps)]}

    tmp = tempfile.mkdtemp()
    settings = Settings(database_url=url, data_dir=Path(tmp),
                        broker_url=f"sqla+sqlite:///{tmp}/broker.db")
    with TestClient(create_app(settings)) as client:
        path = f"/api/v1/runs/{run_id}/metrics"

        def http_read():
            r = client.get(path, params={"keys": "train/loss", "max_points": 1000})
            assert r.status_code == 200, r.text

        out["http_ms"] = [1e3 * t for t in timed(http_read, reps)]

    since = {}
    for new in (x for x in (1_000, 10_000, 100_000) if x <= n // 5):
        per = {}
        for name, s_id, total in (("long", sid, n), ("short", short_sid, n // 5)):
            def read(s_id=s_id, total=total, new=new):
                with engine.connect() as c:
                    got = store.read_series(c, s_id, "k", since_step=total - new)
                assert len(got.steps) == new
            per[name] = statistics.median(timed(read, max(3, reps // 3))) * 1e3
        since[new] = per
    out["since_ms"] = since
    engine.dispose()
    return out


# -- report -----------------------------------------------------------------------------------


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    pg = "unknown"
    with contextlib.suppress(OSError):
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True,
                            timeout=10).stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores", "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__, "psycopg": psycopg.__version__,
        "postgresql": pg, "sqlite": __import__("sqlite3").sqlite_version, "git": head,
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def p(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) > 1 else xs[0]


def report(m: dict, ingest: dict, reads: dict[str, dict], n: int) -> str:
    v = "met" if ingest["points_per_s"] >= 100_000 else "**MISSED**"
    lines = [
        f"## Service: ingest and reads ({m['date']}, git {m['git']})", "",
        f"{m['cpu']}; python {m['python']}, SQLAlchemy {m['sqlalchemy']}, psycopg "
        f"{m['psycopg']}, {m['postgresql']}, SQLite {m['sqlite']}; load before: {m['load']}.",
        "", "| benchmark | target | result |", "| --- | --- | --- |",
        f"| ingest: SqlSink -> PostgreSQL, {ingest['points']:,} points, 32 keys/step | "
        f">= 100,000 points/s | {ingest['points_per_s']:,.0f} points/s ({v}); "
        f"{ingest['points_per_s'] / ingest['reference_points_per_s']:.1f}x SQLAlchemy's "
        f"generic executemany ({ingest['reference_points_per_s']:,.0f}/s) |",
    ]
    for db, target in (("postgresql", 100), ("sqlite", 300)):
        r = reads[db]
        st, ht = p(r["store_ms"], 50), p(r["http_ms"], 50)
        verdict = "met" if ht <= target else "**MISSED**"
        lines.append(
            f"| downsample {n:,} points -> 1,000 buckets, {db} | p50 <= {target} ms | "
            f"HTTP p50 {ht:.1f} ms, p95 {p(r['http_ms'], 95):.1f} ms ({verdict}); "
            f"store call p50 {st:.1f} ms |")
    for db in ("postgresql", "sqlite"):
        cells = []
        for new, per in reads[db]["since_ms"].items():
            cells.append(f"{new:,} new: {per['long']:.1f} ms ({1e3 * per['long'] / new:.1f} "
                         f"us/point; long/short {per['long'] / per['short']:.2f})")
        lines.append(f"| since_step reads, {db} | cost ~ new points | {'; '.join(cells)} |")
    lines += ["", "long/short compares the same number of new points read from a series of "
              f"{n:,} and one of {n // 5:,} points: 1.0 means history costs nothing.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                    help="admin URL of the PostgreSQL server to create a scratch database on")
    ap.add_argument("--results", type=Path, default=None,
                    help="append the report here (default bench/RESULTS.md for full runs)")
    args = ap.parse_args()
    steps, n, reps = (2_000, 60_000, 5) if args.quick else (40_000, 1_000_000, 31)
    m = machine()
    with PgDatabase(args.pg) as url:
        ingest = bench_ingest(url, steps)
        print(f"ingest: {ingest['points_per_s']:,.0f} points/s", flush=True)
        reads = {"postgresql": bench_reads(url, n, reps)}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        reads["sqlite"] = bench_reads(url, n, reps)
    text = report(m, ingest, reads, n)
    print(text)
    out = args.results or (None if args.quick else RESULTS)
    if out is not None:
        with open(out, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
