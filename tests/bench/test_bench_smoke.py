"""The benchmark script still runs (its --quick mode); the numbers themselves live in RESULTS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_engine_quick_runs_and_reports(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_engine.py"), "--quick", "--results", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = out.read_text()
    for heading in ("Probes off vs a plain PyTorch loop", "One landscape probe", "Probe suite"):
        assert heading in report
