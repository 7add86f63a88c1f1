"""The numbers beside a spectrum request's figures: per run at the shown step, lambda_1, the
rest of the top-k, the trace with its standard error and the gradient's share in the top-k
eigenspace; a median row per normalisation with several runs (seeds); non-finite values as
data, a run without a spectrum yet left out."""

from __future__ import annotations

import math

import pytest

from tests.webapp.landscape_data import analysis_json, spectrum_values
from tests.webapp.layout_walk import texts
from webapp.landscape.spectrum_table import medians, spectrum_rows, spectrum_table
from webapp.runsets import build_views


@pytest.fixture
def seeded(run_json):
    """Two seeds of each: runs 1, 3 without normalisation, runs 2, 4 with BatchNorm."""
    views = build_views([run_json(1, "none", seed=0), run_json(2, "batch", seed=0),
                         run_json(3, "none", seed=1), run_json(4, "batch", seed=1)])
    by_id = {v.id: v for v in views}
    return [by_id[i] for i in (1, 2, 3, 4)]  # seeded[i] is run i + 1


def detail(aid: int, rid: int, top, trace, stderr, share, steps=(100,)):
    return analysis_json(aid, rid, kind="spectrum", steps=steps, values={
        s: spectrum_values(top, trace, stderr, share=share) for s in steps})


def test_each_run_at_the_shown_step_then_each_normalisations_median(seeded):
    items = list(zip(seeded, [detail(1, 1, [40.0, 9.0, 3.0], 60.0, 2.0, 0.9),
                              detail(2, 2, [4.0, 3.0, 2.0], 10.0, 0.5, 0.2),
                              detail(3, 3, [30.0, 8.0, 2.0], 50.0, 1.5, 0.8),
                              detail(4, 4, [6.0, 3.0, 1.0], 12.0, 0.25, 0.4)], strict=True))
    rows = spectrum_rows(items, None)
    assert [(r["l1"], r["trace"], r["stderr"], r["share"], r["step"]) for r in rows] == [
        (40.0, 60.0, 2.0, 0.9, 100), (4.0, 10.0, 0.5, 0.2, 100),
        (30.0, 50.0, 1.5, 0.8, 100), (6.0, 12.0, 0.25, 0.4, 100)]
    med = {m["norm"]: m for m in medians(rows)}
    assert (med["none"]["l1"], med["none"]["trace"]) == (35.0, 55.0)
    assert (med["batch"]["l1"], med["batch"]["trace"]) == (5.0, 11.0)
    assert (med["none"]["share"], med["batch"]["share"]) == pytest.approx((0.85, 0.3))
    cells = texts(spectrum_table(items, None))
    assert cells[:6] == ["run", "step", "λ1", "λ2 … λk", "trace ± s.e.",
                         "gradient share in top-k"]
    assert [seeded[0].label, "100", "40", "9, 3", "60 ± 2", "0.900"] == cells[6:12]
    assert "no normalisation: median of 2 runs" in cells and "35" in cells


def test_non_finite_values_are_shown_and_left_out_of_the_median(seeded):
    items = [(seeded[0], detail(1, 1, ["inf", 2.0], "nan", 1.0, 0.5)),
             (seeded[2], detail(3, 3, [10.0, 2.0], 20.0, 1.0, 0.7))]
    rows = spectrum_rows(items, None)
    assert math.isinf(rows[0]["l1"]) and math.isnan(rows[0]["trace"])
    (med,) = medians(rows)
    assert (med["l1"], med["trace"]) == (10.0, 20.0)  # the finite values only
    cells = texts(spectrum_table(items, None))
    assert "inf" in cells and "nan ± 1" in cells


def test_the_step_shown_and_a_run_without_a_spectrum_yet(seeded):
    two = detail(1, 1, [5.0, 1.0], 9.0, 0.3, 0.2, steps=(0, 100))
    two["steps"]["100"]["values"] = spectrum_values([50.0, 2.0], 90.0, 3.0, share=0.9)
    empty = analysis_json(2, 2, kind="spectrum", steps=(100,))  # no values yet
    rows = spectrum_rows([(seeded[0], two), (seeded[1], empty)], 0)
    assert [(r["step"], r["l1"]) for r in rows] == [(0, 5.0)]
    assert spectrum_rows([(seeded[0], two)], None)[0]["l1"] == 50.0  # the last step
    assert spectrum_table([(seeded[1], empty)], None) is None
