"""bench/bench_sdk_probes.py still runs (its --quick mode, one model); numbers live in
RESULTS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_sdk_probes_quick_runs_and_reports(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_sdk_probes.py"), "--quick",
         "--model", "mlp6x128-mnist1d", "--results", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = out.read_text()
    assert "SDK probes" in report and "| mlp6x128-mnist1d |" in report
