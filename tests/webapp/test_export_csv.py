"""A figure's CSV export (webapp/figures/export_csv.py) read back with the csv module and
compared with the figure dict it came from: every drawn trace of every figure the app draws
(lines, markers, tonexty and toself fills, heatmaps, contours, surfaces, 3D points, error
bars, seed groups) with its x and y exactly as drawn, lo/hi where the figure has them, z in
long form for grids, non-finite values as nan/inf/-inf, hidden traces and legend keys left
out."""

from __future__ import annotations

import csv
import io
import math
import random

import plotly.graph_objects as go
import pytest

from tests.webapp.landscape_data import analysis_json, spectrum_values
from tests.webapp.test_figures import frame, views  # noqa: F401 - fixtures
from tests.webapp.test_figures_groups import series
from webapp import figures
from webapp.figures import FIGURES, Options
from webapp.figures.export_csv import HEADER, figure_csv
from webapp.figures.geometry import all_grids, shared_range
from webapp.figures.geometry_spectrum import density_figure, spectrum_over_training
from webapp.figures.geometry_surface import (
    contour_figure,
    slices_figure,
    surface_figure,
    trajectory_figure,
)
from webapp.figures.groups import band_traces, group_traces

NAN, INF = math.nan, math.inf
GRIDS = ("heatmap", "contour", "surface")


def parse(text: str) -> tuple[str, list[str], dict[str, list[dict]]]:
    """(comment, header, rows by trace in order of appearance), numbers as floats."""
    first, rest = text.split("\n", 1)
    assert first.startswith("# ")
    reader = csv.reader(io.StringIO(rest))
    header = next(reader)
    by_trace: dict[str, list[dict]] = {}
    for row in reader:
        rec = dict(zip(header, row, strict=True))
        for k in ("x", "y", "lo", "hi", "z"):
            if k in rec:
                rec[k] = None if rec[k] == "" else float(rec[k])
        by_trace.setdefault(rec["trace"], []).append(rec)
    return first[2:], header, by_trace


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (math.isnan(a) and math.isnan(b)) or float(a) == float(b)


def same_list(a, b) -> bool:
    return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b, strict=True))


def drawn(fig: dict) -> list[dict]:
    """The traces an export must hold: shown, and with something to draw."""
    out = []
    for t in fig["data"]:
        if t.get("visible", True) in (False, "legendonly"):
            continue
        if t.get("type", "scatter") in GRIDS:
            z = t.get("z") or []
            if any(v is not None for row in z for v in row):
                out.append(t)
        elif any(x is not None and y is not None
                 for x, y in zip(t.get("x") or [], t.get("y") or [], strict=False)):
            out.append(t)
    return out


def check_round_trip(fig: dict) -> dict[str, list[dict]]:
    """The export read back equals the figure: per trace, in order, every point."""
    text = figure_csv(fig)
    _, header, by_trace = parse(text)
    traces = drawn(fig)
    assert header[:6] == HEADER
    assert ("z" in header) == any(t.get("type") in (*GRIDS, "scatter3d") for t in traces)
    assert len(by_trace) == len(traces)
    for (label, rows), t in zip(by_trace.items(), traces, strict=True):
        assert label.startswith(str(t.get("name", "trace")))
        if t.get("type", "scatter") in GRIDS:
            xs, ys, z = list(t["x"]), list(t["y"]), t["z"]
            assert len(rows) == sum(len(r) for r in z)
            for rec in rows:
                i, j = ys.index(rec["y"]), xs.index(rec["x"])
                assert same(rec["z"], z[i][j])
        else:
            assert same_list([r["x"] for r in rows], list(t["x"]))
            assert same_list([r["y"] for r in rows], list(t["y"]))
            if t.get("type") == "scatter3d":
                assert same_list([r["z"] for r in rows], list(t["z"]))
    return by_trace


@pytest.mark.parametrize("name", list(FIGURES))
@pytest.mark.parametrize("arrange", ["side", "overlay"])
def test_every_dashboard_figure_round_trips(name, arrange, views, frame):  # noqa: F811
    fig = figures.build_dict(name, views, frame, Options(arrange=arrange), final=True)
    check_round_trip(fig)


