"""The compare view as the URL asks for it: the view state <-> query string round trip (pure),
the view transforms (x axes, log x, zoom, smoothing), and figures by seed group against the
real API, their centre and band checked against a brute-force computation over the runs."""

from __future__ import annotations

import math
import statistics

import pytest
from dash import no_update
from sqlalchemy import update

from server.db.models import Run
from tests.support.seeded import seeded_experiment
from webapp.app import create_dash
from webapp.compare import update as ctl
from webapp.compare.grouped import GROUPED_FIGURES
from webapp.compare.transform import RAW_OPACITY, XAxis, apply_view, resolve_x, smooth_traces
from webapp.compare.viewstate import ViewState, from_query, to_query
from webapp.compare.viewsync import controls_of_view, search_of, view_of
from webapp.figures import FIGURES
from webapp.figures.axes import cell_axes
from webapp.runsets import RunView, grid_of
from webapp.style import norm_label

SMALL = {"probes": {"landscape": {"every": 5}, "ics": {"every": 5, "layers": [3, 5]},
                    "activations": {"every": 10}, "sharpness": {"every": 20}}}

# -- the URL ---------------------------------------------------------------------------------

VIEWS = [
    ViewState(),
    ViewState(runs=(3, 1, 2), group=True, center="mean", band="std", smooth=0.6, x="epoch",
              logx=True, logy=("ics", "training"), range=(10.0, 250.5),
              figs=("training", "landscape"), layer=3),
    ViewState(group=False, logy=(), single=True, arrange="overlay", steps=(5, None),
              scope="unit", x="wall"),
]


@pytest.mark.parametrize("view", VIEWS)
def test_a_view_survives_the_round_trip_through_its_query(view):
    query = to_query(view)
    assert from_query(query) == view
    assert from_query(query.lstrip("?")) == view
    # Dash hands a page its query parameters as keyword arguments.
    from urllib.parse import parse_qsl
    assert from_query(dict(parse_qsl(query[1:], keep_blank_values=True))) == view


def test_the_query_names_only_what_differs_from_the_default_in_contract_order():
    assert to_query(ViewState()) == ""
    q = to_query(VIEWS[1])
    assert q == ("?runs=3,1,2&group=1&center=mean&band=std&smooth=0.6&x=epoch&logx=1"
                 "&logy=ics,training&range=10,250.5&figs=training,landscape&layer=3")
    assert to_query(ViewState(logy=())) == "?logy="  # none log: not the page's default


@pytest.mark.parametrize("query", [
    "group=maybe&center=mode&band=iqr&smooth=abc&x=time&logx=yes&range=1&layer=-2",
    "smooth=nan&range=5,5&layer=x&steps=a,b&runs=a,b",
])
def test_a_link_with_values_the_page_cannot_use_opens_the_default_view(query):
    assert from_query(query).with_(runs=()) == ViewState()


def test_values_are_clamped_and_ranges_ordered():
    v = from_query("smooth=5&range=300,-2")
    assert v.smooth == 0.99 and v.range == (-2.0, 300.0)
    assert from_query("smooth=-1").smooth == 0.0


def test_the_controls_values_become_the_url_and_back():
    search = search_of(view_of(
        {"runs": [4, 5]}, ["on"], "mean", "std", ["on"], 0.8, "samples", ["on"],
        ["training"], [1.0, 99.0], list(FIGURES), 2, "overlay", 10, None, "layer"),
        "?runs=4,5&tab=landscape")
    assert search == ("?tab=landscape&runs=4,5&group=1&center=mean&band=std&smooth=0.8"
                      "&x=samples&logx=1&logy=training&range=1,99&layer=2&single=1"
                      "&arrange=overlay&steps=10,")
    c = controls_of_view(from_query(search))
    assert (c.group, c.center, c.band, c.single, c.smooth, c.x, c.logx, c.xrange) == (
        True, "mean", "std", True, 0.8, "samples", True, (1.0, 99.0))
    assert (c.log, c.layer, c.arrange, c.step_from, c.step_to, c.choose_log) == (
        ("training",), 2, "overlay", 10, None, False)
    assert controls_of_view(ViewState()).choose_log  # no logy: the paper's log axes


