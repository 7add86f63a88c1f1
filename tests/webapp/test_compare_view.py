"""The compare view's controller against the real API: a page opens (everything fetched and
built), polls (only what arrived, as Patches that add up to a rebuild), stops polling when
every run is finished, rebuilds when a run diverges, and says so when the API fails."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import update

from server.db.metrics import insert_points, series_ids
from server.db.models import Run, encode_value
from server.spec import build_spec
from tests.support.synthetic import BASE_SPEC, SyntheticRun, create_experiment, write_steps
from webapp.compare import update as ctl
from webapp.compare.data import CACHE, Cursor
from webapp.figures import FIGURES, HIST_FIGURES
from webapp.figures.axes import LOG_AXIS

SMALL = {"probes": {"landscape": {"every": 5}, "ics": {"every": 5, "layers": [3, 5]},
                    "activations": {"every": 10}, "sharpness": {"every": 20}}}


@pytest.fixture
def live(api):
    """Two runs 'running', 30 of 200 steps stored."""
    exp, ids = create_experiment(api.engine, ["none", "batch"], steps=200, done=30,
                                 status="running", spec_changes=SMALL)
    return exp, ids


def more(api, ids, start, stop, diverge=None):
    """Steps [start, stop) of runs `ids` (created with norms none, batch in this order)."""
    norms = {rid: norm for rid, norm in zip(sorted(ids), ["none", "batch"], strict=False)}
    for rid in ids:
        norm = norms[rid]
        spec = build_spec({**BASE_SPEC, "steps": 200, **SMALL, "norm": norm})
        write_steps(api.engine, rid, SyntheticRun(spec, seed=rid, diverge_at=diverge), start,
                    stop)
    with api.engine.begin() as conn:
        conn.execute(update(Run).where(Run.id.in_(ids)).values(step=stop))


def set_runs(api, ids, **values):
    with api.engine.begin() as conn:
        conn.execute(update(Run).where(Run.id.in_(ids)).values(**values))


def test_opening_builds_every_figure_and_a_cursor_per_run(api, live):
    exp, ids = live
    r = ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, ctl.Controls())
    assert set(r.figures) == set(FIGURES)
    assert all(isinstance(f, dict) and f["data"] for f in r.figures.values())
    assert r.title == f"synthetic · experiment {exp} · norm ∈ {{none, batch}}"
    assert [x["id"] for x in r.runs] == ids and r.polling
    cur = r.state["cursors"][str(ids[0])]
    assert cur["eta_step"] == 25 and cur["hist_step"] == 20
    assert cur["keys"]["train/loss"] == 29 and cur["keys"]["test/loss"] == 0
    # The next fetch starts after the key that lags most: test/loss, evaluated at step 0.
    assert Cursor.from_dict(cur).next_since() == 1
    assert not cur["done"]


def test_polling_patches_add_up_to_a_rebuild(api, live, apply_patch):
    exp, ids = live
    source = {"experiment": exp}
    first = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls())
    more(api, ids, 30, 47)
    polled = ctl.update(api.client, ctl.POLL, source, first.state, ctl.Controls())
    assert polled.state["cursors"][str(ids[1])]["keys"]["train/loss"] == 46
    rebuilt = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls())
    for name in FIGURES:
        p = polled.figures[name]
        assert p is not None, f"{name} got nothing new"
        assert apply_patch(first.figures[name], p) == rebuilt.figures[name], name
    # Nothing new: no patches at all.
    again = ctl.update(api.client, ctl.POLL, source, polled.state, ctl.Controls())
    assert all(f is None for f in again.figures.values())


def test_a_step_stored_in_two_flushes_is_drawn_whole(api, live, apply_patch):
    """The sink may commit step t's training loss before its probes: the next poll must
    still bring the probes of step t (it asks again from the last step seen)."""
    exp, ids = live
    source = {"experiment": exp}
    first = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls())
    with api.engine.begin() as conn:  # step 30: only the training loss so far
        sid = series_ids(conn, ids[0], ["train/loss"])["train/loss"]
        insert_points(conn, [(sid, 30, *encode_value(1.23))])
    mid = ctl.update(api.client, ctl.POLL, source, first.state, ctl.Controls())
    assert mid.state["cursors"][str(ids[0])]["keys"]["train/loss"] == 30
    more(api, ids, 30, 31)  # the rest of step 30 (its train/loss is already there)
    last = ctl.update(api.client, ctl.POLL, source, mid.state, ctl.Controls())
    fig = apply_patch(apply_patch(first.figures["landscape"], mid.figures["landscape"]),
                      last.figures["landscape"])
    band = [t for t in fig["data"] if t.get("fill") == "tonexty"][0]
    assert band["x"][-1] == 30 and band["x"].count(30) == 1


def store(api, run_id: int, key: str, points: list[tuple[int, float]]) -> None:
    with api.engine.begin() as conn:
        sid = series_ids(conn, run_id, [key])[key]
        insert_points(conn, [(sid, step, *encode_value(v)) for step, v in points])


def test_keys_written_late_and_keys_seen_late_are_not_lost(api, apply_patch):
    """The engine may write a key's points well after later steps of other keys (training
    accuracy comes in windows), and a key may first appear after the others moved on."""
    exp, [rid] = create_experiment(api.engine, ["batch"], steps=200, done=0, status="running",
                                   spec_changes=SMALL)
    source = {"experiment": exp}
    store(api, rid, "train/loss", [(s, 1.0) for s in range(0, 30)])
    first = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls())
    store(api, rid, "train/loss", [(s, 1.0) for s in range(30, 60)])
    a = ctl.update(api.client, ctl.POLL, source, first.state, ctl.Controls())
    store(api, rid, "train/acc", [(s, 0.5) for s in range(0, 40)])  # first seen: from 0
    b = ctl.update(api.client, ctl.POLL, source, a.state, ctl.Controls())
    store(api, rid, "train/acc", [(s, 0.5) for s in range(40, 60)])  # the next window, late
    c = ctl.update(api.client, ctl.POLL, source, b.state, ctl.Controls())
    fig = first.figures["training"]
    for step in (a, b, c):
        fig = apply_patch(fig, step.figures["training"])
    label = first.state["views"][0]["label"]
    acc = next(t for t in fig["data"] if t["xaxis"] == "x2" and t["mode"] == "lines"
               and t["name"] == label)
    loss = next(t for t in fig["data"] if t["xaxis"] == "x" and t["mode"] == "lines"
                and t["name"] == label)
    assert acc["x"] == list(range(60)) and loss["x"] == list(range(60))


def test_polling_stops_once_every_run_is_finished_and_drawn(api, live):
    exp, ids = live
    source = {"experiment": exp}
    state = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls()).state
    set_runs(api, ids[:1], status="succeeded")
    r = ctl.update(api.client, ctl.POLL, source, state, ctl.Controls())
    assert r.polling and r.state["cursors"][str(ids[0])]["done"]
    set_runs(api, ids[1:], status="cancelled")
    r = ctl.update(api.client, ctl.POLL, source, r.state, ctl.Controls())
    assert not r.polling


def test_a_run_that_diverges_is_rebuilt_with_its_mark(api, live):
    exp, ids = live
    source = {"experiment": exp}
    state = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls()).state
    more(api, ids[:1], 30, 40, diverge=35)
    set_runs(api, ids[:1], status="diverged", diverged_at=35)
    r = ctl.update(api.client, ctl.POLL, source, state, ctl.Controls())
    training = r.figures["training"]
    assert isinstance(training, dict)  # a whole figure, not a patch
    assert any(s.get("x0") == 35 for s in training["layout"]["shapes"])
    loss = next(t for t in training["data"] if t.get("showlegend") and t["legendgroup"]
                == str(ids[0]))
    assert loss["y"][35:] == [None] * 5  # NaN and inf from 35 on: gaps...
    marks = [t for t in training["data"] if t["name"].endswith("non-finite")
             and t["legendgroup"] == str(ids[0]) and 35 in t["x"]]
    assert marks  # ...and markers


def test_log_toggles_patch_axes_only_and_layers_refetch_histograms(api, live):
    exp, ids = live
    source = {"experiment": exp}
    first = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls())
    logged = ctl.update(api.client, ctl.LOG, source, first.state,
                        ctl.Controls(log=("landscape",)))
    ops = logged.figures["landscape"].to_plotly_json()["operations"]
    # Each y axis becomes a log axis as a build draws one (webapp/figures/axes.py LOG_AXIS).
    axes = {o["location"][1] for o in ops}
    assert axes and {(o["location"][1], o["location"][2], o["params"]["value"]) for o in ops} \
        == {(ax, k, v) for ax in axes for k, v in LOG_AXIS.items()}
    assert logged.state == first.state
    layer3 = ctl.update(api.client, ctl.HISTS, source, first.state, ctl.Controls(layer=3))
    assert {n for n, f in layer3.figures.items() if f is not None} == set(HIST_FIGURES)
    title = layer3.figures["dist_overlay"]["layout"]["yaxis"]["title"]["text"]
    assert "layer 3" in title


def test_compare_page_runs_and_a_step_range(api, live):
    _exp, ids = live
    r = ctl.update(api.client, ctl.FULL, {"runs": [ids[1], 999]}, None,
                   ctl.Controls(step_from=10, step_to=20))
    assert [x["id"] for x in r.runs] == [ids[1]]  # a run that does not exist is skipped
    fig = r.figures["landscape"]
    band = [t for t in fig["data"] if t.get("fill") == "tonexty"][0]
    assert band["x"] == [10, 15, 20] and fig["layout"]["xaxis"]["range"] == [10, 20]


def test_an_api_error_is_a_notice_and_a_missing_experiment_stops_polling(api):
    r = ctl.safe_update(api.client, ctl.FULL, {"experiment": 41}, None, ctl.Controls())
    assert "not found" in r.notice and not r.polling
    assert all(f is None for f in r.figures.values())


def test_finished_runs_are_fetched_once(api):
    exp, ids = create_experiment(api.engine, ["none", "batch"], steps=60)
    calls = []
    real = api.client.metrics

    def counting(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    api.client.metrics = counting
    ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, ctl.Controls())
    ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, ctl.Controls())
    assert len(calls) == 2  # one per run, the second page load from the cache
    CACHE.clear()
    ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, ctl.Controls())
    assert len(calls) == 4


def test_a_live_series_past_its_budget_is_downsampled_again(api, live, monkeypatch):
    exp, ids = live
    source = {"experiment": exp}
    state = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls()).state
    monkeypatch.setattr(ctl, "REBUILD_POINTS", 10)
    more(api, ids, 30, 45)
    polled = ctl.update(api.client, ctl.POLL, source, state, ctl.Controls())
    assert polled.state["cursors"][str(ids[0])]["points"] == 15
    r = ctl.update(api.client, ctl.POLL, source, polled.state, ctl.Controls())
    assert all(isinstance(f, dict) for f in r.figures.values())  # rebuilt
    assert r.state["cursors"][str(ids[0])]["points"] == 0


def test_values_stay_finite_or_gaps_in_every_figure(api, live):
    exp, ids = live
    more(api, ids, 30, 40, diverge=33)
    set_runs(api, ids, status="diverged", diverged_at=33)
    r = ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, ctl.Controls())
    for name, fig in r.figures.items():
        for t in fig["data"]:
            for v in t.get("y") or []:
                assert v is None or math.isfinite(v), name


def test_a_deep_linear_network_opens_with_the_papers_log_axes(api):
    exp, _ = create_experiment(api.engine, ["none", "batch"], steps=30, spec_changes={
        "model": "dln", "depth": 5, "width": 8, "dataset": "gaussian_linear",
        "loss": "sum_squares", "batch_size": None, "lr": 1e-4, "eval_every": 0})
    r = ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, ctl.Controls())
    assert r.log == ("beta", "etas", "gradpred", "ics", "landscape", "training")
    assert r.figures["gradpred"]["layout"]["yaxis"]["type"] == "log"
    again = ctl.update(api.client, ctl.FULL, {"experiment": exp}, r.state, ctl.Controls())
    assert again.log is None  # later rebuilds keep the reader's choice


def test_queued_runs_are_not_asked_for_data(api, live):
    exp, ids = live
    source = {"experiment": exp}
    state = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls()).state
    set_runs(api, ids[1:], status="queued")
    asked = []
    real = api.client.metrics
    api.client.metrics = lambda rid, *a, **kw: asked.append(rid) or real(rid, *a, **kw)
    r = ctl.update(api.client, ctl.POLL, source, state, ctl.Controls())
    assert asked == [ids[0]] and r.polling


def test_a_finished_page_leaves_out_empty_traces_a_live_one_keeps_its_slots(api, live):
    exp, ids = live
    source = {"experiment": exp}
    running = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls())
    empty = [t for t in running.figures["training"]["data"]
             if t.get("x") == [] and t.get("legendgroup") != "style"]
    assert empty  # non-finite marker slots wait for data a patch may bring
    set_runs(api, ids, status="succeeded")
    done = ctl.update(api.client, ctl.FULL, source, None, ctl.Controls())
    for name, fig in done.figures.items():
        assert all(t.get("x") != [] for t in fig["data"]), name
    assert len(done.figures["training"]["data"]) < len(running.figures["training"]["data"])
