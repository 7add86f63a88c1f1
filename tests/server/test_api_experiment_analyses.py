"""An experiment's analyses: the preset's by default, the request's, or none; checked against
every run before anything is saved (422 at body.analyses.<i>...), kept on the experiment.
The paired presets' defaults fit the server's default limits, full-scale VGG-16 included."""

from __future__ import annotations

import pytest

from server.analysis_cost import estimate_analysis
from server.analysis_spec import AnalysisSpec
from server.presets import DEFAULT_ANALYSES, DEFAULT_SPECTRUM, PRESETS, QUICK_ANALYSES
from server.services.analyses import limit_violations
from server.settings import Settings
from tests.server.conftest import _client, make_settings

TINY = {"model": "mlp", "depth": 3, "width": 16, "dataset": "digits", "steps": 30,
        "batch_size": 32, "device": "cpu", "eval_every": 0,
        "probes": {"landscape": {"every": 0}}, "snapshots": {"every": 10}}
SPECTRUM = {"kind": "spectrum", "eval_samples": 128,
            "spectrum": {"top_k": 2, "lanczos_steps": 6, "trace_probes": 4, "slq_steps": 6,
                         "slq_vectors": 2, "density_points": 32}}


def post(client, **body):
    return client.post("/api/v1/experiments", json=body)


def error_at(r, loc: list) -> str:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == loc, detail
    return detail[0]["msg"]


def full(spec: dict) -> dict:
    return AnalysisSpec.model_validate(spec).model_dump(mode="json")


def test_explicit_analyses_are_kept_on_the_experiment(client, broker_messages):
    wanted = [{"kind": "surface", "steps": [10, 30], "x": {"points": 3}, "y": {"points": 3}},
              SPECTRUM]
    r = post(client, base=TINY, vary={"norm": ["none", "batch"]}, analyses=wanted)
    assert r.status_code == 201, r.text
    exp = r.json()
    assert exp["analyses"] == [full(a) for a in wanted]
    assert client.get(f"/api/v1/experiments/{exp['id']}").json() == exp
    listed = client.get("/api/v1/experiments").json()["items"][0]
    assert listed["analyses"] == exp["analyses"]
    # Nothing is analysed before a run succeeds: the broker has the runs only.
    assert [m[0] for m in broker_messages("landscope.cpu")] == ["landscope.run"] * 2
    assert client.get("/api/v1/analyses", params={"experiment_id": exp["id"]}).json()[
        "total"] == 0


def test_a_paired_preset_brings_its_default_surface_and_spectrum(sqlite_client):
    r = post(sqlite_client, preset="quick-mlp", base={"steps": 40})
    assert r.status_code == 201, r.text
    got = r.json()["analyses"]
    assert got == [full(a) for a in PRESETS["quick-mlp"].analyses]
    surface, spectrum = got
    assert (surface["kind"], surface["directions"]["kind"], surface["bn_mode"]) == (
        "surface", "random", "batch")
    assert (surface["x"]["points"], surface["y"]["points"], surface["steps"]) == (21, 21, None)
    assert spectrum["kind"] == "spectrum" and spectrum["spectrum"]["top_k"] == 5
    # The quick presets' are the defaults on fewer samples, probes and density vectors.
    assert (surface["eval_samples"], spectrum["eval_samples"]) == (512, 512)
    assert full({**DEFAULT_SPECTRUM, "eval_samples": 512, "spectrum": {
        "trace_probes": 20, "slq_steps": 40, "slq_vectors": 2}}) == spectrum
    paper = post(sqlite_client, preset="paper-dln", analyses=None).json()["analyses"]
    assert paper == [full(a) for a in DEFAULT_ANALYSES]
    assert (paper[0]["eval_samples"], paper[1]["spectrum"]) == (2048, full(
        {"kind": "spectrum"})["spectrum"])
    presets = {p["name"]: p for p in sqlite_client.get("/api/v1/presets").json()}
    assert presets["quick-mlp"]["analyses"] == got


