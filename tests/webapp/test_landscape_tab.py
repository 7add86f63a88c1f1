"""The experiment's Landscape tab: its callbacks called as plain functions. The form's spec,
the cost (a dry run) and launch, the list of analyses, the figures per run on one colour
scale, the step slider and play, the cameras kept in step; against the real API where the
tab talks to it (analyses stored as the worker stores them)."""

from __future__ import annotations

import pytest
from dash import Patch, dcc, html, no_update

from tests.webapp.landscape_data import (
    analysis_json,
    bowl,
    snapshotted_experiment,
    spectrum_values,
    store_results,
)
from tests.webapp.layout_walk import walk
from webapp.app import create_dash
from webapp.landscape import callbacks as cb
from webapp.landscape import launch as launching
from webapp.landscape.data import Loaded, default_selection, fingerprint, groups_of
from webapp.landscape.layout import CANCEL, OTHER, SURFACE, figure_for, key_of, sections
from webapp.pages import experiment
from webapp.runsets import build_views


@pytest.fixture(autouse=True)
def _no_cached_analyses():
    """Finished analyses are cached per API URL, and every test's API has the same URL."""
    from webapp.landscape.data import CACHE

    CACHE.clear()
    yield
    CACHE.clear()


def csv_url(aid: int) -> str:
    return f"/api/v1/analyses/{aid}/csv"


@pytest.fixture
def views(run_json):
    return build_views([run_json(2, "batch"), run_json(1, "none")])


def loaded_of(views, analyses) -> Loaded:
    return Loaded({v.id: v for v in views}, {g.id: g for g in groups_of(analyses)},
                  {a["id"]: a for a in analyses})



def graphs(children) -> list[dcc.Graph]:
    return [c for top in children for c in walk(top) if isinstance(c, dcc.Graph)]


# -- the list and the selection ---------------------------------------------------------------

def test_groups_newest_first_and_the_default_shows_the_newest_of_each_kind():
    a = [analysis_json(1, 1, group_id=1), analysis_json(2, 2, group_id=1),
         analysis_json(3, 1, kind="spectrum", group_id=3),
         analysis_json(4, 1, group_id=4, status="failed"),
         analysis_json(5, 1, group_id=5, status="running"),
         analysis_json(6, 2, group_id=5, status="queued")]
    groups = groups_of(a)
    assert [g.id for g in groups] == [5, 4, 3, 1]
    assert groups[0].status == "running" and groups[0].active and not groups[3].active
    assert "BN batch statistics" in groups[3].label() and "2 run(s)" in groups[3].label()
    # the running surface group is the newest one that will have something to draw
    assert default_selection(groups) == [5, 3]
    before = fingerprint(a, [5])
    a[4]["progress"]["done"] -= 1
    assert fingerprint(a, [5]) != before and fingerprint(a, [1]) == fingerprint(a, [1])


# -- the figures ------------------------------------------------------------------------------

def test_surfaces_side_by_side_per_run_on_one_colour_scale(views):
    analyses = [analysis_json(11, 1, scale=10.0, steps=(0, 100)),
                analysis_json(12, 2, scale=1.0, steps=(0, 100))]
    loaded = loaded_of(views, analyses)
    children = sections(loaded, [1], 100, False, "svg", None, csv_url)
    gs = graphs(children)
    # runs in display order (none first), each a contour then a surface
    assert [g.id["key"] for g in gs] == ["1|contour|1", "1|surface|1", "1|contour|2",
                                         "1|surface|2"]
    assert [g.id["type"] for g in gs] == [OTHER, SURFACE, OTHER, SURFACE]
    ranges = {(g.figure.data[0].zmin, g.figure.data[0].zmax) for g in gs
              if g.figure.data[0].type == "contour"}
    ranges |= {(g.figure.data[0].cmin, g.figure.data[0].cmax) for g in gs
               if g.figure.data[0].type == "surface"}
    assert len(ranges) == 1 and ranges == {loaded.zrange(1, False)}
    assert all(g.config["toImageButtonOptions"]["format"] == "svg" for g in gs)
    links = [c.href for top in children for c in walk(top) if isinstance(c, html.A)]
    assert links == [csv_url(11), csv_url(12)]
    assert loaded.steps([1]) == [0, 100]


def test_slices_trajectories_and_spectra_each_get_their_figures(views):
    traj = {"trajectory": {"steps": [0, 100], "coords": [[0.5, 0.5], [0, 0]],
                           "loss": [2.0, 0.2], "explained_variance": [0.8, 0.1]}}
    a = [analysis_json(21, 1, kind="slice", group_id=2),
         analysis_json(22, 2, kind="slice", group_id=2),
         analysis_json(31, 1, kind="trajectory", group_id=3, values={100: traj}),
         analysis_json(41, 1, kind="spectrum", group_id=4, steps=(0, 100),
                       values={0: spectrum_values([1.0], 2.0, 0.1),
                               100: spectrum_values([9.0], 20.0, 1.0)}),
         analysis_json(42, 2, kind="spectrum", group_id=4, steps=(0, 100),
                       values={0: spectrum_values([1.0], 2.0, 0.1),
                               100: spectrum_values([3.0], 5.0, 0.2)})]
    loaded = loaded_of(views, a)
    keys = [g.id["key"] for g in graphs(sections(loaded, [2, 3, 4], None, True, "png", None,
                                                 csv_url))]
    assert keys == ["2|slices|all", "3|trajectory|1", "4|density|all", "4|training|all"]
    # the slider covers the slices' and spectra's steps; a trajectory draws its last
    assert loaded.steps([2, 3, 4]) == [0, 100]
    dens = figure_for("4|density|all", loaded, 0, False, None)
    assert dens.layout.yaxis.type == "log" and "step 0" in dens.data[0].name


