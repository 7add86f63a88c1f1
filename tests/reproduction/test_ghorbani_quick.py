"""Ghorbani et al. 2019's quick experiment end to end, at reduced length: trained and analysed
in-process by scripts/reproduce_figures.py `run` (one seed, 200 steps), read back by its
`load_experiment`, and judged by the catalogue's checks. What the checks read must be what the
spectrum analyses wrote; every claim must be decided (the verdicts themselves are the
measurement's, reported in docs/reproduction.md, not asserted here)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from server import reproduction as R
from server.reproduction import ghorbani2019 as G

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "reproduce_figures.py"
KEY = "ghorbani-spectra"
STEPS = 200


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_figures_ghorbani", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_quick_spectra_are_measured_read_back_and_decide_every_claim(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(SCRIPT), "run", "--scale", "quick", "--only", KEY,
                           "--set", f"steps={STEPS}", "--set", "seed=0", "--out", str(out),
                           "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    runs = _script().load_experiment(out, KEY)
    assert sorted(r.spec["norm"] for r in runs) == ["batch", "none"]

    for r in runs:
        written = json.loads((out / KEY / r.name / "analyses.json").read_text())
        assert [(d["kind"], d["status"]) for d in written] == [("spectrum", "succeeded")] * 2
        by_step = G.spectra(r)
        assert list(by_step) == [G.EARLY, STEPS]  # the early snapshot and the (smoke) end
        for t, o in G.outliers_by_step(r).items():
            top = by_step[t]["top_eigenvalues"]
            assert len(top) == 11 and o.top == top[0] and o.edge == top[10]
            assert math.isfinite(o.ratio) and o.ratio >= 1 - 1e-9  # lambda_1 >= the bulk's top
        shares = G.shares_by_step(r)
        assert all(0 <= s <= 1 + 1e-9 for s in shares.values())
        assert shares[STEPS] == written[1]["steps"][str(STEPS)]["values"]["spectrum"][
            "gradient_share"]

    for fig in ("G1", "G2"):
        result = R.evaluate(R.FIGURE_BY_ID[fig], runs)
        for claim, outcome in result.outcomes:
            assert outcome.ok is not None, (fig, claim.id, outcome.ours)
        assert result.verdict in ("reproduced", "partly", "not reproduced")