def test_an_empty_list_opts_out_and_no_preset_means_none(sqlite_client):
    assert post(sqlite_client, preset="quick-mlp", analyses=[]).json()["analyses"] == []
    assert post(sqlite_client, base=TINY).json()["analyses"] == []


@pytest.mark.parametrize(("analyses", "loc", "needle"), [
    ([SPECTRUM, {"kind": "cube"}], ["body", "analyses", 1, "kind"], "'surface'"),
    ([{"kind": "slice", "x": {"points": 500}}], ["body", "analyses", 0, "x", "points"], "101"),
    ([{"kind": "spectrum", "steps": [10, 15]}], ["body", "analyses", 0, "steps"],
     "run 0 of the experiment saves no snapshot at step(s) 15"),
    ([{"kind": "spectrum", "steps": [31]}], ["body", "analyses", 0, "steps"], "step(s) 31"),
    ([{"kind": "slice", "directions": {"kind": "interpolation", "source": "run",
                                       "other_run": 1}}],
     ["body", "analyses", 0, "directions", "source"], "do not exist yet"),
    ([{"kind": "surface", "directions": {"kind": "pca"}, "steps": [10]}],
     ["body", "analyses", 0, "steps"], "need 3 snapshots"),
    ([{"kind": "spectrum", "steps": [0, 10, 20, 30],
       "spectrum": {"trace_probes": 2000, "slq_vectors": 64, "slq_steps": 500}}],
     ["body", "analyses", 0, "spectrum", "slq_steps"], "Hessian-vector products"),
])
def test_analyses_that_cannot_run_are_refused_at_their_field(sqlite_client, analyses, loc,
                                                            needle):
    r = post(sqlite_client, base=TINY, vary={"norm": ["none", "batch"]}, analyses=analyses)
    assert needle in error_at(r, loc)
    assert sqlite_client.get("/api/v1/experiments").json()["total"] == 0


def test_steps_must_be_in_every_run_s_schedule(sqlite_client):
    # Step 20 is the last (so a saved) step of the 20-step run, not a step the 50-step run saves.
    r = post(sqlite_client, base={**TINY, "snapshots": {"every": 0}},
             vary={"steps": [20, 50]}, analyses=[{"kind": "spectrum", "steps": [20]}])
    assert "run 1 of the experiment saves no snapshot at step(s) 20" in error_at(
        r, ["body", "analyses", 0, "steps"])
    ok = post(sqlite_client, base={**TINY, "snapshots": {"steps": [20]}},
              vary={"steps": [20, 50]}, analyses=[{"kind": "spectrum", "steps": [0, 20]}])
    assert ok.status_code == 201, ok.text


def test_a_preset_s_defaults_over_this_server_s_limits_say_so(tmp_path, sqlite_backend):
    small = make_settings(tmp_path, sqlite_backend.db_url, sqlite_backend.broker_url,
                          max_analysis_points=100)
    for client in _client(small):
        r = post(client, preset="quick-mlp")
        msg = error_at(r, ["body", "analyses", 0, "x", "points"])
        assert "441 grid points" in msg and "preset's default analyses; [] runs none" in msg
        assert post(client, preset="quick-mlp", analyses=[]).status_code == 201


def test_every_paired_preset_has_the_defaults_and_fits_the_default_limits():
    limits = Settings(_env_file=None)
    for preset in PRESETS.values():
        assert "norm" in preset.vary and preset.analyses, preset.name
        kinds = [a["kind"] for a in preset.analyses]
        assert kinds == ["surface", "spectrum"], preset.name
        for run in preset.specs():
            for a in preset.analyses:
                spec = AnalysisSpec.model_validate({**a, "steps": [run.steps]})
                cost = estimate_analysis(run, spec, snapshots=2)
                assert list(limit_violations(cost, limits)) == [], (preset.name, a["kind"])
    for name, preset in PRESETS.items():
        want = QUICK_ANALYSES if name.startswith("quick-") else DEFAULT_ANALYSES
        assert preset.analyses == want, name