def test_restep_redraws_each_figure_for_another_step_and_scale(views):
    analyses = [analysis_json(11, 1, steps=(0, 100)), analysis_json(12, 2, steps=(0, 100))]
    loaded = loaded_of(views, analyses)
    early = figure_for(key_of(1, "contour", 1), loaded, 0, False, None)
    late = figure_for(key_of(1, "contour", 1), loaded, 100, True, None)
    assert "step 0" in early.layout.title.text and "step 100" in late.layout.title.text
    assert late.data[0].colorbar.title.text == "log₁₀ loss"
    assert early.data[0].z != late.data[0].z
    cam = {"eye": {"x": 0.1, "y": 2.0, "z": 1.0}}
    surf = figure_for(key_of(1, "surface", 2), loaded, 100, False, cam)
    assert surf.layout.scene.camera.eye.y == 2.0


# -- cameras, slider, play --------------------------------------------------------------------

def test_turning_one_surface_turns_the_others():
    keys = ["1|surface|1", "1|surface|2", "7|surface|1"]
    cam = {"eye": {"x": 1.5, "y": -1.0, "z": 0.8}, "up": {"x": 0, "y": 0, "z": 1}}
    outs, shared = cb.sync_cameras([None, {"scene.camera": cam}, None], keys, keys[1], None)
    assert shared == cam and outs[1] is no_update
    for p in (outs[0], outs[2]):
        assert isinstance(p, Patch)
        op = p.to_plotly_json()["operations"][0]
        assert op["location"] == ["layout", "scene", "camera"] and op["params"]["value"] == cam
    # the patched surfaces report the same camera back: nothing more happens
    again, shared2 = cb.sync_cameras([{"scene.camera": cam}, None, None], keys, keys[0], cam)
    assert again == [no_update] * 3 and shared2 is no_update
    # a relayout without a camera (autosize, zoom of a 2D axis) changes nothing
    assert cb.sync_cameras([{"autosize": True}, None, None], keys, keys[0], None)[1] \
        is no_update
    parts = {"scene.camera.eye": {"x": 1, "y": 1, "z": 1}}
    assert cb.camera_of(parts) == {"eye": {"x": 1, "y": 1, "z": 1}}


def test_the_slider_plays_through_the_steps_and_wraps():
    marks = cb.step_marks([0, 400, 800])
    assert marks == {"0": "0", "400": "400", "800": "800"}
    assert [cb.next_step(marks, s) for s in (0, 400, 800, None)] == [400, 800, 0, 0]
    assert cb.next_step({}, 3) is no_update
    assert cb.toggle_play(1) == (False, "❚❚ pause")
    assert cb.toggle_play(2) == (True, "▶ play")


# -- the page ---------------------------------------------------------------------------------

def test_the_experiment_page_has_a_landscape_tab_chosen_by_query(api):
    from tests.support.synthetic import create_experiment

    exp, _ids = create_experiment(api.engine, ["none", "batch"], steps=30)
    page = experiment.layout(api.client, str(exp)).children[-1]  # (below tags and note)
    assert isinstance(page, dcc.Tabs) and page.value == "runs"
    assert [t.value for t in page.children] == ["runs", "landscape"]
    assert experiment.layout(api.client, str(exp),
                             tab="landscape").children[-1].value == "landscape"
    ids = {getattr(c, "id", None) for c in walk(page.children[1])}
    assert {"ls-kind", "ls-launch", "ls-list", "ls-groups", "ls-step", "ls-play",
            "ls-figures", "ls-cost"} <= ids
    app = create_dash("http://testserver/api/v1", client=api.client)
    assert {"preview", "launch", "refresh", "draw", "restep", "cameras"} <= set(
        app.landscope_callbacks["experiment"])


# -- against the real API ---------------------------------------------------------------------

@pytest.fixture
def snapshotted(api):
    return snapshotted_experiment(api.engine)


FORM = ("surface", "10, 30", "random", "5", "batch", "256")  # as the text fields send them


