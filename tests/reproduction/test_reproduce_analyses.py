"""A plan's analyses through scripts/reproduce_figures.py `run`: trained with snapshots,
analysed in-process, written as analyses.json shaped like the API's AnalysisDetail and read
back by `load_run` into RunData.analyses. The spectrum's top eigenvalue is checked against the
largest eigenvalue of the full Hessian (torch.autograd, float64) of the same loss at the same
weights."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from server import reproduction as R
from server.analysis_spec import AnalysisSpec
from server.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "reproduce_figures.py"

# A 2-layer MLP of 8 hidden units on mnist1d (40 inputs, 10 classes): 418 parameters, so the
# full Hessian is small enough to diagonalise.
TINY = {"depth": 2, "width": 8, "steps": 30, "eval_every": 10,
        "probes.landscape.every": 0, "probes.ics.every": 0, "probes.activations.every": 0,
        "probes.sharpness.every": 0}
SPECTRUM = {"kind": "spectrum", "bn_mode": "batch", "eval_samples": 128,
            "spectrum": {"top_k": 2, "lanczos_steps": 40, "trace_probes": 4, "slq_steps": 10,
                         "slq_vectors": 1}}


def _script():
    """The script as a module; in sys.modules under its name, so that its process pool can
    pickle train_one (the forked workers inherit the module and this test's catalogue)."""
    if "reproduce_figures" in sys.modules:
        return sys.modules["reproduce_figures"]
    spec = importlib.util.spec_from_file_location("reproduce_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce_figures"] = module
    spec.loader.exec_module(module)
    return module


def _experiment(key: str, analyses) -> R.Experiment:
    plan = R.Plan("quick-mlp", dict(TINY), {"norm": ["none"]}, analyses=analyses)
    return R.Experiment(key, f"test {key}", {"quick": plan}, {"quick": "tiny MLP"})


# -- the file format, without training -----------------------------------------------------


def test_a_detail_round_trips_non_finite_values_and_skips_failed_analyses(tmp_path):
    from worker.engine.geometry.sink import GridValue

    A = _script().A
    spec = AnalysisSpec.model_validate({
        "kind": "surface", "steps": [5], "x": {"lo": -1, "hi": 1, "points": 3},
        "y": {"lo": -1, "hi": 1, "points": 2}})
    losses = [0.5, math.nan, math.inf, -math.inf, 1.0, 2.0]
    grid = {5: {i: GridValue(i, v, acc=0.25) for i, v in enumerate(losses)}}
    named = {5: {"meta": {"x": math.nan}, "trace": (1.0, math.inf)}}
    ok = A.detail(spec, grid, named)
    failed = A.detail(AnalysisSpec.model_validate({"kind": "spectrum", "steps": [5]}), {}, {},
                      "failed", "RuntimeError: out of memory")
    A.write(tmp_path, [ok, failed])
    text = (tmp_path / A.FILE).read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the file"))
    (data,) = A.load_analyses(tmp_path)  # the failed one is not read
    assert data.kind == "surface" and list(data.steps) == [5]
    step = data.steps[5]
    assert step["x"] == [-1.0, 0.0, 1.0] and step["y"] == [-1.0, 1.0]
    got = [v for row in step["loss"] for v in row]  # ny rows of nx, row-major
    assert got[0] == 0.5 and math.isnan(got[1]) and got[2:] == [math.inf, -math.inf, 1.0, 2.0]
    assert step["acc"] == [[0.25] * 3] * 2 and step["test_loss"] is None
    # Values as the API gives them: non-finite as strings, tuples as lists.
    assert step["values"] == {"meta": {"x": "NaN"}, "trace": [1.0, "Infinity"]}

    run = R.RunData({"norm": "none", "lr": 0.1}, {}, analyses=A.load_analyses(tmp_path))
    assert run.analysis("surface")[0] == 5
    with pytest.raises(R.MissingData, match="no spectrum analysis"):
        run.analysis("spectrum")


def test_analysis_steps_resolve_against_the_runs_snapshot_schedule():
    A = _script().A
    run = RunSpec.model_validate({"model": "mlp", "dataset": "mnist1d", "steps": 30,
                                  "snapshots": {"every": 10}})
    (last,) = A.resolved(run, [SPECTRUM])
    assert last.steps == [30]  # null: the last step, as the server stores it
    (listed,) = A.resolved(run, [{**SPECTRUM, "steps": [0, 20]}])
    assert listed.steps == [0, 20]
    with pytest.raises(SystemExit, match=r"step\(s\) \[15\]"):
        A.resolved(run, [{**SPECTRUM, "steps": [15]}])


def test_needs_analyses_follows_the_plan_at_each_scale(monkeypatch):
    monkeypatch.setitem(R.EXPERIMENTS, "t-with", _experiment("t-with", (SPECTRUM,)))
    monkeypatch.setitem(R.EXPERIMENTS, "t-none", _experiment("t-none", None))
    monkeypatch.setitem(R.EXPERIMENTS, "t-empty", _experiment("t-empty", ()))
    assert R.needs_analyses("t-with", "quick")
    assert not R.needs_analyses("t-with", "cpu")  # no plan at that scale
    assert not R.needs_analyses("t-none", "quick") and not R.needs_analyses("t-empty", "quick")


# -- end to end ------------------------------------------------------------------------------


def _hessian_top(spec: RunSpec, aspec: AnalysisSpec, data_dir: Path) -> float:
    """The largest eigenvalue of the Hessian of the analysis' loss (mean cross-entropy over
    its evaluation subset) at the run's last weights, from the dense Hessian in float64. The
    weights come from training the spec again with a snapshot store (the engine is
    deterministic)."""
    from torch.func import functional_call

    from worker.engine.data import load_dataset
    from worker.engine.geometry.evaluate import eval_subset
    from worker.engine.models import build_model
    from worker.engine.sink import MemorySink
    from worker.engine.snapshots import DirectorySnapshotStore
    from worker.engine.trainer import Trainer

    store = DirectorySnapshotStore(data_dir / "snapshots-again")
    assert Trainer(spec, data_dir, "cpu").run(MemorySink(), snapshots=store).status \
        == "succeeded"
    state = store.load(spec.steps)["model"]
    data = load_dataset(spec, data_dir)
    idx = eval_subset(len(data.x_train), aspec.eval_samples, aspec.eval_seed)
    x, y = data.x_train[idx].double(), data.y_train[idx]
    net = build_model(spec, data.in_shape, data.n_outputs, torch.Generator()).double()
    net.load_state_dict(state)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat = torch.cat([state[n].double().reshape(-1) for n in names])

    def loss(w):
        params, at = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = w[at:at + s.numel()].reshape(s)
            at += s.numel()
        return torch.nn.functional.cross_entropy(functional_call(net, params, (x,)), y)

    h = torch.autograd.functional.hessian(loss, flat, vectorize=True)
    return float(torch.linalg.eigvalsh((h + h.T) / 2)[-1])


@pytest.mark.slow
def test_run_writes_analyses_that_load_run_reads_and_copies_share(tmp_path, monkeypatch):
    monkeypatch.setitem(R.EXPERIMENTS, "t-spectrum", _experiment("t-spectrum", (SPECTRUM,)))
    monkeypatch.setitem(R.EXPERIMENTS, "t-copy", _experiment("t-copy", (SPECTRUM,)))
    monkeypatch.setitem(R.EXPERIMENTS, "t-plain", _experiment("t-plain", None))
    script = _script()
    out = tmp_path / "results"
    rc = script.main(["run", "--scale", "quick", "--only", "t-spectrum,t-copy,t-plain",
                      "--out", str(out), "--data-dir", str(tmp_path), "--jobs", "1"])
    assert rc == 0
    (label,) = [p.name for p in (out / "t-spectrum").iterdir()]
    first, copy, plain = (out / k / label for k in ("t-spectrum", "t-copy", "t-plain"))
    # The same spec with the same analyses is trained once: the copy carries the analyses; the
    # same spec without analyses is trained on its own, and has none.
    assert (copy / "analyses.json").read_text() == (first / "analyses.json").read_text()
    assert not (plain / "analyses.json").exists()
    assert script.load_run(plain).analyses == []
    record = json.loads((first / "run.json").read_text())
    assert record["status"] == "succeeded" and record["analyses"]["status"] == ["succeeded"]

    run = script.load_run(first)
    (data,) = run.analyses
    assert data.kind == "spectrum" and data.spec["steps"] == [30]
    step, got = run.analysis("spectrum")
    assert step == 30
    s = got["values"]["spectrum"]
    assert len(s["top_eigenvalues"]) == 2 and s["top_eigenvalues"][0] >= s["top_eigenvalues"][1]
    assert got["loss"] is None and got["x"] is None  # a spectrum has no grid
    spec = RunSpec.model_validate(run.spec)
    want = _hessian_top(spec, AnalysisSpec.model_validate(SPECTRUM), tmp_path)
    assert want > 0
    assert s["top_eigenvalues"][0] == pytest.approx(want, rel=1e-3)
