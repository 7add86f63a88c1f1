"""The Reproduction page's callbacks against the real API, with `repro: ...` experiments
submitted through it and their metrics written through the metric store the worker's sink
writes to: the empty state and its submit button, the newest runs judged per scale (by seed
group or each seed), plots with no grouped form, refreshing until every run finished, an
unreachable API, the page's registration, and the analyses a plan names.

Its pure parts (badges, cards from RunData built by hand) are in test_reproduction_view.py."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from server import reproduction as R
from server.db.metrics import insert_points, series_ids
from server.db.models import Run, encode_value, utcnow
from tests.webapp.reproduction_helpers import (
    MLP,
    STEPS,
    VGG,
    as_json,
    badge,
    by_id,
    graphs,
    nodes,
    run_json,
    series,
    text,
)
from webapp import reproduction_data as data
from webapp import reproduction_view as view
from webapp.app import create_dash


@pytest.fixture(autouse=True)
def _no_cached_checks():
    """Raw series of finished runs are cached per API URL and run id, and every test's API
    has the same URL and ids: start each test with an empty cache."""
    data.CACHE.clear()
    yield
    data.CACHE.clear()


@pytest.fixture
def app(api):
    return create_dash("http://testserver/api/v1", client=api.client, poll_ms=500)


def submit(api, key: str, scale: R.Scale) -> dict[str, Any]:
    """The experiment as `landscope reproduce` submits it (POST /experiments)."""
    exp = R.EXPERIMENTS[key]
    return api.client.create_experiment(exp.plans[scale].body(exp.name(scale)))


def finish(api, made: dict[str, Any], values, status: str = "succeeded") -> None:
    """Each run's series written through the metric store, and the run marked finished."""
    for run in made["runs"]:
        spec = run["spec"]
        v = values[spec["norm"]] if spec["norm"] in values else values[(spec["norm"],
                                                                        spec["lr"])]
        points = series(v, spec["seed"])
        with api.engine.begin() as conn:
            ids = series_ids(conn, run["id"], set(points))
            insert_points(conn, [(ids[k], t, *encode_value(x)) for k, vals in points.items()
                                 for t, x in enumerate(vals)])
            # A running run needs a live heartbeat, or the API's reconciler requeues it.
            conn.execute(update(Run).where(Run.id == run["id"]).values(
                status=status, step=STEPS, heartbeat_at=utcnow()))


def sections(figures_out: list) -> dict[str, dict]:
    return {n["props"]["id"].removeprefix("repro-fig-"): n for n in nodes(figures_out)
            if str(n["props"].get("id", "")).startswith("repro-fig-")}


def test_nothing_reproduced_yet_shows_how_and_the_button_submits_it(api, app):
    cbs = app.landscope_callbacks["reproduction"]
    figs, line, options, value, polling, notice = cbs["refresh"](0, None, None)
    assert "landscope reproduce --quick" in text(figs)
    assert by_id(figs, "repro-submit")["type"] == "Button"
    assert line is None and value is None and notice == ""
    assert all(o["disabled"] for o in options)
    assert polling == -1  # a reproduction started from the CLI shows up by itself
    msg, changed = cbs["submit"](1, None)
    quick = R.experiments_for("quick")
    assert msg.startswith(f"Submitted {len(quick)} experiments (") and changed == 1
    assert sorted(e["name"] for e in api.client.experiments()) == sorted(
        e.name("quick") for e in quick)
    figs, line, options, value, polling, _ = cbs["refresh"](1, None, changed)
    assert value == "quick" and polling == -1  # queued runs: keep refreshing
    assert list(sections(figs)) == [f.id for f in R.figures_for("quick")]
    assert {badge(s) for s in sections(figs).values()} == {"no data"}
    assert not any(graphs(s) for s in sections(figs).values())  # nothing written yet
    assert [o["value"] for o in options if not o["disabled"]] == ["quick"]