def test_cost_launch_list_and_figures_through_the_api(api, snapshotted):
    exp, ids = snapshotted
    cost, lines = launching.preview(api.client, exp, *FORM)
    text = " ".join(str(c.children) for c in walk(cost) if isinstance(c, html.Td))
    assert "100" in text and "of 256 samples" in text  # 2 runs x 2 steps x 25 points
    assert lines == ["", "", "", ""]
    assert api.client.analyses(experiment_id=exp) == []  # a dry run creates nothing

    message, count, lines = launching.launch(api.client, exp, 0, *FORM)
    assert message.startswith("Launched 2 analyses") and count == 1
    listed, options, chosen, summaries, stopped, notice, version = cb.refresh(
        api.client, exp, [], None)
    assert len(options) == 1 and chosen == [options[0]["value"]] and not stopped
    rows = [c for c in walk(listed) if isinstance(c, html.Tr)]
    assert len(rows) == 3  # head + 2 runs
    # the evaluation set is in the list and in the group's label (two spectra of one run
    # and step on different sets differ: the reader must see why)
    assert [str(r.children[4].children) for r in rows] == ["eval set", "256 samples",
                                                           "256 samples"]
    assert "eval set: 256 samples" in options[0]["label"]
    assert {"queued"} == {a["status"] for a in summaries} and notice == ""
    gid = chosen[0]
    buttons = [c for c in walk(listed) if isinstance(c, html.Button)]
    assert sorted(b.id["id"] for b in buttons) == sorted(a["id"] for a in summaries)
    assert all(b.id["type"] == CANCEL for b in buttons)  # one per queued analysis

    by_run = {a["run_id"]: a for a in summaries}
    store_results(api.engine, by_run[ids[0]], scale=10.0, nan_at=0)
    store_results(api.engine, by_run[ids[1]], scale=1.0)
    *_, summaries, stopped, _n, version2 = cb.refresh(api.client, exp, chosen, version)
    assert stopped and version2 not in (no_update, version)  # all done: polling stops

    children, box, marks, lo, hi, value = cb.draw(api.client, exp, chosen, None, [], "png",
                                                  None, summaries)
    assert box == {"display": "flex"} and marks == {"10": "10", "30": "30"} and value == 30
    gs = graphs(children)
    assert [g.id["key"] for g in gs] == [f"{gid}|{f}|{r}" for r in ids
                                         for f in ("contour", "surface")]
    zr = {(g.figure.data[0].zmin, g.figure.data[0].zmax) for g in gs[::2]}
    zr |= {(g.figure.data[0].cmin, g.figure.data[0].cmax) for g in gs[1::2]}
    assert len(zr) == 1  # one colour scale across both runs
    nan_contour = gs[0].figure
    assert nan_contour.data[0].z[0][0] is None and list(nan_contour.data[1].marker.symbol) == [
        "x"]
    assert "BN mode: batch statistics" in nan_contour.layout.title.text
    assert all("eval set: 256 samples" in g.figure.layout.title.text for g in gs)
    figs, surfaces = cb.restep(api.client, exp, chosen, 10, ["log"], None, summaries,
                               [g.id["key"] for g in gs[::2]], [g.id["key"] for g in gs[1::2]])
    assert all("step 10" in f.layout.title.text for f in figs + surfaces)
    assert surfaces[0].data[0].colorbar.title.text == "log₁₀ loss"
    figs, surfaces = cb.restep(api.client, exp, chosen, 30, [], None, summaries,
                               [g.id["key"] for g in gs[::2]], [g.id["key"] for g in gs[1::2]],
                               metric="acc")
    assert {f.data[0].colorbar.title.text for f in figs + surfaces} == {"accuracy"}
    assert len({(f.data[0].zmin, f.data[0].zmax) for f in figs}) == 1
    # the range spans every analysed step: the sharp run's corner at step 10 is its floor
    assert figs[1].data[0].zmin == pytest.approx(1 / (1 + bowl(1, 1, 10.0, 10)))
    # a quantity these surfaces did not measure: said, and the titles keep the step
    figs, surfaces = cb.restep(api.client, exp, chosen, 10, [], None, summaries,
                               [g.id["key"] for g in gs[::2]], [g.id["key"] for g in gs[1::2]],
                               metric="test_acc")
    for f in figs + surfaces:
        assert f.layout.annotations[0].text == "test accuracy not measured by this analysis"
        assert "step 10 · BN mode: batch statistics" in f.layout.title.text
    csv = api.http.get(f"/api/v1/analyses/{by_run[ids[1]]['id']}/csv")
    assert csv.status_code == 200 and csv.text.count("\n") >= 50


def test_cancel_from_the_list_through_the_api(api, snapshotted):
    exp, _ids = snapshotted
    _message, count, _lines = launching.launch(api.client, exp, 0, *FORM)
    first, second = sorted(a["id"] for a in api.client.analyses(experiment_id=exp))
    message, count2 = cb.cancel(api.client, first, count)
    assert message == f"Cancelled analysis #{first}." and count2 == count + 1
    status = {a["id"]: a["status"] for a in api.client.analyses(experiment_id=exp)}
    assert status == {first: "cancelled", second: "queued"}
    listed, *_ = cb.refresh(api.client, exp, [], None)
    buttons = [c for c in walk(listed) if isinstance(c, html.Button)]
    assert [b.id["id"] for b in buttons] == [second]  # a cancelled analysis has no button
    refused, same = cb.cancel(api.client, 10_000, count2)  # no such analysis: said, no refresh
    assert refused.className == "error" and same is no_update
    junk, same = cb.cancel(api.client, "x", count2)
    assert junk.className == "error" and same is no_update