def test_what_the_page_chose_itself_stays_out_of_the_url_unless_it_was_named(api, seeded):
    """Opening a page must not rewrite its address: the seed grouping and log axes the page
    picked for these runs are left out, unless the link (or the reader) named them."""
    exp, _groups = seeded
    app = create_dash("http://testserver/api/v1", client=api.client)
    url = app.landscope_callbacks["compare_view"]["url"]
    state = ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, ctl.Controls()).state
    assert state["auto"] == {"group": True, "logy": ["etas", "ics"]}
    values = (["on"], "median", "minmax", [], 0, "step", [], ["etas", "ics"], None,
              list(FIGURES), 1, "side", None, None, "layer", {"experiment": exp})
    assert url(*values, "", state) is no_update  # as opened: nothing to write
    assert url(*values, "?tab=runs", state) is no_update
    assert url(*values, "?group=1", state) is no_update  # named: kept
    off = url([], *values[1:], "", state)
    assert off == "?group=0"
    logged = url(*values[:7], ["training"], *values[8:], "", state)
    assert logged == "?logy=training"


# -- the transforms --------------------------------------------------------------------------

def _fig(name="training", xs=(0, 10, 20, 30), run=7):
    line = {"type": "scatter", "mode": "lines", "name": "r", "legendgroup": str(run),
            "x": list(xs), "y": [4.0, 1.0, 3.0, 2.0], "xaxis": "x", "yaxis": "y"}
    lower = {**line, "name": "r (lower edge)", "hoverinfo": "skip", "y": [0.0] * 4}
    upper = {**lower, "name": "r", "fill": "tonexty"}
    return {"data": [lower, upper, line],
            "layout": {"xaxis": {"title": {"text": "training step"}}, "xaxis2": {},
                       "shapes": [{"xref": "x", "x0": 20, "x1": 20}], "annotations": []}}


def test_epochs_and_samples_map_each_runs_steps_and_a_run_without_sizes_falls_back():
    runs = [{"id": 7, "x_axis": {"batch_size": 50, "train_size": 1000}}]
    x = resolve_x("epoch", runs)
    fig = apply_view("training", _fig(), x=x)
    assert all(t["x"] == [0.0, 0.5, 1.0, 1.5] for t in fig["data"])
    assert fig["layout"]["xaxis"]["title"]["text"] == "epoch"
    assert fig["layout"]["shapes"][0]["x0"] == 1.0  # the divergence mark moves too
    full_batch = resolve_x("samples", [{"id": 7, "x_axis": {"batch_size": None,
                                                            "train_size": 1000}}])
    assert full_batch.of(7)([3.0]) == [3000.0]
    lacking = resolve_x("epoch", runs + [{"id": 8}])
    assert lacking.axis == "step" and "#8" in lacking.notice and "training steps" in \
        lacking.notice
    wall = resolve_x("wall", runs, {7: ([0.0, 100.0], [0.0, 50.0])})
    assert wall.of(7)([10.0, 20.0]) == [5.0, 10.0]
    assert resolve_x("wall", runs, {}).axis == "step"
    eta = _fig("etas")  # Fig 11's x is the step size: left alone
    assert apply_view("etas", eta, x=x)["data"][2]["x"] == [0, 10, 20, 30]


def test_log_x_and_a_zoomed_range_set_every_step_axis():
    fig = apply_view("training", _fig(), x=XAxis(), logx=True, xrange=(10.0, 1000.0))
    for ax in ("xaxis", "xaxis2"):
        assert fig["layout"][ax]["type"] == "log"
        assert fig["layout"][ax]["range"] == [1.0, 3.0]  # plotly's log axes range in log10
    fig = apply_view("dynamics", _fig(), x=XAxis(), xrange=(10.0, 20.0))
    assert fig["layout"]["xaxis"]["range"] == [10.0, 20.0]
    assert fig["layout"]["xaxis"]["autorange"] is False


