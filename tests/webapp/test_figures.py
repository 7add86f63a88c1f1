"""Figure builders: valid plotly figures with the traces, fills, axes and marks each figure
promises: bands as filled pairs, a column per normalisation on shared axes or one overlaid
axis, log axes on request, non-finite values as a gap plus a marker, divergence lines, 2/LR,
histogram shares and Fig 11's colour by step."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import pytest

from tests.webapp import test_assets
from webapp import figures
from webapp.client import EtaRecord, Histogram, Series
from webapp.figures import FIGURES, Frame, Options
from webapp.figures.axes import LOG_AXIS
from webapp.figures.etas import BIN_COLORS, line_stride
from webapp.runsets import build_views

NAN, INF = math.nan, math.inf


@pytest.fixture
def views(run_json):
    return build_views([run_json(1, "none", diverged_at=60), run_json(2, "batch")])


def raw(key: str, steps, values) -> Series:
    return Series(key, list(steps), [float(v) for v in values])


def hist(step: int, counts, under=0, over=0, bad=0, layer=1) -> Histogram:
    q = {"q05": -1.0, "q25": -0.5, "q50": 0.0, "q75": 0.5, "q95": 1.0}
    return Histogram(layer, "layer", step, -4.0, 4.0, list(counts), under, over, bad, q,
                     0.0, 1.0)


@pytest.fixture
def frame() -> Frame:
    steps = range(0, 100, 10)
    m1 = {
        "train/loss": raw("train/loss", range(5), [2.0, NAN, INF, 1.5, -INF]),
        "test/loss": raw("test/loss", [0, 4], [2.1, 1.6]),
        "train/acc": raw("train/acc", range(5), [0.1, 0.2, 0.3, 0.4, 0.5]),
        "landscape/loss_min": raw("landscape/loss_min", steps, [1.0] * 9 + [NAN]),
        "landscape/loss_max": raw("landscape/loss_max", steps, [3.0] * 10),
        "landscape/grad_dist_min": raw("landscape/grad_dist_min", steps, [0.1] * 10),
        "landscape/grad_dist_max": raw("landscape/grad_dist_max", steps, [9.0] * 10),
        "landscape/beta": raw("landscape/beta", steps, [4.0] * 10),
        "ics/L2/l2": raw("ics/L2/l2", steps, [0.5] * 10),
        "ics/L2/cos": raw("ics/L2/cos", steps, [0.9] * 10),
        "sharpness/top_eig": raw("sharpness/top_eig", [0, 20], [1.0, 2.0]),
        "grad/norm": raw("grad/norm", range(5), [1, 2, 3, 4, 5]),
    }
    m2 = {k: raw(k, s.steps, [1.0 if not math.isnan(v) else 1.0 for v in s.values])
          for k, s in m1.items()}
    etas = {r: [EtaRecord(t, m, m * 0.1, 1.0, m * (2 if r == 1 else 1)) for t in (0, 90)
                for m in (0.5, 1.0, 2.0, 4.0)] for r in (1, 2)}
    hists = {r: [hist(0, [0, 1, 2, 3, 3, 2, 1, 0], under=1, over=2),
                 hist(10, [0, 0, 4, 4, 4, 4, 0, 0], bad=4)] for r in (1, 2)}
    return Frame(metrics={1: m1, 2: m2}, etas=etas, hists=hists)


def by_name(fig: go.Figure, name: str) -> list:
    return [t for t in fig.data if t.name == name]


@pytest.mark.parametrize("name", list(FIGURES))
@pytest.mark.parametrize("arrange", ["side", "overlay"])
def test_every_figure_is_valid_plotly(name, arrange, views, frame):
    opts = Options(arrange=arrange, log=frozenset(FIGURES), step_range=(0, 50))
    # go.Figure(dict) validates every attribute: the dicts the page sends are checked here.
    fig = go.Figure(figures.build_dict(name, views, frame, opts))
    assert fig.data, name
    assert fig.to_dict() == figures.build(name, views, frame, opts).to_dict()


def test_training_nonfinite_values_are_a_gap_and_a_marker_never_dropped(views, frame):
    fig = figures.build("training", views, frame, Options())
    none = views[0]
    line = next(t for t in fig.data if t.name == none.label and t.showlegend)
    assert list(line.x) == [0, 1, 2, 3, 4]
    assert list(line.y) == [2.0, None, None, 1.5, None]
    marks = next(t for t in fig.data if t.name == f"{none.label}: non-finite"
                 and list(t.x) == [1, 2, 4])
    assert list(marks.marker.symbol) == ["x", "triangle-up", "triangle-down"]
    assert list(marks.y) == [2.0, 2.0, 1.5]  # at the last finite value before each
    assert list(marks.text) == ["train loss NaN", "train loss +inf", "train loss -inf"]


def test_training_overlays_runs_with_test_dotted_and_a_log_toggle(views, frame):
    fig = figures.build("training", views, frame, Options(log=frozenset({"training"})))
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend == [v.label for v in views] + ["train (per step)", "test (held out)"]
    test = [t for t in fig.data if t.name.endswith("(test)")]
    assert {t.line.dash for t in test} == {"dot"} and len(test) == 4  # loss and acc x 2 runs
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type is None  # accuracy
    assert {t.line.color for t in fig.data if t.name == views[1].label} == {views[1].color}
    # Diverged at 60: a dotted line in the run's colour on both panels.
    marks = [s for s in fig.layout.shapes if s.x0 == 60]
    assert len(marks) == 2 and all(s.line.dash == "dot" for s in marks)


def test_downsampled_series_draw_their_envelope(views):
    s = Series("train/loss", [5.0, 15.0], [1.0, math.nan], buckets=True, lo=[0.5, None],
               hi=[2.0, None], nonfinite=[0, 3])
    fig = figures.build("training", views, Frame(metrics={1: {"train/loss": s}}), Options())
    lower, upper = [t for t in fig.data if t.xaxis == "x" and t.fill in (None, "tonexty")
                    and list(t.x) == [5.0, 15.0]][:2]
    assert list(lower.y) == [0.5, None] and list(upper.y) == [2.0, None]
    assert upper.fill == "tonexty"
    marks = next(t for t in fig.data if t.name.endswith("non-finite") and len(t.x))
    assert list(marks.x) == [15.0] and "3 non-finite" in marks.text[0]


@pytest.mark.parametrize("which,lo,hi", [("landscape", 1.0, 3.0), ("gradpred", 0.1, 9.0)])
def test_bands_side_by_side_share_axes_and_overlay_shares_one(which, lo, hi, views, frame):
    side = figures.build(which, views, frame, Options(arrange="side"))
    bands = [t for t in side.data if t.fill == "tonexty"]
    assert [t.name for t in bands] == [v.label for v in views]
    assert [t.xaxis for t in bands] == ["x", "x2"]  # a column per normalisation
    assert side.layout.yaxis2.matches == "y" and side.layout.xaxis2.matches == "x"
    lower = side.data[side.data.index(bands[0]) - 1]
    assert list(bands[0].y) == [hi] * 10 and lower.y[0] == lo
    assert [a.text for a in side.layout.annotations][:2] == [v.label for v in views]
    over = figures.build(which, views, frame, Options(arrange="overlay",
                                                      log=frozenset({which})))
    assert {t.xaxis for t in over.data} == {"x"} and over.layout.yaxis.type == "log"


def test_a_band_touching_nan_has_a_gap_and_a_marker(views, frame):
    fig = figures.build("landscape", views, frame, Options())
    none_band = next(t for t in fig.data if t.fill == "tonexty")
    lower = fig.data[fig.data.index(none_band) - 1]
    assert lower.y[-1] is None and none_band.y[-1] == 3.0
    marks = next(t for t in fig.data if t.name == f"{views[0].label}: non-finite")
    assert list(marks.x) == [90] and list(marks.marker.symbol) == ["x"]


def test_ics_has_a_column_per_layer_and_rows_for_l2_and_cos(views, frame):
    fig = figures.build("ics", views, frame, Options(log=frozenset({"ics"})))
    assert [a.text for a in fig.layout.annotations][:1] == ["weight layer 2"]
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis3.type is None
    assert fig.layout.yaxis3.title.text == "cos(G, G′)"
    l2 = [t for t in fig.data if t.showlegend]
    assert [t.name for t in l2] == [v.label for v in views]


def test_sharpness_draws_the_edge_of_stability(views, frame):
    fig = figures.build("sharpness", views, frame, Options())
    edge = [s for s in fig.layout.shapes if s.yref == "y"]
    assert len(edge) == 1 and edge[0].y0 == pytest.approx(20.0)  # 2 / LR 0.1
    assert any("2/LR = 20" in a.text for a in fig.layout.annotations)


def test_heatmaps_show_shares_with_out_of_range_columns_and_nonfinite_marks(views, frame):
    fig = figures.build("dist_heat", views, frame, Options())
    heats = [t for t in fig.data if t.type == "heatmap"]
    assert len(heats) == 2 and {t.coloraxis for t in heats} == {"coloraxis"}
    h = heats[0]
    assert list(h.x)[0] == pytest.approx(-4.5) and list(h.x)[-1] == pytest.approx(4.5)
    assert list(h.y) == [0, 10]
    first = list(h.z[0])
    assert first[0] == pytest.approx(1 / 15, abs=1e-4)
    assert first[-1] == pytest.approx(2 / 15, abs=1e-4)
    assert sum(first) == pytest.approx(1.0, abs=1e-3)
    assert sum(h.z[1]) == pytest.approx(16 / 20, abs=1e-3)  # 4 of 20 were not finite
    marks = next(t for t in fig.data if t.name.endswith("non-finite") and len(t.y))
    assert list(marks.y) == [10] and marks.text[0] == "4 of 20 non-finite"


def test_quantile_overlay_fills_two_bands_per_run(views, frame):
    fig = figures.build("dist_overlay", views, frame, Options())
    fills = [t for t in fig.data if t.fill == "tonexty"]
    assert len(fills) == 4 and list(fills[0].y) == [1.0, 1.0]
    assert [t.name for t in fig.data if t.showlegend] == [v.label for v in views]


def test_fig11_colours_lines_by_step_on_log_axes(views, frame):
    fig = figures.build("etas", views, frame, Options(log=frozenset({"etas"})))
    run_traces = [t for t in fig.data if t.xaxis == "x" and t.mode == "lines"]
    early = next(t for t in run_traces if len(t.x))
    assert early.line.color == BIN_COLORS[0]
    assert [x for x in early.x] == [0.05, 0.1, 0.2, 0.4, None]
    assert [y for y in early.y] == [1.0, 2.0, 4.0, 8.0, None]
    late = [t for t in run_traces if len(t.x) and t is not early]
    assert late and late[0].line.color == BIN_COLORS[-1]  # step 90 of 100
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert any(t.marker.showscale for t in fig.data)  # the colour bar says which step


def test_fig11_thins_lines_of_long_runs_by_a_fixed_stride(run_json):
    [v] = build_views([run_json(1, "batch", total=10_000)])  # probed every 10: 1000 steps
    assert line_stride(v) == 10
    records = [EtaRecord(t, 1.0, 0.1, 1.0, 1.0) for t in range(0, 10_000, 10)]
    fig = figures.build("etas", [v], Frame(etas={1: records}), Options())
    drawn = sum(1 for t in fig.data if t.mode == "lines" for x in t.x if x is None)
    assert drawn == 100


def test_relog_patches_every_y_axis_and_nothing_else(views):
    p = figures.relog("landscape", views, Options(log=frozenset({"landscape"})))
    ops = p.to_plotly_json()["operations"]
    # The type, and how a log axis is ticked (webapp/figures/axes.py LOG_AXIS).
    assert {tuple(o["location"]) for o in ops} == {
        ("layout", ax, attr) for ax in ("yaxis", "yaxis2") for attr in LOG_AXIS}
    assert {o["location"][2]: o["params"]["value"] for o in ops} == LOG_AXIS
    assert figures.relog("dist_overlay", views, Options()) is None


def test_fig11_fetches_exactly_the_steps_it_draws(run_json):
    from webapp.compare.data import eta_every
    from webapp.figures import etas
    from webapp.runsets import build_views

    run = run_json(1, "batch", total=10_000)  # landscape every 10: 1,000 probed steps
    view = build_views([run])[0]
    every = eta_every(run)
    assert every == etas.drawn_every(view.landscape_every, view.total) == 100
    probed = range(0, 10_000, view.landscape_every)
    drawn = [s for s in probed if etas.drawn(s, view)]
    assert drawn == [s for s in probed if s % every == 0]  # what GET /probes?every= sends
    assert len(drawn) <= etas.MAX_LINES
    few = run_json(2, "none", total=500)
    assert eta_every(few) is None  # 50 probed steps: every one is drawn, no filter


@pytest.mark.parametrize("arrange", ["side", "overlay"])
def test_every_trace_type_the_figures_use_is_in_the_bundle(arrange, views, frame):
    used = set()
    for name in FIGURES:
        fig = figures.build_dict(name, views, frame, Options(arrange=arrange))
        used |= {t.get("type", "scatter") for t in fig["data"]}
    assert used and used <= test_assets.CARTESIAN, used - test_assets.CARTESIAN


def test_figure_arrays_are_compacted_to_seven_significant_digits():
    from webapp.figures.common import compact

    values = [0.1 + 0.2, 1 / 3, 123456.5, 2.0**-40, 7, None, "x", math.inf, [1 / 7, 5]]
    got = compact(values)
    assert got[:3] == [0.3, 0.3333333, 123456.5]  # bucket midpoints keep their half step
    assert got[3] == pytest.approx(2.0**-40, rel=5e-8) and len(repr(got[3])) < 16
    assert got[4:8] == [7, None, "x", math.inf]
    assert got[8] == [0.1428571, 5]


@pytest.mark.parametrize("name", list(FIGURES))
def test_only_axes_with_a_title_carry_a_title_standoff(name, views, frame):
    """An axis with a standoff measures its tick labels to place its title, titled or not:
    the standoff goes on the titled axes only, and none comes from the template."""
    from webapp.style import TEMPLATE, TITLE_STANDOFF

    assert all("standoff" not in TEMPLATE["layout"][a].get("title", {}) for a in ("xaxis", "yaxis"))
    layout = figures.build_dict(name, views, frame, Options())["layout"]
    axes = {k: v for k, v in layout.items() if k[:5] in ("xaxis", "yaxis")}
    titled = [k for k, v in axes.items() if (v.get("title") or {}).get("text")]
    assert titled, name  # every figure names its axes somewhere
    for key, axis in axes.items():
        want = TITLE_STANDOFF if key in titled else None
        assert (axis.get("title") or {}).get("standoff") == want, (name, key)
