"""bench/bench_dashboard.py still runs end to end (--quick: a real server, headless chromium)
and reports both of its measurements; the numbers themselves live in bench/RESULTS.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_dashboard_quick_runs_and_reports(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_dashboard.py"), "--quick", "--results",
         str(out)],
        capture_output=True, text=True, timeout=540, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert "Compare page: navigation start to every graph drawn" in report
    single, grouped = report.split("### 1b. Grouped: 2 seed groups of 3 runs")
    for section in (single, grouped):  # each case in both: single runs, then seed groups
        for case in ("cold", "new visitor", "reload"):
            row = re.search(rf"^\| {case} \| 2 \| \*\*(\d+)\*\*", section, re.MULTILINE)
            assert row and int(row.group(1)) > 0, case
    # 1c: the page with and without Dash's polyfill, side by side
    ab = grouped.split("### 1c. Side by side")[1]
    for variant in (r"as served \(no polyfill\)", "with Dash's polyfill"):
        row = re.search(rf"^\| {variant} \| \**(\d+)\** \| (\d+) \|", ab, re.MULTILINE)
        assert row and int(row.group(1)) > 0 and int(row.group(2)) > 0, variant
    assert re.search(r"faster in [0-2] of 2 pairs", ab)
    assert re.search(r"4 samples: p50 \*\*\d+\.\d\d s\*\*", report)
