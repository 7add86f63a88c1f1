"""bench/bench_load.py still runs end to end (--quick, shortened): the real API server on
PostgreSQL, 2 writer processes through SqlSink, concurrent pollers; it reports, and no request
failed. The latency goal itself is machine dependent and lives in bench/RESULTS.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_load_quick_runs_reports_and_has_no_errors(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_load.py"), "--quick", "--seconds", "6",
         "--clients", "10", "--rate", "200", "--history", "500", "--results", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert "load: 10 clients polling metrics while 2 runs write (quick)" in report
    row = re.search(r"^\| \*\*all\*\* \| ([\d,]+) \| (\d+) \| [\d.]+ \| \*\*[\d.]+\*\* \|",
                    report, re.MULTILINE)
    assert row, report
    assert int(row.group(1).replace(",", "")) >= 50  # 10 clients x 6 polls, at the least
    assert row.group(2) == "0", report
    for kind in ("metrics, first (downsampled)", "metrics, since_step", "run"):
        assert re.search(rf"^\| {re.escape(kind)} \| [\d,]+ \| 0 \|", report, re.MULTILINE), kind
    assert "Verdict (goal: p95 < 200 ms, 0 errors)" in report
    assert ", 0 errors." in report