def test_smoothing_keeps_the_raw_line_faint_and_never_touches_envelopes():
    data = smooth_traces(_fig()["data"], 0.6)
    lower, upper, raw, smooth = data
    assert lower["y"] == [0.0] * 4 and upper["fill"] == "tonexty"  # the envelope as it was
    assert raw["y"] == [4.0, 1.0, 3.0, 2.0] and raw["opacity"] == RAW_OPACITY
    assert not raw["showlegend"] and raw["hoverinfo"] == "skip"
    assert smooth["y"][0] == pytest.approx(4.0) and smooth["y"] != raw["y"]
    assert min(raw["y"]) <= min(smooth["y"]) and max(smooth["y"]) <= max(raw["y"])
    assert smooth_traces(_fig()["data"], 0.0) == _fig()["data"]


# -- figures by seed group, against the API ---------------------------------------------------

@pytest.fixture
def seeded(api):
    exp, groups = seeded_experiment(api.engine, steps=60, spec_changes=SMALL)
    return exp, groups


def _runs_values(api, ids, key):
    """Each run's raw values of `key` by step."""
    out = []
    for rid in ids:
        s = api.client.metrics(rid, key, max_points=100_000)[key]
        out.append(dict(zip(s.steps, s.values, strict=True)))
    return out


def _centre(fig, prefix, xaxis="x"):
    """A group's centre line: its legend name, not a fill, not the faint raw one."""
    return next(t for t in fig["data"] if t["name"].startswith(prefix)
                and t["name"].endswith("(n=3)") and not t.get("fill")
                and t.get("xaxis", "x") == xaxis and t.get("hoverinfo") != "skip"
                and "lines" in t.get("mode", "lines"))


def _band_ys(fig, legendgroup, xaxis="x"):
    """Every y of the group's shaded traces (and their edges) on one axis."""
    return [y for t in fig["data"] if t.get("legendgroup") == legendgroup
            and t.get("xaxis", "x") == xaxis and t is not None
            and (t.get("fill") or t["name"].endswith("(lower)"))
            and "(test)" not in t["name"] for y in t["y"] if y is not None]


def test_seed_groups_open_grouped_with_median_and_min_max_of_the_runs(api, seeded):
    exp, (none_ids, batch_ids) = seeded
    r = ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, ctl.Controls())
    assert r.grouped is True and r.state["derived"]
    fig = r.figures["training"]
    legend = [t["name"] for t in fig["data"] if t.get("showlegend")
              and t["legendgroup"].startswith("group-")]
    assert len(legend) == 2 and all(n.endswith("(n=3)") for n in legend)  # a line per group
    vals = _runs_values(api, none_ids, "train/loss")
    centre = _centre(fig, norm_label("none"))
    assert centre["x"] == list(range(60))
    for i, step in enumerate(centre["x"]):
        assert centre["y"][i] == pytest.approx(statistics.median(v[step] for v in vals),
                                               rel=1e-6)
    band = _band_ys(fig, centre["legendgroup"])
    assert min(band) == pytest.approx(min(min(v.values()) for v in vals), rel=1e-6)
    assert max(band) == pytest.approx(max(max(v.values()) for v in vals), rel=1e-6)
    # Probe bands: per group (in its normalisation's cell) the median band and, lighter,
    # the envelope over the seeds.
    land = r.figures["landscape"]
    assert {t.get("xaxis") for t in land["data"]} == {"x", "x2"}
    by_group: dict[str, int] = {}
    for t in land["data"]:
        if t.get("fill"):
            by_group[t["legendgroup"]] = by_group.get(t["legendgroup"], 0) + 1
    assert list(by_group.values()) == [2, 2]