def test_the_page_judges_the_newest_runs_and_stops_once_all_finished(api, app):
    older = submit(api, "mlp-landscape", "quick")  # superseded, never run
    cpu = submit(api, "mlp-landscape", "cpu")
    finish(api, cpu, {**MLP, "none": {**MLP["none"], "acc": 0.1}})
    finish(api, submit(api, "vgg-lr", "quick"), VGG)
    newest = submit(api, "mlp-landscape", "quick")
    finish(api, newest, MLP)
    refresh = app.landscope_callbacks["reproduction"]["refresh"]

    figs, line, options, value, polling, notice = refresh(0, None, None)
    assert value == "quick" and notice == ""
    assert [o["value"] for o in options if not o["disabled"]] == ["quick", "cpu"]
    got = {fid: badge(s) for fid, s in sections(figs).items()}
    want = {"3b": "no data", "5b": "no data", "10": "no data", "11": "no data",
            "9": "no data", "1": "partly", "2": "no data", "4": "not reproduced",
            "8": "no data", "4-mlp": "reproduced"}
    # Other papers' figures have no runs here: no data.
    assert got == {**{f: "no data" for f in got}, **want}
    s = sections(figs)
    assert f"/experiments/{newest['id']}" in str(s["4-mlp"]) and \
        f"/experiments/{older['id']}\"" not in str(s["4-mlp"])
    assert "not run" in text(s["2"]) and "no run with" not in text(s["2"])
    assert not graphs(s["2"])
    # The quick VGG plans run three seeds (made identical here): judged in each.
    assert "Does not hold: at LR 0.1 both nets train (ours: holds in 0 of 3 seeds; median " \
        "(range) over seeds: none 0.1 (0.1 to 0.1); batch 0.9 (0.9 to 0.9))." in text(s["1"])
    assert "The paper's setting does not hold here" in text(s["4"])
    # Fig 4 uses the LR 0.1 runs only; Fig 1 draws all four.
    assert len({t["legendgroup"] for t in graphs(s["4"])[0]["data"]}) == 2
    assert len({t["legendgroup"] for t in graphs(s["1"])[0]["data"]
                if t.get("legendgroup") != "style"}) == 4
    assert all(g["data"] for g in graphs(s["1"]) + graphs(s["4-mlp"]))
    words = text(line)
    assert "18 of 18 runs finished" in words and "all runs finished" in words  # 12 VGG, 6 MLP
    assert polling == 0  # every run of the scale finished: stop asking

    # The MLP's three seeds per normalisation, drawn by seed group (the server's GET /groups
    # and /groups/metrics): the plain net's max predictiveness is 10, 20, 30 over its seeds,
    # so its median band reaches 20 and its envelope over seeds 30; BN's is 2 in every seed.
    gradpred = graphs(s["4-mlp"])[1]
    roles = {t["meta"]["role"] for t in gradpred["data"]}
    assert {"band", "envelope"} <= roles
    band = {t["name"]: t for t in gradpred["data"] if t["meta"]["role"] == "band"}
    envelope = [t for t in gradpred["data"] if t["meta"]["role"] == "envelope"]
    assert set(band) == {"no normalisation (n=3)", "BatchNorm (n=3)"}
    none, bn = band["no normalisation (n=3)"], band["BatchNorm (n=3)"]
    assert max(v for v in none["y"] if v is not None) == 20.0
    assert max(v for t in envelope for v in t["y"] if v is not None) == 30.0
    assert max(v for v in bn["y"] if v is not None) == 2.0
    assert "median of 3 seeds, min–max band" in text(s["4-mlp"])
    assert "each seed on the Compare page" in text(s["4-mlp"])
    # Each seed instead: a line per run, no bands; the checks are the same either way.
    figs, *_ = refresh(2, "quick", None, "runs")
    s = sections(figs)
    gradpred = graphs(s["4-mlp"])[1]
    assert not any(t.get("meta", {}).get("role") in ("band", "envelope")
                   for t in gradpred["data"])
    assert len({t["legendgroup"] for t in graphs(s["4-mlp"])[2]["data"]
                if t.get("legendgroup") != "style"}) == 6
    assert badge(s["4-mlp"]) == "reproduced" and "median of 3 seeds" not in text(s["4-mlp"])

    # The other scale, chosen by the reader: every figure of cpu, the MLP's premise failing.
    figs, _, _, value, polling, _ = refresh(1, "cpu", None)
    assert value == "cpu" and polling == 0
    got = {fid: badge(s) for fid, s in sections(figs).items()}
    assert list(got) == [f.id for f in R.figures_for("cpu")]
    assert got["4-mlp"] == "not reproduced" and got["1"] == "no data"


