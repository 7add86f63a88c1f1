"""The analysis spec: defaults by kind, the grid's shape and cut, and what it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.analysis_spec import AnalysisSpec, Axis, chunks, grid_index


def test_defaults_follow_the_issue():
    s = AnalysisSpec()  # a surface: 21 x 21 in [-1, 1], random directions, batch statistics
    assert (s.kind, s.bn_mode, s.directions.kind) == ("surface", "batch", "random")
    assert s.grid_shape() == (21, 21) and s.grid_points() == 441
    assert s.eval_samples == 2048 and s.spectrum.top_k == 5
    assert (s.spectrum.slq_steps, s.spectrum.slq_vectors) == (80, 4)
    sl = AnalysisSpec(kind="slice")
    assert sl.grid_shape() == (1, 41) and sl.y_axis() is None
    assert AnalysisSpec(kind="spectrum").grid_points() == 0
    tr = AnalysisSpec(kind="trajectory", directions={"seed": 3})  # its one kind: pca
    assert (tr.directions.kind, tr.directions.seed) == ("pca", 3)
    assert AnalysisSpec(kind="trajectory").directions.kind == "pca"


def test_axis_values_include_both_ends_and_are_evenly_spaced():
    v = Axis(lo=-1, hi=1, points=41).values()
    assert len(v) == 41 and v[0] == -1.0 and v[-1] == pytest.approx(1.0, abs=1e-15)
    assert v[20] == pytest.approx(0.0, abs=1e-15)
    assert Axis(lo=0.5, hi=0.5, points=1).values() == [0.5]


def test_interpolation_defaults_to_a_line_past_both_ends():
    s = AnalysisSpec(kind="slice", directions={"kind": "interpolation"})
    x = s.x_axis()
    assert (x.lo, x.hi, x.points) == (-0.5, 1.5, 41)
    assert 0.0 in x.values() and 1.0 in x.values()  # theta_a and theta_b are grid points


@pytest.mark.parametrize("body, where", [
    ({"kind": "surface", "directions": {"kind": "gradient"}}, "does not apply"),
    ({"kind": "trajectory", "directions": {"kind": "random"}}, "does not apply"),
    ({"x": {"lo": 1, "hi": -1}}, "lo must be below hi"),
    ({"x": {"points": 102}}, "less than or equal to 101"),
    ({"x": {"lo": -1e308}}, "greater than or equal to -100"),
    ({"steps": [-1]}, "greater than or equal to 0"),
    ({"steps": [10**10]}, "less than or equal to 1000000000"),
    ({"steps": list(range(65))}, "at most 64"),
    ({"spectrum": {"top_k": 10, "lanczos_steps": 5}}, "at least top_k"),
    ({"kind": "slice", "directions": {"kind": "interpolation", "source": "run"}},
     "needs other_run"),
    ({"bn_mode": "train"}, "batch"),
    ({"colour": "red"}, "Extra inputs"),
])
def test_refuses_what_cannot_be_run(body, where):
    with pytest.raises(ValidationError, match=where):
        AnalysisSpec.model_validate(body)


def test_steps_are_sorted_and_unique():
    assert AnalysisSpec(steps=[30, 0, 30, 10]).steps == [0, 10, 30]


def test_grid_index_and_chunks_cover_every_point_once():
    nx, ny = 7, 5
    flat = sorted(grid_index(ix, iy, nx) for iy in range(ny) for ix in range(nx))
    assert flat == list(range(nx * ny))
    cut = chunks(nx * ny, 8)
    assert [i for c in cut for i in c] == list(range(nx * ny))
    assert [len(c) for c in cut] == [8, 8, 8, 8, 3]
    assert chunks(0, 8) == []