def test_a_grouped_page_reads_no_runs_scalars_and_draws_one_seed_per_group_per_run(
        api, seeded, monkeypatch):
    """Drawn by group, the scalar figures come from the server's group statistics: the
    page asks no run for its scalars (10k-step runs made that the slow half of the page).
    Fig 11 and the activation figures, drawn per run, show each group's first run (a panel
    per group, titled with its seed), as the single view draws that run; with the single
    runs, every run, as the single view does."""
    exp, (none_ids, batch_ids) = seeded
    source = {"experiment": exp}
    asked: list[int] = []
    real = type(api.client).metrics
    monkeypatch.setattr(type(api.client), "metrics",
                        lambda self, rid, *a, **kw: asked.append(rid) or real(self, rid, *a, **kw))
    grouped = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls())
    assert grouped.grouped is True and asked == []
    single = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls(group=False))
    assert len(set(asked)) == 6  # the single view reads every run's scalars
    seeds = {r["id"]: r["spec"]["seed"] for r in single.runs}
    first = [min(none_ids), min(batch_ids)]

    def panels(fig):  # each panel's traces (x, y, z), by its x axis, in the axes' order
        out: dict[str, list] = {}
        for t in fig["data"]:
            if t.get("hoverinfo") != "skip":  # not the colour bar
                out.setdefault(t.get("xaxis", "x"), []).append((t.get("x"), t.get("y"),
                                                                t.get("z")))
        return out

    views = [RunView.from_dict(v) for v in single.state["views"]]
    axis_of = {v.id: cell_axes(grid_of(views), v.row, v.col)["xaxis"] for v in views}
    for name in ("etas", "dist_heat"):
        g, s = panels(grouped.figures[name]), panels(single.figures[name])
        assert len(g) == 2 and len(s) == 6, name
        assert list(g.values()) == [s[axis_of[rid]] for rid in first], name
        titles = [a["text"] for a in grouped.figures[name]["layout"]["annotations"]
                  if "seed" in a.get("text", "")]
        assert titles == [f"{norm_label(norm)} (seed {seeds[rid]}, 1 of 3 runs)"
                          for norm, rid in zip(("none", "batch"), first, strict=True)], name
    assert any(t.get("y") for t in grouped.figures["etas"]["data"])
    with_singles = ctl.update(api.client, ctl.FULL, source, None,
                              ctl.Controls(group=True, single=True))
    for name in set(FIGURES) - set(GROUPED_FIGURES):
        assert with_singles.figures[name] == single.figures[name], name


def test_mean_and_std_bands_and_single_runs_beneath(api, seeded):
    exp, (none_ids, _b) = seeded
    c = ctl.Controls(group=True, center="mean", band="std", single=True)
    r = ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, c)
    fig = r.figures["beta"]
    vals = _runs_values(api, none_ids, "landscape/beta")
    centre = _centre(fig, norm_label("none"))
    lows = []
    for i, step in enumerate(centre["x"]):
        at = [v[step] for v in vals]
        mean = sum(at) / len(at)
        assert centre["y"][i] == pytest.approx(mean, rel=1e-6)
        lows.append(mean - statistics.pstdev(at))
    assert min(_band_ys(fig, centre["legendgroup"])) == pytest.approx(min(lows), rel=1e-6)
    singles = [t for t in fig["data"] if t["name"].endswith("(single run)")]
    assert len(singles) == 6 and all(t["opacity"] < 1 for t in singles)
    assert fig["data"][:6] == singles  # beneath the groups


def test_grouping_off_draws_single_runs_and_smoothing_them_rebuilds_on_poll(api, seeded):
    exp, groups = seeded
    source = {"experiment": exp}
    r = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls(group=False))
    assert r.grouped is None and not r.state["derived"]
    names = {t["name"] for t in r.figures["beta"]["data"] if t.get("showlegend")}
    assert len(names) == 6  # every run
    smoothed = ctl.update(api.client, ctl.FULL, source, None,
                          ctl.Controls(group=False, smooth=0.9))
    raws = [t for t in smoothed.figures["beta"]["data"] if t["name"].endswith("(raw)")]
    assert len(raws) == 6 and smoothed.state["derived"]


def test_a_grouped_view_refreshes_whole_while_a_run_runs(api):
    exp, (ids,) = seeded_experiment(api.engine, ("batch",), steps=200, done=30,
                                    status="running", spec_changes=SMALL)
    source = {"experiment": exp}
    first = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls())
    assert first.grouped and first.polling
    from server.spec import build_spec
    from tests.support.synthetic import BASE_SPEC, SyntheticRun, write_steps
    for i, rid in enumerate(ids):
        spec = build_spec({**BASE_SPEC, "steps": 200, **SMALL, "norm": "batch", "seed": i})
        write_steps(api.engine, rid, SyntheticRun(spec, seed=rid), 30, 40)
    polled = ctl.update(api.client, ctl.POLL, source, first.state, ctl.Controls())
    fig = polled.figures["training"]
    assert isinstance(fig, dict)  # rebuilt, not patched
    assert _centre(fig, "")["x"][-1] == 39
    with api.engine.begin() as conn:
        conn.execute(update(Run).where(Run.id.in_(ids)).values(status="succeeded"))
    done = ctl.update(api.client, ctl.POLL, source, polled.state, ctl.Controls())
    assert not done.polling