def test_dashboard_figures_keep_their_gaps_and_leave_legend_keys_out(views, frame):  # noqa: F811
    fig = figures.build_dict("training", views, frame, Options())
    by_trace = check_round_trip(fig)
    assert "train (per step)" not in by_trace  # a legend key draws nothing
    # The line's gaps (non-finite losses) are empty y fields at their x.
    line = by_trace[f"{views[0].label} · loss"]
    assert [r["y"] for r in line] == [2.0, None, None, 1.5, None]
    # The same run in the loss and accuracy panels: told apart by the panel's y title.
    assert f"{views[0].label} · accuracy" in by_trace


@pytest.fixture
def geometry(views):  # noqa: F811
    surf = [analysis_json(11, 1, holes={(0, 0): "nan", (1, 1): None}),
            analysis_json(12, 2, scale=2.0)]
    spec = [analysis_json(21, 1, kind="spectrum",
                          values={100: spectrum_values([3.0, 2.0], 5.0, 0.1),
                                  200: spectrum_values([4.0, 1.0], 6.0, 0.3)})]
    traj = analysis_json(31, 1, kind="trajectory")
    slices = [analysis_json(41, 1, kind="slice")]
    rng = shared_range(all_grids(surf))
    return {
        "contour": contour_figure(surf[0], views[0], None, rng),
        "surface": surface_figure(surf[0], views[0], None, rng),
        "trajectory": trajectory_figure(traj, views[0], rng),
        "slices": slices_figure(list(zip(views, slices, strict=False)), None),
        "density": density_figure(list(zip(views, spec, strict=False)), None),
        "spectrum": spectrum_over_training(list(zip(views, spec, strict=False))),
    }


@pytest.mark.parametrize("which", ["contour", "surface", "trajectory", "slices", "density",
                                   "spectrum"])
def test_landscape_tab_figures_round_trip(geometry, which):
    fig = geometry[which].to_dict()  # numpy arrays and all, as plotly holds them
    comment = figure_csv(fig).splitlines()[0]
    # The title on one line, its markup gone: "loss contour · ... · BN mode: ...".
    assert comment.startswith("# ") and "BN mode" in comment and "<" not in comment
    assert "\n" not in comment
    check_round_trip(fig)


def test_error_bars_are_lo_and_hi(geometry):
    fig = geometry["spectrum"].to_dict()
    by_trace = parse(figure_csv(fig))[2]
    trace = next(t for t in fig["data"] if "error_y" in t)
    rows = next(v for k, v in by_trace.items() if k.startswith(trace["name"]))
    for r, y, e in zip(rows, trace["y"], trace["error_y"]["array"], strict=True):
        assert r["lo"] == pytest.approx(y - e) and r["hi"] == pytest.approx(y + e)


def test_heatmap_long_form_cells(views, frame):  # noqa: F811
    fig = figures.build_dict("dist_heat", views, frame, Options())
    _, header, by_trace = parse(figure_csv(fig))
    assert header == [*HEADER, "z"]
    heat = next(t for t in fig["data"] if t["type"] == "heatmap")
    rows = by_trace[heat["name"]]
    assert len(rows) == len(heat["y"]) * len(heat["x"])
    # Row-major: the first step's row of bins, left to right, then the next step's.
    assert [(r["x"], r["y"], r["z"]) for r in rows[:len(heat["x"])]] == [
        (x, heat["y"][0], z) for x, z in zip(heat["x"], heat["z"][0], strict=True)]


