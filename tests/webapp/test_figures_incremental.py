"""Live updates never redraw: a figure built from the first part of a run and extended with a
Patch of the rest is the figure built from everything at once, for every figure, including
non-finite values that start a new chunk."""

from __future__ import annotations

import math

import pytest

from server.spec import build_spec
from tests.support.synthetic import BASE_SPEC, SyntheticRun
from webapp import figures
from webapp.client import EtaRecord, Histogram, Series
from webapp.compare.data import Cursor, advance
from webapp.figures import FIGURES, Frame, Options
from webapp.runsets import build_views

STEPS = 80
NORMS = {1: "none", 2: "batch"}
DIVERGE = {1: 50}  # run 1 turns NaN at step 50: chunks after it start non-finite


def synthetic(rid: int) -> SyntheticRun:
    spec = build_spec({**BASE_SPEC, "norm": NORMS[rid], "steps": STEPS,
                       "probes": {**BASE_SPEC["probes"], "landscape": {"every": 5},
                                  "ics": {"every": 5, "layers": [3, 5]},
                                  "activations": {"every": 10}, "sharpness": {"every": 10}}})
    return SyntheticRun(spec, seed=rid, diverge_at=DIVERGE.get(rid))


def chunk(rid: int, start: int, stop: int):
    run = synthetic(rid)
    metrics: dict[str, Series] = {}
    etas, hists = [], []
    for step in range(start, stop):
        for key, v in run.scalars(step).items():
            s = metrics.setdefault(key, Series(key))
            s.steps.append(step)
            s.values.append(v)
        etas += [EtaRecord(r["step"], r["multiplier"], r["eta"], r["loss"], r["grad_dist"])
                 for r in run.eta_records(step)]
        hists += [Histogram.from_json(h) for h in run.histograms(step)
                  if h["layer"] == 1 and h["scope"] == "layer"]
    return metrics, etas, hists


def frame_for(start: int, stop: int, cursors: dict[int, Cursor]) -> Frame:
    f = Frame()
    for rid in NORMS:
        f.metrics[rid], f.etas[rid], f.hists[rid] = chunk(rid, start, stop)
        f.last[rid] = dict(cursors[rid].last)
        advance(cursors[rid], f.metrics[rid], f.etas[rid], f.hists[rid])
    return f


@pytest.fixture
def views(run_json):
    runs = []
    for rid, norm in NORMS.items():
        spec = synthetic(rid).spec.model_dump(mode="json")
        runs.append({**run_json(rid, norm, total=STEPS, diverged_at=DIVERGE.get(rid)),
                     "spec": spec})
    return build_views(runs)


def equal(a, b) -> bool:
    """Figures equal, NaN-aware (there are none in figures, but be exact about it)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", list(FIGURES))
@pytest.mark.parametrize("cuts", [(30,), (52,), (7, 33, 51, 66)])
def test_extending_equals_building_everything(name, cuts, views, apply_patch):
    opts = Options(arrange="side", log=frozenset({"ics"}))
    whole = figures.build_dict(name, views, frame_for(0, STEPS, {r: Cursor() for r in NORMS}),
                               opts)
    cursors = {r: Cursor() for r in NORMS}
    bounds = [0, *cuts, STEPS]
    fig = figures.build_dict(name, views, frame_for(bounds[0], bounds[1], cursors), opts)
    grew = False
    for a, b in zip(bounds[1:-1], bounds[2:], strict=True):
        p = figures.extend(name, views, frame_for(a, b, cursors), opts)
        if p is not None:
            fig, grew = apply_patch(fig, p), True
    assert grew, f"{name}: nothing was extended"
    assert equal(fig, whole), name


def test_nothing_new_is_no_patch(views):
    empty = Frame(metrics={1: {}, 2: {}}, etas={1: [], 2: []}, hists={1: [], 2: []})
    assert all(figures.extend(n, views, empty, Options()) is None for n in FIGURES)