def test_plots_that_cannot_be_grouped_show_the_lowest_seed_and_say_so(api, app):
    made = submit(api, "dln-landscape", "quick")
    flat = {"acc": 0.5, "band": (1.0, 2.0), "gd": 1.0, "beta": 1.0}
    finish(api, made, {n: flat for n in ("none", "batch", "noisy_batch")})
    figs, *_ = app.landscope_callbacks["reproduction"]["refresh"](0, None, None)
    s = sections(figs)
    assert "median of 3 seeds, min–max band" in text(s["10"])  # landscape, gradpred, beta
    # Fig 11 (d(eta) by eta) and Fig 9 (histograms) have no grouped form: seed 0's runs.
    assert "seed 0 only (of 3): not drawn by group" in text(s["11"])
    assert text(s["9"]).count("seed 0 only (of 3)") == 3  # one plot per layer shown
    assert view.lowest_seed([run_json(1, {"seed": 2}), run_json(2, {"seed": 1}),
                             run_json(3, {"seed": 1})]) == [run_json(2, {"seed": 1}),
                                                            run_json(3, {"seed": 1})]
    assert view.lowest_seed([run_json(1, {})]) == [run_json(1, {})]


def test_a_run_still_training_keeps_the_page_refreshing(api, app):
    made = submit(api, "mlp-landscape", "quick")
    finish(api, made, MLP, status="running")
    refresh = app.landscope_callbacks["reproduction"]["refresh"]
    figs, line, _, _, polling, _ = refresh(0, None, None)
    assert polling == -1 and "● live" in text(line)
    assert badge(sections(figs)["4-mlp"]) == "no data"
    # Its plots already draw what the running runs wrote.
    assert any(t.get("y") for t in graphs(sections(figs)["4-mlp"])[0]["data"])


def test_an_unreachable_api_is_said_on_the_page(api, app):
    api.client.base_url = "http://testserver/nowhere"
    out = app.landscope_callbacks["reproduction"]["refresh"](0, None, None)
    assert out[4] == -1 and out[5].startswith("Could not load the reproduction from the API")


def test_the_page_is_registered_and_linked(api, app):
    import dash

    assert any(p["path"] == "/reproduction" for p in dash.page_registry.values())
    assert '"href": "/reproduction"' in str(as_json(app.layout)).replace("'", '"')


def test_the_page_reads_the_analyses_a_plan_names_and_waits_for_them(api, monkeypatch):
    """A test-only experiment with a spectrum analysis, trained and analysed by the worker's
    own runners: the page keeps refreshing while the analysis is queued, then gives the
    checks the run with its spectrum, as `landscope reproduce` reads it."""
    from server.db.models import Analysis
    from tests.reproduction.test_reproduce_analyses import SPECTRUM, _experiment
    from worker.analysis_runner import JobCache, prepare
    from worker.runner import execute_run

    exp = _experiment("t-page-spectrum", (SPECTRUM,))
    monkeypatch.setitem(R.EXPERIMENTS, exp.key, exp)
    made = api.client.create_experiment(exp.plans["quick"].body(exp.name("quick")))
    (run,) = made["runs"]
    assert execute_run(run["id"], settings=api.settings, engine=api.engine, worker="t",
                       device="cpu") == "succeeded"
    chosen = {exp.key: made}
    loaded = data.load(api.client, "quick", chosen)
    assert loaded.pending_analyses == 1 and not loaded.finished  # queued: keep refreshing
    assert loaded.run_data(exp.key)[0].analyses == []

    with api.engine.connect() as conn:
        (aid,) = conn.execute(select(Analysis.id).where(Analysis.run_id == run["id"])).scalars()
    assert prepare(aid, settings=api.settings, engine=api.engine, worker="t", device="cpu",
                   send_chunk=lambda *x: None, jobs=JobCache()) == "succeeded"
    loaded = data.load(api.client, "quick", chosen)
    assert loaded.pending_analyses == 0 and loaded.finished
    (checks,) = loaded.run_data(exp.key)
    step, got = checks.analysis("spectrum")
    want = api.client.analysis(aid)["steps"][str(step)]["values"]["spectrum"]
    assert step == 30 and got["values"]["spectrum"]["top_eigenvalues"] == \
        want["top_eigenvalues"]
