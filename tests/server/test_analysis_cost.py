"""server/analysis_cost.py: an analysis's passes over the evaluation set, counted by hand for
each kind, and its memory's parts and the fields that drive each limited quantity."""

from __future__ import annotations

import math

import pytest

from server.analysis_cost import (
    BATCHED_POINTS,
    MB,
    estimate_analysis,
    eval_batch,
    eval_rows,
)
from server.analysis_spec import AnalysisSpec
from server.cost import dataset_bytes, tally
from server.spec import build_spec

MLP = build_spec({"model": "mlp", "depth": 6, "width": 128, "dataset": "mnist1d",
                  "batch_size": 128})  # mnist1d: 4,000 train and 1,000 test rows


def spec(**kw) -> AnalysisSpec:
    return AnalysisSpec.model_validate(kw)


def test_a_default_surface_costs_one_forward_pass_per_point():
    c = estimate_analysis(MLP, spec(kind="surface"))
    assert (c.points, c.steps, c.forward_passes, c.backward_passes, c.hvps) == (441, 1, 441, 0, 0)
    assert c.forward_equivalents == 441 and c.eval_samples == 2048 and c.batch_size == 128


def test_test_set_and_recalibration_add_their_share_per_point():
    c = estimate_analysis(MLP, spec(kind="slice", test_set=True, bn_mode="recalibrated",
                                    recalibration_samples=512, eval_samples=1000,
                                    steps=[0, 5, 10]))
    per_point = 1 + 1000 / 1000 + 512 / 1000
    assert c.points == 3 * 41 and c.forward_passes == pytest.approx(3 * 41 * per_point)
    # eval_samples beyond the training set: the whole set; None: all of it.
    assert eval_rows(MLP, spec(eval_samples=10**6)) == eval_rows(MLP, spec(eval_samples=None))
    assert eval_rows(MLP, spec(eval_samples=None)) == 4000


def test_a_spectrum_counts_lanczos_hutchinson_and_slq():
    s = {"lanczos_steps": 30, "trace_probes": 50, "slq_steps": 80, "slq_vectors": 4}
    c = estimate_analysis(MLP, spec(kind="spectrum", spectrum=s, steps=[0, 100]))
    per_step = math.ceil(1.2 * 30) + 50 + 80 * 4
    assert (c.points, c.hvps, c.backward_passes, c.forward_passes) == (0, 2 * per_step, 2, 0)
    assert c.forward_equivalents == pytest.approx(3 * (2 + 2 * 2 * per_step))
    assert c.drivers["hvps"][:2] == ("spectrum.slq_steps", "spectrum.slq_vectors")
    heavy_trace = estimate_analysis(MLP, spec(kind="spectrum", spectrum={"trace_probes": 2000}))
    assert heavy_trace.drivers["hvps"][0] == "spectrum.trace_probes"


@pytest.mark.parametrize("directions,kind,forward,backward,hvps", [
    ({"kind": "random"}, "slice", 41, 0, 0),
    ({"kind": "gradient"}, "slice", 41, 1, 0),
    ({"kind": "hessian"}, "surface", 441, 0, 36),
    ({"kind": "interpolation"}, "slice", 41 + 2, 0, 0),
    ({"kind": "pca"}, "trajectory", 441 + 7, 0, 0),  # the true loss at 7 snapshots
])
def test_directions_add_what_they_need(directions, kind, forward, backward, hvps):
    c = estimate_analysis(MLP, spec(kind=kind, directions=directions), snapshots=7)
    assert (c.forward_passes, c.backward_passes, c.hvps) == (forward, backward, hvps)


def test_memory_is_activations_state_lanczos_basis_and_data():
    t = tally(MLP)
    per_sample = t.norm_out + t.other_out
    c = estimate_analysis(MLP, spec(kind="surface", batch_size=256))
    want = (4 * 256 * per_sample * BATCHED_POINTS + 4 * t.params * (3 + BATCHED_POINTS)
            + dataset_bytes(MLP)) / MB
    assert c.params == t.params and c.memory_mb == pytest.approx(want)
    # The float64 Lanczos basis: 8 bytes x parameters x steps, the part that grows fastest.
    few = estimate_analysis(MLP, spec(kind="spectrum", spectrum={"lanczos_steps": 10,
                                                                 "slq_steps": 10}))
    many = estimate_analysis(MLP, spec(kind="spectrum", spectrum={"lanczos_steps": 10,
                                                                  "slq_steps": 410}))
    assert (many.memory_mb - few.memory_mb) * MB == pytest.approx(8 * t.params * 400)
    assert many.drivers["memory"][0] == "spectrum.slq_steps"
    wide = build_spec({"model": "mlp", "depth": 2, "width": 4000, "dataset": "mnist1d"})
    big_batch = estimate_analysis(wide, spec(kind="surface", batch_size=4000,
                                             eval_samples=None))
    assert big_batch.drivers["memory"][0] == "batch_size"


def test_the_evaluation_batch_defaults_to_the_run_s_and_fits_the_set():
    assert eval_batch(MLP, spec()) == 128
    assert eval_batch(MLP, spec(batch_size=10_000, eval_samples=300)) == 300
    full = build_spec({"model": "dln", "dataset": "gaussian_linear", "loss": "sum_squares",
                       "n_samples": 64, "batch_size": None})
    assert eval_batch(full, spec()) == 64  # full-batch run: the whole (smaller) set


def test_point_drivers_put_the_larger_axis_first():
    tall = estimate_analysis(MLP, spec(kind="surface", x={"points": 11}, y={"points": 51}))
    assert tall.drivers["points"] == ("y.points", "x.points", "steps")
    line = estimate_analysis(MLP, spec(kind="slice"))
    assert line.drivers["points"] == ("x.points", "steps")
