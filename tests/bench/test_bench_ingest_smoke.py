"""bench/bench_ingest.py still runs end to end (--quick) against the real databases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_ingest_quick_runs_and_reports(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_ingest.py"), "--quick", "--results",
         str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = out.read_text()
    assert "## Ingest: insert_series against the old insert statement" in report
    for row in ("| 1 | ", "| 2 | ", "SQLite (reference"):
        assert row in report
    assert "SqlSink end to end" in report and "ingest endpoint" in report