def test_grids_without_axes_transposed_and_2d_coordinates():
    fig = {"data": [
        {"type": "heatmap", "name": "h", "z": [[1.0, 2.0, 3.0], [4.0, None, NAN]],
         "x0": 10, "dx": 5},
        {"type": "heatmap", "name": "t", "z": [[1.0, 2.0], [3.0, 4.0]], "x": [0, 1],
         "y": [7, 8], "transpose": True},
        {"type": "surface", "name": "s", "z": [[1.0, 2.0], [3.0, 4.0]],
         "x": [[0.0, 1.0], [0.5, 1.5]], "y": [[0.0, 0.0], [1.0, 1.0]]},
    ], "layout": {}}
    rows = parse(figure_csv(fig))[2]
    assert [(r["x"], r["y"], r["z"]) for r in rows["h"]] == [
        (10, 0, 1.0), (15, 0, 2.0), (20, 0, 3.0), (10, 1, 4.0), (15, 1, None)] + [
        (20, 1, rows["h"][-1]["z"])]
    assert math.isnan(rows["h"][-1]["z"])
    # transpose: z[i][j] sits at x[i], y[j]
    assert [(r["x"], r["y"], r["z"]) for r in rows["t"]] == [
        (0, 7, 1.0), (1, 7, 3.0), (0, 8, 2.0), (1, 8, 4.0)]
    assert [(r["x"], r["y"], r["z"]) for r in rows["s"]] == [
        (0.0, 0.0, 1.0), (1.0, 0.0, 2.0), (0.5, 1.0, 3.0), (1.5, 1.0, 4.0)]


def test_seed_groups_export_centre_with_band_and_polygons_as_drawn():
    gs = series(center=[2.0, NAN, 1.3, 1.2, 1.1, 0.9], lo=[1.8, NAN, 1.1, 1.0, 0.9, 0.8],
                hi=[2.3, NAN, 1.6, 1.5, 1.2, 1.1], n=[3, 0, 3, 3, 3, 3], bad=[0, 3, 0, 0, 0, 0])
    traces = group_traces(gs, x=None, name="BatchNorm", color="#1f77b4", smooth=0.6,
                          legendgroup="g", showlegend=True)
    lo = series("landscape/loss_min")
    hi = series("landscape/loss_max", center=[c + 1 for c in lo.center])
    traces += band_traces(lo, hi, x=None, name="BN probe", color="#1f77b4",
                          legendgroup="g", showlegend=True)
    fig = {"data": traces, "layout": {"title": {"text": "train <b>loss</b><br>3 seeds"}}}
    text = figure_csv(fig)
    assert text.splitlines()[0] == "# train loss · 3 seeds"
    by_trace = check_round_trip(fig)
    centre = by_trace["BatchNorm"]
    assert [r["lo"] for r in centre] == [1.8, None, 1.1, 1.0, 0.9, 0.8]
    assert [r["hi"] for r in centre] == [2.3, None, 1.6, 1.5, 1.2, 1.1]
    assert all(r["figure"] == "train loss · 3 seeds" for rs in by_trace.values() for r in rs)
    # The band polygon as drawn: upper edge forwards, lower backwards, a break between
    # stretches (an empty row), no lo/hi of its own.
    band = by_trace["BatchNorm (min–max)"]
    assert [r["x"] for r in band] == [0.0, 0.0, None, 20.0, 30.0, 40.0, 50.0, 50.0, 40.0,
                                      30.0, 20.0]
    assert [r["y"] for r in band] == [2.3, 1.8, None, 1.6, 1.5, 1.2, 1.1, 0.8, 0.9, 1.0, 1.1]
    assert all(r["lo"] is None and r["hi"] is None for r in band)
    assert [r["y"] for r in by_trace["BatchNorm (raw)"]] == [2.0, None, 1.3, 1.2, 1.1, 0.9]


def test_tonexty_pairs_export_each_edge(views, frame):  # noqa: F811
    fig = figures.build_dict("landscape", views, frame, Options(arrange="overlay"))
    by_trace = check_round_trip(fig)
    lower = [k for k in by_trace if k.startswith(views[1].label) and "lower" in k]
    assert lower, by_trace.keys()
    upper = next(t for t in fig["data"] if t.get("fill") == "tonexty"
                 and t["name"] == views[1].label)
    assert [r["y"] for r in by_trace[views[1].label]] == upper["y"]


