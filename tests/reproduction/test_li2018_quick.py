"""Li et al. 2018's quick experiment end to end, at reduced steps and one seed: trained and
analysed in-process by scripts/reproduce_figures.py `run`, read back by `load_experiment`, and
every claim of both figures decided (not "no data") from the surfaces and spectra it wrote."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import pytest

from server import reproduction as R
from server.reproduction import li2018 as L

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reproduce_figures.py"


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce_figures"] = module  # its workers unpickle train_one from here
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_quick_experiment_runs_and_every_claim_is_decided(tmp_path, monkeypatch):
    exp = R.EXPERIMENTS["li-skip-depth"]
    plan = exp.plans["quick"]
    # One seed, and the plan's analyses on fewer evaluation samples (the same grid and Lanczos
    # steps): four nets, the deep pair among them, within the suite's timeout on a shared CPU.
    small = tuple({**a, "eval_samples": 32} for a in plan.analyses)
    one_seed = dataclasses.replace(plan, seeds=(0,), analyses=small)
    monkeypatch.setitem(R.EXPERIMENTS, exp.key, dataclasses.replace(
        exp, plans={"quick": one_seed}))
    script = _script()
    out = tmp_path / "results"
    rc = script.main(["run", "--scale", "quick", "--only", exp.key, "--set", "steps=30",
                      "--out", str(out), "--data-dir", str(tmp_path), "--jobs", "2"])
    assert rc == 0
    runs = script.load_experiment(out, exp.key)
    assert sorted((r.spec["resnet_depth"], r.spec["skip"]) for r in runs) == [
        (L.SHALLOW, False), (L.SHALLOW, True), (L.DEEP, False), (L.DEEP, True)]
    for r in runs:
        _, st = r.analysis("surface", bn_mode="running")
        assert len(st["loss"]) == len(st["y"]) == 11 and len(st["loss"][0]) == 11
        assert all(math.isfinite(v) for row in st["loss"] for v in row), r.name
        assert st["x"][5] == st["y"][5] == 0  # the trained point is the grid's centre
        n = L.surface_numbers(r)
        assert 0 <= n["nonconvex"] <= 1 and 0 <= n["misdirected"] <= 1
    for fig in (R.FIGURE_BY_ID["L5"], R.FIGURE_BY_ID["L7"]):
        res = R.evaluate(fig, runs)
        for claim, outcome in res.outcomes:
            assert outcome.ok is not None, (claim.id, outcome.ours)
            print(claim.id, outcome.ours)
