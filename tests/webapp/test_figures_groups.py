"""Seed-group traces (webapp/figures/groups.py): the centre line and band carry exactly the
server's numbers at the drawn x, the band is never smoothed, the raw centre stays faint beneath
a smoothed one, non-finite buckets get markers, every trace of a group shares its legend
group, and the figures are valid plotly."""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go
import pytest

from webapp.figures.groups import band_traces, group_traces, polygon
from webapp.figures.smoothing import ema
from webapp.style import norm_color, rgba

try:  # webapp/client.py's GroupSeries (contract A); the same fields until it is merged
    from webapp.client import GroupSeries
except ImportError:  # pragma: no cover - before h1-groups lands
    @dataclass
    class GroupSeries:  # type: ignore[no-redef]
        key: str
        steps: list[float]
        center: list[float | None]
        lo: list[float | None]
        hi: list[float | None]
        n: list[int]
        nonfinite: list[int]

NAN, INF = math.nan, math.inf
BLUE = norm_color("batch")


def series(key="train/loss", steps=None, center=None, lo=None, hi=None, n=None, bad=None):
    steps = steps if steps is not None else [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    k = len(steps)
    center = center if center is not None else [2.0, 1.6, 1.3, 1.25, 1.0, 0.9][:k]
    lo = lo if lo is not None else [c - 0.2 for c in center]
    hi = hi if hi is not None else [c + 0.3 for c in center]
    return GroupSeries(key, list(steps), list(center), list(lo), list(hi),
                       n if n is not None else [3] * k, bad if bad is not None else [0] * k)


def by_role(traces, role):
    found = [t for t in traces if t["meta"]["role"] == role]
    assert len(found) <= 1
    return found[0] if found else None


def edges(t):
    """(x, upper, lower) of each stretch of a fill='toself' polygon."""
    out, xs, ys = [], [], []
    for a, b in [*zip(t["x"], t["y"], strict=True), (None, None)]:
        if a is None:
            if xs:
                k = len(xs) // 2
                assert xs[k:] == xs[:k][::-1]  # the lower edge retraces x backwards
                out.append((xs[:k], ys[:k], ys[k:][::-1]))
            xs, ys = [], []
        else:
            xs.append(a)
            ys.append(b)
    return out


def test_unsmoothed_centre_and_band_are_the_servers_numbers():
    gs = series()
    x = [s / 10 for s in gs.steps]  # e.g. epochs
    traces = group_traces(gs, x=x, name="BatchNorm", color=BLUE, legendgroup="g1",
                          showlegend=True)
    assert [t["meta"]["role"] for t in traces] == ["band", "center"]
    center = by_role(traces, "center")
    assert center["x"] == x and center["y"] == gs.center
    assert [row[:2] for row in center["customdata"]] == [[a, b] for a, b in
                                                         zip(gs.lo, gs.hi, strict=True)]
    assert edges(by_role(traces, "band")) == [(x, gs.hi, gs.lo)]
    band = by_role(traces, "band")
    assert band["fill"] == "toself" and band["fillcolor"] == rgba(BLUE, 0.18)
    assert center["line"]["color"] == BLUE
    go.Figure({"data": traces})  # valid plotly


@pytest.mark.parametrize("w", [0.5, 0.9])
def test_smoothing_moves_the_centre_only(w):
    gs = series()
    plain = group_traces(gs, x=gs.steps, name="g", color=BLUE, legendgroup="g",
                         showlegend=True)
    traces = group_traces(gs, x=gs.steps, name="g", color=BLUE, smooth=w, legendgroup="g",
                          showlegend=True)
    assert [t["meta"]["role"] for t in traces] == ["band", "raw", "center"]
    assert by_role(traces, "band") == by_role(plain, "band")  # never smoothed
    raw = by_role(traces, "raw")
    assert raw["y"] == gs.center and raw["x"] == gs.steps
    assert raw["opacity"] < 0.5 and raw["showlegend"] is False
    assert traces.index(raw) < traces.index(by_role(traces, "center"))  # beneath
    center = by_role(traces, "center")
    assert center["y"] == ema(gs.steps, gs.center, w)
    assert center["y"] != gs.center
    assert [row[2] for row in center["customdata"]] == gs.center  # the hover's raw value
    assert [row[:2] for row in center["customdata"]] == [[a, b] for a, b in
                                                         zip(gs.lo, gs.hi, strict=True)]
    go.Figure({"data": traces})


def test_smoothing_follows_the_drawn_x():
    # Uneven x (wall time): the smoothing is time-weighted along it, not along the steps.
    gs = series()
    wall = [0.0, 1.0, 2.0, 30.0, 31.0, 32.0]
    center = by_role(group_traces(gs, x=wall, name="g", color=BLUE, smooth=0.8,
                                  legendgroup="g", showlegend=True), "center")
    assert center["y"] == ema(wall, gs.center, 0.8)
    assert center["y"] != ema(gs.steps, gs.center, 0.8)


def test_gaps_split_the_band_and_break_the_line():
    gs = series(center=[2.0, NAN, 1.3, 1.2, None, 0.9],
                lo=[1.8, NAN, 1.1, None, 0.7, 0.8], hi=[2.3, NAN, 1.6, 1.5, 1.2, INF],
                n=[3, 0, 3, 3, 0, 3], bad=[0, 3, 0, 0, 1, 0])
    traces = group_traces(gs, x=None, name="g", color=BLUE, legendgroup="g",
                          showlegend=False)
    center = by_role(traces, "center")
    assert center["x"] == gs.steps  # x=None: the steps
    assert center["y"] == [2.0, None, 1.3, 1.2, None, 0.9]
    assert center["connectgaps"] is False
    # Band stretches where lo and hi are both finite: steps 0, 20 and 40 (not 50: hi is inf).
    assert edges(by_role(traces, "band")) == [([0.0], [2.3], [1.8]), ([20.0], [1.6], [1.1]),
                                              ([40.0], [1.2], [0.7])]
    marks = by_role(traces, "nonfinite")
    assert marks["x"] == [10.0, 40.0]
    assert marks["y"] == [2.0, 1.2]  # on the line, at the last finite centre
    assert marks["text"] == ["3 of 3 runs non-finite", "1 of 1 run non-finite"]
    go.Figure({"data": traces})


def test_legend_grouping():
    gs = series()
    a = group_traces(gs, x=None, name="A", color=BLUE, smooth=0.6, legendgroup="ga",
                     showlegend=True)
    b = group_traces(gs, x=None, name="B", color="#ff7f0e", smooth=0.6, legendgroup="gb",
                     showlegend=False, axes={"xaxis": "x2", "yaxis": "y2"})
    assert {t["legendgroup"] for t in a} == {"ga"} and {t["legendgroup"] for t in b} == {"gb"}
    assert [t["name"] for t in a if t["showlegend"]] == ["A"]
    assert not any(t["showlegend"] for t in b)
    assert {(t["xaxis"], t["yaxis"]) for t in b} == {("x2", "y2")}
    assert {(t["xaxis"], t["yaxis"]) for t in a} == {("x", "y")}


def test_probe_band_of_medians_and_envelope():
    steps = [0.0, 10.0, 20.0, 30.0]
    lo = series("landscape/loss_min", steps, center=[1.0, 0.9, 0.8, 0.7],
                lo=[0.8, 0.7, 0.6, 0.5], hi=[1.2, 1.1, 1.0, 0.9])
    hi = series("landscape/loss_max", steps, center=[3.0, 2.5, 2.0, 1.5],
                lo=[2.5, 2.0, 1.5, 1.0], hi=[3.5, 3.0, 2.5, 2.0])
    traces = band_traces(lo, hi, x=[s * 2 for s in steps], name="BatchNorm", color=BLUE,
                         legendgroup="g", showlegend=True)
    assert [t["meta"]["role"] for t in traces] == ["envelope", "band"]
    x = [0.0, 20.0, 40.0, 60.0]
    assert edges(by_role(traces, "envelope")) == [(x, hi.hi, lo.lo)]
    band = by_role(traces, "band")
    assert edges(band) == [(x, hi.center, lo.center)]
    assert band["text"] == ["median of the max"] * 4 + ["median of the min"] * 4
    env = by_role(traces, "envelope")
    assert env["fillcolor"] == rgba(BLUE, 0.10) and band["fillcolor"] == rgba(BLUE, 0.32)
    assert band["showlegend"] is True and env["showlegend"] is False
    assert {t["legendgroup"] for t in traces} == {"g"}
    go.Figure({"data": traces})


def test_probe_band_pairs_by_step_and_marks_non_finite():
    lo = series("landscape/loss_min", [0.0, 10.0, 20.0], center=[1.0, NAN, 0.8],
                n=[3, 1, 3], bad=[0, 2, 0])
    hi = series("landscape/loss_max", [0.0, 20.0], center=[3.0, 2.0], n=[3, 3], bad=[0, 0])
    traces = band_traces(lo, hi, x=None, name="g", color=BLUE, legendgroup="g",
                         showlegend=True)
    band = by_role(traces, "band")
    # Step 10 has no max bucket and a NaN min: the band has a gap there.
    assert edges(band) == [([0.0], [3.0], [1.0]), ([20.0], [2.0], [0.8])]
    assert band["text"] == ["median of the max", "median of the min", None,
                            "median of the max", "median of the min"]
    marks = by_role(traces, "nonfinite")
    assert marks["x"] == [10.0] and marks["y"] == [1.0]
    go.Figure({"data": traces})


def test_polygon_closes_each_stretch():
    px, py = polygon([0, 1, 2, 3, 4], [0, 1, None, 3, 4], [5, 6, 7, 8, INF])
    assert px == [0, 1, 1, 0, None, 3, 3]
    assert py == [5, 6, 1, 0, None, 8, 3]
    assert polygon([], [], []) == ([], [])