def test_the_page_opens_as_its_link_says(api, seeded):
    exp, _groups = seeded
    from tests.webapp.test_pages import components
    from webapp.pages import experiment

    page = components(experiment.layout(
        api.client, str(exp), group="1", center="mean", smooth="0.5", x="epoch",
        logy="training", range="5,40", figs="training,beta", layer="2"))
    assert page["cmp-group"].value == ["on"] and page["cmp-center"].value == "mean"
    assert page["cmp-smooth"].value == 0.5 and page["cmp-x"].value == "epoch"
    assert page["cmp-log"].value == ["training"] and page["cmp-layer"].value == 2
    assert page["cmp-range"].data == [5.0, 40.0]
    assert page["section-landscape"].style == {"display": "none"}
    assert page["section-beta"].style == {}
    # Synthetic runs record no dataset size: the page says so and shows steps.
    assert "training steps" in page["cmp-notice"].children
    training = page["fig-training"].figure
    assert training["layout"]["xaxis"]["range"] == [5.0, 40.0]
    assert training["layout"]["yaxis"]["type"] == "log"
    for name in GROUPED_FIGURES:
        assert any(t.get("legendgroup", "").startswith("group-")
                   for t in page[f"fig-{name}"].figure["data"]), name


def test_the_csv_button_downloads_the_drawn_traces(api):
    app = create_dash("http://testserver/api/v1", client=api.client)
    csv = app.landscope_callbacks["compare_view"]["csv"]
    out = csv({"fig": "beta", "figure": {"data": [
        {"type": "scatter", "name": "g", "x": [1, 2], "y": [0.5, None]}]}})
    assert out["filename"] == "landscope-beta.csv"
    lines = out["content"].splitlines()
    assert lines[0].startswith("# Effective") and lines[1] == "figure,trace,x,y,lo,hi"
    assert len(lines) >= 3 and math.isfinite(float(lines[2].split(",")[3]))


def test_finished_groups_statistics_are_cached_and_running_ones_never(api):
    """A grouped page opened again asks the server for nothing it asked before, once every
    run has finished; a group with a running run is fetched afresh each time. What is cached
    is what the server said, to the 7 significant digits every figure draws."""
    from webapp.compare import grouped as gp

    exp, _ = seeded_experiment(api.engine, steps=30)
    runs = api.client.experiment(exp)["runs"]
    groups = api.client.groups(experiment_id=exp)
    seen: list[str] = []
    api.http.event_hooks["request"].append(lambda r: seen.append(r.url.path))

    def fetch(finished: frozenset[int]) -> dict:
        return gp.fetch(api.client, groups, ["training", "landscape"], center="median",
                        band="minmax", step_range=None, finished=finished)

    done = gp.finished_ids(runs)
    assert len(done) == 6
    first = fetch(done)
    assert seen.count("/api/v1/groups/metrics") == 2
    assert fetch(done) == first and seen.count("/api/v1/groups/metrics") == 2
    # One run still running: never cached (its statistics change as it writes).
    fetch(done - {runs[0]["id"]})
    fetch(done - {runs[0]["id"]})
    assert seen.count("/api/v1/groups/metrics") == 6
    raw = api.client.grouped_metrics([g.run_ids for g in groups], gp.KEYS["training"])
    for got, exact in zip(first["training"], raw, strict=True):
        assert got.keys() == exact.keys()
        for key, s in exact.items():
            g = got[key]
            assert g.steps == s.steps and g.n == s.n and g.nonfinite == s.nonfinite
            for a, b in [*zip(g.center, s.center, strict=True), *zip(g.lo, s.lo, strict=True),
                         *zip(g.hi, s.hi, strict=True)]:
                assert (a is None) == (b is None)
                if b is not None and not math.isfinite(b):
                    assert repr(a) == repr(b)  # nan, inf, -inf kept as they are
                elif b is not None:
                    assert a == pytest.approx(b, rel=1e-6) and a == float(f"{b:.7g}")
