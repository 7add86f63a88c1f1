"""bench/bench_service.py still runs end to end (--quick) against the real databases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_service_quick_runs_and_reports(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_service.py"), "--quick", "--results",
         str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = out.read_text()
    for row in ("ingest: SqlSink -> PostgreSQL", "downsample", "since_step reads, sqlite"):
        assert row in report