def test_non_finite_values_and_exact_floats():
    rng = random.Random(7)
    ys = [rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-300, 300) for _ in range(200)]
    ys += [NAN, INF, -INF, 0.1 + 0.2, 5e-324, None]
    fig = {"data": [{"type": "scatter", "x": list(range(len(ys))), "y": ys, "name": "a,b \"c\""}],
           "layout": {}}
    text = figure_csv(fig, name="mine")
    assert text.splitlines()[0] == "# mine"
    rows = parse(text)[2]['a,b "c"']
    assert same_list([r["y"] for r in rows], ys)
    assert all(r["figure"] == "mine" for r in rows)
    assert [line.split(",")[-3] for line in text.splitlines()[-6:-3]] == ["nan", "inf", "-inf"]


def test_hidden_traces_and_empty_slots_are_left_out():
    fig = {"data": [
        {"type": "scatter", "name": "shown", "x": [1, 2], "y": [3, 4]},
        {"type": "scatter", "name": "off", "x": [1], "y": [1], "visible": False},
        {"type": "scatter", "name": "legend-only", "x": [1], "y": [1], "visible": "legendonly"},
        {"type": "scatter", "name": "key", "x": [None], "y": [None]},
        {"type": "scatter", "name": "empty", "x": [], "y": []},
        {"type": "heatmap", "name": "blank", "z": [[None, None]]},
    ], "layout": {"title": "plain title"}}
    comment, header, rows = parse(figure_csv(fig))
    assert comment == "plain title" and header == HEADER and list(rows) == ["shown"]
    assert figure_csv({"data": [], "layout": {}}) == "# figure\n" + ",".join(HEADER) + "\n"


def test_duplicate_names_are_told_apart():
    fig = {"data": [
        {"type": "scatter", "name": "run", "x": [0], "y": [1], "yaxis": "y"},
        {"type": "scatter", "name": "run", "x": [0], "y": [2], "yaxis": "y2"},
        {"type": "scatter", "name": "run", "x": [0], "y": [3], "yaxis": "y2"},
        {"type": "scatter", "x": [0], "y": [4]},
    ], "layout": {"yaxis": {"title": {"text": "loss"}}, "yaxis2": {"title": {"text": "acc"}}}}
    rows = parse(figure_csv(fig))[2]
    assert list(rows) == ["run · loss", "run · acc [1]", "run · acc [2]", "trace 3"]


def test_valid_plotly_input_is_what_is_exported():
    # The dict a page sends and the Figure plotly validates export the same rows.
    gs = series()
    fig = {"data": group_traces(gs, x=None, name="g", color="#1f77b4", smooth=0.5,
                                legendgroup="g", showlegend=True), "layout": {}}
    assert figure_csv(fig) == figure_csv(go.Figure(fig).to_dict())


def test_typed_arrays_as_plotly_sends_numpy():
    np = pytest.importorskip("numpy")
    z = np.array([[0.5, NAN], [INF, -2.25]])
    fig = go.Figure([go.Heatmap(z=z, x=np.array([1, 2], dtype=np.int8), y=[10.0, 20.0],
                                name="h"),
                     go.Scatter(x=np.arange(3, dtype=np.uint16),
                                y=np.array([1.5, 2.5, 3.5], dtype=np.float32), name="s",
                                error_y={"type": "data", "array": np.array([0.5, 0.5, 0.5])})])
    sent = fig.to_plotly_json()  # what Dash serialises: {"dtype", "bdata", "shape"}
    assert "bdata" in sent["data"][0]["z"]
    rows = parse(figure_csv(sent))[2]
    got = [(r["x"], r["y"], r["z"]) for r in rows["h"]]
    assert got[0] == (1, 10.0, 0.5) and math.isnan(got[1][2]) and got[2:] == [
        (1, 20.0, INF), (2, 20.0, -2.25)]
    assert [(r["x"], r["y"], r["lo"], r["hi"]) for r in rows["s"]] == [
        (0, 1.5, 1.0, 2.0), (1, 2.5, 2.0, 3.0), (2, 3.5, 3.0, 4.0)]
