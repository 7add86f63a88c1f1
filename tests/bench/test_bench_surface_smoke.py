"""bench/bench_surface.py still runs (--quick: a 5 x 5 grid, one round of fresh processes) and
reports both ways of timing; the numbers themselves live in RESULTS.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_surface_quick_runs_and_reports_both_timings(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_surface.py"), "--quick", "--results",
         str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = out.read_text()
    assert "| batch | surface, loop (default) |" in report
    assert "Fresh processes" in report and "| none |" in report
    raw = json.loads(re.search(r"```json\n(.*?)\n```", report, re.S).group(1))
    for norm in ("batch", "none"):
        fresh = raw["fresh_processes"][norm]
        assert fresh["rounds"] == 1 and len(fresh["plain_s"]) == len(fresh["surface_s"]) == 1
        assert fresh["plain_s"][0] > 0 and fresh["surface_s"][0] > 0
